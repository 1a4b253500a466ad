//! The fast path of the one-pass parse: a strict JSON scanner that reads exactly the fields
//! [`Message`] holds and steps over everything else without building it.
//!
//! serde's derived parse matches every one of a payload's ~60 keys against a field list and routes
//! every ignored value through the generic deserializer; with the scanner a whole validation takes
//! 0.83–0.93× its time with serde alone (`bench persist`, `docs/performance.md`). The scanner is
//! allowed to decline anything, and does so at the first thing it does not handle the way serde
//! would (escapes in a string it keeps, a duplicate field, a number it cannot convert with the same
//! arithmetic, a wrong type); `None` sends the
//! message to serde, whose answer then decides. So what it accepts it reads exactly as serde does,
//! which the tests check on every one-byte edit of the recordings.

use std::borrow::Cow;

use chrono::{DateTime, FixedOffset, Utc};

use super::observation::{Condition, Current, CurrentResponse, Location, Message};
use crate::envelope::Source;

/// Deepest nesting of an ignored value the scanner follows; deeper goes to serde.
const MAX_DEPTH: usize = 32;
/// Largest significand converted here: up to 2^53 both the significand and the power of ten are
/// exact in `f64`, so one multiplication or division rounds once, correctly, as serde's parse (with
/// or without `float_roundtrip`) and `str::parse` all do.
const MAX_EXACT: u64 = 1 << 53;
/// The powers of ten exact in `f64`.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18,
    1e19, 1e20, 1e21, 1e22,
];

/// The message when the scanner reads it all; `None` when serde must decide.
pub(super) fn message(text: &str) -> Option<Message<'_>> {
    let mut s = Scanner {
        text,
        b: text.as_bytes(),
        i: 0,
    };
    let m = s.message()?;
    s.ws();
    (s.i == s.b.len()).then_some(m)
}

/// Stores a field's value, declining a second occurrence of it (serde refuses duplicate fields).
fn set<T>(slot: &mut Option<T>, value: T) -> Option<()> {
    if slot.is_some() {
        return None;
    }
    *slot = Some(value);
    Some(())
}

struct Scanner<'a> {
    text: &'a str,
    b: &'a [u8],
    i: usize,
}

