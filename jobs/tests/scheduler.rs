//! The scheduler: its mechanics (lock, tick check, timeouts, retries, missed ticks, shutdown) with
//! short test bodies on the real database, the real fetch job on a per-second cron, two real scheduler
//! processes against one database, SIGTERM to a real process, and the `status` and `runs` commands.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Datelike, TimeZone, Utc};
use common::schedule::{self, tick, timing};
use common::{TestContext, eventually, exit_within, log_of, run_cli, scratch_dir, signal, spawn};
use entity::job_runs;
use nix::sys::signal::Signal::SIGTERM;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::FutureRecord;
use rdkafka::{Offset, TopicPartitionList};
use sea_orm::{ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use weatherflow::job_error::JobError;
use weatherflow::runs::{
    self, Completion, JobName, REASON_LOCK_HELD, REASON_TICK_HANDLED, RunStatus, StoredReport, Trigger,
};
use weatherflow::scheduler::missed::{CatchUp, Missed};
use weatherflow::scheduler::schedules::Schedules;
use weatherflow::scheduler::{RunContext, ScheduledJob, Scheduler, SchedulerOptions, TickOutcome, catalog};

// The scheduler runs any body under a job's name; the tests' probe bodies borrow the real names
// (each test has a database of its own, so its locks and rows are its own).
const PROBE: JobName = JobName::Fetch;
const POLITE: JobName = JobName::Fetch;
const STUBBORN: JobName = JobName::Analytics;
const FLAKY: JobName = JobName::Fetch;
const BROKEN: JobName = JobName::Analytics;
const CATCH_UP: JobName = JobName::Fetch;
const LET_GO: JobName = JobName::Analytics;
const NEWCOMER: JobName = JobName::Persist;
const FINISHER: JobName = JobName::Fetch;
const OVERSTAYER: JobName = JobName::Analytics;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A job timing from schedules.toml fields (parsed like the real file).
fn options(replica: &str) -> SchedulerOptions {
    schedule::options(replica, Duration::from_millis(300))
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

async fn rows(db: &DatabaseConnection, job: JobName) -> Vec<job_runs::Model> {
    job_runs::Entity::find()
        .filter(job_runs::Column::Job.eq(job))
        .order_by_asc(job_runs::Column::Id)
        .all(db)
        .await
        .unwrap()
}

fn detail<'a>(r: &'a job_runs::Model, key: &str) -> Option<&'a Value> {
    r.details.as_ref()?.get(key)
}

