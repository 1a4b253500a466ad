//! Provenance (issue 29) on the real services: a WeatherAPI and a simulated observation of one place
//! and slot are two rows through every write path and through the persist job; the analytics job
//! fits one source (WeatherAPI's when the window has any), stores it and shows it; the analysis
//! views return one source; the migration keeps every row up, down and up, and its `down` refuses
//! while twins exist.

mod common;

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use common::records::{record, retry};
use common::stream::{Place, create_topics, payload, send_all};
use common::{TestContext, run_cli, scratch_dir};
use migration::{Migrator, MigratorTrait};
use rdkafka::producer::FutureProducer;
use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;
use weatherflow::config::Config;
use weatherflow::envelope::{Envelope, SCHEMA_VERSION, Source};
use weatherflow::executor::{ExecError, Executor};
use weatherflow::job_error::JobError;
use weatherflow::jobs::analytics::{self, AnalyticsRequest, AnalyticsSummary, FitSource};
use weatherflow::jobs::persist::store::{self, CopyStrategy, ValidRecord};
use weatherflow::jobs::persist::{self, PersistRequest, PersistSummary};
use weatherflow::partitions::{self, Policy};
use weatherflow::runs::JobName;

const PLACES: usize = 4;
const SLOTS: usize = 48;

fn config(ctx: &TestContext) -> Config {
    let mut c = ctx.config.clone();
    c.persist.batch_size = 50;
    c.persist.idle_ms = 500;
    c.persist.session_timeout_ms = 6000;
    c.persist.retry_initial_ms = 100;
    c.persist.retry_max_ms = 1000;
    c
}

/// One message per place and 15-minute slot, from `source`, on the same places and slots whatever
/// the source. The temperature follows a line in the wind that depends on the source, so a fit on a
/// mix of both would differ from a fit on either.
fn observations(source: Source, epoch0: i64) -> Vec<(String, Vec<u8>)> {
    let (intercept, slope) = match source {
        Source::Weatherapi => (12.0, -0.2),
        Source::Simulated => (25.0, 0.15),
    };
    let mut out = Vec::new();
    for slot in 0..SLOTS {
        for p in 0..PLACES {
            let place = Place::numbered(p);
            let wind = ((slot * 7 + p * 13) % 50) as f64 + 0.5;
            // A little scatter that is not a function of the wind (one decimal, as the API has).
            let scatter = (((slot * 31 + p * 17) % 21) as f64 - 10.0) / 10.0;
            let temp = ((intercept + slope * wind + scatter + p as f64) * 10.0).round() / 10.0;
            let body = payload(&place, epoch0 + slot as i64 * 900, temp, 50, wind);
            let value = Envelope {
                schema_version: SCHEMA_VERSION,
                source,
                fetched_at: common::stream::fetched_at(),
                query: place.name.clone(),
                payload: RawValue::from_string(body.to_string()).unwrap(),
            }
            .to_bytes();
            out.push((place.key(), value));
        }
    }
    out
}

async fn produce(ctx: &TestContext, producer: &FutureProducer, messages: &[(String, Vec<u8>)]) {
    let generated: Vec<common::stream::Generated> = messages
        .iter()
        .map(|(key, value)| common::stream::Generated {
            key: key.clone(),
            observed_at: 0,
            temp_c: 0.0,
            humidity: 0,
            wind_kph: 0.0,
            place: Place::numbered(0),
            fetched_at: Utc::now(),
            value: value.clone(),
        })
        .collect();
    send_all(producer, &ctx.config.kafka.observations_topic, &generated).await;
}

async fn persist_until_idle(ctx: &TestContext) -> PersistSummary {
    let config = config(ctx);
    let run = persist::run(
        &config,
        &ctx.db,
        PersistRequest {
            until_idle: true,
            ..Default::default()
        },
        CancellationToken::new(),
    );
    tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .expect("the persist job drains within 90 s")
        .expect("the persist job succeeds")
}

