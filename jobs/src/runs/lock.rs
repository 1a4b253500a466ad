//! One PostgreSQL advisory lock per job, so that a job never runs twice at once — neither within a
//! process nor across replicas of the scheduler; and one per recorded run ([`RunLease`]), so that a
//! row left `running` by a killed process can be told from a live one.
//!
//! Session-level advisory locks belong to the connection that took them, so the lock is taken on a
//! connection checked out of the pool and kept for the whole run. The connection goes back to the pool
//! only after PostgreSQL confirmed the unlock; in every other case (the unlock failed, or the lock was
//! dropped with its task) the connection is closed instead, because a pooled session still holding the
//! lock would keep the job locked for as long as the pool lives. If the process dies, the server ends
//! the session and the lock goes with it.
//!
//! The session can also die under a live run (a PostgreSQL restart, an idle-session timeout, a proxy,
//! `pg_terminate_backend`), and with it the lock: another replica could take it and run beside us. So
//! a run checks its lock every [`CHECK_EVERY`] ([`JobLock::lost`]) and stops when it is gone, recorded
//! `failed` with [`LOCK_LOST`]; a new holder that finds a `running` row waits long enough for that
//! loser to have stopped before it runs (see the scheduler).

use std::time::Duration;

use sea_orm::DatabaseConnection;

use super::JobName;
use sqlx::Postgres;
use sqlx::pool::PoolConnection;

/// How often a running job checks that its lock is still held: a one-row query on the lock's session.
pub const CHECK_EVERY: Duration = Duration::from_secs(2);

/// How long the liveness check may wait for its answer. A session that goes silent without closing
/// (a partition, a dead proxy) cannot vouch for its lock, and TCP would take hours to say so: past
/// this bound the lock is taken as lost, the run stops and the session is closed.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// The error recorded for a run stopped because its lock was lost.
pub const LOCK_LOST: &str = "lock lost";

/// Whether this session holds the advisory lock `$1`. PostgreSQL shows a bigint key as its high 32
/// bits in `classid` and its low 32 bits in `objid`, with `objsubid` 1.
const HELD: &str = "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted \
    AND pid = pg_backend_pid() AND objsubid = 1 \
    AND classid::bigint = (($1::bigint >> 32) & 4294967295) AND objid::bigint = ($1::bigint & 4294967295))";

/// The advisory lock key of `job`: 64-bit FNV-1a of `"weatherflow:" + job`. Stable across builds,
/// platforms and PostgreSQL versions (unlike `hashtext`), so every replica derives the same key.
pub fn lock_key(job: JobName) -> i64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0100_0000_01b3;
    let hash = "weatherflow:"
        .bytes()
        .chain(job.as_str().bytes())
        .fold(OFFSET, |h, b| (h ^ u64::from(b)).wrapping_mul(PRIME));
    // Reinterpreting the bits is the point: PostgreSQL's lock keys are bigint.
    hash as i64
}

/// A held advisory lock of one job, with the session that holds it.
#[derive(Debug)]
pub struct JobLock {
    /// The dedicated session holding the lock; `None` once released.
    conn: Option<PoolConnection<Postgres>>,
    /// The lock key.
    key: i64,
}

impl JobLock {
    /// Takes `job`'s lock if it is free. `Ok(None)` when another session holds it.
    pub async fn try_acquire(db: &DatabaseConnection, job: JobName) -> Result<Option<Self>, sqlx::Error> {
        let mut conn = db.get_postgres_connection_pool().acquire().await?;
        let key = lock_key(job);
        let got = sqlx::query_scalar::<_, bool>("SELECT pg_try_advisory_lock($1)")
            .bind(key)
            .fetch_one(&mut *conn)
            .await;
        match got {
            Ok(true) => Ok(Some(Self {
                conn: Some(conn),
                key,
            })),
            Ok(false) => Ok(None),
            Err(e) => {
                // Whether the lock was taken is unknown: end the session to be sure it is not held.
                conn.close_on_drop();
                Err(e)
            }
        }
    }

