//! Property and unit tests of the ring. Small vnode counts keep the property
//! tests fast; the balance test uses the real default.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::sync::Arc;

use proptest::prelude::*;
use proptest::sample::Index;

use super::*;

fn member(id: &str, weight: u32, labels: &[(&str, &str)]) -> Member {
    Member {
        node_id: id.to_string(),
        weight,
        labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
    }
}

fn labels() -> impl Strategy<Value = BTreeMap<String, String>> {
    (
        prop::option::of(prop_oneof![Just("dc1"), Just("dc2"), Just("dc3")]),
        prop::option::of(prop_oneof![Just("a"), Just("b")]),
    )
        .prop_map(|(dc, zone)| {
            let mut l = BTreeMap::new();
            if let Some(dc) = dc {
                l.insert("dc".to_string(), dc.to_string());
            }
            if let Some(zone) = zone {
                l.insert("zone".to_string(), zone.to_string());
            }
            l
        })
}

fn selector() -> impl Strategy<Value = Selector> {
    labels()
}

/// Members with unique ids (a BTreeMap keyed by id), weights 0..4.
fn members(min: usize, max: usize) -> impl Strategy<Value = Vec<Member>> {
    prop::collection::btree_map("[a-e]{1,3}", (0u32..4, labels()), min..max)
        .prop_map(|m| m.into_iter().map(|(node_id, (weight, labels))| Member { node_id, weight, labels }).collect())
}

fn keys() -> impl Iterator<Item = Vec<u8>> {
    (0..300u32).map(|k| k.to_string().into_bytes())
}

fn owner_id(ring: &Ring, key: &[u8]) -> Option<String> {
    ring.owner(key).map(|m| m.node_id.clone())
}

