//! The pipeline over secured connections: Kafka SASL_SSL with SCRAM-SHA-512 and PostgreSQL TLS with
//! `sslmode=verify-full`, on the broker and cluster that `scripts/test-secure.sh` starts with
//! `scripts/services.sh up --secure` and describes in the environment (`services.sh env secret`).
//!
//! These tests need those services, so a plain `cargo test` does not run them (`#[ignore]`); the
//! stage runs them with `--ignored`, and there an unreachable service fails them. Every output they
//! capture (stdout and stderr of each command, `check`, `status`, `runs`, the configuration's Debug
//! form and `job_runs.details`) is searched for the passwords and the private keys.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::TestContext;
use secrecy::ExposeSecret;

/// The stage's state folder: the CA, keys and passwords of this run.
fn state_dir() -> PathBuf {
    PathBuf::from(std::env::var("SECURE_STAGE_STATE").expect(
        "SECURE_STAGE_STATE is unset: run these tests through scripts/test-secure.sh, which starts the \
         secured services",
    ))
}

/// What must never be printed: the SASL password, the database password, the key stores' password
/// and lines of every private key.
fn secrets(ctx: &TestContext) -> Vec<String> {
    let dir = state_dir();
    let mut out = vec![
        std::env::var("WEATHERFLOW_KAFKA_SASL_PASSWORD").expect("the SASL password"),
        url::Url::parse(ctx.config.database.url.expose_secret())
            .unwrap()
            .password()
            .expect("the database password")
            .to_owned(),
        std::fs::read_to_string(dir.join("keystore.password"))
            .unwrap()
            .trim()
            .to_owned(),
    ];
    for key in ["broker.key", "postgres.key", "ca.key"] {
        let pem = std::fs::read_to_string(dir.join(key)).unwrap();
        out.extend(
            pem.lines()
                .filter(|l| !l.starts_with("-----") && l.len() > 40)
                .take(3)
                .map(str::to_owned),
        );
    }
    let lengths: Vec<usize> = out.iter().map(String::len).collect();
    assert!(
        lengths.iter().all(|&n| n >= 12),
        "secrets long enough to search for: {lengths:?}"
    );
    out
}

fn assert_no_secret(what: &str, text: &str, secrets: &[String]) {
    for s in secrets {
        assert!(!text.contains(s.as_str()), "{what} shows a secret:\n{text}");
    }
}

