//! The delivery loop: on every node, for every channel whose ring owner ([`super::ring_key`]) is
//! this node, match the events past the channel's cursor and send its due deliveries.
//!
//! Why it is shaped so: the outbox is the `event` table, which every part of Rota already
//! writes; nothing on the dispatch path changes. The loop has its own task and uses the API's
//! pool, so it never takes a connection the dispatcher needs; each channel's sending runs in a
//! task of its own ([`deliver`]), every attempt on a blocking thread bounded by the channel's
//! time limit, so a receiver that hangs holds up only its own channel, and nothing of dispatch.
//!
//! Ownership moves with the ring like a task's: a node that dies mid-attempt leaves the delivery
//! claimed with a due time past the attempt's limit, and the channel's next owner sends it again
//! then, with the same id. Two nodes that both believe they own a channel for a moment (a ring
//! change seen at different instants) may both send a due delivery — at least once, never lost —
//! but write each batch of events once: [`store::record`] moves the cursor only from the value
//! read. Every write carries this node's fence.
//!
//! Must never: send while membership says this node may not act, or block the loop on a
//! receiver.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{backoff, plan, ChannelKind, Context, Gaps, Message, Rule};
use crate::dispatch::record::current_fence;
use crate::dispatch::wake::{Config, CONFIG_BACKSTOP};
use crate::membership::MembershipState;
use crate::store::alarms::{self as store, Channel, DueDelivery};
use crate::store::models::NewEvent;
use crate::store::Store;

/// Settings of the loop (`[alarms]`).
#[derive(Debug, Clone)]
pub struct Options {
    /// Look for events and due deliveries this often.
    pub poll: Duration,
    /// Time limit of one attempt unless the channel sets its own.
    pub timeout: Duration,
    /// First retry delay.
    pub retry_base: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// Attempts before a delivery fails for good.
    pub max_attempts: i32,
    /// How long a missing event id holds a cursor back.
    pub gap_grace: Duration,
    /// `queue.stalled` when the oldest due pending task is older than this (None: never).
    pub pending_alarm: Option<Duration>,
}

impl Options {
    /// From the node's configuration.
    pub fn from_config(c: &crate::config::AlarmsConfig) -> Self {
        Options {
            poll: Duration::from_millis(c.poll_interval_ms),
            timeout: Duration::from_millis(c.timeout_ms),
            retry_base: Duration::from_millis(c.retry_base_ms),
            retry_max: Duration::from_millis(c.retry_max_ms),
            max_attempts: c.max_attempts.min(i32::MAX as u32) as i32,
            gap_grace: Duration::from_millis(c.gap_grace_ms),
            pending_alarm: (c.pending_alarm_s > 0).then(|| Duration::from_secs(c.pending_alarm_s)),
        }
    }
}

/// Events read per statement.
const BATCH: i64 = 500;
/// Deliveries of one channel claimed (and sent at once) per round.
const CLAIM: i64 = 8;
/// The channels and rules are read again at once when a change is announced (`rota_config`:
/// PostgreSQL's triggers, this node's API), when a channel's cursor was found moved, and
/// otherwise this often while nothing announces changes (SQLite, no listener) — or every
/// [`CONFIG_BACKSTOP`] while changes are announced. Why: read every 5 s, they were a tenth of
/// what an idle node asked of the database (docs/benchmarks.md#idle).
const RELOAD_UNANNOUNCED: Duration = Duration::from_secs(5);
/// The ring key whose owner looks for a stalled queue.
const STALL_KEY: &str = "alarm-queue-stalled";

/// A random claim token (SipHash with fresh random keys), positive.
fn token() -> i64 {
    (std::collections::hash_map::RandomState::new().build_hasher().finish() >> 1) as i64
}

