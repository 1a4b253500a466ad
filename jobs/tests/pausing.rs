//! Pausing jobs on the real database and broker: a paused job's ticks are recorded skipped, manual
//! runs are refused unless forced (CLI and HTTP), auto-pause after failed runs, and a paused persist
//! consumer that keeps its partitions, stores and commits nothing, and stores everything exactly
//! once when resumed, without a rebalance.

mod common;

use std::time::{Duration, Instant};

use common::schedule::{self, tick, timing};
use common::stream::*;
use common::{TestContext, run_cli, scratch_dir};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use weatherflow::executor::{ExecError, Executor};
use weatherflow::job_error::JobError;
use weatherflow::jobs::persist::{self, PersistRequest};
use weatherflow::kafka::consumer_lag;
use weatherflow::runs::pause::{self, Paused};
use weatherflow::runs::{JobName, REASON_PAUSED, RunStatus, StoredReport};
use weatherflow::scheduler::{RunContext, ScheduledJob, Scheduler, SchedulerOptions, TickOutcome};

fn options() -> SchedulerOptions {
    schedule::options("test", Duration::from_millis(300))
}

/// A body that fails (retryably) with a numbered error each time it runs.
fn failing() -> impl Fn(RunContext) -> futures::future::BoxFuture<'static, Result<StoredReport, JobError>> {
    move |ctx| {
        Box::pin(async move { Err(JobError::retryable(format!("upstream down (run {})", ctx.run_id))) })
    }
}

fn succeeding() -> impl Fn(RunContext) -> futures::future::BoxFuture<'static, Result<StoredReport, JobError>>
{
    |_| Box::pin(async { Ok(StoredReport::succeeded()) })
}

#[tokio::test]
async fn a_paused_job_is_skipped_at_its_tick_and_refused_by_hand_unless_forced() {
    let ctx = TestContext::new().await;
    let job = JobName::Fetch;
    let sched = Scheduler::new(
        ctx.db.clone(),
        vec![ScheduledJob::new(
            job,
            timing("cron = \"0 0 0 1 1 *\""),
            succeeding(),
        )],
        options(),
    );
    let done = pause::pause(&ctx.db, job, "alice", Some("quota nearly used"), false)
        .await
        .unwrap();
    assert!(matches!(done, Paused::Now(_)));
    // Pausing again changes nothing: the first who and why stay.
    let again = pause::pause(&ctx.db, job, "bob", Some("other"), false)
        .await
        .unwrap();
    assert!(matches!(&again, Paused::Already(p) if p.paused_by == "alice"));

    let out = sched.run_tick(job, tick("2027-01-01T00:00:00Z")).await.unwrap();
    let TickOutcome::Skipped { reason, run_id } = out else {
        panic!("a paused tick is skipped: {out:?}")
    };
    assert_eq!(reason, REASON_PAUSED);
    let row = weatherflow::runs::history(&ctx.db, Some(job), 1)
        .await
        .unwrap()
        .remove(0);
    assert_eq!((row.id, row.status), (run_id, RunStatus::Skipped));
    let details = row.details.unwrap();
    assert_eq!(details["pause"]["paused_by"], "alice");
    assert_eq!(details["pause"]["reason"], "quota nearly used");

    let exec = Executor::new(ctx.db.clone(), Duration::from_secs(1));
    let refused = exec.claim_unpaused(job, false).await.unwrap_err();
    assert!(matches!(refused, ExecError::Paused(_)));
    let text = refused.to_string();
    assert!(
        text.contains("paused by alice") && text.contains("--force"),
        "{text}"
    );
    exec.claim_unpaused(job, true)
        .await
        .expect("forced")
        .release()
        .await;

    let lifted = pause::resume(&ctx.db, job, "carol")
        .await
        .unwrap()
        .expect("was paused");
    assert_eq!(lifted.reason.as_deref(), Some("quota nearly used"));
    assert!(pause::resume(&ctx.db, job, "carol").await.unwrap().is_none());
    let out = sched.run_tick(job, tick("2028-01-01T00:00:00Z")).await.unwrap();
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
    let events = ctx
        .scalar_text("SELECT string_agg(action || ':' || by, ',' ORDER BY id) FROM job_pause_events")
        .await;
    assert_eq!(events, "pause:alice,resume:carol");
}

