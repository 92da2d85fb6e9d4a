//! Settling: the members applications are placed among, which follow the view at once when
//! members leave and only once the view has been quiet for a while when members come.
//!
//! Why: nodes started together join one by one, a few tens of milliseconds apart. Placing
//! applications by every intermediate view made the first node adopt all of them and hand most
//! over a moment later: 3 nodes over 30 running `process` applications made 49 starts, and each
//! start of a Flink job is a savepoint restore. The rule (docs/design.md, "Settled cold start"):
//!
//! - a view that only takes away (a member leaves, or its weight drops: a drain) applies at once,
//!   since the work of a departed node needs an owner now;
//! - a view that adds (a member joins, a weight grows, labels change) applies once no member
//!   change has been seen for `quiet`, or `max_wait` after the first change still waiting,
//!   whichever comes first;
//! - a node that begins a membership session (first join, re-join after a fence) starts with no
//!   members applied: it adopts nothing until its first view has settled.
//!
//! A settled node's running applications stay with it meanwhile (they move once, when the view
//! settles), so a join costs no extra downtime; only a cold start waits `quiet` before the first
//! starts. Nodes need not agree on the instant: acquiring an application is conditional on its
//! previous owner having released it or left (I4), so a disagreement of milliseconds delays a
//! hand-off, never doubles an owner.
//!
//! Pure: the caller passes the clock. Must never: hold back a departure.

use std::time::{Duration, Instant};

use super::Member;

/// How long a view that adds members waits before applications follow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SettleRule {
    /// Applied once no member change has been seen for this long.
    pub quiet: Duration,
    /// Applied at the latest this long after the first change still waiting.
    pub max_wait: Duration,
}

impl SettleRule {
    /// Views apply at once (standalone: no other node can come).
    pub const IMMEDIATE: SettleRule = SettleRule { quiet: Duration::ZERO, max_wait: Duration::ZERO };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Waiting {
    /// The first change still waiting.
    since: Instant,
    /// The last member change seen.
    last: Instant,
}

/// The members applications are placed among, and what waits to be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settle {
    rule: SettleRule,
    /// The members of the latest view seen.
    seen: Vec<Member>,
    /// The members applications are placed among.
    applied: Vec<Member>,
    waiting: Option<Waiting>,
}

impl Settle {
    /// Nothing seen, nothing applied.
    pub fn new(rule: SettleRule) -> Self {
        Self { rule, seen: Vec::new(), applied: Vec::new(), waiting: None }
    }

    /// A new membership session begins at `now`: nothing is applied until the view settles.
    pub fn restart(&mut self, now: Instant) {
        self.applied.clear();
        if self.rule.quiet.is_zero() {
            self.applied = self.seen.clone();
        } else {
            self.waiting = Some(Waiting { since: now, last: now });
        }
    }

    /// The members applications are placed among.
    pub fn applied(&self) -> &[Member] {
        &self.applied
    }

    /// True when the applied members are the view's.
    pub fn settled(&self) -> bool {
        self.waiting.is_none()
    }

    /// When what waits will be applied, if anything waits.
    pub fn due(&self) -> Option<Instant> {
        self.waiting.map(|w| (w.last + self.rule.quiet).min(w.since + self.rule.max_wait))
    }

    /// The view's members are now `members` (sorted by id). True when the applied members
    /// changed.
    pub fn observe(&mut self, members: &[Member], now: Instant) -> bool {
        let changed = self.seen != members;
        self.seen = members.to_vec();
        let before = std::mem::take(&mut self.applied);
        if self.rule.quiet.is_zero() {
            self.applied = self.seen.clone();
            return before != self.applied;
        }
        // What was applied and is still there, each as it is now when the change only takes
        // away (a lower weight, same labels), as it was otherwise.
        let mut grows = false;
        for old in &before {
            if let Some(new) = members.iter().find(|m| m.node_id == old.node_id) {
                if new == old || (new.weight < old.weight && new.labels == old.labels) {
                    self.applied.push(new.clone());
                } else {
                    self.applied.push(old.clone());
                    grows = true;
                }
            }
        }
        grows |= members.iter().any(|m| !before.iter().any(|o| o.node_id == m.node_id));
        match (grows, self.waiting.as_mut()) {
            (false, _) if self.applied == self.seen => self.waiting = None,
            (_, Some(w)) if changed => w.last = now,
            (_, Some(_)) => {}
            (_, None) => self.waiting = Some(Waiting { since: now, last: now }),
        }
        before != self.applied
    }

