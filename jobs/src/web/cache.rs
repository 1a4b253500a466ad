//! Rendered answers kept in memory. Results and run history change only when a run writes, so they
//! are kept until then; answers that follow the stream (status, latest observations) for a short TTL.
//!
//! "When a run writes" is seen in two ways: a run this process started ends (it calls
//! [`ResponseCache::invalidate`] at once), and [`watch`] polls a tiny version of the written tables
//! every second, so runs of the scheduler in another process invalidate within a second. No request
//! ever waits for that check. A cached `/api/v1/results` answers tens of thousands of requests a
//! second on two cores (`weatherflow bench web`, docs/performance.md).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};
use tokio_util::sync::CancellationToken;

/// Entries kept per route (the key's part before `?`). A full route drops its oldest entry, so no
/// client can flush the cache of another route, or the whole cache, by sending many distinct query
/// strings: the keys are built from the parsed parameters (see `web::api`), and a route holds at most
/// this many of them.
pub const PER_ROUTE: usize = 256;

/// How long an answer that only a write changes is kept at most (a safety net for writes the version
/// poll cannot see, such as rows deleted by hand).
pub const UNTIL_WRITE: Duration = Duration::from_secs(300);

/// One cached answer.
#[derive(Debug, Clone)]
struct Entry {
    /// The cache generation it was made in; a newer generation means a write happened since.
    generation: u64,
    /// When it was made.
    made: Instant,
    /// The response body.
    body: Bytes,
}

