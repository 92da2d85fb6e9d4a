//! Alarms: telling people when something fails (docs/alarms.md).
//!
//! Why it exists: every failure Rota sees is already a row of `event`; nobody was told. The
//! `event` table is the outbox: for each channel (a webhook, a chat robot, SMTP), the ring owner
//! of [`ring_key`] reads the events past the channel's cursor, keeps those its rules match
//! ([`plan`]), writes one delivery per (event, channel) — or one per throttle window and key,
//! counting what it folds — and moves the cursor, with its fence, in one transaction
//! ([`crate::store::alarms`]). It then sends the due deliveries ([`runner`], [`send`]), each with
//! its stable id, and retries a failed one with backoff ([`backoff`]). A node that dies
//! mid-delivery loses nothing: the claim moved the delivery's due time past the attempt's time
//! limit, and the channel's next owner sends it again then (same id).
//!
//! This module is the pure part: rule matching, throttle folding, the cursor's rule over id gaps,
//! the message each channel kind sends, signatures and backoff. No I/O, no clock (callers pass
//! times), so each rule is tested on its own.
//!
//! Must never: block on I/O, or read the clock.

pub mod runner;
pub mod send;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::NaiveDateTime;
use hmac::{KeyInit, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::drivers::secret::{self, Secret};

/// The ring key a channel's deliveries are owned by.
pub fn ring_key(channel_id: i64) -> String {
    format!("alarm-channel:{channel_id}")
}

/// The event kinds a rule may fire on, with what each means (docs/alarms.md has the table).
pub const EVENT_KINDS: &[(&str, &str)] = &[
    ("task.failed", "a task failed for good: its attempts are used up, or retrying cannot help"),
    ("task.lost", "a broadcast child's node died while it ran (never re-run elsewhere)"),
    ("app.failed", "an application's owner gave up restarting it (restart policy exhausted)"),
    ("app.state", "an application's observed state changed (filter on `states`, e.g. [\"failed\"])"),
    ("traffic.failover", "a traffic group moved to its backup side: its preferred side has no live node"),
    ("traffic.failback", "a traffic group moved back to its preferred side"),
    ("traffic.switched", "an admin switched a traffic policy"),
    ("membership.lost", "a node went without a graceful leave (crash, pause, partition)"),
    ("membership.fenced", "a node stopped acting: its lease or lock lapsed"),
    ("membership.left", "a node left gracefully"),
    ("schedule.misfired", "a schedule missed fire times (caught up once, or skipped)"),
    ("queue.stalled", "the oldest due pending task has waited longer than `alarms.pending_alarm_s`"),
    ("alarm.test", "a test message (`POST /channels/{id}/test`)"),
];

/// True when `kind` is one a rule may name.
pub fn is_event_kind(kind: &str) -> bool {
    EVENT_KINDS.iter().any(|(k, _)| *k == kind)
}

/// The channel kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelKind {
    /// A JSON body with the event, signed with HMAC-SHA256 when a secret is set.
    Webhook,
    /// Slack incoming webhooks (and the many that take Slack's body: Mattermost, Rocket.Chat).
    Slack,
    /// DingTalk custom robot.
    Dingtalk,
    /// Feishu / Lark custom bot.
    Feishu,
    /// WeCom (WeChat Work) group robot.
    Wecom,
    /// SMTP e-mail.
    Email,
}

/// Every channel kind, as the API names them.
pub const CHANNEL_KINDS: &[&str] = &["webhook", "slack", "dingtalk", "feishu", "wecom", "email"];

