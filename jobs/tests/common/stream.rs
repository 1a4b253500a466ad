//! Observation streams for the persist tests: generated `current.json` records in the shared
//! envelope, produced to the test's topic, and the checks that every produced offset was stored
//! once; plus `weatherflow run persist` as a child process.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::future::join_all;
use rdkafka::producer::{FutureProducer, FutureRecord};
use sea_orm::{ConnectionTrait, Statement};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tokio::process::Child;
use weatherflow::envelope::{Envelope, SCHEMA_VERSION, Source, location_key};

use super::TestContext;

/// A place for generated observations.
#[derive(Debug, Clone)]
pub struct Place {
    pub name: String,
    pub region: String,
    pub country: String,
    pub lat: f64,
    pub lon: f64,
}

impl Place {
    pub fn numbered(i: usize) -> Self {
        let countries = ["United Kingdom", "France", "Germany", "Spain", "Italy"];
        Self {
            name: format!("Town {i}"),
            region: if i.is_multiple_of(4) {
                String::new()
            } else {
                format!("Region {}", i % 7)
            },
            country: countries[i % countries.len()].to_owned(),
            lat: -60.0 + (i % 120) as f64,
            lon: -170.0 + (i % 340) as f64,
        }
    }

    pub fn key(&self) -> String {
        location_key(&self.name, &self.region, &self.country)
    }
}

/// A `current.json` body shaped like the real London recording (weatherapi.md §4.4), with the
/// place, time and measurements varied.
pub fn payload(place: &Place, epoch: i64, temp_c: f64, humidity: i64, wind_kph: f64) -> Value {
    json!({
        "location": {
            "name": place.name, "region": place.region, "country": place.country,
            "lat": place.lat, "lon": place.lon, "tz_id": "Europe/London",
            "localtime_epoch": epoch + 60, "localtime": "2026-01-05 17:14"
        },
        "current": {
            "last_updated_epoch": epoch, "last_updated": "2026-01-05 17:00",
            "temp_c": temp_c, "temp_f": temp_c * 1.8 + 32.0, "is_day": 0,
            "condition": {"text": "Clear", "icon": "//cdn.weatherapi.com/weather/64x64/night/113.png", "code": 1000},
            "wind_mph": wind_kph / 1.609, "wind_kph": wind_kph, "wind_degree": 318, "wind_dir": "NW",
            "pressure_mb": 1015.0, "pressure_in": 29.97, "precip_mm": 0.0, "precip_in": 0.0,
            "humidity": humidity, "cloud": 0, "feelslike_c": feels_like(temp_c), "feelslike_f": 25.0,
            "windchill_c": -4.0, "windchill_f": 24.8, "heatindex_c": 0.0, "heatindex_f": 32.0,
            "dewpoint_c": -6.1, "dewpoint_f": 21.1, "vis_km": 10.0, "vis_miles": 6.0, "uv": 0.0,
            "gust_mph": 13.1, "gust_kph": 21.1,
            "short_rad": 0, "diff_rad": 0, "dni": 0, "gti": 0
        }
    })
}

/// Like the API's values, one decimal (serde_json reads short decimals exactly).
pub fn feels_like(temp_c: f64) -> f64 {
    ((temp_c - 4.0) * 10.0).round() / 10.0
}

pub fn fetched_at() -> DateTime<Utc> {
    DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).unwrap()
}

/// The Kafka value for a payload, through the shared envelope type.
pub fn envelope(payload: &Value, fetched_at: DateTime<Utc>) -> Vec<u8> {
    Envelope {
        schema_version: SCHEMA_VERSION,
        source: Source::Simulated,
        fetched_at,
        query: "test".into(),
        payload: RawValue::from_string(payload.to_string()).unwrap(),
    }
    .to_bytes()
}

/// An epoch in the recent past, so that no generated observation is in the future.
pub fn base_epoch() -> i64 {
    Utc::now().timestamp() - 86_400
}

/// One generated, valid message.
#[derive(Debug, Clone)]
pub struct Generated {
    pub key: String,
    pub observed_at: i64,
    pub temp_c: f64,
    pub humidity: i64,
    pub wind_kph: f64,
    pub place: Place,
    pub fetched_at: DateTime<Utc>,
    pub value: Vec<u8>,
}

pub fn generate(i: usize, places: usize, epoch0: i64) -> Generated {
    let place = Place::numbered(i % places);
    let observed_at = epoch0 + (i / places) as i64 * 900;
    let temp_c = (((i * 37) % 700) as f64 - 300.0) / 10.0;
    let humidity = (i * 13 % 101) as i64;
    let wind_kph = ((i * 7) % 600) as f64 / 10.0;
    let fetched_at = fetched_at();
    let value = envelope(
        &payload(&place, observed_at, temp_c, humidity, wind_kph),
        fetched_at,
    );
    Generated {
        key: place.key(),
        observed_at,
        temp_c,
        humidity,
        wind_kph,
        place,
        fetched_at,
        value,
    }
}

/// Produces and waits for the delivery report; returns (partition, offset).
pub async fn send(
    producer: &FutureProducer,
    topic: &str,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    partition: Option<i32>,
) -> (i32, i64) {
    let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic);
    if let Some(k) = key {
        record = record.key(k);
    }
    if let Some(v) = value {
        record = record.payload(v);
    }
    if let Some(p) = partition {
        record = record.partition(p);
    }
    let delivery = producer
        .send(record, Duration::from_secs(10))
        .await
        .map_err(|(e, _)| e)
        .expect("delivery");
    (delivery.partition, delivery.offset)
}

