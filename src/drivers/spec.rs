//! What the drivers' spec validators share: a problem recorded with its field, the spec being an
//! object, a duration in milliseconds, an `env` object, and the one line a
//! `DriverError::Invalid` carries.
//!
//! Why it exists: `process`, `shell` and `http` check the same kinds of field by the same rules,
//! so an admin gets the same message for the same mistake whatever the driver, and a rule (names
//! starting with `ROTA_` are the task's) is changed in one place.
//!
//! Must never: stop at the first problem (a validator reports every one, each with its field);
//! quote a field's value in a message (a spec may hold credentials); do I/O (validation runs when
//! a spec is written and again before every call).

use serde_json::{Map, Value};

use super::SpecError;

/// Push a spec error.
pub(crate) fn problem(errors: &mut Vec<SpecError>, field: impl Into<String>, message: impl Into<String>) {
    errors.push(SpecError { field: field.into(), message: message.into() });
}

/// One line listing every problem, for a `DriverError::Invalid`.
pub(crate) fn join_spec_errors(errors: &[SpecError]) -> String {
    let parts: Vec<String> = errors.iter().map(|e| format!("`{}` {}", e.field, e.message)).collect();
    format!("spec: {}", parts.join("; "))
}

/// A whole number of ms in `min..=max`.
pub(crate) fn check_ms(errors: &mut Vec<SpecError>, field: &str, value: &Value, min: u64, max: u64) {
    match value.as_u64() {
        Some(ms) if (min..=max).contains(&ms) => {}
        _ => problem(errors, field, format!("must be a whole number of milliseconds from {min} to {max}")),
    }
}

/// `env`: an object of string values whose names are usable and not reserved.
pub(crate) fn check_env(errors: &mut Vec<SpecError>, value: &Value) {
    let Some(vars) = value.as_object() else {
        return problem(errors, "env", "must be an object of NAME: \"value\" strings");
    };
    for (name, v) in vars {
        let field = format!("env.{name}");
        if name.is_empty() || name.contains('=') || name.contains('\0') {
            problem(errors, &field, "a variable name must be non-empty and contain neither `=` nor NUL");
        } else if name.starts_with("ROTA_") {
            problem(errors, &field, "names starting with ROTA_ are reserved for the task's variables");
        }
        match v.as_str() {
            Some(s) if s.contains('\0') => problem(errors, &field, "must not contain a NUL byte"),
            Some(_) => {}
            None => problem(errors, &field, "must be a string (quote numbers)"),
        }
    }
}

/// The spec must be an object; its fields, for the checks that follow.
pub(crate) fn spec_object<'a>(spec: &'a Value, errors: &mut Vec<SpecError>) -> Option<&'a Map<String, Value>> {
    let obj = spec.as_object();
    if obj.is_none() {
        problem(errors, "", "the spec must be a JSON object");
    }
    obj
}
