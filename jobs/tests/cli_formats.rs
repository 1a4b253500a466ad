//! `--format table|json|csv` (docs/cli-formats.md): the binary run on a database the real pipeline
//! filled, its JSON parsed by serde_json and its CSV by Python's `csv` module (a parser that is not
//! ours), and the two compared with each other and with the database.

mod common;

use std::path::Path;

use common::TestContext;
use serde_json::Value;

/// A reason that needs CSV quoting: a comma, quotes, a line break.
const REASON: &str = "expected value, got \"{\" at line 1\nsecond line";

/// `weatherflow <args>`'s standard output; the command must succeed.
async fn stdout(ctx: &TestContext, dir: &Path, args: &[&str]) -> String {
    let (ok, out, err) = common::run_cli(dir, args, &ctx.child_env()).await;
    assert!(ok, "weatherflow {args:?} failed: {err}");
    out
}

async fn json(ctx: &TestContext, dir: &Path, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["--format", "json"]);
    let out = stdout(ctx, dir, &all).await;
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?} --format json is not JSON ({e}): {out}"))
}

/// The rows of `weatherflow <args> --format csv`, header first, as Python's csv module reads them.
async fn csv(ctx: &TestContext, dir: &Path, args: &[&str]) -> Vec<Vec<String>> {
    let mut all = args.to_vec();
    all.extend(["--format", "csv"]);
    let out = stdout(ctx, dir, &all).await;
    let file = dir.join("out.csv");
    std::fs::write(&file, &out).unwrap();
    let parsed = std::process::Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import csv, json, sys; print(json.dumps(list(csv.reader(open(sys.argv[1], newline='')))))",
        ])
        .arg(&file)
        .output()
        .expect("running /usr/bin/python3");
    assert!(
        parsed.status.success(),
        "{}",
        String::from_utf8_lossy(&parsed.stderr)
    );
    let rows: Vec<Vec<String>> = serde_json::from_slice(&parsed.stdout).unwrap();
    let width = rows[0].len();
    assert!(
        rows.iter().all(|r| r.len() == width),
        "{args:?}: ragged CSV:\n{out}"
    );
    rows
}

/// The value of `column` in CSV row `row` (1 = the first record).
fn cell<'a>(rows: &'a [Vec<String>], row: usize, column: &str) -> &'a str {
    let i = rows[0]
        .iter()
        .position(|h| h == column)
        .unwrap_or_else(|| panic!("no column {column} in {:?}", rows[0]));
    &rows[row][i]
}

