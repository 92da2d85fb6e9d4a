//! The consistent-hash ring: which node owns a key.
//!
//! Why it exists: every Rota node polls the same `task` table and must agree,
//! without talking to the others, on which single node acts on each row. The
//! ring turns a membership view `{epoch, members}` into that answer. Keys are
//! application ids (everything about one application lands on one node) or, for
//! tasks without an application, task ids — both as decimal bytes (`b"42"`).
//!
//! How (details and measurements in `docs/ring.md`):
//! - a point and a key are hashed with Murmur3 x64_128, seed 0, low 64 bits
//!   ([`hash_key`]);
//! - a member of weight `w` contributes `vnodes * w` points, hashed from
//!   `"{node_id}#{i}"`; weight 0 takes no keys;
//! - the points form one sorted `Vec<u64>` with a parallel `Vec<u16>` of owner
//!   indices into the members sorted by node id, plus a small bucket index
//!   over the points' top bits (≈ 11 bytes per point in all); equal points
//!   are won by the lowest node id, so the ring is a pure function of the
//!   member *set*, whatever order the members arrive in;
//! - a key is owned by the first point at or after its hash, wrapping around;
//!   with a label selector, by the first point clockwise whose node matches.
//!
//! What it must never do:
//! - I/O, logging, async or reading a clock: it is pure so that it can be
//!   property-tested and so that two nodes with the same view always agree
//!   (the simulator, [`simulate()`], is the one place that times itself).
//! - Change after it is built. A [`Ring`] is immutable; a new membership epoch
//!   builds a whole new ring, which [`SharedRing::store`] swaps in at once.
//!   Readers never see a half-built or half-updated ring (StreamPark mutated a
//!   shared ring while others read it).

mod hash;
pub mod simulate;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

use serde::{Deserialize, Serialize};

pub use hash::{hash_key, murmur3_x64_128};
pub use simulate::{simulate, NodeReport, SimulateParams, SimulationReport};

/// Virtual points per unit of weight unless configured otherwise.
///
/// 1024 gives max/mean ≈ 1.04 at 10 nodes for 10 bytes per point; 131072
/// (StreamPark's choice) buys about two points of balance for 128× the memory
/// and build time. Measurements in `docs/benchmarks.md`.
pub const DEFAULT_VNODES: u32 = 1024;

/// Most members a ring holds: owner indices are `u16` to keep a point at 10
/// bytes.
pub const MAX_MEMBERS: usize = u16::MAX as usize;

/// Most points a ring holds (about 1.3 GB of points). It exists to turn a
/// mistyped weight or vnode count into an error instead of an allocation that
/// takes the node down.
pub const MAX_POINTS: u64 = 1 << 27;

/// Points a selector lookup checks directly before it falls back to a walk
/// that remembers each node's verdict (and so can prove that none matches).
const FAST_WALK_STEPS: usize = 16;

/// A node as the ring sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Unique, stable node id; it names the node's points, so renaming a node
    /// moves its keys.
    pub node_id: String,
    /// Relative share of keys: `weight * vnodes` points. 0 = takes no keys.
    pub weight: u32,
    /// Labels (`dc`, `zone`, ...) matched by selectors.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl Member {
    /// True when every `key=value` of `selector` is among this member's
    /// labels. The empty selector matches every member.
    pub fn matches(&self, selector: &Selector) -> bool {
        selector.iter().all(|(k, v)| self.labels.get(k).is_some_and(|mine| mine == v))
    }
}

/// A label selector: all pairs must equal the node's labels.
pub type Selector = BTreeMap<String, String>;

