//! The command line's names for the API's fields: one table per command, and the rewriting of
//! the API's error messages with them.
//!
//! Why it exists: the API names its fields (`shard_total`, `app_id`, `?force=true`) and its
//! messages say what to change in a request body. A CLI user did not write a body: they typed
//! `--shards`, `--app`, `--force`. Each command hands its table to
//! [`super::client::CliError::with_flags`], so every message names the flag to change; this is
//! the one place where the two vocabularies meet.
//!
//! It must never change what a message says, only the names in it: the node decides what is
//! wrong and why.

/// One API name and what sets it on the command line: a flag (`--shards`), an argument
/// (`NAME`), or, for a name that is not an identifier (`?force=true`), the text to write instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flag {
    /// The API's field (or query text).
    pub api: &'static str,
    /// The command line's.
    pub cli: &'static str,
}

const fn f(api: &'static str, cli: &'static str) -> Flag {
    Flag { api, cli }
}

/// `rota workflow create`.
pub const WORKFLOW_CREATE: &[Flag] = &[f("name", "NAME"), f("max_concurrent_runs", "--max-runs")];

/// `rota app create`.
pub const APP_CREATE: &[Flag] = &[
    f("name", "NAME"),
    f("driver", "--driver"),
    f("spec", "--spec"),
    f("selector", "--selector"),
    f("restart_policy", "--restart-policy"),
    f("max_restarts", "--max-restarts"),
    f("monitor_interval_ms", "--monitor-interval-ms"),
    f("traffic_group", "--traffic-group"),
];

/// `rota app update`.
pub const APP_UPDATE: &[Flag] = &[
    f("spec", "--spec"),
    f("selector", "--selector"),
    f("restart_policy", "--restart-policy"),
    f("max_restarts", "--max-restarts"),
    f("monitor_interval_ms", "--monitor-interval-ms"),
    f("traffic_group", "--traffic-group"),
];

/// `rota app delete`: the API's conflict says how to force it in a URL.
pub const APP_DELETE: &[Flag] = &[f("?force=true", "--force")];

/// `rota task submit`.
pub const TASK_SUBMIT: &[Flag] = &[
    f("action", "ACTION"),
    f("app_id", "--app"),
    f("payload", "--payload"),
    f("priority", "--priority"),
    f("run_after", "--run-after"),
    f("max_attempts", "--max-attempts"),
    f("idempotency_key", "--idempotency-key"),
    f("routing", "--routing"),
    f("shard_total", "--shards"),
    f("timeout_ms", "--timeout-ms"),
    f("selector", "--selector"),
    f("parent_id", "--parent"),
];

/// `rota task list` and `rota task children`.
pub const TASK_LIST: &[Flag] = &[
    f("status", "--status"),
    f("app_id", "--app"),
    f("owner", "--owner"),
    f("since", "--since"),
    f("until", "--until"),
    f("limit", "--limit"),
    f("parent_id", "ID"),
];

/// `rota app list`.
pub const APP_LIST: &[Flag] =
    &[f("state", "--state"), f("driver", "--driver"), f("owner", "--owner"), f("limit", "--limit")];

/// `rota schedule create`.
pub const SCHEDULE_CREATE: &[Flag] = &[
    f("name", "NAME"),
    f("cron", "--cron"),
    f("every_ms", "--every"),
    f("app_id", "--app"),
    f("workflow_id", "--workflow"),
    f("payload", "--payload"),
    f("routing", "--routing"),
    f("shard_total", "--shards"),
    f("timeout_ms", "--timeout"),
    f("max_attempts", "--max-attempts"),
    f("misfire", "--misfire"),
    f("misfire_grace_ms", "--misfire-grace"),
    f("enabled", "--paused"),
];

/// `rota channel create`.
pub const CHANNEL_CREATE: &[Flag] = &[
    f("name", "NAME"),
    f("kind", "--kind"),
    f("config.url", "--endpoint"),
    f("config.secret", "--secret"),
    f("config.timeout_ms", "--timeout"),
    f("config", "--config"),
];

/// `rota alarm create`.
pub const ALARM_CREATE: &[Flag] = &[
    f("name", "NAME"),
    f("on", "--on"),
    f("channels", "--channel"),
    f("filter", "--app/--group/--node-label/--state"),
    f("throttle_s", "--throttle"),
];

/// `rota alarm deliveries`.
pub const DELIVERIES: &[Flag] = &[f("channel", "--channel"), f("status", "--status"), f("limit", "--limit")];

/// `rota schedule list`, `rota events` and the other lists: paging.
pub const LIMIT: &[Flag] = &[f("limit", "--limit")];

/// `rota events`.
pub const EVENTS: &[Flag] =
    &[f("app_id", "--app"), f("task_id", "--task"), f("kind", "--kind"), f("node_id", "--node"), f("limit", "--limit")];

