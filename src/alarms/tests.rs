use super::*;
use chrono::NaiveDate;
use proptest::prelude::*;

fn at(s: i64) -> NaiveDateTime {
    NaiveDate::from_ymd_opt(2026, 12, 13).unwrap().and_hms_opt(0, 0, 0).unwrap() + chrono::Duration::seconds(s)
}

fn ev(id: i64, kind: &str, app: Option<i64>) -> Event {
    Event {
        id,
        at: at(id),
        kind: kind.into(),
        app_id: app,
        task_id: Some(id * 10),
        node_id: Some("n1".into()),
        message: format!("task {} failed", id * 10),
        data: json!({}),
    }
}

fn rule(id: i64, kinds: &[&str], channels: &[i64], throttle_s: i64) -> Rule {
    Rule {
        id,
        kinds: kinds.iter().map(|k| k.to_string()).collect(),
        filter: Filter::default(),
        channels: channels.to_vec(),
        throttle_s,
    }
}

#[test]
fn an_event_goes_once_to_a_channel_whatever_the_number_of_rules() {
    let rules = [rule(1, &["task.failed"], &[7], 0), rule(2, &["task.failed"], &[7, 8], 0)];
    let out = plan(7, &[ev(1, "task.failed", None), ev(2, "app.state", None)], &rules, &Context::default());
    assert_eq!(out, vec![Planned::Each { event_id: 1, rule_id: 1 }]);
    assert!(plan(9, &[ev(1, "task.failed", None)], &rules, &Context::default()).is_empty());
}

#[test]
fn filters_on_application_group_labels_and_state() {
    let mut cx = Context::default();
    cx.apps.insert(5, ("billing".into(), Some("eu".into())));
    cx.apps.insert(6, ("other".into(), None));
    cx.labels.insert("n1".into(), [("dc".to_string(), "dc1".to_string())].into());
    let mut r = rule(1, &["task.failed", "app.state"], &[1], 0);
    r.filter.apps = vec!["billing".into()];
    assert!(r.matches(&ev(1, "task.failed", Some(5)), &cx));
    assert!(!r.matches(&ev(1, "task.failed", Some(6)), &cx));
    assert!(!r.matches(&ev(1, "task.failed", None), &cx));
    r.filter.apps.clear();
    r.filter.traffic_groups = vec!["eu".into()];
    assert!(r.matches(&ev(1, "task.failed", Some(5)), &cx));
    assert!(!r.matches(&ev(1, "task.failed", Some(6)), &cx));
    let mut switch = ev(1, "traffic.failover", None);
    switch.data = json!({"group": "eu"});
    r.kinds.push("traffic.failover".into());
    assert!(r.matches(&switch, &cx));
    r.filter.traffic_groups.clear();
    r.filter.node_labels = [("dc".to_string(), "dc1".to_string())].into();
    assert!(r.matches(&ev(1, "task.failed", None), &cx));
    let mut elsewhere = ev(1, "task.failed", None);
    elsewhere.node_id = Some("n2".into());
    assert!(!r.matches(&elsewhere, &cx));
    r.filter.node_labels.clear();
    r.filter.states = vec!["failed".into()];
    let mut st = ev(1, "app.state", Some(5));
    st.data = json!({"state": "running"});
    assert!(!r.matches(&st, &cx));
    st.data = json!({"state": "failed"});
    assert!(r.matches(&st, &cx));
}

#[test]
fn a_throttled_rule_folds_by_key_and_an_unthrottled_one_wins() {
    let events: Vec<Event> = (1..=100).map(|i| ev(i, "task.failed", Some(if i % 2 == 0 { 1 } else { 2 }))).collect();
    let out = plan(3, &events, &[rule(4, &["task.failed"], &[3], 60)], &Context::default());
    assert_eq!(out.len(), 2);
    let counts: Vec<i64> = out.iter().map(|p| if let Planned::Fold { count, .. } = p { *count } else { 0 }).collect();
    assert_eq!(counts, vec![50, 50]);
    let out = plan(
        3,
        &events,
        &[rule(4, &["task.failed"], &[3], 60), rule(9, &["task.failed"], &[3], 0)],
        &Context::default(),
    );
    assert_eq!(out.len(), 100);
}