/// Why a ring could not be built (or simulated). Each message says what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    /// Two members share one node id; their points would be indistinguishable.
    #[error("duplicate node id {0:?} in the member list: node ids must be unique")]
    DuplicateNodeId(String),
    /// A member has an empty node id.
    #[error("empty node id in the member list: every node needs a non-empty id")]
    EmptyNodeId,
    /// `vnodes` was 0, which would give every node zero points.
    #[error("vnodes must be at least 1 (got 0); the default is {DEFAULT_VNODES}")]
    ZeroVnodes,
    /// More members than owner indices can address.
    #[error("{count} members exceed the ring's limit of {max}")]
    TooManyMembers {
        /// Members given.
        count: usize,
        /// [`MAX_MEMBERS`].
        max: usize,
    },
    /// `sum(weight) * vnodes` is larger than [`MAX_POINTS`].
    #[error("the ring would hold {points} points (sum of weights × vnodes), more than the limit of {max}: lower vnodes or the weights")]
    TooManyPoints {
        /// Points the member set asked for.
        points: u64,
        /// [`MAX_POINTS`].
        max: u64,
    },
    /// Invalid simulator parameters.
    #[error("invalid simulation parameters: {0}")]
    InvalidSimulation(String),
}

/// An immutable consistent-hash ring for one membership epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ring {
    epoch: u64,
    /// Sorted by `node_id`; owner indices point into it.
    members: Vec<Member>,
    /// Sorted ascending, no duplicates (ties already resolved).
    points: Vec<u64>,
    /// `owners[i]` owns `points[i]`: an index into `members`.
    owners: Vec<u16>,
    /// Members that own at least one point. Bounds a selector walk: once
    /// this many distinct non-matching owners were passed, none can match.
    owning_members: usize,
    /// `index[b]` = first point whose top bits are ≥ bucket `b`; one more
    /// entry than buckets, the last being `points.len()`. A plain binary
    /// search over 100k points costs a chain of cache misses (~70 ns at
    /// N=100); narrowing to one bucket of ~4-8 points first halves that, for
    /// under one byte per point.
    index: Vec<u32>,
    /// `hash >> shift` is a hash's bucket; 64 (no buckets) on small rings.
    shift: u32,
}

/// The answer to "who owns this key, and why" (for `GET /api/v1/owner`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Explanation {
    /// Ring epoch the answer holds for.
    pub epoch: u64,
    /// `hash_key(key)`.
    pub hash: u64,
    /// The same hash as 16 hex digits (JSON numbers above 2^53 lose digits in
    /// many clients).
    pub hash_hex: String,
    /// The selector applied (empty = any node).
    pub selector: Selector,
    /// Total points on the ring.
    pub point_count: usize,
    /// Index of the first point at or after the hash (after wrap-around);
    /// `None` on a ring without points.
    pub start_index: Option<usize>,
    /// Node owning `start_index`: the owner if there were no selector.
    pub start_node: Option<String>,
    /// Whether the search ran past the last point and wrapped to index 0.
    pub wrapped: bool,
    /// Index of the point that decided ownership (first matching point
    /// clockwise); `None` when nothing matched.
    pub index: Option<usize>,
    /// Value of that point.
    pub point: Option<u64>,
    /// The owner; `None` when the ring is empty or no member with weight > 0
    /// matches the selector.
    pub owner: Option<Member>,
    /// Points passed because their node did not match the selector.
    pub skipped_points: usize,
    /// Distinct nodes passed because they did not match the selector, in the
    /// order met.
    pub skipped_nodes: Vec<String>,
}

/// Outcome of a clockwise walk from a start index.
struct Walk {
    /// Index of the first point whose owner matched.
    found: Option<usize>,
    skipped_points: usize,
    /// Member indices of distinct non-matching owners, in the order met.
    skipped_nodes: Vec<u16>,
}

