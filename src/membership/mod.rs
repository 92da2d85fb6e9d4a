//! Membership: who is in the cluster right now, and whether this node may act.
//!
//! Why: the ring is only as right as the member list behind it, and a node that has lost its
//! place (lease expired, lock taken over) must stop acting before anyone else takes its work.
//! Every backend publishes one thing, a [`MembershipState`] on a `tokio::sync::watch` channel:
//! the current [`View`] (`{epoch, members}`) and this node's [`Status`]. The dispatcher and the
//! API read only that, so they never know which backend they have.
//!
//! Each new view comes with its ring, built here from the whole member set and published in the
//! same channel value: readers swap both at once and never see a half-built ring or a ring from
//! another view.
//!
//! Backends:
//! - [`standalone`]: this node alone, guarded by a lock row in the database (docs/design.md, "Two deployment shapes").
//! - [`etcd`]: leases, a prefix read and a watch from the read's revision (docs/design.md, "Membership").
//!
//! Must never: report `Joined` past `valid_until` — consumers check the deadline themselves, so a
//! node resumed after a pause is fenced even before its membership task has run again.

pub mod clock;
pub mod etcd;
pub mod health;
pub mod history;
pub mod settle;
pub mod standalone;
pub mod view;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::ring::{self, Ring};
use settle::{Settle, SettleRule};

/// One member of the cluster as every node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Member {
    /// Node id.
    pub node_id: String,
    /// HTTP address others reach it at.
    pub addr: String,
    /// Labels matched by selectors.
    pub labels: BTreeMap<String, String>,
    /// Ring weight.
    pub weight: u32,
    /// When the member process started (RFC 3339).
    pub started_at: String,
}

/// A member record under our cluster prefix whose node runs on another database: another
/// deployment's node, never in our view (docs/design.md, "Cluster identity").
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ForeignMember {
    /// Its node id.
    pub node_id: String,
    /// Its HTTP address.
    pub addr: String,
    /// The identity of the database it runs on.
    pub database: String,
}

/// The cluster at one epoch. Members are sorted by node id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct View {
    /// Grows with every change (etcd revision; standalone lock epoch).
    pub epoch: u64,
    /// Members, sorted by node id.
    pub members: Vec<Member>,
}

/// This node's standing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", content = "reason", rename_all = "lowercase")]
pub enum Status {
    /// Not yet a member; the reason says what it is waiting for ("" at start).
    Joining(String),
    /// A member: may claim and act until `valid_until`.
    Joined,
    /// Lost its place: must not claim or act. The reason says why.
    Fenced(String),
    /// Left on shutdown.
    Left,
}

/// How much earlier than the lease's end the database stops taking this node's writes
/// ([`MembershipState::deadline_on`]). Why: the database checks the deadline as a statement
/// begins, and a statement that began in time may commit a little later (a row lock waited
/// for); the margin also absorbs a small skew between the node's clock and the database's.
/// The lease is renewed every TTL/3, so a healthy node's deadline is seconds ahead and never
/// within the margin.
pub const DEADLINE_MARGIN: std::time::Duration = std::time::Duration::from_millis(250);

/// What a backend publishes.
#[derive(Debug, Clone)]
pub struct MembershipState {
    /// This node's standing.
    pub status: Status,
    /// The latest view.
    pub view: Arc<View>,
    /// The ring built from `view` (same epoch): jobs are placed by it.
    pub ring: Arc<Ring>,
    /// The ring applications are placed by: `ring` once the view has settled, the members that
    /// were applied before and are still there meanwhile ([`settle`]).
    pub app_ring: Arc<Ring>,
    /// Grows each time `app_ring` changes, so the dispatcher reconciles when it does.
    pub app_generation: u64,
    /// Which view changes applications follow at once and which wait ([`settle`]).
    pub settle: Settle,
    /// Records under the cluster prefix of nodes that run on another database: ignored, and
    /// reported (`/readyz`, a metric, an event).
    pub foreign: Arc<Vec<ForeignMember>>,
    /// A `Joined` node may act only before this instant (its lease or lock deadline).
    pub valid_until: Option<Instant>,
    /// Backend detail for operators: `standalone epoch 3`, `etcd lease 0x…`.
    pub session: String,
    /// The epoch at which this node's current membership session began (lock acquired, lease
    /// granted and registered). Work it claimed at an older epoch belongs to an earlier life.
    pub joined_epoch: u64,
}

impl MembershipState {
    /// The state before joining, with applications following every view at once.
    pub fn joining() -> Self {
        Self::joining_with(SettleRule::IMMEDIATE)
    }

