//! The ring simulator behind `rota ring simulate`.
//!
//! Why it exists: the ring's promises (balance, minimal movement on join and
//! leave, no movement between survivors, memory, speed) are numbers, and an
//! operator choosing `vnodes` or weights should be able to see them for their
//! own cluster size before deploying. `docs/benchmarks.md` quotes its output.
//!
//! It builds rings with node ids `node-1..node-N`, places keys `"1".."K"` (the
//! same decimal-bytes form application and task ids take), and compares the
//! owners of every key across an N-node ring, the ring after `node-(N+1)`
//! joins with weight 1, and the ring after `node-N` leaves.
//!
//! It must never do I/O or print: it returns a [`SimulationReport`] and the
//! CLI decides how to show it. It is the one place in `ring` that reads a
//! clock (`build_ms`, `lookup_ns`), because those figures are its purpose.

use std::fmt::Write as _;
use std::hint::black_box;
use std::time::Instant;

use serde::Serialize;

use super::{push_decimal, Member, Ring, RingError, MAX_MEMBERS};

/// Most keys a simulation places; the simulator keeps one `u16` per key, so
/// this bounds it to about 200 MB.
pub const MAX_SIMULATED_KEYS: u64 = 100_000_000;

/// Keys rendered and timed per batch: large enough that reading the clock
/// once per batch costs nothing, small enough to stay in cache.
const BATCH: u64 = 64 * 1024;

/// What to simulate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimulateParams {
    /// Number of nodes N (≥ 1); ids are `node-1..node-N`.
    pub nodes: u32,
    /// Virtual points per unit of weight (≥ 1).
    pub vnodes: u32,
    /// Number of keys K (1 ..= [`MAX_SIMULATED_KEYS`]); keys are `"1".."K"`.
    pub keys: u64,
    /// One weight per node, in node order; `None` = all 1.
    pub weights: Option<Vec<u32>>,
}

/// One node's share in the N-node ring.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeReport {
    /// `node-i`.
    pub node_id: String,
    /// Its weight.
    pub weight: u32,
    /// Points it owns on the ring (after tie-breaks).
    pub points: usize,
    /// Keys it owns.
    pub keys: u64,
    /// Keys it should own with perfect balance: `K * weight / sum(weights)`.
    pub fair_keys: f64,
    /// `keys / fair_keys` (1.0 = perfectly fair; `null` for weight 0).
    pub ratio: Option<f64>,
}

/// What a simulation measured. Field names are part of `--json` output.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimulationReport {
    /// N.
    pub nodes: u32,
    /// Virtual points per unit of weight.
    pub vnodes: u32,
    /// K.
    pub keys: u64,
    /// Largest per-node key count over the mean count; with weights, each
    /// count is first divided by the node's fair share (`ratio` in
    /// [`NodeReport`]) and nodes of weight 0 are left out. 1.0 is perfect.
    pub max_over_mean: f64,
    /// Smallest per-node count (or ratio) over the mean, as above.
    pub min_over_mean: f64,
    /// Coefficient of variation (population standard deviation / mean) of
    /// those ratios; without weights, of the per-node key counts.
    pub cv: f64,
    /// Keys whose owner changed when `node-(N+1)` joined with weight 1.
    pub moved_on_join: u64,
    /// The share a joiner must take: `K * 1 / (sum(weights) + 1)`.
    pub ideal_on_join: f64,
    /// Keys whose owner changed when `node-N` left.
    pub moved_on_leave: u64,
    /// The share the leaver held in theory: `K * weight(N) / sum(weights)`.
    pub ideal_on_leave: f64,
    /// Keys that moved from one node present before and after a join or a
    /// leave to another such node. Consistent hashing makes this 0.
    pub moved_between_survivors: u64,
    /// [`Ring::memory_bytes`] of the N-node ring.
    pub bytes: usize,
    /// Wall time to build the N-node ring, in milliseconds.
    pub build_ms: f64,
    /// Mean wall time of one [`Ring::owner`] over the K keys, in nanoseconds.
    pub lookup_ns: f64,
    /// Per node, in node order (`node-1` first).
    pub per_node: Vec<NodeReport>,
}