/// Produces many generated messages concurrently, keyed by location.
pub async fn send_all(producer: &FutureProducer, topic: &str, messages: &[Generated]) -> Vec<(i32, i64)> {
    let mut out = Vec::with_capacity(messages.len());
    for chunk in messages.chunks(5000) {
        let sends = chunk
            .iter()
            .map(|g| send(producer, topic, Some(g.key.as_bytes()), Some(&g.value), None));
        out.extend(join_all(sends).await);
    }
    out
}

pub async fn create_topics(ctx: &TestContext) {
    let k = &ctx.config.kafka;
    weatherflow::kafka::ensure_topic(k, &k.observations_topic, k.partitions)
        .await
        .expect("create the observations topic");
}

pub async fn try_count(ctx: &TestContext) -> Option<i64> {
    let row = ctx
        .db
        .query_one_raw(Statement::from_string(
            ctx.db.get_database_backend(),
            "SELECT count(*) FROM observations",
        ))
        .await
        .ok()??;
    row.try_get_by_index::<i64>(0).ok()
}

/// `weatherflow run persist` as a child process with this test's settings; stderr goes to a file.
pub fn spawn_persist(ctx: &TestContext, until_idle: bool, extra_env: &[(&str, &str)]) -> (Child, PathBuf) {
    let mut args = vec!["run", "persist"];
    if until_idle {
        args.push("--until-idle");
    }
    let mut env = ctx.child_env_with(&[
        ("WEATHERFLOW_PERSIST_SESSION_TIMEOUT_MS", "6000"),
        ("WEATHERFLOW_PERSIST_IDLE_MS", "1000"),
    ]);
    env.extend(extra_env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let dir = std::env::temp_dir();
    let name = format!("{}-{}", ctx.db_name, Utc::now().timestamp_micros());
    let child = super::spawn(&dir, &name, &args, &env);
    (child, dir.join(format!("{name}.log")))
}

pub async fn wait_for_rows(ctx: &TestContext, at_least: i64, within: Duration) -> i64 {
    let deadline = Instant::now() + within;
    loop {
        let n = try_count(ctx).await.unwrap_or(0);
        if n >= at_least {
            return n;
        }
        assert!(Instant::now() < deadline, "only {n} rows after {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Rows per partition: count, and the offsets they cover.
pub async fn assert_every_offset_stored_once(ctx: &TestContext, deliveries: &[(i32, i64)]) {
    let mut expected: BTreeMap<i32, BTreeSet<i64>> = BTreeMap::new();
    for &(p, o) in deliveries {
        expected.entry(p).or_default().insert(o);
    }
    let rows = ctx
        .db
        .query_all_raw(Statement::from_string(
            ctx.db.get_database_backend(),
            "SELECT kafka_partition, kafka_offset FROM observations",
        ))
        .await
        .unwrap();
    let mut stored: BTreeMap<i32, BTreeSet<i64>> = BTreeMap::new();
    for r in &rows {
        let p: i32 = r.try_get_by_index(0).unwrap();
        let o: i64 = r.try_get_by_index(1).unwrap();
        assert!(
            stored.entry(p).or_default().insert(o),
            "offset {p}/{o} stored twice"
        );
    }
    assert_eq!(rows.len(), deliveries.len(), "one row per message");
    assert!(
        stored == expected,
        "the stored offsets are exactly the produced offsets"
    );
}

/// A database outage for one test: its database refuses connections and its sessions are ended,
/// through an admin connection to the main database, so nothing else on the server is disturbed.
pub struct Outage {
    admin: sea_orm::DatabaseConnection,
    db: String,
}

impl Outage {
    /// Connects to the main database (the test's database owner may block its own database).
    pub async fn new(ctx: &TestContext) -> Self {
        use secrecy::ExposeSecret;
        let url = weatherflow::config::Config::load_from(None, std::env::vars())
            .unwrap()
            .database
            .url
            .expose_secret()
            .to_owned();
        let admin = sea_orm::Database::connect(&url).await.expect("admin connection");
        Self {
            admin,
            db: ctx.db_name.clone(),
        }
    }

    /// The database goes away: new connections are refused and the open ones are ended.
    pub async fn begin(&self) {
        let db = &self.db;
        self.admin
            .execute_unprepared(&format!("ALTER DATABASE {db} ALLOW_CONNECTIONS false"))
            .await
            .unwrap();
        self.admin
            .execute_unprepared(&format!(
                // Client sessions only: an autovacuum worker on the database counts as a superuser
                // process, which the test's role may not end (and which holds no session of ours).
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = '{db}' AND backend_type = 'client backend'"
            ))
            .await
            .unwrap();
    }

    /// The database is back.
    pub async fn end(&self) {
        self.admin
            .execute_unprepared(&format!("ALTER DATABASE {} ALLOW_CONNECTIONS true", self.db))
            .await
            .unwrap();
    }
}

/// Resident memory of a process (`VmRSS`) and its peak (`VmHWM`), in bytes, from `/proc`.
pub fn rss_of(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("reading /proc status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .expect("a VmRSS/VmHWM line")
            * 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Waits until `log` (a child's stderr file) contains `needle`.
pub async fn wait_for_log(log: &std::path::Path, needle: &str, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "no '{needle}' in the log after {within:?}: {text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