impl Ring {
    /// Builds the ring of `members` for membership `epoch`, with `vnodes`
    /// points per unit of weight (see [`DEFAULT_VNODES`]).
    ///
    /// The result depends only on the member set, not on its order. Refuses
    /// duplicate or empty node ids, `vnodes == 0`, and sizes over
    /// [`MAX_MEMBERS`] / [`MAX_POINTS`].
    pub fn build(epoch: u64, mut members: Vec<Member>, vnodes: u32) -> Result<Ring, RingError> {
        if vnodes == 0 {
            return Err(RingError::ZeroVnodes);
        }
        if members.len() > MAX_MEMBERS {
            return Err(RingError::TooManyMembers { count: members.len(), max: MAX_MEMBERS });
        }
        // Sorting first is what makes the ring independent of input order:
        // owner indices, and so tie-breaks, follow node id order.
        members.sort_unstable_by(|a, b| a.node_id.cmp(&b.node_id));
        for pair in members.windows(2) {
            if pair[0].node_id == pair[1].node_id {
                return Err(RingError::DuplicateNodeId(pair[0].node_id.clone()));
            }
        }
        if members.iter().any(|m| m.node_id.is_empty()) {
            return Err(RingError::EmptyNodeId);
        }
        // Saturating: u32::MAX weights on many members would overflow u64,
        // and must still be refused rather than wrap to a small number.
        let total: u64 = members.iter().map(|m| u64::from(m.weight) * u64::from(vnodes)).fold(0, u64::saturating_add);
        if total > MAX_POINTS {
            return Err(RingError::TooManyPoints { points: total, max: MAX_POINTS });
        }

        // (point, owner) pairs; MAX_POINTS keeps `total` within usize.
        let mut pairs: Vec<(u64, u16)> = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
        let mut name: Vec<u8> = Vec::with_capacity(64);
        for (idx, member) in members.iter().enumerate() {
            // idx < MAX_MEMBERS = u16::MAX, checked above.
            let owner = u16::try_from(idx).unwrap_or(u16::MAX);
            let count = u64::from(member.weight) * u64::from(vnodes);
            name.clear();
            name.extend_from_slice(member.node_id.as_bytes());
            // The separator keeps "{id}#{i}" unique per (id, i): `i` has no
            // '#', so the last '#' always splits it back. Without it, node
            // "a1" point 1 and node "a" point 11 would be the same string.
            name.push(b'#');
            let prefix = name.len();
            for i in 0..count {
                name.truncate(prefix);
                push_decimal(&mut name, i);
                pairs.push((hash_key(&name), owner));
            }
        }

        Ok(Ring::assemble(epoch, members, pairs))
    }

    /// Turns unsorted `(point, owner index)` pairs into the ring's arrays.
    /// `members` must already be sorted by node id.
    fn assemble(epoch: u64, members: Vec<Member>, mut pairs: Vec<(u64, u16)>) -> Ring {
        // Sorting by (point, owner) puts equal points next to each other with
        // the lowest node id first; `dedup_by_key` keeps that first one. So a
        // collision has one deterministic winner and lookups never depend on
        // build order.
        pairs.sort_unstable();
        pairs.dedup_by_key(|p| p.0);

        let mut points = Vec::with_capacity(pairs.len());
        let mut owners = Vec::with_capacity(pairs.len());
        let mut owns = vec![false; members.len()];
        for (point, owner) in pairs {
            points.push(point);
            owners.push(owner);
            if let Some(flag) = owns.get_mut(usize::from(owner)) {
                *flag = true;
            }
        }
        let owning_members = owns.iter().filter(|&&o| o).count();
        let (index, shift) = bucket_index(&points);
        Ring { epoch, members, points, owners, owning_members, index, shift }
    }

    /// A ring with no members: epoch 0, every lookup answers `None`. What a
    /// node holds before its first membership view.
    pub fn empty() -> Ring {
        Ring {
            epoch: 0,
            members: Vec::new(),
            points: Vec::new(),
            owners: Vec::new(),
            owning_members: 0,
            index: Vec::new(),
            shift: 64,
        }
    }

    /// Membership epoch this ring was built for (the fencing token written
    /// with ownership).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Members, sorted by node id (weight-0 members included).
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The member that owns `key`, or `None` when no member has points.
    #[inline]
    pub fn owner(&self, key: &[u8]) -> Option<&Member> {
        let (start, _) = self.start(hash_key(key))?;
        self.member_at(start)
    }

    /// The owner of `key` among members whose labels match `selector`: the
    /// first point clockwise from the key whose node matches. `None` when no
    /// member with weight > 0 matches (or the ring is empty).
    pub fn owner_matching(&self, key: &[u8], selector: &Selector) -> Option<&Member> {
        let (start, _) = self.start(hash_key(key))?;
        // Fast path, no allocation: when a selector matches a fair share of
        // the nodes, a matching point is a few steps away. Only when it is
        // not does the bounded walk below (which caches verdicts so that it
        // can stop when nothing matches) pay for its bookkeeping.
        let n = self.points.len();
        for step in 0..n.min(FAST_WALK_STEPS) {
            let member = self.member_at((start + step) % n)?;
            if member.matches(selector) {
                return Some(member);
            }
        }
        let found = self.walk(start, selector).found?;
        self.member_at(found)
    }

