//! Pure membership bookkeeping: member records as stored in etcd, the table of members built from
//! a snapshot plus watch events, and what changed between two views.
//!
//! Why apart from the etcd code: this is where a malformed value written by someone else is
//! rejected, where the view every node computes from the same events must come out identical,
//! and where joins and leaves are told apart — all testable without etcd.
//!
//! Must never: let one bad record change or hide the other members.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{ForeignMember, Member, View};
use crate::domain::NodeId;

/// The JSON value of `/{cluster}/members/{node_id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    /// HTTP address.
    pub addr: String,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Ring weight.
    pub weight: u32,
    /// Process start (RFC 3339).
    pub started_at: String,
    /// Per-process token: tells a restarted process from a second one with the same node id.
    pub instance: String,
    /// The identity of the database the member runs on (`store::identity`). Empty in records
    /// written before it existed: such a member is taken as running on ours.
    #[serde(default)]
    pub database: String,
}

/// Parse one member key's node id and value; the error says what is wrong with it.
pub fn parse_member(node_id: &str, value: &[u8]) -> Result<(Member, MemberRecord), String> {
    if !NodeId::is_valid(node_id) {
        return Err(format!("`{node_id}` is not a valid node id"));
    }
    let record: MemberRecord =
        serde_json::from_slice(value).map_err(|e| format!("value is not a member record: {e}"))?;
    let member = Member {
        node_id: node_id.to_string(),
        addr: record.addr.clone(),
        labels: record.labels.clone(),
        weight: record.weight,
        started_at: record.started_at.clone(),
    };
    Ok((member, record))
}

/// Members keyed by node id, kept from a snapshot plus events; records of members that run on
/// another database are kept apart, out of the view.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MemberTable {
    /// Our database's identity; empty takes every record as ours.
    database: String,
    members: BTreeMap<String, (Member, String)>,
    foreign: BTreeMap<String, ForeignMember>,
}

/// What applying one put did.
#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    /// The member was added or updated.
    Member,
    /// The record is another deployment's (another database): kept out of the view.
    Foreign(ForeignMember),
    /// The value was rejected (and any previous member under that key removed).
    Rejected(String),
}

impl MemberTable {
    /// An empty table that takes every record as ours.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty table of the members that run on `database`.
    pub fn for_database(database: &str) -> Self {
        Self { database: database.to_string(), ..Self::default() }
    }

    /// Apply a put of `node_id` → `value`.
    pub fn put(&mut self, node_id: &str, value: &[u8]) -> Applied {
        self.foreign.remove(node_id);
        match parse_member(node_id, value) {
            Ok((m, record)) if self.is_foreign(&record) => {
                self.members.remove(node_id);
                let f = ForeignMember { node_id: m.node_id, addr: m.addr, database: record.database };
                self.foreign.insert(node_id.to_string(), f.clone());
                Applied::Foreign(f)
            }
            Ok((m, record)) => {
                self.members.insert(node_id.to_string(), (m, record.instance));
                Applied::Member
            }
            Err(why) => {
                self.members.remove(node_id);
                Applied::Rejected(why)
            }
        }
    }

    /// True when `record` says its member runs on another database than ours.
    pub fn is_foreign(&self, record: &MemberRecord) -> bool {
        !self.database.is_empty() && !record.database.is_empty() && record.database != self.database
    }

    /// Apply a delete of `node_id`.
    pub fn delete(&mut self, node_id: &str) {
        self.members.remove(node_id);
        self.foreign.remove(node_id);
    }

    /// The records of members that run on another database, sorted by node id.
    pub fn foreign(&self) -> Vec<ForeignMember> {
        self.foreign.values().cloned().collect()
    }

    /// Node ids of the members (ours), sorted.
    pub fn ids(&self) -> Vec<&str> {
        self.members.keys().map(String::as_str).collect()
    }

    /// True when `node_id` is a member.
    pub fn contains(&self, node_id: &str) -> bool {
        self.members.contains_key(node_id)
    }

    /// The process token registered for `node_id`, if it is a member.
    pub fn instance_of(&self, node_id: &str) -> Option<&str> {
        self.members.get(node_id).map(|(_, instance)| instance.as_str())
    }

    /// The view at `epoch` (members sorted by node id).
    pub fn view(&self, epoch: u64) -> View {
        View { epoch, members: self.members.values().map(|(m, _)| m.clone()).collect() }
    }
}

