//! The scheduler under faults, on the real database and broker: a run whose lock session dies is
//! cancelled and recorded "lock lost" before another replica runs the job; a `weatherflow scheduler`
//! whose scheduler half fails stops its consumer half and exits non-zero.

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use common::schedule::{self, tick, timing};
use common::{TestContext, unique};
use entity::job_runs;
use sea_orm::{ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder};
use secrecy::ExposeSecret;
use weatherflow::runs::{JobName, RunStatus, StoredReport};
use weatherflow::scheduler::{RunContext, ScheduledJob, Scheduler, SchedulerOptions, TickOutcome};

fn options(replica: &str) -> SchedulerOptions {
    schedule::options(replica, Duration::from_millis(500))
}

async fn rows(db: &DatabaseConnection, job: &str) -> Vec<job_runs::Model> {
    job_runs::Entity::find()
        .filter(job_runs::Column::Job.eq(job))
        .order_by_asc(job_runs::Column::Id)
        .all(db)
        .await
        .unwrap()
}

/// How many bodies of the job run now, and the most that ever ran at once.
#[derive(Default)]
struct Concurrency {
    now: AtomicU32,
    most: AtomicU32,
}

/// Decrements [`Concurrency::now`] however the body ends (returned or dropped).
struct Running(Arc<Concurrency>);