fn detail_str(r: &job_runs::Model, key: &str) -> String {
    detail(r, key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// A body that sleeps `secs`, ignoring cancellation, then succeeds.
fn sleeper(
    secs: f64,
) -> impl Fn(RunContext) -> futures::future::BoxFuture<'static, Result<StoredReport, JobError>> {
    move |_ctx| {
        Box::pin(async move {
            tokio::time::sleep(Duration::from_secs_f64(secs)).await;
            Ok(StoredReport::succeeded())
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Real processes
// ---------------------------------------------------------------------------------------------

/// A schedules file running fetch every second on the simulated source, analytics disabled.
fn per_second_fetch(extra: &str, args: &str) -> String {
    format!(
        "[fetch]\ncron = \"* * * * * *\"\ntimeout_secs = 20\n{extra}\n\
         [fetch.args]\n{args}\n\
         [analytics]\ncron = \"0 0 2 * * *\"\nenabled = false\n"
    )
}

// ---------------------------------------------------------------------------------------------
// Schedules
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_bad_schedules_file_stops_the_scheduler_at_start_naming_job_and_field() {
    let dir = scratch_dir("wf-sched");
    let cases = [
        (
            per_second_fetch("", "locations = [\"London\"]").replace("* * * * * *", "*/10 * * * *"),
            "job 'fetch', field 'cron'",
        ),
        (
            per_second_fetch("timezone = \"Mars/Olympus\"", "locations = [\"London\"]"),
            "job 'fetch', field 'timezone'",
        ),
        (
            per_second_fetch("missed = \"sometimes\"", "locations = [\"London\"]"),
            "job 'fetch', field 'missed'",
        ),
        (
            per_second_fetch("", "locations = [\"London\"]\nconcurrency = 0"),
            "job 'fetch', field 'args.concurrency'",
        ),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let path = dir.join(format!("bad-{i}.toml"));
        std::fs::write(&path, text).unwrap();
        // No database is needed to reject the file: validation comes first.
        let env = vec![
            (
                "WEATHERFLOW_SCHEDULER_SCHEDULES_PATH".to_owned(),
                path.display().to_string(),
            ),
            (
                "DATABASE_URL".to_owned(),
                "postgres://nobody:x@127.0.0.1:1/none".to_owned(),
            ),
        ];
        let (ok, _, stderr) = run_cli(&dir, &["scheduler", "--no-consumer"], &env).await;
        assert!(!ok, "case {i} should fail");
        assert!(stderr.contains(want), "case {i}: want {want:?} in {stderr}");
    }
    std::fs::remove_dir_all(dir).ok();
}

// ---------------------------------------------------------------------------------------------
// Mechanics with test bodies
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn one_tick_runs_once_across_schedulers_and_a_held_lock_skips() {
    let ctx = TestContext::new().await;
    let yearly = timing("cron = \"0 0 0 1 1 *\"\ntimeout_secs = 10");
    let job = || ScheduledJob::new(PROBE, yearly.clone(), sleeper(1.0));
    // Two schedulers on one database are two replicas as far as locks go: every lock has its own session.
    let a = Scheduler::new(ctx.db.clone(), vec![job()], options("a"));
    let b = Scheduler::new(ctx.db.clone(), vec![job()], options("b"));
    let t1 = tick("2026-01-01T00:00:00Z");

    let (ra, rb) = tokio::join!(a.run_tick(PROBE, t1), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        b.run_tick(PROBE, t1).await
    });
    let ra = ra.unwrap();
    let TickOutcome::Ran { status, run_ids } = &ra else {
        panic!("a should run the tick: {ra:?}");
    };
    assert_eq!((*status, run_ids.len()), (RunStatus::Succeeded, 1));
    assert!(
        matches!(rb.unwrap(), TickOutcome::Skipped { reason, .. } if reason == REASON_LOCK_HELD),
        "b must not run while a holds the lock"
    );

    // Within one process too: a second tick while the first still runs is skipped.
    let t2 = tick("2027-01-01T00:00:00Z");
    let (r1, r2) = tokio::join!(a.run_tick(PROBE, t2), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        a.run_tick(PROBE, tick("2028-01-01T00:00:00Z")).await
    });
    assert!(matches!(
        r1.unwrap(),
        TickOutcome::Ran {
            status: RunStatus::Succeeded,
            ..
        }
    ));
    assert!(matches!(r2.unwrap(), TickOutcome::Skipped { reason, .. } if reason == REASON_LOCK_HELD));

    // A tick already run is not run again, by anyone.
    let again = b.run_tick(PROBE, t1).await.unwrap();
    let TickOutcome::Skipped { reason, run_id } = again else {
        panic!("t1 ran already: {again:?}");
    };
    assert_eq!(reason, REASON_TICK_HANDLED);

    let all = rows(&ctx.db, PROBE).await;
    let ran: Vec<_> = all.iter().filter(|r| r.status != RunStatus::Skipped).collect();
    assert_eq!(ran.len(), 2, "{all:#?}");
    assert_eq!(detail_str(ran[0], "tick"), "2026-01-01T00:00:00Z");
    assert_eq!(detail_str(ran[0], "replica"), "a");
    assert_eq!(ran[0].trigger, Trigger::Schedule);
    let skip_row = all.iter().find(|r| r.id == run_id).unwrap();
    assert_eq!(skip_row.status, RunStatus::Skipped);
    assert_eq!(detail_str(skip_row, "reason"), REASON_TICK_HANDLED);
    assert_eq!(detail(skip_row, "handled_by"), Some(&json!(ran[0].id)));
    let lock_skips = all
        .iter()
        .filter(|r| detail_str(r, "reason") == REASON_LOCK_HELD)
        .count();
    assert_eq!(lock_skips, 2);
    assert!(all.iter().all(|r| r.finished_at.is_some()));
}

#[tokio::test]
async fn a_run_left_running_by_a_dead_process_is_closed_and_not_rerun() {
    let ctx = TestContext::new().await;
    let yearly = timing("cron = \"0 0 0 1 1 *\"");
    let s = Scheduler::new(
        ctx.db.clone(),
        vec![ScheduledJob::new(PROBE, yearly, sleeper(0.0))],
        options("a"),
    );
    // What a killed scheduler leaves behind: a running row, and (its session gone) no lock.
    assert_eq!(PROBE, JobName::Fetch, "the row below is PROBE's");
    ctx.db
        .execute_unprepared(
            r#"INSERT INTO job_runs (job, "trigger", status, details)
               VALUES ('fetch', 'schedule', 'running', '{"tick": "2026-01-01T00:00:00Z", "attempt": 1}')"#,
        )
        .await
        .unwrap();
    let out = s.run_tick(PROBE, tick("2026-01-01T00:00:00Z")).await.unwrap();
    assert!(
        matches!(out, TickOutcome::Skipped { reason, .. } if reason == REASON_TICK_HANDLED),
        "{out:?}"
    );
    let out = s.run_tick(PROBE, tick("2027-01-01T00:00:00Z")).await.unwrap();
    assert!(
        matches!(
            out,
            TickOutcome::Ran {
                status: RunStatus::Succeeded,
                ..
            }
        ),
        "{out:?}"
    );

    let all = rows(&ctx.db, PROBE).await;
    assert_eq!(all[0].status, RunStatus::Failed);
    assert!(
        all[0].error.as_deref().unwrap_or_default().contains("abandoned"),
        "{:?}",
        all[0]
    );
    assert!(all.iter().all(|r| r.status != RunStatus::Running));
}

#[tokio::test]
async fn a_run_past_its_timeout_is_cancelled_recorded_failed_and_retried() {
    let ctx = TestContext::new().await;
    let saw_cancel = Arc::new(AtomicU32::new(0));
    let seen = saw_cancel.clone();
    // Cooperative: notices the token and returns.
    let polite = ScheduledJob::new(
        POLITE,
        timing("cron = \"0 0 0 1 1 *\"\ntimeout_secs = 1\nretries = 1\nretry_backoff_secs = 1"),
        move |ctx: RunContext| {
            let seen = seen.clone();
            async move {
                tokio::select! {
                    _ = ctx.cancel.cancelled() => {
                        seen.fetch_add(1, Ordering::SeqCst);
                        Err(JobError::retryable("stopped on request"))
                    }
                    _ = tokio::time::sleep(Duration::from_secs(30)) => Ok(StoredReport::succeeded()),
                }
            }
        },
    );
    // Stubborn: ignores the token; dropped after the cancel wait.
    let stubborn = ScheduledJob::new(
        STUBBORN,
        timing("cron = \"0 0 0 1 1 *\"\ntimeout_secs = 1"),
        sleeper(30.0),
    );
    let s = Scheduler::new(ctx.db.clone(), vec![polite, stubborn], options("a"));
    let t = tick("2026-01-01T00:00:00Z");

    let started = Instant::now();
    let (p, st) = tokio::join!(s.run_tick(POLITE, t), s.run_tick(STUBBORN, t));
    let took = started.elapsed();
    let TickOutcome::Ran { status, run_ids } = p.unwrap() else {
        panic!("polite should run")
    };
    assert_eq!(
        (status, run_ids.len()),
        (RunStatus::Failed, 2),
        "one attempt and one retry"
    );
    assert!(
        matches!(st.unwrap(), TickOutcome::Ran { status: RunStatus::Failed, ref run_ids } if run_ids.len() == 1)
    );
    assert_eq!(
        saw_cancel.load(Ordering::SeqCst),
        2,
        "each timed-out attempt was asked to stop"
    );
    assert!(
        took < Duration::from_secs(8),
        "timeouts cut the 30 s bodies short: {took:?}"
    );

    for job in [POLITE, STUBBORN] {
        let all = rows(&ctx.db, job).await;
        for (i, r) in all.iter().enumerate() {
            assert_eq!(r.status, RunStatus::Failed);
            assert_eq!(r.error.as_deref(), Some("timed out after 1 s"));
            assert_eq!(detail(r, "attempt"), Some(&json!(i + 1)));
            assert_eq!(detail_str(r, "tick"), "2026-01-01T00:00:00Z");
            let ran = r.finished_at.unwrap() - r.started_at;
            assert!(
                ran >= chrono::Duration::milliseconds(950) && ran < chrono::Duration::seconds(3),
                "{ran}"
            );
        }
    }
}

#[tokio::test]
async fn failed_attempts_are_retried_with_backoff_each_in_its_own_row() {
    let ctx = TestContext::new().await;
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let flaky = ScheduledJob::new(
        FLAKY,
        timing("cron = \"0 0 0 1 1 *\"\nretries = 3\nretry_backoff_secs = 1"),
        move |ctx: RunContext| {
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                assert_eq!(ctx.attempt, n);
                if n < 3 {
                    return Err(JobError::retryable(format!("flaky failure {n}")));
                }
                Ok(StoredReport {
                    completion: Completion::Succeeded,
                    records_in: Some(7),
                    records_out: Some(5),
                    details: json!({"worked_on": "attempt three"}),
                })
            }
        },
    );
    let broken = ScheduledJob::new(
        BROKEN,
        timing("cron = \"0 0 0 1 1 *\"\nretries = 1\nretry_backoff_secs = 1"),
        |_ctx: RunContext| async { Err::<StoredReport, _>(JobError::retryable("always broken")) },
    );
    let s = Scheduler::new(ctx.db.clone(), vec![flaky, broken], options("a"));
    let t = tick("2026-01-01T00:00:00Z");
    let (f, b) = tokio::join!(s.run_tick(FLAKY, t), s.run_tick(BROKEN, t));
    assert!(
        matches!(f.unwrap(), TickOutcome::Ran { status: RunStatus::Succeeded, ref run_ids } if run_ids.len() == 3)
    );
    assert!(
        matches!(b.unwrap(), TickOutcome::Ran { status: RunStatus::Failed, ref run_ids } if run_ids.len() == 2)
    );
    assert_eq!(calls.load(Ordering::SeqCst), 3, "no attempt after the success");

    let all = rows(&ctx.db, FLAKY).await;
    let statuses: Vec<RunStatus> = all.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        [RunStatus::Failed, RunStatus::Failed, RunStatus::Succeeded]
    );
    assert_eq!(all[0].error.as_deref(), Some("flaky failure 1"));
    assert_eq!(all[1].error.as_deref(), Some("flaky failure 2"));
    for (i, r) in all.iter().enumerate() {
        assert_eq!(detail(r, "attempt"), Some(&json!(i + 1)));
        assert_eq!(detail_str(r, "tick"), "2026-01-01T00:00:00Z");
    }
    // The job's own details, with the scheduler's beside them.
    assert_eq!(detail_str(&all[2], "worked_on"), "attempt three");
    assert_eq!((all[2].records_in, all[2].records_out), (Some(7), Some(5)));
    // Backoff: 1 s doubling, with jitter in [delay/2, delay].
    let gap = |a: &job_runs::Model, b: &job_runs::Model| b.started_at - a.finished_at.unwrap();
    assert!(
        gap(&all[0], &all[1]) >= chrono::Duration::milliseconds(500),
        "{}",
        gap(&all[0], &all[1])
    );
    assert!(
        gap(&all[1], &all[2]) >= chrono::Duration::milliseconds(1000),
        "{}",
        gap(&all[1], &all[2])
    );

    let all = rows(&ctx.db, BROKEN).await;
    assert_eq!(all.len(), 2);
    assert!(
        all.iter()
            .all(|r| r.status == RunStatus::Failed && r.error.as_deref() == Some("always broken"))
    );
}

#[tokio::test]
async fn missed_ticks_run_once_or_are_skipped_by_policy() {
    let ctx = TestContext::new().await;
    let yearly = |missed: &str| timing(&format!("cron = \"0 0 0 1 1 *\"\nmissed = \"{missed}\""));
    // Both were last scheduled for New Year 2020; the scheduler then was down for years.
    for job in [CATCH_UP, LET_GO] {
        ctx.db
            .execute_unprepared(&format!(
                r#"INSERT INTO job_runs (job, "trigger", status, started_at, finished_at, details)
                   VALUES ('{job}', 'schedule', 'succeeded', '2020-01-01T00:00:01Z', '2020-01-01T00:00:02Z',
                           '{{"tick": "2020-01-01T00:00:00Z", "attempt": 1}}')"#
            ))
            .await
            .unwrap();
    }
    let jobs = || {
        vec![
            ScheduledJob::new(CATCH_UP, yearly("run-once"), sleeper(0.0)),
            ScheduledJob::new(LET_GO, yearly("skip"), sleeper(0.0)),
            ScheduledJob::new(NEWCOMER, yearly("run-once"), sleeper(0.0)),
        ]
    };
    let now = Utc::now();
    let latest = Utc.with_ymd_and_hms(now.year(), 1, 1, 0, 0, 0).unwrap();
    let missed = Missed {
        last_recorded: at("2020-01-01T00:00:00Z"),
        latest,
        count: (now.year() - 2020) as usize,
    };
    let s = Scheduler::new(ctx.db.clone(), jobs(), options("a"));
    assert_eq!(
        s.plan_catch_up(now).await.unwrap(),
        vec![
            (CATCH_UP, CatchUp::RunOnce(missed)),
            (LET_GO, CatchUp::Skip(missed)),
            (NEWCOMER, CatchUp::FirstStart),
        ]
    );

    let shutdown = CancellationToken::new();
    let service = tokio::spawn(s.run(shutdown.clone()));
    let db = ctx.db.clone();
    let caught_up = eventually(Duration::from_secs(10), || {
        let db = db.clone();
        async move {
            rows(&db, CATCH_UP)
                .await
                .iter()
                .any(|r| r.status == RunStatus::Succeeded && r.id > 2)
        }
    })
    .await;
    shutdown.cancel();
    service.await.unwrap().unwrap();
    assert!(caught_up, "run-once should run the missed tick at start");

    let all = rows(&ctx.db, CATCH_UP).await;
    assert_eq!(all.len(), 2, "exactly one catch-up run: {all:#?}");
    assert_eq!(all[1].trigger, Trigger::Schedule);
    assert_eq!(detail(&all[1], "missed"), Some(&json!(true)));
    assert_eq!(detail_str(&all[1], "tick"), runs::tick_text(latest));
    assert_eq!(rows(&ctx.db, LET_GO).await.len(), 1, "skip runs nothing");
    assert!(
        rows(&ctx.db, NEWCOMER).await.is_empty(),
        "nothing to miss on a first start"
    );

    // After the catch-up, a restart finds nothing missed.
    let s = Scheduler::new(ctx.db.clone(), jobs(), options("a"));
    let plans = s.plan_catch_up(Utc::now()).await.unwrap();
    assert_eq!(plans[0], (CATCH_UP, CatchUp::NothingMissed));
}

#[tokio::test]
async fn shutdown_lets_running_jobs_finish_within_grace_then_cancels_the_rest() {
    let ctx = TestContext::new().await;
    let every_second = "cron = \"* * * * * *\"\ntimeout_secs = 60\nretries = 2\nretry_backoff_secs = 1";
    let jobs = vec![
        ScheduledJob::new(FINISHER, timing(every_second), sleeper(0.8)),
        ScheduledJob::new(OVERSTAYER, timing(every_second), sleeper(30.0)),
    ];
    let s = Scheduler::new(ctx.db.clone(), jobs, options("a"));
    let shutdown = CancellationToken::new();
    let service = tokio::spawn(s.run(shutdown.clone()));

    let db = ctx.db.clone();
    let both_running = eventually(Duration::from_secs(10), || {
        let db = db.clone();
        async move {
            let f = rows(&db, FINISHER).await;
            let o = rows(&db, OVERSTAYER).await;
            f.iter().any(|r| r.status == RunStatus::Running)
                && o.iter().any(|r| r.status == RunStatus::Running)
        }
    })
    .await;
    assert!(both_running);
    let running_finisher = rows(&ctx.db, FINISHER)
        .await
        .into_iter()
        .find(|r| r.status == RunStatus::Running)
        .unwrap();
    let stopping = Instant::now();
    shutdown.cancel();
    service.await.unwrap().unwrap();
    let took = stopping.elapsed();
    // Grace 2 s, then cancel and a 300 ms wait: well under the overstayer's 30 s.
    assert!(took < Duration::from_secs(5), "{took:?}");

    let finisher = rows(&ctx.db, FINISHER).await;
    let f = finisher.iter().find(|r| r.id == running_finisher.id).unwrap();
    assert_eq!(
        f.status,
        RunStatus::Succeeded,
        "finished within the grace period: {f:?}"
    );
    let overstayer = rows(&ctx.db, OVERSTAYER).await;
    let ran: Vec<_> = overstayer
        .iter()
        .filter(|r| r.status != RunStatus::Skipped)
        .collect();
    assert_eq!(ran.len(), 1, "one run, no retry after shutdown: {overstayer:#?}");
    assert_eq!(ran[0].status, RunStatus::Failed);
    assert!(
        ran[0]
            .error
            .as_deref()
            .unwrap_or_default()
            .starts_with("cancelled at shutdown"),
        "{:?}",
        ran[0].error
    );
    for r in finisher.iter().chain(&overstayer) {
        assert_ne!(r.status, RunStatus::Running, "{r:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// The real fetch job
// ---------------------------------------------------------------------------------------------

/// Messages on the test's observations topic (sum of the partitions' end offsets).
async fn messages_on_topic(ctx: &TestContext) -> i64 {
    let k = ctx.config.kafka.clone();
    let parts = tokio::task::spawn_blocking(move || weatherflow::kafka::consumer_lag(&k))
        .await
        .unwrap()
        .unwrap()
        .expect("the fetch job created the topic");
    parts.iter().map(|p| p.high).sum()
}

#[tokio::test]
async fn a_one_second_cron_fires_fetch_twice_and_records_both_runs() {
    let ctx = TestContext::new().await;
    let text = per_second_fetch(
        "",
        "source = \"simulated\"\nseed = 7\nlocations = [\"London\", \"Paris\"]",
    );
    let schedules = Schedules::parse(&text, "test").unwrap();
    let jobs = catalog::pipeline_jobs(Arc::new(ctx.config.clone()), ctx.db.clone(), &schedules);
    let s = Scheduler::new(ctx.db.clone(), jobs, options("solo"));
    let shutdown = CancellationToken::new();
    let service = tokio::spawn(s.run(shutdown.clone()));
    let db = ctx.db.clone();
    let twice = eventually(Duration::from_secs(15), || {
        let db = db.clone();
        async move {
            let all = rows(&db, JobName::Fetch).await;
            all.iter()
                .filter(|r| r.finished_at.is_some() && r.status != RunStatus::Skipped)
                .count()
                >= 2
        }
    })
    .await;
    shutdown.cancel();
    service.await.unwrap().unwrap();

    let all = rows(&ctx.db, JobName::Fetch).await;
    let ran: Vec<_> = all.iter().filter(|r| r.status != RunStatus::Skipped).collect();
    assert!(twice && ran.len() >= 2, "{all:#?}");
    for r in &ran {
        assert_eq!(r.trigger, Trigger::Schedule);
        assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
        assert_eq!(r.records_out, Some(2), "one message per location: {r:?}");
    }
    let ticks: Vec<DateTime<Utc>> = ran.iter().map(|r| at(&detail_str(r, "tick"))).collect();
    assert!(
        ticks.windows(2).all(|w| w[0] < w[1]),
        "one run per tick: {ticks:?}"
    );
    assert!(
        rows(&ctx.db, JobName::Analytics).await.is_empty(),
        "analytics is disabled"
    );
    let produced: i64 = ran.iter().filter_map(|r| r.records_out).sum();
    assert_eq!(messages_on_topic(&ctx).await, produced);
}

#[tokio::test]
async fn two_scheduler_processes_never_run_the_same_tick_twice() {
    let ctx = TestContext::new().await;
    let dir = scratch_dir("wf-sched");
    let path = dir.join("schedules.toml");
    std::fs::write(
        &path,
        per_second_fetch(
            "",
            "source = \"simulated\"\nseed = 3\nlocations = [\"London\", \"Tokyo\"]",
        ),
    )
    .unwrap();
    let mut env = ctx.child_env();
    env.push((
        "WEATHERFLOW_SCHEDULER_SCHEDULES_PATH".into(),
        path.display().to_string(),
    ));
    let with_name = |name: &str| {
        let mut e = env.clone();
        e.push(("WEATHERFLOW_SCHEDULER_REPLICA".into(), name.into()));
        e
    };
    let mut a = spawn(&dir, "a", &["scheduler", "--no-consumer"], &with_name("a"));
    let mut b = spawn(&dir, "b", &["scheduler", "--no-consumer"], &with_name("b"));

    // Wait until both replicas have dealt with the same five ticks and five ticks have run (a tick
    // that comes while the previous run still holds the lock is skipped by both, so under load not
    // every shared tick runs).
    let shared_ticks = "SELECT least((SELECT count(*) FROM (SELECT details->>'tick' FROM job_runs \
                        WHERE job = 'fetch' GROUP BY 1 HAVING count(DISTINCT details->>'replica') = 2) t), \
                        (SELECT count(*) FROM job_runs WHERE job = 'fetch' AND status <> 'skipped'))";
    let db = ctx.db.clone();
    let contended = eventually(Duration::from_secs(40), || {
        let db = db.clone();
        async move {
            let row = db
                .query_one_raw(sea_orm::Statement::from_string(
                    db.get_database_backend(),
                    shared_ticks,
                ))
                .await
                .unwrap()
                .unwrap();
            row.try_get_by_index::<i64>(0).unwrap() >= 5
        }
    })
    .await;
    signal(&a, SIGTERM);
    signal(&b, SIGTERM);
    let (ea, eb) = (
        exit_within(&mut a, Duration::from_secs(15)).await,
        exit_within(&mut b, Duration::from_secs(15)).await,
    );
    let logs = format!(
        "--- a ---\n{}\n--- b ---\n{}",
        log_of(&dir, "a"),
        log_of(&dir, "b")
    );
    assert!(contended, "both replicas should handle the same ticks\n{logs}");
    assert!(
        ea.is_some_and(|s| s.success()) && eb.is_some_and(|s| s.success()),
        "{ea:?} {eb:?}\n{logs}"
    );

    let all = rows(&ctx.db, JobName::Fetch).await;
    let mut by_tick: std::collections::BTreeMap<String, Vec<&job_runs::Model>> = Default::default();
    for r in &all {
        by_tick.entry(detail_str(r, "tick")).or_default().push(r);
    }
    for (tick, rs) in &by_tick {
        let ran: Vec<_> = rs.iter().filter(|r| r.status != RunStatus::Skipped).collect();
        assert!(ran.len() <= 1, "tick {tick} ran {} times: {rs:#?}", ran.len());
        for r in rs.iter().filter(|r| r.status == RunStatus::Skipped) {
            let reason = detail_str(r, "reason");
            assert!(
                reason == REASON_LOCK_HELD || reason == REASON_TICK_HANDLED,
                "{r:?}"
            );
        }
    }
    for replica in ["a", "b"] {
        let n = all.iter().filter(|r| detail_str(r, "replica") == replica).count();
        assert!(n >= 5, "replica {replica} handled only {n} ticks\n{logs}");
    }
    let ran: Vec<_> = all.iter().filter(|r| r.status != RunStatus::Skipped).collect();
    assert!(ran.len() >= 5, "only {} ticks ran: {all:#?}", ran.len());
    for r in &ran {
        assert_eq!(r.status, RunStatus::Succeeded, "{r:?}\n{logs}");
    }
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn sigterm_during_a_run_exits_zero_and_closes_the_run() {
    let ctx = TestContext::new().await;
    let (base_url, server) = common::weatherapi_stub::hanging().await;
    let dir = scratch_dir("wf-sched");
    let path = dir.join("schedules.toml");
    std::fs::write(
        &path,
        per_second_fetch("", "source = \"weatherapi\"\nlocations = [\"London\"]"),
    )
    .unwrap();
    let mut env = ctx.child_env();
    env.extend(
        [
            ("WEATHERFLOW_SCHEDULER_SCHEDULES_PATH", path.display().to_string()),
            ("WEATHERFLOW_SCHEDULER_SHUTDOWN_GRACE_SECS", "1".into()),
            ("WEATHERFLOW_SCHEDULER_CANCEL_WAIT_SECS", "2".into()),
            ("WEATHERAPI_KEY", "test-key".into()),
            ("WEATHERFLOW_WEATHERAPI_BASE_URL", base_url),
            ("WEATHERFLOW_WEATHERAPI_TIMEOUT_SECS", "60".into()),
            ("WEATHERFLOW_WEATHERAPI_MAX_TOTAL_SECS", "120".into()),
        ]
        .map(|(k, v)| (k.to_owned(), v)),
    );
    // The full service: scheduler and consumer.
    let mut service = spawn(&dir, "service", &["scheduler"], &env);
    let db = ctx.db.clone();
    let running = eventually(Duration::from_secs(15), || {
        let db = db.clone();
        async move {
            rows(&db, JobName::Fetch)
                .await
                .iter()
                .any(|r| r.status == RunStatus::Running)
        }
    })
    .await;
    let run = rows(&ctx.db, JobName::Fetch)
        .await
        .into_iter()
        .find(|r| r.status == RunStatus::Running);
    signal(&service, SIGTERM);
    let exit = exit_within(&mut service, Duration::from_secs(20)).await;
    server.abort();
    let logs = log_of(&dir, "service");
    assert!(running, "a fetch run should be in progress\n{logs}");
    assert!(exit.is_some_and(|s| s.code() == Some(0)), "exit {exit:?}\n{logs}");

    let run = run.unwrap();
    let closed = job_runs::Entity::find_by_id(run.id)
        .one(&ctx.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(closed.status, RunStatus::Failed, "{closed:?}");
    assert!(
        closed
            .error
            .as_deref()
            .unwrap_or_default()
            .starts_with("cancelled at shutdown"),
        "{closed:?}"
    );
    let left_running: Vec<_> = job_runs::Entity::find()
        .filter(job_runs::Column::Status.eq(RunStatus::Running))
        .all(&ctx.db)
        .await
        .unwrap();
    assert!(left_running.is_empty(), "{left_running:#?}\n{logs}");
    let consumer = rows(&ctx.db, JobName::Persist).await;
    assert_eq!(consumer.len(), 1, "the consumer ran alongside: {consumer:#?}");
    std::fs::remove_dir_all(dir).ok();
}

// ---------------------------------------------------------------------------------------------
// status and runs
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn status_shows_last_runs_next_fires_lag_and_counts_and_runs_shows_history() {
    let ctx = TestContext::new().await;
    let dir = scratch_dir("wf-sched");
    let path = dir.join("schedules.toml");
    std::fs::write(
        &path,
        "[fetch]\ncron = \"0 */10 * * * *\"\n[fetch.args]\nlocations = [\"London\"]\n\
         [analytics]\ncron = \"0 0 2 * * *\"\nenabled = false\n",
    )
    .unwrap();
    let mut env = ctx.child_env();
    env.push((
        "WEATHERFLOW_SCHEDULER_SCHEDULES_PATH".into(),
        path.display().to_string(),
    ));
    ctx.db
        .execute_unprepared(
            r#"INSERT INTO job_runs (job, "trigger", status, started_at, finished_at, records_in, records_out, details) VALUES
               ('fetch', 'schedule', 'succeeded', now() - interval '5 minutes', now() - interval '299 seconds', 1, 1,
                '{"tick": "2026-01-01T00:00:00Z", "attempt": 1, "replica": "a"}'),
               ('fetch', 'schedule', 'skipped', now() - interval '5 minutes', now() - interval '5 minutes',
                NULL, NULL, '{"tick": "2026-01-01T00:00:00Z", "replica": "b", "reason": "another run holds the lock"}');
               INSERT INTO job_runs (job, "trigger", status, started_at, finished_at, error) VALUES
               ('analytics', 'manual', 'failed', now() - interval '3 hours', now() - interval '3 hours', 'no data');"#,
        )
        .await
        .unwrap();

    let (ok, out, err) = run_cli(&dir, &["status"], &env).await;
    assert!(ok, "{err}");
    let line = |name: &str| {
        out.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} line in\n{out}"))
            .to_owned()
    };
    let fetch = line("fetch ");
    assert!(
        fetch.contains("#1 ") && fetch.contains("succeeded") && fetch.contains("5m"),
        "{fetch}"
    );
    assert!(fetch.contains("(in "), "next fire time: {fetch}");
    let analytics = line("analytics ");
    assert!(
        analytics.contains("failed") && analytics.contains("3h") && analytics.contains("disabled"),
        "{analytics}"
    );
    assert!(line("persist ").contains("never"), "{out}");
    assert!(out.contains("does not exist yet"), "{out}");
    assert!(line("job_runs ").trim_end().ends_with(" 3"), "{out}");
    assert!(line("observations ").trim_end().ends_with(" 0"), "{out}");

    // Now a topic with 5 messages on partition 0, of which the group committed 2.
    let k = &ctx.config.kafka;
    weatherflow::kafka::ensure_topic(k, &k.observations_topic, 3)
        .await
        .unwrap();
    let producer = weatherflow::kafka::producer(k).unwrap();
    for i in 0..5 {
        let payload = format!("m{i}");
        producer
            .send(
                FutureRecord::<(), _>::to(&k.observations_topic)
                    .partition(0)
                    .payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
    let group: BaseConsumer = weatherflow::kafka::base_config(k)
        .set("group.id", &k.consumer_group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&k.observations_topic, 0, Offset::Offset(2))
        .unwrap();
    group.commit(&tpl, CommitMode::Sync).unwrap();

    let (ok, out, err) = run_cli(&dir, &["status"], &env).await;
    assert!(ok, "{err}");
    let lag_rows: Vec<Vec<&str>> = out
        .lines()
        .skip_while(|l| !l.starts_with("consumer lag"))
        .skip(3)
        .take(4)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lag_rows,
        vec![
            vec!["0", "2", "5", "3"],
            vec!["1", "none", "0", "0"],
            vec!["2", "none", "0", "0"],
            vec!["total", "3"],
        ],
        "{out}"
    );

    let (ok, out, err) = run_cli(&dir, &["runs", "--job", "fetch", "--last", "5"], &env).await;
    assert!(ok, "{err}");
    assert!(out.lines().next().unwrap().contains("try"), "{out}");
    assert!(
        out.contains("another run holds the lock (tick 2026-01-01T00:00:00Z)"),
        "{out}"
    );
    assert!(!out.contains("analytics"), "{out}");
    std::fs::remove_dir_all(dir).ok();
}

/// The `next:` lines of `job` in the output of `weatherflow schedules`.
fn next_lines(out: &str, job: &str) -> Vec<String> {
    out.lines()
        .skip_while(|l| !l.starts_with(&format!("{job}: cron")))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.trim().strip_prefix("next: ").map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn the_schedules_command_prints_the_fire_times_the_scheduler_fires_across_dst() {
    let dir = scratch_dir("wf-sched-dst");
    let path = dir.join("schedules.toml");
    std::fs::write(
        &path,
        "[fetch]\ncron = \"0 */10 * * * *\"\ntimezone = \"Europe/Paris\"\n[fetch.args]\nlocations = [\"x\"]\n\
         [analytics]\ncron = \"0 30 2 * * *\"\ntimezone = \"Europe/Paris\"\n",
    )
    .unwrap();
    let file = path.to_str().unwrap();
    let schedules = |after: &'static str, count: &'static str| {
        let dir = dir.clone();
        async move {
            let args = ["schedules", "--file", file, "--after", after, "--count", count];
            let (ok, out, err) = run_cli(&dir, &args, &[]).await;
            assert!(ok, "{err}");
            out
        }
    };

    // Autumn: Paris falls back at 01:00Z on 25 October 2026, and 02:00-02:59 happens twice. A
    // 10-minute cron fires through both passes; none is skipped or printed twice.
    let out = schedules("2026-10-25T00:45:00Z", "9").await;
    assert_eq!(
        next_lines(&out, "fetch"),
        [
            "2026-10-25T02:50:00+02:00",
            "2026-10-25T02:00:00+01:00",
            "2026-10-25T02:10:00+01:00",
            "2026-10-25T02:20:00+01:00",
            "2026-10-25T02:30:00+01:00",
            "2026-10-25T02:40:00+01:00",
            "2026-10-25T02:50:00+01:00",
            "2026-10-25T03:00:00+01:00",
            "2026-10-25T03:10:00+01:00",
        ],
        "{out}"
    );
    // The daily 02:30 fires in each pass of the repeated hour.
    let out = schedules("2026-10-24T12:00:00Z", "3").await;
    assert_eq!(
        next_lines(&out, "analytics"),
        [
            "2026-10-25T02:30:00+02:00",
            "2026-10-25T02:30:00+01:00",
            "2026-10-26T02:30:00+01:00",
        ],
        "{out}"
    );

    // Spring: Paris springs forward at 01:00Z on 29 March 2026; 02:00-02:59 does not exist. The
    // 10-minute cron goes on at 03:00, and the daily 02:30 fires once, when the gap ends.
    let out = schedules("2026-03-29T00:35:00Z", "5").await;
    assert_eq!(
        next_lines(&out, "fetch"),
        [
            "2026-03-29T01:40:00+01:00",
            "2026-03-29T01:50:00+01:00",
            "2026-03-29T03:00:00+02:00",
            "2026-03-29T03:10:00+02:00",
            "2026-03-29T03:20:00+02:00",
        ],
        "{out}"
    );
    let out = schedules("2026-03-28T12:00:00Z", "2").await;
    assert_eq!(
        next_lines(&out, "analytics"),
        ["2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"],
        "{out}"
    );
    // The maintenance job, not in the file, has its default schedule.
    assert!(out.contains("maintenance: cron \"0 30 1 * * *\" (UTC)"), "{out}");
    std::fs::remove_dir_all(dir).ok();
}
