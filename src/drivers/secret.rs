//! Secrets in specs: where a spec holds them, the spec as every read shows it (each secret
//! replaced by [`PLACEHOLDER`]), and a spec sent back with placeholders completed from the
//! stored one (docs/api.md#secrets, docs/drivers.md#secrets).
//!
//! Why it exists: specs are written by admins but read by anyone with a read token, the CLI and
//! the logs of whoever calls the API; credentials in them (an `Authorization` header, a password
//! in a URL, an `env` value) must be write-only. The redacted spec must still be a spec an admin
//! can edit and send back: a placeholder sent back keeps the stored value, so a read, edit and
//! write round trip never loses a credential.
//!
//! Which fields are secret is each driver's knowledge ([`super::Driver::secrets`]); a spec may
//! mark more with its own `secrets` list of JSON pointers ([`check_marks`]). Everything here is
//! pure: no I/O, no registry.
//!
//! Must never: quote a secret in an error (errors name the field, never its value); leave a
//! placeholder at a secret location in a merged spec (it would reach a driver as the value).

use serde_json::Value;

use super::spec::problem;
use super::SpecError;

/// What every read shows in place of a secret, and what an update sends to keep one.
pub const PLACEHOLDER: &str = "***";

/// The spec field, shared by every driver, that marks more fields as secret.
pub const MARKS: &str = "secrets";

/// Most pointers a spec may mark.
const MAX_MARKS: usize = 64;

/// A place in a spec that holds a secret.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Secret {
    /// The whole value at this JSON pointer (RFC 6901).
    Whole(String),
    /// Inside the URL (a string) at this JSON pointer: the password of its user info (or the
    /// whole user info when it has no `:`), and the value of every credential-looking query
    /// parameter ([`is_credential_param`]).
    UrlParts(String),
}

impl Secret {
    fn pointer(&self) -> &str {
        match self {
            Secret::Whole(p) | Secret::UrlParts(p) => p,
        }
    }
}

/// A JSON pointer to `segments` (escaped per RFC 6901).
pub fn pointer(segments: &[&str]) -> String {
    segments.iter().map(|s| format!("/{}", s.replace('~', "~0").replace('/', "~1"))).collect()
}

/// `env` of `process` and `shell`: every value is secret (a name is not). An `env` that is not
/// an object (an invalid spec) is hidden whole.
pub fn env_values(spec: &Value) -> Vec<Secret> {
    match spec.get("env") {
        Some(Value::Object(vars)) => vars.keys().map(|name| Secret::Whole(pointer(&["env", name]))).collect(),
        Some(_) => vec![Secret::Whole(pointer(&["env"]))],
        None => Vec::new(),
    }
}

/// The pointers of the spec's `secrets` list that are well-formed (the validator reports the
/// others); they hide whatever they point to.
pub fn marked(spec: &Value) -> Vec<Secret> {
    let Some(Value::Array(marks)) = spec.get(MARKS) else { return Vec::new() };
    marks
        .iter()
        .filter_map(Value::as_str)
        .filter(|p| mark_problem(spec, p).is_none())
        .map(|p| Secret::Whole(p.to_string()))
        .collect()
}

/// Every secret of `spec`: the driver's (`by_driver`) and the spec's marks, sorted, each place
/// once. A place hidden whole is not also searched as a URL.
pub fn all(by_driver: Vec<Secret>, spec: &Value) -> Vec<Secret> {
    let mut secrets = by_driver;
    secrets.extend(marked(spec));
    secrets.sort();
    secrets.dedup();
    let whole: Vec<String> =
        secrets.iter().filter_map(|s| if let Secret::Whole(p) = s { Some(p.clone()) } else { None }).collect();
    secrets.retain(|s| !matches!(s, Secret::UrlParts(p) if whole.contains(p)));
    secrets
}

/// Fail closed: when the driver is unknown nobody knows where its secrets are, so every string
/// (and every non-JSON text) is hidden.
pub fn redact_everything(spec: &Value) -> Value {
    match spec {
        Value::String(_) => Value::String(PLACEHOLDER.into()),
        Value::Array(items) => Value::Array(items.iter().map(redact_everything).collect()),
        Value::Object(fields) => Value::Object(fields.iter().map(|(k, v)| (k.clone(), redact_everything(v))).collect()),
        other => other.clone(),
    }
}

