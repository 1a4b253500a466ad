//! The README's first command, `scripts/demo.sh`, end to end on the real services, pointed at this
//! test's own database and topics.

mod common;

use std::process::Command;

use common::TestContext;

#[tokio::test]
async fn the_demo_runs_the_whole_pipeline() {
    let ctx = TestContext::new().await;
    let dir = common::scratch_dir("wf-demo");
    let plot = dir.join("demo.svg");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new("bash")
        .arg(root.join("scripts/demo.sh"))
        .env("SERVICES_BIN", env!("CARGO_BIN_EXE_weatherflow"))
        .envs(ctx.child_env())
        .env("SERVICES_DEMO_PLOT", &plot)
        .env_remove("WEATHERAPI_KEY")
        .output()
        .expect("running scripts/demo.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "demo failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );

    // 12 locations from schedules.toml × (48 h of 15-minute observations + the current one).
    let observations = ctx.scalar_i64("SELECT count(*) FROM observations").await;
    assert_eq!(observations, 12 * (48 * 4 + 1), "{stdout}");
    let results = ctx.scalar_i64("SELECT count(*) FROM regression_results").await;
    assert_eq!(results, 13, "scope all plus one per location");
    let runs = ctx
        .scalar_i64("SELECT count(*) FROM job_runs WHERE status = 'succeeded'")
        .await;
    assert_eq!(runs, 3, "fetch, persist and analytics succeeded");
    assert!(stdout.contains("all services healthy"), "{stdout}");
    assert!(
        stdout.contains("weatherflow scheduler"),
        "the demo tells how to start the service"
    );
    let svg = std::fs::read_to_string(&plot).expect("the plot was written");
    assert!(svg.starts_with("<svg") || svg.contains("<svg"), "an SVG file");
    std::fs::remove_dir_all(dir).ok();
}