/// The selector walk done the slow, obvious way: every point from the start.
fn naive_owner_matching<'r>(ring: &'r Ring, key: &[u8], selector: &Selector) -> Option<&'r Member> {
    let n = ring.points.len();
    let (start, _) = ring.start(hash_key(key))?;
    (0..n).map(|step| ring.member_at((start + step) % n)).find(|m| m.is_some_and(|m| m.matches(selector))).flatten()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn same_ring_from_any_member_order(
        (original, shuffled) in members(0, 8).prop_flat_map(|m| (Just(m.clone()), Just(m).prop_shuffle())),
        vnodes in 1u32..48,
    ) {
        let a = Ring::build(7, original, vnodes).unwrap();
        let b = Ring::build(7, shuffled, vnodes).unwrap();
        prop_assert_eq!(&a.points, &b.points);
        prop_assert_eq!(&a.owners, &b.owners);
        prop_assert_eq!(&a, &b);
        for key in keys() {
            prop_assert_eq!(owner_id(&a, &key), owner_id(&b, &key));
        }
    }

    #[test]
    fn join_moves_keys_only_to_the_new_node(
        base in members(0, 8),
        new_id in "[a-e]{0,2}x[a-e]{0,1}",
        new_weight in 1u32..4,
        vnodes in 1u32..48,
    ) {
        let before = Ring::build(1, base.clone(), vnodes).unwrap();
        let mut joined = base;
        joined.push(member(&new_id, new_weight, &[]));
        let after = Ring::build(2, joined, vnodes).unwrap();
        for key in keys() {
            let (b, a) = (owner_id(&before, &key), owner_id(&after, &key));
            if a != b {
                prop_assert_eq!(a.as_deref(), Some(new_id.as_str()), "key {:?} moved from {:?}", key, b);
            }
        }
    }

    #[test]
    fn leave_moves_keys_only_from_the_departed_node(
        base in members(1, 8),
        which in any::<Index>(),
        vnodes in 1u32..48,
    ) {
        let before = Ring::build(1, base.clone(), vnodes).unwrap();
        let mut left = base;
        let gone = left.remove(which.index(left.len()));
        let after = Ring::build(2, left, vnodes).unwrap();
        for key in keys() {
            let (b, a) = (owner_id(&before, &key), owner_id(&after, &key));
            if a != b {
                prop_assert_eq!(b.as_deref(), Some(gone.node_id.as_str()), "key {:?} moved to {:?}", key, a);
            }
        }
    }

    #[test]
    fn selector_lookup_returns_a_match_or_none_only_when_nothing_matches(
        base in members(0, 8),
        sel in selector(),
        vnodes in 1u32..32,
    ) {
        let ring = Ring::build(3, base.clone(), vnodes).unwrap();
        let any_eligible = base.iter().any(|m| m.weight > 0 && m.matches(&sel));
        for key in keys() {
            let got = ring.owner_matching(&key, &sel);
            match got {
                Some(m) => {
                    prop_assert!(m.matches(&sel));
                    prop_assert!(m.weight > 0);
                }
                None => prop_assert!(!any_eligible, "None although a member matches {:?}", sel),
            }
            prop_assert_eq!(got, naive_owner_matching(&ring, &key, &sel));
            let why = ring.explain(&key, &sel);
            prop_assert_eq!(why.owner.as_ref(), got);
            prop_assert_eq!(why.hash, hash_key(&key));
            if sel.is_empty() {
                prop_assert_eq!(got, ring.owner(&key));
                prop_assert_eq!(why.skipped_points, 0);
            }
            if let (Some(start), Some(index)) = (why.start_index, why.index) {
                let n = ring.point_count();
                prop_assert_eq!((start + why.skipped_points) % n, index);
            }
        }
    }

    #[test]
    fn duplicate_node_ids_are_refused(
        base in members(1, 8),
        which in any::<Index>(),
        weight in 0u32..4,
    ) {
        let dup = base[which.index(base.len())].node_id.clone();
        let mut with_dup = base;
        with_dup.push(member(&dup, weight, &[]));
        prop_assert_eq!(Ring::build(1, with_dup, 8), Err(RingError::DuplicateNodeId(dup)));
    }

    #[test]
    fn points_are_sorted_unique_and_counted(base in members(0, 8), vnodes in 1u32..48) {
        let ring = Ring::build(1, base.clone(), vnodes).unwrap();
        prop_assert!(ring.points.windows(2).all(|w| w[0] < w[1]));
        prop_assert_eq!(ring.points.len(), ring.owners.len());
        let expected: u64 = base.iter().map(|m| u64::from(m.weight) * u64::from(vnodes)).sum();
        // 64-bit collisions among a few hundred points do not happen in practice.
        prop_assert_eq!(ring.point_count() as u64, expected);
        prop_assert!(ring.members().windows(2).all(|w| w[0].node_id < w[1].node_id));
    }

    #[test]
    fn bucket_index_finds_the_same_point_as_a_full_search(
        base in members(1, 8),
        vnodes in 1u32..200,
        hashes in prop::collection::vec(any::<u64>(), 1..200),
    ) {
        let ring = Ring::build(1, base, vnodes).unwrap();
        let n = ring.points.len();
        let mut probes = hashes;
        // Exact points and their neighbours are the edge cases.
        for &p in ring.points.iter().step_by(7) {
            probes.extend([p, p.wrapping_add(1), p.wrapping_sub(1)]);
        }
        probes.extend([0, u64::MAX]);
        for h in probes {
            let full = ring.points.partition_point(|&p| p < h);
            let expected = if n == 0 { None } else if full == n { Some((0, true)) } else { Some((full, false)) };
            prop_assert_eq!(ring.start(h), expected, "hash {}", h);
        }
    }

    #[test]
    fn hash_equals_the_murmur3_crate(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let reference = murmur3::murmur3_x64_128(&mut Cursor::new(&bytes), 0).unwrap();
        prop_assert_eq!(murmur3_x64_128(&bytes), reference);
        prop_assert_eq!(hash_key(&bytes), reference as u64);
    }
}

#[test]
fn hash_matches_published_vectors() {
    // Reference MurmurHash3_x64_128 (SMHasher C code), seed 0, as recorded in
    // the murmur3 crate's tests: the 16 output bytes, little-endian h1 then h2.
    let cases: [(&str, [u8; 16]); 3] = [
        (
            "Hello, world!",
            [0xDF, 0x65, 0xD6, 0xD2, 0xD1, 0x2D, 0x51, 0xF1, 0x64, 0xC5, 0xF3, 0xA8, 0x50, 0x66, 0x32, 0x2C],
        ),
        ("1", [0x71, 0x7C, 0x7B, 0x8A, 0xFE, 0xBB, 0xFB, 0x71, 0x37, 0xF6, 0xF0, 0xF9, 0x9B, 0xEB, 0x2A, 0x94]),
        ("", [0; 16]),
    ];
    for (input, bytes) in cases {
        assert_eq!(murmur3_x64_128(input.as_bytes()), u128::from_le_bytes(bytes), "{input:?}");
    }
    // The 64-bit value every ring point and key uses.
    assert_eq!(hash_key(b"Hello, world!"), 0xF151_2DD1_D2D6_65DF);
    assert_eq!(hash_key(b"1"), 0x71FB_BBFE_8A7B_7C71);
}