    /// Resolves when the lock is lost: its session failed the check, or no longer holds the lock.
    /// Checks every [`CHECK_EVERY`] on the lock's own session; pending for as long as the lock holds.
    pub async fn lost(&mut self) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        loop {
            tokio::time::sleep(CHECK_EVERY).await;
            let query = sqlx::query_scalar::<_, bool>(HELD)
                .bind(self.key)
                .fetch_one(&mut **conn);
            let held = match tokio::time::timeout(CHECK_TIMEOUT, query).await {
                Ok(held) => held,
                Err(_) => Err(sqlx::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "the lock check got no answer within {} s",
                        CHECK_TIMEOUT.as_secs()
                    ),
                ))),
            };
            match held {
                Ok(true) => {}
                Ok(false) => {
                    tracing::error!(
                        key = self.key,
                        "the advisory lock is no longer held by its session"
                    );
                    return;
                }
                Err(e) => {
                    tracing::error!(key = self.key, error = %e, "the advisory lock's session is lost");
                    conn.close_on_drop();
                    return;
                }
            }
        }
    }

    /// Lets the lock go. The session returns to the pool when PostgreSQL confirms the unlock, and is
    /// closed (which frees the lock too) otherwise.
    pub async fn release(mut self) -> Result<(), sqlx::Error> {
        let Some(mut conn) = self.conn.take() else {
            return Ok(());
        };
        let unlocked = sqlx::query_scalar::<_, bool>("SELECT pg_advisory_unlock($1)")
            .bind(self.key)
            .fetch_one(&mut *conn)
            .await;
        match unlocked {
            Ok(true) => Ok(()),
            Ok(false) => {
                conn.close().await?;
                Err(sqlx::Error::Protocol(
                    "pg_advisory_unlock: this session did not hold the lock".into(),
                ))
            }
            Err(e) => {
                conn.close_on_drop();
                Err(e)
            }
        }
    }
}

impl Drop for JobLock {
    /// A lock dropped without [`JobLock::release`] (its task was aborted) ends its session, which frees
    /// the job.
    fn drop(&mut self) {
        if let Some(conn) = self.conn.as_mut() {
            conn.close_on_drop();
        }
    }
}

/// The high half of every run-lock key: `WFRU` in ASCII. Job lock keys are FNV hashes, so a clash with
/// one of them is a 2^-32 chance per job, and the test below pins that it does not happen for ours.
const RUN_KEYS: i64 = 0x5746_5255 << 32;

/// The run lock of `job_runs` row `id`: [`RUN_KEYS`] with the id's low 32 bits. Two rows share a key
/// only when their ids are 2^32 apart, and both would have to be `running` at once.
fn run_key(id: i64) -> i64 {
    RUN_KEYS | (id & 0xffff_ffff)
}

/// Inserts a `running` row and takes its run lock in one statement: the row becomes visible to other
/// sessions only when the statement commits, by which time its lock is held, so no other start can
/// mistake a starting run for a dead one.
const START: &str = r#"WITH r AS (
        INSERT INTO job_runs (job, "trigger", started_at, status) VALUES ($1, $2, $3, 'running')
        RETURNING id)
    SELECT id, pg_try_advisory_lock($4::bigint | (id & 4294967295)) FROM r"#;

/// A `job_runs` row held `running` by a live process: the run's lock, on a session of its own, for as
/// long as the run goes. If the process dies (even by SIGKILL), the server ends the session and frees
/// the lock, and the next start of the job sees the row's lock free and closes it as abandoned
/// ([`super::close_dead`]).
///
/// The lock says nothing once its session is lost under a live run (a PostgreSQL restart): a start in
/// that window closes the live run's row, and the live run's own close then overwrites it with the
/// run's real outcome.
#[derive(Debug)]
pub struct RunLease {
    /// The session holding the run lock; `None` once released.
    conn: Option<PoolConnection<Postgres>>,
    /// The row.
    id: i64,
}

