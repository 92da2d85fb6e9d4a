//! The words of the domain as types: a task's status, a command's action, an application's
//! observed and desired state, a node's id. Each maps to one column's text (docs/sql.md), so
//! the SQL interface stays plain text while the code can only say what the schema allows.
//!
//! Why types: the same literals (`"pending"`, `"run"`, `"running"` — which is both a task status
//! and an application state) were compared as strings all over the code; a typo compiled and
//! silently never matched. Now the compiler holds the vocabulary, and a value read from a column
//! the schema constrains (CHECK on both backends) that is not in it is a decode error naming the
//! value, not a branch that never fires.
//!
//! Must never: widen a vocabulary without the migration that widens its CHECK constraint, or
//! reject an action at insert: actions are free text (rows written by hand), and an unknown one
//! fails its row with a readable error at dispatch ([`Action::parse`] is `None` for it).

use std::fmt;
use std::str::FromStr;

use diesel::backend::Backend;
use diesel::deserialize::{self, FromSql, FromSqlRow};
use diesel::expression::AsExpression;
use diesel::serialize::{self, Output, ToSql};
use diesel::sql_types::Text;
use serde::{Deserialize, Serialize};

/// A value outside a vocabulary: names the vocabulary, the value, and what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{value}` is not a {what} (one of: {allowed})")]
pub struct UnknownWord {
    /// The vocabulary, e.g. "task status".
    pub what: &'static str,
    /// The value found.
    pub value: String,
    /// The allowed values, comma-separated.
    pub allowed: String,
}

/// Declares a closed vocabulary: the enum, its text, parsing, display, serde and the diesel
/// mapping to a `Text` column on every backend.
macro_rules! vocabulary {
    ($(#[$doc:meta])* $name:ident, $what:literal, { $($(#[$vdoc:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, AsExpression, FromSqlRow)]
        #[serde(rename_all = "snake_case")]
        #[diesel(sql_type = Text)]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            /// Every value, in the schema's order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The column's text for this value.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl FromStr for $name {
            type Err = UnknownWord;
            fn from_str(s: &str) -> Result<Self, UnknownWord> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(UnknownWord {
                        what: $what,
                        value: s.to_string(),
                        allowed: [$($text),+].join(", "),
                    }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl<DB: Backend> FromSql<Text, DB> for $name
        where
            String: FromSql<Text, DB>,
        {
            fn from_sql(bytes: DB::RawValue<'_>) -> deserialize::Result<Self> {
                let text = <String as FromSql<Text, DB>>::from_sql(bytes)?;
                Ok(text.parse::<$name>()?)
            }
        }

        impl<DB: Backend> ToSql<Text, DB> for $name
        where
            str: ToSql<Text, DB>,
        {
            fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, DB>) -> serialize::Result {
                self.as_str().to_sql(out)
            }
        }
    };
}

vocabulary!(
    /// Where a task is in its life (docs/design.md#data-model): `pending → running →
    /// succeeded | failed`; `pending → cancelled`; `running → lost` for a broadcast child.
    TaskStatus, "task status", {
        /// Waiting to be claimed (or to be due).
        Pending = "pending",
        /// Claimed by an owner, which is executing it.
        Running = "running",
        /// Done.
        Succeeded = "succeeded",
        /// Failed for good (no attempts left, or it can never succeed).
        Failed = "failed",
        /// Cancelled by an admin before it ran.
        Cancelled = "cancelled",
        /// A broadcast child whose node died: never re-run elsewhere (I5).
        Lost = "lost",
    }
);

impl TaskStatus {
    /// The statuses a task never leaves.
    pub const TERMINAL: [TaskStatus; 4] =
        [TaskStatus::Succeeded, TaskStatus::Failed, TaskStatus::Cancelled, TaskStatus::Lost];

    /// True for a status a task never leaves.
    pub fn is_terminal(self) -> bool {
        Self::TERMINAL.contains(&self)
    }
}

vocabulary!(
    /// What a task asks for. Application commands act on their application; `run` is a job.
    Action, "action", {
        /// Bring an application up.
        Start = "start",
        /// Bring an application down.
        Stop = "stop",
        /// Stop, then start.
        Restart = "restart",
        /// Take a savepoint of a running application (drivers that have them: `flink`).
        Savepoint = "savepoint",
        /// A one-shot job.
        Run = "run",
    }
);

impl Action {
    /// The action a task row's text names, or None for text that names none (the row is
    /// failed at dispatch, naming the text).
    pub fn parse(text: &str) -> Option<Action> {
        text.parse().ok()
    }

    /// The action as a metric label: unknown text counts as `other`, so rows written by hand
    /// cannot grow the label set.
    pub fn label(text: &str) -> &'static str {
        Action::parse(text).map_or("other", Action::as_str)
    }
}