/// Runs the simulation described by `params`. Errors name the parameter to
/// fix; sizes the ring refuses come back as its own [`RingError`].
pub fn simulate(params: &SimulateParams) -> Result<SimulationReport, RingError> {
    let n = usize::try_from(params.nodes).unwrap_or(usize::MAX);
    if n == 0 {
        return invalid("nodes must be at least 1");
    }
    // One id is kept free for the node that joins.
    if n >= MAX_MEMBERS {
        return invalid(&format!("nodes must be at most {}", MAX_MEMBERS - 1));
    }
    if params.vnodes == 0 {
        return Err(RingError::ZeroVnodes);
    }
    if params.keys == 0 || params.keys > MAX_SIMULATED_KEYS {
        return invalid(&format!("keys must be between 1 and {MAX_SIMULATED_KEYS} (got {})", params.keys));
    }
    let weights = match &params.weights {
        None => vec![1u32; n],
        Some(w) if w.len() == n => w.clone(),
        Some(w) => {
            return invalid(&format!("{} weights given for {n} nodes: give exactly one weight per node", w.len()))
        }
    };
    let total_weight: u64 = weights.iter().map(|&w| u64::from(w)).sum();
    if total_weight == 0 {
        return invalid("weights are all 0: at least one node must take keys");
    }

    let member =
        |i: usize, weight: u32| Member { node_id: format!("node-{}", i + 1), weight, labels: Default::default() };
    let base: Vec<Member> = weights.iter().enumerate().map(|(i, &w)| member(i, w)).collect();

    let started = Instant::now();
    let ring = Ring::build(1, base.clone(), params.vnodes)?;
    let build_ms = started.elapsed().as_secs_f64() * 1e3;

    // Member indices follow node id order ("node-10" < "node-2"), so every
    // ring gets a table back to simulation node numbers (1-based; 0 = none).
    let base_numbers = node_numbers(&ring);

    let mut owners: Vec<u16> = Vec::with_capacity(usize::try_from(params.keys).unwrap_or(0));
    let mut per_node_keys = vec![0u64; n];
    for_each_batch(params.keys, |batch| {
        for key in batch.iter() {
            let number = number_of(&ring, &base_numbers, key);
            owners.push(number);
            if let Some(c) = per_node_keys.get_mut(usize::from(number).wrapping_sub(1)) {
                *c += 1;
            }
        }
    });

    // Timed pass, separate from the one above so that only the lookup is
    // measured (keys are rendered before the clock starts).
    let mut lookup_total = 0.0f64;
    for_each_batch(params.keys, |batch| {
        let started = Instant::now();
        for key in batch.iter() {
            black_box(ring.owner(black_box(key)));
        }
        lookup_total += started.elapsed().as_secs_f64();
    });
    // Key counts are far below 2^53, so the conversion is exact.
    let lookup_ns = lookup_total * 1e9 / params.keys as f64;

    // Join: node-(N+1) with weight 1. A moved key must go to the joiner.
    let joiner = u16::try_from(n + 1).unwrap_or(u16::MAX);
    let mut joined = base.clone();
    joined.push(member(n, 1));
    let join_ring = Ring::build(2, joined, params.vnodes)?;
    let join_numbers = node_numbers(&join_ring);
    let mut moved_on_join = 0u64;
    let mut moved_between_survivors = 0u64;
    let mut k = 0usize;
    for_each_batch(params.keys, |batch| {
        for key in batch.iter() {
            let after = number_of(&join_ring, &join_numbers, key);
            let before = owners.get(k).copied().unwrap_or(0);
            k += 1;
            if after != before {
                moved_on_join += 1;
                if after != joiner {
                    moved_between_survivors += 1;
                }
            }
        }
    });

    // Leave: node-N goes. A moved key must come from the leaver.
    let leaver = u16::try_from(n).unwrap_or(u16::MAX);
    let mut left = base;
    left.pop();
    let leave_ring = Ring::build(3, left, params.vnodes)?;
    let leave_numbers = node_numbers(&leave_ring);
    let mut moved_on_leave = 0u64;
    let mut k = 0usize;
    for_each_batch(params.keys, |batch| {
        for key in batch.iter() {
            let after = number_of(&leave_ring, &leave_numbers, key);
            let before = owners.get(k).copied().unwrap_or(0);
            k += 1;
            if after != before {
                moved_on_leave += 1;
                if before != leaver {
                    moved_between_survivors += 1;
                }
            }
        }
    });

    let keys_f = params.keys as f64;
    let total_weight_f = total_weight as f64;
    let points = ring.points_per_member();
    let mut per_node = Vec::with_capacity(n);
    let mut ratios = Vec::with_capacity(n);
    for (i, (&weight, &count)) in weights.iter().zip(&per_node_keys).enumerate() {
        let node_id = format!("node-{}", i + 1);
        // The ring's member list is sorted by id; find this node's points.
        let idx = ring.members().iter().position(|m| m.node_id == node_id);
        let fair = keys_f * f64::from(weight) / total_weight_f;
        let ratio = (weight > 0).then(|| count as f64 / fair);
        if let Some(r) = ratio {
            ratios.push(r);
        }
        per_node.push(NodeReport {
            node_id,
            weight,
            points: idx.and_then(|i| points.get(i)).copied().unwrap_or(0),
            keys: count,
            fair_keys: fair,
            ratio,
        });
    }
    let (max_over_mean, min_over_mean, cv) = spread(&ratios);

    Ok(SimulationReport {
        nodes: params.nodes,
        vnodes: params.vnodes,
        keys: params.keys,
        max_over_mean,
        min_over_mean,
        cv,
        moved_on_join,
        ideal_on_join: keys_f / (total_weight_f + 1.0),
        moved_on_leave,
        ideal_on_leave: keys_f * f64::from(weights.last().copied().unwrap_or(0)) / total_weight_f,
        moved_between_survivors,
        bytes: ring.memory_bytes(),
        build_ms,
        lookup_ns,
        per_node,
    })
}