/// `weatherflow <args>` with this test's settings (the stage's environment, this test's database and
/// topics) and `extra` variables on top; debug logging, so that as much as possible is captured.
fn weatherflow(ctx: &TestContext, args: &[&str], extra: &[(&str, &str)]) -> Output {
    let k = &ctx.config.kafka;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_weatherflow"));
    cmd.args(args)
        .current_dir(&root)
        .env("DATABASE_URL", ctx.config.database.url.expose_secret())
        .env("WEATHERFLOW_KAFKA_OBSERVATIONS_TOPIC", &k.observations_topic)
        .env("WEATHERFLOW_KAFKA_DLQ_TOPIC", &k.dlq_topic)
        .env("WEATHERFLOW_KAFKA_CONSUMER_GROUP", &k.consumer_group)
        .env("WEATHERFLOW_KAFKA_PARTITIONS", k.partitions.to_string())
        .env("WEATHERFLOW_PERSIST_SESSION_TIMEOUT_MS", "6000")
        .env("RUST_LOG", "debug")
        .env_remove("WEATHERAPI_KEY");
    for (name, value) in extra {
        cmd.env(name, value);
    }
    cmd.output().expect("running weatherflow")
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
#[ignore = "needs the secured services: run scripts/test-secure.sh"]
async fn pipeline_runs_over_sasl_ssl_and_postgres_tls() {
    let ctx = TestContext::new().await;
    let secrets = secrets(&ctx);
    assert_eq!(ctx.config.kafka.security_protocol.as_deref(), Some("SASL_SSL"));
    assert!(
        ctx.config
            .database
            .url
            .expose_secret()
            .contains("sslmode=verify-full"),
        "the stage asks for verify-full"
    );
    let tls: bool = sqlx_ssl_in_use(&ctx).await;
    assert!(tls, "the test's own database connection is encrypted");

    let mut captured = String::new();
    for args in [
        &["run", "fetch", "--source", "simulated", "--backfill-hours", "2"][..],
        &["run", "persist", "--until-idle"],
        &["run", "analytics"],
        &["check"],
        &["status"],
        &["runs"],
        &["config"],
    ] {
        let out = weatherflow(&ctx, args, &[]);
        let shown = text(&out);
        assert!(out.status.success(), "weatherflow {args:?} failed\n{shown}");
        assert_no_secret(&format!("weatherflow {args:?}"), &shown, &secrets);
        captured.push_str(&shown);
    }
    assert!(
        captured.contains("kafka: ok"),
        "check reached the SASL_SSL listener\n{captured}"
    );

    let observations = ctx.scalar_i64("SELECT count(*) FROM observations").await;
    assert!(
        observations > 0,
        "observations went through Kafka into PostgreSQL"
    );
    let results = ctx.scalar_i64("SELECT count(*) FROM regression_results").await;
    assert!(results > 0, "analytics wrote its results");
    let succeeded = ctx
        .scalar_i64("SELECT count(*) FROM job_runs WHERE status = 'succeeded'")
        .await;
    assert_eq!(succeeded, 3, "fetch, persist and analytics succeeded\n{captured}");
    let details = ctx
        .scalar_text(
            "SELECT coalesce(string_agg(concat_ws(' ', details::text, error), ' '), '') FROM job_runs",
        )
        .await;
    assert_no_secret("job_runs.details", &details, &secrets);
    assert_no_secret("the configuration", &format!("{:?}", ctx.config), &secrets);
}

/// Whether this test's own pool talks TLS to the server (`pg_stat_ssl`).
async fn sqlx_ssl_in_use(ctx: &TestContext) -> bool {
    ctx.scalar_text("SELECT ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .await
        == "true"
}

#[tokio::test]
#[ignore = "needs the secured services: run scripts/test-secure.sh"]
async fn a_wrong_password_fails_fast_naming_the_setting() {
    let ctx = TestContext::new().await;
    let secrets = secrets(&ctx);
    let wrong = [("WEATHERFLOW_KAFKA_SASL_PASSWORD", "not-the-password-0123456789")];
    for args in [
        &["check"][..],
        &["run", "fetch", "--source", "simulated"],
        &["run", "persist", "--until-idle"],
    ] {
        let started = Instant::now();
        let out = weatherflow(&ctx, args, &wrong);
        let took = started.elapsed();
        eprintln!("weatherflow {args:?} with a wrong password: exit after {took:?}");
        let shown = text(&out);
        assert!(!out.status.success(), "weatherflow {args:?} succeeded\n{shown}");
        assert!(
            took < Duration::from_secs(15),
            "weatherflow {args:?} took {took:?}\n{shown}"
        );
        assert!(shown.contains("authentication failed"), "{shown}");
        assert!(
            shown.contains("kafka.sasl_password"),
            "names the setting\n{shown}"
        );
        assert_no_secret(&format!("weatherflow {args:?}"), &shown, &secrets);
        // One failure, not a retry storm: the error is reported once per command.
        let reports = shown.matches("authentication failed").count();
        assert!(reports <= 3, "{reports} reports of the failure\n{shown}");
    }
    // `status` reports the failure in its Kafka section and still shows the database's tables.
    let started = Instant::now();
    let out = weatherflow(&ctx, &["status"], &wrong);
    let took = started.elapsed();
    let shown = text(&out);
    assert!(took < Duration::from_secs(15), "status took {took:?}\n{shown}");
    assert!(shown.contains("authentication failed"), "{shown}");
    assert_no_secret("status", &shown, &secrets);

    let failed = ctx
        .scalar_i64("SELECT count(*) FROM job_runs WHERE status = 'failed'")
        .await;
    assert_eq!(failed, 2, "fetch and persist recorded their failure");
    let details = ctx
        .scalar_text(
            "SELECT coalesce(string_agg(concat_ws(' ', details::text, error), ' '), '') FROM job_runs",
        )
        .await;
    assert!(details.contains("authentication failed"), "{details}");
    assert_no_secret("job_runs", &details, &secrets);
}

#[tokio::test]
#[ignore = "needs the secured services: run scripts/test-secure.sh"]
async fn an_untrusted_certificate_is_a_clear_tls_error() {
    let ctx = TestContext::new().await;
    let secrets = secrets(&ctx);
    let other_ca = state_dir().join("untrusted-ca.pem");
    let other_ca = other_ca.to_str().unwrap();

    let out = weatherflow(
        &ctx,
        &["check"],
        &[("WEATHERFLOW_KAFKA_SSL_CA_LOCATION", other_ca)],
    );
    let shown = text(&out);
    assert!(!out.status.success(), "{shown}");
    assert!(shown.contains("kafka TLS handshake"), "{shown}");
    assert!(shown.contains("certificate verify failed"), "{shown}");
    assert!(
        shown.contains("kafka.ssl_ca_location"),
        "names the setting\n{shown}"
    );
    assert_no_secret("check with an untrusted CA", &shown, &secrets);

    let out = weatherflow(
        &ctx,
        &["check"],
        &[("WEATHERFLOW_DATABASE_SSL_ROOT_CERT", other_ca)],
    );
    let shown = text(&out);
    assert!(!out.status.success(), "{shown}");
    assert!(
        shown.contains("postgresql at") && shown.contains("invalid peer certificate"),
        "{shown}"
    );
    assert!(
        shown.contains("database.ssl_root_cert"),
        "names the setting\n{shown}"
    );
    assert_no_secret("check with an untrusted database CA", &shown, &secrets);
}

#[tokio::test]
#[ignore = "needs the secured services: run scripts/test-secure.sh"]
async fn an_unknown_client_property_is_refused_at_start() {
    let ctx = TestContext::new().await;
    let dir = std::env::temp_dir().join(common::unique("wf-secure"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("weatherflow.toml");
    std::fs::write(
        &file,
        "[kafka.client]\n\"linger.ms\" = 2\n\"no.such.property\" = \"x\"\n",
    )
    .unwrap();
    let out = weatherflow(&ctx, &["--config", file.to_str().unwrap(), "check"], &[]);
    let shown = text(&out);
    assert!(!out.status.success(), "{shown}");
    assert!(shown.contains("no.such.property"), "{shown}");
    std::fs::remove_dir_all(dir).ok();
}
