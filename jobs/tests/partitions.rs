//! `observations` partitioned by month, on a real database: the migration moves existing rows (count,
//! content and ids kept, and back again on `down`), the write path's dedup holds across the move and
//! across partitions, and the maintenance step creates the coming months' partitions, drains the
//! default partition and drops old months only when a retention is set.

mod common;

use chrono::{DateTime, Duration, TimeZone, Utc};
use common::TestContext;
use common::records::{record, retry};
use migration::{Migrator, MigratorTrait};
use weatherflow::jobs::persist::store::{self, CopyStrategy, Stored, ValidRecord};
use weatherflow::partitions::{self, Maintenance, Policy, month_of, partition_name};

/// Rows every 5 days over 200 days ending `end`, for 3 locations, every column set, so the move has
/// many months, month boundaries and full rows to carry.
const FILL: &str = "
INSERT INTO observations (location_key, location_name, region, country, lat, lon, observed_at, temp_c,
    feelslike_c, wind_kph, gust_kph, pressure_mb, precip_mm, vis_km, uv, wind_degree, humidity, cloud,
    wind_dir, condition_text, condition_code, is_day, source, fetched_at, kafka_topic, kafka_partition,
    kafka_offset)
SELECT 'loc ' || l || '||land', 'Loc ' || l, 'r', 'land', l, -l,
       $1::timestamptz - make_interval(days => 5 * t), t * 0.5, t * 0.25, l * 3.0, l * 4.0, 1000 + t,
       0.1, 10, 2, t % 360, t % 100, l, 'NW', 'Sunny', 1000, t % 2 = 0, 'simulated',
       $1::timestamptz - make_interval(days => 5 * t) + interval '1 minute', 'weather.observations',
       l, t
FROM generate_series(0, 40) AS t CROSS JOIN generate_series(1, 3) AS l";

/// Every row's full text, ids included, in id order: equal before and after a move means nothing was
/// lost, added or changed.
const CHECKSUM: &str = "SELECT md5(string_agg(o::text, E'\\n' ORDER BY o.id)) FROM observations o";

fn now() -> DateTime<Utc> {
    Utc::now()
}

/// Stores `batch` through the persist job's COPY path (these batches are small enough for the
/// UNNEST statement otherwise), once with the existence check first and once optimistic (the COPY
/// meets the unique index of a partition and is retried).
async fn store_twice_both_ways(ctx: &TestContext, batch: &[ValidRecord]) -> [Stored; 2] {
    let pool = ctx.db.get_postgres_connection_pool();
    let mut out = Vec::new();
    for check_first in [true, false] {
        let mut strategy = CopyStrategy {
            check_first,
            unnest_up_to: 0,
        };
        out.push(
            store::store_batch(pool, batch, &[], &retry(), &mut strategy)
                .await
                .expect("stored"),
        );
    }
    out.try_into().unwrap()
}