impl ChannelKind {
    /// The kind named `s`.
    pub fn parse(s: &str) -> Result<ChannelKind, String> {
        Ok(match s {
            "webhook" => ChannelKind::Webhook,
            "slack" => ChannelKind::Slack,
            "dingtalk" => ChannelKind::Dingtalk,
            "feishu" | "lark" => ChannelKind::Feishu,
            "wecom" => ChannelKind::Wecom,
            "email" => ChannelKind::Email,
            other => return Err(format!("unknown kind `{other}`: use one of {}", CHANNEL_KINDS.join(", "))),
        })
    }

    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Webhook => "webhook",
            ChannelKind::Slack => "slack",
            ChannelKind::Dingtalk => "dingtalk",
            ChannelKind::Feishu => "feishu",
            ChannelKind::Wecom => "wecom",
            ChannelKind::Email => "email",
        }
    }

    /// Where a config of this kind holds secrets: a webhook's and a robot's signing `secret`, an
    /// SMTP `password`, and the URL — whole for the robots (their URLs are their credentials:
    /// Slack's path, DingTalk's `access_token`, WeCom's `key`), its credential parts for a
    /// webhook ([`Secret::UrlParts`]).
    pub fn secrets(self) -> Vec<Secret> {
        let p = |s: &str| secret::pointer(&[s]);
        match self {
            ChannelKind::Webhook => vec![Secret::UrlParts(p("url")), Secret::Whole(p("secret"))],
            ChannelKind::Slack | ChannelKind::Wecom => vec![Secret::Whole(p("url"))],
            ChannelKind::Dingtalk | ChannelKind::Feishu => vec![Secret::Whole(p("url")), Secret::Whole(p("secret"))],
            ChannelKind::Email => vec![Secret::Whole(p("password"))],
        }
    }

    /// The config's problems, each as (field under `config`, message). Empty when valid.
    pub fn check(self, config: &Value) -> Vec<(String, String)> {
        let mut errors = Vec::new();
        let Value::Object(fields) = config else {
            return vec![("config".into(), "must be a JSON object".into())];
        };
        let mut bad = |f: &str, m: String| errors.push((format!("config.{f}"), m));
        let allowed: &[&str] = match self {
            ChannelKind::Webhook => &["url", "secret", "ca_file", "timeout_ms"],
            ChannelKind::Slack | ChannelKind::Wecom => &["url", "ca_file", "timeout_ms"],
            ChannelKind::Dingtalk | ChannelKind::Feishu => &["url", "secret", "ca_file", "timeout_ms"],
            ChannelKind::Email => {
                &["host", "port", "tls", "ca_file", "username", "password", "from", "to", "timeout_ms"]
            }
        };
        for k in fields.keys().filter(|k| !allowed.contains(&k.as_str())) {
            bad(k, format!("unknown field for a {} channel: use {}", self.as_str(), allowed.join(", ")));
        }
        let string = |f: &str| fields.get(f).map(|v| v.as_str().ok_or_else(|| format!("must be a string, got {v}")));
        if self == ChannelKind::Email {
            match string("host") {
                None => bad("host", "required: the SMTP server's host name".into()),
                Some(Err(m)) => bad("host", m),
                Some(Ok(h)) if h.is_empty() || h.len() > 253 || h.contains(['/', ' ', ':']) => {
                    bad("host", format!("`{h}` is not a host name (give the port in `port`)"))
                }
                _ => {}
            }
            if let Some(v) = fields.get("port") {
                if !v.as_u64().is_some_and(|p| (1..=65535).contains(&p)) {
                    bad("port", format!("must be a port number 1-65535, got {v}"));
                }
            }
            if let Some(v) = fields.get("tls") {
                if let Err(m) = v.as_str().ok_or_else(|| format!("must be a string, got {v}")).and_then(SmtpTls::parse)
                {
                    bad("tls", m);
                }
            }
            for f in ["username", "password"] {
                if let Some(Err(m)) = string(f) {
                    bad(f, m);
                }
            }
            match string("from") {
                None => bad("from", "required: the sender's address".into()),
                Some(Err(m)) => bad("from", m),
                Some(Ok(a)) if !is_address(a) => bad("from", format!("`{a}` is not an e-mail address")),
                _ => {}
            }
            match fields.get("to") {
                Some(Value::Array(to)) if !to.is_empty() && to.len() <= 100 => {
                    for (i, a) in to.iter().enumerate() {
                        if !a.as_str().is_some_and(is_address) {
                            bad(&format!("to.{i}"), format!("{a} is not an e-mail address"));
                        }
                    }
                }
                Some(v) => bad("to", format!("must be a list of 1 to 100 addresses, got {v}")),
                None => bad("to", "required: a list of addresses".into()),
            }
        } else {
            match string("url") {
                None => bad("url", "required: the URL to POST to".into()),
                Some(Err(m)) => bad("url", m),
                Some(Ok(u)) if u == secret::PLACEHOLDER => {}
                Some(Ok(u)) => {
                    if let Err(m) = check_url(u) {
                        bad("url", m);
                    }
                }
            }
            if let Some(Err(m)) = string("secret") {
                bad("secret", m);
            }
        }
        match string("ca_file") {
            Some(Err(m)) => bad("ca_file", m),
            Some(Ok("")) => {
                bad("ca_file", "must name a PEM file of the CA certificates to trust (or be left out)".into())
            }
            _ => {}
        }
        if let Some(v) = fields.get("timeout_ms") {
            if !v.as_u64().is_some_and(|t| (1..=MAX_TIMEOUT_MS).contains(&t)) {
                bad("timeout_ms", format!("must be between 1 and {MAX_TIMEOUT_MS}, got {v}"));
            }
        }
        errors
    }
}