    /// Like [`Ring::owner_matching`], but says how the answer was reached.
    pub fn explain(&self, key: &[u8], selector: &Selector) -> Explanation {
        let hash = hash_key(key);
        let mut out = Explanation {
            epoch: self.epoch,
            hash,
            hash_hex: format!("{hash:016x}"),
            selector: selector.clone(),
            point_count: self.points.len(),
            start_index: None,
            start_node: None,
            wrapped: false,
            index: None,
            point: None,
            owner: None,
            skipped_points: 0,
            skipped_nodes: Vec::new(),
        };
        let Some((start, wrapped)) = self.start(hash) else {
            return out;
        };
        out.start_index = Some(start);
        out.wrapped = wrapped;
        out.start_node = self.member_at(start).map(|m| m.node_id.clone());
        let walk = self.walk(start, selector);
        out.skipped_points = walk.skipped_points;
        out.skipped_nodes = walk
            .skipped_nodes
            .iter()
            .filter_map(|&i| self.members.get(usize::from(i)))
            .map(|m| m.node_id.clone())
            .collect();
        if let Some(found) = walk.found {
            out.index = Some(found);
            out.point = self.points.get(found).copied();
            out.owner = self.member_at(found).cloned();
        }
        out
    }

    /// Number of points on the ring (after collisions were resolved).
    pub fn point_count(&self) -> usize {
        self.points.len()
    }

    /// Heap bytes held by the ring: the point and owner arrays exactly, the
    /// members roughly (strings and label maps estimated from their lengths).
    pub fn memory_bytes(&self) -> usize {
        let arrays = self.points.capacity() * std::mem::size_of::<u64>()
            + self.owners.capacity() * std::mem::size_of::<u16>()
            + self.index.capacity() * std::mem::size_of::<u32>();
        // A BTreeMap entry costs its strings plus roughly a node share; 32
        // bytes per entry is a fair estimate, and members are a rounding
        // error next to the points anyway.
        let members: usize = self.members.capacity() * std::mem::size_of::<Member>()
            + self
                .members
                .iter()
                .map(|m| {
                    m.node_id.capacity() + m.labels.iter().map(|(k, v)| k.capacity() + v.capacity() + 32).sum::<usize>()
                })
                .sum::<usize>();
        arrays + members
    }

    /// The share of the hash space each member owns (a fraction, 0 to 1), in member order: what a
    /// drawing of the ring shows next to the weights. Exact; members with no points own 0.
    pub fn shares(&self) -> Vec<(&str, f64)> {
        let mut owned = vec![0u128; self.members.len()];
        for (from, to, owner) in self.intervals() {
            if let Some(o) = owned.get_mut(owner) {
                *o += to - from;
            }
        }
        let whole = (u64::MAX as u128 + 1) as f64;
        self.members.iter().zip(owned).map(|(m, o)| (m.node_id.as_str(), o as f64 / whole)).collect()
    }

