//! Manual runs take the job's advisory lock, so they never overlap a scheduled run.

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