/// How an e-mail channel secures its SMTP connection (`config.tls`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain text all along (a relay on a trusted network).
    None,
    /// Plain at first, then `STARTTLS` before anything else (RFC 3207); a server that does not
    /// offer it is an error, never a reason to go on in plain text. The submission port, 587.
    StartTls,
    /// TLS from the first byte (RFC 8314's implicit TLS), port 465.
    Tls,
}

impl SmtpTls {
    /// The mode named `s`.
    pub fn parse(s: &str) -> Result<SmtpTls, String> {
        match s {
            "none" => Ok(SmtpTls::None),
            "starttls" => Ok(SmtpTls::StartTls),
            "tls" => Ok(SmtpTls::Tls),
            other => Err(format!("unknown mode `{other}`: use none, starttls (port 587) or tls (port 465)")),
        }
    }

    /// The mode and port an e-mail channel's config means. Given ones are kept; a missing mode
    /// follows the port (465 `tls`, 587 `starttls`, any other `none`), a missing port the mode
    /// (`tls` 465, `starttls` 587, `none` 25).
    pub fn of(config: &Value) -> (SmtpTls, u16) {
        let port = config.get("port").and_then(Value::as_u64).and_then(|p| u16::try_from(p).ok());
        let mode = config.get("tls").and_then(Value::as_str).and_then(|s| SmtpTls::parse(s).ok());
        match (mode, port) {
            (Some(m), Some(p)) => (m, p),
            (Some(m), None) => (m, m.default_port()),
            (None, Some(465)) => (SmtpTls::Tls, 465),
            (None, Some(587)) => (SmtpTls::StartTls, 587),
            (None, Some(p)) => (SmtpTls::None, p),
            (None, None) => (SmtpTls::None, 25),
        }
    }

    fn default_port(self) -> u16 {
        match self {
            SmtpTls::None => 25,
            SmtpTls::StartTls => 587,
            SmtpTls::Tls => 465,
        }
    }
}

/// The longest time limit a channel may set for one attempt.
pub const MAX_TIMEOUT_MS: u64 = 120_000;

fn is_address(a: &str) -> bool {
    let mut parts = a.split('@');
    let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else { return false };
    !local.is_empty() && !domain.is_empty() && a.len() <= 254 && !a.contains([' ', '<', '>', '\r', '\n', ','])
}

/// A URL a channel may POST to: `http://` or `https://` with a host.
pub fn check_url(u: &str) -> Result<(), String> {
    let parsed = url::Url::parse(u).map_err(|e| format!("not a URL ({e}); e.g. http://hooks.example:8080/rota"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none_or(str::is_empty) {
        return Err("must start with http:// or https:// and name a host".into());
    }
    Ok(())
}

/// What a rule's event must also match; an empty list matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    /// Application names: the event's application is one of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apps: Vec<String>,
    /// Traffic groups: the event's application is in one, or the event is a switch of one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub traffic_groups: Vec<String>,
    /// Labels the event's node carries (all of them).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_labels: BTreeMap<String, String>,
    /// For `app.state`: the states that fire (e.g. `failed`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub states: Vec<String>,
}

/// A rule as the matcher needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Its id.
    pub id: i64,
    /// The event kinds it fires on.
    pub kinds: Vec<String>,
    /// What events must also match.
    pub filter: Filter,
    /// The channels it sends to.
    pub channels: Vec<i64>,
    /// 0, or one message per key per this many seconds.
    pub throttle_s: i64,
}

/// An event as the matcher sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Its id.
    pub id: i64,
    /// When it was written (UTC).
    pub at: NaiveDateTime,
    /// Its kind.
    pub kind: String,
    /// Its application.
    pub app_id: Option<i64>,
    /// Its task.
    pub task_id: Option<i64>,
    /// The node it is about.
    pub node_id: Option<String>,
    /// Its message.
    pub message: String,
    /// Its data (a JSON object).
    pub data: Value,
}

