//! The persist job on the real broker and a real database: values and lineage, idempotence, the
//! quarantine of a malformed corpus, a SIGKILL mid-backlog, a database outage, and two consumers
//! sharing a group.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use chrono::Utc;
use common::stream::*;
use common::{TestContext, exit_within, signal};
use entity::{observations, rejected_records};
use rdkafka::Message;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::message::Headers;
use rdkafka::producer::FutureProducer;
use sea_orm::{ConnectionTrait, EntityTrait, QueryOrder, Statement};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use weatherflow::config::Config;
use weatherflow::jobs::persist::{self, PersistRequest, PersistSummary};

// ---------------------------------------------------------------- harness

/// The test's configuration with settings that keep runs short.
fn config(ctx: &TestContext) -> Config {
    let mut c = ctx.config.clone();
    c.persist.batch_size = 50;
    c.persist.idle_ms = 500;
    c.persist.session_timeout_ms = 6000;
    c.persist.retry_initial_ms = 100;
    c.persist.retry_max_ms = 1000;
    c
}

async fn run_until_idle(config: &Config, ctx: &TestContext) -> PersistSummary {
    let run = persist::run(
        config,
        &ctx.db,
        PersistRequest {
            until_idle: true,
            ..Default::default()
        },
        CancellationToken::new(),
    );
    tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .expect("the persist job drains within 90 s")
        .expect("the persist job succeeds")
}

/// Reads `n` messages from the dead-letter topic with a fresh group.
async fn read_dlq(ctx: &TestContext, n: usize) -> Vec<rdkafka::message::OwnedMessage> {
    let k = &ctx.config.kafka;
    let consumer = common::topic_reader(k, &k.dlq_topic, &format!("{}-dlq-reader", k.consumer_group));
    let out = common::next_messages(&consumer, n).await;
    // Nothing beyond the expected messages.
    let extra = tokio::time::timeout(Duration::from_secs(2), consumer.recv()).await;
    assert!(extra.is_err(), "more dead-letter messages than records rejected");
    out
}

