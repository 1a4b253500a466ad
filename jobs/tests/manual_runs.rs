//! Manual runs take the job's advisory lock, so they never overlap a scheduled run; partition
//! maintenance is a job of its own.

mod common;

use common::TestContext;
use weatherflow::runs::lock::JobLock;
use weatherflow::runs::{JobName, RunStatus, Trigger};

#[tokio::test]
async fn a_manual_run_fails_while_another_run_holds_the_lock_and_runs_once_it_is_free() {
    let ctx = TestContext::new().await;
    let dir = common::scratch_dir("wf-manual");
    let env = ctx.child_env();
    let run = || common::run_cli(&dir, &["run", "analytics"], &env);
    let held = JobLock::try_acquire(&ctx.db, JobName::Analytics)
        .await
        .unwrap()
        .expect("the lock is free");
    let (ok, _, stderr) = run().await;
    assert!(!ok, "must fail while the lock is held: {stderr}");
    assert!(
        stderr.contains("another analytics run (scheduled or manual) is in progress"),
        "{stderr}"
    );
    held.release().await.unwrap();

    // Free again: the run goes ahead (no observations yet, so it is recorded as skipped).
    let (ok, _, stderr) = run().await;
    assert!(ok, "{stderr}");
    let runs = weatherflow::runs::history(&ctx.db, Some(JobName::Analytics), 10)
        .await
        .unwrap();
    assert_eq!(runs.len(), 1, "the refused run left no row: {runs:?}");
    assert_eq!(runs[0].trigger, Trigger::Manual);
    assert_eq!(runs[0].status, RunStatus::Skipped);
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn a_manual_maintenance_run_is_a_job_of_its_own_recorded_with_what_it_did() {
    let ctx = TestContext::new().await;
    let dir = common::scratch_dir("wf-manual-maint");
    let env = ctx.child_env();
    let run = || common::run_cli(&dir, &["run", "maintenance"], &env);
    // Its own lock: held, the run is refused at once and leaves no row.
    let held = JobLock::try_acquire(&ctx.db, JobName::Maintenance)
        .await
        .unwrap()
        .expect("the lock is free");
    let (ok, _, stderr) = run().await;
    assert!(!ok && stderr.contains("another maintenance run"), "{stderr}");
    held.release().await.unwrap();

    let (ok, _, stderr) = run().await;
    assert!(ok, "{stderr}");
    let runs = weatherflow::runs::history(&ctx.db, Some(JobName::Maintenance), 10)
        .await
        .unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(
        (runs[0].trigger, runs[0].status),
        (Trigger::Manual, RunStatus::Succeeded)
    );
    // The months ahead the configuration asks for (the current one and 2 more) exist now, whether
    // this run or the migration made them: a second run creates nothing.
    let details = runs[0].details.clone().unwrap_or_default();
    assert!(details["created"].is_array(), "{details}");
    let (ok, _, stderr) = run().await;
    assert!(ok, "{stderr}");
    let again = weatherflow::runs::history(&ctx.db, Some(JobName::Maintenance), 1)
        .await
        .unwrap();
    let details = again[0].details.clone().unwrap_or_default();
    assert_eq!(details["created"], serde_json::json!([]), "{details}");
    assert_eq!(details["dropped"], serde_json::json!([]), "{details}");
    // No analytics run: maintenance is not a step of the fit any more.
    let analytics = weatherflow::runs::history(&ctx.db, Some(JobName::Analytics), 10)
        .await
        .unwrap();
    assert!(analytics.is_empty(), "{analytics:?}");
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn maintenance_deletes_quarantined_records_past_their_retention_only_when_asked() {
    let ctx = TestContext::new().await;
    use sea_orm::ConnectionTrait;
    // 25,003 records 40 days old (more than two delete chunks) and 5 from yesterday.
    ctx.db
        .execute_unprepared(
            "INSERT INTO rejected_records (received_at, kafka_topic, kafka_partition, kafka_offset, payload,
                 error_class, reason)
             SELECT now() - CASE WHEN g <= 25003 THEN interval '40 days' ELSE interval '1 day' END,
                    't', 0, g, 'x'::bytea, 'invalid_json', 'test'
             FROM generate_series(1, 25008) g",
        )
        .await
        .unwrap();
    let dir = common::scratch_dir("wf-maint-rejects");
    // Unset (the default): nothing is deleted.
    let (ok, _, stderr) = common::run_cli(&dir, &["run", "maintenance"], &ctx.child_env()).await;
    assert!(ok, "{stderr}");
    assert_eq!(
        ctx.scalar_i64("SELECT count(*) FROM rejected_records").await,
        25_008
    );
    // 30 days: the old ones go, the recent ones stay, and the run says how many.
    let env = ctx.child_env_with(&[("WEATHERFLOW_MAINTENANCE_REJECTED_RETENTION_DAYS", "30")]);
    let (ok, _, stderr) = common::run_cli(&dir, &["run", "maintenance"], &env).await;
    assert!(ok, "{stderr}");
    assert_eq!(ctx.scalar_i64("SELECT count(*) FROM rejected_records").await, 5);
    assert_eq!(
        ctx.scalar_i64("SELECT count(*) FROM rejected_records WHERE received_at > now() - interval '2 days'")
            .await,
        5
    );
    let runs = weatherflow::runs::history(&ctx.db, Some(JobName::Maintenance), 1)
        .await
        .unwrap();
    let details = runs[0].details.clone().unwrap_or_default();
    assert_eq!(details["rejects_deleted"], 25_003, "{details}");
    std::fs::remove_dir_all(dir).ok();
}