/// What matching knows beside the event: applications' names and traffic groups, members'
/// labels.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// (name, traffic group) by application id.
    pub apps: HashMap<i64, (String, Option<String>)>,
    /// Labels by node id (the live members').
    pub labels: HashMap<String, BTreeMap<String, String>>,
}

impl Event {
    /// The traffic group the event concerns: its application's, or the group a switch names.
    fn group<'a>(&'a self, cx: &'a Context) -> Option<&'a str> {
        if self.kind.starts_with("traffic.") {
            return self.data.get("group").and_then(Value::as_str);
        }
        self.app_id.and_then(|a| cx.apps.get(&a)).and_then(|(_, g)| g.as_deref())
    }

    /// What the event is about, for throttling: the application, else the node, else the group.
    pub fn subject(&self) -> String {
        match (&self.app_id, &self.node_id) {
            (Some(a), _) => format!("app:{a}"),
            _ if self.kind.starts_with("traffic.") => {
                format!("group:{}", self.data.get("group").and_then(Value::as_str).unwrap_or(""))
            }
            (None, Some(n)) if self.kind.starts_with("membership.") => format!("node:{n}"),
            _ => String::new(),
        }
    }

    /// The throttle key: events of one kind about one subject fold together. Jobs without an
    /// application fold by kind alone.
    pub fn throttle_key(&self) -> String {
        format!("{}/{}", self.kind, self.subject())
    }
}

impl Rule {
    /// True when this rule fires on `e`.
    pub fn matches(&self, e: &Event, cx: &Context) -> bool {
        if !self.kinds.contains(&e.kind) {
            return false;
        }
        let f = &self.filter;
        if !f.apps.is_empty() {
            let name = e.app_id.and_then(|a| cx.apps.get(&a)).map(|(n, _)| n.as_str());
            if !name.is_some_and(|n| f.apps.iter().any(|a| a == n)) {
                return false;
            }
        }
        if !f.traffic_groups.is_empty() && !e.group(cx).is_some_and(|g| f.traffic_groups.iter().any(|x| x == g)) {
            return false;
        }
        if !f.node_labels.is_empty() {
            // Membership events carry the node's labels (it may be gone from the view).
            let from_data: Option<BTreeMap<String, String>> =
                e.data.get("labels").and_then(|l| serde_json::from_value(l.clone()).ok());
            let labels = from_data.as_ref().or_else(|| e.node_id.as_ref().and_then(|n| cx.labels.get(n)));
            let ok = labels.is_some_and(|l| f.node_labels.iter().all(|(k, v)| l.get(k) == Some(v)));
            if !ok {
                return false;
            }
        }
        if !f.states.is_empty() && e.kind == "app.state" {
            let state = e.data.get("state").and_then(Value::as_str);
            if !state.is_some_and(|s| f.states.iter().any(|x| x == s)) {
                return false;
            }
        }
        true
    }
}

/// One delivery to write, in event order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Planned {
    /// One message for this event.
    Each {
        /// The event.
        event_id: i64,
        /// The first unthrottled rule that matched.
        rule_id: i64,
    },
    /// Events of one throttle key under one rule: folded into the open window of that key, or
    /// opening one that closes `throttle_s` after the first.
    Fold {
        /// The rule.
        rule_id: i64,
        /// The key ([`Event::throttle_key`]).
        key: String,
        /// The first event folded here.
        first: i64,
        /// When it was written.
        first_at: NaiveDateTime,
        /// The last.
        last: i64,
        /// How many.
        count: i64,
        /// The rule's window.
        throttle_s: i64,
    },
}

/// The deliveries `events` make on channel `channel`: an event matched by at least one rule
/// sending to the channel is delivered once (whatever the number of rules); by an unthrottled
/// rule at once, else folded under the first throttled rule (lowest id) by its key. Folds of one
/// (rule, key) in the batch are merged, ordered by their first event.
pub fn plan(channel: i64, events: &[Event], rules: &[Rule], cx: &Context) -> Vec<Planned> {
    let mut rules: Vec<&Rule> = rules.iter().filter(|r| r.channels.contains(&channel)).collect();
    rules.sort_by_key(|r| r.id);
    let mut out: Vec<Planned> = Vec::new();
    let mut folds: HashMap<(i64, String), usize> = HashMap::new();
    for e in events {
        let matched: Vec<&&Rule> = rules.iter().filter(|r| r.matches(e, cx)).collect();
        if let Some(r) = matched.iter().find(|r| r.throttle_s == 0) {
            out.push(Planned::Each { event_id: e.id, rule_id: r.id });
        } else if let Some(r) = matched.first() {
            let key = e.throttle_key();
            match folds.get(&(r.id, key.clone())) {
                Some(&i) => {
                    if let Planned::Fold { last, count, .. } = &mut out[i] {
                        *last = e.id;
                        *count += 1;
                    }
                }
                None => {
                    folds.insert((r.id, key.clone()), out.len());
                    out.push(Planned::Fold {
                        rule_id: r.id,
                        key,
                        first: e.id,
                        first_at: e.at,
                        last: e.id,
                        count: 1,
                        throttle_s: r.throttle_s,
                    });
                }
            }
        }
    }
    out
}

