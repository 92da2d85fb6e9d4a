use chrono::{DateTime, Duration, NaiveDateTime};
use proptest::prelude::*;

use super::*;

fn at(s: &str) -> NaiveDateTime {
    DateTime::parse_from_rfc3339(s).unwrap().naive_utc()
}

fn cron(s: &str) -> Timing {
    Timing::Cron(Box::new(Cron::parse(s).unwrap()))
}

const FIRE_ONCE: Policy = Policy { misfire: Misfire::FireOnce, grace_ms: 1000 };
const SKIP: Policy = Policy { misfire: Misfire::Skip, grace_ms: 1000 };

#[test]
fn cron_errors_name_the_field_and_give_an_example() {
    let e = Cron::parse("*/5 * * * *").unwrap_err();
    assert!(e.contains("seconds first") && e.contains("`0 */5 * * * *`"), "{e}");
    let e = Cron::parse("0 61 * * * *").unwrap_err();
    assert!(e.contains("field 2 (minutes) `61`") && e.contains("0-59") && e.contains("*/5 * * * * *"), "{e}");
    let e = Cron::parse("* * * * Foo *").unwrap_err();
    assert!(e.contains("field 5 (month)"), "{e}");
    let e = Cron::parse("").unwrap_err();
    assert!(e.contains("empty"), "{e}");
    let e = Cron::parse("1 2 3 4 5 6 7 8").unwrap_err();
    assert!(e.contains("8 fields"), "{e}");
    assert_eq!(Cron::parse("  *   * * * * * ").unwrap().as_str(), "* * * * * *");
}

#[test]
fn timing_needs_exactly_one_of_cron_and_every() {
    assert_eq!(Timing::from_parts(Some("* * * * * *"), Some(5)).unwrap_err().field, "cron");
    assert_eq!(Timing::from_parts(None, None).unwrap_err().field, "cron");
    assert_eq!(Timing::from_parts(None, Some(0)).unwrap_err().field, "every_ms");
    assert!(matches!(Timing::from_parts(None, Some(1000)), Ok(Timing::Every(1000))));
}

#[test]
fn fixed_rates_are_aligned_to_the_epoch() {
    let t = Timing::Every(5000);
    assert_eq!(t.next_after(at("2030-01-01T00:00:03.5Z")), Some(at("2030-01-01T00:00:05Z")));
    assert_eq!(t.next_after(at("2030-01-01T00:00:05Z")), Some(at("2030-01-01T00:00:10Z")));
    assert_eq!(t.at_or_after(at("2030-01-01T00:00:05Z")), Some(at("2030-01-01T00:00:05Z")));
    let c = cron("* * * * * *");
    assert_eq!(c.next_after(at("2030-01-01T00:00:03.5Z")), Some(at("2030-01-01T00:00:04Z")));
    assert_eq!(c.at_or_after(at("2030-01-01T00:00:03Z")), Some(at("2030-01-01T00:00:03Z")));
    assert_eq!(c.at_or_after(at("2030-01-01T00:00:03.1Z")), Some(at("2030-01-01T00:00:04Z")));
}

#[test]
fn on_time_firings_fire_each_time() {
    let policy = Policy { misfire: Misfire::FireOnce, grace_ms: 5000 };
    let s = step(&Timing::Every(1000), at("2030-01-01T00:00:01Z"), at("2030-01-01T00:00:02.5Z"), policy);
    let fired: Vec<_> = s.records.iter().map(|r| (r.outcome, r.fire_at)).collect();
    assert_eq!(fired, vec![(Outcome::Fired, at("2030-01-01T00:00:01Z")), (Outcome::Fired, at("2030-01-01T00:00:02Z"))]);
    assert_eq!(s.next_fire_at, Some(at("2030-01-01T00:00:03Z")));
}

#[test]
fn fire_once_fires_the_latest_missed_time_once() {
    // Down from :01 to :10.5 with a 1 s grace: :01..:09 are missed (:09 is 1.5 s late), :10 is not.
    let s = step(&cron("* * * * * *"), at("2030-01-01T00:00:01Z"), at("2030-01-01T00:00:10.5Z"), FIRE_ONCE);
    assert_eq!(
        s.records,
        vec![
            Record {
                outcome: Outcome::Skipped,
                fire_at: at("2030-01-01T00:00:01Z"),
                last_at: at("2030-01-01T00:00:08Z"),
                times: 8
            },
            Record {
                outcome: Outcome::CaughtUp,
                fire_at: at("2030-01-01T00:00:09Z"),
                last_at: at("2030-01-01T00:00:09Z"),
                times: 1
            },
            Record {
                outcome: Outcome::Fired,
                fire_at: at("2030-01-01T00:00:10Z"),
                last_at: at("2030-01-01T00:00:10Z"),
                times: 1
            },
        ]
    );
    assert_eq!(s.next_fire_at, Some(at("2030-01-01T00:00:11Z")));
}

