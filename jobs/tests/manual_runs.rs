//! Manual runs take the job's advisory lock, so they never overlap a scheduled run.

mod common;

use std::process::Command;

use common::TestContext;
use secrecy::ExposeSecret;
use weatherflow::runs::lock::JobLock;
use weatherflow::runs::{JobName, RunStatus, Trigger};

#[tokio::test]
async fn a_manual_run_fails_while_another_run_holds_the_lock_and_runs_once_it_is_free() {
    let ctx = TestContext::new().await;
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_weatherflow"))
            .args(["run", "analytics"])
            .env("DATABASE_URL", ctx.config.database.url.expose_secret())
            .output()
            .expect("running weatherflow")
    };
    let held = JobLock::try_acquire(&ctx.db, JobName::Analytics)
        .await
        .unwrap()
        .expect("the lock is free");
    let out = run();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "must fail while the lock is held: {stderr}"
    );
    assert!(
        stderr.contains("another analytics run (scheduled or manual) is in progress"),
        "{stderr}"
    );
    held.release().await.unwrap();

    // Free again: the run goes ahead (no observations yet, so it is recorded as skipped).
    let out = run();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let runs = weatherflow::runs::history(&ctx.db, Some(JobName::Analytics), 10)
        .await
        .unwrap();
    assert_eq!(runs.len(), 1, "the refused run left no row: {runs:?}");
    assert_eq!(runs[0].trigger, Trigger::Manual);
    assert_eq!(runs[0].status, RunStatus::Skipped);
}