impl RunLease {
    /// Inserts a `running` row of `job` and holds its run lock.
    pub async fn start(
        db: &DatabaseConnection,
        job: JobName,
        trigger: super::Trigger,
    ) -> Result<Self, sqlx::Error> {
        let mut conn = db.get_postgres_connection_pool().acquire().await?;
        let started = sqlx::query_as::<_, (i64, bool)>(START)
            .bind(job.as_str())
            .bind(trigger.as_str())
            .bind(chrono::Utc::now())
            .bind(RUN_KEYS)
            .fetch_one(&mut *conn)
            .await;
        match started {
            Ok((id, true)) => Ok(Self { conn: Some(conn), id }),
            Ok((id, false)) => {
                // Only another row 2^32 ids away could hold it. The row stays without a holder, and
                // will be closed as abandoned by the next start; this run does not go ahead.
                conn.close().await?;
                Err(sqlx::Error::Protocol(format!(
                    "the run lock of job_runs row {id} is taken"
                )))
            }
            Err(e) => {
                conn.close_on_drop();
                Err(e)
            }
        }
    }

    /// The row's id.
    pub fn run_id(&self) -> i64 {
        self.id
    }

    /// Lets the run lock go (after the row was closed). A session that cannot confirm the unlock is
    /// closed, which frees the lock too.
    pub async fn release(mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        let unlocked = sqlx::query_scalar::<_, bool>("SELECT pg_advisory_unlock($1)")
            .bind(run_key(self.id))
            .fetch_one(&mut *conn)
            .await;
        if !matches!(unlocked, Ok(true)) {
            conn.close_on_drop();
        }
    }
}

impl Drop for RunLease {
    /// A lease dropped without [`RunLease::release`] ends its session, which frees the lock.
    fn drop(&mut self) {
        if let Some(conn) = self.conn.as_mut() {
            conn.close_on_drop();
        }
    }
}

/// The `running` rows of `job` whose run locks are free: their processes are gone. Each lock is
/// probed by taking it and letting it go at once, on a session of its own.
pub(crate) async fn dead_runs(db: &DatabaseConnection, job: JobName) -> Result<Vec<i64>, sqlx::Error> {
    let pool = db.get_postgres_connection_pool();
    let running: Vec<i64> =
        sqlx::query_scalar("SELECT id FROM job_runs WHERE job = $1 AND status = 'running'")
            .bind(job.as_str())
            .fetch_all(pool)
            .await?;
    if running.is_empty() {
        return Ok(running);
    }
    let mut conn = pool.acquire().await?;
    let mut dead = Vec::new();
    for id in running {
        let probe = sqlx::query_scalar::<_, bool>(
            "SELECT CASE WHEN pg_try_advisory_lock($1) THEN pg_advisory_unlock($1) ELSE false END",
        )
        .bind(run_key(id))
        .fetch_one(&mut *conn)
        .await;
        match probe {
            Ok(true) => dead.push(id),
            Ok(false) => {}
            Err(e) => {
                // Whether the probe left the lock taken is unknown: end the session to be sure.
                conn.close_on_drop();
                return Err(e);
            }
        }
    }
    Ok(dead)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_pinned() {
        // Values computed independently (FNV-1a 64 of "weatherflow:<job>", as signed). Changing the
        // derivation would let an old and a new replica run the same job at the same time.
        assert_eq!(lock_key(JobName::Fetch), -8_803_945_616_327_527_799);
        assert_eq!(lock_key(JobName::Analytics), -1_410_845_777_585_713_715);
    }

    #[test]
    fn run_keys_never_meet_job_keys() {
        for job in JobName::ALL {
            assert_ne!(lock_key(*job) >> 32, RUN_KEYS >> 32, "{job}");
        }
        assert_eq!(run_key(7), 0x5746_5255_0000_0007);
        assert_eq!(run_key(7 + (1 << 32)), run_key(7));
    }
}