    /// The state before joining, applications following views by `rule`.
    pub fn joining_with(rule: SettleRule) -> Self {
        Self {
            status: Status::Joining(String::new()),
            view: Arc::new(View::default()),
            ring: Arc::new(Ring::empty()),
            app_ring: Arc::new(Ring::empty()),
            app_generation: 0,
            settle: Settle::new(rule),
            foreign: Arc::new(Vec::new()),
            valid_until: None,
            session: String::new(),
            joined_epoch: 0,
        }
    }

    /// Adopt `view`: rebuild the ring from its members and log the change once (members added
    /// and removed, with `ring.epoch`); the applications' ring follows by the settle rule.
    /// Returns false when nothing changed.
    pub fn adopt_view(&mut self, view: View, vnodes: u32) -> bool {
        if *self.view == view {
            return false;
        }
        let (added, removed) = view::diff(&self.view, &view);
        let ring = build_ring(view.epoch, &view.members, vnodes);
        if added.is_empty() && removed.is_empty() {
            tracing::debug!(ring.epoch = view.epoch, "membership epoch advanced; members unchanged");
        } else {
            tracing::info!(
                ring.epoch = view.epoch, members = view.members.len(), added = ?added, removed = ?removed,
                "membership view changed; ring rebuilt"
            );
        }
        self.ring = Arc::new(ring);
        let applied = self.settle.observe(&view.members, Instant::now());
        self.view = Arc::new(view);
        self.place_apps(applied, vnodes);
        true
    }

    /// A new membership session begins: applications are placed among no member until the view
    /// has settled ([`settle`]).
    pub fn begin_session(&mut self, vnodes: u32) {
        self.settle.restart(Instant::now());
        self.place_apps(true, vnodes);
    }

    /// Apply the members that waited to settle, when they are due at `now`. True when the
    /// applications' ring changed.
    pub fn settle_tick(&mut self, now: Instant, vnodes: u32) -> bool {
        let changed = self.settle.tick(now);
        if changed {
            tracing::info!(
                ring.epoch = self.view.epoch,
                members = self.settle.applied().len(),
                "membership view settled; applications follow it"
            );
        }
        self.place_apps(changed, vnodes);
        changed
    }

    /// Rebuild the applications' ring when the applied members `changed` (the view's own ring
    /// once settled, so both are one).
    fn place_apps(&mut self, changed: bool, vnodes: u32) {
        if self.settle.settled() && self.settle.applied() == self.view.members.as_slice() {
            if !Arc::ptr_eq(&self.app_ring, &self.ring) {
                self.app_ring = self.ring.clone();
                self.app_generation += 1;
            }
        } else if changed || Arc::ptr_eq(&self.app_ring, &self.ring) {
            self.app_ring = Arc::new(build_ring(self.view.epoch, self.settle.applied(), vnodes));
            self.app_generation += 1;
        }
    }

    /// True when this node may claim and act now.
    pub fn may_act(&self, now: Instant) -> bool {
        self.status == Status::Joined && self.valid_until.is_some_and(|d| now < d)
    }

    /// The instant until which this node may act `now` on work it owns at `epoch`: None when it
    /// may not act, or when `epoch` is older than its session (work of an earlier session, which
    /// [`crate::store::fence::Fence`] refuses to write about as well).
    pub fn acting_until(&self, now: Instant, epoch: u64) -> Option<Instant> {
        if self.may_act(now) && epoch >= self.joined_epoch {
            self.valid_until
        } else {
            None
        }
    }

    /// This node's deadline on the wall clock (UTC), given the wall clock `wall` and the
    /// monotonic clock `now` read after it: `wall` plus what is left of the lease or lock, less
    /// [`DEADLINE_MARGIN`].
    /// Already passed (the Unix epoch) when it may not act. The database compares it with its
    /// own clock at every write as owner (`store::fence::Fence`), so a node paused past its
    /// deadline writes nothing when it wakes. Reading `wall` first means a pause between the two reads
    /// makes the deadline earlier, never later.
    pub fn deadline_on(&self, wall: chrono::NaiveDateTime, now: Instant) -> chrono::NaiveDateTime {
        match self.valid_until {
            // At most a day ahead: a deadline earlier than the lease's is only more careful, and
            // an absurd TTL must not overflow the wall clock.
            Some(d) if self.may_act(now) => {
                let left = (d - now).saturating_sub(DEADLINE_MARGIN).min(std::time::Duration::from_secs(86_400));
                wall + chrono::TimeDelta::from_std(left).unwrap_or_default()
            }
            _ => chrono::DateTime::UNIX_EPOCH.naive_utc(),
        }
    }

