//! Which claim a round makes: a pure function of the dispatcher's situation, so the rules that
//! keep label-dependent rows from being skipped are stated once and property-tested.
//!
//! The claims (docs/dispatch.md):
//! - **pump**: the only member is draining a backlog; the pump has claimed the next batch ahead.
//! - **next**: the only member reads and claims in one statement (`claim_next`), which leaves
//!   out rows whose placement depends on labels.
//! - **window**: a member of a larger ring claims a backlog of jobs by computing which ids its
//!   ring owns (`claim_jobs`), which also leaves out label-dependent rows.
//! - **read and claim**: read due rows, place each on the ring, claim this node's share.
//!
//! Must never: choose a claim that leaves out label-dependent rows for a round from the queue's
//! head that was asked to look for them (the label pass), or the one-statement claim on a node
//! that does not own every key.

/// What a round's choice depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Situation {
    /// The pump has claims in flight (the pump).
    pub pumping: bool,
    /// This node is the only member of the ring and takes work.
    pub owns_everything: bool,
    /// The round reads after this id (0: from the queue's head).
    pub cursor: i64,
    /// The next round from the head must read and place the head row by row, looking for
    /// label-dependent rows.
    pub label_pass: bool,
    /// A job window is open (the job window).
    pub windowing: bool,
}

/// The claim a round makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Take the pump's next batch.
    Pump,
    /// Read and claim in one statement.
    Next,
    /// Claim the window's next ids.
    Window,
    /// Read due rows and claim this node's share; `head_look`: a look at the queue's head while
    /// a window is open (the window and the cursor stay as they are).
    ReadAndClaim {
        /// A look at the head during a window.
        head_look: bool,
    },
}

/// The claim for a round in situation `s`.
pub fn choose(s: &Situation) -> Claim {
    if s.pumping {
        Claim::Pump
    } else if s.owns_everything && (s.cursor > 0 || !s.label_pass) {
        Claim::Next
    } else if s.windowing && !s.label_pass {
        Claim::Window
    } else {
        Claim::ReadAndClaim { head_look: s.windowing }
    }
}

/// True when the next commands of applications that finished one may be claimed by their
/// turns alone (`claim_turns`): this node is the only member, or a member of a larger ring
/// claiming by job window (whose rounds read no commands), and no label-dependent rows wait at
/// the queue's head (those need a full round, which also claims the next commands).
pub fn takes_turns(s: &Situation) -> bool {
    !s.label_pass && (s.windowing || s.owns_everything)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn situation() -> impl Strategy<Value = Situation> {
        (any::<bool>(), any::<bool>(), prop_oneof![Just(0i64), 1i64..1_000_000], any::<bool>(), any::<bool>()).prop_map(
            |(pumping, owns_everything, cursor, label_pass, windowing)| Situation {
                pumping,
                owns_everything,
                cursor,
                label_pass,
                windowing,
            },
        )
    }

    proptest! {
        #[test]
        fn a_label_pass_from_the_head_reads_row_by_row(owns_everything: bool, windowing: bool) {
            // Both one-statement claims leave label-dependent rows out: a round from the head
            // that must look for them reads (unless the pump's batch, claimed before, comes first).
            let s = Situation { pumping: false, owns_everything, cursor: 0, label_pass: true, windowing };
            let read = matches!(choose(&s), Claim::ReadAndClaim { .. });
            prop_assert!(read);
        }

        #[test]
        fn only_the_only_member_claims_in_one_statement(s in situation()) {
            if choose(&s) == Claim::Next {
                prop_assert!(s.owns_everything);
            }
        }

        #[test]
        fn the_pump_comes_first(s in situation()) {
            prop_assert_eq!(choose(&s) == Claim::Pump, s.pumping);
        }

        #[test]
        fn a_window_claims_only_when_open_and_no_label_pass_is_due(s in situation()) {
            if choose(&s) == Claim::Window {
                prop_assert!(s.windowing && !s.label_pass && !s.owns_everything);
            }
        }

        #[test]
        fn turns_alone_never_skip_a_label_pass(s in situation()) {
            if takes_turns(&s) {
                prop_assert!(!s.label_pass);
                prop_assert!(s.windowing || s.owns_everything);
            }
        }
    }

    #[test]
    fn a_member_of_a_larger_ring_reads_then_claims() {
        let s = Situation { pumping: false, owns_everything: false, cursor: 10, label_pass: false, windowing: false };
        assert_eq!(choose(&s), Claim::ReadAndClaim { head_look: false });
        assert!(!takes_turns(&s));
        let s = Situation { windowing: true, label_pass: true, ..s };
        assert_eq!(choose(&s), Claim::ReadAndClaim { head_look: true });
    }

    #[test]
    fn the_only_member_past_the_head_claims_in_one_statement_even_on_a_label_pass() {
        // Past the head, the label pass is for the next round from the head.
        let s = Situation { pumping: false, owns_everything: true, cursor: 10, label_pass: true, windowing: false };
        assert_eq!(choose(&s), Claim::Next);
    }
}
