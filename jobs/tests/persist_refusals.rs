//! What the store does when PostgreSQL says no, with real refusals from a real server: a read-only
//! node (25006), a revoked grant (42501), a statement timeout behind a lock (57014) and a connection
//! that goes silent are outages: the batch waits, nothing is quarantined, `/readyz`'s registry names
//! the cause, and everything is stored once the database takes writes again. A CHECK constraint an
//! operator added (23514) quarantines only the rows it refuses, unless it refuses every row the same
//! way; and the quarantine itself is never a sink.
//!
//! Each test has its own database (the refusals are set on it, never server-wide) and calls the
//! persist job's store as its writers do.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{TimeZone, Utc};
use common::TestContext;
use common::proxy::Proxy;
use common::records::{record, retry};
use sea_orm::{ConnectionTrait, DatabaseConnection, TransactionTrait};
use secrecy::{ExposeSecret, SecretString};
use weatherflow::jobs::persist::store::{
    self, CopyStrategy, Interrupted, Raw, RejectedRecord, Retry, Stored, ValidRecord,
};
use weatherflow::jobs::persist::validate::{Rejection, RejectionClass};

// ---------------------------------------------------------------- harness

/// `n` valid records at distinct times, with `temp_c` from `temp`.
fn batch(n: i64, temp: impl Fn(i64) -> f64) -> Vec<ValidRecord> {
    let t0 = Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap();
    (0..n)
        .map(|i| {
            let mut r = record("refusal", t0 + chrono::Duration::minutes(15 * i), i);
            r.observation.temp_c = temp(i);
            r.raw = Raw {
                key: Some(Bytes::from_static(b"refusal")),
                value: Some(Bytes::from(format!("{{\"record\":{i}}}"))),
            };
            r
        })
        .collect()
}

/// A record validation refused, as the consumer hands it over.
fn invalid(offset: i64) -> RejectedRecord {
    RejectedRecord {
        lineage: record("x", Utc::now(), offset).lineage,
        raw: Raw {
            key: None,
            value: Some(Bytes::from_static(b"{not json")),
        },
        rejection: Rejection::new(RejectionClass::InvalidJson, "expected a value"),
    }
}

/// A pool of its own on the test's database, its sessions named `app` (so the test can end just
/// them, as a failover does) and opened after the refusal was set on the database.
async fn pool_named(ctx: &TestContext, app: &str) -> DatabaseConnection {
    let mut cfg = ctx.config.database.clone();
    let mut url = url::Url::parse(cfg.url.expose_secret()).unwrap();
    url.query_pairs_mut().append_pair("application_name", app);
    cfg.url = SecretString::from(url.to_string());
    weatherflow::db::connect(&cfg)
        .await
        .expect("a pool on the test database")
}