/// Run the loop until `shutdown`.
pub async fn run(
    store: Store,
    node_id: String,
    membership: watch::Receiver<MembershipState>,
    config: watch::Receiver<Config>,
    opts: Options,
    shutdown: CancellationToken,
) {
    let mut r = Runner {
        store,
        node_id,
        membership,
        config,
        reloaded: None,
        opts: Arc::new(opts),
        channels: Vec::new(),
        rules: Vec::new(),
        cursors: HashMap::new(),
        gaps: HashMap::new(),
        senders: HashMap::new(),
        started: Instant::now(),
        last_stall: None,
        stop: shutdown.clone(),
    };
    loop {
        r.round().await;
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(r.opts.poll) => {}
        }
    }
    for (_, h) in r.senders.drain() {
        h.abort();
    }
    tracing::debug!(node.id = %r.node_id, "alarm runner stopped");
}

struct Runner {
    store: Store,
    node_id: String,
    membership: watch::Receiver<MembershipState>,
    /// Announced changes of the configuration ([`Config`]).
    config: watch::Receiver<Config>,
    /// The announcement generation and the instant of the last reload; None: reload now.
    reloaded: Option<(u64, Instant)>,
    opts: Arc<Options>,
    channels: Vec<Channel>,
    rules: Vec<Rule>,
    /// The cursor each owned channel was last seen or moved to.
    cursors: HashMap<i64, i64>,
    gaps: HashMap<i64, Gaps>,
    senders: HashMap<i64, JoinHandle<()>>,
    started: Instant,
    last_stall: Option<Instant>,
    stop: CancellationToken,
}

impl Runner {
    fn may_act(&self) -> bool {
        self.membership.borrow().may_act(Instant::now())
    }

    async fn round(&mut self) {
        let config = *self.config.borrow();
        let due = self.reloaded.is_none_or(|(generation, at)| {
            generation != config.generation || at.elapsed() >= config.period(RELOAD_UNANNOUNCED, CONFIG_BACKSTOP)
        });
        if due {
            // The generation is taken before the read: a change announced during it is read next.
            self.reloaded = Some((config.generation, Instant::now()));
            self.reload().await;
        }
        if !self.may_act() {
            return;
        }
        let ms = self.membership.borrow().clone();
        // Only when someone would be told: an idle node's statements are budgeted
        // (docs/benchmarks.md, idle), and the check reads the task table.
        let listened = self.rules.iter().any(|r| r.kinds.iter().any(|k| k == "queue.stalled"));
        if let (Some(every), true) = (self.opts.pending_alarm, listened) {
            if ms.ring.owner(STALL_KEY.as_bytes()).is_some_and(|m| m.node_id == self.node_id) {
                self.look_for_stall(every).await;
            }
        }
        let owned: Vec<Channel> = self
            .channels
            .iter()
            .filter(|c| ms.ring.owner(super::ring_key(c.id).as_bytes()).is_some_and(|m| m.node_id == self.node_id))
            .cloned()
            .collect();
        self.senders.retain(|_, h| !h.is_finished());
        if owned.is_empty() {
            return;
        }
        // Several batches while a backlog of events is read, within one poll interval.
        let deadline = Instant::now() + self.opts.poll;
        while self.match_events(&owned, &ms).await && Instant::now() < deadline {}
        for c in owned {
            if self.senders.contains_key(&c.id) {
                continue;
            }
            let h = tokio::spawn(deliver(
                self.store.clone(),
                self.node_id.clone(),
                self.membership.clone(),
                self.opts.clone(),
                c.clone(),
                self.stop.clone(),
            ));
            self.senders.insert(c.id, h);
        }
    }

    async fn reload(&mut self) {
        // Without a channel no rule can send: one statement, not two, while none is configured.
        let loaded = self
            .store
            .run(|c| {
                let channels = store::all_channels(c)?;
                let rules = if channels.is_empty() { Vec::new() } else { store::all_rules(c)? };
                Ok((channels, rules))
            })
            .await;
        match loaded {
            Ok((channels, rules)) => {
                for c in &channels {
                    self.cursors.insert(c.id, c.cursor);
                }
                self.cursors.retain(|id, _| channels.iter().any(|c| c.id == *id));
                self.gaps.retain(|id, _| channels.iter().any(|c| c.id == *id));
                self.channels = channels;
                self.rules = rules.iter().map(|r| r.rule()).collect();
            }
            Err(e) => tracing::warn!(error = %e, "could not load alarm channels and rules; keeping the last lists"),
        }
    }