async fn partition_names(ctx: &TestContext) -> Vec<String> {
    let pool = ctx.db.get_postgres_connection_pool();
    sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = 'observations'::regclass ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn relkind(ctx: &TestContext) -> String {
    ctx.scalar_text("SELECT relkind::text FROM pg_class WHERE oid = 'observations'::regclass")
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_migration_moves_every_row_into_month_partitions_and_down_restores_the_plain_table() {
    let ctx = TestContext::unmigrated().await;
    Migrator::up(&ctx.db, Some(2)).await.unwrap();
    assert_eq!(relkind(&ctx).await, "r");
    let pool = ctx.db.get_postgres_connection_pool();
    let end = now();
    sqlx::query(FILL).bind(end).execute(pool).await.unwrap();
    let count = ctx.scalar_i64("SELECT count(*) FROM observations").await;
    assert_eq!(count, 41 * 3);
    let checksum = ctx.scalar_text(CHECKSUM).await;
    let max_id = ctx.scalar_i64("SELECT max(id) FROM observations").await;

    Migrator::up(&ctx.db, None).await.unwrap();
    assert_eq!(relkind(&ctx).await, "p", "observations is partitioned");
    assert_eq!(ctx.scalar_i64("SELECT count(*) FROM observations").await, count);
    assert_eq!(
        ctx.scalar_text(CHECKSUM).await,
        checksum,
        "every row moved unchanged"
    );
    assert_eq!(
        ctx.scalar_i64("SELECT count(*) FROM observations_default").await,
        0,
        "every row has its month's partition"
    );
    // One partition per month from the oldest row's through two months ahead, and the default.
    let oldest = end - Duration::days(200);
    let mut month = month_of(oldest);
    let mut want = vec!["observations_default".to_owned()];
    while month <= month_of(end) + chrono::Months::new(2) {
        want.push(partition_name(month));
        month = month + chrono::Months::new(1);
    }
    want.sort();
    assert_eq!(partition_names(&ctx).await, want);
    let in_own_month = ctx
        .scalar_i64(
            "SELECT count(*) FROM observations o JOIN pg_class c ON c.oid = o.tableoid \
             WHERE c.relname = 'observations_y' || to_char(o.observed_at AT TIME ZONE 'UTC', 'YYYY\"m\"MM')",
        )
        .await;
    assert_eq!(
        in_own_month, count,
        "each row sits in the partition of its UTC month"
    );
    // The views read the new table.
    assert_eq!(ctx.scalar_i64("SELECT count(*) FROM weather_data").await, count);
    assert_eq!(
        ctx.scalar_i64("SELECT count(*) FROM latest_observations").await,
        3
    );

    // Dedup across the move: the oldest and the newest stored observations (different partitions)
    // are refused, by the existence check and by the COPY's unique index alike; a new one is stored.
    let oldest_at = end - Duration::days(200);
    let batch = [
        record("loc 1||land", oldest_at, 1),
        record("loc 2||land", end, 2),
        record("loc 9||land", end - Duration::days(100), 3),
    ];
    let [first, second] = store_twice_both_ways(&ctx, &batch).await;
    assert_eq!((first.inserted, first.duplicates), (1, 2), "{first:?}");
    assert_eq!((second.inserted, second.duplicates), (0, 3), "{second:?}");
    assert!(first.db_rejected.is_empty() && second.db_rejected.is_empty());
    assert_eq!(
        ctx.scalar_i64("SELECT count(*) FROM observations").await,
        count + 1
    );
    assert!(
        ctx.scalar_i64("SELECT max(id) FROM observations").await > max_id,
        "the id sequence continues"
    );
    let checksum = ctx.scalar_text(CHECKSUM).await;

    let steps = common::migrations_after("m20261202_073000_partition_observations") + 1;
    Migrator::down(&ctx.db, Some(steps)).await.unwrap();
    assert_eq!(relkind(&ctx).await, "r", "down makes it a plain table again");
    assert_eq!(
        ctx.scalar_text(CHECKSUM).await,
        checksum,
        "every row moved back unchanged"
    );
    assert_eq!(
        ctx.scalar_i64("SELECT count(*) FROM weather_data").await,
        count + 1
    );
    Migrator::up(&ctx.db, None).await.unwrap();
    assert_eq!(ctx.scalar_text(CHECKSUM).await, checksum, "and forward again");
    // This build's write path names the current key (with `source`), so it writes after the way
    // back and forth, not in between.
    let [again, _] = store_twice_both_ways(&ctx, &batch).await;
    assert_eq!((again.inserted, again.duplicates), (0, 3), "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_creates_the_coming_months_drains_the_default_partition_and_keeps_everything_by_default()
{
    let ctx = TestContext::new().await;
    let pool = ctx.db.get_postgres_connection_pool();
    let keep_all = Policy {
        months_ahead: 2,
        retention_months: None,
    };
    // A year from now: months the migration did not make.
    let later = now() + Duration::days(365);
    let nothing = partitions::maintain(pool, now(), keep_all).await.unwrap();
    assert_eq!(
        nothing,
        Maintenance::default(),
        "the migration made this and the next 2 months"
    );

    // Rows of months without a partition (late history, a clock far ahead) land in the default
    // partition, and the write path's dedup holds there too.
    let old = Utc.with_ymd_and_hms(2020, 3, 31, 23, 59, 59).unwrap();
    let stray = [record("a||land", old, 1), record("a||land", later, 2)];
    let [first, second] = store_twice_both_ways(&ctx, &stray).await;
    assert_eq!((first.inserted, second.inserted, second.duplicates), (2, 0, 2));
    assert_eq!(
        ctx.scalar_i64("SELECT count(*) FROM observations_default").await,
        2
    );

    let done = partitions::maintain(pool, later, keep_all).await.unwrap();
    let month = month_of(later);
    let expected: Vec<String> = std::iter::once(partition_name(month_of(old)))
        .chain((0..=2).map(|i| partition_name(month + chrono::Months::new(i))))
        .collect();
    assert_eq!(done.created, expected, "{done:?}");
    assert_eq!(done.moved_from_default, 2);
    assert!(done.dropped.is_empty(), "nothing is dropped without a retention");
    assert_eq!(
        ctx.scalar_i64("SELECT count(*) FROM observations_default").await,
        0
    );
    assert_eq!(ctx.scalar_i64("SELECT count(*) FROM observations").await, 2);
    // The moved rows are still refused as duplicates from their new partitions.
    let [after, _] = store_twice_both_ways(&ctx, &stray).await;
    assert_eq!((after.inserted, after.duplicates), (0, 2), "{after:?}");

    // Idempotent, and safe to run twice at once.
    let (a, b) = tokio::join!(
        partitions::maintain(pool, later, keep_all),
        partitions::maintain(pool, later, keep_all)
    );
    assert_eq!(
        (a.unwrap(), b.unwrap()),
        (Maintenance::default(), Maintenance::default())
    );
    let names = partition_names(&ctx).await;
    assert!(names.contains(&partition_name(month_of(old))), "{names:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_drops_months_older_than_the_retention_and_nothing_newer() {
    let ctx = TestContext::new().await;
    let pool = ctx.db.get_postgres_connection_pool();
    let t = now();
    // Rows in this month, 2 and 5 months ago and 5 years ago: only this month has a partition yet, so
    // the older ones land in the default partition.
    let rows = [
        record("a||land", t - Duration::hours(1), 1),
        record("a||land", t - Duration::days(62), 2),
        record("a||land", t - Duration::days(155), 3),
        record("a||land", t - Duration::days(5 * 365), 4),
    ];
    let [first, _] = store_twice_both_ways(&ctx, &rows).await;
    assert_eq!(first.inserted, 4);
    let keep_all = Policy {
        months_ahead: 2,
        retention_months: None,
    };
    let created = partitions::maintain(pool, t, keep_all).await.unwrap();
    assert!(created.dropped.is_empty());
    assert_eq!(
        created.moved_from_default, 3,
        "the older rows' months got partitions: {created:?}"
    );
    assert_eq!(ctx.scalar_i64("SELECT count(*) FROM observations").await, 4);

    let keep_3 = Policy {
        months_ahead: 2,
        retention_months: Some(3),
    };
    let done = partitions::maintain(pool, t, keep_3).await.unwrap();
    let cutoff = month_of(t) - chrono::Months::new(3);
    assert!(!done.dropped.is_empty(), "{done:?}");
    assert!(
        done.dropped
            .iter()
            .all(|name| name.as_str() < partition_name(cutoff).as_str()),
        "{done:?}"
    );
    let names = partition_names(&ctx).await;
    assert!(
        names
            .iter()
            .all(|n| n == "observations_default" || *n >= partition_name(cutoff)),
        "{names:?}"
    );
    assert_eq!(
        ctx.scalar_i64("SELECT count(*) FROM observations").await,
        2,
        "this month's and the 2-months-old rows are kept"
    );
    let again = partitions::maintain(pool, t, keep_3).await.unwrap();
    assert_eq!(again, Maintenance::default());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn maintenance_beside_persist_writes_loses_and_doubles_nothing() {
    let ctx = TestContext::new().await;
    let pool = ctx.db.get_postgres_connection_pool().clone();
    // Months the migration did not make: the writes land in the default partition until a
    // maintenance run makes their month, while it moves what is already there.
    let later = now() + Duration::days(200);
    const BATCHES: i64 = 30;
    const PER_BATCH: i64 = 40;
    let writer = {
        let pool = pool.clone();
        tokio::spawn(async move {
            let mut stored = (0, 0);
            let mut strategy = CopyStrategy::default();
            for b in 0..BATCHES {
                // Each batch also repeats the previous batch's rows: duplicates across the move.
                let batch: Vec<ValidRecord> = (0..PER_BATCH)
                    .flat_map(|i| {
                        let at = |b: i64| later + Duration::days(i % 90) + Duration::minutes(b);
                        let key = format!("w{i}||land");
                        [
                            record(&key, at(b), b * PER_BATCH + i),
                            record(&key, at(b.max(1) - 1), 0),
                        ]
                    })
                    .collect();
                let s = store::store_batch(&pool, &batch, &[], &retry(), &mut strategy)
                    .await
                    .expect("stored");
                assert!(s.db_rejected.is_empty(), "{s:?}");
                stored = (stored.0 + s.inserted, stored.1 + s.duplicates);
            }
            stored
        })
    };
    let keep_all = Policy {
        months_ahead: 5,
        retention_months: None,
    };
    let mut created = Vec::new();
    while !writer.is_finished() {
        let at = later + Duration::days(created.len() as i64 * 20);
        created.extend(partitions::maintain(&pool, at, keep_all).await.unwrap().created);
    }
    let (inserted, duplicates) = writer.await.unwrap();
    partitions::maintain(&pool, later + Duration::days(90), keep_all)
        .await
        .unwrap();
    assert_eq!(inserted as i64, BATCHES * PER_BATCH, "every new observation once");
    assert_eq!(duplicates as i64, BATCHES * PER_BATCH, "every repeat refused");
    assert_eq!(
        ctx.scalar_i64("SELECT count(*) FROM observations").await,
        BATCHES * PER_BATCH
    );
    assert_eq!(
        ctx.scalar_i64(
            "SELECT count(*) FROM (SELECT DISTINCT location_key, observed_at FROM observations) d"
        )
        .await,
        BATCHES * PER_BATCH
    );
    assert_eq!(
        ctx.scalar_i64("SELECT count(*) FROM observations_default").await,
        0
    );
    assert!(!created.is_empty());
}