fn header(m: &rdkafka::message::OwnedMessage, name: &str) -> Option<String> {
    let headers = m.headers()?;
    headers
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

// ---------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_records_are_stored_with_their_values_and_lineage() {
    let ctx = TestContext::new().await;
    create_topics(&ctx).await;
    let producer = weatherflow::kafka::producer(&ctx.config.kafka).unwrap();
    let epoch0 = base_epoch();
    let messages: Vec<Generated> = (0..120).map(|i| generate(i, 12, epoch0)).collect();
    let deliveries = send_all(&producer, &ctx.config.kafka.observations_topic, &messages).await;

    let summary = run_until_idle(&config(&ctx), &ctx).await;
    assert_eq!(summary.consumed, 120);
    assert_eq!(summary.stored, 120);
    assert_eq!((summary.duplicates, summary.rejected_total()), (0, 0));

    let rows = observations::Entity::find().all(&ctx.db).await.unwrap();
    assert_eq!(rows.len(), 120);
    let by_identity: HashMap<(String, i64), &observations::Model> = rows
        .iter()
        .map(|r| ((r.location_key.clone(), r.observed_at.timestamp()), r))
        .collect();
    for (g, (partition, offset)) in messages.iter().zip(&deliveries) {
        let row = by_identity[&(g.key.clone(), g.observed_at)];
        assert_eq!(row.location_name, g.place.name);
        assert_eq!(row.region, g.place.region);
        assert_eq!(row.country, g.place.country);
        assert_eq!((row.lat, row.lon), (g.place.lat, g.place.lon));
        assert_eq!(row.temp_c, g.temp_c);
        assert_eq!(row.humidity, Some(g.humidity as i32));
        assert_eq!(row.wind_kph, g.wind_kph);
        assert_eq!(row.feelslike_c, Some(feels_like(g.temp_c)));
        assert_eq!(row.pressure_mb, Some(1015.0));
        assert_eq!(row.condition_code, Some(1000));
        assert_eq!(row.is_day, Some(false));
        assert_eq!(row.source, "simulated");
        assert_eq!(row.fetched_at, g.fetched_at);
        assert_eq!(
            row.kafka_topic.as_deref(),
            Some(ctx.config.kafka.observations_topic.as_str())
        );
        assert_eq!(row.kafka_partition, Some(*partition));
        assert_eq!(row.kafka_offset, Some(*offset));
        assert!(row.ingested_at >= row.fetched_at);
    }
    let rejected = rejected_records::Entity::find().all(&ctx.db).await.unwrap();
    assert!(rejected.is_empty(), "{rejected:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_observation_twice_is_one_row_and_the_first_copy_wins() {
    let ctx = TestContext::new().await;
    create_topics(&ctx).await;
    let topic = ctx.config.kafka.observations_topic.clone();
    let producer = weatherflow::kafka::producer(&ctx.config.kafka).unwrap();
    let place = Place::numbered(1);
    let epoch = base_epoch();
    let first = envelope(&payload(&place, epoch, 12.5, 80, 10.0), fetched_at());
    let refetched = envelope(&payload(&place, epoch, 13.0, 81, 11.0), fetched_at());
    let key = place.key();
    // Same partition, so the three land in one batch: the duplicates within a batch are removed
    // before the statement, and the first copy is the one kept.
    let (p, first_offset) = send(&producer, &topic, Some(key.as_bytes()), Some(&first), Some(0)).await;
    send(&producer, &topic, Some(key.as_bytes()), Some(&first), Some(0)).await;
    send(&producer, &topic, Some(key.as_bytes()), Some(&refetched), Some(0)).await;

    let summary = run_until_idle(&config(&ctx), &ctx).await;
    assert_eq!((summary.consumed, summary.stored, summary.duplicates), (3, 1, 2));
    let rows = observations::Entity::find().all(&ctx.db).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].temp_c, 12.5);
    assert_eq!(
        (rows[0].kafka_partition, rows[0].kafka_offset),
        (Some(p), Some(first_offset))
    );

    // Fetched again later, read by a later run (another batch, another transaction): still one row.
    send(&producer, &topic, Some(key.as_bytes()), Some(&refetched), Some(1)).await;
    let summary = run_until_idle(&config(&ctx), &ctx).await;
    assert_eq!((summary.consumed, summary.stored, summary.duplicates), (1, 0, 1));
    assert_eq!(ctx.scalar_i64("SELECT count(*) FROM observations").await, 1);
}

/// One malformed message and the class it must be quarantined with.
struct Bad {
    what: &'static str,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    class: &'static str,
}