#[test]
fn skip_records_the_missed_span_and_fires_none_of_it() {
    let s = step(&Timing::Every(1000), at("2030-01-01T00:00:01Z"), at("2030-01-01T00:00:10.5Z"), SKIP);
    assert_eq!(s.records[0].outcome, Outcome::Skipped);
    assert_eq!(
        (s.records[0].fire_at, s.records[0].last_at, s.records[0].times),
        (at("2030-01-01T00:00:01Z"), at("2030-01-01T00:00:09Z"), 9)
    );
    assert_eq!(s.records[1].outcome, Outcome::Fired);
    assert_eq!(s.records.len(), 2);
}

#[test]
fn a_cron_with_no_time_left_ends() {
    let c = cron("0 0 0 1 1 * 2031");
    let s = step(&c, at("2031-01-01T00:00:00Z"), at("2031-01-01T00:00:00.2Z"), FIRE_ONCE);
    assert_eq!(s.records.len(), 1);
    assert_eq!(s.next_fire_at, None);
    assert_eq!(first_fire_after(&c, at("2032-01-01T00:00:00Z")), None);
}

#[test]
fn task_keys_are_rfc3339_utc() {
    assert_eq!(task_key(7, at("2030-01-01T00:00:01Z")), "schedule:7:2030-01-01T00:00:01Z");
    assert_eq!(task_key(7, at("2030-01-01T00:00:01.25Z")), "schedule:7:2030-01-01T00:00:01.250Z");
}

fn timings() -> impl Strategy<Value = Timing> {
    prop_oneof![
        (MIN_EVERY_MS..=120_000i64).prop_map(Timing::Every),
        prop::sample::select(vec![
            "* * * * * *",
            "*/5 * * * * *",
            "0 * * * * *",
            "0,30 */2 * * * *",
            "15 10 3 * * Mon-Fri",
            "0 0 0 29 2 *",
        ])
        .prop_map(cron),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// Successive steps tile the grid exactly once: no time doubled, none left out, and every
    /// record is what the policy allows.
    #[test]
    fn steps_tile_the_grid(
        timing in timings(),
        start_ms in 1_900_000_000_000i64..1_950_000_000_000,
        advances in prop::collection::vec(0i64..400_000, 1..8),
        fire_once in any::<bool>(),
        grace_ms in 0i64..120_000,
    ) {
        let policy = Policy { misfire: if fire_once { Misfire::FireOnce } else { Misfire::Skip }, grace_ms };
        let start = DateTime::from_timestamp_millis(start_ms).unwrap().naive_utc();
        let mut next = start;
        let mut now = start;
        let mut expected = timing.at_or_after(start);
        for adv in advances {
            now += Duration::milliseconds(adv);
            // Step until nothing is due (a step may stop at its caps).
            for _ in 0..100_000 {
                let s = step(&timing, next, now, policy);
                let mut fires_in_missed_span = 0;
                for r in &s.records {
                    // Contiguous: each record starts where the grid says.
                    prop_assert_eq!(Some(r.fire_at), expected, "record {:?}", r);
                    prop_assert!(r.last_at >= r.fire_at && r.times >= 1);
                    if r.times == 1 {
                        prop_assert_eq!(r.fire_at, r.last_at);
                    }
                    prop_assert!(r.last_at <= now, "only due times are recorded");
                    let late = now - r.fire_at > Duration::milliseconds(grace_ms);
                    match r.outcome {
                        Outcome::Fired => prop_assert!(!late, "a fired time is within the grace"),
                        Outcome::CaughtUp => {
                            prop_assert!(late && fire_once, "only fire_once catches up, and only missed times");
                            fires_in_missed_span += 1;
                        }
                        Outcome::Skipped => prop_assert!(now - r.last_at > Duration::milliseconds(grace_ms)),
                    }
                    if r.outcome == Outcome::Skipped && r.times > 1 {
                        // Count the span on the grid.
                        let mut t = r.fire_at;
                        for _ in 1..r.times { t = timing.next_after(t).unwrap(); }
                        prop_assert_eq!(t, r.last_at);
                    }
                    expected = timing.next_after(r.last_at);
                }
                prop_assert!(fires_in_missed_span <= 1, "fire_once fires a missed span at most once");
                prop_assert_eq!(s.next_fire_at, expected);
                let fired = s.records.iter().filter(|r| r.outcome == Outcome::Fired).count();
                let capped = fired == MAX_FIRED_PER_STEP
                    || s.records.last().is_some_and(|r| r.outcome == Outcome::Skipped && r.times == MAX_SCAN_PER_STEP);
                match s.next_fire_at {
                    None => break,
                    Some(n) if n > now => { next = n; break; }
                    Some(n) => { prop_assert!(capped, "next_fire_at > now unless a cap stopped the step"); next = n; }
                }
            }
        }
    }

    /// Strictly increasing fire times, and a step never records a time twice.
    #[test]
    fn fire_times_strictly_increase(timing in timings(), start_ms in 1_900_000_000_000i64..1_950_000_000_000, gap in 0i64..5_000_000) {
        let start = DateTime::from_timestamp_millis(start_ms).unwrap().naive_utc();
        let s = step(&timing, start, start + Duration::milliseconds(gap), FIRE_ONCE);
        for w in s.records.windows(2) {
            prop_assert!(w[1].fire_at > w[0].last_at);
        }
        if let (Some(last), Some(next)) = (s.records.last(), s.next_fire_at) {
            prop_assert!(next > last.last_at);
        }
    }
}