    /// The ring as `slices` equal slices of the hash space, each given to the member owning most
    /// of it, with neighbouring slices of one member merged: arcs `(member, from, to)` in slices,
    /// clockwise from hash 0, covering `0..slices` without gaps (none on a ring without points).
    /// A picture at that resolution: with 1,024 points per unit of weight a node's arcs are far
    /// narrower than a pixel, so the exact points would draw as noise and weigh tens of KB.
    pub fn arcs(&self, slices: u32) -> Vec<(&str, u32, u32)> {
        if self.points.is_empty() || slices == 0 {
            return Vec::new();
        }
        let whole: u128 = u64::MAX as u128 + 1;
        let bound = |s: u32| whole * u128::from(s) / u128::from(slices);
        let mut winners: Vec<usize> = Vec::with_capacity(slices as usize);
        let mut tally = vec![0u128; self.members.len()];
        let mut slice = 0u32;
        for (mut from, to, owner) in self.intervals() {
            while from < to && slice < slices {
                let end = bound(slice + 1).min(to);
                if let Some(t) = tally.get_mut(owner) {
                    *t += end - from;
                }
                from = end;
                if end == bound(slice + 1) {
                    // Slice done: the largest share wins, the lowest member index on a tie.
                    let best = tally.iter().enumerate().max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(&a.0)));
                    winners.push(best.map_or(0, |(i, _)| i));
                    tally.iter_mut().for_each(|t| *t = 0);
                    slice += 1;
                }
            }
        }
        let mut arcs: Vec<(&str, u32, u32)> = Vec::new();
        for (s, w) in (0u32..).zip(winners) {
            let Some(member) = self.members.get(w) else { continue };
            match arcs.last_mut() {
                Some(last) if last.0 == member.node_id && last.2 == s => last.2 = s + 1,
                _ => arcs.push((member.node_id.as_str(), s, s + 1)),
            }
        }
        arcs
    }

    /// The hash space as half-open intervals `[from, to)` (as u128, `to` at most 2^64) with the
    /// member index owning each, in hash order: a key belongs to the first point at or after it,
    /// so point `i` owns `(points[i-1], points[i]]`, and the first point also owns the wrap past
    /// the last one.
    fn intervals(&self) -> impl Iterator<Item = (u128, u128, usize)> + '_ {
        let whole: u128 = u64::MAX as u128 + 1;
        let first_owner = self.owners.first().map_or(0, |&o| usize::from(o));
        let last = self.points.last().map_or(whole, |&p| u128::from(p) + 1);
        self.points
            .iter()
            .zip(&self.owners)
            .scan(0u128, |from, (&p, &o)| {
                let to = u128::from(p) + 1;
                let interval = (*from, to, usize::from(o));
                *from = to;
                Some(interval)
            })
            .chain((last < whole).then_some((last, whole, first_owner)))
    }

    /// Index of the owning member of `key` (internal, for the simulator).
    #[inline]
    pub(crate) fn owner_index(&self, key: &[u8]) -> Option<usize> {
        let (start, _) = self.start(hash_key(key))?;
        self.owners.get(start).map(|&o| usize::from(o))
    }

    /// Points owned by each member, in member order (internal, for the
    /// simulator).
    pub(crate) fn points_per_member(&self) -> Vec<usize> {
        let mut counts = vec![0usize; self.members.len()];
        for &o in &self.owners {
            if let Some(c) = counts.get_mut(usize::from(o)) {
                *c += 1;
            }
        }
        counts
    }

    /// First point index at or after `hash`, wrapping to 0 past the last
    /// point, and whether it wrapped. `None` on a ring without points.
    #[inline]
    fn start(&self, hash: u64) -> Option<(usize, bool)> {
        if self.points.is_empty() {
            return None;
        }
        // Every point before `lo` is in an earlier bucket (< hash) and every
        // point from `hi` on in a later one (> hash), so the first point ≥
        // hash is in points[lo..hi] or, if none there, at `hi`.
        let bucket = usize::try_from(hash.checked_shr(self.shift).unwrap_or(0)).unwrap_or(0);
        let lo = self.index.get(bucket).map_or(0, |&i| i as usize);
        let hi = self.index.get(bucket + 1).map_or(self.points.len(), |&i| i as usize);
        let i = match self.points.get(lo..hi) {
            Some(slice) => lo + slice.partition_point(|&p| p < hash),
            // Unreachable by construction; the full search is always right.
            None => self.points.partition_point(|&p| p < hash),
        };
        if i == self.points.len() {
            Some((0, true))
        } else {
            Some((i, false))
        }
    }

    #[inline]
    fn member_at(&self, index: usize) -> Option<&Member> {
        let owner = *self.owners.get(index)?;
        self.members.get(usize::from(owner))
    }

    /// Walks clockwise from `start` to the first point whose node matches.
    ///
    /// Terminates without visiting every point when nothing matches: each
    /// member's verdict is cached, and once every member that owns points has
    /// been seen not to match, the walk stops. It never passes more than one
    /// full turn either way.
    fn walk(&self, start: usize, selector: &Selector) -> Walk {
        const UNKNOWN: u8 = 0;
        const YES: u8 = 1;
        const NO: u8 = 2;
        let mut verdict = vec![UNKNOWN; self.members.len()];
        let mut walk = Walk { found: None, skipped_points: 0, skipped_nodes: Vec::new() };
        let n = self.points.len();
        for step in 0..n {
            let index = (start + step) % n;
            let Some(&owner) = self.owners.get(index) else {
                break;
            };
            let Some(v) = verdict.get_mut(usize::from(owner)) else {
                break;
            };
            if *v == UNKNOWN {
                let matches = self.members.get(usize::from(owner)).is_some_and(|m| m.matches(selector));
                *v = if matches { YES } else { NO };
                if !matches {
                    walk.skipped_nodes.push(owner);
                }
            }
            if *v == YES {
                walk.found = Some(index);
                return walk;
            }
            walk.skipped_points += 1;
            if walk.skipped_nodes.len() >= self.owning_members {
                break;
            }
        }
        walk
    }
}