#[test]
fn empty_rings_own_nothing() {
    let any = Selector::new();
    for ring in [
        Ring::empty(),
        Ring::build(4, vec![], 16).unwrap(),
        Ring::build(4, vec![member("a", 0, &[]), member("b", 0, &[])], 16).unwrap(),
    ] {
        assert_eq!(ring.owner(b"42"), None);
        assert_eq!(ring.owner_matching(b"42", &any), None);
        let why = ring.explain(b"42", &any);
        assert_eq!((why.owner, why.start_index, why.index), (None, None, None));
        assert_eq!(ring.point_count(), 0);
    }
    assert_eq!(Ring::empty().epoch(), 0);
    assert!(Ring::empty().members().is_empty());
}

#[test]
fn weight_zero_takes_no_keys_but_stays_a_member() {
    let ring = Ring::build(1, vec![member("a", 1, &[]), member("b", 0, &[])], 64).unwrap();
    assert_eq!(ring.members().len(), 2);
    for key in keys() {
        assert_eq!(owner_id(&ring, &key).as_deref(), Some("a"));
    }
}

#[test]
fn equal_points_go_to_the_lowest_node_id() {
    let members = vec![member("a", 1, &[]), member("b", 1, &[])];
    // Owner 1 ("b") listed first on purpose: the order of pairs must not matter.
    let ring = Ring::assemble(1, members, vec![(9, 1), (5, 1), (5, 0), (9, 0), (7, 1)]);
    assert_eq!(ring.points, vec![5, 7, 9]);
    assert_eq!(ring.owners, vec![0, 1, 0]);
}

#[test]
fn selector_walk_skips_and_explains() {
    let ring = Ring::build(
        9,
        vec![
            member("a", 1, &[("dc", "dc1")]),
            member("b", 1, &[("dc", "dc2")]),
            member("c", 1, &[("dc", "dc1")]),
            member("d", 0, &[("dc", "dc3")]),
        ],
        64,
    )
    .unwrap();
    let dc2: Selector = [("dc".to_string(), "dc2".to_string())].into();
    let dc3: Selector = [("dc".to_string(), "dc3".to_string())].into();
    let mut saw_skip = false;
    for key in keys() {
        assert_eq!(ring.owner_matching(&key, &dc2).map(|m| m.node_id.as_str()), Some("b"));
        // "d" matches dc3 but has weight 0: nobody can take the key.
        assert_eq!(ring.owner_matching(&key, &dc3), None);
        let why = ring.explain(&key, &dc2);
        assert_eq!(why.epoch, 9);
        if why.start_node.as_deref() != Some("b") {
            saw_skip = true;
            assert!(why.skipped_points >= 1);
            assert!(!why.skipped_nodes.is_empty());
            assert!(why.skipped_nodes.iter().all(|n| n == "a" || n == "c"));
        } else {
            assert_eq!((why.skipped_points, why.skipped_nodes.len()), (0, 0));
        }
        // Nothing matches: the walk gives up after seeing both point owners.
        let none = ring.explain(&key, &dc3);
        assert_eq!(none.owner, None);
        assert!(none.skipped_nodes.len() <= 3);
    }
    assert!(saw_skip);
    let json = serde_json::to_value(ring.explain(b"42", &dc2)).unwrap();
    for field in ["hash", "hash_hex", "index", "owner", "skipped_nodes", "skipped_points"] {
        assert!(json.get(field).is_some(), "{field} missing from {json}");
    }
}