/// Node ids added and removed from `old` to `new`.
pub fn diff(old: &View, new: &View) -> (Vec<String>, Vec<String>) {
    let ids = |v: &View| v.members.iter().map(|m| m.node_id.clone()).collect::<std::collections::BTreeSet<_>>();
    let (a, b) = (ids(old), ids(new));
    (b.difference(&a).cloned().collect(), a.difference(&b).cloned().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn record(addr: &str) -> Vec<u8> {
        serde_json::to_vec(&MemberRecord {
            addr: addr.into(),
            labels: BTreeMap::new(),
            weight: 1,
            started_at: "2026-11-22T00:00:00Z".into(),
            instance: "i".into(),
            database: String::new(),
        })
        .unwrap()
    }

    fn on(addr: &str, database: &str) -> Vec<u8> {
        let mut r: MemberRecord = serde_json::from_slice(&record(addr)).unwrap();
        r.database = database.into();
        serde_json::to_vec(&r).unwrap()
    }

    #[test]
    fn members_of_another_database_are_kept_out_of_the_view() {
        let mut t = MemberTable::for_database("db-a");
        assert_eq!(t.put("a1", &on("h:1", "db-a")), Applied::Member);
        assert_eq!(t.put("old", &record("h:2")), Applied::Member, "a record without a database is taken as ours");
        let Applied::Foreign(f) = t.put("b1", &on("h:3", "db-b")) else { panic!("b1 is foreign") };
        assert_eq!((f.node_id.as_str(), f.addr.as_str(), f.database.as_str()), ("b1", "h:3", "db-b"));
        assert_eq!(t.view(3).members.iter().map(|m| m.node_id.as_str()).collect::<Vec<_>>(), ["a1", "old"]);
        assert_eq!(t.foreign().len(), 1);
        // A member that moves to another database leaves the view; a deleted one is forgotten.
        assert!(matches!(t.put("a1", &on("h:1", "db-c")), Applied::Foreign(_)));
        assert!(!t.contains("a1"));
        t.delete("b1");
        t.delete("a1");
        assert!(t.foreign().is_empty());
        // A table without a database of its own takes every record.
        assert_eq!(MemberTable::new().put("b1", &on("h:3", "db-b")), Applied::Member);
    }

    #[test]
    fn malformed_values_are_rejected_without_touching_others() {
        let mut t = MemberTable::new();
        assert_eq!(t.put("a", &record("h:1")), Applied::Member);
        assert!(matches!(t.put("b", b"{not json"), Applied::Rejected(_)));
        assert!(matches!(t.put("c", br#"{"addr":"x"}"#), Applied::Rejected(why) if why.contains("weight")));
        assert!(matches!(t.put("bad id", &record("h:2")), Applied::Rejected(_)));
        let v = t.view(7);
        assert_eq!(v.members.iter().map(|m| m.node_id.as_str()).collect::<Vec<_>>(), vec!["a"]);
        // A member overwritten with garbage is no longer a member.
        t.put("a", b"garbage");
        assert!(!t.contains("a"));
    }

    #[test]
    fn diff_names_joins_and_leaves() {
        let mut t = MemberTable::new();
        t.put("a", &record("1"));
        t.put("b", &record("2"));
        let old = t.view(1);
        t.delete("a");
        t.put("c", &record("3"));
        assert_eq!(diff(&old, &t.view(2)), (vec!["c".to_string()], vec!["a".to_string()]));
    }

    proptest! {
        /// Nodes that see the same events in the same order compute the same view, whatever
        /// snapshot they started from, as long as the snapshot is a prefix of the events.
        #[test]
        fn same_events_same_view(ops in proptest::collection::vec((0u8..6, any::<bool>()), 0..60), cut in 0usize..60) {
            let apply = |t: &mut MemberTable, (n, put): (u8, bool)| {
                let id = format!("n{n}");
                if put { t.put(&id, &record(&id)); } else { t.delete(&id); }
            };
            let mut full = MemberTable::new();
            for op in &ops { apply(&mut full, *op); }
            let cut = cut.min(ops.len());
            let mut late = MemberTable::new();
            for op in &ops[..cut] { apply(&mut late, *op); }
            let snapshot = late.clone();
            let mut resumed = snapshot;
            for op in &ops[cut..] { apply(&mut resumed, *op); }
            prop_assert_eq!(full.view(1), resumed.view(1));
            // Members are always sorted by id.
            let v = full.view(1);
            prop_assert!(v.members.windows(2).all(|w| w[0].node_id < w[1].node_id));
        }
    }
}