#[tokio::test]
async fn a_job_is_auto_paused_after_n_failed_runs_in_a_row_counting_retries_as_one() {
    let ctx = TestContext::new().await;
    let job = JobName::Analytics;
    // Two attempts per tick (one retry): three ticks are six failed rows but three failed runs.
    let t = timing("cron = \"0 0 0 1 1 *\"\nretries = 1\nretry_backoff_secs = 0\npause_after_failures = 3");
    let sched = Scheduler::new(
        ctx.db.clone(),
        vec![ScheduledJob::new(job, t, failing())],
        options(),
    );
    let ok = Scheduler::new(
        ctx.db.clone(),
        vec![ScheduledJob::new(
            job,
            timing("cron = \"0 0 0 1 1 *\"\npause_after_failures = 3"),
            succeeding(),
        )],
        options(),
    );

    // fail, fail, succeed: the success breaks the streak.
    for (s, at) in [
        (&sched, "2027-01-01T00:00:00Z"),
        (&sched, "2028-01-01T00:00:00Z"),
        (&ok, "2029-01-01T00:00:00Z"),
    ] {
        s.run_tick(job, tick(at)).await.unwrap();
    }
    for at in ["2030-01-01T00:00:00Z", "2031-01-01T00:00:00Z"] {
        let out = sched.run_tick(job, tick(at)).await.unwrap();
        assert!(
            matches!(out, TickOutcome::Ran { status: RunStatus::Failed, ref run_ids } if run_ids.len() == 2)
        );
        assert!(
            pause::get(&ctx.db, job).await.unwrap().is_none(),
            "two failures in a row are not three"
        );
    }
    sched.run_tick(job, tick("2032-01-01T00:00:00Z")).await.unwrap();
    let p = pause::get(&ctx.db, job)
        .await
        .unwrap()
        .expect("paused after the third failure");
    assert!(p.auto);
    assert_eq!(p.paused_by, pause::AUTO);
    let last_error = ctx
        .scalar_text("SELECT error FROM job_runs WHERE job = 'analytics' ORDER BY id DESC LIMIT 1")
        .await;
    let reason = p.reason.unwrap();
    assert!(
        reason.starts_with("3 runs in a row failed") && reason.ends_with(&last_error),
        "{reason}"
    );

    // Its next tick is skipped; after a resume the streak starts again from zero.
    let out = sched.run_tick(job, tick("2033-01-01T00:00:00Z")).await.unwrap();
    assert!(
        matches!(
            out,
            TickOutcome::Skipped {
                reason: REASON_PAUSED,
                ..
            }
        ),
        "{out:?}"
    );
    pause::resume(&ctx.db, job, "ops").await.unwrap();
    sched.run_tick(job, tick("2034-01-01T00:00:00Z")).await.unwrap();
    assert!(
        pause::get(&ctx.db, job).await.unwrap().is_none(),
        "one failure since the resume"
    );
    let autos = ctx
        .scalar_i64("SELECT count(*) FROM job_pause_events WHERE auto AND action = 'pause'")
        .await;
    assert_eq!(autos, 1);
}

#[tokio::test]
async fn the_cli_pauses_refuses_forces_shows_and_resumes() {
    let ctx = TestContext::new().await;
    let dir = scratch_dir("wf-pause");
    let env = ctx.child_env();
    let (ok, out, err) = run_cli(
        &dir,
        &[
            "pause",
            "maintenance",
            "--reason",
            "disk migration",
            "--by",
            "alice",
        ],
        &env,
    )
    .await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("paused by alice"), "{out}");
    let (ok, _, err) = run_cli(&dir, &["run", "maintenance"], &env).await;
    assert!(!ok, "a paused job is refused by hand");
    assert!(
        err.contains("is paused by alice") && err.contains("disk migration") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(
        ctx.scalar_i64("SELECT count(*) FROM job_runs").await,
        0,
        "a refusal runs nothing"
    );
    let (ok, _, err) = run_cli(&dir, &["run", "maintenance", "--force"], &env).await;
    assert!(ok, "{err}");
    let (ok, out, err) = run_cli(&dir, &["status"], &env).await;
    assert!(ok, "{err}");
    assert!(
        out.contains("PAUSED maintenance: paused by alice") && out.contains("disk migration"),
        "{out}"
    );
    let (ok, out, _) = run_cli(&dir, &["resume", "maintenance"], &env).await;
    assert!(ok && out.contains("resumed"), "{out}");
    let (ok, _, err) = run_cli(&dir, &["run", "maintenance"], &env).await;
    assert!(ok, "{err}");
    let (ok, _, err) = run_cli(&dir, &["pause", "replay"], &env).await;
    assert!(!ok && err.contains("cannot be paused"), "{err}");
}

/// The persist group's members' ids, as the broker reports them.
fn group_members(ctx: &TestContext) -> Vec<String> {
    let mut cfg: ClientConfig = weatherflow::kafka::base_config(&ctx.config.kafka);
    let admin: BaseConsumer = cfg.set("group.id", common::unique("wf-probe")).create().unwrap();
    let list = admin
        .fetch_group_list(Some(&ctx.config.kafka.consumer_group), Duration::from_secs(10))
        .unwrap();
    list.groups()
        .iter()
        .flat_map(|g| g.members().iter().map(|m| m.id().to_owned()))
        .collect()
}