vocabulary!(
    /// An application's observed state, as its owner last saw it.
    AppState, "application state", {
        /// Not running.
        Stopped = "stopped",
        /// A start is under way.
        Starting = "starting",
        /// Running.
        Running = "running",
        /// A stop is under way.
        Stopping = "stopping",
        /// Gave up (a start failed for good, or it kept failing past its restarts).
        Failed = "failed",
        /// Its owner cannot tell (e.g. the outside system does not answer).
        Unknown = "unknown",
    }
);

vocabulary!(
    /// What an admin wants an application to be.
    DesiredState, "desired state", {
        /// Keep it running (restart it by its policy).
        Running = "running",
        /// Keep it stopped.
        Stopped = "stopped",
    }
);

vocabulary!(
    /// Why an application changed owner: the `reason` of its `app.acquired` event, and of the
    /// `app.released` event that handed it over (docs/dispatch.md, "Ownership events").
    Takeover, "takeover reason", {
        /// It had no owner before (a new application).
        New = "new",
        /// Its live owner released it because the ring gave it to another node.
        HandOff = "hand-off",
        /// Its owner released it while being drained (weight 0).
        Drained = "drained",
        /// Its owner released it as it stopped gracefully.
        Stopped = "stopped",
        /// Its owner left the membership (crashed, fenced, lease expired) without releasing it.
        Departed = "departed",
        /// This node owned it in an earlier membership session.
        Rejoined = "rejoined",
    }
);

/// The last ownership event of an application (`app.acquired` or `app.released`): who wrote it,
/// and for a release its reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LastOwnership {
    /// Acquired by this node, never released since.
    Acquired(Option<String>),
    /// Released by this node, for this reason (None when the event names none).
    Released(Option<String>, Option<Takeover>),
}

impl Takeover {
    /// Pure: who owned an application before node `me` acquired it, and why it moved.
    /// `owner_before` is the owner read in the acquisition's transaction, `live` the members it
    /// was acquired under, `last` its last ownership event. An owner read as live and other than
    /// `me` released it in the meantime (the acquisition takes only a free application or a
    /// departed owner's: I4), so the release's event tells who and why.
    pub fn decide(
        me: &str,
        owner_before: Option<&str>,
        live: &[String],
        last: Option<&LastOwnership>,
    ) -> (Option<String>, Takeover) {
        match owner_before {
            Some(o) if o == me => return (Some(me.to_string()), Takeover::Rejoined),
            Some(o) if !live.iter().any(|m| m == o) => return (Some(o.to_string()), Takeover::Departed),
            _ => {}
        }
        match (last, owner_before) {
            (Some(LastOwnership::Released(Some(by), why)), _) => (Some(by.clone()), why.unwrap_or(Takeover::HandOff)),
            // Its owner's ownership was cleared without a release of its own (an earlier life's,
            // given up at re-join): it left it behind.
            (Some(LastOwnership::Acquired(Some(by))), None) if by == me => (Some(me.to_string()), Takeover::Rejoined),
            (Some(LastOwnership::Acquired(Some(by))), None) => (Some(by.clone()), Takeover::Departed),
            (_, Some(o)) => (Some(o.to_string()), Takeover::HandOff),
            _ => (None, Takeover::New),
        }
    }

    /// How an event message says it.
    pub fn describe(self, previous: Option<&str>) -> String {
        let p = previous.unwrap_or("its previous owner");
        match self {
            Takeover::New => "no previous owner".into(),
            Takeover::HandOff => format!("from {p}: hand-off, {p} released it to the ring's new owner"),
            Takeover::Drained => format!("from {p}: drained, {p} released it while being drained"),
            Takeover::Stopped => format!("from {p}: {p} released it as it stopped"),
            Takeover::Departed => format!("from {p}: departed, {p} left the membership without releasing it"),
            Takeover::Rejoined => "rejoined: this node owned it in an earlier session".into(),
        }
    }
}

/// A node's id: it ends up in etcd keys, log fields and SQL rows, so it is kept plain — 1 to
/// 128 ASCII letters, digits, `-`, `_` or `.`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct NodeId(String);

impl NodeId {
    /// The id, checked.
    pub fn parse(id: &str) -> Result<NodeId, String> {
        if NodeId::is_valid(id) {
            Ok(NodeId(id.to_string()))
        } else {
            Err(format!(
                "`{id}` is not a valid node id: use 1 to 128 ASCII letters, digits, `-`, `_` or `.` \
                 (it ends up in etcd keys, log fields and SQL rows)"
            ))
        }
    }

