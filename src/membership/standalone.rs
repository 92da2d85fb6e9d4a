//! Standalone membership: this node alone, proven by a heartbeated lock row.
//!
//! Why: the embedded default must be as safe as a cluster. Two "alone" nodes started on one
//! database would both act on every row, so the second is refused at start (the row is held and
//! fresh) and a node that cannot renew its heartbeat within the TTL fences itself.
//!
//! Timing: the holder's deadline is measured from the *start* of its last successful heartbeat
//! on its own monotonic clock, and a rival may take over only `ttl` after the heartbeat's
//! database time, which is later. So the holder always stops before a rival can start.
//!
//! Must never: report `Joined` without holding the row at the published epoch.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::history::{Change, History};
use super::{LocalNode, MembershipError, MembershipHandle, MembershipState, Status, View};
use crate::metrics::Metrics;
use crate::store::lock::{self, Acquire, Claimant};
use crate::store::models::LockRow;
use crate::store::Store;

/// Standalone timing.
#[derive(Debug, Clone)]
pub struct Options {
    /// Time between heartbeats.
    pub heartbeat: Duration,
    /// Lock TTL.
    pub ttl: Duration,
    /// Ring points per unit of weight.
    pub vnodes: u32,
}

/// Acquire the lock (or refuse to start) and keep it until `shutdown`.
pub async fn start(
    store: Store,
    me: LocalNode,
    opts: Options,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> Result<MembershipHandle, MembershipError> {
    let claimant = claimant(&me);
    let started = Instant::now();
    match acquire(&store, &claimant, opts.ttl).await? {
        Acquire::Acquired { epoch, lost } => {
            let mut state = MembershipState::joining();
            joined(&mut state, &me, epoch, started + opts.ttl, opts.vnodes);
            let (tx, rx) = watch::channel(state);
            let history = History::start(store.clone());
            record_lost(&history, &me, lost);
            history.record(&me.node_id, Change::Joined, epoch.max(0) as u64, &session(epoch));
            tracing::info!(node.id = %me.node_id, ring.epoch = epoch, "joined as the standalone node");
            let task = tokio::spawn(run(store, me, claimant, epoch, started, opts, tx, metrics, history, shutdown));
            Ok(MembershipHandle::new(rx, task))
        }
        Acquire::Held(row) => {
            let now = store.run(lock::db_now).await?;
            let age = (now - row.heartbeat_at).to_std().unwrap_or_default();
            Err(MembershipError::StandaloneHeld {
                node_id: row.node_id,
                pid: row.pid,
                host: row.host,
                addr: row.addr,
                age_s: age.as_secs_f64(),
                ttl_s: opts.ttl.as_secs_f64(),
            })
        }
    }
}

fn claimant(me: &LocalNode) -> Claimant {
    Claimant {
        node_id: me.node_id.clone(),
        holder: me.instance.clone(),
        host: me.host.clone(),
        pid: i64::from(me.pid),
        pid_space: pid_space(),
        addr: me.addr.clone(),
    }
}

fn joined(state: &mut MembershipState, me: &LocalNode, epoch: i64, valid_until: Instant, vnodes: u32) {
    state.adopt_view(View { epoch: epoch.max(0) as u64, members: vec![me.member()] }, vnodes);
    state.status = Status::Joined;
    state.valid_until = Some(valid_until);
    state.session = session(epoch);
    state.joined_epoch = epoch.max(0) as u64;
}

async fn acquire(store: &Store, me: &Claimant, ttl: Duration) -> Result<Acquire, MembershipError> {
    let me = me.clone();
    Ok(store.run(move |c| lock::try_acquire(c, &me, ttl, holder_is_dead)).await?)
}

/// The holder is provably gone: same kernel boot and pid namespace, and its pid is not running.
/// Anywhere else we cannot tell, and wait for the TTL.
fn holder_is_dead(row: &LockRow) -> bool {
    let here = pid_space();
    cfg!(target_os = "linux")
        && !here.is_empty()
        && row.pid_space == here
        && i64::from(std::process::id()) != row.pid
        && !std::path::Path::new(&format!("/proc/{}", row.pid)).exists()
}

/// Boot id + pid namespace of this process ("" where unknown): pids compare only within one.
fn pid_space() -> String {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let ns = std::fs::read_link("/proc/self/ns/pid").map(|p| p.display().to_string()).unwrap_or_default();
    if boot.trim().is_empty() || ns.is_empty() {
        String::new()
    } else {
        format!("{}/{ns}", boot.trim())
    }
}

fn session(epoch: i64) -> String {
    format!("standalone lock epoch {epoch}")
}

/// Record the loss of the lock's previous holder, taken over stale (docs/membership.md,
/// "Membership events"): only the node that took the lock over sees it, once per epoch.
fn record_lost(history: &History, me: &LocalNode, lost: Option<LockRow>) {
    if let Some(row) = lost {
        let change = Change::Lost {
            observed_by: me.node_id.clone(),
            reason: format!("its standalone lock went without a heartbeat (pid {} on {})", row.pid, row.host),
        };
        history.record(&row.node_id, change, row.epoch.max(0) as u64, &session(row.epoch));
    }
}

#[allow(clippy::too_many_arguments)]
async fn run(
    store: Store,
    me: LocalNode,
    claimant: Claimant,
    mut epoch: i64,
    mut last_ok: Instant,
    opts: Options,
    tx: watch::Sender<MembershipState>,
    metrics: Arc<Metrics>,
    history: History,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval(opts.heartbeat);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let fence = |reason: String| {
        tx.send_if_modified(|s| {
            if matches!(s.status, Status::Fenced(_)) {
                return false;
            }
            tracing::error!(node.id = %me.node_id, ring.epoch = s.view.epoch, reason = %reason, "fenced: stopped acting");
            history.record(&me.node_id, Change::Fenced(reason.clone()), s.joined_epoch, &s.session);
            s.status = Status::Fenced(reason);
            s.valid_until = None;
            true
        });
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let attempt = Instant::now();
        // First thing after any pause: a deadline that has passed fences before any I/O.
        if tx.borrow().status == Status::Joined && attempt >= last_ok + opts.ttl {
            fence(format!("no successful heartbeat for {:.1} s", (attempt - last_ok).as_secs_f64()));
        }
        if tx.borrow().status == Status::Joined {
            let (holder, e) = (claimant.holder.clone(), epoch);
            let beat = tokio::time::timeout(opts.heartbeat, store.run(move |c| lock::heartbeat(c, &holder, e))).await;
            match beat {
                Ok(Ok(true)) => {
                    last_ok = attempt;
                    tx.send_modify(|s| s.valid_until = Some(attempt + opts.ttl));
                }
                Ok(Ok(false)) => fence("the standalone lock was taken over by another node".into()),
                Ok(Err(err)) => {
                    metrics.membership_errors.inc();
                    tracing::warn!(node.id = %me.node_id, error = %err, "standalone heartbeat failed");
                }
                Err(_) => {
                    metrics.membership_errors.inc();
                    tracing::warn!(node.id = %me.node_id, "standalone heartbeat timed out");
                }
            }
            if tx.borrow().status == Status::Joined && Instant::now() >= last_ok + opts.ttl {
                fence(format!("no successful heartbeat for {:.1} s (database unreachable?)", opts.ttl.as_secs_f64()));
            }
        } else {
            // Fenced: take the lock again with a new epoch once it is free or still ours.
            match tokio::time::timeout(opts.ttl, acquire(&store, &claimant, opts.ttl)).await {
                Ok(Ok(Acquire::Acquired { epoch: new, lost })) => {
                    epoch = new;
                    last_ok = attempt;
                    tx.send_modify(|s| joined(s, &me, epoch, attempt + opts.ttl, opts.vnodes));
                    tracing::info!(node.id = %me.node_id, ring.epoch = epoch, "re-joined as the standalone node");
                    record_lost(&history, &me, lost);
                    history.record(&me.node_id, Change::Rejoined, epoch.max(0) as u64, &session(epoch));
                }
                Ok(Ok(Acquire::Held(row))) => {
                    tracing::debug!(node.id = %me.node_id, holder.node = %row.node_id, "standalone lock held by another node");
                }
                Ok(Err(err)) => {
                    metrics.membership_errors.inc();
                    tracing::debug!(node.id = %me.node_id, error = %err, "standalone re-join failed");
                }
                Err(_) => {
                    metrics.membership_errors.inc();
                }
            }
        }
    }
    if tx.borrow().status == Status::Joined {
        // Recorded before the lock is given up, so a node that takes it next finds it recorded.
        history.record_now(&me.node_id, Change::Left, epoch.max(0) as u64, &session(epoch), opts.heartbeat).await;
    }
    let holder = claimant.holder.clone();
    match tokio::time::timeout(opts.heartbeat, store.run(move |c| lock::release(c, &holder))).await {
        Ok(Ok(_)) => tracing::info!(node.id = %me.node_id, "released the standalone lock"),
        Ok(Err(e)) => tracing::warn!(node.id = %me.node_id, error = %e, "could not release the standalone lock"),
        Err(_) => tracing::warn!(node.id = %me.node_id, "releasing the standalone lock timed out"),
    }
    tx.send_modify(|s| {
        s.status = Status::Left;
        s.valid_until = None;
    });
}