async fn run_analytics(ctx: &TestContext, req: AnalyticsRequest) -> Result<AnalyticsSummary, JobError> {
    let exec = Executor::from_config(ctx.db.clone(), &ctx.config);
    let ran = exec
        .run_by_hand(JobName::Analytics, &CancellationToken::new(), |run| {
            analytics::run(&ctx.config, &ctx.db, run.run_id, req.clone(), run.cancel)
        })
        .await;
    match ran {
        Ok((_, summary)) => Ok(summary),
        Err(ExecError::Failed(e)) => Err(e),
        Err(e) => panic!("the executor failed: {e}"),
    }
}

fn every_row(source: FitSource) -> AnalyticsRequest {
    AnalyticsRequest {
        all_history: true,
        min_samples: Some(10),
        source,
        ..AnalyticsRequest::default()
    }
}

/// The published fit of scope `all`, as `latest_regression` serves it.
async fn published(ctx: &TestContext) -> (i64, i64, f64, f64, f64, Option<String>) {
    sqlx::query_as(
        "SELECT result_id, n_samples, intercept_c, slope_c_per_kph, r_squared, source \
         FROM latest_regression WHERE scope = 'all'",
    )
    .fetch_one(ctx.db.get_postgres_connection_pool())
    .await
    .expect("a published fit of scope all")
}

/// Every WeatherAPI row, whole, in id order.
const REAL_ROWS: &str = "SELECT coalesce(md5(string_agg(o::text, E'\\n' ORDER BY o.id)), '') \
     FROM observations o WHERE source = 'weatherapi'";