impl SimulationReport {
    /// Total points on the N-node ring.
    pub fn points(&self) -> usize {
        self.per_node.iter().map(|p| p.points).sum()
    }

    /// The report as a table for people.
    pub fn render_table(&self) -> String {
        let mut out = String::new();
        let points = self.points();
        let per_point = if points == 0 { 0.0 } else { self.bytes as f64 / points as f64 };
        let pct = |moved: u64, ideal: f64| {
            if ideal > 0.0 {
                format!("{:+.2}% vs ideal", (moved as f64 / ideal - 1.0) * 100.0)
            } else {
                "no ideal".to_string()
            }
        };
        // Writing to a String cannot fail; the results are ignored on purpose.
        let _ = writeln!(
            out,
            "ring simulation: {} nodes, {} vnodes per unit weight, {} keys",
            self.nodes, self.vnodes, self.keys
        );
        let _ = writeln!(
            out,
            "  ring        {} points, {} bytes ({:.1} bytes/point), built in {:.2} ms",
            points, self.bytes, per_point, self.build_ms
        );
        let _ = writeln!(out, "  lookup      {:.1} ns per key", self.lookup_ns);
        let _ = writeln!(
            out,
            "  balance     max/mean {:.4}   min/mean {:.4}   cv {:.4}",
            self.max_over_mean, self.min_over_mean, self.cv
        );
        let _ = writeln!(
            out,
            "  join        {} keys moved, ideal {:.0} ({})",
            self.moved_on_join,
            self.ideal_on_join,
            pct(self.moved_on_join, self.ideal_on_join)
        );
        let _ = writeln!(
            out,
            "  leave       {} keys moved, ideal {:.0} ({})",
            self.moved_on_leave,
            self.ideal_on_leave,
            pct(self.moved_on_leave, self.ideal_on_leave)
        );
        let _ = writeln!(
            out,
            "  survivors   {} keys moved between surviving nodes (must be 0)",
            self.moved_between_survivors
        );
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "  {:<12} {:>6} {:>9} {:>10} {:>12} {:>8}",
            "node", "weight", "points", "keys", "fair keys", "ratio"
        );
        for p in &self.per_node {
            let ratio = p.ratio.map_or_else(|| "-".to_string(), |r| format!("{r:.4}"));
            let _ = writeln!(
                out,
                "  {:<12} {:>6} {:>9} {:>10} {:>12.0} {:>8}",
                p.node_id, p.weight, p.points, p.keys, p.fair_keys, ratio
            );
        }
        out
    }
}

fn invalid<T>(message: &str) -> Result<T, RingError> {
    Err(RingError::InvalidSimulation(message.to_string()))
}

/// Maps each member index of `ring` to its simulation node number
/// (`node-7` → 7).
fn node_numbers(ring: &Ring) -> Vec<u16> {
    ring.members()
        .iter()
        .map(|m| m.node_id.strip_prefix("node-").and_then(|s| s.parse::<u16>().ok()).unwrap_or(0))
        .collect()
}

/// Simulation node number owning `key` on `ring` (0 when none).
#[inline]
fn number_of(ring: &Ring, numbers: &[u16], key: &[u8]) -> u16 {
    ring.owner_index(key).and_then(|i| numbers.get(i)).copied().unwrap_or(0)
}

/// Keys `"1".."K"` rendered contiguously, one batch at a time.
struct Batch {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Batch {
    fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts.zip(self.ends.iter().copied()).filter_map(move |(s, e)| self.bytes.get(s..e))
    }
}

/// Calls `f` with successive batches of keys `"1"..="{keys}"`, in order.
fn for_each_batch(keys: u64, mut f: impl FnMut(&Batch)) {
    let mut batch = Batch { bytes: Vec::new(), ends: Vec::new() };
    let mut next = 1u64;
    while next <= keys {
        let last = keys.min(next.saturating_add(BATCH - 1));
        batch.bytes.clear();
        batch.ends.clear();
        for key in next..=last {
            push_decimal(&mut batch.bytes, key);
            batch.ends.push(batch.bytes.len());
        }
        f(&batch);
        next = last + 1;
    }
}

/// (max, min, coefficient of variation) of `values`; zeros when empty.
fn spread(values: &[f64]) -> (f64, f64, f64) {
    if values.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    let count = values.len() as f64;
    let mean = values.iter().sum::<f64>() / count;
    let max = values.iter().copied().fold(f64::MIN, f64::max);
    let min = values.iter().copied().fold(f64::MAX, f64::min);
    let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / count;
    let cv = if mean > 0.0 { variance.sqrt() / mean } else { 0.0 };
    (max / mean, min / mean, cv)
}
