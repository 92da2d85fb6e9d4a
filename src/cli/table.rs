//! Plain text output for people: aligned columns and `key: value` blocks.
//!
//! Why it exists: every list command prints a table and every `show` a block of fields; one
//! renderer keeps them alike. It is deliberately tiny (no borders, no colour, no terminal width
//! detection) so that output pastes cleanly into an issue and stays greppable.
//!
//! It must never decide what to show: callers choose the columns.

use serde_json::Value;

/// Longest cell printed before it is cut with `…` (messages and errors can be long).
const MAX_CELL: usize = 60;

/// Columns aligned with two spaces between them; the last column is not padded.
#[derive(Debug, Clone, Default)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new(headers: &[&str]) -> Table {
        Table { headers: headers.iter().map(|h| h.to_string()).collect(), rows: Vec::new() }
    }

    /// Add a row (missing cells print empty, extra cells are dropped).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells.into_iter().take(self.headers.len()).map(|c| shorten(&c)).collect());
    }

    /// Number of rows so far.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// True when there are no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The text, one line per row after the header line, each ending in `\n`.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&self.headers).chain(&self.rows) {
            let mut line = String::new();
            for (i, width) in widths.iter().enumerate() {
                let cell = row.get(i).map(String::as_str).unwrap_or("");
                if i + 1 == widths.len() {
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    line.push_str(&" ".repeat(width - cell.chars().count() + 2));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `key: value` lines with the values aligned.
pub fn fields(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(k, _)| k.chars().count()).max().unwrap_or(0);
    pairs.iter().map(|(k, v)| format!("{k}:{} {v}\n", " ".repeat(width - k.chars().count()))).collect()
}

/// A JSON value as a cell: strings bare, `null` as `-`, anything else as compact JSON.
pub fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) if s.is_empty() => "-".into(),
        Value::String(s) => s.replace('\n', " "),
        other => other.to_string(),
    }
}

/// A JSON object of labels as `k=v,k2=v2` (`-` when empty or not an object).
pub fn labels(v: &Value) -> String {
    match v.as_object() {
        Some(m) if !m.is_empty() => m.iter().map(|(k, v)| format!("{k}={}", cell(v))).collect::<Vec<_>>().join(","),
        _ => "-".into(),
    }
}

fn shorten(s: &str) -> String {
    if s.chars().count() <= MAX_CELL {
        s.to_string()
    } else {
        let mut cut: String = s.chars().take(MAX_CELL - 1).collect();
        cut.push('…');
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn columns_align() {
        let mut t = Table::new(&["ID", "NAME"]);
        t.row(vec!["1".into(), "web".into()]);
        t.row(vec!["100".into(), "db".into()]);
        assert_eq!(t.render(), "ID   NAME\n1    web\n100  db\n");
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn long_cells_are_cut() {
        let mut t = Table::new(&["M"]);
        t.row(vec!["x".repeat(100)]);
        assert!(t.render().lines().nth(1).unwrap().ends_with('…'));
    }

    #[test]
    fn cells_and_labels() {
        assert_eq!(cell(&json!(null)), "-");
        assert_eq!(cell(&json!("a\nb")), "a b");
        assert_eq!(cell(&json!(3)), "3");
        assert_eq!(labels(&json!({"dc": "eu", "zone": "a"})), "dc=eu,zone=a");
        assert_eq!(labels(&json!({})), "-");
    }

    #[test]
    fn fields_align() {
        assert_eq!(fields(&[("id", "1".into()), ("state", "running".into())]), "id:    1\nstate: running\n");
    }
}
