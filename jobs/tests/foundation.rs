//! Foundation: the real broker round-trips a message; the schema migrates up, down and up again.

mod common;

use std::time::Duration;

use common::TestContext;
use migration::{Migrator, MigratorTrait};
use rdkafka::Message;
use rdkafka::producer::FutureRecord;
use sea_orm::{ConnectionTrait, Statement};

#[tokio::test]
async fn produce_consume_round_trip_through_the_real_broker() {
    let ctx = TestContext::new().await;
    let k = &ctx.config.kafka;
    weatherflow::kafka::ensure_topic(k, &k.observations_topic, 3)
        .await
        .expect("create topic");
    // Idempotent: creating it again is fine.
    weatherflow::kafka::ensure_topic(k, &k.observations_topic, 3)
        .await
        .expect("create topic again");

    let producer = weatherflow::kafka::producer(k).unwrap();
    for i in 0..10 {
        let key = format!("loc-{i}");
        let value = format!("value-{i}");
        producer
            .send(
                FutureRecord::to(&k.observations_topic).key(&key).payload(&value),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("delivery");
    }

    let consumer = common::topic_reader(k, &k.observations_topic, &k.consumer_group);
    let mut seen = Vec::new();
    for msg in common::next_messages(&consumer, 10).await {
        let key = String::from_utf8(msg.key().unwrap().to_vec()).unwrap();
        let value = String::from_utf8(msg.payload().unwrap().to_vec()).unwrap();
        assert_eq!(value, key.replace("loc", "value"));
        seen.push(key);
    }
    seen.sort();
    let mut want: Vec<String> = (0..10).map(|i| format!("loc-{i}")).collect();
    want.sort();
    assert_eq!(seen, want);

    let info = weatherflow::kafka::cluster_info(k).unwrap();
    assert!(
        info.topics
            .iter()
            .any(|(t, p)| t == &k.observations_topic && *p == 3)
    );
}

async fn tables(ctx: &TestContext) -> Vec<String> {
    let rows = ctx
        .db
        .query_all_raw(Statement::from_string(
            ctx.db.get_database_backend(),
            // Tables, partitioned or not, without their partitions (observations' months).
            "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition \
             AND c.relname <> 'seaql_migrations' ORDER BY 1",
        ))
        .await
        .unwrap();
    rows.iter()
        .map(|r| r.try_get_by_index::<String>(0).unwrap())
        .collect()
}

#[tokio::test]
async fn migrations_go_up_down_and_up_again() {
    let ctx = TestContext::unmigrated().await;
    assert!(tables(&ctx).await.is_empty());
    Migrator::up(&ctx.db, None).await.unwrap();
    assert_eq!(
        tables(&ctx).await,
        [
            "alert_deliveries",
            "alert_incidents",
            "api_calls",
            "history_backfill",
            "job_pause_events",
            "job_pauses",
            "job_runs",
            "observations",
            "regression_results",
            "rejected_records"
        ]
    );
    Migrator::down(&ctx.db, None).await.unwrap();
    assert!(tables(&ctx).await.is_empty());
    Migrator::up(&ctx.db, None).await.unwrap();
    assert_eq!(tables(&ctx).await.len(), 10);

    // The unique key on observations is there.
    let insert = "INSERT INTO observations (location_key, location_name, region, country, lat, lon, observed_at, \
                  temp_c, wind_kph, source, fetched_at) VALUES ('a|b|c','a','b','c',1,2,'2026-01-01T00:00:00Z',1,2,'simulated',now())";
    ctx.db.execute_unprepared(insert).await.unwrap();
    let dup = ctx.db.execute_unprepared(insert).await;
    assert!(
        dup.is_err(),
        "second insert of the same (location_key, observed_at) must fail"
    );
    // Results can never hold NaN.
    ctx.db
        .execute_unprepared(
            "INSERT INTO job_runs (job, \"trigger\", status) VALUES ('analytics','manual','running')",
        )
        .await
        .unwrap();
    let nan = ctx
        .db
        .execute_unprepared("INSERT INTO regression_results (job_run_id, scope, target, feature, n_samples, intercept, slope, r_squared, rmse) \
                             SELECT id, 'all','temp_c','wind_kph', 10, 'NaN', 1, 1, 1 FROM job_runs")
        .await;
    assert!(nan.is_err(), "NaN must be rejected");
}