/// `spec` as a read shows it: every secret replaced by [`PLACEHOLDER`].
pub fn redact(spec: &Value, secrets: &[Secret]) -> Value {
    let mut shown = spec.clone();
    for secret in secrets {
        let Some(value) = shown.pointer_mut(secret.pointer()) else { continue };
        match secret {
            Secret::Whole(_) => *value = Value::String(PLACEHOLDER.into()),
            Secret::UrlParts(_) => {
                if let Value::String(url) = value {
                    *url = redact_url(url);
                }
            }
        }
    }
    shown
}

/// `sent` with every placeholder at one of its secret places (`secrets`, found in `sent`)
/// replaced by what `stored` holds there. `stored` is None for a new application: then any
/// placeholder is an error, as is one where `stored` holds nothing to keep. Errors name the
/// field (`start.headers.Authorization`, `run.url`) and never a value.
pub fn merge(sent: &Value, stored: Option<&Value>, secrets: &[Secret]) -> Result<Value, Vec<SpecError>> {
    let mut merged = sent.clone();
    let mut errors = Vec::new();
    for secret in secrets {
        let p = secret.pointer();
        let Some(value) = merged.pointer_mut(p) else { continue };
        let kept = stored.and_then(|s| s.pointer(p));
        match secret {
            Secret::Whole(_) if value.as_str() == Some(PLACEHOLDER) => match kept {
                Some(old) => *value = old.clone(),
                None => problem(&mut errors, field_name(sent, p), nothing_stored(stored)),
            },
            Secret::Whole(_) => {}
            Secret::UrlParts(_) => {
                let Value::String(url) = value else { continue };
                match merge_url(url, kept.and_then(Value::as_str)) {
                    Ok(full) => *url = full,
                    Err(parts) => {
                        let field = field_name(sent, p);
                        for part in parts {
                            problem(&mut errors, &field, format!("{part}: {}", nothing_stored(stored)));
                        }
                    }
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(merged)
    } else {
        Err(errors)
    }
}

fn nothing_stored(stored: Option<&Value>) -> String {
    match stored {
        None => format!("`{PLACEHOLDER}` keeps a stored secret, and a new application has none: send the value"),
        Some(_) => format!("`{PLACEHOLDER}` keeps the stored secret, but none is stored here: send the value"),
    }
}

/// Check the spec's `secrets` list (`value`): an array of at most 64 JSON pointers, each to a
/// string of this spec outside the list itself.
pub(crate) fn check_marks(errors: &mut Vec<SpecError>, spec: &Value, value: &Value) {
    let Some(marks) = value.as_array() else {
        return problem(
            errors,
            MARKS,
            "must be an array of JSON pointers to the spec's secret fields, e.g. [\"/run/body/password\"]",
        );
    };
    if marks.len() > MAX_MARKS {
        problem(errors, MARKS, format!("at most {MAX_MARKS} pointers"));
    }
    for (i, mark) in marks.iter().enumerate() {
        let field = format!("{MARKS}[{i}]");
        match mark.as_str() {
            None => problem(errors, field, "must be a JSON pointer (a string starting with /)"),
            Some(p) => {
                if let Some(message) = mark_problem(spec, p) {
                    problem(errors, field, message);
                }
            }
        }
    }
}

fn mark_problem(spec: &Value, p: &str) -> Option<&'static str> {
    if !p.starts_with('/') {
        return Some("must be a JSON pointer to a field of this spec, starting with /");
    }
    if p == "/secrets" || p.starts_with("/secrets/") {
        return Some("must point to a field outside `secrets`");
    }
    match spec.pointer(p) {
        None => Some("points to no field of this spec (remove it with the field)"),
        Some(Value::String(_)) => None,
        Some(_) => Some("must point to a string field (a secret is a string)"),
    }
}

/// The field a pointer names, as validators name fields: `start.headers.Authorization`,
/// `command[2]`.
fn field_name(spec: &Value, p: &str) -> String {
    let mut name = String::new();
    let mut at = Some(spec);
    for raw in p.split('/').skip(1) {
        let segment = raw.replace("~1", "/").replace("~0", "~");
        match at {
            Some(Value::Array(items)) => {
                name.push_str(&format!("[{segment}]"));
                at = segment.parse::<usize>().ok().and_then(|i| items.get(i));
            }
            other => {
                if !name.is_empty() {
                    name.push('.');
                }
                at = other.and_then(|v| v.get(&segment));
                name.push_str(&segment);
            }
        }
    }
    name
}

/// A query parameter whose value is a credential, by its name: compared in lower case without
/// `-`, `_` or `.`, the names `key`, `pwd`, `pass`, `sig`, and any name containing `token`,
/// `secret`, `password`, `passwd`, `apikey`, `accesskey`, `privatekey`, `signature`, `auth` or
/// `credential` (docs/drivers.md#secrets). Hiding a harmless parameter costs only its display.
pub fn is_credential_param(name: &str) -> bool {
    const EXACT: [&str; 4] = ["key", "pwd", "pass", "sig"];
    const CONTAINED: [&str; 10] = [
        "token",
        "secret",
        "password",
        "passwd",
        "apikey",
        "accesskey",
        "privatekey",
        "signature",
        "auth",
        "credential",
    ];
    let n: String = name.chars().filter(|c| !matches!(c, '-' | '_' | '.')).collect::<String>().to_ascii_lowercase();
    EXACT.contains(&n.as_str()) || CONTAINED.iter().any(|c| n.contains(c))
}

/// A URL cut into the pieces that may hold credentials; the pieces put back together give the
/// URL exactly as it was ([`Url::join`]).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Url<'a> {
    /// `scheme://`, or "" when the URL has no authority.
    scheme: &'a str,
    userinfo: Option<&'a str>,
    /// Host, port and path.
    rest: &'a str,
    query: Option<&'a str>,
    fragment: Option<&'a str>,
}

impl<'a> Url<'a> {
    fn split(url: &'a str) -> Url<'a> {
        let (url, fragment) = match url.split_once('#') {
            Some((u, f)) => (u, Some(f)),
            None => (url, None),
        };
        let (url, query) = match url.split_once('?') {
            Some((u, q)) => (u, Some(q)),
            None => (url, None),
        };
        let Some(start) = url.find("://").map(|i| i + 3) else {
            return Url { scheme: "", userinfo: None, rest: url, query, fragment };
        };
        let (scheme, after) = url.split_at(start);
        let authority_end = after.find('/').unwrap_or(after.len());
        match after[..authority_end].rfind('@') {
            Some(at) => Url { scheme, userinfo: Some(&after[..at]), rest: &after[at + 1..], query, fragment },
            None => Url { scheme, userinfo: None, rest: after, query, fragment },
        }
    }

    fn join(&self, userinfo: Option<&str>, query: Option<&str>) -> String {
        let mut url = self.scheme.to_string();
        if let Some(u) = userinfo {
            url.push_str(u);
            url.push('@');
        }
        url.push_str(self.rest);
        if let Some(q) = query {
            url.push('?');
            url.push_str(q);
        }
        if let Some(f) = self.fragment {
            url.push('#');
            url.push_str(f);
        }
        url
    }
}

/// The user info's public part (`user:`, or "" when it has no `:`) and its secret.
fn userinfo_parts(userinfo: &str) -> (&str, &str) {
    match userinfo.find(':') {
        Some(colon) => userinfo.split_at(colon + 1),
        None => ("", userinfo),
    }
}

/// `(name, value)` of each query parameter, in order (the value None when there is no `=`).
fn params(query: &str) -> Vec<(&str, Option<&str>)> {
    query
        .split('&')
        .map(|p| match p.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (p, None),
        })
        .collect()
}

fn join_params(params: &[(&str, Option<String>)]) -> String {
    params
        .iter()
        .map(|(n, v)| match v {
            Some(v) => format!("{n}={v}"),
            None => n.to_string(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// `url` with its user info's secret and its credential parameters' values replaced by the
/// placeholder.
pub fn redact_url(url: &str) -> String {
    replace_url_secrets(url, |_| PLACEHOLDER.to_string())
}

/// `url` with each secret part (the user info's secret, each credential parameter's value)
/// replaced by `by(part)`.
fn replace_url_secrets(url: &str, by: impl Fn(&str) -> String) -> String {
    let parts = Url::split(url);
    let userinfo = parts.userinfo.map(|u| {
        let (public, secret) = userinfo_parts(u);
        format!("{public}{}", by(secret))
    });
    let query = parts.query.map(|q| {
        let hidden: Vec<(&str, Option<String>)> = params(q)
            .into_iter()
            .map(|(n, v)| (n, v.map(|v| if is_credential_param(n) { by(v) } else { v.to_string() })))
            .collect();
        join_params(&hidden)
    });
    parts.join(userinfo.as_deref(), query.as_deref())
}

/// `sent` with each placeholder where [`redact_url`] puts one replaced by `stored`'s value
/// there (the k-th parameter of a name by the k-th of that name). Err: what has no stored value.
fn merge_url(sent: &str, stored: Option<&str>) -> Result<String, Vec<String>> {
    let parts = Url::split(sent);
    let old = stored.map(Url::split);
    let mut missing = Vec::new();
    let userinfo = parts.userinfo.map(|u| {
        let (public, secret) = userinfo_parts(u);
        if secret != PLACEHOLDER {
            return u.to_string();
        }
        // The stored user info must have the same shape: a password for a password, a whole
        // user info for a whole one.
        let kept = old
            .as_ref()
            .and_then(|o| o.userinfo)
            .map(userinfo_parts)
            .filter(|(p, _)| p.is_empty() == public.is_empty());
        match kept {
            Some((_, secret)) => format!("{public}{secret}"),
            None => {
                missing.push("the URL's user info".to_string());
                u.to_string()
            }
        }
    });
    let query = parts.query.map(|q| {
        let old_params = old.as_ref().and_then(|o| o.query).map(params).unwrap_or_default();
        let sent_params = params(q);
        let merged: Vec<(&str, Option<String>)> = sent_params
            .iter()
            .enumerate()
            .map(|(i, &(name, value))| {
                if value != Some(PLACEHOLDER) || !is_credential_param(name) {
                    return (name, value.map(str::to_string));
                }
                let nth = sent_params[..i].iter().filter(|(n, _)| *n == name).count();
                match old_params.iter().filter(|(n, _)| *n == name).nth(nth).and_then(|(_, v)| *v) {
                    Some(v) => (name, Some(v.to_string())),
                    None => {
                        missing.push(format!("query parameter `{name}`"));
                        (name, value.map(str::to_string))
                    }
                }
            })
            .collect();
        join_params(&merged)
    });
    if missing.is_empty() {
        Ok(parts.join(userinfo.as_deref(), query.as_deref()))
    } else {
        Err(missing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn http_secrets(spec: &Value) -> Vec<Secret> {
        use crate::drivers::Driver;
        all(crate::drivers::http::HttpDriver::new().secrets(spec), spec)
    }

    #[test]
    fn urls_split_and_join_back_exactly() {
        for url in [
            "http://u:p@h:1/a?b=c&token=x#f",
            "http://h/a",
            "http://tok@h",
            "http://h/p@q",
            "http://h?x",
            "no-scheme?token=1",
            "",
            "http://a@b@h/?#",
        ] {
            let parts = Url::split(url);
            assert_eq!(parts.join(parts.userinfo, parts.query), url);
        }
        assert_eq!(Url::split("http://h/p@q").userinfo, None, "an @ in the path is not user info");
    }

    #[test]
    fn a_url_hides_its_password_and_credential_parameters_only() {
        assert_eq!(
            redact_url("http://ops:hunter2@h:8081/x?page=2&token=abc&API_KEY=k&sig&key=v#top"),
            "http://ops:***@h:8081/x?page=2&token=***&API_KEY=***&sig&key=***#top"
        );
        assert_eq!(redact_url("http://ghp_abc@h/"), "http://***@h/", "a bare user info is a token");
        assert_eq!(redact_url("http://h/a?sort=asc"), "http://h/a?sort=asc");
        for name in ["access_token", "X-Amz-Signature", "client_secret", "password", "oauth", "sig", "apiKey"] {
            assert!(is_credential_param(name), "{name}");
        }
        for name in ["page", "sort", "mode", "id", "keyword_count"] {
            assert!(!is_credential_param(name), "{name}");
        }
    }

    #[test]
    fn http_headers_urls_and_marked_fields_are_hidden() {
        let spec = json!({
            "secrets": ["/run/body/password"],
            "run": { "url": "http://u:pw@h/?token=t", "headers": { "Authorization": "Bearer s3cr3t", "X-Api-Key": "k" },
                     "body": { "password": "p", "user": "u" } },
            "status": { "url": "http://h/", "state_pointer": "/s", "states": { "UP": "running" } }
        });
        let shown = redact(&spec, &http_secrets(&spec));
        assert_eq!(shown["run"]["headers"], json!({ "Authorization": "***", "X-Api-Key": "***" }));
        assert_eq!(shown["run"]["url"], "http://u:***@h/?token=***");
        assert_eq!(shown["run"]["body"], json!({ "password": "***", "user": "u" }));
        assert_eq!(shown["status"], spec["status"]);
        assert_eq!(shown["secrets"], spec["secrets"], "the list names fields, not values");
        assert!(!shown.to_string().contains("s3cr3t") && !shown.to_string().contains("pw@"));
    }

    #[test]
    fn a_placeholder_keeps_a_new_value_replaces_a_missing_field_is_gone() {
        let stored = json!({ "command": ["/bin/app"], "env": { "A": "old-a", "B": "old-b", "C": "old-c" } });
        let sent = json!({ "command": ["/bin/app"], "env": { "A": "***", "B": "new-b", "D": "***" } });
        let errors = merge(&sent, Some(&stored), &env_values(&sent)).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, "env.D");
        let sent = json!({ "command": ["/bin/app"], "env": { "A": "***", "B": "new-b" } });
        let merged = merge(&sent, Some(&stored), &env_values(&sent)).unwrap();
        assert_eq!(merged["env"], json!({ "A": "old-a", "B": "new-b" }));
    }

    #[test]
    fn a_new_spec_with_a_placeholder_is_refused_naming_each_field() {
        let sent =
            json!({ "run": { "url": "http://u:***@h/?page=1&token=***", "headers": { "Authorization": "***" } } });
        let errors = merge(&sent, None, &http_secrets(&sent)).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["run.headers.Authorization", "run.url", "run.url"]);
        assert!(errors[1].message.starts_with("the URL's user info"), "{:?}", errors[1]);
        assert!(errors[2].message.starts_with("query parameter `token`"), "{:?}", errors[2]);
        assert!(errors.iter().all(|e| e.message.contains("new application")));
    }

    #[test]
    fn a_placeholder_outside_a_secret_is_a_value() {
        let sent = json!({ "run": { "url": "http://h/?page=***", "body": { "x": "***" } } });
        assert_eq!(merge(&sent, None, &http_secrets(&sent)).unwrap(), sent);
    }

    #[test]
    fn marks_are_checked_and_name_their_index() {
        let spec = json!({ "run": { "url": "http://h/", "body": { "n": 1, "s": "x" } } });
        let mut errors = Vec::new();
        check_marks(&mut errors, &spec, &json!(["/run/body/s", "run", "/run/body/n", "/nope", "/secrets/0", 5]));
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["secrets[1]", "secrets[2]", "secrets[3]", "secrets[4]", "secrets[5]"]);
        let mut errors = Vec::new();
        check_marks(&mut errors, &spec, &json!("/run/body/s"));
        assert_eq!(errors[0].field, "secrets");
    }

    #[test]
    fn field_names_follow_the_validators() {
        let spec = json!({ "command": ["a", "b"], "env": { "a/b": "x" } });
        assert_eq!(field_name(&spec, "/command/1"), "command[1]");
        assert_eq!(field_name(&spec, &pointer(&["env", "a/b"])), "env.a/b");
    }

    #[test]
    fn an_unknown_driver_shows_no_string() {
        let spec = json!({ "a": "x", "b": [1, "y", { "c": "z" }], "d": true });
        assert_eq!(redact_everything(&spec), json!({ "a": "***", "b": [1, "***", { "c": "***" }], "d": true }));
    }

    fn text() -> impl Strategy<Value = String> {
        // Anything a URL or a value can hold, the pieces that matter included.
        proptest::string::string_regex("[a-zA-Z0-9:@/?#&=*._-]{0,12}").unwrap()
    }

    fn url() -> impl Strategy<Value = String> {
        let name =
            prop_oneof![Just("token".to_string()), Just("page".to_string()), Just("api_key".to_string()), text()];
        let param = (name, proptest::option::of(text())).prop_map(|(n, v)| match v {
            Some(v) => format!("{n}={}", v.replace(['&', '#'], "")),
            None => n,
        });
        (
            proptest::option::of("[a-z]{0,4}(:[a-z*]{0,4})?"),
            "[a-z]{1,5}(:[0-9]{1,4})?(/[a-z@]{0,4}){0,2}",
            proptest::option::of(proptest::collection::vec(param, 0..4)),
        )
            .prop_map(|(userinfo, rest, query)| {
                let mut url = "http://".to_string();
                if let Some(u) = userinfo {
                    url.push_str(&u);
                    url.push('@');
                }
                url.push_str(&rest);
                if let Some(q) = query {
                    url.push('?');
                    url.push_str(&q.join("&"));
                }
                url
            })
    }

    /// An `http` spec of the shape the validator accepts, with every kind of secret.
    fn http_spec() -> impl Strategy<Value = Value> {
        let headers = proptest::collection::btree_map("[A-Za-z-]{1,8}", text(), 0..3);
        let body = proptest::collection::btree_map("[a-z]{1,5}", text(), 0..3);
        (url(), headers, body, proptest::collection::vec(0usize..3, 0..3)).prop_map(|(url, headers, body, marks)| {
            let keys: Vec<&String> = body.keys().collect();
            let marks: Vec<String> =
                marks.iter().filter_map(|i| keys.get(*i)).map(|k| pointer(&["run", "body", k])).collect();
            json!({ "secrets": marks, "run": { "url": url, "headers": headers, "body": body } })
        })
    }

    /// `spec` with other values at its secret places (same shape, as a read-back then edited).
    fn other_values(spec: &Value, seed: &str) -> Value {
        let mut other = spec.clone();
        for secret in http_secrets(spec) {
            if let Some(Value::String(s)) = other.pointer_mut(secret.pointer()) {
                match secret {
                    Secret::Whole(_) => *s = format!("{s}{seed}"),
                    Secret::UrlParts(_) => *s = replace_url_secrets(s, |v| format!("{v}{seed}")),
                }
            }
        }
        other
    }

    proptest! {
        #[test]
        fn a_redacted_spec_sent_back_is_the_stored_spec(spec in http_spec()) {
            let shown = redact(&spec, &http_secrets(&spec));
            prop_assert_eq!(merge(&shown, Some(&spec), &http_secrets(&shown)).unwrap(), spec);
        }

        #[test]
        fn a_merged_spec_shows_as_what_was_sent(spec in http_spec(), seed in "[a-z]{1,3}") {
            let stored = other_values(&spec, &seed);
            let shown = redact(&spec, &http_secrets(&spec));
            let merged = merge(&shown, Some(&stored), &http_secrets(&shown));
            prop_assert!(merged.is_ok(), "{:?}", merged);
            let merged = merged.unwrap_or_default();
            prop_assert_eq!(redact(&merged, &http_secrets(&merged)), shown);
        }

        #[test]
        fn redaction_is_idempotent_and_hides_every_secret(spec in http_spec()) {
            let secrets = http_secrets(&spec);
            let shown = redact(&spec, &secrets);
            prop_assert_eq!(redact(&shown, &http_secrets(&shown)), shown.clone());
            for secret in &secrets {
                if let Secret::Whole(p) = secret {
                    prop_assert_eq!(shown.pointer(p), Some(&json!(PLACEHOLDER)));
                }
            }
        }

        #[test]
        fn any_url_splits_and_joins_back(url in url(), tail in text()) {
            let url = format!("{url}{tail}");
            let parts = Url::split(&url);
            prop_assert_eq!(parts.join(parts.userinfo, parts.query), url.clone());
            prop_assert_eq!(merge_url(&redact_url(&url), Some(&url)), Ok(url));
        }
    }
}
