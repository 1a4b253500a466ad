//! `weatherflow rejects show ID`: one quarantined record in full. The raw bytes are shown as text
//! when they are UTF-8, control characters escaped so that a record cannot drive the terminal, and
//! as a hex dump otherwise.

use std::fmt::Write as _;

use entity::rejected_records;
use serde_json::{Value, json};

/// The record as the command prints it.
pub(super) fn render(r: &rejected_records::Model) -> String {
    let mut out = String::new();
    let time = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%d %H:%M:%S%.3f UTC").to_string();
    let state = match (r.redriven_at, r.last_redrive_at) {
        (Some(at), _) => format!(
            "re-driven at {}{}",
            time(at),
            r.redrive_run_id
                .map_or_else(String::new, |id| format!(" by run {id}"))
        ),
        (None, Some(last)) => format!(
            "quarantined; last re-drive attempt {}{}",
            time(last),
            r.redrive_run_id
                .map_or_else(String::new, |id| format!(" (run {id})"))
        ),
        (None, None) => "quarantined; never re-driven".to_owned(),
    };
    let _ = writeln!(out, "id            {}", r.id);
    let _ = writeln!(out, "received_at   {}", time(r.received_at));
    let _ = writeln!(
        out,
        "source        {} partition {} offset {}",
        r.kafka_topic, r.kafka_partition, r.kafka_offset
    );
    let _ = writeln!(out, "class         {}", r.error_class);
    let _ = writeln!(out, "reason        {}", escape(&r.reason));
    let _ = writeln!(out, "state         {state}");
    let _ = writeln!(out, "attempts      {}", r.redrive_attempts);
    let _ = writeln!(out, "key           {}", one_line(r.key.as_deref()));
    match r.payload.as_deref() {
        None => {
            let _ = writeln!(out, "payload       (null)");
        }
        Some(bytes) => match std::str::from_utf8(bytes) {
            Ok(text) => {
                let _ = writeln!(out, "payload       {} bytes, UTF-8 text:", bytes.len());
                out.push_str(&escape(text));
                out.push('\n');
            }
            Err(_) => {
                let _ = writeln!(out, "payload       {} bytes, not UTF-8, hex:", bytes.len());
                out.push_str(&hex_dump(bytes));
            }
        },
    }
    out
}

/// The record as `--format json|csv` prints it: the key and the payload as text when they are UTF-8
/// (JSON escapes what it must), else in hex; `payload_bytes` is the payload's size.
pub(super) fn record(r: &rejected_records::Model) -> Value {
    let text = |b: Option<&[u8]>| b.and_then(|b| std::str::from_utf8(b).ok()).map(str::to_owned);
    let hex = |b: Option<&[u8]>| {
        b.filter(|b| std::str::from_utf8(b).is_err())
            .map(|b| b.iter().map(|x| format!("{x:02x}")).collect::<String>())
    };
    let (key, payload) = (r.key.as_deref(), r.payload.as_deref());
    json!({
        "id": r.id,
        "received_at": r.received_at,
        "kafka_topic": r.kafka_topic,
        "kafka_partition": r.kafka_partition,
        "kafka_offset": r.kafka_offset,
        "error_class": r.error_class,
        "reason": r.reason,
        "redrive_attempts": r.redrive_attempts,
        "last_redrive_at": r.last_redrive_at,
        "redriven_at": r.redriven_at,
        "redrive_run_id": r.redrive_run_id,
        "key": text(key),
        "key_hex": hex(key),
        "payload_bytes": payload.map(<[u8]>::len),
        "payload": text(payload),
        "payload_hex": hex(payload),
    })
}

/// The fields of [`record`], in order: the CSV header.
pub(super) const COLUMNS: [&str; 16] = [
    "id",
    "received_at",
    "kafka_topic",
    "kafka_partition",
    "kafka_offset",
    "error_class",
    "reason",
    "redrive_attempts",
    "last_redrive_at",
    "redriven_at",
    "redrive_run_id",
    "key",
    "key_hex",
    "payload_bytes",
    "payload",
    "payload_hex",
];

/// A key on one line: its text when UTF-8 (escaped), else its hex.
fn one_line(bytes: Option<&[u8]>) -> String {
    match bytes {
        None => "(null)".to_owned(),
        Some(b) => match std::str::from_utf8(b) {
            Ok(text) => format!("{:?}", text),
            Err(_) => format!("hex {}", b.iter().map(|x| format!("{x:02x}")).collect::<String>()),
        },
    }
}

/// `text` with every control character but newline and tab escaped (`\u{1b}`).
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() && c != '\n' && c != '\t' {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        } else {
            out.push(c);
        }
    }
    out
}

/// 16 bytes a line: offset, hex, and the printable ASCII (`.` for the rest).
fn hex_dump(bytes: &[u8]) -> String {
    let mut out = String::new();
    for (i, chunk) in bytes.chunks(16).enumerate() {
        let hex: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
        let ascii: String = chunk
            .iter()
            .map(|&b| {
                if b.is_ascii_graphic() || b == b' ' {
                    b as char
                } else {
                    '.'
                }
            })
            .collect();
        let _ = writeln!(out, "{:08x}  {:<47}  |{ascii}|", i * 16, hex.join(" "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_but_lines_kept() {
        assert_eq!(escape("a\u{1b}[31mb\nc\td\u{7f}"), "a\\u{1b}[31mb\nc\td\\u{7f}");
    }

    #[test]
    fn bytes_that_are_not_utf8_are_dumped_in_hex() {
        let dump = hex_dump(&[0xff, b'{', 0x00, b'a']);
        assert_eq!(dump, format!("00000000  {:<47}  |.{{.a|\n", "ff 7b 00 61"));
        let long = hex_dump(&[b'x'; 17]);
        assert_eq!(long.lines().count(), 2);
        assert!(long.lines().nth(1).unwrap().starts_with("00000010  78 "));
        assert_eq!(one_line(Some(&[0xfe, 0x01])), "hex fe01");
        assert_eq!(one_line(Some(b"paris")), "\"paris\"");
        assert_eq!(one_line(None), "(null)");
    }
}
