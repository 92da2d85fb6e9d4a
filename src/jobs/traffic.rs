//! Traffic policies: which datacenter (or any label value) a traffic group runs in.
//!
//! A policy names a label (`dc`), a preferred value, an optional backup, the percentage of keys
//! that go to the preferred side during a gradual move, and whether a key stays on its side
//! (`sticky`). When the preferred side has no live node the group fails over to the backup
//! (`auto_failover`) and comes back when it returns (`auto_failback`).
//!
//! Every node evaluates the same pure rules on the same membership view, so they agree on the
//! side without talking to each other; the first node to see a switch records it in
//! `traffic_policy.failed_over` and `event` (a conditional update, so it is written once).
//! Applications are always sticky: their owner must not change between two reconciliations.

use crate::ring::{hash_key, Selector};

/// A `traffic_policy` row, as the rules need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The group.
    pub group: String,
    /// The label whose value is switched (`dc`).
    pub label: String,
    /// Where the group runs normally.
    pub preferred: String,
    /// Where it goes when the preferred side is gone (and where the split sends the rest).
    pub backup: Option<String>,
    /// Percentage of keys sent to the preferred side (0–100).
    pub percent: i32,
    /// A key keeps its side (hash of the key) instead of a new draw per job.
    pub sticky: bool,
    /// Move to the backup when the preferred side has no live node.
    pub auto_failover: bool,
    /// Move back when it has one again.
    pub auto_failback: bool,
    /// The recorded state: failed over to the backup.
    pub failed_over: bool,
}

/// A switch the rules call for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Switch {
    /// Preferred side gone, backup live: move to the backup.
    FailOver,
    /// Preferred side back: move back.
    FailBack,
}

impl Policy {
    /// The switch due now, given which label values have a live node.
    pub fn switch_due(&self, has_live: &dyn Fn(&str) -> bool) -> Option<Switch> {
        let backup_live = self.backup.as_deref().is_some_and(has_live);
        let preferred_live = has_live(&self.preferred);
        if !self.failed_over && self.auto_failover && !preferred_live && backup_live {
            Some(Switch::FailOver)
        } else if self.failed_over && self.auto_failback && preferred_live {
            Some(Switch::FailBack)
        } else {
            None
        }
    }

    /// The state after any due switch.
    pub fn effective_failed_over(&self, has_live: &dyn Fn(&str) -> bool) -> bool {
        match self.switch_due(has_live) {
            Some(Switch::FailOver) => true,
            Some(Switch::FailBack) => false,
            None => self.failed_over,
        }
    }

    /// The side (label value) for one piece of work. `roll` is the key's hash for sticky work
    /// and a random number otherwise. A side without a live node is avoided when the other has
    /// one and failover is on, so a split never strands work.
    pub fn side(&self, has_live: &dyn Fn(&str) -> bool, roll: u64) -> &str {
        let Some(backup) = self.backup.as_deref() else { return &self.preferred };
        let chosen = if self.effective_failed_over(has_live) || (roll % 100) as i32 >= self.percent.clamp(0, 100) {
            backup
        } else {
            &self.preferred
        };
        let other = if chosen == backup { self.preferred.as_str() } else { backup };
        if self.auto_failover && !has_live(chosen) && has_live(other) {
            other
        } else {
            chosen
        }
    }

    /// The selector of work under `key`: `base` with this policy's label set to its side.
    pub fn selector_for(&self, base: &Selector, has_live: &dyn Fn(&str) -> bool, key: &str, random: u64) -> Selector {
        let roll = if self.sticky { hash_key(key.as_bytes()) } else { random };
        let mut s = base.clone();
        s.insert(self.label.clone(), self.side(has_live, roll).to_string());
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn policy(percent: i32) -> Policy {
        Policy {
            group: "g".into(),
            label: "dc".into(),
            preferred: "dc1".into(),
            backup: Some("dc2".into()),
            percent,
            sticky: true,
            auto_failover: true,
            auto_failback: true,
            failed_over: false,
        }
    }

    #[test]
    fn failover_and_back() {
        let p = policy(100);
        let both = |_: &str| true;
        let only_dc2 = |d: &str| d == "dc2";
        assert_eq!(p.switch_due(&both), None);
        assert_eq!(p.side(&both, 5), "dc1");
        assert_eq!(p.switch_due(&only_dc2), Some(Switch::FailOver));
        assert_eq!(p.side(&only_dc2, 5), "dc2");
        let after = Policy { failed_over: true, ..p.clone() };
        assert_eq!(after.switch_due(&both), Some(Switch::FailBack));
        assert_eq!(after.side(&both, 5), "dc1");
        let manual = Policy { auto_failback: false, ..after };
        assert_eq!(manual.switch_due(&both), None);
        assert_eq!(manual.side(&both, 5), "dc2", "stays on the backup until an admin switches back");
        let no_auto = Policy { auto_failover: false, ..p };
        assert_eq!(no_auto.switch_due(&only_dc2), None);
        assert_eq!(no_auto.side(&only_dc2, 5), "dc1", "without failover the work waits for dc1");
    }

    #[test]
    fn selector_sets_the_label() {
        let p = policy(0);
        let mut base = Selector::new();
        base.insert("gpu".into(), "yes".into());
        let s = p.selector_for(&base, &|_| true, "42", 0);
        assert_eq!(s.get("dc").map(String::as_str), Some("dc2"));
        assert_eq!(s.get("gpu").map(String::as_str), Some("yes"));
    }

    proptest! {
        /// A split sends about `percent` % of keys to the preferred side, and raising the
        /// percentage only ever moves keys toward it (a gradual move never flaps a key back).
        #[test]
        fn split_is_proportional_and_monotone(percent in 0i32..=100, step in 0i32..=100) {
            let p = policy(percent);
            let q = policy((percent + step).min(100));
            let live = |_: &str| true;
            let mut preferred = 0;
            for k in 0..2000u32 {
                let key = k.to_string();
                let a = p.selector_for(&Selector::new(), &live, &key, 0);
                let b = q.selector_for(&Selector::new(), &live, &key, 0);
                if a["dc"] == "dc1" {
                    preferred += 1;
                    prop_assert_eq!(&b["dc"], "dc1");
                }
            }
            let share = preferred as f64 / 2000.0 * 100.0;
            prop_assert!((share - percent as f64).abs() < 5.0, "share {} for percent {}", share, percent);
        }

        /// Whatever the split, work never goes to a side without a live node while the other
        /// side has one (with failover on).
        #[test]
        fn never_strands_work(percent in 0i32..=100, dc1 in any::<bool>(), dc2 in any::<bool>(), roll in any::<u64>()) {
            let p = policy(percent);
            let live = move |d: &str| if d == "dc1" { dc1 } else { dc2 };
            let side = p.side(&live, roll).to_string();
            if dc1 || dc2 {
                prop_assert!(live(&side));
            }
        }
    }
}