    /// Match one batch of events for every owned channel; true when a channel's read was full
    /// (more to read at once).
    async fn match_events(&mut self, owned: &[Channel], ms: &MembershipState) -> bool {
        let from = owned.iter().map(|c| self.cursors.get(&c.id).copied().unwrap_or(c.cursor)).min().unwrap_or(0);
        // The rules are read with the events they judge: an alarm created a moment before an
        // event must see it, whatever the reload interval.
        let read = self
            .store
            .run(move |c| {
                let events = store::events_after(c, from, BATCH)?;
                let rules = if events.is_empty() { None } else { Some(store::all_rules(c)?) };
                Ok((events, rules))
            })
            .await;
        let events = match read {
            Ok((e, Some(rules))) => {
                self.rules = rules.iter().map(|r| r.rule()).collect();
                e
            }
            Ok((_, None)) => return false,
            Err(e) => {
                tracing::warn!(error = %e, "could not read events for alarms");
                return false;
            }
        };
        let full = events.len() as i64 == BATCH;
        let events: Vec<super::Event> = events.iter().map(|e| e.event()).collect();
        let mut app_ids: Vec<i64> = events.iter().filter_map(|e| e.app_id).collect();
        app_ids.sort_unstable();
        app_ids.dedup();
        let apps = match self.store.run(move |c| store::app_names(c, &app_ids)).await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "could not read applications for alarms");
                return false;
            }
        };
        let cx = Context {
            apps: apps.into_iter().map(|(id, name, group)| (id, (name, group))).collect(),
            labels: ms.view.members.iter().map(|m| (m.node_id.clone(), m.labels.clone())).collect(),
        };
        let now_ms = self.started.elapsed().as_millis() as u64;
        let grace_ms = self.opts.gap_grace.as_millis() as u64;
        let epoch = ms.view.epoch as i64;
        let mut more = false;
        for ch in owned {
            let cursor = self.cursors.get(&ch.id).copied().unwrap_or(ch.cursor);
            let mine: Vec<&super::Event> = events.iter().filter(|e| e.id > cursor).collect();
            let ids: Vec<i64> = mine.iter().map(|e| e.id).collect();
            let (to, taken) = self.gaps.entry(ch.id).or_default().advance(cursor, &ids, now_ms, grace_ms);
            if to == cursor {
                continue;
            }
            let batch: Vec<super::Event> = mine[..taken].iter().map(|e| (*e).clone()).collect();
            let planned = plan(ch.id, &batch, &self.rules, &cx);
            let fence = current_fence(&self.membership);
            if !fence.admits(epoch) {
                return false;
            }
            let id = ch.id;
            match self.store.run(move |c| store::record(c, id, cursor, to, &planned, fence)).await {
                Ok(true) => {
                    self.cursors.insert(id, to);
                    more |= full && taken == ids.len();
                }
                Ok(false) => {
                    tracing::debug!(channel.id = id, "the channel's cursor moved elsewhere; reloading");
                    self.reloaded = None;
                }
                Err(e) => tracing::warn!(channel.id = id, error = %e, "could not record alarm deliveries; will retry"),
            }
        }
        more
    }

    async fn look_for_stall(&mut self, every: Duration) {
        if self.last_stall.is_some_and(|t| t.elapsed() < every) {
            return;
        }
        let oldest = match self.store.run(store::oldest_due_pending).await {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the oldest pending task");
                return;
            }
        };
        let Some((task_id, age_ms)) = oldest else { return };
        if age_ms < every.as_millis() as i64 {
            return;
        }
        self.last_stall = Some(Instant::now());
        let age_s = age_ms / 1000;
        let ev = NewEvent {
            kind: "queue.stalled".into(),
            app_id: None,
            task_id: Some(task_id),
            node_id: Some(self.node_id.clone()),
            actor: Some("system".into()),
            message: format!("the oldest due pending task ({task_id}) has waited {age_s} s"),
            data: Some(serde_json::json!({ "task_id": task_id, "age_s": age_s }).to_string()),
        };
        if let Err(e) = self.store.run(move |c| crate::store::events::record_event(c, &ev)).await {
            tracing::warn!(error = %e, "could not record a queue.stalled event");
        }
    }
}