/// Builds the bucket index over sorted `points`: 2^bits buckets keyed by the
/// top `bits` bits of a hash, with about 4-8 points per bucket, and returns it
/// with the shift that extracts a bucket from a hash.
fn bucket_index(points: &[u64]) -> (Vec<u32>, u32) {
    let n = points.len();
    // Fewer than 16 points: one bucket; the plain search is already short.
    let bits = if n < 16 { 0 } else { (n / 4).ilog2() };
    let shift = 64 - bits;
    let bucket_of = |p: u64| p.checked_shr(shift).unwrap_or(0);
    let buckets = 1u64 << bits;
    let mut index = Vec::with_capacity(usize::try_from(buckets).unwrap_or(0) + 1);
    let mut i = 0usize;
    for b in 0..buckets {
        while points.get(i).is_some_and(|&p| bucket_of(p) < b) {
            i += 1;
        }
        // n ≤ MAX_POINTS < 2^32, so a point index fits u32.
        index.push(u32::try_from(i).unwrap_or(u32::MAX));
    }
    index.push(u32::try_from(n).unwrap_or(u32::MAX));
    (index, shift)
}

/// Appends the decimal digits of `n` without allocating (the hot loop of
/// [`Ring::build`] runs once per point).
fn push_decimal(buf: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        // n % 10 < 10, so the cast cannot truncate.
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(&digits[at..]);
}

/// The current ring of a node, swapped whole when membership changes.
///
/// Readers call [`SharedRing::load`] and keep the `Arc` for as long as one
/// decision takes (e.g. one dispatch batch), so every row in that batch is
/// judged against the same epoch. Writers build a complete [`Ring`] outside
/// the lock and [`SharedRing::store`] it; the lock is held only to clone or
/// replace one `Arc`, so readers never wait on a build and never see a
/// partly built ring.
#[derive(Debug)]
pub struct SharedRing {
    current: RwLock<Arc<Ring>>,
}

impl SharedRing {
    /// Starts with `ring`.
    pub fn new(ring: Ring) -> SharedRing {
        SharedRing { current: RwLock::new(Arc::new(ring)) }
    }

    /// The current ring.
    pub fn load(&self) -> Arc<Ring> {
        // A poisoned lock only means a writer panicked between two whole
        // `Arc`s; the value inside is still a complete ring, so use it.
        let guard = self.current.read().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(&guard)
    }

    /// Replaces the current ring; readers holding the old one keep it until
    /// they drop it.
    pub fn store(&self, ring: Arc<Ring>) {
        let mut guard = self.current.write().unwrap_or_else(PoisonError::into_inner);
        let old = std::mem::replace(&mut *guard, ring);
        drop(guard);
        // Freeing a large ring takes a while; do it after readers are let in.
        drop(old);
    }
}

impl Default for SharedRing {
    /// Starts with [`Ring::empty`].
    fn default() -> Self {
        SharedRing::new(Ring::empty())
    }
}

impl fmt::Display for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ring epoch {} ({} members, {} points)", self.epoch, self.members.len(), self.points.len())
    }
}

#[cfg(test)]
mod tests;
