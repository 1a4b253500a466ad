//! One PostgreSQL advisory lock per job, so that a job never runs twice at once — neither within a
//! process nor across replicas of the scheduler.
//!
//! Session-level advisory locks belong to the connection that took them, so the lock is taken on a
//! connection checked out of the pool and kept for the whole run. The connection goes back to the pool
//! only after PostgreSQL confirmed the unlock; in every other case (the unlock failed, or the lock was
//! dropped with its task) the connection is closed instead, because a pooled session still holding the
//! lock would keep the job locked for as long as the pool lives. If the process dies, the server ends
//! the session and the lock goes with it.

use sea_orm::DatabaseConnection;

use super::JobName;
use sqlx::Postgres;
use sqlx::pool::PoolConnection;

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
}
