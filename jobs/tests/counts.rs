//! Row counts on a large history whose statistics know none of its rows (analysed empty, as the
//! migration leaves it, and not since): `weatherflow status`, `/api/v1/status`
//! and the dashboard read them (`db::table_counts`, `db::source_counts`), and they must answer from
//! the planner's estimate or a count bounded by a statement timeout, within a fixed budget. The partitioned
//! parent's own `pg_class.reltuples` is never refreshed by autovacuum, so it cannot be the source.

mod common;

use std::time::{Duration, Instant};

use common::TestContext;

/// Rows inserted: two million, beyond `EXACT_BELOW`, in the current month's partition.
const ROWS: i64 = 2_000_000;

const FILL: &str = "
INSERT INTO observations (location_key, location_name, region, country, lat, lon, observed_at, temp_c,
    wind_kph, source, fetched_at, kafka_topic, kafka_partition, kafka_offset)
SELECT 'loc ' || (g / 1000000) || '||land', 'Loc', 'r', 'land', 1, 2,
       date_trunc('month', now()) + make_interval(secs => g % 1000000), 10, 5, 'simulated',
       date_trunc('month', now()) + make_interval(secs => g % 1000000 + 60), 'weather.observations', 0, g
FROM generate_series(0, $1 - 1) AS g";

#[tokio::test]
async fn counts_of_millions_with_stale_statistics_answer_within_a_fixed_budget() {
    let ctx = TestContext::new().await;
    use sea_orm::ConnectionTrait;
    // Never analysed during the test: autovacuum off on every partition.
    let partitions = ctx
        .scalar_text(
            "SELECT string_agg(inhrelid::regclass::text, ',') FROM pg_inherits
             WHERE inhparent = 'observations'::regclass",
        )
        .await;
    for p in partitions.split(',') {
        ctx.db
            .execute_unprepared(&format!("ALTER TABLE {p} SET (autovacuum_enabled = false)"))
            .await
            .unwrap();
    }
    ctx.db
        .execute_raw(sea_orm::Statement::from_sql_and_values(
            sea_orm::DbBackend::Postgres,
            FILL,
            [ROWS.into()],
        ))
        .await
        .unwrap();
    // The migration analysed the empty partitions; nothing has since. The catalog knows none of
    // the rows: neither the parent's reltuples (never refreshed by autovacuum) nor the partitions'.
    let known = ctx
        .scalar_i64(
            "SELECT coalesce(sum(greatest(c.reltuples, 0)), 0)::int8 FROM pg_class c
             WHERE c.oid = 'observations'::regclass
                OR c.oid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = 'observations'::regclass)",
        )
        .await;
    assert!(
        known < ROWS / 10,
        "the catalog already counts {known} rows; the test needs stale statistics"
    );

    let started = Instant::now();
    let tables = weatherflow::db::table_counts(&ctx.db).await.unwrap();
    let sources = weatherflow::db::source_counts(&ctx.db).await.unwrap();
    let took = started.elapsed();

    // The planner's estimate knows the rows from the partitions' size on disk, roughly.
    let estimate = weatherflow::db::row_estimate(&ctx.db, "observations")
        .await
        .unwrap();
    assert!(
        (ROWS / 4..=ROWS * 4).contains(&estimate),
        "planner's estimate {estimate} for {ROWS} rows"
    );
    // Below EXACT_BELOW by that estimate, the count is exact when it fits its budget and the
    // estimate when it does not; either way it is right.
    let obs = tables.iter().find(|t| t.table == "observations").unwrap();
    if obs.estimated {
        assert_eq!(obs.rows, estimate, "{obs:?}");
    } else {
        assert_eq!(obs.rows, ROWS, "{obs:?}");
    }
    let runs = tables.iter().find(|t| t.table == "job_runs").unwrap();
    assert_eq!((runs.rows, runs.estimated), (0, false));
    let simulated = sources
        .iter()
        .find(|s| s.source == weatherflow::envelope::Source::Simulated)
        .unwrap();
    assert!(simulated.newest.is_some(), "{simulated:?}");
    assert!(simulated.estimated || simulated.rows == ROWS, "{simulated:?}");
    // Six reads: two exact counts bounded by EXACT_BUDGET (1.5 s) each, two more for the sources,
    // the estimates and the index probes. Without the bound, counting two million rows three times
    // over takes longer than this on a loaded 2-core machine.
    assert!(
        took < Duration::from_secs(7),
        "counts took {took:?}: {obs:?} {simulated:?}"
    );
}

/// Rows of the plot test: four months of 100,000 each.
const PLOT_ROWS: i64 = 400_000;

/// Months -1 (the `DEFAULT` partition, read last), 0, 1 and 2 from now; the wind speed is the
/// month's index (0 to 3), so a point says which month it came from.
const FILL_MONTHS: &str = "
INSERT INTO observations (location_key, location_name, region, country, lat, lon, observed_at, temp_c,
    wind_kph, source, fetched_at, kafka_topic, kafka_partition, kafka_offset)
SELECT 'loc||land', 'Loc', 'r', 'land', 1, 2,
       date_trunc('month', now()) + make_interval(months => (g % 4 - 1)::int, secs => g / 4), 10, g % 4,
       'simulated', now(), 'weather.observations', 0, g
FROM generate_series(0, $1 - 1) AS g";

#[tokio::test]
async fn the_plots_sample_spreads_over_every_month_of_a_table_never_analysed() {
    let ctx = TestContext::new().await;
    use sea_orm::ConnectionTrait;
    ctx.db
        .execute_raw(sea_orm::Statement::from_sql_and_values(
            sea_orm::DbBackend::Postgres,
            FILL_MONTHS,
            [PLOT_ROWS.into()],
        ))
        .await
        .unwrap();
    let max = 1500;
    let started = Instant::now();
    let (wind, temp) = weatherflow::web::queries::plot_samples(&ctx.db, max, None)
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(wind.len(), temp.len());
    assert!(
        (max * 3 / 4..=max).contains(&wind.len()),
        "{} points for at most {max}",
        wind.len()
    );
    // A quarter of the points per month, give or take: at least a tenth each. Cut in scan order,
    // or taken whole because the statistics knew no row, the sample held the first month only.
    let mut per_month = [0usize; 4];
    for w in &wind {
        per_month[*w as usize] += 1;
    }
    for (month, n) in per_month.iter().enumerate() {
        assert!(
            *n >= wind.len() / 10,
            "month {month} has {n} of {} points: {per_month:?}",
            wind.len()
        );
    }
    // A block sample of a few thousand rows, not a scan of 400,000.
    assert!(took < Duration::from_secs(3), "sampling took {took:?}");
}