impl Running {
    fn enter(c: &Arc<Concurrency>) -> Self {
        let n = c.now.fetch_add(1, Ordering::SeqCst) + 1;
        c.most.fetch_max(n, Ordering::SeqCst);
        Self(c.clone())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A job named `fetch` whose body runs `secs` (stopping early when cancelled), counted in `c`.
fn counted_job(secs: u64, c: Arc<Concurrency>) -> ScheduledJob {
    let t = timing("cron = \"0 0 0 1 1 *\"\ntimeout_secs = 120\nretries = 0");
    ScheduledJob::new(JobName::Fetch, t, move |ctx: RunContext| {
        let c = c.clone();
        async move {
            let _running = Running::enter(&c);
            tokio::select! {
                _ = ctx.cancel.cancelled() => {}
                _ = tokio::time::sleep(Duration::from_secs(secs)) => {}
            }
            Ok(StoredReport::succeeded())
        }
    })
}

#[tokio::test]
async fn a_run_whose_lock_session_dies_stops_as_lock_lost_before_another_replica_runs() {
    let ctx = TestContext::new().await;
    let c = Arc::new(Concurrency::default());
    // Each replica its own pool, as separate processes would have.
    let db_a = weatherflow::db::connect(&ctx.config.database).await.unwrap();
    let db_b = weatherflow::db::connect(&ctx.config.database).await.unwrap();
    let a = Scheduler::new(db_a, vec![counted_job(30, c.clone())], options("a"));
    let long = tokio::spawn(async move { a.run_tick(JobName::Fetch, tick("2026-01-01T00:00:00Z")).await });
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.now.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(c.now.load(Ordering::SeqCst), 1, "replica a's run should be going");

    // The lock's session dies, as at a server restart or an idle-session timeout.
    let pid = ctx
        .scalar_i64(
            "SELECT pid::bigint FROM pg_locks l JOIN pg_database d ON d.oid = l.database \
             WHERE l.locktype = 'advisory' AND l.granted AND d.datname = current_database()",
        )
        .await;
    let killed = Utc::now();
    ctx.db
        .execute_unprepared(&format!("SELECT pg_terminate_backend({pid})"))
        .await
        .unwrap();

    // Replica b takes the free lock at once, for the next tick; it must not run beside a.
    let b = Scheduler::new(db_b, vec![counted_job(1, c.clone())], options("b"));
    let out_b = b
        .run_tick(JobName::Fetch, tick("2026-01-01T00:10:00Z"))
        .await
        .unwrap();
    let out_a = long.await.unwrap().unwrap();
    let runs = rows(&ctx.db, "fetch").await;
    let a_row = runs
        .iter()
        .find(|r| {
            r.details
                .as_ref()
                .and_then(|d| d.get("replica"))
                .and_then(|v| v.as_str())
                == Some("a")
        })
        .expect("replica a's row");
    let stopped = a_row
        .finished_at
        .map(|f| (f.with_timezone(&Utc) - killed).num_milliseconds());
    println!("lock session killed: replica a recorded its run stopped {stopped:?} ms later; b ran after it");
    assert_eq!(
        c.most.load(Ordering::SeqCst),
        1,
        "two replicas ran the job at once: {runs:#?}"
    );
    assert!(
        matches!(
            out_a,
            TickOutcome::Ran {
                status: RunStatus::Failed,
                ..
            }
        ),
        "{out_a:?}"
    );
    assert_eq!(a_row.status, RunStatus::Failed, "{runs:#?}");
    assert_eq!(a_row.error.as_deref(), Some("lock lost"), "{runs:#?}");
    assert!(
        matches!(
            out_b,
            TickOutcome::Ran {
                status: RunStatus::Succeeded,
                ..
            }
        ),
        "{out_b:?}\n{runs:#?}"
    );
    assert!(runs.iter().all(|r| r.status != RunStatus::Running), "{runs:#?}");
}

fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(unique("wf-schedfault"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn a_failing_scheduler_half_stops_the_consumer_and_exits_non_zero() {
    let ctx = TestContext::new().await;
    // A history the scheduler cannot read at start: a scheduled row whose tick is not a time. The
    // catch-up of missed ticks fails on it, for real, in PostgreSQL; the consumer half is unaffected.
    ctx.db
        .execute_unprepared(
            r#"INSERT INTO job_runs (job, "trigger", status, details)
               VALUES ('fetch', 'schedule', 'succeeded', '{"tick": "not a time"}')"#,
        )
        .await
        .unwrap();
    let dir = scratch();
    let path = dir.join("schedules.toml");
    std::fs::write(
        &path,
        "[fetch]\ncron = \"0 0 2 * * *\"\n[fetch.args]\nsource = \"simulated\"\nlocations = [\"x\"]\n\
         [analytics]\ncron = \"0 0 3 * * *\"\nenabled = false\n",
    )
    .unwrap();
    let k = &ctx.config.kafka;
    let log = std::fs::File::create(dir.join("service.log")).unwrap();
    let mut service = tokio::process::Command::new(env!("CARGO_BIN_EXE_weatherflow"))
        .arg("scheduler")
        .current_dir(&dir)
        .env_remove("WEATHERFLOW_CONFIG")
        .env("DATABASE_URL", ctx.config.database.url.expose_secret())
        .env("WEATHERFLOW_KAFKA_OBSERVATIONS_TOPIC", &k.observations_topic)
        .env("WEATHERFLOW_KAFKA_DLQ_TOPIC", &k.dlq_topic)
        .env("WEATHERFLOW_KAFKA_CONSUMER_GROUP", &k.consumer_group)
        .env("WEATHERFLOW_KAFKA_PARTITIONS", k.partitions.to_string())
        .env("WEATHERFLOW_SCHEDULER_SCHEDULES_PATH", &path)
        .env("RUST_LOG", "info,rdkafka=warn,sqlx=warn,sea_orm=warn")
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(30), service.wait()).await;
    let logs = std::fs::read_to_string(dir.join("service.log")).unwrap_or_default();
    let exit = exit.ok().map(|r| r.unwrap());
    assert!(
        exit.is_some_and(|s| !s.success()),
        "the process should exit non-zero, got {exit:?}\n{logs}"
    );
    assert!(logs.contains("the scheduler stopped"), "{logs}");
    // The consumer half stopped cleanly: its run is closed, not left running.
    let consumer = rows(&ctx.db, "persist").await;
    assert!(
        consumer.iter().all(|r| r.status != RunStatus::Running),
        "{consumer:#?}\n{logs}"
    );
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn a_lock_whose_session_goes_silent_is_lost_within_the_check_timeout() {
    let ctx = TestContext::new().await;
    let proxy = common::proxy::Proxy::to_database(&ctx.config.database).await;
    let db = weatherflow::db::connect(&proxy.database_config(&ctx.config.database))
        .await
        .unwrap();
    let mut lock = weatherflow::runs::lock::JobLock::try_acquire(&db, JobName::Analytics)
        .await
        .unwrap()
        .expect("the lock is free");
    // The session answers: the lock holds through a few checks.
    let held = tokio::time::timeout(weatherflow::runs::lock::CHECK_EVERY * 2, lock.lost()).await;
    assert!(held.is_err(), "the lock holds while its session answers");

    // The session goes silent without closing (a partition, a dead proxy): TCP would take hours to
    // say so; the check gives up after its timeout and the run loses its lock.
    proxy.go_silent(true);
    let silent = Instant::now();
    let bound = weatherflow::runs::lock::CHECK_EVERY
        + weatherflow::runs::lock::CHECK_TIMEOUT
        + Duration::from_secs(3);
    tokio::time::timeout(bound, lock.lost())
        .await
        .expect("a silent lock session is taken as lost within the check's timeout");
    let took = silent.elapsed();
    assert!(
        took >= weatherflow::runs::lock::CHECK_TIMEOUT,
        "lost only after the timeout: {took:?}"
    );
    proxy.go_silent(false);
}
