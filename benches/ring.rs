//! Ring micro-benchmarks: key hashing, lookup and rebuild at N ∈ {3, 10, 100} nodes ×
//! V ∈ {256, 1024, 131072} vnodes (131072 is StreamPark's choice).
//!
//! Run: `CARGO_BUILD_JOBS=1 cargo bench --bench ring`
//! (filter e.g. `-- lookup/n100`). Results are quoted in docs/benchmarks.md.
//! The V=131072 rebuilds take seconds each, so their groups use the minimum
//! sample count; the whole run finishes in a few minutes.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput};
use rota::ring::{Member, Ring, Selector};

const NODES: [u32; 3] = [3, 10, 100];
const VNODES: [u32; 3] = [256, 1024, 131_072];
/// Distinct keys cycled through per lookup batch: enough that the search
/// path through the points is not the same few cache lines every time.
const KEYS: u64 = 4096;

fn members(n: u32) -> Vec<Member> {
    (1..=n)
        .map(|i| Member {
            node_id: format!("node-{i}"),
            weight: 1,
            labels: [("dc".to_string(), format!("dc{}", i % 3))].into(),
        })
        .collect()
}

fn keys() -> Vec<Vec<u8>> {
    (1..=KEYS).map(|k| k.to_string().into_bytes()).collect()
}

/// Why the ring hand-writes Murmur3: the `murmur3` crate's reader-based
/// version against the slice version, on a typical short id key.
fn hash(c: &mut Criterion) {
    let mut group = c.benchmark_group("hash");
    group.warm_up_time(Duration::from_millis(300));
    group.measurement_time(Duration::from_secs(1));
    for key in [&b"42"[..], b"1234567", b"node-100#131071"] {
        let label = String::from_utf8_lossy(key).into_owned();
        group.bench_function(BenchmarkId::new("rota_hash_key", &label), |b| {
            b.iter(|| rota::ring::hash_key(black_box(key)))
        });
        group.bench_function(BenchmarkId::new("murmur3_crate", &label), |b| {
            b.iter(|| murmur3::murmur3_x64_128(&mut std::io::Cursor::new(black_box(key)), 0).map(|h| h as u64))
        });
    }
    group.finish();
}

fn lookup(c: &mut Criterion) {
    let keys = keys();
    let dc1: Selector = [("dc".to_string(), "dc1".to_string())].into();
    let mut group = c.benchmark_group("lookup");
    group.throughput(Throughput::Elements(KEYS));
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));
    group.sample_size(20);
    for v in VNODES {
        for n in NODES {
            let Ok(ring) = Ring::build(1, members(n), v) else {
                continue;
            };
            let id = format!("n{n}/v{v}");
            group.bench_function(BenchmarkId::new("owner", &id), |b| {
                b.iter(|| {
                    for key in &keys {
                        black_box(ring.owner(black_box(key)));
                    }
                })
            });
            group.bench_function(BenchmarkId::new("owner_matching", &id), |b| {
                b.iter(|| {
                    for key in &keys {
                        black_box(ring.owner_matching(black_box(key), &dc1));
                    }
                })
            });
        }
    }
    group.finish();
}

fn rebuild(c: &mut Criterion) {
    let mut group = c.benchmark_group("rebuild");
    group.sampling_mode(SamplingMode::Flat);
    for v in VNODES {
        if v >= 131_072 {
            // A rebuild takes up to seconds here: the fewest samples criterion
            // allows, and no pretence of a short measurement window.
            group.sample_size(10);
            group.warm_up_time(Duration::from_millis(100));
            group.measurement_time(Duration::from_secs(5));
        } else {
            group.sample_size(20);
            group.warm_up_time(Duration::from_millis(300));
            group.measurement_time(Duration::from_secs(2));
        }
        for n in NODES {
            let m = members(n);
            group.bench_function(BenchmarkId::new("build", format!("n{n}/v{v}")), |b| {
                b.iter(|| black_box(Ring::build(1, black_box(m.clone()), v)))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, hash, lookup, rebuild);
criterion_main!(benches);
