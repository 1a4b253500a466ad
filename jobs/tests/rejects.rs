//! `weatherflow rejects` on the real broker and database: records quarantined for real reasons (an
//! operator's CHECK constraint on observations that refuses some valid records while a persist run
//! stores the others, and malformed JSON), then listed, shown, counted (CLI and web) and re-driven
//! by the real binary once the constraint is gone: each stored once however often it is re-driven,
//! marked re-driven and kept, the run recorded in job_runs; a record that still fails keeps its row
//! with the new reason; a dry run writes nothing; the class, id and time filters select.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use common::stream::*;
use common::{TestContext, exit_within, run_cli};
use sea_orm::{ConnectionTrait, Statement};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use weatherflow::jobs::persist::redrive::{self, RedriveRequest, quarantine};

/// Generated records: 120 valid ones (15 at 30 °C or more, three of those with wind of 50 km/h or
/// more) over 12 places, plus malformed ones.
const RECORDS: usize = 120;
const PLACES: usize = 12;

/// The rows of a query as (i64, text) pairs.
async fn pairs(ctx: &TestContext, sql: &str) -> Vec<(i64, String)> {
    ctx.db
        .query_all_raw(Statement::from_string(ctx.db.get_database_backend(), sql))
        .await
        .expect(sql)
        .iter()
        .map(|r| (r.try_get_by_index(0).unwrap(), r.try_get_by_index(1).unwrap()))
        .collect()
}

/// `weatherflow <args>` against the test's services; panics with its stderr if it fails.
async fn cli(ctx: &TestContext, dir: &Path, args: &[&str]) -> String {
    let (ok, out, err) = run_cli(dir, args, &ctx.child_env()).await;
    assert!(ok, "weatherflow {args:?} failed:\n{out}\n{err}");
    out
}