#[test]
fn the_cursor_waits_at_a_young_gap_and_passes_an_old_one() {
    let mut g = Gaps::default();
    assert_eq!(g.advance(10, &[11, 12, 14, 15], 0, 1000), (12, 2));
    assert_eq!(g.advance(12, &[14, 15], 999, 1000), (12, 0));
    assert_eq!(g.advance(12, &[13, 14, 15], 999, 1000), (15, 3));
    assert_eq!(g.advance(15, &[17], 1000, 1000), (15, 0));
    assert_eq!(g.advance(15, &[17], 2000, 1000), (17, 1));
    // History below the first event is no transaction in flight.
    assert_eq!(Gaps::default().advance(0, &[50_000], 0, 1000), (50_000, 1));
}

#[test]
fn signatures_are_hmac_sha256() {
    // RFC 4231 test case 2.
    assert_eq!(
        signature("Jefe", b"what do ya want for nothing?"),
        "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
}

#[test]
fn backoff_doubles_to_its_cap() {
    let (b, m) = (Duration::from_secs(1), Duration::from_secs(10));
    let waits: Vec<u64> = (1..=6).map(|a| backoff(a, b, m).as_secs()).collect();
    assert_eq!(waits, vec![1, 2, 4, 8, 10, 10]);
    assert_eq!(backoff(i32::MAX, b, m), m);
}

#[test]
fn every_kind_renders_its_body_and_a_folded_message_says_its_count() {
    let m = Message {
        delivery_id: 42,
        channel: "ops".into(),
        rule: Some("failures".into()),
        event: ev(3, "task.failed", Some(5)),
        app: Some("billing".into()),
        folded: 100,
        last_event_id: Some(120),
        throttle_s: 60,
    };
    assert!(m.title().contains("[billing]") && m.title().contains("100 events"), "{}", m.title());
    assert_eq!(m.webhook_body()["delivery_id"], "42");
    assert_eq!(m.webhook_body()["folded"], 100);
    assert_eq!(m.robot_body(ChannelKind::Slack, None)["text"], m.text());
    assert_eq!(m.robot_body(ChannelKind::Dingtalk, None)["text"]["content"], m.text());
    assert_eq!(m.robot_body(ChannelKind::Wecom, None)["msgtype"], "text");
    let f = m.robot_body(ChannelKind::Feishu, Some((1700000000, "s".into())));
    assert_eq!((f["msg_type"].as_str(), f["timestamp"].as_str()), (Some("text"), Some("1700000000")));
}

#[test]
fn robots_answering_200_with_an_error_code_are_not_delivered() {
    assert!(accepted(ChannelKind::Dingtalk, 200, r#"{"errcode":0,"errmsg":"ok"}"#).is_ok());
    assert!(accepted(ChannelKind::Dingtalk, 200, r#"{"errcode":310000,"errmsg":"sign not match"}"#).is_err());
    assert!(accepted(ChannelKind::Feishu, 200, r#"{"code":19021,"msg":"sign match fail"}"#).is_err());
    assert!(accepted(ChannelKind::Webhook, 500, "").is_err());
    assert!(accepted(ChannelKind::Webhook, 204, "").is_ok());
}

#[test]
fn configs_are_checked_field_by_field() {
    let fields = |k: ChannelKind, c: Value| k.check(&c).into_iter().map(|(f, _)| f).collect::<Vec<_>>();
    assert_eq!(fields(ChannelKind::Webhook, json!({})), vec!["config.url"]);
    assert_eq!(fields(ChannelKind::Webhook, json!({"url": "ftp://x"})), vec!["config.url"]);
    assert_eq!(fields(ChannelKind::Webhook, json!({"url": "http://x/h", "colour": 1})), vec!["config.colour"]);
    assert!(fields(ChannelKind::Webhook, json!({"url": "http://x:1/h", "secret": "s"})).is_empty());
    assert_eq!(fields(ChannelKind::Email, json!({"host": "mx", "from": "a@b"})), vec!["config.to"]);
    assert_eq!(fields(ChannelKind::Email, json!({"host": "mx", "from": "a@b", "to": ["nope"]})), vec!["config.to.0"]);
    assert!(ChannelKind::parse("pager").is_err());
}

proptest! {
    /// Whatever the batch, every matching event is in exactly one planned delivery, and folds
    /// count what they hold.
    #[test]
    fn plans_cover_each_matching_event_once(kinds in proptest::collection::vec(0u8..3, 0..60), apps in proptest::collection::vec(0i64..3, 60), throttle in 0i64..2) {
        let names = ["task.failed", "app.failed", "app.state"];
        let events: Vec<Event> = kinds.iter().enumerate().map(|(i, k)| ev(i as i64 + 1, names[*k as usize], Some(apps[i]))).collect();
        let rules = [rule(1, &["task.failed", "app.failed"], &[1], throttle * 30)];
        let out = plan(1, &events, &rules, &Context::default());
        let matching = events.iter().filter(|e| e.kind != "app.state").count() as i64;
        let covered: i64 = out.iter().map(|p| match p { Planned::Each { .. } => 1, Planned::Fold { count, .. } => *count }).sum();
        prop_assert_eq!(covered, matching);
        if throttle > 0 {
            prop_assert!(out.len() <= 6);
        }
    }

    /// The cursor never passes an id it has not seen unless that id has been missing for the
    /// grace, and never moves back.
    #[test]
    fn the_cursor_never_skips_a_young_gap(present in proptest::collection::vec(any::<bool>(), 1..40), now in 0u64..3000) {
        let ids: Vec<i64> = present.iter().enumerate().filter(|(_, p)| **p).map(|(i, _)| i as i64 + 1).collect();
        let mut g = Gaps::default();
        let (to, taken) = g.advance(0, &ids, now, 5000);
        prop_assert!(to >= 0);
        prop_assert_eq!(taken, ids.iter().filter(|i| **i <= to).count());
        // Below the new cursor, every id was present: the grace has not passed.
        prop_assert!((1..=to).all(|i| ids.contains(&i)));
    }
}

#[test]
fn smtp_tls_mode_and_port_follow_each_other() {
    let of = |c: Value| SmtpTls::of(&c);
    let fields = |k: ChannelKind, c: Value| k.check(&c).into_iter().map(|(f, _)| f).collect::<Vec<_>>();
    assert_eq!(of(json!({})), (SmtpTls::None, 25));
    assert_eq!(of(json!({"port": 587})), (SmtpTls::StartTls, 587));
    assert_eq!(of(json!({"port": 465})), (SmtpTls::Tls, 465));
    assert_eq!(of(json!({"port": 2525})), (SmtpTls::None, 2525));
    assert_eq!(of(json!({"tls": "starttls"})), (SmtpTls::StartTls, 587));
    assert_eq!(of(json!({"tls": "tls"})), (SmtpTls::Tls, 465));
    assert_eq!(of(json!({"tls": "none", "port": 587})), (SmtpTls::None, 587));
    assert_eq!(of(json!({"tls": "starttls", "port": 2525})), (SmtpTls::StartTls, 2525));
    let base = json!({"host": "mx", "from": "a@b", "to": ["c@d"]});
    let with = |k: &str, v: Value| {
        let mut c = base.clone();
        c[k] = v;
        c
    };
    assert!(ChannelKind::Email.check(&with("tls", json!("starttls"))).is_empty());
    assert!(ChannelKind::Email.check(&with("ca_file", json!("/etc/rota/ca.pem"))).is_empty());
    assert_eq!(fields(ChannelKind::Email, with("tls", json!("ssl"))), vec!["config.tls"]);
    assert_eq!(fields(ChannelKind::Email, with("ca_file", json!(""))), vec!["config.ca_file"]);
    assert_eq!(fields(ChannelKind::Slack, json!({"url": "https://x/y", "ca_file": 3})), vec!["config.ca_file"]);
}
