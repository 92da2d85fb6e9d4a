//! Whether this node's clock and the database's agree well enough for the fence of writes.
//!
//! Why: every write as owner carries this node's deadline on its own wall clock, and the
//! database compares it with its own clock (`store::fence::Fence`). A database clock behind
//! the node's by more than [`DEADLINE_MARGIN`] lets a write through after the node's lease has
//! ended, when another node may have taken the work over; one ahead refuses writes that long
//! before the deadline — harmless while that is less than the two thirds of a TTL a node
//! renewing every TTL/3 keeps in hand, every write past it (which shows: nothing gets done,
//! nothing unsafe). So a node reads the
//! database's clock as it starts, refuses to start when that clock is surely behind by more
//! than the margin, and warns when it is ahead, or when the round trip is too slow to tell
//! (docs/membership.md, *What it assumes*). The database's clock is read by `node`.

use chrono::{NaiveDateTime, TimeDelta};

use super::DEADLINE_MARGIN;

/// One reading of the database's clock (`db`) between two of this node's wall clock (`before`,
/// `after`), all UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    /// This node's clock before the query was sent.
    pub before: NaiveDateTime,
    /// The database's clock, read by the query.
    pub db: NaiveDateTime,
    /// This node's clock after the answer came.
    pub after: NaiveDateTime,
}

impl Reading {
    /// Read the database's clock with `db`, between two readings of this node's.
    pub fn take<E>(db: impl FnOnce() -> Result<NaiveDateTime, E>) -> Result<Reading, E> {
        let before = chrono::Utc::now().naive_utc();
        let db = db()?;
        Ok(Reading { before, db, after: chrono::Utc::now().naive_utc() })
    }

    /// How far the database's clock is ahead of this node's (negative: behind), taking the
    /// database's reading at the middle of the round trip.
    pub fn offset(&self) -> TimeDelta {
        self.db - (self.before + self.uncertainty())
    }

    /// Half the round trip: how far [`Reading::offset`] may be from the true offset.
    pub fn uncertainty(&self) -> TimeDelta {
        (self.after - self.before) / 2
    }
}

/// What the readings say about the two clocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within [`DEADLINE_MARGIN`] of each other: the fence holds.
    Agree,
    /// The database's clock is behind by more than the margin, by about this much: writes past
    /// this node's deadline would be let through.
    Behind(TimeDelta),
    /// The database's clock is ahead by more than the margin, by about this much: writes are
    /// refused that early before the deadline.
    Ahead(TimeDelta),
    /// No reading came back within twice the margin (or this node's clock stepped back during
    /// one), or there was none: cannot tell.
    Unsure,
}

/// The reading with the shortest round trip: the one that says the most.
pub fn best(readings: &[Reading]) -> Option<&Reading> {
    readings.iter().min_by_key(|r| r.uncertainty())
}

/// Judge the clocks by the [`best`] reading: a verdict other than [`Verdict::Agree`] only when
/// the offset is past the margin by more than that reading's uncertainty.
pub fn judge(readings: &[Reading]) -> Verdict {
    let margin = TimeDelta::from_std(DEADLINE_MARGIN).unwrap_or(TimeDelta::zero());
    let Some(best) = best(readings) else {
        return Verdict::Unsure;
    };
    let (offset, uncertainty) = (best.offset(), best.uncertainty());
    if uncertainty < TimeDelta::zero() || uncertainty > margin {
        Verdict::Unsure
    } else if -offset - uncertainty > margin {
        Verdict::Behind(-offset)
    } else if offset - uncertainty > margin {
        Verdict::Ahead(offset)
    } else {
        Verdict::Agree
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(n: i64) -> TimeDelta {
        TimeDelta::milliseconds(n)
    }

    /// A reading sent at `t0`, answered `rtt` ms later, the database's clock `offset` ms ahead
    /// at the middle of the round trip.
    fn reading(offset: i64, rtt: i64) -> Reading {
        let t0 = chrono::DateTime::UNIX_EPOCH.naive_utc() + TimeDelta::days(20_000);
        Reading { before: t0, db: t0 + ms(rtt) / 2 + ms(offset), after: t0 + ms(rtt) }
    }

    #[test]
    fn offsets_within_the_margin_agree() {
        for offset in [-250, -100, 0, 100, 250] {
            assert_eq!(judge(&[reading(offset, 2)]), Verdict::Agree, "offset {offset} ms");
        }
    }

    #[test]
    fn a_database_clock_behind_by_more_than_the_margin_is_refused() {
        assert_eq!(judge(&[reading(-400, 2)]), Verdict::Behind(ms(400)));
        assert_eq!(judge(&[reading(-5_000, 0)]), Verdict::Behind(ms(5_000)));
    }

    #[test]
    fn a_database_clock_ahead_is_told() {
        assert_eq!(judge(&[reading(400, 2)]), Verdict::Ahead(ms(400)));
    }

    #[test]
    fn the_shortest_round_trip_decides_and_a_slow_one_cannot() {
        // The slow reading alone cannot tell; with a quick one beside it, the quick one decides.
        assert_eq!(judge(&[reading(-400, 600)]), Verdict::Unsure);
        assert_eq!(judge(&[reading(-400, 600), reading(-400, 4)]), Verdict::Behind(ms(400)));
        assert_eq!(judge(&[reading(-400, 600), reading(0, 4)]), Verdict::Agree);
        assert_eq!(judge(&[]), Verdict::Unsure);
    }

    #[test]
    fn a_clock_that_went_back_during_the_reading_is_unsure() {
        let mut r = reading(0, 2);
        r.after = r.before - ms(1);
        assert_eq!(judge(&[r]), Verdict::Unsure);
    }

    proptest! {
        /// Within its uncertainty a reading never accuses clocks that agree: whatever the true
        /// offset within the margin and wherever in the round trip the database read its clock,
        /// the verdict is never `Behind` or `Ahead`.
        #[test]
        fn clocks_within_the_margin_are_never_accused(
            offset in -250i64..=250, rtt in 0i64..=500, at in 0.0f64..=1.0,
        ) {
            let t0 = chrono::DateTime::UNIX_EPOCH.naive_utc() + TimeDelta::days(20_000);
            let read_at = TimeDelta::microseconds((rtt as f64 * 1000.0 * at) as i64);
            let r = Reading { before: t0, db: t0 + read_at + ms(offset), after: t0 + ms(rtt) };
            prop_assert!(matches!(judge(&[r]), Verdict::Agree | Verdict::Unsure), "{:?}", judge(&[r]));
        }
    }
}