async fn exec(db: &DatabaseConnection, sql: &str) {
    db.execute_unprepared(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// Stores `valid` and `rejected` on `pool` in a task, as a writer does.
fn spawn_store(
    db: &DatabaseConnection,
    valid: Vec<ValidRecord>,
    rejected: Vec<RejectedRecord>,
    retry: Retry,
) -> tokio::task::JoinHandle<Result<Stored, Interrupted>> {
    let pool = db.get_postgres_connection_pool().clone();
    tokio::spawn(async move {
        let mut strategy = CopyStrategy::default();
        store::store_batch(&pool, &valid, &rejected, &retry, &mut strategy).await
    })
}

/// Waits until the process's outage registry (what `/readyz` reports) has a line containing `needle`,
/// and returns it. Other tests of this binary run in parallel, so only lines naming this test's cause
/// are looked at.
async fn outage_reported(needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(line) = weatherflow::outages::not_ready()
            .into_iter()
            .find(|l| l.contains(needle))
        {
            return line;
        }
        assert!(
            Instant::now() < deadline,
            "no outage naming {needle:?} was reported: {:?}",
            weatherflow::outages::not_ready()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// While the refusal lasts, the batch waits: nothing stored, nothing quarantined, still running.
async fn still_waiting(ctx: &TestContext, task: &tokio::task::JoinHandle<Result<Stored, Interrupted>>) {
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(!task.is_finished(), "the batch is still waiting out the refusal");
    assert_eq!(ctx.scalar_i64("SELECT count(*) FROM observations").await, 0);
    assert_eq!(ctx.scalar_i64("SELECT count(*) FROM rejected_records").await, 0);
}

async fn finished(task: tokio::task::JoinHandle<Result<Stored, Interrupted>>) -> Stored {
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("the batch is stored once the database takes writes")
        .unwrap()
        .expect("stored, not interrupted")
}

// ---------------------------------------------------------------- outages

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_to_a_read_only_node_is_an_outage_and_nothing_is_quarantined() {
    let ctx = TestContext::new().await;
    exec(
        &ctx.db,
        &format!(
            "ALTER DATABASE {} SET default_transaction_read_only = on",
            ctx.db_name
        ),
    )
    .await;
    let db = pool_named(&ctx, "wf_read_only").await;
    let task = spawn_store(
        &db,
        batch(40, |_| 10.0),
        vec![invalid(1000), invalid(1001)],
        retry(),
    );

    let line = outage_reported("SQLSTATE 25006").await;
    assert!(line.starts_with("database unavailable"), "{line}");
    assert!(line.contains("read-only transaction"), "{line}");
    still_waiting(&ctx, &task).await;

    // The failover: the old primary's sessions end, new ones reach a writable node.
    exec(
        &ctx.db,
        &format!(
            "ALTER DATABASE {} RESET default_transaction_read_only",
            ctx.db_name
        ),
    )
    .await;
    exec(
        &ctx.db,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'wf_read_only'",
    )
    .await;
    let stored = finished(task).await;
    assert_eq!(
        (stored.inserted, stored.rejections_inserted),
        (40, 2),
        "{stored:?}"
    );
    assert!(stored.db_rejected.is_empty(), "{stored:?}");
    assert!(stored.retries > 0, "{stored:?}");
    assert_eq!(ctx.scalar_i64("SELECT count(*) FROM observations").await, 40);
    assert_eq!(
        ctx.scalar_i64("SELECT count(*) FROM rejected_records WHERE error_class = 'invalid_json'")
            .await,
        2
    );
    assert!(
        !weatherflow::outages::not_ready()
            .iter()
            .any(|l| l.contains("25006")),
        "the outage ended with the batch"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_insert_grant_is_an_outage_for_observations_and_for_the_quarantine() {
    let ctx = TestContext::new().await;
    let db = pool_named(&ctx, "wf_revoked").await;
    exec(&ctx.db, "REVOKE INSERT ON observations FROM CURRENT_USER").await;
    let task = spawn_store(&db, batch(30, |_| 10.0), vec![], retry());
    let line = outage_reported("SQLSTATE 42501: permission denied for table observations").await;
    assert!(line.contains("offsets not committed"), "{line}");
    still_waiting(&ctx, &task).await;
    exec(&ctx.db, "GRANT INSERT ON observations TO CURRENT_USER").await;
    let stored = finished(task).await;
    assert_eq!(stored.inserted, 30);
    assert!(stored.db_rejected.is_empty());

    // A row refused for its content still goes to the quarantine; when rejected_records refuses it,
    // the row waits like any outage instead of living only on the dead-letter topic.
    exec(&ctx.db, "REVOKE INSERT ON rejected_records FROM CURRENT_USER").await;
    let mut rows = batch(33, |_| 10.0).split_off(30);
    rows[1].observation.location_name = "Bad\u{0}Town".into();
    let task = spawn_store(&db, rows, vec![], retry());
    outage_reported("SQLSTATE 42501: permission denied for table rejected_records").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!task.is_finished());
    exec(&ctx.db, "GRANT INSERT ON rejected_records TO CURRENT_USER").await;
    let stored = finished(task).await;
    assert_eq!((stored.inserted, stored.db_rejected.len()), (2, 1), "{stored:?}");
    let reason = ctx
        .scalar_text("SELECT reason FROM rejected_records WHERE error_class = 'db_rejected'")
        .await;
    assert!(reason.starts_with("SQLSTATE 22021"), "{reason}");

    // Even a row-level refusal of a rejection row (an operator's CHECK on rejected_records) is
    // waited out: the quarantine has no quarantine of its own.
    exec(
        &ctx.db,
        "ALTER TABLE rejected_records ADD CONSTRAINT ops_no_json CHECK (error_class <> 'invalid_json')",
    )
    .await;
    let task = spawn_store(
        &db,
        batch(35, |_| 10.0).split_off(33),
        vec![invalid(2000)],
        retry(),
    );
    let line = outage_reported("rejected_records refused a quarantined record").await;
    assert!(
        line.contains("SQLSTATE 23514") && line.contains("ops_no_json"),
        "{line}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!task.is_finished());
    exec(
        &ctx.db,
        "ALTER TABLE rejected_records DROP CONSTRAINT ops_no_json",
    )
    .await;
    let stored = finished(task).await;
    assert_eq!(
        (stored.inserted, stored.rejections_inserted),
        (2, 1),
        "{stored:?}"
    );
    assert_eq!(ctx.scalar_i64("SELECT count(*) FROM observations").await, 34);
    assert_eq!(ctx.scalar_i64("SELECT count(*) FROM rejected_records").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_timeout_behind_a_lock_is_an_outage() {
    let ctx = TestContext::new().await;
    exec(
        &ctx.db,
        &format!("ALTER DATABASE {} SET statement_timeout = '150ms'", ctx.db_name),
    )
    .await;
    let db = pool_named(&ctx, "wf_timeout").await;
    let blocker = ctx.db.begin().await.unwrap();
    blocker
        .execute_unprepared("SET LOCAL statement_timeout = 0; LOCK TABLE observations IN SHARE MODE")
        .await
        .unwrap();
    let task = spawn_store(&db, batch(25, |_| 10.0), vec![], retry());
    let line = outage_reported("SQLSTATE 57014").await;
    assert!(line.contains("statement timeout"), "{line}");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(!task.is_finished(), "the batch waits for the lock to go");
    blocker.commit().await.unwrap();
    let stored = finished(task).await;
    assert_eq!(stored.inserted, 25);
    assert!(stored.db_rejected.is_empty(), "{stored:?}");
    assert_eq!(ctx.scalar_i64("SELECT count(*) FROM rejected_records").await, 0);
}

// ---------------------------------------------------------------- row-level refusals

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operators_check_constraint_quarantines_the_rows_it_refuses_unless_it_refuses_them_all() {
    let ctx = TestContext::new().await;
    exec(
        &ctx.db,
        "ALTER TABLE observations ADD CONSTRAINT ops_cold CHECK (temp_c < 30)",
    )
    .await;
    let retry = retry();

    // Mixed: the three hot rows are quarantined with the server's reason, the rest is stored, and
    // nothing waits.
    let mixed = batch(10, |i| if i % 3 == 1 { 35.0 } else { 10.0 });
    let stored = finished(spawn_store(&ctx.db, mixed, vec![], retry.clone())).await;
    assert_eq!(
        (stored.inserted, stored.db_rejected.len(), stored.retries),
        (7, 3, 0)
    );
    let reason = &stored.db_rejected[0].rejection.reason;
    assert!(
        reason.starts_with("SQLSTATE 23514") && reason.contains("ops_cold"),
        "{reason}"
    );

    // Every row refused the same way: the database refuses everything, so the batch waits.
    let hot: Vec<ValidRecord> = batch(16, |_| 40.0).split_off(10);
    let task = spawn_store(&ctx.db, hot, vec![], retry.clone());
    let line = outage_reported("6 rows in a row refused the same way").await;
    assert!(line.contains("23514") && line.contains("ops_cold"), "{line}");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(!task.is_finished());
    exec(&ctx.db, "ALTER TABLE observations DROP CONSTRAINT ops_cold").await;
    let stored = finished(task).await;
    assert_eq!((stored.inserted, stored.db_rejected.len()), (6, 0), "{stored:?}");
    assert_eq!(ctx.scalar_i64("SELECT count(*) FROM observations").await, 13);
    assert_eq!(ctx.scalar_i64("SELECT count(*) FROM rejected_records").await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_uniform_refusal_is_quarantined_after_the_patience_and_a_lone_refusal_at_once() {
    let ctx = TestContext::new().await;
    exec(
        &ctx.db,
        "ALTER TABLE observations ADD CONSTRAINT ops_cold CHECK (temp_c < 30)",
    )
    .await;
    let retry = Retry {
        uniform_patience: Duration::from_secs(1),
        ..retry()
    };
    // One row alone: nothing says the database refuses everything, so it is quarantined at once.
    let one = batch(1, |_| 50.0);
    let stored = finished(spawn_store(&ctx.db, one, vec![], retry.clone())).await;
    assert_eq!((stored.db_rejected.len(), stored.retries), (1, 0));

    // The next rows refused the same way are a uniform refusal: waited out for the patience, then
    // quarantined after all, saying why.
    let started = Instant::now();
    let rows = batch(4, |_| 50.0).split_off(1);
    let stored = finished(spawn_store(&ctx.db, rows, vec![], retry.clone())).await;
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(stored.db_rejected.len(), 3);
    assert!(stored.retries > 0);
    let reason = &stored.db_rejected[0].rejection.reason;
    assert!(
        reason.starts_with("refused the same way past persist.uniform_refusal_patience_secs: SQLSTATE 23514"),
        "{reason}"
    );
    assert_eq!(ctx.scalar_i64("SELECT count(*) FROM rejected_records").await, 4);

    // Storing the quarantined rows is not an observation stored: the streak goes on, so one more row
    // refused the same way waits out the patience too instead of being quarantined at once.
    let started = Instant::now();
    let stored = finished(spawn_store(
        &ctx.db,
        batch(5, |_| 50.0).split_off(4),
        vec![],
        retry,
    ))
    .await;
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(stored.db_rejected.len(), 1);
    assert!(
        stored.db_rejected[0]
            .rejection
            .reason
            .starts_with("refused the same way past"),
        "{:?}",
        stored.db_rejected[0].rejection.reason
    );
    assert_eq!(ctx.scalar_i64("SELECT count(*) FROM rejected_records").await, 5);
}

// ---------------------------------------------------------------- a silent connection

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_times_out_and_the_batch_is_stored_when_it_answers_again() {
    let ctx = TestContext::new().await;
    let proxy = Proxy::to_database(&ctx.config.database).await;
    let mut cfg = proxy.database_config(&ctx.config.database);
    cfg.connect_timeout_secs = 1;
    let db = weatherflow::db::connect(&cfg).await.unwrap();
    let retry = Retry {
        write_timeout: Duration::from_millis(700),
        ..retry()
    };
    // A first batch opens the connection the second one gets from the pool.
    let first = batch(10, |_| 10.0);
    assert_eq!(
        finished(spawn_store(&db, first, vec![], retry.clone()))
            .await
            .inserted,
        10
    );

    // The pool pings a connection when it is given back; once that is done, the connection waits in
    // the pool, and the next batch takes it without a ping (used less than a second ago).
    tokio::time::sleep(Duration::from_millis(200)).await;
    proxy.go_silent(true);
    let rows = batch(30, |_| 10.0).split_off(10);
    let task = spawn_store(&db, rows, vec![], retry);
    let line = outage_reported("within persist.write_timeout_secs").await;
    assert!(line.starts_with("database unavailable"), "{line}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !task.is_finished(),
        "the batch waits while the connection is silent"
    );
    proxy.go_silent(false);
    let resumed = Instant::now();
    finished(task).await;
    assert!(
        resumed.elapsed() < Duration::from_secs(5),
        "stored {:?} after the connection answered",
        resumed.elapsed()
    );
    assert_eq!(ctx.scalar_i64("SELECT count(*) FROM observations").await, 30);
    assert_eq!(ctx.scalar_i64("SELECT count(*) FROM rejected_records").await, 0);
}