fn corpus(place: &Place, epoch: i64) -> Vec<Bad> {
    let good = || payload(place, epoch, 10.0, 50, 12.0);
    let edited = |edit: &dyn Fn(&mut Value)| {
        let mut p = good();
        edit(&mut p);
        envelope(&p, fetched_at())
    };
    let key = Some(place.key().into_bytes());
    let bad = |what, value: Vec<u8>, class| Bad {
        what,
        key: key.clone(),
        value: Some(value),
        class,
    };
    let mut one_mb = br#"{"schema_version":1,"padding":""#.to_vec();
    one_mb.resize(1024 * 1024 - 2, b'x');
    one_mb.extend_from_slice(b"\"}");
    let valid_text = String::from_utf8(envelope(&good(), fetched_at())).unwrap();
    vec![
        bad(
            "truncated JSON",
            br#"{"schema_version":1,"source":"simu"#.to_vec(),
            "invalid_json",
        ),
        bad("not JSON", b"temperature: 10 degrees".to_vec(), "invalid_json"),
        bad("array instead of an object", b"[1,2,3]".to_vec(), "wrong_type"),
        bad(
            "temp_c as a string",
            edited(&|p| p["current"]["temp_c"] = json!("hot")),
            "wrong_type",
        ),
        bad(
            "lat as a string",
            edited(&|p| p["location"]["lat"] = json!("51.5")),
            "wrong_type",
        ),
        bad(
            "humidity with a unit",
            edited(&|p| p["current"]["humidity"] = json!("86%")),
            "wrong_type",
        ),
        bad(
            "temp_c missing",
            edited(&|p| {
                p["current"].as_object_mut().unwrap().remove("temp_c");
            }),
            "missing_field",
        ),
        bad(
            "location.name missing",
            edited(&|p| {
                p["location"].as_object_mut().unwrap().remove("name");
            }),
            "missing_field",
        ),
        bad(
            "payload missing",
            br#"{"schema_version":1,"source":"simulated","fetched_at":"2026-01-05T17:00:00Z","query":"x"}"#
                .to_vec(),
            "missing_field",
        ),
        bad(
            "temp_c too hot",
            edited(&|p| p["current"]["temp_c"] = json!(75.0)),
            "out_of_range",
        ),
        bad(
            "temp_c too cold",
            edited(&|p| p["current"]["temp_c"] = json!(-95)),
            "out_of_range",
        ),
        bad(
            "humidity over 100",
            edited(&|p| p["current"]["humidity"] = json!(120)),
            "out_of_range",
        ),
        bad(
            "negative wind",
            edited(&|p| p["current"]["wind_kph"] = json!(-1.0)),
            "out_of_range",
        ),
        bad(
            "hurricane beyond records",
            edited(&|p| p["current"]["wind_kph"] = json!(500.0)),
            "out_of_range",
        ),
        bad(
            "pressure too low",
            edited(&|p| p["current"]["pressure_mb"] = json!(700.0)),
            "out_of_range",
        ),
        bad(
            "pressure too high",
            edited(&|p| p["current"]["pressure_mb"] = json!(1100.0)),
            "out_of_range",
        ),
        bad(
            "lat beyond the pole",
            edited(&|p| p["location"]["lat"] = json!(95.0)),
            "out_of_range",
        ),
        bad(
            "lon beyond the date line",
            edited(&|p| p["location"]["lon"] = json!(-200.0)),
            "out_of_range",
        ),
        bad(
            "observed two hours ahead",
            edited(&|p| p["current"]["last_updated_epoch"] = json!(Utc::now().timestamp() + 7200)),
            "future_timestamp",
        ),
        bad(
            "schema version 2",
            valid_text
                .replacen("\"schema_version\":1", "\"schema_version\":2", 1)
                .into_bytes(),
            "unknown_schema_version",
        ),
        bad(
            "unknown source",
            valid_text
                .replacen("\"simulated\"", "\"satellite\"", 1)
                .into_bytes(),
            "invalid_value",
        ),
        bad("empty value", Vec::new(), "empty_value"),
        Bad {
            what: "tombstone (null value)",
            key: key.clone(),
            value: None,
            class: "empty_value",
        },
        bad("a 1 MB value", one_mb, "too_large"),
        bad("latin-1 bytes", b"{\"name\":\"Z\xfcrich\"}".to_vec(), "not_utf8"),
        // Passes validation; PostgreSQL refuses NUL in text (SQLSTATE 22021), so the batch is split
        // and only this row is quarantined.
        bad(
            "NUL in the location name",
            edited(&|p| p["location"]["name"] = json!("Bad\u{0}Town")),
            "db_rejected",
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_corpus_is_quarantined_by_class_and_valid_records_still_land() {
    let ctx = TestContext::new().await;
    let k = ctx.config.kafka.clone();
    // A topic and a producer that accept a 1 MB record, as the issue's corpus needs.
    let admin: AdminClient<DefaultClientContext> = weatherflow::kafka::base_config(&k).create().unwrap();
    let topic = NewTopic::new(&k.observations_topic, k.partitions, TopicReplication::Fixed(1))
        .set("max.message.bytes", "4194304");
    let created = admin.create_topics([&topic], &AdminOptions::new()).await.unwrap();
    assert!(created.iter().all(Result::is_ok), "{created:?}");
    let producer: FutureProducer = weatherflow::kafka::base_config(&k)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.max.bytes", "4194304")
        .create()
        .unwrap();

    let place = Place::numbered(3);
    let epoch = base_epoch();
    let corpus = corpus(&place, epoch);
    assert!(corpus.len() >= 15);
    // Everything on partition 0, in this order: valid, corpus, valid; a null-key valid record in the
    // middle. One partition keeps the offsets predictable and puts valid and bad rows in one batch.
    let mut expected_valid = Vec::new();
    let mut sent = |epoch_offset: i64| {
        let g = envelope(&payload(&place, epoch + epoch_offset, 5.0, 60, 8.0), fetched_at());
        expected_valid.push(epoch + epoch_offset);
        g
    };
    let before = sent(0);
    let null_key_valid = sent(900);
    let after: Vec<Vec<u8>> = (2..12).map(|i| sent(i * 900)).collect();
    let key = place.key();
    let t = &k.observations_topic;
    send(&producer, t, Some(key.as_bytes()), Some(&before), Some(0)).await;
    let mut offsets_by_what = BTreeMap::new();
    for (i, b) in corpus.iter().enumerate() {
        let (_, offset) = send(&producer, t, b.key.as_deref(), b.value.as_deref(), Some(0)).await;
        offsets_by_what.insert(offset, b);
        if i == corpus.len() / 2 {
            send(&producer, t, None, Some(&null_key_valid), Some(0)).await;
        }
    }
    for v in &after {
        send(&producer, t, Some(key.as_bytes()), Some(v), Some(0)).await;
    }

    let mut cfg = config(&ctx);
    cfg.persist.batch_size = 100; // the whole corpus in one batch: the NUL row must not fail it
    let summary = run_until_idle(&cfg, &ctx).await;
    let total = (corpus.len() + 12) as u64;
    assert_eq!(summary.consumed, total);
    assert_eq!(summary.stored, 12, "{summary:?}");
    assert_eq!(
        summary.rejected_total(),
        corpus.len() as u64,
        "{:?}",
        summary.rejected
    );

    // Valid records before, between and after the bad ones all landed, the null-key one included.
    let rows = observations::Entity::find()
        .order_by_asc(observations::Column::ObservedAt)
        .all(&ctx.db)
        .await
        .unwrap();
    let stored: Vec<i64> = rows.iter().map(|r| r.observed_at.timestamp()).collect();
    assert_eq!(stored, expected_valid);
    assert!(rows.iter().all(|r| r.location_key == key));

    // rejected_records: one row per bad message, right class, complete raw payload and key.
    let rejected = rejected_records::Entity::find()
        .order_by_asc(rejected_records::Column::KafkaOffset)
        .all(&ctx.db)
        .await
        .unwrap();
    assert_eq!(rejected.len(), corpus.len());
    for r in &rejected {
        let b = offsets_by_what[&r.kafka_offset];
        assert_eq!(r.error_class, b.class, "{}: {}", b.what, r.reason);
        assert_eq!(r.payload, b.value, "{}: payload kept byte for byte", b.what);
        assert_eq!(r.key, b.key, "{}", b.what);
        assert_eq!((r.kafka_topic.as_str(), r.kafka_partition), (t.as_str(), 0));
        assert!(!r.reason.is_empty() && !r.reason.contains('\0'));
    }
    let reason_of = |class: &str| {
        rejected
            .iter()
            .filter(|r| r.error_class == class)
            .map(|r| r.reason.clone())
            .collect::<Vec<_>>()
    };
    assert!(reason_of("missing_field").contains(&"payload.current.temp_c is missing".to_owned()));
    assert!(
        reason_of("out_of_range")
            .contains(&"payload.current.humidity = 120 is out of range [0, 100]".to_owned())
    );
    assert!(
        reason_of("db_rejected")[0].contains("0x00"),
        "{:?}",
        reason_of("db_rejected")
    );

    // The dead-letter topic: the same records, complete, with the lineage and the verdict in headers.
    let dlq = read_dlq(&ctx, corpus.len()).await;
    let by_offset: HashMap<i64, &rejected_records::Model> =
        rejected.iter().map(|r| (r.kafka_offset, r)).collect();
    let mut seen = BTreeSet::new();
    for m in &dlq {
        let offset: i64 = header(m, "original_offset").unwrap().parse().unwrap();
        let r = by_offset[&offset];
        assert_eq!(header(m, "original_topic").as_deref(), Some(t.as_str()));
        assert_eq!(header(m, "original_partition").as_deref(), Some("0"));
        assert_eq!(header(m, "error_class").as_deref(), Some(r.error_class.as_str()));
        assert_eq!(header(m, "reason").as_deref(), Some(r.reason.as_str()));
        assert_eq!(m.payload().map(<[u8]>::to_vec), r.payload, "offset {offset}");
        assert_eq!(m.key().map(<[u8]>::to_vec), r.key, "offset {offset}");
        seen.insert(offset);
    }
    assert_eq!(seen.len(), corpus.len());

    // A replay (offsets reset by a new group) stores every rejection once and no observation twice.
    let mut replay = cfg.clone();
    replay.kafka.consumer_group = format!("{}-replay", cfg.kafka.consumer_group);
    let summary = run_until_idle(&replay, &ctx).await;
    assert_eq!(
        (summary.consumed, summary.stored, summary.duplicates),
        (total, 0, 12)
    );
    assert_eq!(
        ctx.scalar_i64("SELECT count(*) FROM rejected_records").await,
        corpus.len() as i64
    );
    assert_eq!(ctx.scalar_i64("SELECT count(*) FROM observations").await, 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_consumers_in_one_group_share_the_partitions_without_duplicates() {
    let ctx = TestContext::new().await;
    create_topics(&ctx).await;
    let mut cfg = config(&ctx);
    cfg.persist.idle_ms = 1500;
    cfg.persist.writers = 1;
    let producer = weatherflow::kafka::producer(&ctx.config.kafka).unwrap();
    let epoch0 = base_epoch();
    let messages: Vec<Generated> = (0..3000).map(|i| generate(i, 60, epoch0)).collect();

    let a = persist::run(
        &cfg,
        &ctx.db,
        PersistRequest {
            until_idle: true,
            ..Default::default()
        },
        CancellationToken::new(),
    );
    let b = persist::run(
        &cfg,
        &ctx.db,
        PersistRequest {
            until_idle: true,
            ..Default::default()
        },
        CancellationToken::new(),
    );
    let topic = ctx.config.kafka.observations_topic.clone();
    let produce = async {
        // Trickle the messages in over about three seconds, so both consumers are in the group and
        // assigned while records arrive.
        tokio::time::sleep(Duration::from_millis(500)).await;
        for chunk in messages.chunks(100) {
            send_all(&producer, &topic, chunk).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let (a, b, ()) = tokio::time::timeout(Duration::from_secs(90), async { tokio::join!(a, b, produce) })
        .await
        .expect("both consumers drain within 90 s");
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(
        a.consumed > 0 && b.consumed > 0,
        "both consumed: {} and {}",
        a.consumed,
        b.consumed
    );
    assert_eq!(
        a.consumed + b.consumed,
        3000,
        "every record read once: {a:?} {b:?}"
    );
    assert_eq!(a.stored + b.stored, 3000);
    assert_eq!(
        a.duplicates + b.duplicates,
        0,
        "a revoked partition was flushed and committed first"
    );
    assert_eq!(ctx.scalar_i64("SELECT count(*) FROM observations").await, 3000);
    assert_eq!(
        ctx.scalar_i64("SELECT count(DISTINCT (kafka_partition, kafka_offset)) FROM observations")
            .await,
        3000
    );
}

// ---------------------------------------------------------------- the real binary

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_backlog_then_restart_stores_every_message_exactly_once() {
    let ctx = TestContext::new().await;
    create_topics(&ctx).await;
    let producer = weatherflow::kafka::producer(&ctx.config.kafka).unwrap();
    let epoch0 = base_epoch() - 30 * 86_400;
    let messages: Vec<Generated> = (0..20_000).map(|i| generate(i, 200, epoch0)).collect();
    let deliveries = send_all(&producer, &ctx.config.kafka.observations_topic, &messages).await;

    let small_batches = [("WEATHERFLOW_PERSIST_BATCH_SIZE", "100")];
    let (mut child, log) = spawn_persist(&ctx, false, &small_batches);
    let at_kill = wait_for_rows(&ctx, 2000, Duration::from_secs(60)).await;
    signal(&child, nix::sys::signal::Signal::SIGKILL);
    let status = exit_within(&mut child, Duration::from_secs(10))
        .await
        .expect("the consumer exits in time");
    assert!(!status.success(), "killed, not exited");
    let after_kill = try_count(&ctx).await.unwrap();
    assert!(
        after_kill < 20_000,
        "killed mid-stream ({at_kill} rows when killed, {after_kill} after)"
    );

    let (mut child, log2) = spawn_persist(&ctx, true, &small_batches);
    let status = exit_within(&mut child, Duration::from_secs(60))
        .await
        .expect("the consumer exits in time");
    let stderr = std::fs::read_to_string(&log2).unwrap_or_default();
    assert!(status.success(), "restart drained and exited 0: {stderr}");
    assert_every_offset_stored_once(&ctx, &deliveries).await;
    let distinct = ctx
        .scalar_i64("SELECT count(DISTINCT (location_key, observed_at)) FROM observations")
        .await;
    assert_eq!(distinct, 20_000);
    let _ = std::fs::remove_file(log);
    let _ = std::fs::remove_file(log2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_mid_stream_loses_nothing_and_sigterm_exits_cleanly() {
    let ctx = TestContext::new().await;
    create_topics(&ctx).await;
    let producer = weatherflow::kafka::producer(&ctx.config.kafka).unwrap();
    let epoch0 = base_epoch() - 60 * 86_400;
    let messages: Vec<Generated> = (0..3000).map(|i| generate(i, 30, epoch0)).collect();
    let env = [
        ("WEATHERFLOW_PERSIST_BATCH_SIZE", "50"),
        ("WEATHERFLOW_PERSIST_RETRY_INITIAL_MS", "100"),
        ("WEATHERFLOW_PERSIST_RETRY_MAX_MS", "500"),
    ];
    let (mut child, log) = spawn_persist(&ctx, false, &env);

    let outage = Outage::new(&ctx).await;
    let topic = ctx.config.kafka.observations_topic.clone();
    let produce = async {
        let mut deliveries = Vec::new();
        for chunk in messages.chunks(100) {
            deliveries.extend(send_all(&producer, &topic, chunk).await);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        deliveries
    };
    let outage_run = async {
        wait_for_rows(&ctx, 200, Duration::from_secs(60)).await;
        outage.begin().await;
        let during = try_count(&ctx).await;
        assert!(
            during.is_none(),
            "the test database is unreachable during the outage"
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
        outage.end().await;
    };
    let (deliveries, ()) = tokio::join!(produce, outage_run);
    wait_for_rows(&ctx, 3000, Duration::from_secs(60)).await;
    signal(&child, nix::sys::signal::Signal::SIGTERM);
    let status = exit_within(&mut child, Duration::from_secs(30))
        .await
        .expect("the consumer exits in time");
    let stderr = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        status.success(),
        "SIGTERM ends the consumer with exit 0: {stderr}"
    );
    assert!(
        stderr.contains("database outage"),
        "the outage is logged: {stderr}"
    );
    assert!(
        stderr.contains("database is back"),
        "the recovery is logged: {stderr}"
    );
    assert_every_offset_stored_once(&ctx, &deliveries).await;

    // The run is recorded as succeeded, with its retries and the reason it stopped.
    let details = ctx
        .db
        .query_one_raw(Statement::from_string(
            ctx.db.get_database_backend(),
            "SELECT status, details::text FROM job_runs WHERE job = 'persist'",
        ))
        .await
        .unwrap()
        .unwrap();
    let status: String = details.try_get_by_index(0).unwrap();
    let details: Value = serde_json::from_str(&details.try_get_by_index::<String>(1).unwrap()).unwrap();
    assert_eq!(status, "succeeded");
    assert_eq!(details["stop"], "shutdown");
    assert!(details["retries"].as_u64().unwrap() > 0, "{details}");
    assert_eq!(details["stored"], 3000);
    let _ = std::fs::remove_file(log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrent_insert_of_the_same_observation_falls_back_to_on_conflict() {
    // The COPY path, whose fallback this is (a batch this small goes through UNNEST otherwise).
    concurrent_insert_of_the_same_observation(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_batch_meets_a_concurrent_insert_of_the_same_observation_with_on_conflict() {
    concurrent_insert_of_the_same_observation(weatherflow::jobs::persist::store::SMALL_BATCH_ROWS).await;
}

/// Another writer holds an uncommitted insert of one of our batch's observations while the batch is
/// written with the given `store::CopyStrategy::unnest_up_to`: the other writer's copy wins, the rest is
/// stored, nothing is refused.
async fn concurrent_insert_of_the_same_observation(unnest_up_to: usize) {
    use sea_orm::TransactionTrait;
    use weatherflow::jobs::persist::store::{self, Lineage, Raw, Retry, ValidRecord};
    let ctx = TestContext::new().await;
    let epoch0 = base_epoch();
    let record = |g: &Generated, offset: i64| ValidRecord {
        lineage: Lineage {
            topic: "t".into(),
            partition: 0,
            offset,
        },
        raw: Raw::default(),
        observation: weatherflow::jobs::persist::validate::validate(
            Some(&g.value),
            Utc::now(),
            &Default::default(),
        )
        .unwrap(),
    };
    let (x, y) = (generate(0, 10, epoch0), generate(1, 10, epoch0));
    let batch = [record(&x, 1), record(&y, 2)];

    // Another writer has inserted X and not committed yet: our existence check cannot see it, so
    // the COPY includes X and waits on the unique index until that writer commits, then fails; the
    // UNNEST statement waits there too, then skips X.
    let other = ctx.db.begin().await.unwrap();
    let x_sql = format!(
        "INSERT INTO observations (location_key, location_name, region, country, lat, lon, observed_at, temp_c, \
         wind_kph, source, fetched_at) VALUES ('{}', 'x', '', 'c', 0, 0, to_timestamp({}), 99, 1, 'simulated', now())",
        x.key, x.observed_at
    );
    other.execute_unprepared(&x_sql).await.unwrap();
    let pool = ctx.db.get_postgres_connection_pool().clone();
    let retry = Retry::new(
        weatherflow::backoff::Backoff::new(Duration::from_millis(50), Duration::from_millis(200)),
        CancellationToken::new(),
    );
    let write = tokio::spawn(async move {
        let mut strategy = store::CopyStrategy {
            unnest_up_to,
            ..Default::default()
        };
        store::store_batch(&pool, &batch, &[], &retry, &mut strategy).await
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while ctx.scalar_i64("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
    )
    .await
        == 0
    {
        assert!(Instant::now() < deadline, "the write never waited on the other writer");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    other.commit().await.unwrap();
    let stored = write.await.unwrap().expect("stored");
    assert_eq!((stored.inserted, stored.duplicates), (1, 1), "{stored:?}");
    assert!(stored.db_rejected.is_empty(), "a duplicate is not a refused row");
    let temps = ctx
        .db
        .query_all_raw(Statement::from_string(
            ctx.db.get_database_backend(),
            "SELECT temp_c FROM observations ORDER BY temp_c",
        ))
        .await
        .unwrap();
    let temps: Vec<f64> = temps.iter().map(|r| r.try_get_by_index(0).unwrap()).collect();
    assert_eq!(
        temps,
        [y.temp_c, 99.0],
        "the other writer's copy of X won, Y was stored"
    );
}

/// `len` lowercase letters and digits from a xorshift generator: text that neither pglz nor the
/// key's normalization shrinks, so its bytes reach the index as they are.
fn incompressible(len: usize, seed: u64) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ALPHABET[(x % ALPHABET.len() as u64) as usize] as char
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_the_unique_index_refuses_is_quarantined_and_its_neighbours_are_stored() {
    let ctx = TestContext::new().await;
    create_topics(&ctx).await;
    let producer = weatherflow::kafka::producer(&ctx.config.kafka).unwrap();
    let t = ctx.config.kafka.observations_topic.clone();
    let epoch0 = base_epoch();

    // Each part is within validation's 1024-byte bound, but the key (about 3 KB, incompressible) is
    // over the 2,704 bytes a btree index row may hold: PostgreSQL refuses it with SQLSTATE 54000.
    let huge = Place {
        name: incompressible(1000, 1),
        region: incompressible(1000, 2),
        country: incompressible(1000, 3),
        lat: 1.0,
        lon: 2.0,
    };
    assert!(huge.key().len() > 2704);
    let bad = envelope(&payload(&huge, epoch0, 5.0, 50, 10.0), fetched_at());
    let good: Vec<Generated> = (0..20).map(|i| generate(i, 20, epoch0)).collect();
    let mut offsets = Vec::new();
    for g in &good[..10] {
        offsets.push(send(&producer, &t, Some(g.key.as_bytes()), Some(&g.value), Some(0)).await);
    }
    let (_, bad_offset) = send(&producer, &t, Some(b"huge"), Some(&bad), Some(0)).await;
    for g in &good[10..] {
        offsets.push(send(&producer, &t, Some(g.key.as_bytes()), Some(&g.value), Some(0)).await);
    }

    // On a build that took the refusal for an outage this retries forever; the run's timeout
    // (run_until_idle) fails the test instead.
    let cfg = config(&ctx);
    let summary = run_until_idle(&cfg, &ctx).await;
    assert_eq!((summary.consumed, summary.stored), (21, 20));
    assert_eq!(summary.rejected, BTreeMap::from([("db_rejected".to_owned(), 1)]));
    assert_eq!(summary.retries, 0, "a refused row is not an outage");

    let rows = observations::Entity::find().all(&ctx.db).await.unwrap();
    let stored: BTreeSet<i64> = rows.iter().filter_map(|r| r.kafka_offset).collect();
    let expected: BTreeSet<i64> = offsets.iter().map(|&(_, o)| o).collect();
    assert_eq!(stored, expected);

    let rejected = rejected_records::Entity::find().all(&ctx.db).await.unwrap();
    assert_eq!(rejected.len(), 1);
    let r = &rejected[0];
    assert_eq!(
        (r.kafka_offset, r.error_class.as_str()),
        (bad_offset, "db_rejected")
    );
    assert_eq!(r.payload.as_deref(), Some(bad.as_slice()));
    assert!(
        r.reason.contains("index row") && r.reason.contains("2704"),
        "the server's message: {}",
        r.reason
    );
    let dlq = read_dlq(&ctx, 1).await;
    assert_eq!(header(&dlq[0], "error_class").as_deref(), Some("db_rejected"));
    assert_eq!(header(&dlq[0], "reason").as_deref(), Some(r.reason.as_str()));

    // The consumer moved on: its offsets are committed past the refused record.
    let summary = run_until_idle(&cfg, &ctx).await;
    assert_eq!((summary.consumed, summary.stored), (0, 0));
}