/// The cursor's rule over ids that are missing. On PostgreSQL an id is drawn when a row is
/// inserted and becomes visible when its transaction commits, so a reader can see id 12 before
/// 11; a cursor moved past 12 would never see 11. So a missing id holds the cursor back until it
/// appears, or until it has been missing for `grace` (the transaction that drew it rolled back,
/// or an insert that did nothing drew it). `first_seen` remembers, by id, when a missing id was
/// first seen; `now` is any monotonic time in the same unit (ms).
#[derive(Debug, Default, Clone)]
pub struct Gaps {
    first_seen: HashMap<i64, u64>,
}

impl Gaps {
    /// The new cursor after reading `ids` (ascending, all above `cursor`), and how many of the
    /// ids it covers (the events to match now). `full` says the read was cut at its limit.
    pub fn advance(&mut self, cursor: i64, ids: &[i64], now_ms: u64, grace_ms: u64) -> (i64, usize) {
        let mut at = cursor;
        let mut taken = 0;
        for &id in ids {
            if id > at + 1 {
                let old = (at + 1..id).all(|missing| {
                    let seen = *self.first_seen.entry(missing).or_insert(now_ms);
                    now_ms.saturating_sub(seen) >= grace_ms
                });
                // A span of missing ids larger than any burst of concurrent inserts is history
                // (the cursor started below the first event), not transactions in flight.
                if !old && id - at <= 10_000 {
                    break;
                }
            }
            at = id;
            taken += 1;
        }
        self.first_seen.retain(|&m, _| m > at);
        (at, taken)
    }
}

/// The wait before retry number `attempt` (1 for the first retry): `base · 2^(attempt-1)`,
/// at most `max`.
pub fn backoff(attempt: i32, base: Duration, max: Duration) -> Duration {
    let shift = attempt.saturating_sub(1).clamp(0, 30) as u32;
    base.saturating_mul(1u32 << shift).min(max)
}

/// `sha256=` and the hex HMAC-SHA256 of `body` under `secret`: the webhook signature header.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap_or_else(|_| unreachable_hmac());
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for b in bytes {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

#[cold]
fn unreachable_hmac() -> hmac::Hmac<sha2::Sha256> {
    // HMAC takes a key of any length; this cannot happen.
    hmac::Hmac::<sha2::Sha256>::new_from_slice(b"").unwrap_or_else(|_| std::process::abort())
}

fn hmac_base64(key: &[u8], msg: &[u8]) -> String {
    use base64::Engine;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).unwrap_or_else(|_| unreachable_hmac());
    mac.update(msg);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// DingTalk's signature of a request at `timestamp_ms`: base64 of HMAC-SHA256 over
/// `"{timestamp}\n{secret}"` keyed by the secret (sent URL-encoded as `sign`, beside `timestamp`).
pub fn dingtalk_sign(secret: &str, timestamp_ms: i64) -> String {
    hmac_base64(secret.as_bytes(), format!("{timestamp_ms}\n{secret}").as_bytes())
}

/// Feishu's signature at `timestamp_s`: base64 of HMAC-SHA256 over nothing, keyed by
/// `"{timestamp}\n{secret}"` (sent in the body as `sign`, beside `timestamp`).
pub fn feishu_sign(secret: &str, timestamp_s: i64) -> String {
    hmac_base64(format!("{timestamp_s}\n{secret}").as_bytes(), b"")
}

/// One message, whatever the channel.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// The delivery id (`X-Rota-Delivery`): the same on every attempt.
    pub delivery_id: i64,
    /// The channel's name.
    pub channel: String,
    /// The rule that matched (None for a test message).
    pub rule: Option<String>,
    /// The (first) event.
    pub event: Event,
    /// Its application's name, when it has one.
    pub app: Option<String>,
    /// How many events the message stands for (1 unless throttled).
    pub folded: i64,
    /// The last event folded in (its id), when more than one.
    pub last_event_id: Option<i64>,
    /// The rule's window, for a folded message.
    pub throttle_s: i64,
}

