//! Least privilege: the web face's role (`weatherflow_web`, created by `scripts/services.sh up`,
//! granted by `db::grants` as `weatherflow migrate up` does) serves every page and API answer, and
//! cannot write to `observations` or remove run rows; the consumer's role stores a batch through
//! the persist job's own write path, duplicates and quarantined records included.

mod common;

use std::sync::Arc;

use common::TestContext;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr};
use secrecy::{ExposeSecret, SecretString};
use tokio_util::sync::CancellationToken;
use weatherflow::db::grants::ServiceRole;

/// A pool on the test's database whose sessions act as `role` (the owner is a member of the web
/// and consumer roles, so no password of theirs is needed here).
async fn pool_as(ctx: &TestContext, role: &str) -> DatabaseConnection {
    let mut cfg = ctx.config.database.clone();
    let mut url = url::Url::parse(cfg.url.expose_secret()).unwrap();
    url.query_pairs_mut()
        .append_pair("options", &format!("-c role={role}"));
    cfg.url = SecretString::from(url.to_string());
    weatherflow::db::connect(&cfg)
        .await
        .expect("a pool acting as the role")
}

/// The SQLSTATE of a failed statement.
fn sqlstate(e: &DbErr) -> Option<String> {
    let (DbErr::Exec(sea_orm::RuntimeErr::SqlxError(e)) | DbErr::Query(sea_orm::RuntimeErr::SqlxError(e))) =
        e
    else {
        return None;
    };
    match e.as_ref() {
        sqlx::Error::Database(d) => d.code().map(|c| c.into_owned()),
        _ => None,
    }
}

const ONE_OBSERVATION: &str = "
INSERT INTO observations (location_key, location_name, region, country, lat, lon, observed_at, temp_c,
    wind_kph, source, fetched_at, kafka_topic, kafka_partition, kafka_offset)
VALUES ('{key}', 'Loc', 'r', 'land', 1, 2, now(), 10, 5, 'simulated', now(), 'weather.observations', 0, {offset})";

#[tokio::test]
async fn the_web_role_reads_what_it_serves_and_cannot_write_observations() {
    let ctx = TestContext::new().await;
    let missing = weatherflow::db::grants::apply(&ctx.db).await.unwrap();
    assert!(
        missing.is_empty(),
        "roles {missing:?} do not exist: run scripts/services.sh up, which creates them"
    );
    ctx.db
        .execute_unprepared(
            &ONE_OBSERVATION
                .replace("{key}", "loc||land")
                .replace("{offset}", "1"),
        )
        .await
        .unwrap();

    let web = pool_as(&ctx, ServiceRole::Web.name()).await;
    let who = web
        .query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SELECT current_user::text",
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get_by_index::<String>(0)
        .unwrap();
    assert_eq!(who, "weatherflow_web");

    // Refused: every write to the observations, and removing run rows.
    for sql in [
        ONE_OBSERVATION
            .replace("{key}", "other||land")
            .replace("{offset}", "2"),
        "UPDATE observations SET temp_c = 0".to_owned(),
        "DELETE FROM observations".to_owned(),
        "DELETE FROM job_runs".to_owned(),
        "DELETE FROM rejected_records".to_owned(),
        "TRUNCATE observations".to_owned(),
    ] {
        let err = web.execute_unprepared(&sql).await.expect_err(&sql);
        assert_eq!(sqlstate(&err).as_deref(), Some("42501"), "{sql}: {err}");
    }
    assert_eq!(ctx.scalar_i64("SELECT count(*) FROM observations").await, 1);

    // Served: every page and answer of the web face, through that pool.
    let shutdown = CancellationToken::new();
    let state =
        weatherflow::web::AppState::start(Arc::new(ctx.config.clone()), web, shutdown.clone(), None).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(axum::serve(listener, weatherflow::web::app(state)).into_future());
    for path in [
        "/",
        "/api/v1/status",
        "/api/v1/results",
        "/api/v1/runs",
        "/api/v1/observations/latest",
        "/api/v1/observations?location=loc%7C%7Cland",
        "/api/v1/rejections",
        "/api/v1/rejects",
        "/readyz",
    ] {
        let resp = reqwest::get(format!("http://{addr}{path}")).await.expect(path);
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        assert_eq!(status, 200, "{path}: {body}");
        if path == "/api/v1/observations/latest" {
            assert!(body.contains("loc||land"), "{path}: {body}");
        }
    }
    shutdown.cancel();
    server.abort();
}

#[tokio::test]
async fn the_consumer_role_stores_batches_through_the_write_path() {
    use common::records::{record, retry};
    use weatherflow::jobs::persist::store::{self, CopyStrategy, Raw, RejectedRecord};
    use weatherflow::jobs::persist::validate::{Rejection, RejectionClass};

    let ctx = TestContext::new().await;
    let missing = weatherflow::db::grants::apply(&ctx.db).await.unwrap();
    assert!(
        missing.is_empty(),
        "roles {missing:?} do not exist: run scripts/services.sh up"
    );
    let consumer = pool_as(&ctx, ServiceRole::Consumer.name()).await;
    let pool = consumer.get_postgres_connection_pool().clone();
    let at = chrono::Utc::now();
    let valid: Vec<_> = (0..100)
        .map(|i| record(&format!("place {i}||land"), at, i))
        .collect();
    let rejected = vec![RejectedRecord {
        lineage: record("x", at, 100).lineage,
        raw: Raw {
            key: None,
            value: Some(bytes::Bytes::from_static(b"{not json")),
        },
        rejection: Rejection::new(RejectionClass::InvalidJson, "expected a value"),
    }];
    // A refused grant is an outage the store waits out for good: bound the wait.
    let retry = retry();
    for round in 0..2 {
        let mut strategy = CopyStrategy::default();
        let stored = tokio::time::timeout(
            std::time::Duration::from_secs(30),
            store::store_batch(&pool, &valid, &rejected, &retry, &mut strategy),
        )
        .await
        .unwrap_or_else(|_| panic!("round {round}: the consumer role's batch did not land in 30 s"))
        .unwrap();
        let (inserted, duplicates) = if round == 0 { (100, 0) } else { (0, 100) };
        assert_eq!(
            (stored.inserted, stored.duplicates),
            (inserted, duplicates),
            "round {round}"
        );
    }
    assert_eq!(ctx.scalar_i64("SELECT count(*) FROM observations").await, 100);
    assert_eq!(ctx.scalar_i64("SELECT count(*) FROM rejected_records").await, 1);
    // And nothing more: no deleting, no reading the fits.
    for sql in [
        "DELETE FROM observations",
        "SELECT count(*) FROM regression_results",
    ] {
        let err = consumer.execute_unprepared(sql).await.expect_err(sql);
        assert_eq!(sqlstate(&err).as_deref(), Some("42501"), "{sql}: {err}");
    }
}