/// Every partition's committed offset of the persist group.
fn committed(ctx: &TestContext) -> Vec<Option<i64>> {
    let parts = consumer_lag(&ctx.config.kafka)
        .unwrap()
        .expect("the topic exists");
    parts.iter().map(|p| p.committed).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_consumer_keeps_its_partitions_stores_nothing_and_resumes_exactly_once() {
    let ctx = TestContext::new().await;
    create_topics(&ctx).await;
    let producer = weatherflow::kafka::producer(&ctx.config.kafka).unwrap();
    let mut config = ctx.config.clone();
    config.persist.session_timeout_ms = 6000;
    config.persist.commit_interval_ms = 100;
    let topic = config.kafka.observations_topic.clone();
    let stop = CancellationToken::new();
    let (db, token) = (ctx.db.clone(), stop.clone());
    let job = tokio::spawn(async move { persist::run(&config, &db, PersistRequest::default(), token).await });

    let epoch0 = base_epoch();
    let first: Vec<Generated> = (0..30).map(|i| generate(i, 6, epoch0)).collect();
    let mut deliveries = send_all(&producer, &topic, &first).await;
    wait_for_rows(&ctx, 30, Duration::from_secs(60)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while committed(&ctx).iter().map(|c| c.unwrap_or(0)).sum::<i64>() < 30 {
        assert!(
            Instant::now() < deadline,
            "the first records' offsets are committed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let members = group_members(&ctx);
    assert_eq!(members.len(), 1, "{members:?}");

    pause::pause(
        &ctx.db,
        JobName::Persist,
        "test",
        Some("database maintenance"),
        false,
    )
    .await
    .unwrap();
    // The watcher reads the state every 2 s; the thread applies it on its next turn.
    tokio::time::sleep(pause::POLL_EVERY * 2 + Duration::from_secs(1)).await;
    let before = committed(&ctx);
    let second: Vec<Generated> = (30..530).map(|i| generate(i, 6, epoch0)).collect();
    deliveries.extend(send_all(&producer, &topic, &second).await);
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(try_count(&ctx).await, Some(30), "nothing is stored while paused");
    assert_eq!(committed(&ctx), before, "no committed offset moves while paused");
    assert_eq!(
        group_members(&ctx),
        members,
        "the consumer stays in the group as the same member"
    );

    pause::resume(&ctx.db, JobName::Persist, "test").await.unwrap();
    wait_for_rows(&ctx, 530, Duration::from_secs(60)).await;
    assert_every_offset_stored_once(&ctx, &deliveries).await;
    assert_eq!(
        group_members(&ctx),
        members,
        "no rebalance: the same member throughout"
    );
    stop.cancel();
    let summary = job.await.unwrap().expect("the consumer stops cleanly");
    // Each record was read once: the pause dropped what was prefetched, and nothing was re-read
    // from a committed offset as a rebalance would have.
    assert_eq!(summary.consumed, 530);
    assert_eq!(summary.stored, 530);
    let total: i64 = committed(&ctx).iter().map(|c| c.unwrap_or(0)).sum();
    assert_eq!(total, 530, "everything is committed after the resume");
}

/// The JSON of `/api/v1/status`'s job entry.
fn job_entry(status: &Value, job: &str) -> Value {
    status["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["job"] == job)
        .cloned()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_pauses_and_resumes_with_the_token_and_refuses_a_paused_run_unless_forced() {
    let ctx = TestContext::new().await;
    let mut config = ctx.config.clone();
    const TOKEN: &str = "pause-token-3e8d";
    config.web.token = Some(secrecy::SecretString::from(TOKEN));
    config.web.cache_ttl_ms = 0;
    let shutdown = CancellationToken::new();
    let state = weatherflow::web::AppState::start(
        std::sync::Arc::new(config),
        ctx.db.clone(),
        shutdown.clone(),
        None,
    )
    .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    let router = weatherflow::web::app(state.clone());
    let server = tokio::spawn({
        let addr = addr.clone();
        async move { weatherflow::web::run(&addr, state, router).await }
    });
    let url = |p: &str| format!("http://{addr}{p}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while http.get(url("/healthz")).send().await.is_err() {
        assert!(Instant::now() < deadline, "the server answers");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let r = http
        .post(url("/api/v1/jobs/maintenance/pause"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "the token guards the pause");
    assert!(pause::get(&ctx.db, JobName::Maintenance).await.unwrap().is_none());
    let r = http
        .post(url("/api/v1/jobs/maintenance/pause"))
        .bearer_auth(TOKEN)
        .header("x-forwarded-for", "203.0.113.5")
        .json(&serde_json::json!({"reason": "restore running"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["paused"]["paused_by"], "http (203.0.113.5)");
    assert_eq!(body["changed"], true);

    let status: Value = http
        .get(url("/api/v1/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let entry = job_entry(&status, "maintenance");
    assert_eq!(entry["paused"]["reason"], "restore running", "{entry}");
    assert!(job_entry(&status, "fetch")["paused"].is_null());
    let html = http.get(url("/")).send().await.unwrap().text().await.unwrap();
    assert!(html.contains("restore running") && html.contains("http (203.0.113.5)"));

    let r = http
        .post(url("/api/v1/runs/maintenance"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "paused", "{body}");
    let r = http
        .post(url("/api/v1/runs/maintenance?force=true"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);

    let r = http
        .post(url("/api/v1/jobs/maintenance/resume"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["resumed"]["reason"], "restore running");
    assert!(pause::get(&ctx.db, JobName::Maintenance).await.unwrap().is_none());
    shutdown.cancel();
    server.await.unwrap().unwrap();
}
