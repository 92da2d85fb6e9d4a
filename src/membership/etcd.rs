//! etcd membership: a lease kept alive every TTL/3, the member key under it, a read of the prefix
//! and a watch from the read's revision; self-fencing when the lease deadline passes.
//!
//! Protocol (docs/membership.md):
//! 1. Grant a lease (TTL from config). The deadline is the grant's *send* time + TTL, renewed to
//!    each answered keep-alive's send time + TTL: our deadline always falls before etcd's expiry.
//! 2. Register `/{cluster}/members/{node_id}` in a transaction: create it if absent; if it exists
//!    with our own process token, overwrite it (a re-join); if it belongs to another process with
//!    the same node id, wait for that lease to expire and say so. The write's revision `J` anchors
//!    the view: read the prefix *at* `J`, publish epoch `J`, watch from `J + 1`. Every node sees the
//!    same write as an event, so all converge on the same epoch.
//! 3. Each watch event updates the table; the epoch is the revision of the last event.
//! 4. A broken stream reconnects (backoff) and resumes the watch from the last revision + 1; a
//!    compacted or cancelled watch re-registers (a fresh anchor) and re-reads.
//! 5. At the deadline, or when etcd says the lease is gone, or our key disappears: `Fenced` at
//!    once, then a new lease and a re-join. The deadline branch is polled first, so a process
//!    resumed after a pause fences before it handles anything else.
//! 6. On shutdown, revoke the lease: the others see the member leave at once.
//!
//! Must never: publish `Joined` for a lease whose deadline has passed, or watch from "now".

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse,
    WatchOptions,
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::history::{Change, History};
use super::settle::SettleRule;
use super::view::{parse_member, Applied, MemberRecord, MemberTable};
use super::{LocalNode, MembershipHandle, MembershipState, Status};
use crate::logging::RateLimit;
use crate::metrics::Metrics;

/// etcd settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// `host:port` endpoints.
    pub endpoints: Vec<String>,
    /// Key prefix `/{cluster}/`.
    pub cluster: String,
    /// Lease TTL.
    pub ttl: Duration,
    /// Ring points per unit of weight.
    pub vnodes: u32,
    /// When applications follow a view that adds members ([`super::settle`]).
    pub settle: SettleRule,
    /// The identity of this node's database (`store::identity`), put in its member record.
    pub database: String,
    /// This node's database as shown to people (no password), for its log only: `/readyz`, open to
    /// anyone, carries the refusal without connection details.
    pub database_shown: String,
}

/// What the backend needs to leave the ring over the database's health ([`super::health`]).
pub struct Health {
    /// The reason to stay out of the ring; None while the database answers.
    pub hold: watch::Receiver<Option<String>>,
    /// True while the dispatcher acts; false once it has stopped every actor and supervised
    /// process.
    pub acting: watch::Receiver<bool>,
}

