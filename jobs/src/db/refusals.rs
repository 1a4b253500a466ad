//! What keeps inserts into `observations` and `rejected_records` from landing, as the server sees it
//! for this user: a read-only node, a missing INSERT grant, a lock that makes inserts wait.
//!
//! The consumer, a process of its own, reports its outage on `/readyz` and the
//! `weatherflow_persist_outage_seconds` gauge; this is the same diagnosis from wherever it is asked
//! (`weatherflow status`).

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr, Statement};

/// One line per reason, most fundamental first.
const WRITE_REFUSALS: &str = "\
SELECT r FROM (
  SELECT 1 AS o, 'the server is a standby in recovery (read-only)' AS r WHERE pg_is_in_recovery()
  UNION ALL SELECT 2, 'new transactions are read-only (default_transaction_read_only = on)'
    WHERE current_setting('default_transaction_read_only') = 'on'
  UNION ALL SELECT 3, format('no INSERT privilege on %s', t) FROM unnest(ARRAY['observations', 'rejected_records']) t
    WHERE to_regclass(t) IS NOT NULL AND NOT has_table_privilege(t, 'INSERT')
  UNION ALL SELECT 4, format('%s is locked %s by session %s for %s s: inserts wait', l.relation::regclass, l.mode,
      l.pid, round(extract(epoch FROM now() - a.xact_start)))
    FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE l.granted AND l.locktype = 'relation' AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND l.relation IN (to_regclass('observations'), to_regclass('rejected_records'))
      AND l.mode IN ('ShareLock', 'ShareRowExclusiveLock', 'ExclusiveLock', 'AccessExclusiveLock')
) x ORDER BY o, r";

/// Why the persist writers' inserts would not land now; empty when they would.
pub async fn write_refusals(db: &DatabaseConnection) -> Result<Vec<String>, DbErr> {
    let rows = db
        .query_all_raw(Statement::from_string(DbBackend::Postgres, WRITE_REFUSALS))
        .await?;
    rows.iter().map(|r| r.try_get_by_index::<String>(0)).collect()
}