/// `rota traffic set` and `rota traffic delete`.
pub const TRAFFIC_SET: &[Flag] = &[
    f("preferred", "--preferred"),
    f("backup", "--backup"),
    f("percent", "--percent"),
    f("label", "--label"),
    f("sticky", "--no-sticky"),
    f("auto_failover", "--no-failover"),
    f("auto_failback", "--no-failback"),
    f("reason", "--reason"),
    f("group", "GROUP"),
];

/// `rota cluster owner`.
pub const OWNER: &[Flag] = &[f("key", "KEY"), f("selector", "--selector")];

/// True for a name that can stand in a sentence as a word (`shard_total`), false for query text.
fn is_identifier(s: &str) -> bool {
    s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The command line's name of an API field: the flag, or `` `sub` in --flag `` for a field inside
/// a JSON flag (`spec.command` → `` `command` in --spec ``), or the field itself when no flag
/// sets it.
pub fn field(api_field: &str, flags: &[Flag]) -> String {
    for fl in flags.iter().filter(|fl| is_identifier(fl.api)) {
        if api_field == fl.api {
            return fl.cli.to_string();
        }
        if let Some(rest) = api_field.strip_prefix(fl.api) {
            if let Some(sub) = rest.strip_prefix('.') {
                return format!("`{sub}` in {}", fl.cli);
            }
            if rest.starts_with('[') {
                return format!("`{}{rest}` in {}", fl.api, fl.cli);
            }
        }
    }
    api_field.to_string()
}

/// `message` with the API's names written as the flags that set them: query text as given
/// (`?force=true` → `--force`); a field that names a value (`` routing `sharding` `` →
/// `` --routing `sharding` ``); and every multi-word field name (`shard_total`), which no
/// sentence uses as an ordinary word. Arguments (`NAME`) are left as the API says them.
pub fn rewrite(message: &str, flags: &[Flag]) -> String {
    let mut out = message.to_string();
    for fl in flags {
        if !is_identifier(fl.api) {
            out = out.replace(fl.api, fl.cli);
        } else if fl.cli.starts_with("--") {
            out = replace_words(&out, fl.api, fl.cli, !fl.api.contains('_'));
        }
    }
    out
}

/// Replace `word` where it stands as a whole word (and, with `before_value`, only where a
/// `` `value` `` follows it).
fn replace_words(text: &str, word: &str, with: &str, before_value: bool) -> String {
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(word) {
        let (before, after) = (&rest[..i], &rest[i + word.len()..]);
        let starts = before.chars().next_back().is_none_or(|c| !is_word(c));
        let ends = after.chars().next().is_none_or(|c| !is_word(c));
        let valued = !before_value || after.starts_with(" `");
        out.push_str(before);
        out.push_str(if starts && ends && valued { with } else { word });
        rest = after;
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_become_flags() {
        assert_eq!(field("shard_total", TASK_SUBMIT), "--shards");
        assert_eq!(field("app_id", TASK_SUBMIT), "--app");
        assert_eq!(field("spec.command", APP_CREATE), "`command` in --spec");
        assert_eq!(field("spec.env.A", APP_UPDATE), "`env.A` in --spec");
        assert_eq!(field("payload.shard_params", TASK_SUBMIT), "`shard_params` in --payload");
        assert_eq!(field("spec[0]", APP_CREATE), "`spec[0]` in --spec");
        // A field no flag sets is named as the API names it.
        assert_eq!(field("whatever", TASK_SUBMIT), "whatever");
        // `name` is no prefix of `name_x`.
        assert_eq!(field("names", APP_CREATE), "names");
    }

    #[test]
    fn messages_name_flags() {
        assert_eq!(rewrite("only with routing `sharding`", TASK_SUBMIT), "only with --routing `sharding`");
        assert_eq!(
            rewrite("stop it first, or delete with ?force=true", APP_DELETE),
            "stop it first, or delete with --force"
        );
        assert_eq!(
            rewrite("set shard_total or payload.shard_params", TASK_SUBMIT),
            "set --shards or payload.shard_params"
        );
        // Ordinary words stay words.
        assert_eq!(
            rewrite("the routing is fine; a spec that runs", APP_CREATE),
            "the routing is fine; a spec that runs"
        );
        assert_eq!(rewrite("my_shard_total_x", TASK_SUBMIT), "my_shard_total_x");
    }

    /// Every table maps each API name once, to a flag or an argument.
    #[test]
    fn tables_are_well_formed() {
        for table in [
            APP_CREATE,
            APP_UPDATE,
            APP_DELETE,
            APP_LIST,
            TASK_SUBMIT,
            TASK_LIST,
            SCHEDULE_CREATE,
            CHANNEL_CREATE,
            ALARM_CREATE,
            DELIVERIES,
            LIMIT,
            EVENTS,
            TRAFFIC_SET,
            OWNER,
        ] {
            let mut seen = std::collections::HashSet::new();
            for fl in table {
                assert!(seen.insert(fl.api), "{} twice", fl.api);
                assert!(fl.cli.starts_with("--") || fl.cli.chars().all(|c| c.is_ascii_uppercase()), "{}", fl.cli);
            }
        }
    }
}