fn relative(a: f64, b: f64) -> f64 {
    (a - b).abs() / a.abs().max(b.abs()).max(f64::MIN_POSITIVE)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simulated_run_beside_real_rows_leaves_every_real_row_and_the_published_regression() {
    let ctx = TestContext::new().await;
    create_topics(&ctx).await;
    let producer = weatherflow::kafka::producer(&ctx.config.kafka).unwrap();
    let epoch0 = Utc::now().timestamp() / 900 * 900 - 86_400;
    let n = (PLACES * SLOTS) as i64;

    // Real rows exist, and the nightly fit is published on them.
    produce(&ctx, &producer, &observations(Source::Weatherapi, epoch0)).await;
    let real = persist_until_idle(&ctx).await;
    assert_eq!((real.stored, real.duplicates), (n as u64, 0));
    let fitted = run_analytics(&ctx, every_row(FitSource::Auto)).await.unwrap();
    assert_eq!(fitted.source, Source::Weatherapi);
    assert_eq!(fitted.rows_read, n as u64);
    let before = published(&ctx).await;
    assert_eq!(before.5.as_deref(), Some("weatherapi"));
    let real_rows = ctx.scalar_text(REAL_ROWS).await;

    // A simulated run for the same places and slots: every record is new, none a duplicate.
    produce(&ctx, &producer, &observations(Source::Simulated, epoch0)).await;
    let simulated = persist_until_idle(&ctx).await;
    assert_eq!((simulated.stored, simulated.duplicates), (n as u64, 0));
    assert_eq!(simulated.rejected_total(), 0);
    assert_eq!(
        ctx.scalar_text(REAL_ROWS).await,
        real_rows,
        "every real row in place, unchanged"
    );
    assert_eq!(
        ctx.scalar_i64(
            "SELECT count(*) FROM (SELECT 1 FROM observations GROUP BY location_key, observed_at \
             HAVING count(*) = 2 AND count(DISTINCT source) = 2) twins"
        )
        .await,
        n,
        "each slot has its real and its simulated row"
    );

    // The next nightly fit publishes the same regression: the simulated rows are left out.
    let refit = run_analytics(&ctx, every_row(FitSource::Auto)).await.unwrap();
    assert_eq!((refit.source, refit.rows_read), (Source::Weatherapi, n as u64));
    let after = published(&ctx).await;
    assert_ne!(after.0, before.0, "a new fit was published");
    assert_eq!(after.1, before.1);
    for (a, b) in [(after.2, before.2), (after.3, before.3), (after.4, before.4)] {
        assert!(relative(a, b) < 1e-12, "{after:?} against {before:?}");
    }
    assert_eq!(after.5.as_deref(), Some("weatherapi"));
    // A fit over both sources would have moved: the check above can fail.
    let mixed: f64 = sqlx::query_scalar("SELECT regr_slope(temp_c, wind_kph) FROM observations")
        .fetch_one(ctx.db.get_postgres_connection_pool())
        .await
        .unwrap();
    assert!(
        relative(mixed, before.3) > 0.1,
        "mixed {mixed}, real {}",
        before.3
    );

    // `weatherflow results` and `status` say which source.
    let dir = scratch_dir("provenance");
    let (ok, out, err) = run_cli(&dir, &["results"], &ctx.child_env()).await;
    assert!(ok, "{err}");
    let all = out.lines().find(|l| l.starts_with("all ")).expect(&out);
    assert!(all.contains(" weatherapi "), "{out}");
    let (ok, out, err) = run_cli(&dir, &["status"], &ctx.child_env()).await;
    assert!(ok, "{err}");
    for source in ["weatherapi", "simulated"] {
        let line = out
            .lines()
            .find(|l| l.trim_start().starts_with(source))
            .unwrap_or_else(|| panic!("no {source} row in {out}"));
        assert_eq!(
            line.split_whitespace().nth(1),
            Some(n.to_string().as_str()),
            "{out}"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_and_a_simulated_record_of_one_slot_are_two_rows_through_every_write_path() {
    let ctx = TestContext::new().await;
    let pool = ctx.db.get_postgres_connection_pool();
    let at = Utc::now() - chrono::Duration::hours(1);
    let twins = |key: &str, offset: i64| -> [ValidRecord; 2] {
        let mut real = record(key, at, offset);
        real.observation.source = Source::Weatherapi;
        real.observation.temp_c = 5.0;
        [real, record(key, at, offset + 1)]
    };
    // The UNNEST statement, the optimistic COPY and the checked COPY, each on a slot of its own,
    // then each again on the same records: the second round stores nothing and quarantines nothing
    // (an optimistic COPY meets the new key's index and must know it for a duplicate).
    let strategies = [
        CopyStrategy::default(),
        CopyStrategy {
            check_first: false,
            unnest_up_to: 0,
        },
        CopyStrategy {
            check_first: true,
            unnest_up_to: 0,
        },
    ];
    for (i, strategy) in strategies.iter().enumerate() {
        let batch = twins(&format!("slot {i}||land"), 10 * i as i64);
        for (round, want) in [(0, (2, 0)), (1, (0, 2))] {
            let mut s = *strategy;
            let stored = store::store_batch(pool, &batch, &[], &retry(), &mut s)
                .await
                .expect("stored");
            assert_eq!(
                (stored.inserted, stored.duplicates),
                want,
                "{strategy:?}, round {round}: {stored:?}"
            );
            assert!(stored.db_rejected.is_empty(), "{stored:?}");
        }
    }
    assert_eq!(
        ctx.scalar_i64("SELECT count(*) FROM observations WHERE source = 'weatherapi' AND temp_c = 5")
            .await,
        3
    );
    assert_eq!(
        ctx.scalar_i64("SELECT count(*) FROM observations WHERE source = 'simulated'")
            .await,
        3
    );
    assert_eq!(ctx.scalar_i64("SELECT count(*) FROM rejected_records").await, 0);
}

/// Inserts one observation per location and 15-minute slot from `from`, `slots` of them, of `source`.
async fn insert(ctx: &TestContext, source: &str, from: DateTime<Utc>, slots: i32, temp_offset: f64) {
    sqlx::query(
        "INSERT INTO observations (location_key, location_name, region, country, lat, lon, observed_at,
                                   temp_c, wind_kph, source, fetched_at)
         SELECT 'loc ' || l || '||land', 'Loc ' || l, '', 'land', 0, 0,
                $1::timestamptz + make_interval(mins => 15 * s),
                $4 + l - 0.1 * ((s * 7 + l) % 40) + (s % 5) * 0.3, ((s * 7 + l) % 40), $2, now()
         FROM generate_series(0, $3 - 1) s CROSS JOIN generate_series(1, 3) l",
    )
    .bind(from)
    .bind(source)
    .bind(slots)
    .bind(temp_offset)
    .execute(ctx.db.get_postgres_connection_pool())
    .await
    .expect("inserting observations");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_fits_weatherapi_rows_when_the_window_has_any_and_simulated_rows_only_alone() {
    let ctx = TestContext::new().await;
    let day1 = Utc.with_ymd_and_hms(2026, 11, 2, 0, 0, 0).unwrap();
    let day2 = day1 + chrono::Duration::days(1);
    // Day 1: simulated only. Day 2: both, on the same slots.
    insert(&ctx, "simulated", day1, 40, 30.0).await;
    insert(&ctx, "simulated", day2, 40, 30.0).await;
    insert(&ctx, "weatherapi", day2, 40, 10.0).await;
    let window = |day: DateTime<Utc>, source| AnalyticsRequest {
        since: Some(day),
        until: Some(day + chrono::Duration::days(1)),
        min_samples: Some(10),
        source,
        ..AnalyticsRequest::default()
    };

    let alone = run_analytics(&ctx, window(day1, FitSource::Auto)).await.unwrap();
    assert_eq!((alone.source, alone.rows_read), (Source::Simulated, 120));
    let both = run_analytics(&ctx, window(day2, FitSource::Auto)).await.unwrap();
    assert_eq!((both.source, both.rows_read), (Source::Weatherapi, 120));
    // The real rows' line: intercept about 10 + the location mean, against 30 for the simulated.
    let all = both.fits.iter().find(|f| f.scope == "all").unwrap();
    assert!(all.fit.intercept < 20.0, "{:?}", all.fit);
    let chosen = run_analytics(&ctx, window(day2, FitSource::Simulated))
        .await
        .unwrap();
    assert_eq!((chosen.source, chosen.rows_read), (Source::Simulated, 120));
    let none = run_analytics(&ctx, window(day1, FitSource::Weatherapi))
        .await
        .unwrap();
    assert_eq!((none.source, none.rows_read), (Source::Weatherapi, 0));
    assert!(none.skip_reason().is_some(), "nothing to fit: skipped");

    // Each fit stored its source, and the run its choice.
    let stored: Vec<(String, i64)> = sqlx::query_as(
        "SELECT r.source, count(*) FROM regression_results r GROUP BY r.source ORDER BY r.source",
    )
    .fetch_all(ctx.db.get_postgres_connection_pool())
    .await
    .unwrap();
    // 4 scopes (all and 3 locations) per fitted run.
    assert_eq!(
        stored,
        [("simulated".to_owned(), 8), ("weatherapi".to_owned(), 4)]
    );
    let details: Vec<(String, String)> = sqlx::query_as(
        "SELECT details->>'source', details->>'source_reason' FROM job_runs WHERE job = 'analytics' ORDER BY id",
    )
    .fetch_all(ctx.db.get_postgres_connection_pool())
    .await
    .unwrap();
    let sources: Vec<&str> = details.iter().map(|d| d.0.as_str()).collect();
    assert_eq!(sources, ["simulated", "weatherapi", "simulated", "weatherapi"]);
    assert!(
        details[0].1.starts_with("auto: the window holds no WeatherAPI"),
        "{details:?}"
    );
    assert!(details[2].1.contains("--source simulated"), "{details:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_analysis_views_return_weatherapi_rows_when_there_are_any() {
    let ctx = TestContext::new().await;
    let day = Utc.with_ymd_and_hms(2026, 11, 2, 0, 0, 0).unwrap();
    insert(&ctx, "simulated", day, 10, 30.0).await;
    let sources = "SELECT string_agg(DISTINCT source, ',') FROM weather_data";
    assert_eq!(ctx.scalar_text(sources).await, "simulated");
    assert_eq!(ctx.scalar_i64("SELECT count(*) FROM weather_data").await, 30);
    // Real rows for the first 4 slots: the views switch to them, the simulated ones stay stored.
    insert(&ctx, "weatherapi", day, 4, 10.0).await;
    assert_eq!(ctx.scalar_text(sources).await, "weatherapi");
    assert_eq!(ctx.scalar_i64("SELECT count(*) FROM weather_data").await, 12);
    let latest = "SELECT string_agg(source || ' ' || to_char(observed_at AT TIME ZONE 'UTC', 'HH24:MI'), ',') \
                  FROM latest_observations";
    assert_eq!(
        ctx.scalar_text(latest).await,
        "weatherapi 00:45,weatherapi 00:45,weatherapi 00:45"
    );
    assert_eq!(ctx.scalar_i64("SELECT count(*) FROM observations").await, 42);
}

const SOURCE_MIGRATION: &str = "m20261207_100000_observation_source_identity";

/// Every observation row, whole, in id order.
const CHECKSUM: &str = "SELECT md5(string_agg(o::text, E'\\n' ORDER BY o.id)) FROM observations o";

async fn indexes_of(ctx: &TestContext, table: &str) -> Vec<String> {
    sqlx::query_scalar("SELECT indexname::text FROM pg_indexes WHERE tablename = $1 ORDER BY 1")
        .bind(table)
        .fetch_all(ctx.db.get_postgres_connection_pool())
        .await
        .unwrap()
}

/// `table` (a partition) has the unique key `(location_key, observed_at, source)` and the
/// `(source, observed_at)` index, and not the old key.
async fn has_the_new_indexes(ctx: &TestContext, table: &str) {
    let indexes = indexes_of(ctx, table).await;
    for suffix in ["_location_key_observed_at_source_key", "_source_observed_at_idx"] {
        assert!(
            indexes.contains(&format!("{table}{suffix}")),
            "{table}: {indexes:?}"
        );
    }
    assert!(
        !indexes
            .iter()
            .any(|i| i.ends_with("_location_key_observed_at_key")),
        "{table}: {indexes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_migration_keeps_every_row_up_down_and_up_and_down_refuses_twins() {
    let ctx = TestContext::unmigrated().await;
    // This migration and any after it.
    let back = common::migrations_after(SOURCE_MIGRATION) + 1;
    Migrator::up(&ctx.db, None).await.unwrap();
    Migrator::down(&ctx.db, Some(back)).await.unwrap();
    // Rows of both sources on different slots, over two months, under the old key.
    let day = Utc::now() - chrono::Duration::days(40);
    insert(&ctx, "simulated", day, 30, 30.0).await;
    insert(&ctx, "weatherapi", day + chrono::Duration::days(35), 30, 10.0).await;
    let checksum = ctx.scalar_text(CHECKSUM).await;

    Migrator::up(&ctx.db, None).await.unwrap();
    assert_eq!(ctx.scalar_text(CHECKSUM).await, checksum, "up keeps every row");
    // The old months' rows wait in the default partition (the partitioning migration ran on an
    // empty table); this month's partition and the default one have the new key and index.
    let this_month = partitions::partition_name(partitions::month_of(Utc::now()));
    for table in [this_month.as_str(), partitions::DEFAULT_PARTITION] {
        has_the_new_indexes(&ctx, table).await;
    }
    // Partitions made later by the maintenance step (the default partition's months, drained into
    // them, and a month a year ahead) get them too.
    let later = Utc::now() + chrono::Duration::days(365);
    let policy = Policy {
        months_ahead: 0,
        retention_months: None,
    };
    let done = partitions::maintain(ctx.db.get_postgres_connection_pool(), later, policy)
        .await
        .unwrap();
    assert!(done.moved_from_default > 0, "{done:?}");
    assert!(
        done.created
            .contains(&partitions::partition_name(partitions::month_of(day)))
    );
    for table in &done.created {
        has_the_new_indexes(&ctx, table).await;
    }
    assert_eq!(
        ctx.scalar_text(CHECKSUM).await,
        checksum,
        "maintenance moved the rows unchanged"
    );

    Migrator::down(&ctx.db, Some(back)).await.unwrap();
    assert_eq!(ctx.scalar_text(CHECKSUM).await, checksum, "down keeps every row");
    Migrator::up(&ctx.db, None).await.unwrap();
    assert_eq!(ctx.scalar_text(CHECKSUM).await, checksum, "and up again");

    // A simulated twin of a real row: down refuses, says why and how, and changes nothing.
    insert(&ctx, "simulated", day + chrono::Duration::days(35), 2, 30.0).await;
    let checksum = ctx.scalar_text(CHECKSUM).await;
    let err = Migrator::down(&ctx.db, Some(back)).await.unwrap_err().to_string();
    assert!(
        err.contains("cannot migrate down: 6 observation slot(s)"),
        "{err}"
    );
    assert_eq!(ctx.scalar_text(CHECKSUM).await, checksum);
    assert_eq!(
        ctx.scalar_i64(
            "SELECT count(*) FROM pg_constraint WHERE conname = 'observations_location_key_observed_at_source_key'"
        )
        .await,
        1,
        "still migrated"
    );
    // The documented way out: drop the simulated twins, then down goes through.
    sqlx::query(
        "DELETE FROM observations s WHERE s.source = 'simulated' AND EXISTS (SELECT 1 FROM observations w \
         WHERE w.location_key = s.location_key AND w.observed_at = s.observed_at AND w.source = 'weatherapi')",
    )
    .execute(ctx.db.get_postgres_connection_pool())
    .await
    .unwrap();
    Migrator::down(&ctx.db, Some(back)).await.unwrap();
    assert_eq!(ctx.scalar_i64("SELECT count(*) FROM observations").await, 180);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_fetch_and_a_simulated_fetch_of_the_same_city_and_slot_both_store() {
    use common::weatherapi_stub::{self, WeatherApiStub};
    use secrecy::SecretString;
    use weatherflow::jobs::fetch::{self, FetchRequest, SourceChoice};

    let ctx = TestContext::new().await;
    let stub = WeatherApiStub::start().await;
    let mut cfg = ctx.config.clone();
    cfg.weatherapi.base_url = stub.base_url.clone();
    cfg.weatherapi.api_key = Some(SecretString::from(weatherapi_stub::KEY));
    cfg.weatherapi.key_file = None;
    cfg.weatherapi.bulk = false;
    cfg.weatherapi.aqi = false;
    cfg.fetch.rate_per_sec = 0.0;
    // The stub's London reading was last updated at 2026-01-05 17:00 UTC, a 15-minute slot of the
    // simulator's grid. The simulated run comes first (the order that used to displace the real
    // reading), backfilling every slot from then to now.
    let slot = Utc.with_ymd_and_hms(2026, 1, 5, 17, 0, 0).unwrap();
    let hours = ((Utc::now() - slot).num_hours() + 1) as u32;
    let fetch = |source, backfill_hours| FetchRequest {
        locations: vec!["London".to_owned()],
        source,
        seed: None,
        concurrency: None,
        backfill_hours,
        history: None,
    };
    let simulated = fetch::run(
        &cfg,
        fetch(SourceChoice::Simulated, Some(hours)),
        CancellationToken::new(),
    )
    .await
    .expect("the simulated fetch");
    let real = fetch::run(
        &cfg,
        fetch(SourceChoice::Weatherapi, None),
        CancellationToken::new(),
    )
    .await
    .expect("the real fetch, from the WeatherAPI stub");
    assert_eq!(stub.requests_for("London").len(), 1);
    let summary = persist_until_idle(&ctx).await;
    assert_eq!(summary.rejected_total(), 0, "{summary:?}");
    assert_eq!(summary.duplicates, 0, "neither displaces the other: {summary:?}");
    assert_eq!(summary.stored, summary.consumed);
    drop((simulated, real));

    let at_slot = format!(
        "SELECT string_agg(source || ':' || temp_c, ',' ORDER BY source) FROM observations \
         WHERE location_name = 'London' AND observed_at = '{}'",
        slot.to_rfc3339()
    );
    let rows = ctx.scalar_text(&at_slot).await;
    let (sim, real) = rows
        .split_once(',')
        .unwrap_or_else(|| panic!("two rows at the slot: {rows}"));
    assert!(sim.starts_with("simulated:"), "{rows}");
    assert_eq!(
        real, "weatherapi:0.1",
        "the stub's reading, as WeatherAPI gave it"
    );
    assert_eq!(
        ctx.scalar_i64("SELECT count(*) FROM observations WHERE source = 'weatherapi'")
            .await,
        1
    );
}