#[test]
fn bad_builds_are_refused_with_reasons() {
    assert_eq!(Ring::build(1, vec![member("a", 1, &[])], 0), Err(RingError::ZeroVnodes));
    assert_eq!(Ring::build(1, vec![member("", 1, &[])], 8), Err(RingError::EmptyNodeId));
    assert!(matches!(Ring::build(1, vec![member("a", u32::MAX, &[])], 1024), Err(RingError::TooManyPoints { .. })));
    // Large enough to overflow a plain u64 sum.
    let huge = (0..3).map(|i| member(&format!("n{i}"), u32::MAX, &[])).collect();
    assert_eq!(Ring::build(1, huge, u32::MAX), Err(RingError::TooManyPoints { points: u64::MAX, max: MAX_POINTS }));
    let msg = Ring::build(1, vec![member("a", 1, &[]), member("a", 2, &[])], 8).unwrap_err().to_string();
    assert!(msg.contains("duplicate node id \"a\""), "{msg}");
}

#[test]
fn separator_keeps_vnode_names_apart() {
    // Without '#', "a1" point 1 and "a" point 11 would both hash "a11".
    let ring = Ring::build(1, vec![member("a", 1, &[]), member("a1", 1, &[])], 32).unwrap();
    assert_eq!(ring.point_count(), 64);
}

#[test]
fn balance_and_movement_at_default_vnodes() {
    // Fixed inputs (ids node-1..node-10, keys "1".."100000"), so the figures
    // are deterministic; 1M keys give max/mean 1.04 (docs/benchmarks.md).
    let report = simulate(&SimulateParams { nodes: 10, vnodes: DEFAULT_VNODES, keys: 100_000, weights: None }).unwrap();
    assert!(report.max_over_mean <= 1.06, "max/mean {}", report.max_over_mean);
    assert!(report.min_over_mean >= 0.94, "min/mean {}", report.min_over_mean);
    assert_eq!(report.moved_between_survivors, 0);
    assert_eq!(report.per_node.iter().map(|p| p.keys).sum::<u64>(), 100_000);
    let join = report.moved_on_join as f64 / report.ideal_on_join;
    let leave = report.moved_on_leave as f64 / report.ideal_on_leave;
    assert!((0.9..1.1).contains(&join), "join moved {join} of ideal");
    assert!((0.9..1.1).contains(&leave), "leave moved {leave} of ideal");
    assert!(report.bytes <= report.points() * 16, "bytes {}", report.bytes);
}

#[test]
fn weighted_simulation_normalizes_by_share() {
    let report =
        simulate(&SimulateParams { nodes: 3, vnodes: 256, keys: 30_000, weights: Some(vec![1, 2, 0]) }).unwrap();
    assert_eq!(report.per_node[2].keys, 0);
    assert_eq!(report.per_node[2].ratio, None);
    assert_eq!(report.per_node[1].points, 512);
    assert!(report.max_over_mean < 1.2 && report.min_over_mean > 0.8);
    assert_eq!(report.moved_on_leave, 0);
    assert_eq!(report.ideal_on_leave, 0.0);
    assert_eq!(report.moved_between_survivors, 0);
    assert!(report.render_table().contains("node-3"));

    let json = serde_json::to_value(&report).unwrap();
    for field in [
        "max_over_mean",
        "min_over_mean",
        "cv",
        "moved_on_join",
        "ideal_on_join",
        "moved_on_leave",
        "ideal_on_leave",
        "moved_between_survivors",
        "bytes",
        "build_ms",
        "lookup_ns",
        "per_node",
    ] {
        assert!(json.get(field).is_some(), "{field} missing");
    }
}

#[test]
fn simulation_refuses_bad_parameters() {
    let ok = SimulateParams { nodes: 2, vnodes: 8, keys: 10, weights: None };
    let bad = [
        SimulateParams { nodes: 0, ..ok.clone() },
        SimulateParams { keys: 0, ..ok.clone() },
        SimulateParams { weights: Some(vec![1]), ..ok.clone() },
        SimulateParams { weights: Some(vec![0, 0]), ..ok.clone() },
    ];
    for p in bad {
        assert!(matches!(simulate(&p), Err(RingError::InvalidSimulation(_))), "{p:?}");
    }
    assert_eq!(simulate(&SimulateParams { vnodes: 0, ..ok.clone() }).err(), Some(RingError::ZeroVnodes));
    // One node leaving empties the ring: every key moves, as it must.
    let single = simulate(&SimulateParams { nodes: 1, ..ok }).unwrap();
    assert_eq!(single.moved_on_leave, 10);
    assert_eq!(single.moved_between_survivors, 0);
}

