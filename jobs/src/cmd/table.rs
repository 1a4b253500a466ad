//! The CLI's output: aligned plain-text tables for people, and `--format json|csv` for programs
//! (docs/cli-formats.md). A command builds its rows as serializable records whose field names are
//! the JSON and CSV names (stable: renaming one is a breaking change), and renders the table from
//! the same records.

use serde::Serialize;
use serde_json::Value;

/// What `--format` accepts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns for people (the default).
    #[default]
    Table,
    /// One JSON document on standard output.
    Json,
    /// A header row, then one row per record; fields quoted as RFC 4180 says.
    Csv,
}

/// The `--format` flag, flattened into each command that prints records.
#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub struct Output {
    /// Output format: `table` for people, `json` (one document) or `csv` (a header row, then one row
    /// per record) for programs; field names are listed in docs/cli-formats.md.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// Prints a listing: `{"<name>": [records]}` as JSON, the records as CSV under `columns` (their
/// field names, in order), or the table `table` renders.
pub fn print_records<T: Serialize>(
    format: Format,
    name: &str,
    columns: &[&str],
    records: &[T],
    table: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    match format {
        Format::Table => emit(&table()),
        Format::Json => print_json(&serde_json::json!({ name: records })),
        Format::Csv => emit(&csv(columns, &serde_json::to_value(records)?)),
    }
}

/// Prints one JSON document, pretty, ending in a newline.
pub fn print_json(document: &impl Serialize) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(document)?;
    text.push('\n');
    emit(&text)
}

/// Writes `text` to standard output. A reader that stopped reading (`| head`) is no failure: the
/// rest is not wanted.
pub fn emit(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// The records of `array` (objects) as CSV under `columns`: absent and null fields are empty cells,
/// nested values their JSON text.
pub fn csv(columns: &[&str], array: &Value) -> String {
    let mut out = csv_line(columns.iter().map(|c| (*c).to_owned()));
    for record in array.as_array().map(Vec::as_slice).unwrap_or_default() {
        out.push_str(&csv_line(columns.iter().map(|c| cell(record.get(*c)))));
    }
    out
}

/// A document that is not one list (status, check) as CSV: one `path,value` row per scalar, the
/// path naming object keys and array indexes with dots (`jobs.0.last_run.status`).
pub fn csv_pairs(document: &Value) -> String {
    let mut out = csv_line(["path".to_owned(), "value".to_owned()]);
    let mut stack = vec![(String::new(), document)];
    let mut rows = Vec::new();
    while let Some((path, v)) = stack.pop() {
        let child = |k: &str| {
            if path.is_empty() {
                k.to_owned()
            } else {
                format!("{path}.{k}")
            }
        };
        match v {
            Value::Object(map) => stack.extend(map.iter().rev().map(|(k, v)| (child(k), v))),
            Value::Array(items) => stack.extend(
                items
                    .iter()
                    .enumerate()
                    .rev()
                    .map(|(i, v)| (child(&i.to_string()), v)),
            ),
            scalar => rows.push((path, cell(Some(scalar)))),
        }
    }
    for (path, value) in rows {
        out.push_str(&csv_line([path, value]));
    }
    out
}

fn cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// One CSV line: a field is quoted when it holds a comma, a quote, a line break or white space at
/// either end, and its quotes doubled (RFC 4180).
fn csv_line(fields: impl IntoIterator<Item = String>) -> String {
    let mut line = fields
        .into_iter()
        .map(|f| {
            let quote = f.contains([',', '"', '\n', '\r'])
                || f.starts_with(char::is_whitespace)
                || f.ends_with(char::is_whitespace);
            if quote {
                format!("\"{}\"", f.replace('"', "\"\""))
            } else {
                f
            }
        })
        .collect::<Vec<_>>()
        .join(",");
    line.push('\n');
    line
}

/// Renders `rows` under `header`, each column padded to its widest cell. Numeric-looking cells are
/// right-aligned so figures line up.
pub fn render(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| -> String {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| {
                if looks_numeric(c) {
                    format!("{c:>w$}")
                } else {
                    format!("{c:<w$}")
                }
            })
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    let mut out = line(header.to_vec());
    out.push('\n');
    out.push_str(
        &widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .join("  "),
    );
    out.push('\n');
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
}

fn looks_numeric(s: &str) -> bool {
    !s.is_empty() && s.parse::<f64>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align() {
        let t = render(
            &["job", "n"],
            &[
                vec!["fetch".into(), "5".into()],
                vec!["analytics".into(), "120".into()],
            ],
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "job        n");
        assert_eq!(lines[2], "fetch        5");
        assert_eq!(lines[3], "analytics  120");
    }

    #[test]
    fn csv_quotes_what_needs_it() {
        let records = serde_json::json!([
            {"id": 1, "note": "a, \"b\"\nc", "n": null},
            {"id": 2, "note": " padded", "nested": {"x": 1}},
        ]);
        assert_eq!(
            csv(&["id", "note", "n", "nested"], &records),
            "id,note,n,nested\n1,\"a, \"\"b\"\"\nc\",,\n2,\" padded\",,\"{\"\"x\"\":1}\"\n"
        );
    }

    #[test]
    fn documents_flatten_to_path_value_pairs() {
        let doc = serde_json::json!({"jobs": [{"job": "fetch", "last": null}], "ok": true});
        assert_eq!(
            csv_pairs(&doc),
            "path,value\njobs.0.job,fetch\njobs.0.last,\nok,true\n"
        );
    }
}