    /// Apply what waits when it is due at `now`. True when the applied members changed.
    pub fn tick(&mut self, now: Instant) -> bool {
        if self.due().is_some_and(|d| now >= d) {
            self.waiting = None;
            let changed = self.applied != self.seen;
            self.applied = self.seen.clone();
            return changed;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const RULE: SettleRule = SettleRule { quiet: Duration::from_secs(2), max_wait: Duration::from_secs(10) };

    fn m(id: &str, weight: u32) -> Member {
        Member {
            node_id: id.into(),
            addr: format!("{id}:1"),
            labels: Default::default(),
            weight,
            started_at: String::new(),
        }
    }

    fn ids(s: &Settle) -> Vec<&str> {
        s.applied().iter().map(|m| m.node_id.as_str()).collect()
    }

    #[test]
    fn nodes_joining_together_are_applied_once_the_view_is_quiet() {
        let t = Instant::now();
        let mut s = Settle::new(RULE);
        s.restart(t);
        s.observe(&[m("n1", 1)], t);
        assert!(ids(&s).is_empty(), "a new session applies nothing at once");
        let ms = Duration::from_millis;
        s.observe(&[m("n1", 1), m("n2", 1)], t + ms(50));
        s.observe(&[m("n1", 1), m("n2", 1), m("n3", 1)], t + ms(80));
        assert!(!s.tick(t + ms(2_000)), "2 s after the join, but not after the last change");
        assert_eq!(s.due(), Some(t + ms(2_080)));
        assert!(s.tick(t + ms(2_080)));
        assert_eq!(ids(&s), ["n1", "n2", "n3"]);
        assert!(s.settled());
    }

    #[test]
    fn a_departure_or_a_drain_applies_at_once_and_a_join_waits() {
        let t = Instant::now();
        let mut s = Settle::new(RULE);
        s.observe(&[m("n1", 1), m("n2", 1)], t);
        s.tick(t + RULE.quiet);
        assert_eq!(ids(&s), ["n1", "n2"]);
        let later = t + Duration::from_secs(60);
        assert!(s.observe(&[m("n1", 1)], later), "a leave applies at once");
        assert!(s.settled());
        assert!(s.observe(&[m("n1", 0)], later), "a drain applies at once");
        assert_eq!(s.applied()[0].weight, 0);
        assert!(!s.observe(&[m("n1", 1), m("n3", 1)], later), "a join and an undrain wait");
        assert_eq!(s.applied()[0].weight, 0);
        // A member leaving while a join waits: the leave applies, the join still waits.
        let mut s2 = s.clone();
        assert!(!s2.observe(&[m("n1", 1)], later + Duration::from_millis(10)));
        assert!(!s2.settled());
        assert!(s.observe(&[m("n3", 1)], later + Duration::from_millis(10)), "n1 left: applied at once");
        assert!(ids(&s).is_empty());
        assert!(s.tick(later + Duration::from_millis(2_010)));
        assert_eq!(ids(&s), ["n3"]);
    }

    #[test]
    fn changes_that_never_stop_are_applied_after_the_maximum_wait() {
        let t = Instant::now();
        let mut s = Settle::new(RULE);
        s.restart(t);
        for i in 0..20u64 {
            let members: Vec<Member> = (0..=i).map(|k| m(&format!("n{k:02}"), 1)).collect();
            let now = t + Duration::from_millis(900 * i);
            s.observe(&members, now);
            s.tick(now);
        }
        assert!(!ids(&s).is_empty(), "applied by the 10 s bound although changes came every 0.9 s");
    }

    #[test]
    fn the_immediate_rule_follows_every_view() {
        let t = Instant::now();
        let mut s = Settle::new(SettleRule::IMMEDIATE);
        s.restart(t);
        assert!(s.observe(&[m("n1", 1)], t));
        assert_eq!(ids(&s), ["n1"]);
        assert!(s.settled());
    }

    proptest! {
        /// Whatever the changes: applied members are always members of the view, the applied
        /// set equals the view once it has been quiet for `quiet`, and nothing waits longer than
        /// `max_wait`.
        #[test]
        fn applied_members_are_live_and_catch_up(
            steps in proptest::collection::vec((proptest::collection::btree_set(0u8..5, 0..5), 0u64..3_000, 0u32..3), 1..40)
        ) {
            let t0 = Instant::now();
            let mut s = Settle::new(RULE);
            s.restart(t0);
            let mut now = t0;
            for (set, gap, weight) in steps {
                now += Duration::from_millis(gap);
                s.tick(now);
                let members: Vec<Member> = set.iter().map(|i| m(&format!("n{i}"), weight)).collect();
                s.observe(&members, now);
                for a in s.applied() {
                    prop_assert!(members.iter().any(|x| x.node_id == a.node_id), "a departed member stays applied");
                }
                if let Some(due) = s.due() {
                    prop_assert!(due <= now + RULE.quiet);
                }
                let mut quiet = s.clone();
                quiet.tick(now + RULE.quiet);
                prop_assert_eq!(quiet.applied(), &members[..]);
            }
        }
    }
}