/// `path,value` CSV as a map.
fn pairs(rows: &[Vec<String>]) -> std::collections::HashMap<String, String> {
    assert_eq!(rows[0], ["path", "value"]);
    rows[1..].iter().map(|r| (r[0].clone(), r[1].clone())).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_listing_prints_json_and_csv_that_parse_and_agree() {
    let ctx = TestContext::new().await;
    let dir = common::scratch_dir("cli-formats");
    for args in [
        &[
            "run",
            "fetch",
            "--source",
            "simulated",
            "--location",
            "Oslo",
            "--location",
            "Lima",
            "--backfill-hours",
            "4",
        ][..],
        &["run", "persist", "--until-idle"],
        &["run", "analytics"],
    ] {
        stdout(&ctx, &dir, args).await;
    }
    let id = ctx
        .scalar_i64(&format!(
            "INSERT INTO rejected_records (kafka_topic, kafka_partition, kafka_offset, key, payload, error_class, reason) \
             VALUES ('t', 1, 7, 'oslo', '{{', 'invalid_json', '{}') RETURNING id",
            REASON.replace('\'', "''")
        ))
        .await;

    // runs: three runs, newest first, the same in both formats.
    let runs = json(&ctx, &dir, &["runs"]).await;
    let runs = runs["runs"].as_array().expect("runs");
    let jobs: Vec<&str> = runs.iter().map(|r| r["job"].as_str().unwrap()).collect();
    assert_eq!(jobs, ["analytics", "persist", "fetch"]);
    assert_eq!(runs[0]["status"], "succeeded");
    assert!(runs[0]["seconds"].as_f64().unwrap() >= 0.0);
    let rows = csv(&ctx, &dir, &["runs"]).await;
    assert_eq!(
        rows[0],
        [
            "id",
            "job",
            "trigger",
            "status",
            "started_at",
            "finished_at",
            "seconds",
            "records_in",
            "records_out",
            "attempt",
            "note"
        ]
    );
    assert_eq!(rows.len(), 4);
    assert_eq!(cell(&rows, 3, "id"), runs[2]["id"].to_string());
    assert_eq!(cell(&rows, 3, "records_out"), runs[2]["records_out"].to_string());

    // results: the latest fit of each scope.
    let results = json(&ctx, &dir, &["results"]).await;
    let results = results["results"].as_array().expect("results");
    let scopes = ctx
        .scalar_i64("SELECT count(DISTINCT scope) FROM regression_results")
        .await;
    assert_eq!(results.len() as i64, scopes, "{results:?}");
    assert_eq!(results[0]["scope"], "all");
    assert_eq!(results[0]["source"], "simulated");
    let rows = csv(&ctx, &dir, &["results"]).await;
    assert_eq!(rows.len(), results.len() + 1);
    assert_eq!(cell(&rows, 1, "n_samples"), results[0]["n_samples"].to_string());
    let slope: f64 = cell(&rows, 1, "slope").parse().unwrap();
    assert_eq!(slope, results[0]["slope"].as_f64().unwrap());

    // status: one document; csv as path,value pairs of the same document.
    let status = json(&ctx, &dir, &["status"]).await;
    let jobs = status["jobs"].as_array().expect("jobs");
    assert_eq!(jobs[0]["job"], "fetch");
    assert_eq!(jobs[0]["last_run"]["status"], "succeeded");
    let persist = jobs.iter().find(|j| j["job"] == "persist").unwrap();
    assert_eq!(persist["schedule"], "continuous");
    assert_eq!(status["consumer_lag"]["state"], "ok");
    assert_eq!(status["consumer_lag"]["total"], 0);
    let observations = status["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == "observations")
        .expect("observations counted");
    let stored = ctx.scalar_i64("SELECT count(*) FROM observations").await;
    assert_eq!(observations["rows"], stored);
    let status_csv = pairs(&csv(&ctx, &dir, &["status"]).await);
    assert_eq!(status_csv["jobs.0.job"], "fetch");
    assert_eq!(status_csv["consumer_lag.state"], "ok");
    assert_eq!(
        status_csv["jobs.0.last_run.id"],
        jobs[0]["last_run"]["id"].to_string()
    );

    // check: healthy, and says so in both formats.
    let check = json(&ctx, &dir, &["check"]).await;
    assert_eq!(check["healthy"], true);
    assert_eq!(check["kafka"]["state"], "ok");
    assert_eq!(check["postgresql"]["migrations_pending"], 0);
    assert!(
        check["kafka"]["topics"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == ctx.config.kafka.observations_topic.as_str() && t["partitions"] == 3),
        "{check}"
    );
    let check_csv = pairs(&csv(&ctx, &dir, &["check"]).await);
    assert_eq!(check_csv["healthy"], "true");
    assert_eq!(check_csv["postgresql.state"], "ok");

    // config: the effective values, the password masked in every format.
    let config = json(&ctx, &dir, &["config"]).await;
    let url = config["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["field"] == "database.url")
        .expect("database.url");
    assert_eq!(url["origin"], "env DATABASE_URL", "{url}");
    assert!(url["value"].as_str().unwrap().contains(":***@"), "{url}");
    let rows = csv(&ctx, &dir, &["config"]).await;
    assert_eq!(rows[0], ["field", "value", "origin"]);
    let password = secrecy::ExposeSecret::expose_secret(&ctx.config.database.url)
        .split_once("://")
        .and_then(|(_, rest)| rest.split_once('@'))
        .and_then(|(user, _)| user.split_once(':'))
        .map(|(_, p)| p.to_owned())
        .expect("the test database URL has a password");
    for args in [
        &["config", "--format", "json"][..],
        &["config", "--format", "csv"],
    ] {
        assert!(!stdout(&ctx, &dir, args).await.contains(&format!(":{password}@")));
    }

    // The quarantine: the reason comes back whole through CSV's quoting.
    let list = json(&ctx, &dir, &["rejects", "list"]).await;
    assert_eq!(list["records"][0]["id"], id);
    assert_eq!(list["records"][0]["reason"], REASON);
    assert_eq!(list["classes"][0]["error_class"], "invalid_json");
    let rows = csv(&ctx, &dir, &["rejects"]).await;
    assert_eq!(rows.len(), 2);
    assert_eq!(cell(&rows, 1, "reason"), REASON);
    assert_eq!(cell(&rows, 1, "kafka_offset"), "7");
    let counts = json(&ctx, &dir, &["rejects", "counts"]).await;
    assert_eq!(counts["classes"][0]["quarantined"], 1);
    let rows = csv(&ctx, &dir, &["rejects", "counts"]).await;
    assert_eq!(rows[0], ["error_class", "quarantined", "redriven", "latest"]);
    assert_eq!(rows[1][..3], ["invalid_json", "1", "0"]);
    let id_text = id.to_string();
    let show = json(&ctx, &dir, &["rejects", "show", &id_text]).await;
    assert_eq!(show["payload"], "{");
    assert_eq!(show["key"], "oslo");
    assert_eq!(show["payload_bytes"], 1);
    let rows = csv(&ctx, &dir, &["rejects", "show", &id_text]).await;
    assert_eq!(cell(&rows, 1, "reason"), REASON);

    // A re-drive's report: the record is still not JSON, so it stays quarantined.
    let dry = json(&ctx, &dir, &["rejects", "redrive", "--dry-run"]).await;
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["run_id"], Value::Null);
    assert_eq!(dry["selected"], 1);
    assert_eq!(dry["refused"]["invalid_json"], 1, "{dry}");
    let report = pairs(&csv(&ctx, &dir, &["rejects", "redrive", "--dry-run"]).await);
    assert_eq!(report["refused_total"], "1");

    // The table stays the default.
    let table = stdout(&ctx, &dir, &["runs"]).await;
    assert!(table.starts_with("id  job"), "{table}");
    std::fs::remove_dir_all(&dir).ok();
}