    /// True when `id` may be a node's id.
    pub fn is_valid(id: &str) -> bool {
        !id.is_empty()
            && id.len() <= 128
            && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    }

    /// The id's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What kind of JSON value `v` is, for messages that say what was expected and what came.
pub fn json_kind(v: &serde_json::Value) -> &'static str {
    use serde_json::Value;
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_takeover_names_the_previous_owner_and_why() {
        let live = vec!["a".to_string(), "b".to_string()];
        let released = |by: &str, why| LastOwnership::Released(Some(by.into()), why);
        assert_eq!(Takeover::decide("a", None, &live, None), (None, Takeover::New));
        assert_eq!(Takeover::decide("a", Some("c"), &live, None), (Some("c".into()), Takeover::Departed));
        assert_eq!(Takeover::decide("a", Some("a"), &live, None), (Some("a".into()), Takeover::Rejoined));
        let drained = released("b", Some(Takeover::Drained));
        assert_eq!(Takeover::decide("a", None, &live, Some(&drained)), (Some("b".into()), Takeover::Drained));
        // Read as held by live `b`: it released meanwhile, and its release says why.
        let stopped = released("b", Some(Takeover::Stopped));
        assert_eq!(Takeover::decide("a", Some("b"), &live, Some(&stopped)), (Some("b".into()), Takeover::Stopped));
        assert_eq!(Takeover::decide("a", Some("b"), &live, None), (Some("b".into()), Takeover::HandOff));
        let unsaid = released("b", None);
        assert_eq!(Takeover::decide("a", None, &live, Some(&unsaid)), (Some("b".into()), Takeover::HandOff));
        // Acquired by a node and cleared without a release: it left it behind.
        let kept = LastOwnership::Acquired(Some("c".into()));
        assert_eq!(Takeover::decide("a", None, &live, Some(&kept)), (Some("c".into()), Takeover::Departed));
        let mine = LastOwnership::Acquired(Some("a".into()));
        assert_eq!(Takeover::decide("a", None, &live, Some(&mine)), (Some("a".into()), Takeover::Rejoined));
    }

    #[test]
    fn every_word_reads_back_as_itself() {
        for s in TaskStatus::ALL {
            assert_eq!(s.as_str().parse::<TaskStatus>(), Ok(*s));
        }
        for a in Action::ALL {
            assert_eq!(Action::parse(a.as_str()), Some(*a));
        }
        for s in AppState::ALL {
            assert_eq!(s.as_str().parse::<AppState>(), Ok(*s));
        }
        for s in DesiredState::ALL {
            assert_eq!(s.as_str().parse::<DesiredState>(), Ok(*s));
        }
    }

    #[test]
    fn the_words_are_the_schemas() {
        // The CHECK constraints of migrations/*/…_task_checks and the init migrations.
        let statuses: Vec<&str> = TaskStatus::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(statuses, ["pending", "running", "succeeded", "failed", "cancelled", "lost"]);
        let states: Vec<&str> = AppState::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(states, ["stopped", "starting", "running", "stopping", "failed", "unknown"]);
        assert_eq!(serde_json::to_string(&TaskStatus::Cancelled).unwrap(), "\"cancelled\"");
    }

    #[test]
    fn an_unknown_word_is_named_with_what_is_allowed() {
        let e = "fly".parse::<TaskStatus>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "`fly` is not a task status (one of: pending, running, succeeded, failed, cancelled, lost)"
        );
        assert_eq!(Action::parse("fly"), None);
        assert_eq!(Action::label("fly"), "other");
        assert_eq!(Action::label("run"), "run");
    }

    #[test]
    fn only_terminal_statuses_are_terminal() {
        let terminal: Vec<TaskStatus> = TaskStatus::ALL.iter().copied().filter(|s| s.is_terminal()).collect();
        assert_eq!(terminal, TaskStatus::TERMINAL);
        assert!(!TaskStatus::Pending.is_terminal() && !TaskStatus::Running.is_terminal());
    }

    proptest! {
        #[test]
        fn a_node_id_is_valid_exactly_when_plain(id in "\\PC{0,130}") {
            let plain = !id.is_empty()
                && id.len() <= 128
                && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
            prop_assert_eq!(NodeId::parse(&id).is_ok(), plain);
        }

        #[test]
        fn action_labels_are_bounded(text in "\\PC{0,20}") {
            let label = Action::label(&text);
            prop_assert!(["start", "stop", "restart", "savepoint", "run", "other"].contains(&label));
        }
    }
}