impl<'a> Scanner<'a> {
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.b.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.i += 1)
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        self.ws();
        let end = self.i + word.len();
        (self.b.get(self.i..end)? == word).then(|| self.i = end)
    }

    /// Reads an object, handing each key (as written) to `member`, which reads the value.
    fn object(&mut self, mut member: impl FnMut(&mut Self, &'a [u8]) -> Option<()>) -> Option<()> {
        self.eat(b'{')?;
        if self.peek()? == b'}' {
            self.i += 1;
            return Some(());
        }
        loop {
            let key = self.plain_str()?;
            self.eat(b':')?;
            member(self, key.as_bytes())?;
            match self.peek()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// A string without escapes, borrowed; a control character or an escape declines.
    fn plain_str(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let start = self.i;
        loop {
            match *self.b.get(self.i)? {
                b'"' => break,
                b'\\' | 0..=0x1f => return None,
                _ => self.i += 1,
            }
        }
        let s = &self.text[start..self.i];
        self.i += 1;
        Some(s)
    }

    /// Steps over a string, allowing the escapes serde accepts everywhere (`\u` goes to serde, which
    /// decides on surrogates).
    fn skip_str(&mut self) -> Option<()> {
        self.eat(b'"')?;
        loop {
            match *self.b.get(self.i)? {
                b'"' => break,
                b'\\' => match self.b.get(self.i + 1)? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.i += 2,
                    _ => return None,
                },
                0..=0x1f => return None,
                _ => self.i += 1,
            }
        }
        self.i += 1;
        Some(())
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while let Some(b'0'..=b'9') = self.b.get(self.i) {
            self.i += 1;
        }
        self.i - start
    }

    /// Steps over a number written as JSON allows (`-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`)
    /// and returns its text.
    fn number_text(&mut self) -> Option<&'a [u8]> {
        self.ws();
        let start = self.i;
        if self.b.get(self.i) == Some(&b'-') {
            self.i += 1;
        }
        let first = *self.b.get(self.i)?;
        let int = self.digits();
        if int == 0 || (first == b'0' && int > 1) {
            return None;
        }
        if self.b.get(self.i) == Some(&b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return None;
            }
        }
        if let Some(b'e' | b'E') = self.b.get(self.i) {
            self.i += 1;
            if let Some(b'+' | b'-') = self.b.get(self.i) {
                self.i += 1;
            }
            if self.digits() == 0 {
                return None;
            }
        }
        Some(&self.b[start..self.i])
    }

    /// A number as an `f64`, as serde reads it; `None` beyond the exact range (see [`MAX_EXACT`]).
    fn number(&mut self) -> Option<f64> {
        let text = self.number_text()?;
        let (negative, rest) = match text.split_first() {
            Some((b'-', rest)) => (true, rest),
            _ => (false, text),
        };
        let mut significand = 0u64;
        let mut exponent = 0i64;
        let mut fraction = false;
        let mut at = 0;
        while at < rest.len() {
            match rest[at] {
                c @ b'0'..=b'9' => {
                    significand = significand.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
                    exponent -= i64::from(fraction);
                }
                b'.' => fraction = true,
                _ => break,
            }
            at += 1;
        }
        let exact = if at == rest.len() && !fraction {
            // An integer: serde converts it with one cast, exact or not.
            significand as f64
        } else {
            if at < rest.len() {
                // `e`, an optional sign and at least one digit (checked above).
                let (sign, digits) = match rest[at + 1] {
                    b'-' => (-1, &rest[at + 2..]),
                    b'+' => (1, &rest[at + 2..]),
                    _ => (1, &rest[at + 1..]),
                };
                if digits.len() > 4 {
                    return None;
                }
                let value = digits.iter().fold(0i64, |v, d| v * 10 + i64::from(d - b'0'));
                exponent += sign * value;
            }
            if significand > MAX_EXACT {
                return None;
            }
            let power = *POW10.get(exponent.unsigned_abs() as usize)?;
            if exponent >= 0 {
                significand as f64 * power
            } else {
                significand as f64 / power
            }
        };
        Some(if negative { -exact } else { exact })
    }

    fn opt_number(&mut self) -> Option<Option<f64>> {
        if self.peek()? == b'n' {
            return self.literal(b"null").map(|()| None);
        }
        self.number().map(Some)
    }

    fn opt_string(&mut self) -> Option<Option<String>> {
        if self.peek()? == b'n' {
            return self.literal(b"null").map(|()| None);
        }
        self.plain_str().map(|s| Some(s.to_owned()))
    }

    /// Steps over any value, at most `depth` levels deep.
    fn skip(&mut self, depth: usize) -> Option<()> {
        match self.peek()? {
            b'"' => self.skip_str(),
            b'{' if depth > 0 => self.object(|s, _| s.skip(depth - 1)),
            b'[' if depth > 0 => {
                self.i += 1;
                if self.peek()? == b']' {
                    self.i += 1;
                    return Some(());
                }
                loop {
                    self.skip(depth - 1)?;
                    match self.peek()? {
                        b',' => self.i += 1,
                        b']' => {
                            self.i += 1;
                            return Some(());
                        }
                        _ => return None,
                    }
                }
            }
            b'n' => self.literal(b"null"),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'-' | b'0'..=b'9' => self.number_text().map(drop),
            _ => None,
        }
    }

    fn message(&mut self) -> Option<Message<'a>> {
        let (mut version, mut source, mut fetched_at, mut query, mut payload) =
            (None, None, None, None, None);
        self.object(|s, key| match key {
            b"schema_version" => {
                let text = s.number_text()?;
                // An unsigned integer that fits, as serde's u32 accepts; `-0`, `1.0` and `1e0` it refuses.
                if !text.iter().all(u8::is_ascii_digit) {
                    return None;
                }
                set(&mut version, std::str::from_utf8(text).ok()?.parse::<u32>().ok()?)
            }
            b"source" => {
                let value = match s.plain_str()? {
                    "weatherapi" => Source::Weatherapi,
                    "simulated" => Source::Simulated,
                    _ => return None,
                };
                set(&mut source, value)
            }
            b"fetched_at" => {
                // chrono's serde reads a `DateTime<Utc>` exactly so.
                let at = s.plain_str()?.parse::<DateTime<FixedOffset>>().ok()?;
                set(&mut fetched_at, at.with_timezone(&Utc))
            }
            b"query" => set(&mut query, s.plain_str()?),
            b"payload" => set(&mut payload, s.response()?),
            _ => s.skip(MAX_DEPTH),
        })?;
        Some(Message {
            schema_version: version?,
            source: source?,
            fetched_at: fetched_at?,
            _query: Cow::Borrowed(query?),
            payload: payload?,
        })
    }

    fn response(&mut self) -> Option<CurrentResponse> {
        let (mut location, mut current) = (None, None);
        self.object(|s, key| match key {
            b"location" => set(&mut location, s.location()?),
            b"current" => set(&mut current, s.current()?),
            _ => s.skip(MAX_DEPTH),
        })?;
        Some(CurrentResponse {
            location: location?,
            current: current?,
        })
    }

    fn location(&mut self) -> Option<Location> {
        let (mut name, mut region, mut country, mut lat, mut lon) = (None, None, None, None, None);
        self.object(|s, key| match key {
            b"name" => set(&mut name, s.plain_str()?.to_owned()),
            b"region" => set(&mut region, s.plain_str()?.to_owned()),
            b"country" => set(&mut country, s.plain_str()?.to_owned()),
            b"lat" => set(&mut lat, s.number()?),
            b"lon" => set(&mut lon, s.number()?),
            _ => s.skip(MAX_DEPTH),
        })?;
        Some(Location {
            name: name?,
            region: region?,
            country: country?,
            lat: lat?,
            lon: lon?,
        })
    }

    fn current(&mut self) -> Option<Current> {
        let mut epoch = None;
        let mut temp_c = None;
        let mut wind_kph = None;
        // Optional fields: the outer Option is "seen" (for duplicates), the inner one is the value.
        let mut numbers: [Option<Option<f64>>; 10] = [None; 10];
        let mut wind_dir = None;
        let mut condition = None;
        self.object(|s, key| {
            let slot = match key {
                b"last_updated_epoch" => return set(&mut epoch, s.number()?),
                b"temp_c" => return set(&mut temp_c, s.number()?),
                b"wind_kph" => return set(&mut wind_kph, s.number()?),
                b"wind_dir" => return set(&mut wind_dir, s.opt_string()?),
                b"condition" => return set(&mut condition, s.opt_condition()?),
                b"feelslike_c" => 0,
                b"gust_kph" => 1,
                b"pressure_mb" => 2,
                b"precip_mm" => 3,
                b"vis_km" => 4,
                b"uv" => 5,
                b"wind_degree" => 6,
                b"humidity" => 7,
                b"cloud" => 8,
                b"is_day" => 9,
                _ => return s.skip(MAX_DEPTH),
            };
            set(&mut numbers[slot], s.opt_number()?)
        })?;
        let [
            feelslike_c,
            gust_kph,
            pressure_mb,
            precip_mm,
            vis_km,
            uv,
            wind_degree,
            humidity,
            cloud,
            is_day,
        ] = numbers.map(Option::flatten);
        Some(Current {
            last_updated_epoch: epoch?,
            temp_c: temp_c?,
            wind_kph: wind_kph?,
            feelslike_c,
            gust_kph,
            pressure_mb,
            precip_mm,
            vis_km,
            uv,
            wind_degree,
            humidity,
            cloud,
            wind_dir: wind_dir.flatten(),
            is_day,
            condition: condition.flatten(),
        })
    }

    fn opt_condition(&mut self) -> Option<Option<Condition>> {
        if self.peek()? == b'n' {
            return self.literal(b"null").map(|()| None);
        }
        let (mut text, mut code) = (None, None);
        self.object(|s, key| match key {
            b"text" => set(&mut text, s.opt_string()?),
            b"code" => set(&mut code, s.opt_number()?),
            _ => s.skip(MAX_DEPTH),
        })?;
        Some(Some(Condition {
            text: text.flatten(),
            code: code.flatten(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{LONDON, ROSWELL, envelope_text};
    use super::*;

    fn by_serde(text: &str) -> Option<String> {
        serde_json::from_str::<Message<'_>>(text)
            .ok()
            .map(|m| format!("{m:?}"))
    }

    fn by_scanner(text: &str) -> Option<String> {
        message(text).map(|m| format!("{m:?}"))
    }

    /// What the scanner accepts, serde reads the same (`Debug` tells every f64 bit apart, `-0.0`
    /// included); true when it agrees, and whether it accepted.
    fn agrees(text: &str) -> (bool, bool) {
        match by_scanner(text) {
            Some(fast) => (by_serde(text).as_deref() == Some(fast.as_str()), true),
            None => (true, false),
        }
    }

    #[test]
    fn reads_the_recordings_as_serde_does() {
        for payload in [LONDON, ROSWELL] {
            let text = envelope_text(payload);
            let fast = by_scanner(&text).expect("the scanner reads a recording");
            assert_eq!(Some(fast), by_serde(&text));
        }
    }

    /// Every one-byte deletion, and every insertion or replacement of a byte that matters to JSON, at
    /// every position of both recordings: whatever the scanner accepts serde reads the same, and
    /// the scanner still accepts the harmless edits (a digit changed, a space added).
    #[test]
    fn agrees_with_serde_on_every_one_byte_edit() {
        const BYTES: &[u8] = b"{}[],:\"\\ 0195-.eE+nt\x01";
        let mut accepted = 0usize;
        let mut edits = 0usize;
        for payload in [LONDON, ROSWELL] {
            let text = envelope_text(payload);
            let bytes = text.as_bytes();
            for at in 0..=bytes.len() {
                let mut variants = Vec::new();
                if at < bytes.len() {
                    variants.push([&bytes[..at], &bytes[at + 1..]].concat());
                }
                for &b in BYTES {
                    variants.push([&bytes[..at], &[b], &bytes[at..]].concat());
                    if at < bytes.len() {
                        variants.push([&bytes[..at], &[b], &bytes[at + 1..]].concat());
                    }
                }
                for v in variants {
                    let Ok(v) = std::str::from_utf8(&v) else { continue };
                    let (same, took) = agrees(v);
                    assert!(same, "the scanner and serde differ on {v}");
                    edits += 1;
                    accepted += usize::from(took);
                }
            }
        }
        assert!(edits > 50_000, "{edits} edits");
        assert!(accepted > edits / 10, "accepted {accepted} of {edits}");
    }

    #[test]
    fn numbers_convert_as_serde_converts_them() {
        let taken = [
            "0",
            "-0",
            "-0.0",
            "7",
            "-7",
            "0.1",
            "0.2",
            "51.5171",
            "-0.1062",
            "13.0",
            "1e2",
            "1E+2",
            "25e-1",
            "1767632400",
            "18446744073709551615",
            "9007199254740993",
            "123456789.123456",
            "1.5e22",
            "3e-22",
        ];
        let declined = [
            "01",
            "1.",
            ".5",
            "-",
            "1e",
            "1e+",
            "+1",
            "NaN",
            "1.7976931348623157e308",
            "5e-324",
            "18446744073709551616",
            "0.30000000000000004",
            "9007199254740993.0",
            "1e23",
            "0.1e-22",
            "\"7\"",
            "null",
        ];
        for n in taken.iter().chain(&declined) {
            let text = envelope_text(&LONDON.replace("\"temp_c\": 0.1", &format!("\"temp_c\": {n}")));
            let (same, took) = agrees(&text);
            assert!(same, "{n}: the scanner and serde differ");
            assert_eq!(took, taken.contains(n), "{n}");
        }
    }

    /// What it does not handle goes to serde, which still reads the message.
    #[test]
    fn declines_what_serde_must_decide() {
        let cases = [
            LONDON.replace("\"London\"", "\"Lond\\u006fn\""),
            LONDON.replace("\"NW\"", "\"N\\/W\""),
            LONDON.replace("\"is_day\": 0", "\"is_day\": 0, \"tag\": \"\\u00e9\""),
            LONDON.replace(
                "\"gti\": 0",
                &format!("\"gti\": {}0{}", "[".repeat(40), "]".repeat(40)),
            ),
        ];
        for payload in &cases {
            let text = envelope_text(payload);
            assert!(by_scanner(&text).is_none(), "{payload}");
            assert!(by_serde(&text).is_some(), "{payload}");
        }
        // A duplicate field: serde refuses it, so must the scanner.
        let twice = envelope_text(&LONDON.replace("\"temp_c\": 0.1", "\"temp_c\": 0.1, \"temp_c\": 5"));
        assert_eq!((by_scanner(&twice), by_serde(&twice)), (None, None));
        let null_twice = envelope_text(&LONDON.replace("\"uv\": 0.0", "\"uv\": null, \"uv\": null"));
        assert_eq!((by_scanner(&null_twice), by_serde(&null_twice)), (None, None));
    }
}