impl Message {
    /// The one-line summary every channel shows: kind, application, message, and the count
    /// of a folded message.
    pub fn title(&self) -> String {
        let app = self.app.as_deref().map(|a| format!(" [{a}]")).unwrap_or_default();
        let more = if self.folded > 1 {
            format!(" ({} events like this in {} s)", self.folded, self.throttle_s)
        } else {
            String::new()
        };
        format!("[rota] {}{app}: {}{more}", self.event.kind, self.event.message)
    }

    /// The lines after the title: when, where, which ids.
    pub fn details(&self) -> Vec<String> {
        let e = &self.event;
        let mut lines = vec![format!("at: {}", ts(e.at))];
        if let Some(a) = &self.app {
            lines.push(format!("application: {a} (id {})", e.app_id.unwrap_or_default()));
        }
        if let Some(t) = e.task_id {
            lines.push(format!("task: {t}"));
        }
        if let Some(n) = &e.node_id {
            lines.push(format!("node: {n}"));
        }
        if self.folded > 1 {
            lines.push(format!("folded: {} events, ids {}..{}", self.folded, e.id, self.last_event_id.unwrap_or(e.id)));
        } else {
            lines.push(format!("event: {}", e.id));
        }
        lines.push(format!("delivery: {}", self.delivery_id));
        lines
    }

    /// The text body the chat robots and e-mail show: the title, then the details.
    pub fn text(&self) -> String {
        let mut t = self.title();
        for l in self.details() {
            t.push('\n');
            t.push_str(&l);
        }
        t
    }

    /// The webhook body: the whole event as JSON.
    pub fn webhook_body(&self) -> Value {
        let e = &self.event;
        json!({
            "delivery_id": self.delivery_id.to_string(),
            "channel": self.channel,
            "rule": self.rule,
            "kind": e.kind,
            "title": self.title(),
            "folded": self.folded,
            "last_event_id": self.last_event_id.unwrap_or(e.id),
            "event": {
                "id": e.id, "at": ts(e.at), "kind": e.kind, "app_id": e.app_id, "app": self.app,
                "task_id": e.task_id, "node_id": e.node_id, "message": e.message, "data": e.data,
            },
        })
    }

    /// The JSON body of a chat robot of `kind` (not `webhook`, not `email`); DingTalk signs in
    /// the URL, Feishu in the body (`feishu_sign` with `timestamp_s` when a secret is set).
    pub fn robot_body(&self, kind: ChannelKind, feishu: Option<(i64, String)>) -> Value {
        let text = self.text();
        match kind {
            ChannelKind::Slack => json!({ "text": text }),
            ChannelKind::Dingtalk | ChannelKind::Wecom => json!({ "msgtype": "text", "text": { "content": text } }),
            ChannelKind::Feishu => {
                let mut b = json!({ "msg_type": "text", "content": { "text": text } });
                if let Some((t, sign)) = feishu {
                    b["timestamp"] = json!(t.to_string());
                    b["sign"] = json!(sign);
                }
                b
            }
            ChannelKind::Webhook | ChannelKind::Email => self.webhook_body(),
        }
    }
}

fn ts(t: NaiveDateTime) -> String {
    t.and_utc().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Whether a receiver's answer counts as delivered: a 2xx status and, for the robots that
/// answer 200 with an error code in the body (DingTalk `errcode`, WeCom `errcode`, Feishu
/// `code`/`StatusCode`), a zero code.
pub fn accepted(kind: ChannelKind, status: u16, body: &str) -> Result<(), String> {
    if !(200..300).contains(&status) {
        return Err(format!("the receiver answered {status}"));
    }
    if matches!(kind, ChannelKind::Dingtalk | ChannelKind::Wecom | ChannelKind::Feishu) {
        let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
        let code = ["errcode", "code", "StatusCode"].iter().find_map(|k| v.get(k).and_then(Value::as_i64));
        if let Some(c) = code.filter(|c| *c != 0) {
            let msg = ["errmsg", "msg", "StatusMessage"].iter().find_map(|k| v.get(k).and_then(Value::as_str));
            return Err(format!("the robot refused the message: code {c}: {}", msg.unwrap_or("")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