/// Start the backend. It never fails: an unreachable etcd is retried with backoff while the node
/// reports `Joining` with the reason (so `/readyz` says why).
///
/// `weight` changes (a drain sets 0) re-register the member record with the new weight, so every
/// node rebuilds its ring and this node's applications move away gracefully.
pub fn start(
    me: LocalNode,
    opts: Options,
    weight: watch::Receiver<u32>,
    health: Health,
    history: History,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> MembershipHandle {
    let (tx, rx) = watch::channel(MembershipState::joining_with(opts.settle));
    let prefix = format!("/{}/members/", opts.cluster);
    let record = MemberRecord {
        addr: me.addr.clone(),
        labels: me.labels.clone(),
        weight: me.weight,
        started_at: me.started_at.clone(),
        instance: me.instance.clone(),
        database: opts.database.clone(),
    };
    let table = MemberTable::for_database(&opts.database);
    let runner = Runner {
        record,
        weight,
        weight_open: true,
        hold: health.hold,
        hold_open: true,
        acting: health.acting,
        key: format!("{prefix}{}", me.node_id),
        value: Vec::new(),
        prefix,
        me,
        opts,
        metrics,
        tx,
        shutdown,
        lease: None,
        last_rev: 0,
        table,
        created: HashMap::new(),
        history,
        sessions: 0,
        refused: String::new(),
        next_endpoint: 0,
        outage: RateLimit::new(OUTAGE_LOG_EVERY),
    };
    let mut runner = runner;
    runner.encode_record();
    MembershipHandle::new(rx, tokio::spawn(runner.run()))
}

/// How long one unary etcd call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// At most one warning about an unreachable etcd per this period: a retry every 100 ms would
/// otherwise write two lines each time for as long as the outage lasts.
const OUTAGE_LOG_EVERY: Duration = Duration::from_secs(10);

struct Lease {
    id: i64,
    valid_until: Instant,
}

/// Why a session ended.
enum End {
    Shutdown,
    /// Transient (connection, stream): reconnect, keep the lease while it is valid.
    Retry(String),
    /// The watch cannot resume (compacted, cancelled): anchor and re-read.
    Resync(String),
    /// The lease is gone or our key is: fence, then a new lease.
    LostLease(String),
    /// Another process holds our node id.
    Held(String),
    /// Every other member runs on another database: another deployment's cluster.
    Refused(String),
    /// The database has not answered for too long and the dispatcher has stopped acting:
    /// revoke the lease and stay out until it answers ([`super::health`]).
    Out(String),
}

struct Runner {
    record: MemberRecord,
    weight: watch::Receiver<u32>,
    weight_open: bool,
    hold: watch::Receiver<Option<String>>,
    hold_open: bool,
    acting: watch::Receiver<bool>,
    me: LocalNode,
    opts: Options,
    metrics: Arc<Metrics>,
    tx: watch::Sender<MembershipState>,
    shutdown: CancellationToken,
    prefix: String,
    key: String,
    value: Vec<u8>,
    lease: Option<Lease>,
    last_rev: i64,
    table: MemberTable,
    /// The revision each member's key was created at: its membership as etcd sees it, and the
    /// `revision` of the event that records its departure ([`super::history`]).
    created: HashMap<String, i64>,
    /// Where membership events go ([`super::history`]).
    history: History,
    /// Sessions begun by this process: the first is a join, the others re-joins.
    sessions: u32,
    /// The last refusal logged ([`End::Refused`]), so that a retry logs only a new reason.
    refused: String,
    /// The endpoint the next connection tries first ([`Runner::connect`]).
    next_endpoint: usize,
    /// The warnings of an etcd outage: the first, then a summary per [`OUTAGE_LOG_EVERY`];
    /// reset by the first keep-alive answer after it.
    outage: RateLimit,
}

async fn call<T, E: std::fmt::Display>(f: impl std::future::Future<Output = Result<T, E>>) -> Result<T, String> {
    match tokio::time::timeout(CALL_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {CALL_TIMEOUT:?}")),
    }
}

impl Runner {
    fn encode_record(&mut self) {
        self.record.weight = *self.weight.borrow_and_update();
        self.value = serde_json::to_vec(&self.record).unwrap_or_default();
    }

    async fn run(mut self) {
        let mut backoff = Duration::from_millis(100);
        let mut need_anchor = true;
        let mut client: Option<Client> = None;
        loop {
            if self.shutdown.is_cancelled() {
                break;
            }
            if self.lease.as_ref().is_some_and(|l| Instant::now() >= l.valid_until) {
                self.fence("lease deadline passed without a keep-alive answer".into());
                need_anchor = true;
            }
            if self.tx.borrow().status != Status::Joined && self.hold.borrow().is_some() {
                // Not a member, and the database does not answer: join only once it does.
                if self.stay_out(None).await {
                    break;
                }
                need_anchor = true;
            }
            let c = match client.take() {
                Some(c) => c,
                None => match self.connect().await {
                    Ok(c) => c,
                    Err(e) => {
                        self.unreachable(&e);
                        if self.pause(&mut backoff).await {
                            break;
                        }
                        continue;
                    }
                },
            };
            let mut c = c;
            let end = self.session(&mut c, &mut need_anchor).await;
            match end {
                End::Shutdown => {
                    client = Some(c);
                    break;
                }
                End::Retry(why) => {
                    self.metrics.membership_errors.inc();
                    self.next_endpoint += 1;
                    self.outage_warning("etcd session interrupted; reconnecting", &why);
                    self.unreachable(&why);
                    if self.pause(&mut backoff).await {
                        break;
                    }
                }
                End::Resync(why) => {
                    tracing::info!(node.id = %self.me.node_id, reason = %why, "etcd watch cannot resume; re-reading members");
                    need_anchor = true;
                    client = Some(c);
                }
                End::LostLease(why) => {
                    self.metrics.membership_errors.inc();
                    self.fence(why);
                    need_anchor = true;
                    client = Some(c);
                }
                End::Refused(why) => {
                    if why != self.refused {
                        tracing::error!(node.id = %self.me.node_id, db.url = %self.opts.database_shown, reason = %why, "refusing to join the cluster");
                        self.refused = why.clone();
                    }
                    self.tx.send_modify(|s| {
                        if !matches!(s.status, Status::Fenced(_)) {
                            s.status = Status::Joining(why.clone());
                        }
                    });
                    client = Some(c);
                    if self.pause(&mut backoff).await {
                        break;
                    }
                }
                End::Out(why) => {
                    self.revoke(&mut c).await;
                    need_anchor = true;
                    client = Some(c);
                    if self.stay_out(Some(why)).await {
                        break;
                    }
                }
                End::Held(why) => {
                    tracing::warn!(node.id = %self.me.node_id, reason = %why, "cannot join yet");
                    self.tx.send_modify(|s| {
                        if !matches!(s.status, Status::Fenced(_)) {
                            s.status = Status::Joining(why.clone());
                        }
                    });
                    client = Some(c);
                    if self.pause(&mut backoff).await {
                        break;
                    }
                }
            }
            if matches!(self.tx.borrow().status, Status::Joined) {
                backoff = Duration::from_millis(100);
            }
        }
        self.leave(client).await;
    }

    /// Out of the ring (`Joining`, with the hold's reason) until the hold lifts; true when
    /// shutdown came first.
    async fn stay_out(&mut self, why: Option<String>) -> bool {
        let why = why.or_else(|| self.hold.borrow().clone()).unwrap_or_default();
        let reason = format!("out of the ring: {why}; joins again when the database answers");
        self.tx.send_modify(|s| {
            s.status = Status::Joining(reason.clone());
            s.valid_until = None;
        });
        let lifted = tokio::select! {
            _ = self.shutdown.cancelled() => return true,
            lifted = self.hold.wait_for(|h| h.is_none()) => lifted.is_ok(),
        };
        if !lifted {
            // The health watch is gone (shutting down): nothing will lift the hold.
            self.shutdown.cancelled().await;
            return true;
        }
        tracing::info!(node.id = %self.me.node_id, "the database answers again; joining the ring with a new lease");
        false
    }

    /// Revoke our lease now (leaving the ring at once); it expires by itself if etcd does not
    /// answer.
    async fn revoke(&mut self, client: &mut Client) {
        let Some(lease) = self.lease.take() else { return };
        match call(client.lease_revoke(lease.id)).await {
            Ok(_) => tracing::warn!(node.id = %self.me.node_id, "left the ring (lease revoked)"),
            Err(e) => tracing::warn!(node.id = %self.me.node_id, error = %e,
                "could not revoke the lease; it expires by itself within the TTL"),
        }
    }

    /// Sleep `backoff` (doubling up to 2 s); true when shutdown came first.
    async fn pause(&self, backoff: &mut Duration) -> bool {
        let wait = *backoff;
        *backoff = (*backoff * 2).min(Duration::from_secs(2));
        tokio::select! {
            _ = self.shutdown.cancelled() => true,
            _ = tokio::time::sleep(wait) => false,
        }
    }

    /// A client on one member that answers, trying the endpoints in turn from the one after
    /// the endpoint the previous etcd session used. Why one at a time: a client given every endpoint balances each
    /// request among them, dead members included, and a request sent to a dead member fails
    /// ("tcp connect error"), so one member down out of three can let the lease run out
    /// (docs/operations.md#etcd-members). A session that ends in an error moves on to the next
    /// member.
    async fn connect(&mut self) -> Result<Client, String> {
        let opts = ConnectOptions::new()
            .with_connect_timeout(CALL_TIMEOUT)
            .with_keep_alive(Duration::from_secs(1), CALL_TIMEOUT);
        let n = self.opts.endpoints.len().max(1);
        let mut failed = Vec::new();
        for k in 0..n {
            let i = (self.next_endpoint + k) % n;
            let Some(endpoint) = self.opts.endpoints.get(i) else { break };
            let answered = async {
                let mut client = call(Client::connect([endpoint], Some(opts.clone()))).await?;
                // A member cut from the others' quorum answers status but no lease or watch:
                // the first calls on it fail, and the next connection moves on.
                call(client.status()).await?;
                Ok::<_, String>(client)
            };
            match answered.await {
                Ok(client) => {
                    self.next_endpoint = i;
                    return Ok(client);
                }
                Err(e) => failed.push(format!("{endpoint}: {e}")),
            }
        }
        Err(failed.join("; "))
    }

    /// Log a warning of an etcd outage, unless one was logged less than [`OUTAGE_LOG_EVERY`]
    /// ago; the next one logged says how many were held back.
    fn outage_warning(&mut self, what: &str, reason: &str) {
        match self.outage.admit(Instant::now()) {
            None => {}
            Some(0) => tracing::warn!(node.id = %self.me.node_id, reason = %reason, "{what}"),
            Some(held) => tracing::warn!(node.id = %self.me.node_id, reason = %reason, log.held_back = held,
                "{what} ({held} warnings like it held back in the last {} s)", OUTAGE_LOG_EVERY.as_secs()),
        }
    }

    fn unreachable(&mut self, why: &str) {
        let reason = format!("etcd at {} is unreachable: {why}", self.opts.endpoints.join(","));
        self.outage_warning("membership: retrying", &reason);
        self.tx.send_modify(|s| {
            if matches!(s.status, Status::Joining(_)) {
                s.status = Status::Joining(reason.clone());
            }
        });
    }

    fn fence(&mut self, reason: String) {
        self.lease = None;
        self.tx.send_if_modified(|s| {
            if matches!(s.status, Status::Fenced(_)) {
                return false;
            }
            tracing::error!(node.id = %self.me.node_id, ring.epoch = s.view.epoch, reason = %reason, "fenced: stopped acting");
            self.history.record(&self.me.node_id, Change::Fenced(reason.clone()), s.joined_epoch, &s.session);
            s.status = Status::Fenced(reason.clone());
            s.valid_until = None;
            true
        });
    }

    /// Record that member `id` is gone without a graceful leave, seen by this node: every
    /// survivor records it, the database keeps one row ([`super::history`]), and none when the
    /// member recorded its own `left` first. This node's own key is its fence, not a loss.
    fn lost(&self, id: &str, reason: &str) {
        if id == self.me.node_id {
            return;
        }
        let Some(&created) = self.created.get(id) else { return };
        let change = Change::Lost { observed_by: self.me.node_id.clone(), reason: reason.to_string() };
        self.history.record(
            id,
            change,
            created.max(0) as u64,
            &format!("etcd member key created at revision {created}"),
        );
    }

    fn publish_deadline(&self, valid_until: Instant) {
        self.tx.send_modify(|s| {
            if s.status == Status::Joined {
                s.valid_until = Some(valid_until);
            }
        });
    }

    async fn session(&mut self, client: &mut Client, need_anchor: &mut bool) -> End {
        let ttl_s = self.opts.ttl.as_secs().max(2) as i64;
        if self.tx.borrow().status != Status::Joined {
            if let Err(end) = self.refuse_foreign(client).await {
                return end;
            }
            self.refused.clear();
        }
        if self.lease.is_none() {
            let sent = Instant::now();
            match call(client.lease_grant(ttl_s, None)).await {
                Ok(g) => self.lease = Some(Lease { id: g.id(), valid_until: sent + self.opts.ttl }),
                Err(e) => return End::Retry(format!("lease grant failed: {e}")),
            }
            *need_anchor = true;
        }
        let Some(lease_id) = self.lease.as_ref().map(|l| l.id) else { return End::Retry("no lease".into()) };
        if *need_anchor {
            let anchor = match self.register(client, lease_id).await {
                Ok(rev) => rev,
                Err(end) => return end,
            };
            let snapshot = GetOptions::new().with_prefix().with_revision(anchor);
            let resp = match call(client.get(self.prefix.as_str(), Some(snapshot))).await {
                Ok(r) => r,
                Err(e) => return End::Retry(format!("reading members failed: {e}")),
            };
            let mut table = MemberTable::for_database(&self.opts.database);
            let mut created = HashMap::new();
            for kv in resp.kvs() {
                let id = self.node_id_of(kv.key());
                self.applied(&id, table.put(&id, kv.value()));
                created.insert(id, kv.create_revision());
            }
            // Members that went while this node was not watching (a fence, a broken watch).
            let gone: Vec<String> =
                self.table.ids().into_iter().filter(|id| !table.contains(id)).map(String::from).collect();
            for id in gone {
                self.lost(&id, "its member key was gone when this node read the members again");
            }
            self.table = table;
            self.created = created;
            self.last_rev = anchor;
            *need_anchor = false;
            if !self.own_record_is_ours() {
                return End::LostLease("our member key is not ours after registering".into());
            }
            let valid_until = self.lease.as_ref().map(|l| l.valid_until);
            let was = self.tx.borrow().status.clone();
            let view = self.table.view(anchor as u64);
            let vnodes = self.opts.vnodes;
            let foreign = self.foreign();
            let new_session = self.tx.borrow().status != Status::Joined;
            if new_session {
                self.sessions += 1;
                let change = if self.sessions == 1 { Change::Joined } else { Change::Rejoined };
                self.history.record(
                    &self.me.node_id,
                    change,
                    anchor.max(0) as u64,
                    &format!("etcd lease {lease_id:x}"),
                );
            }
            self.tx.send_modify(|s| {
                s.foreign = foreign;
                if s.status != Status::Joined {
                    // A new session: work claimed before this anchor belongs to an earlier life,
                    // and applications wait for the view to settle.
                    s.joined_epoch = anchor as u64;
                    s.begin_session(vnodes);
                }
                s.adopt_view(view, vnodes);
                s.status = Status::Joined;
                s.valid_until = valid_until;
                s.session = format!("etcd lease {lease_id:x}");
            });
            tracing::info!(
                node.id = %self.me.node_id, ring.epoch = anchor, lease = %format!("{lease_id:x}"),
                "{}", if matches!(was, Status::Fenced(_)) { "re-joined the cluster with a new lease" } else { "joined the cluster" }
            );
        }

        let (mut keeper, mut keep_alive) = match call(client.lease_keep_alive(lease_id)).await {
            Ok(pair) => pair,
            Err(e) => return End::Retry(format!("keep-alive stream failed: {e}")),
        };
        let watch_opts = WatchOptions::new().with_prefix().with_start_revision(self.last_rev + 1);
        let mut events = match call(client.watch(self.prefix.as_str(), Some(watch_opts))).await {
            Ok(w) => w,
            Err(e) => return End::Retry(format!("watch failed: {e}")),
        };
        let mut ticker = tokio::time::interval(self.opts.ttl / 3);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut in_flight: VecDeque<Instant> = VecDeque::new();
        // The hold's reason, once the dispatcher was told to stop acting before we leave.
        let mut leaving: Option<String> = None;
        loop {
            let deadline = match &self.lease {
                Some(l) => l.valid_until,
                None => return End::LostLease("lease dropped".into()),
            };
            let settle_due = self.tx.borrow().settle.due();
            let mut acting = self.acting.clone();
            tokio::select! {
                biased;
                _ = tokio::time::sleep_until(deadline.into()) => {
                    return End::LostLease("lease deadline passed without a keep-alive answer".into());
                }
                _ = self.shutdown.cancelled() => return End::Shutdown,
                _ = tokio::time::sleep_until(settle_due.unwrap_or(deadline).into()), if settle_due.is_some() => {
                    let vnodes = self.opts.vnodes;
                    self.tx.send_if_modified(|s| s.settle_tick(Instant::now(), vnodes));
                }
                changed = self.hold.changed(), if self.hold_open && leaving.is_none() => {
                    if changed.is_err() {
                        self.hold_open = false;
                        continue;
                    }
                    let Some(why) = self.hold.borrow_and_update().clone() else { continue };
                    // Stop acting first (the dispatcher stops every actor and process), keep the
                    // lease alive meanwhile, and revoke it only then: the others must not start
                    // what this node still runs (docs/design.md, "Health-gated membership").
                    tracing::error!(node.id = %self.me.node_id, reason = %why,
                        "stopping every application here before leaving the ring");
                    let reason = format!("leaving the ring: {why}");
                    self.tx.send_modify(|s| {
                        self.history.record(&self.me.node_id, Change::Fenced(reason.clone()), s.joined_epoch, &s.session);
                        s.status = Status::Fenced(reason.clone());
                        s.valid_until = None;
                    });
                    leaving = Some(why);
                }
                stopped = async { acting.wait_for(|acting| !acting).await.map(|_| ()) }, if leaving.is_some() => {
                    if stopped.is_err() {
                        // No dispatcher (shutting down): nothing runs here any more.
                        tracing::debug!("the dispatcher is gone");
                    }
                    return End::Out(leaving.take().unwrap_or_default());
                }
                changed = self.weight.changed(), if self.weight_open => {
                    if changed.is_err() {
                        self.weight_open = false;
                        continue;
                    }
                    self.encode_record();
                    return End::Resync(format!("weight set to {}", self.record.weight));
                }
                _ = ticker.tick() => {
                    in_flight.push_back(Instant::now());
                    if let Err(e) = keeper.keep_alive().await {
                        return End::Retry(format!("keep-alive failed: {e}"));
                    }
                }
                answer = keep_alive.message() => match answer {
                    Ok(Some(resp)) => {
                        let sent = in_flight.pop_front().unwrap_or_else(Instant::now);
                        if resp.ttl() <= 0 {
                            return End::LostLease("etcd says the lease has expired".into());
                        }
                        if self.outage.active() {
                            let held = self.outage.reset();
                            tracing::info!(node.id = %self.me.node_id, log.held_back = held,
                                "etcd answers again ({held} warnings of the outage were held back)");
                        }
                        let until = sent + self.opts.ttl;
                        if let Some(l) = self.lease.as_mut() {
                            l.valid_until = l.valid_until.max(until);
                            let v = l.valid_until;
                            self.publish_deadline(v);
                        }
                    }
                    Ok(None) => return End::Retry("keep-alive stream closed".into()),
                    Err(e) => return End::Retry(format!("keep-alive stream failed: {e}")),
                },
                msg = events.message() => match msg {
                    Ok(Some(resp)) => {
                        if resp.compact_revision() > 0 {
                            return End::Resync(format!("watch revision {} was compacted (oldest kept {})", self.last_rev + 1, resp.compact_revision()));
                        }
                        if resp.canceled() {
                            return End::Resync(format!("watch cancelled: {}", resp.cancel_reason()));
                        }
                        if resp.events().is_empty() {
                            continue;
                        }
                        for ev in resp.events() {
                            let Some(kv) = ev.kv() else { continue };
                            let id = self.node_id_of(kv.key());
                            match ev.event_type() {
                                EventType::Put => {
                                    let applied = self.table.put(&id, kv.value());
                                    self.applied(&id, applied);
                                    self.created.insert(id.clone(), kv.create_revision());
                                }
                                EventType::Delete => {
                                    if self.table.contains(&id) {
                                        self.lost(&id, "its member key was deleted without a graceful leave: its lease \
                                            expired (a crash, a pause, a partition) or it left the ring over its database");
                                    }
                                    self.table.delete(&id);
                                    self.created.remove(&id);
                                }
                            }
                            self.last_rev = self.last_rev.max(kv.mod_revision());
                        }
                        if !self.own_record_is_ours() {
                            return End::LostLease("our member key was deleted or overwritten (lease expired?)".into());
                        }
                        let view = self.table.view(self.last_rev as u64);
                        let vnodes = self.opts.vnodes;
                        let foreign = self.foreign();
                        self.tx.send_modify(|s| {
                            s.foreign = foreign;
                            s.adopt_view(view, vnodes);
                        });
                    }
                    Ok(None) => return End::Retry("watch stream closed".into()),
                    Err(e) => return End::Retry(format!("watch stream failed: {e}")),
                },
            }
        }
    }

    /// Create or re-take our member key under `lease`; returns the write's revision.
    async fn register(&self, client: &mut Client, lease: i64) -> Result<i64, End> {
        let put = || TxnOp::put(self.key.as_str(), self.value.clone(), Some(PutOptions::new().with_lease(lease)));
        let create = Txn::new()
            .when([Compare::create_revision(self.key.as_str(), CompareOp::Equal, 0)])
            .and_then([put()])
            .or_else([TxnOp::get(self.key.as_str(), None)]);
        let resp = call(client.txn(create)).await.map_err(|e| End::Retry(format!("registering failed: {e}")))?;
        if resp.succeeded() {
            return Ok(resp.header().map(|h| h.revision()).unwrap_or_default());
        }
        let existing = resp.op_responses().into_iter().find_map(|r| match r {
            TxnOpResponse::Get(g) => g.kvs().first().map(|kv| (kv.mod_revision(), kv.value().to_vec())),
            _ => None,
        });
        let Some((mod_rev, value)) = existing else {
            return Err(End::Retry("member key vanished while registering".into()));
        };
        match parse_member(&self.me.node_id, &value) {
            Ok((_, rec)) if rec.instance == self.me.instance => {
                let retake = Txn::new()
                    .when([Compare::mod_revision(self.key.as_str(), CompareOp::Equal, mod_rev)])
                    .and_then([put()]);
                let resp =
                    call(client.txn(retake)).await.map_err(|e| End::Retry(format!("re-registering failed: {e}")))?;
                if resp.succeeded() {
                    Ok(resp.header().map(|h| h.revision()).unwrap_or_default())
                } else {
                    Err(End::Retry("member key changed while re-registering".into()))
                }
            }
            Ok((m, rec)) => Err(End::Held(format!(
                "node id `{}` is already registered by another process (addr {}, started {}); waiting for its lease \
                 to expire (at most {} s). If both are running, give each node its own --node-id",
                m.node_id,
                rec.addr,
                rec.started_at,
                self.opts.ttl.as_secs()
            ))),
            Err(why) => Err(End::Held(format!(
                "the key {} holds a value that is not a member record ({why}); delete it or wait for its lease",
                self.key
            ))),
        }
    }

    /// Our key is present and carries our process token (not deleted, not overwritten).
    fn own_record_is_ours(&self) -> bool {
        self.table.instance_of(&self.me.node_id) == Some(self.me.instance.as_str())
    }

    fn node_id_of(&self, key: &[u8]) -> String {
        String::from_utf8_lossy(key).strip_prefix(&self.prefix).unwrap_or_default().to_string()
    }

    /// Log what a put did when it kept a record out of the view.
    fn applied(&self, id: &str, applied: Applied) {
        match applied {
            Applied::Member => {}
            Applied::Rejected(why) => self.rejected(id, &why),
            Applied::Foreign(f) => tracing::warn!(
                node.id = %self.me.node_id, member.id = %f.node_id, member.addr = %f.addr,
                member.database = %f.database, database = %self.opts.database,
                "ignoring a member of another deployment: it runs on another database but registered under this \
                 cluster's etcd prefix; give each deployment its own --cluster (membership.cluster)"
            ),
        }
    }

    /// The records of other deployments' nodes, as published (and counted by the metric).
    fn foreign(&self) -> Arc<Vec<super::ForeignMember>> {
        let foreign = self.table.foreign();
        self.metrics.foreign_members.set(foreign.len() as i64);
        Arc::new(foreign)
    }

    /// Before joining: refuse a cluster whose members all run on another database (another
    /// deployment's, docs/design.md "Cluster identity"), naming both databases. A prefix with
    /// members of ours as well is ours; the others' records are ignored.
    async fn refuse_foreign(&self, client: &mut Client) -> Result<(), End> {
        let resp = call(client.get(self.prefix.as_str(), Some(GetOptions::new().with_prefix())))
            .await
            .map_err(|e| End::Retry(format!("reading members failed: {e}")))?;
        let mut table = MemberTable::for_database(&self.opts.database);
        for kv in resp.kvs() {
            let id = self.node_id_of(kv.key());
            if id != self.me.node_id {
                table.put(&id, kv.value());
            }
        }
        let foreign = table.foreign();
        if foreign.is_empty() || !table.ids().is_empty() {
            return Ok(());
        }
        let mut by_db: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
        for f in &foreign {
            by_db.entry(f.database.as_str()).or_default().push(format!("{} at {}", f.node_id, f.addr));
        }
        let theirs: Vec<String> =
            by_db.iter().map(|(db, nodes)| format!("database {db} (members {})", nodes.join(", "))).collect();
        Err(End::Refused(format!(
            "cluster `{}` in etcd ({}) belongs to another deployment: its members run on {}, this node on database \
             {}. Two deployments must not share a ring: give this one its own --cluster (membership.cluster), or \
             point it at the database the cluster runs on",
            self.opts.cluster,
            self.opts.endpoints.join(","),
            theirs.join("; "),
            self.opts.database,
        )))
    }

    fn rejected(&self, id: &str, why: &str) {
        self.metrics.membership_errors.inc();
        tracing::warn!(member.key = %format!("{}{id}", self.prefix), reason = %why, "ignoring a malformed member entry");
    }

    async fn leave(&mut self, client: Option<Client>) {
        let created = self.created.get(&self.me.node_id).copied();
        let joined = self.tx.borrow().status == Status::Joined;
        let lease_id = self.lease.as_ref().map(|l| l.id);
        if let (Some(created), true, Some(lease_id)) = (created, joined, lease_id) {
            // Before the lease goes: the others see the key deleted with `left` already recorded,
            // and record no loss.
            let detail = format!("etcd lease {lease_id:x}, member key created at revision {created}");
            self.history.record_now(&self.me.node_id, Change::Left, created.max(0) as u64, &detail, CALL_TIMEOUT).await;
        }
        if let Some(lease) = self.lease.take() {
            let client = match client {
                Some(c) => Some(c),
                None => self.connect().await.ok(),
            };
            match client {
                Some(mut c) => match call(c.lease_revoke(lease.id)).await {
                    Ok(_) => tracing::info!(node.id = %self.me.node_id, "left the cluster (lease revoked)"),
                    Err(e) => {
                        tracing::warn!(node.id = %self.me.node_id, error = %e, "could not revoke the lease; it expires by itself")
                    }
                },
                None => {
                    tracing::warn!(node.id = %self.me.node_id, "etcd unreachable at shutdown; the lease expires by itself")
                }
            }
        }
        self.tx.send_modify(|s| {
            s.status = Status::Left;
            s.valid_until = None;
        });
    }
}