#[test]
fn shared_ring_swaps_whole_rings() {
    use std::sync::atomic::{AtomicU64, Ordering};
    const LAST: u64 = 50;
    let shared = Arc::new(SharedRing::default());
    assert_eq!(shared.load().epoch(), 0);
    // Loads by the reader so far: the writer stores its next ring only after at least one more,
    // so the reader surely reads while rings are being swapped (a writer left alone could be
    // done before the reader's first load, and the checks below would check nothing).
    let loads = Arc::new(AtomicU64::new(0));
    let writer = {
        let (shared, loads) = (Arc::clone(&shared), Arc::clone(&loads));
        std::thread::spawn(move || {
            for epoch in 1..=LAST {
                let seen = loads.load(Ordering::SeqCst);
                while loads.load(Ordering::SeqCst) == seen {
                    std::thread::yield_now();
                }
                let members = (0..(epoch % 5 + 1)).map(|i| member(&format!("n{i}"), 1, &[])).collect();
                shared.store(Arc::new(Ring::build(epoch, members, 16).unwrap()));
            }
        })
    };
    // Rings read while the writer still had rings to store.
    let (mut last, mut midway) = (0, 0);
    while last < LAST {
        if writer.is_finished() && shared.load().epoch() < LAST {
            break; // the writer panicked: its join below says why
        }
        let ring = shared.load();
        loads.fetch_add(1, Ordering::SeqCst);
        // A whole ring: its size matches its epoch's member count, and epochs
        // only go forward.
        assert!(ring.epoch() >= last);
        last = ring.epoch();
        if ring.epoch() > 0 {
            assert_eq!(ring.point_count() as u64, (ring.epoch() % 5 + 1) * 16);
        }
        if ring.epoch() > 0 && ring.epoch() < LAST {
            midway += 1;
        }
    }
    writer.join().unwrap();
    assert_eq!(shared.load().epoch(), LAST);
    // The load that let the last store go was made after the store two before it.
    assert!(midway >= 1, "no ring was read while the writer was swapping them");
}

proptest! {
    /// The shares of a ring add up to the whole hash space and follow the points each member
    /// has; the arcs cover every slice once, in order, each named by a member with points.
    #[test]
    fn shares_and_arcs_cover_the_ring(base in members(1, 6), vnodes in 1u32..32, slices in 1u32..400) {
        let ring = Ring::build(1, base, vnodes).unwrap();
        let shares = ring.shares();
        let total: f64 = shares.iter().map(|(_, s)| s).sum();
        if ring.point_count() == 0 {
            prop_assert!(ring.arcs(slices).is_empty());
            prop_assert_eq!(total, 0.0);
            return Ok(());
        }
        prop_assert!((total - 1.0).abs() < 1e-9, "shares add up to {}", total);
        for ((node, share), points) in shares.iter().zip(ring.points_per_member()) {
            prop_assert_eq!(*share > 0.0, points > 0, "{} has {} points and share {}", node, points, share);
        }
        let arcs = ring.arcs(slices);
        let mut next = 0;
        for (node, from, to) in &arcs {
            prop_assert_eq!(*from, next);
            prop_assert!(to > from);
            let i = ring.members().iter().position(|m| m.node_id == *node).unwrap();
            prop_assert!(ring.points_per_member()[i] > 0, "{} owns no point", node);
            next = *to;
        }
        prop_assert_eq!(next, slices);
        for pair in arcs.windows(2) {
            prop_assert_ne!(pair[0].0, pair[1].0, "neighbouring arcs of one member are merged");
        }
    }
}

#[test]
fn one_member_owns_the_whole_ring_and_weights_set_the_shares() {
    let ring = Ring::build(1, vec![member("a", 1, &[])], 64).unwrap();
    assert_eq!(ring.shares(), vec![("a", 1.0)]);
    assert_eq!(ring.arcs(360), vec![("a", 0, 360)]);
    let ring = Ring::build(1, vec![member("a", 1, &[]), member("b", 3, &[]), member("c", 0, &[])], 1024).unwrap();
    let shares = ring.shares();
    assert!((shares[0].1 - 0.25).abs() < 0.03 && (shares[1].1 - 0.75).abs() < 0.03, "{shares:?}");
    assert_eq!(shares[2], ("c", 0.0));
    let slices_of = |node: &str| ring.arcs(720).iter().filter(|a| a.0 == node).map(|a| a.2 - a.1).sum::<u32>();
    assert!(slices_of("b") > 2 * slices_of("a"), "the heavier member has more of the drawing");
}