/// The state of the quarantine a write would change: per row, class, reason, attempts and whether
/// re-driven; plus the observation count and the re-drive runs.
async fn snapshot(ctx: &TestContext) -> (Vec<(i64, String)>, i64, i64) {
    let rows = pairs(
        ctx,
        "SELECT id, error_class || '|' || reason || '|' || redrive_attempts || '|' || \
         (redriven_at IS NOT NULL) || '|' || coalesce(redrive_run_id::text, '-') \
         FROM rejected_records ORDER BY id",
    )
    .await;
    let observations = ctx.scalar_i64("SELECT count(*) FROM observations").await;
    let runs = ctx
        .scalar_i64("SELECT count(*) FROM job_runs WHERE job = 'redrive'")
        .await;
    (rows, observations, runs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_a_check_constraint_refused_are_redriven_once_it_is_dropped() {
    let ctx = TestContext::new().await;
    let dir = common::scratch_dir("rejects");
    create_topics(&ctx).await;
    let topic = ctx.config.kafka.observations_topic.clone();
    let producer = weatherflow::kafka::producer(&ctx.config.kafka).unwrap();
    let epoch0 = base_epoch();
    let messages: Vec<Generated> = (0..RECORDS).map(|i| generate(i, PLACES, epoch0)).collect();
    let hot: Vec<&Generated> = messages.iter().filter(|g| g.temp_c >= 30.0).collect();
    let windy_hot: BTreeSet<(String, i64)> = hot
        .iter()
        .filter(|g| g.wind_kph >= 50.0)
        .map(|g| (g.key.clone(), g.observed_at))
        .collect();
    assert_eq!(
        (hot.len(), windy_hot.len()),
        (15, 3),
        "the generated data changed"
    );

    // An operator's constraint refuses the hot records; the rest of each batch is stored.
    ctx.db
        .execute_unprepared("ALTER TABLE observations ADD CONSTRAINT ops_temp CHECK (temp_c < 30)")
        .await
        .unwrap();
    let before = Utc::now();
    // All produced before the run, so every batch mixes records that pass and records that fail.
    send_all(&producer, &topic, &messages).await;
    for bad in [&b"{\"schema_version\":1,"[..], b"not json"] {
        send(&producer, &topic, Some(b"junk"), Some(bad), Some(0)).await;
    }
    let (mut persist, log) = spawn_persist(&ctx, true, &[]);
    let status = exit_within(&mut persist, Duration::from_secs(120))
        .await
        .expect("persist drains within 120 s");
    assert!(
        status.success(),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );

    let valid_cold = (RECORDS - hot.len()) as i64;
    assert_eq!(
        ctx.scalar_i64("SELECT count(*) FROM observations").await,
        valid_cold
    );
    let quarantined = pairs(
        &ctx,
        "SELECT count(*), error_class FROM rejected_records GROUP BY error_class ORDER BY 2",
    )
    .await;
    assert_eq!(
        quarantined,
        [(15, "db_rejected".to_owned()), (2, "invalid_json".to_owned())]
    );
    let reason = ctx
        .scalar_text("SELECT reason FROM rejected_records WHERE error_class = 'db_rejected' LIMIT 1")
        .await;
    assert!(reason.contains("ops_temp"), "{reason}");

    // The listing, the counts and one record in full.
    let listing = cli(
        &ctx,
        &dir,
        &["rejects", "--class", "db_rejected", "--last", "100"],
    )
    .await;
    assert_eq!(
        listing.lines().filter(|l| l.contains("ops_temp")).count(),
        15,
        "{listing}"
    );
    assert!(listing.contains("quarantined"), "{listing}");
    let counts = cli(&ctx, &dir, &["rejects", "counts"]).await;
    assert!(
        counts
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()[..3] == ["db_rejected", "15", "0"]),
        "{counts}"
    );
    let hot_id = ctx
        .scalar_i64("SELECT min(id) FROM rejected_records WHERE error_class = 'db_rejected'")
        .await;
    let shown = cli(&ctx, &dir, &["rejects", "show", &hot_id.to_string()]).await;
    assert!(shown.contains("class         db_rejected"), "{shown}");
    assert!(shown.contains("ops_temp"), "{shown}");
    assert!(
        shown.contains("UTF-8 text:") && shown.contains("\"temp_c\""),
        "{shown}"
    );
    assert!(shown.contains("quarantined; never re-driven"), "{shown}");

    // A dry run reports and writes nothing: no row changed, no observation, no run.
    let untouched = snapshot(&ctx).await;
    let dry = cli(&ctx, &dir, &["rejects", "redrive", "--dry-run"]).await;
    assert!(dry.contains("dry run (nothing written): 17 of 17"), "{dry}");
    assert!(
        dry.contains("would be re-driven: 15 (new observations: 15, already stored: 0)"),
        "{dry}"
    );
    assert!(
        dry.contains("would stay quarantined: 2, refused again (invalid_json 2)"),
        "{dry}"
    );
    assert_eq!(snapshot(&ctx).await, untouched);

    // The cause is fixed, but a second rule now refuses the windy hot records.
    ctx.db
        .execute_unprepared(
            "ALTER TABLE observations DROP CONSTRAINT ops_temp; \
             ALTER TABLE observations ADD CONSTRAINT ops_wind CHECK (NOT (temp_c >= 30 AND wind_kph >= 50))",
        )
        .await
        .unwrap();

    // --class: only the malformed records, refused again by validation.
    let out = cli(&ctx, &dir, &["rejects", "redrive", "--class", "invalid_json"]).await;
    assert!(out.contains("2 of 2 selected"), "{out}");
    assert!(
        out.contains("still quarantined: 2, refused again (invalid_json 2)"),
        "{out}"
    );
    assert_eq!(
        ctx.scalar_i64("SELECT count(*) FROM rejected_records WHERE redrive_attempts = 1")
            .await,
        2
    );
    assert_eq!(
        ctx.scalar_i64("SELECT count(*) FROM observations").await,
        valid_cold
    );

    // --id: one hot record that passes now.
    let (one_id, _) = pairs(
        &ctx,
        "SELECT r.id, '' FROM rejected_records r WHERE error_class = 'db_rejected' \
         AND convert_from(payload, 'UTF8')::jsonb #>> '{payload,current,wind_kph}' < '50' \
         ORDER BY id LIMIT 1",
    )
    .await[0]
        .clone();
    let out = cli(&ctx, &dir, &["rejects", "redrive", "--id", &one_id.to_string()]).await;
    assert!(out.contains("1 of 1 selected"), "{out}");
    assert!(
        out.contains("re-driven: 1 (new observations: 1, already stored: 0)"),
        "{out}"
    );
    assert_eq!(
        ctx.scalar_i64("SELECT count(*) FROM observations").await,
        valid_cold + 1
    );

    // --since: nothing quarantined after now; everything after the start.
    let future = (Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let out = cli(&ctx, &dir, &["rejects", "redrive", "--since", &future]).await;
    assert!(out.contains("0 of 0 selected"), "{out}");
    // Beside a running consumer, which is storing copies of the same hot records (the same
    // observations at new offsets) at the same time: whoever comes second finds them stored.
    let (mut consumer, consumer_log) = spawn_persist(&ctx, false, &[]);
    let passing: Vec<&Generated> = hot.iter().copied().filter(|g| g.wind_kph < 50.0).collect();
    for g in &passing {
        send(&producer, &topic, Some(g.key.as_bytes()), Some(&g.value), None).await;
    }
    // One page: every page the store writes mixes records that pass and records that fail.
    let since = before.to_rfc3339();
    let out = cli(&ctx, &dir, &["rejects", "redrive", "--since", &since]).await;
    // 16 still quarantined: 14 hot (11 pass, 3 windy) and the 2 malformed.
    assert!(
        out.contains("16 of 16 selected records examined in 1 page"),
        "{out}"
    );
    assert!(out.contains("re-driven: 11 (new observations: "), "{out}");
    assert!(
        out.contains("still quarantined: 5, refused again (db_rejected 3, invalid_json 2)"),
        "{out}"
    );
    let new: i64 = out
        .split("new observations: ")
        .nth(1)
        .and_then(|t| t.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count of new observations in {out}"));
    let settled = common::eventually(Duration::from_secs(60), || async {
        ctx.scalar_i64("SELECT count(*) FROM observations").await == valid_cold + 12
    })
    .await;
    common::signal(&consumer, nix::sys::signal::Signal::SIGTERM);
    let status = exit_within(&mut consumer, Duration::from_secs(30)).await;
    let consumer_text = std::fs::read_to_string(&consumer_log).unwrap_or_default();
    assert!(
        settled,
        "the consumer's copies were not all read: {consumer_text}"
    );
    assert!(status.is_some_and(|s| s.success()), "{consumer_text}");
    let run_id: i64 = out
        .split_whitespace()
        .nth(2)
        .and_then(|id| id.trim_end_matches(':').parse().ok())
        .unwrap_or_else(|| panic!("no run id in {out}"));

    // Each hot record that passes is stored exactly once; those the re-drive stored carry their
    // original lineage; every row is kept, marked re-driven by the run.
    let stored_hot = pairs(
        &ctx,
        "SELECT kafka_offset, location_key || '|' || extract(epoch FROM observed_at)::int8          FROM observations WHERE temp_c >= 30",
    )
    .await;
    assert_eq!(stored_hot.len(), 12);
    let with_lineage = ctx
        .scalar_i64(
            "SELECT count(*) FROM observations o JOIN rejected_records r              ON (r.kafka_topic, r.kafka_partition, r.kafka_offset) = (o.kafka_topic, o.kafka_partition, o.kafka_offset)",
        )
        .await;
    assert_eq!(
        with_lineage,
        1 + new,
        "the --id record and this run's new observations"
    );
    assert_eq!(
        ctx.scalar_i64("SELECT count(*) FROM observations").await,
        valid_cold + 12
    );
    assert_eq!(
        ctx.scalar_i64(&format!(
            "SELECT count(*) FROM rejected_records WHERE redriven_at IS NOT NULL \
             AND error_class = 'db_rejected' AND reason LIKE '%ops_temp%' AND redrive_run_id IN ({one_id_run}, {run_id})",
            one_id_run = ctx.scalar_i64(&format!("SELECT redrive_run_id FROM rejected_records WHERE id = {one_id}")).await
        ))
        .await,
        12
    );
    // The windy ones stay quarantined with the new reason; the count of attempts says so.
    let windy = pairs(
        &ctx,
        "SELECT redrive_attempts::int8, reason FROM rejected_records WHERE redriven_at IS NULL \
         AND error_class = 'db_rejected'",
    )
    .await;
    assert_eq!(windy.len(), 3);
    assert!(
        windy.iter().all(|(n, r)| *n == 1 && r.contains("ops_wind")),
        "{windy:?}"
    );

    // The run is in job_runs with its counts.
    let run = pairs(
        &ctx,
        &format!(
            "SELECT records_in, status || ' ' || records_out || ' ' || (details->>'stored') || ' ' \
             || (details->'refused'->>'db_rejected') FROM job_runs WHERE id = {run_id} AND job = 'redrive' \
             AND \"trigger\" = 'manual'"
        ),
    )
    .await;
    assert_eq!(run, [(16, format!("succeeded 11 {new} 3"))]);

    // Re-driven twice: a re-driven row is not read again.
    let one = one_id.to_string();
    let out = cli(&ctx, &dir, &["rejects", "redrive", "--id", &one]).await;
    assert!(out.contains("0 of 0 selected"), "{out}");
    // A re-drive that stored a record but stopped before marking its row: the next one finds the
    // observation stored, stores nothing, and marks the row.
    ctx.db
        .execute_unprepared(&format!(
            "UPDATE rejected_records SET redriven_at = NULL WHERE id = {one_id}"
        ))
        .await
        .unwrap();
    let out = cli(&ctx, &dir, &["rejects", "redrive", "--id", &one]).await;
    assert!(
        out.contains("re-driven: 1 (new observations: 0, already stored: 1)"),
        "{out}"
    );
    assert_eq!(
        ctx.scalar_i64("SELECT count(*) FROM observations").await,
        valid_cold + 12
    );
    let hot_keys: BTreeSet<(String, i64)> = hot.iter().map(|g| (g.key.clone(), g.observed_at)).collect();
    let stored_keys: Vec<(String, i64)> = stored_hot
        .iter()
        .map(|(_, k)| {
            let (key, at) = k.rsplit_once('|').unwrap();
            (key.to_owned(), at.parse().unwrap())
        })
        .collect();
    assert_eq!(
        stored_keys.iter().collect::<BTreeSet<_>>().len(),
        12,
        "each stored once"
    );
    for k in &stored_keys {
        assert!(hot_keys.contains(k) && !windy_hot.contains(k), "{k:?}");
    }

    // The second rule goes too: the windy records are stored, the malformed stay quarantined.
    ctx.db
        .execute_unprepared("ALTER TABLE observations DROP CONSTRAINT ops_wind")
        .await
        .unwrap();
    let out = cli(&ctx, &dir, &["rejects", "redrive"]).await;
    assert!(out.contains("5 of 5 selected"), "{out}");
    assert!(
        out.contains("re-driven: 3 (new observations: 3, already stored: 0)"),
        "{out}"
    );
    assert!(
        out.contains("still quarantined: 2, refused again (invalid_json 2)"),
        "{out}"
    );
    assert_eq!(
        ctx.scalar_i64("SELECT count(*) FROM observations").await,
        RECORDS as i64
    );
    assert_eq!(
        ctx.scalar_i64("SELECT count(DISTINCT (kafka_partition, kafka_offset)) FROM observations")
            .await,
        RECORDS as i64,
        "every valid record stored once"
    );

    // The listing and `show` say what became of them; the web counts agree with the table.
    let shown = cli(&ctx, &dir, &["rejects", "show", &one_id.to_string()]).await;
    assert!(
        shown.contains("re-driven at") && shown.contains("by run"),
        "{shown}"
    );
    let redriven = cli(&ctx, &dir, &["rejects", "list", "--redriven", "--last", "100"]).await;
    assert_eq!(redriven.matches("re-driven 20").count(), 15, "{redriven}");
    let web = web_counts(&ctx).await;
    assert_eq!(
        (web["quarantined"].as_i64(), web["redriven"].as_i64()),
        (Some(2), Some(15)),
        "{web}"
    );
    let classes: HashMap<&str, (i64, i64)> = web["classes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["error_class"].as_str().unwrap(),
                (
                    c["quarantined"].as_i64().unwrap(),
                    c["redriven"].as_i64().unwrap(),
                ),
            )
        })
        .collect();
    assert_eq!(classes["db_rejected"], (0, 15));
    assert_eq!(classes["invalid_json"], (2, 0));
    let _ = std::fs::remove_dir_all(&dir);
}

/// `GET /api/v1/rejects` from the web application in this process.
async fn web_counts(ctx: &TestContext) -> Value {
    let shutdown = CancellationToken::new();
    let state = weatherflow::web::AppState::start(
        Arc::new(ctx.config.clone()),
        ctx.db.clone(),
        shutdown.clone(),
        None,
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(axum::serve(listener, weatherflow::web::app(state)).into_future());
    let body = reqwest::get(format!("http://{addr}/api/v1/rejects"))
        .await
        .expect("GET /api/v1/rejects")
        .text()
        .await
        .unwrap();
    // The re-drives are in the run history, filtered by their job.
    let runs: Value = serde_json::from_str(
        &reqwest::get(format!("http://{addr}/api/v1/runs?job=redrive&last=50"))
            .await
            .expect("GET /api/v1/runs?job=redrive")
            .text()
            .await
            .unwrap(),
    )
    .unwrap();
    let runs = runs["runs"].as_array().expect("a run list");
    let expected = ctx
        .scalar_i64("SELECT count(*) FROM job_runs WHERE job = 'redrive'")
        .await;
    assert!(expected > 0);
    assert_eq!(runs.len() as i64, expected);
    assert!(
        runs.iter()
            .all(|r| r["job"] == "redrive" && r["status"] == "succeeded")
    );
    let bad = reqwest::get(format!("http://{addr}/api/v1/rejects?x=1"))
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 400, "unknown parameters are refused");
    shutdown.cancel();
    server.abort();
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_that_is_not_utf8_is_shown_in_hex_and_stays_quarantined() {
    let ctx = TestContext::new().await;
    let dir = common::scratch_dir("rejects");
    ctx.db
        .execute_unprepared(
            "INSERT INTO rejected_records (kafka_topic, kafka_partition, kafka_offset, key, payload, error_class, reason) \
             VALUES ('weather.observations', 1, 7, '\\xff01', '\\x7bff00', 'not_utf8', 'invalid byte'), \
                    ('weather.observations', 1, 8, NULL, NULL, 'empty_value', 'null')",
        )
        .await
        .unwrap();
    let id = ctx
        .scalar_i64("SELECT id FROM rejected_records WHERE kafka_offset = 7")
        .await;
    let shown = cli(&ctx, &dir, &["rejects", "show", &id.to_string()]).await;
    assert!(shown.contains("key           hex ff01"), "{shown}");
    assert!(shown.contains("3 bytes, not UTF-8, hex:"), "{shown}");
    assert!(shown.contains("00000000  7b ff 00"), "{shown}");
    let (ok, _, err) = run_cli(&dir, &["rejects", "show", "999999"], &ctx.child_env()).await;
    assert!(
        !ok && err.contains("no quarantined record with id 999999"),
        "{err}"
    );

    // One re-drive at a time: while another holds the lock, a re-drive fails at once and writes
    // nothing; a dry run takes no lock.
    let held = weatherflow::runs::lock::JobLock::try_acquire(&ctx.db, weatherflow::runs::JobName::Redrive)
        .await
        .unwrap()
        .expect("the redrive lock is free");
    let (ok, _, err) = run_cli(&dir, &["rejects", "redrive"], &ctx.child_env()).await;
    assert!(!ok && err.contains("another re-drive is in progress"), "{err}");
    let dry = cli(&ctx, &dir, &["rejects", "redrive", "--dry-run"]).await;
    assert!(dry.contains("2 of 2 selected"), "{dry}");
    held.release().await.unwrap();
    assert_eq!(
        ctx.scalar_i64("SELECT count(*) FROM job_runs").await
            + ctx
                .scalar_i64("SELECT sum(redrive_attempts)::int8 FROM rejected_records")
                .await,
        0
    );

    // The library entry point, in pages of one: both refused again by validation, rows kept.
    let run_id = weatherflow::runs::start_with(
        &ctx.db,
        weatherflow::runs::JobName::Redrive,
        weatherflow::runs::Trigger::Manual,
        None,
    )
    .await
    .unwrap();
    let mut pages = 0;
    let summary = redrive::run(
        &ctx.config,
        &ctx.db,
        run_id,
        RedriveRequest {
            batch_size: 1,
            ..Default::default()
        },
        CancellationToken::new(),
        &mut |_| pages += 1,
    )
    .await
    .unwrap();
    assert_eq!(pages, 2);
    assert_eq!(
        (summary.examined, summary.redriven(), summary.reclassified),
        (2, 0, 0)
    );
    assert_eq!(summary.refused.get("not_utf8"), Some(&1));
    let counts = quarantine::counts(&ctx.db).await.unwrap();
    assert_eq!(counts.iter().map(|c| c.quarantined).sum::<i64>(), 2);
    assert_eq!(
        ctx.scalar_i64(&format!(
            "SELECT count(*) FROM rejected_records WHERE redrive_attempts = 1 AND redrive_run_id = {run_id}"
        ))
        .await,
        2
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twins_of_one_observation_are_written_one_after_the_other() {
    let ctx = TestContext::new().await;
    ctx.db
        .execute_unprepared("ALTER TABLE observations ADD CONSTRAINT ops_temp CHECK (temp_c < 30)")
        .await
        .unwrap();
    // Two records of one observation (a refetch with another temperature), the first of which the
    // constraint refuses, and a record of another place.
    let epoch = base_epoch();
    let (place, other) = (Place::numbered(1), Place::numbered(2));
    let records = [
        envelope(&payload(&place, epoch, 31.0, 50, 10.0), fetched_at()),
        envelope(&payload(&other, epoch, 12.0, 50, 10.0), fetched_at()),
        envelope(&payload(&place, epoch, 29.0, 50, 10.0), fetched_at()),
    ];
    for (offset, value) in records.iter().enumerate() {
        ctx.db
            .execute_raw(Statement::from_sql_and_values(
                ctx.db.get_database_backend(),
                "INSERT INTO rejected_records (kafka_topic, kafka_partition, kafka_offset, payload, error_class, reason) \
                 VALUES ('t', 0, $1, $2, 'db_rejected', 'earlier')",
                [(offset as i64).into(), value.clone().into()],
            ))
            .await
            .unwrap();
    }
    let run_id = weatherflow::runs::start_with(
        &ctx.db,
        weatherflow::runs::JobName::Redrive,
        weatherflow::runs::Trigger::Manual,
        None,
    )
    .await
    .unwrap();
    let summary = redrive::run(
        &ctx.config,
        &ctx.db,
        run_id,
        RedriveRequest::default(),
        CancellationToken::new(),
        &mut |_| {},
    )
    .await
    .unwrap();
    // The refused twin does not take the other down with it: the 29 °C copy is stored.
    assert_eq!((summary.stored, summary.duplicates), (2, 0), "{summary:?}");
    assert_eq!(summary.refused.get("db_rejected"), Some(&1));
    let temps = pairs(
        &ctx,
        "SELECT (temp_c * 10)::int8, location_key FROM observations ORDER BY 1",
    )
    .await;
    assert_eq!(temps.iter().map(|t| t.0).collect::<Vec<_>>(), [120, 290]);
    let marks = pairs(
        &ctx,
        "SELECT kafka_offset, (redriven_at IS NOT NULL)::text || ' ' || reason FROM rejected_records ORDER BY 1",
    )
    .await;
    assert_eq!(marks[1].1, "true earlier");
    assert_eq!(marks[2].1, "true earlier");
    assert!(
        marks[0].1.starts_with("false ") && marks[0].1.contains("ops_temp"),
        "{marks:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_the_database_still_refuses_alike_stay_quarantined_with_the_new_reason() {
    let ctx = TestContext::new().await;
    // The cause is not fixed: the constraint refuses every record of the page the same way, which
    // the store waits out as a refusal of everything, then leaves quarantined.
    ctx.db
        .execute_unprepared("ALTER TABLE observations ADD CONSTRAINT ops_temp CHECK (temp_c < 30)")
        .await
        .unwrap();
    let epoch = base_epoch();
    for i in 0..3 {
        let value = envelope(&payload(&Place::numbered(i), epoch, 31.0, 50, 10.0), fetched_at());
        ctx.db
            .execute_raw(Statement::from_sql_and_values(
                ctx.db.get_database_backend(),
                "INSERT INTO rejected_records (kafka_topic, kafka_partition, kafka_offset, payload, error_class, reason) \
                 VALUES ('t', 0, $1, $2, 'out_of_range', 'earlier')",
                [(i as i64).into(), value.into()],
            ))
            .await
            .unwrap();
    }
    let dir = common::scratch_dir("rejects");
    let started = std::time::Instant::now();
    let out = cli(&ctx, &dir, &["rejects", "redrive"]).await;
    let took = started.elapsed();
    assert!(out.contains("re-driven: 0 (new observations: 0"), "{out}");
    assert!(
        out.contains("still quarantined: 3, refused again (db_rejected 3); 3 with a new class"),
        "{out}"
    );
    assert!(
        took < Duration::from_secs(55),
        "took {took:?}, past the default patience"
    );
    let rows = pairs(
        &ctx,
        "SELECT redrive_attempts::int8, error_class || ' ' || reason FROM rejected_records \
         WHERE redriven_at IS NULL ORDER BY id",
    )
    .await;
    assert_eq!(rows.len(), 3);
    assert!(
        rows.iter()
            .all(|(n, r)| *n == 1 && r.starts_with("db_rejected ") && r.contains("ops_temp")),
        "{rows:?}"
    );
    assert_eq!(ctx.scalar_i64("SELECT count(*) FROM observations").await, 0);
    let _ = std::fs::remove_dir_all(&dir);
}