    /// This node's deadline on the monotonic clock (`CLOCK_MONOTONIC`, in nanoseconds), given
    /// that clock's reading `mono_ns` and `now` read after it: the lease's or lock's end less
    /// [`DEADLINE_MARGIN`], the instant [`MembershipState::deadline_on`] names on the wall
    /// clock. 0 (long passed) when the node is not `Joined`; in the past, not 0, when its
    /// deadline has passed. The watchdog kills the node's supervised processes at this instant
    /// (`drivers::watchdog`, docs/design.md#i1): before the lease can end in etcd (its end there
    /// counts from a renewal etcd received after the node sent it), so before any other node
    /// can acquire. Reading `mono_ns` first makes a pause between the reads bring it earlier.
    pub fn deadline_monotonic(&self, mono_ns: u64, now: Instant) -> u64 {
        let (Status::Joined, Some(until)) = (&self.status, self.valid_until) else { return 0 };
        let nanos = |d: std::time::Duration| i128::try_from(d.as_nanos()).unwrap_or(i128::MAX);
        let left = match until.checked_duration_since(now) {
            Some(ahead) => nanos(ahead),
            None => -nanos(now - until),
        };
        let at = i128::from(mono_ns).saturating_add(left).saturating_sub(nanos(DEADLINE_MARGIN));
        u64::try_from(at.max(0)).unwrap_or(u64::MAX)
    }

    /// `Joined`, unless its deadline has passed, in which case `Fenced` with that reason.
    pub fn effective_status(&self, now: Instant) -> Status {
        match (&self.status, self.valid_until) {
            (Status::Joined, Some(d)) if now >= d => {
                Status::Fenced("membership deadline passed without renewal".into())
            }
            (s, _) => s.clone(),
        }
    }
}

/// The ring of `members` at `epoch`: empty, with an error logged, if it cannot be built.
fn build_ring(epoch: u64, members: &[Member], vnodes: u32) -> Ring {
    let members = members
        .iter()
        .map(|m| ring::Member { node_id: m.node_id.clone(), weight: m.weight, labels: m.labels.clone() })
        .collect();
    match Ring::build(epoch, members, vnodes) {
        Ok(r) => r,
        Err(e) => {
            // Cannot happen with ids from a map; never act on a ring we could not build.
            tracing::error!(ring.epoch = epoch, error = %e, "cannot build the ring; keeping an empty one");
            Ring::empty()
        }
    }
}

/// A running membership backend.
pub struct MembershipHandle {
    rx: watch::Receiver<MembershipState>,
    task: JoinHandle<()>,
}

impl MembershipHandle {
    /// Wrap a backend's task and channel.
    pub fn new(rx: watch::Receiver<MembershipState>, task: JoinHandle<()>) -> Self {
        Self { rx, task }
    }

    /// The current state and its changes.
    pub fn subscribe(&self) -> watch::Receiver<MembershipState> {
        self.rx.clone()
    }

    /// Wait until the backend has left (after the shutdown token was cancelled).
    pub async fn stopped(self) {
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "membership task ended abnormally");
        }
    }
}