/// The cache: rendered bodies by request key, valid for one generation.
#[derive(Debug, Default)]
pub struct ResponseCache {
    /// Bumped on every write seen.
    generation: AtomicU64,
    /// Rendered bodies by key (path and query).
    entries: Mutex<HashMap<String, Entry>>,
    /// One lock per key being computed, so that when an answer expires under load one request
    /// computes it and the others wait for it. Without it 200 connections missing at once took
    /// 200 database queries against a pool of 10, and some timed out (`weatherflow bench web`).
    filling: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl ResponseCache {
    /// The body cached under `key`, if it is from this generation and younger than `ttl`.
    pub fn get(&self, key: &str, ttl: Duration) -> Option<Bytes> {
        let generation = self.generation.load(Ordering::Acquire);
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let e = entries.get(key)?;
        (e.generation == generation && e.made.elapsed() < ttl).then(|| e.body.clone())
    }

    /// The current generation, to be taken before computing an answer and passed to [`Self::put`].
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Keeps `body` under `key`, unless a write happened since `generation` was taken (then the body
    /// may hold data older than the write, and is not kept).
    pub fn put(&self, key: &str, generation: u64, body: Bytes) {
        if self.generation() != generation {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if !entries.contains_key(key) {
            let route = route_of(key);
            let mut same: Vec<(&String, Instant)> = entries
                .iter()
                .filter(|(k, _)| route_of(k) == route)
                .map(|(k, e)| (k, e.made))
                .collect();
            if same.len() >= PER_ROUTE {
                same.sort_by_key(|(_, made)| *made);
                let drop: Vec<String> = same[..=same.len() - PER_ROUTE]
                    .iter()
                    .map(|(k, _)| (*k).clone())
                    .collect();
                for k in drop {
                    entries.remove(&k);
                }
            }
        }
        entries.insert(
            key.to_owned(),
            Entry {
                generation,
                made: Instant::now(),
                body,
            },
        );
    }

    /// The body under `key`, computed by `make` (once, however many requests ask at the same time)
    /// when the cache holds none younger than `ttl`.
    pub async fn get_or_fill<F, Fut, E>(&self, key: &str, ttl: Duration, make: F) -> Result<Bytes, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Bytes, E>>,
    {
        if let Some(body) = self.get(key, ttl) {
            return Ok(body);
        }
        let lock = {
            let mut filling = self.filling.lock().unwrap_or_else(|p| p.into_inner());
            filling.entry(key.to_owned()).or_default().clone()
        };
        let answer = {
            let _turn = lock.lock().await;
            match self.get(key, ttl) {
                Some(body) => Ok(body),
                None => {
                    let generation = self.generation();
                    let made = make().await;
                    if let Ok(body) = &made {
                        self.put(key, generation, body.clone());
                    }
                    made
                }
            }
        };
        // The last one out removes the key's turn, so the map holds only fills in progress.
        let mut filling = self.filling.lock().unwrap_or_else(|p| p.into_inner());
        if Arc::strong_count(&lock) == 2 {
            filling.remove(key);
        }
        answer
    }

    /// Drops everything: a run wrote.
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

/// A fingerprint of what runs write: the newest result, the newest run, and the last finish time
/// among the latest runs (a run's end changes its row, not the maximum id). Three index lookups.
const VERSION_SQL: &str = "\
SELECT (SELECT coalesce(max(id), 0) FROM regression_results)::text || '/' ||
       (SELECT coalesce(max(id), 0) FROM job_runs)::text || '/' ||
       coalesce((SELECT max(finished_at) FROM job_runs
                 WHERE id > (SELECT coalesce(max(id), 0) - 100 FROM job_runs))::text, '-')";

/// Polls the version every second until `shutdown`, invalidating `cache` when it changes.
pub async fn watch(
    db: DatabaseConnection,
    cache: std::sync::Arc<ResponseCache>,
    shutdown: CancellationToken,
) {
    let mut last: Option<String> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {},
            _ = shutdown.cancelled() => return,
        }
        let row = db
            .query_one_raw(Statement::from_string(DbBackend::Postgres, VERSION_SQL))
            .await;
        let version = match row.map(|r| r.map(|r| r.try_get_by_index::<String>(0))) {
            Ok(Some(Ok(v))) => v,
            Ok(_) => continue,
            Err(e) => {
                tracing::debug!(error = %e, "cache version check failed");
                continue;
            }
        };
        if last.as_ref().is_some_and(|l| *l != version) {
            tracing::debug!(%version, "runs wrote; cache invalidated");
            cache.invalidate();
        }
        last = Some(version);
    }
}

/// The route part of a cache key: `results` of `results?last=5`.
fn route_of(key: &str) -> &str {
    key.split_once('?').map_or(key, |(route, _)| route)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn many_keys_on_one_route_never_evict_another_route() {
        let c = ResponseCache::default();
        c.put("status", c.generation(), Bytes::from_static(b"s"));
        for i in 0..5 * PER_ROUTE {
            c.put(
                &format!("results?last={i}"),
                c.generation(),
                Bytes::from_static(b"r"),
            );
        }
        assert_eq!(c.get("status", UNTIL_WRITE).as_deref(), Some(&b"s"[..]));
        let entries = c.entries.lock().unwrap();
        assert_eq!(entries.len(), PER_ROUTE + 1);
        // The newest stay.
        assert!(entries.contains_key(&format!("results?last={}", 5 * PER_ROUTE - 1)));
        assert!(!entries.contains_key("results?last=0"));
    }

    #[tokio::test]
    async fn fills_leave_no_turn_behind() {
        let c = ResponseCache::default();
        for i in 0..100 {
            let body = c
                .get_or_fill(&format!("runs?last={i}"), UNTIL_WRITE, || async {
                    Ok::<_, ()>(Bytes::from_static(b"x"))
                })
                .await;
            assert!(body.is_ok());
        }
        assert!(c.filling.lock().unwrap().is_empty());
    }

    #[test]
    fn a_write_between_compute_and_put_discards_the_answer() {
        let c = ResponseCache::default();
        let g = c.generation();
        c.put("a", g, Bytes::from_static(b"1"));
        assert_eq!(c.get("a", UNTIL_WRITE).as_deref(), Some(&b"1"[..]));
        let g = c.generation();
        c.invalidate();
        assert!(c.get("a", UNTIL_WRITE).is_none());
        c.put("a", g, Bytes::from_static(b"stale"));
        assert!(c.get("a", UNTIL_WRITE).is_none());
    }

    #[test]
    fn ttl_expires() {
        let c = ResponseCache::default();
        c.put("a", c.generation(), Bytes::from_static(b"1"));
        assert!(c.get("a", Duration::ZERO).is_none());
    }
}