/// One round of sending for one channel: claim its due deliveries and send them at once, each on
/// a blocking thread within the channel's time limit, then write each outcome under its claim.
async fn deliver(
    store: Store,
    node_id: String,
    membership: watch::Receiver<MembershipState>,
    opts: Arc<Options>,
    channel: Channel,
    stop: CancellationToken,
) {
    let Ok(kind) = ChannelKind::parse(&channel.kind) else { return };
    let config: serde_json::Value = serde_json::from_str(&channel.config).unwrap_or_default();
    let timeout = super::send::timeout_of(&config, opts.timeout);
    // The claim holds a delivery for the attempt's limit plus a margin for writing its outcome.
    let hold_ms = timeout.as_millis() as i64 + 5_000;
    let epoch = membership.borrow().view.epoch as i64;
    let fence = current_fence(&membership);
    if !membership.borrow().may_act(Instant::now()) || !fence.admits(epoch) {
        return;
    }
    let (id, node, tok) = (channel.id, node_id.clone(), token());
    let due = match store.run(move |c| store::claim_due(c, id, &node, epoch, tok, hold_ms, CLAIM, fence)).await {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(channel.id = id, error = %e, "could not claim alarm deliveries");
            return;
        }
    };
    let mut sends = Vec::new();
    for d in due {
        let m = message(&channel, &d);
        let config = config.clone();
        let now_ms = chrono::Utc::now().timestamp_millis();
        let send = tokio::task::spawn_blocking(move || super::send::send(kind, &config, &m, timeout, now_ms));
        sends.push((d, send));
    }
    for (d, send) in sends {
        let answer = tokio::select! {
            _ = stop.cancelled() => return,
            a = send => a,
        };
        let answer = match answer {
            Ok(a) => a,
            Err(e) => super::send::Answer { status: None, body: String::new(), error: Some(e.to_string()) },
        };
        let fence = current_fence(&membership);
        let tok = d.claim_token.unwrap_or_default();
        let status = answer.status.map(i32::from);
        let (did, attempts) = (d.id, d.attempts);
        let written = match &answer.error {
            None => {
                tracing::info!(channel.id = id, delivery.id = did, attempt = attempts, "alarm delivered");
                store.run(move |c| store::delivered(c, did, tok, status, fence)).await
            }
            Some(why) => {
                let retry_ms = (attempts < opts.max_attempts)
                    .then(|| backoff(attempts, opts.retry_base, opts.retry_max).as_millis() as i64);
                tracing::warn!(channel.id = id, delivery.id = did, attempt = attempts, error = %why,
                    retry_in_ms = ?retry_ms, "alarm delivery failed");
                let why = why.clone();
                store.run(move |c| store::retry(c, did, tok, status, &why, retry_ms, fence)).await
            }
        };
        match written {
            Ok(true) => {}
            Ok(false) => tracing::debug!(delivery.id = did, "the delivery was claimed again meanwhile"),
            Err(e) => tracing::warn!(delivery.id = did, error = %e, "could not record a delivery's outcome"),
        }
    }
}

/// The message of a claimed delivery.
fn message(channel: &Channel, d: &DueDelivery) -> Message {
    Message {
        delivery_id: d.id,
        channel: channel.name.clone(),
        rule: d.rule_name.clone(),
        event: super::Event {
            id: d.event_id,
            at: d.at,
            kind: d.kind.clone(),
            app_id: d.app_id,
            task_id: d.task_id,
            node_id: d.node_id.clone(),
            message: d.message.clone(),
            data: serde_json::from_str(&d.data).unwrap_or(serde_json::Value::Null),
        },
        app: d.app_name.clone(),
        folded: d.folded,
        last_event_id: (d.folded > 1).then_some(d.last_event_id),
        throttle_s: i64::from(d.throttle_s.unwrap_or(0)),
    }
}
