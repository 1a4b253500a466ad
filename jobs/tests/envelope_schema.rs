//! The envelope's published JSON Schema (`docs/schema/envelope.v1.json`) against what we really
//! write and read, checked by a validator that is not ours (Python's `jsonschema`, Debian's
//! python3-jsonschema, through `scripts/validate-json.py`):
//! - every envelope the fetch job produces to the real broker, from the WeatherAPI stub (single and
//!   bulk, with and without air quality) and from the simulator, validates;
//! - every malformed case below is refused by the persist job's validation with the class named,
//!   and by the schema too;
//! - the cases the schema cannot express are listed, refused by persist and accepted by the schema,
//!   so the list in docs/fetch.md stays true; every rejection class is in one of the two lists.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use chrono::{Duration, Utc};
use common::TestContext;
use common::weatherapi_stub::{self, WeatherApiStub};
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use weatherflow::jobs::fetch::{self, FetchRequest, SourceChoice};
use weatherflow::jobs::persist::validate::{RejectionClass, Rules, validate};

const SCHEMA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/schema/envelope.v1.json");
const VALIDATOR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/validate-json.py");

/// Validates each document with Python's `jsonschema`: `None` when valid, else its first error.
fn schema_verdicts(docs: &[Value]) -> Vec<Option<String>> {
    let dir = common::scratch_dir("envelope-schema");
    let file = dir.join("documents.json");
    std::fs::write(&file, serde_json::to_vec(docs).unwrap()).unwrap();
    // Debian's python3 (python3-jsonschema is a dependency of docker-compose, which the test
    // command installs), not whichever python3 comes first on PATH.
    let out = std::process::Command::new("/usr/bin/python3")
        .args([Path::new(VALIDATOR), Path::new(SCHEMA), &file])
        .output()
        .expect("running /usr/bin/python3 scripts/validate-json.py");
    std::fs::remove_dir_all(&dir).ok();
    assert!(
        out.status.success(),
        "the validator failed (install Debian's python3-jsonschema): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verdicts: Vec<Option<String>> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(verdicts.len(), docs.len());
    verdicts
}

fn stub_config(
    ctx: &TestContext,
    stub: &WeatherApiStub,
    bulk: bool,
    aqi: bool,
) -> weatherflow::config::Config {
    let mut config = ctx.config.clone();
    let w = &mut config.weatherapi;
    w.base_url = stub.base_url.clone();
    w.api_key = Some(SecretString::from(weatherapi_stub::KEY));
    w.key_file = None;
    w.bulk = bulk;
    w.aqi = aqi;
    config.fetch.rate_per_sec = 0.0;
    config
}

async fn fetch(
    config: &weatherflow::config::Config,
    source: SourceChoice,
    locations: &[&str],
    backfill_hours: Option<u32>,
) {
    let req = FetchRequest {
        locations: locations.iter().map(|l| l.to_string()).collect(),
        source,
        seed: Some(7),
        concurrency: None,
        backfill_hours,
        history: None,
    };
    let summary = fetch::run(config, req, CancellationToken::new())
        .await
        .unwrap_or_else(|e| panic!("fetch failed: {e:#}"));
    assert_eq!(summary.failed(), 0, "{}", summary.line());
}

#[tokio::test]
async fn every_envelope_the_fetch_job_produces_validates() {
    let ctx = TestContext::new().await;
    let stub = WeatherApiStub::start().await;
    let places = ["London", "Roswell", "New Delhi", "53,-0.12", "90201"];
    for (bulk, aqi) in [(false, false), (false, true), (true, false), (true, true)] {
        fetch(
            &stub_config(&ctx, &stub, bulk, aqi),
            SourceChoice::Weatherapi,
            &places,
            None,
        )
        .await;
    }
    let simulated = [
        "Reykjavik",
        "Denver",
        "Singapore",
        "McMurdo Station",
        "-33.87,151.21",
        "Dubai",
    ];
    fetch(&ctx.config, SourceChoice::Simulated, &simulated, Some(48)).await;

    let messages = common::topic_messages(&ctx.config).await;
    // 4 stub runs of 5 places, and 6 simulated places at 15-minute steps over 48 hours.
    assert!(messages.len() >= 20 + 6 * 4 * 48, "{} messages", messages.len());
    let docs: Vec<Value> = messages
        .iter()
        .map(|(_, bytes)| serde_json::from_slice(bytes).unwrap())
        .collect();
    let sources: BTreeSet<&str> = docs.iter().map(|d| d["source"].as_str().unwrap()).collect();
    assert_eq!(sources, BTreeSet::from(["simulated", "weatherapi"]));
    for (i, verdict) in schema_verdicts(&docs).into_iter().enumerate() {
        assert_eq!(
            verdict, None,
            "produced envelope {i} fails the schema: {}",
            docs[i]
        );
        // And the persist job stores it: the corpus is valid, not merely well-shaped.
        validate(Some(&messages[i].1), Utc::now(), &Rules::default())
            .unwrap_or_else(|r| panic!("persist refuses produced envelope {i}: {}", r.reason));
    }
}

/// A valid envelope (the stub's London, full shape) to break one way at a time.
fn base() -> Value {
    let fixture = weatherapi_stub::builtin_fixtures().remove(0);
    json!({
        "schema_version": 1,
        "source": "weatherapi",
        "fetched_at": "2026-01-05T17:14:20.123456Z",
        "query": "London",
        "payload": serde_json::from_str::<Value>(&fixture.body(true)).unwrap(),
    })
}

/// `base()` with the value at `path` (`/`-separated) replaced, or removed when `value` is `None`.
fn with(path: &str, value: Option<Value>) -> Value {
    let mut doc = base();
    let (parent, last) = path.rsplit_once('/').map_or(("", path), |(p, l)| (p, l));
    let target = if parent.is_empty() {
        &mut doc
    } else {
        doc.pointer_mut(&format!("/{parent}")).unwrap()
    };
    let obj = target.as_object_mut().unwrap();
    match value {
        Some(v) => obj.insert(last.to_owned(), v),
        None => obj.remove(last),
    };
    doc
}

/// Malformed envelopes the schema expresses: each is refused by persist (with this class) and by
/// the schema.
fn expressible() -> Vec<(&'static str, Value, RejectionClass)> {
    use RejectionClass::*;
    let long = |n: usize| json!("x".repeat(n));
    vec![
        (
            "schema_version 2",
            with("schema_version", Some(json!(2))),
            UnknownSchemaVersion,
        ),
        (
            "schema_version as a string",
            with("schema_version", Some(json!("1"))),
            WrongType,
        ),
        ("no schema_version", with("schema_version", None), MissingField),
        (
            "unknown source",
            with("source", Some(json!("satellite"))),
            InvalidValue,
        ),
        ("no source", with("source", None), MissingField),
        ("no fetched_at", with("fetched_at", None), MissingField),
        (
            "fetched_at not a time",
            with("fetched_at", Some(json!("yesterday"))),
            InvalidValue,
        ),
        (
            "fetched_at as a number",
            with("fetched_at", Some(json!(1767633260))),
            WrongType,
        ),
        (
            "fetched_at before 2000",
            with("fetched_at", Some(json!("1999-12-31T23:00:00Z"))),
            OutOfRange,
        ),
        ("no query", with("query", None), MissingField),
        ("query as a number", with("query", Some(json!(42))), WrongType),
        ("no payload", with("payload", None), MissingField),
        (
            "payload as a string",
            with("payload", Some(json!("{}"))),
            WrongType,
        ),
        ("the value is an array", json!([base()]), WrongType),
        ("the value is a number", json!(1), WrongType),
        ("no location", with("payload/location", None), MissingField),
        ("no current", with("payload/current", None), MissingField),
        (
            "empty name",
            with("payload/location/name", Some(json!(""))),
            InvalidValue,
        ),
        (
            "blank name",
            with("payload/location/name", Some(json!("  \t "))),
            InvalidValue,
        ),
        (
            "name as a number",
            with("payload/location/name", Some(json!(7))),
            WrongType,
        ),
        ("no country", with("payload/location/country", None), MissingField),
        ("no region", with("payload/location/region", None), MissingField),
        (
            "name of 1,025 bytes",
            with("payload/location/name", Some(long(1025))),
            InvalidValue,
        ),
        (
            "region of 1,025 bytes",
            with("payload/location/region", Some(long(1025))),
            InvalidValue,
        ),
        (
            "lat 91",
            with("payload/location/lat", Some(json!(91))),
            OutOfRange,
        ),
        (
            "lon -181",
            with("payload/location/lon", Some(json!(-181))),
            OutOfRange,
        ),
        ("no lat", with("payload/location/lat", None), MissingField),
        ("no temp_c", with("payload/current/temp_c", None), MissingField),
        (
            "no wind_kph",
            with("payload/current/wind_kph", None),
            MissingField,
        ),
        (
            "no last_updated_epoch",
            with("payload/current/last_updated_epoch", None),
            MissingField,
        ),
        (
            "temp_c as a string",
            with("payload/current/temp_c", Some(json!("12.5"))),
            WrongType,
        ),
        (
            "temp_c null",
            with("payload/current/temp_c", Some(Value::Null)),
            WrongType,
        ),
        (
            "temp_c 61",
            with("payload/current/temp_c", Some(json!(61))),
            OutOfRange,
        ),
        (
            "wind_kph -1",
            with("payload/current/wind_kph", Some(json!(-1))),
            OutOfRange,
        ),
        (
            "epoch 0",
            with("payload/current/last_updated_epoch", Some(json!(0))),
            OutOfRange,
        ),
        (
            "feelslike_c -101",
            with("payload/current/feelslike_c", Some(json!(-101))),
            OutOfRange,
        ),
        (
            "gust_kph 501",
            with("payload/current/gust_kph", Some(json!(501))),
            OutOfRange,
        ),
        (
            "pressure_mb 800",
            with("payload/current/pressure_mb", Some(json!(800))),
            OutOfRange,
        ),
        (
            "precip_mm 1001",
            with("payload/current/precip_mm", Some(json!(1001))),
            OutOfRange,
        ),
        (
            "vis_km -1",
            with("payload/current/vis_km", Some(json!(-1))),
            OutOfRange,
        ),
        ("uv 31", with("payload/current/uv", Some(json!(31))), OutOfRange),
        (
            "wind_degree 361",
            with("payload/current/wind_degree", Some(json!(361))),
            OutOfRange,
        ),
        (
            "humidity 101",
            with("payload/current/humidity", Some(json!(101))),
            OutOfRange,
        ),
        (
            "cloud -1",
            with("payload/current/cloud", Some(json!(-1))),
            OutOfRange,
        ),
        (
            "humidity as a string",
            with("payload/current/humidity", Some(json!("86"))),
            WrongType,
        ),
        (
            "is_day 0.5",
            with("payload/current/is_day", Some(json!(0.5))),
            OutOfRange,
        ),
        (
            "wind_dir of 17 bytes",
            with("payload/current/wind_dir", Some(long(17))),
            InvalidValue,
        ),
        (
            "condition text of 1,025 bytes",
            with("payload/current/condition/text", Some(long(1025))),
            InvalidValue,
        ),
        (
            "condition code -1",
            with("payload/current/condition/code", Some(json!(-1))),
            OutOfRange,
        ),
        (
            "condition as a string",
            with("payload/current/condition", Some(json!("Clear"))),
            WrongType,
        ),
    ]
}

/// Refusals the schema cannot express, as (case, value bytes, class): these documents pass the
/// schema, and persist refuses them. docs/fetch.md lists the same.
fn beyond_the_schema() -> Vec<(&'static str, Vec<u8>, RejectionClass)> {
    use RejectionClass::*;
    let doc = |v: Value| serde_json::to_vec(&v).unwrap();
    let in_an_hour_and_more = Utc::now() + Duration::minutes(90);
    let text = serde_json::to_string(&base()).unwrap();
    vec![
        // Relative to the reader's clock and persist.max_future_secs.
        (
            "observation time ahead of the clock",
            doc(with(
                "payload/current/last_updated_epoch",
                Some(json!(in_an_hour_and_more.timestamp())),
            )),
            FutureTimestamp,
        ),
        (
            "fetched_at ahead of the clock",
            doc(with("fetched_at", Some(json!(in_an_hour_and_more.to_rfc3339())))),
            FutureTimestamp,
        ),
        // A pattern checks the shape of a time, not the calendar.
        (
            "fetched_at on 30 February",
            doc(with("fetched_at", Some(json!("2026-02-30T10:00:00Z")))),
            InvalidValue,
        ),
        // maxLength counts characters; persist's bounds are bytes of UTF-8.
        (
            "name of 600 two-byte characters",
            doc(with("payload/location/name", Some(json!("é".repeat(600))))),
            InvalidValue,
        ),
        // JSON Schema compares numbers by value: 1.0 is 1; persist reads the version as an integer and
        // refuses 1.0 as a version it does not know.
        (
            "schema_version written 1.0",
            text.replacen("\"schema_version\":1", "\"schema_version\":1.0", 1)
                .into_bytes(),
            UnknownSchemaVersion,
        ),
        // A parsed document has no duplicate keys; persist refuses them.
        (
            "a duplicate field",
            text.replacen("\"query\":", "\"query\":\"Paris\",\"query\":", 1)
                .into_bytes(),
            InvalidValue,
        ),
        // Not JSON documents at all.
        ("no value (a tombstone)", Vec::new(), EmptyValue),
        (
            "not UTF-8",
            b"{\"schema_version\":1,\"query\":\"\xff\"}".to_vec(),
            NotUtf8,
        ),
        ("not JSON", b"{\"schema_version\":1,".to_vec(), InvalidJson),
        (
            "larger than persist.max_value_bytes",
            doc(with("query", Some(json!("q".repeat(300 * 1024))))),
            TooLarge,
        ),
    ]
}

#[test]
fn the_schema_refuses_what_persist_refuses_and_lists_what_it_cannot_express() {
    let rules = Rules::default();
    let now = Utc::now();
    // The base case is valid for both, so each case below fails for its own change only.
    assert_eq!(schema_verdicts(&[base()]), vec![None]);
    validate(Some(&serde_json::to_vec(&base()).unwrap()), now, &rules).unwrap();

    let cases = expressible();
    let docs: Vec<Value> = cases.iter().map(|(_, d, _)| d.clone()).collect();
    for ((name, doc, class), verdict) in cases.iter().zip(schema_verdicts(&docs)) {
        let refused = validate(Some(&serde_json::to_vec(doc).unwrap()), now, &rules)
            .expect_err(&format!("persist accepts '{name}'"));
        assert_eq!(refused.class, *class, "{name}: {}", refused.reason);
        assert!(
            verdict.is_some(),
            "the schema accepts '{name}', which persist refuses ({})",
            refused.reason
        );
    }

    let gaps = beyond_the_schema();
    let documents: Vec<(usize, Value)> = gaps
        .iter()
        .enumerate()
        .filter_map(|(i, (_, bytes, _))| serde_json::from_slice::<Value>(bytes).ok().map(|v| (i, v)))
        .collect();
    let verdicts = schema_verdicts(&documents.iter().map(|(_, v)| v.clone()).collect::<Vec<_>>());
    for ((i, _), verdict) in documents.iter().zip(verdicts) {
        assert_eq!(
            verdict, None,
            "the schema now expresses '{}': move it to expressible()",
            gaps[*i].0
        );
    }
    for (name, bytes, class) in &gaps {
        let value = (!bytes.is_empty()).then_some(bytes.as_slice());
        let refused = validate(value, now, &rules).expect_err(&format!("persist accepts '{name}'"));
        assert_eq!(refused.class, *class, "{name}: {}", refused.reason);
    }

    // Every class a record can be refused for is covered, except the database's own refusal, which is
    // about the row in PostgreSQL, not the document.
    let covered: BTreeSet<RejectionClass> = cases
        .iter()
        .map(|c| c.2)
        .chain(gaps.iter().map(|g| g.2))
        .chain([RejectionClass::DbRejected])
        .collect();
    assert_eq!(covered, RejectionClass::ALL.into_iter().collect());
}