/// Record an event each time a member of another deployment appears in the view's records
/// (`membership.foreign_member`), until the channel closes. Why an event: the warning is in
/// one node's log, the metric in a dashboard; the event is in the history every admin reads.
pub async fn record_foreign(store: crate::store::Store, node_id: String, mut rx: watch::Receiver<MembershipState>) {
    let mut known: Vec<ForeignMember> = Vec::new();
    loop {
        let foreign = rx.borrow_and_update().foreign.clone();
        for f in foreign.iter().filter(|f| !known.contains(f)) {
            let ev = crate::store::models::NewEvent {
                kind: "membership.foreign_member".into(),
                app_id: None,
                task_id: None,
                node_id: Some(node_id.clone()),
                actor: Some("membership".into()),
                message: format!(
                    "ignoring member {} at {}: it runs on database {}, not this cluster's; two deployments share                      one etcd prefix, give each its own --cluster",
                    f.node_id, f.addr, f.database
                ),
                data: Some(serde_json::json!({ "member": f }).to_string()),
            };
            if let Err(e) = store.run(move |c| crate::store::events::record_event(c, &ev)).await {
                tracing::warn!(error = %e, "could not record an event");
            }
        }
        known = foreign.to_vec();
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Who this process is, as membership needs it.
#[derive(Debug, Clone)]
pub struct LocalNode {
    /// Node id.
    pub node_id: String,
    /// HTTP address to advertise.
    pub addr: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Ring weight.
    pub weight: u32,
    /// Process start (RFC 3339).
    pub started_at: String,
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// Per-process token (unique per start).
    pub instance: String,
}

impl LocalNode {
    /// This node as a [`Member`].
    pub fn member(&self) -> Member {
        Member {
            node_id: self.node_id.clone(),
            addr: self.addr.clone(),
            labels: self.labels.clone(),
            weight: self.weight,
            started_at: self.started_at.clone(),
        }
    }
}

/// Membership could not start.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    /// Another standalone node holds the database.
    #[error(
        "another Rota node already runs standalone on this database: node `{node_id}` (pid {pid} on {host}, \
         http {addr}), last heartbeat {age_s:.1} s ago. Standalone membership allows exactly one node per \
         database, so that two nodes can never act on the same rows. To run several nodes, use PostgreSQL \
         with `--membership etcd` (see docs/operations.md). If that node is gone, its lock expires \
         {ttl_s:.0} s after its last heartbeat; start again then"
    )]
    StandaloneHeld {
        /// holder's node id
        node_id: String,
        /// holder's pid
        pid: i64,
        /// holder's host
        host: String,
        /// holder's address
        addr: String,
        /// seconds since its heartbeat
        age_s: f64,
        /// lock TTL in seconds
        ttl_s: f64,
    },
    /// The database failed while joining.
    #[error("membership could not use the database: {0}")]
    Store(#[from] crate::store::StoreError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_wall_clock_deadline_is_whats_left_of_the_lease_and_passed_when_not_acting() {
        let wall = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap().naive_utc();
        let now = Instant::now();
        let mut s = MembershipState::joining();
        assert!(s.deadline_on(wall, now) < wall, "joining: passed");
        s.status = Status::Joined;
        s.valid_until = Some(now + Duration::from_millis(2_500));
        assert_eq!(s.deadline_on(wall, now), wall + chrono::TimeDelta::milliseconds(2_500 - 250));
        // A pause between the two reads: the later monotonic read leaves less of the lease.
        assert_eq!(
            s.deadline_on(wall, now + Duration::from_millis(1_000)),
            wall + chrono::TimeDelta::milliseconds(1_500 - 250)
        );
        // Within the margin of the lease's end: the deadline is now.
        assert_eq!(s.deadline_on(wall, now + Duration::from_millis(2_400)), wall);
        assert!(s.deadline_on(wall, now + Duration::from_secs(3)) < wall, "lease over: passed");
        s.status = Status::Fenced("test".into());
        assert!(s.deadline_on(wall, now) < wall, "fenced: passed");
    }

    #[test]
    fn the_monotonic_deadline_is_the_leases_end_less_the_margin_and_passed_when_not_joined() {
        let now = Instant::now();
        let mono = 1_000_000_000_000u64;
        let ms = |n: u64| n * 1_000_000;
        let mut s = MembershipState::joining();
        s.valid_until = Some(now + Duration::from_secs(3));
        assert_eq!(s.deadline_monotonic(mono, now), 0, "joining: passed");
        s.status = Status::Joined;
        assert_eq!(s.deadline_monotonic(mono, now), mono + ms(3_000 - 250));
        // Read later (or after a pause between the two reads): earlier, never later.
        assert_eq!(s.deadline_monotonic(mono, now + Duration::from_millis(1_000)), mono + ms(2_000 - 250));
        // The lease over: in the past by as much, and the margin.
        assert_eq!(s.deadline_monotonic(mono, now + Duration::from_secs(4)), mono - ms(1_000 + 250));
        assert_eq!(s.deadline_monotonic(ms(100), now + Duration::from_secs(4)), 0, "never below 0");
        s.status = Status::Fenced("test".into());
        assert_eq!(s.deadline_monotonic(mono, now), 0, "fenced: passed");
        s.status = Status::Left;
        assert_eq!(s.deadline_monotonic(mono, now), 0, "left: passed");
    }

    #[test]
    fn a_node_acts_until_its_deadline_on_work_of_its_own_session_only() {
        let now = Instant::now();
        let mut s = MembershipState::joining();
        assert_eq!(s.acting_until(now, 5), None, "joining");
        s.status = Status::Joined;
        s.joined_epoch = 5;
        s.valid_until = Some(now + Duration::from_secs(2));
        assert_eq!(s.acting_until(now, 5), s.valid_until);
        assert_eq!(s.acting_until(now, 7), s.valid_until, "a later epoch of the same session");
        assert_eq!(s.acting_until(now, 4), None, "work claimed in an earlier session");
        assert_eq!(s.acting_until(now + Duration::from_secs(2), 5), None, "deadline passed");
    }
}
