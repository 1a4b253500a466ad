//! Token-bucket rate limiting of outgoing API requests (owned by the fetch job).
//!
//! WeatherAPI publishes no per-second limit, but a run over many locations with retries could still
//! burst hard enough to trip the CDN's throttling (429). Every HTTP attempt, retries included, takes
//! one token first, so the request rate stays at or below `rate_per_sec` after an initial `burst`.

use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

/// A token bucket: holds up to `burst` tokens, refilled at `rate_per_sec`. Waiters reserve a token in
/// arrival order (the bucket may go negative: the debt is the waiting time), so nobody starves.
#[derive(Debug)]
pub struct TokenBucket {
    /// Refill rate in tokens per second; `None` means unlimited.
    rate_per_sec: Option<f64>,
    /// Capacity, at least 1.
    burst: f64,
    /// Tokens now (negative: reserved ahead) and when that was computed.
    state: Mutex<BucketState>,
}

#[derive(Debug)]
struct BucketState {
    tokens: f64,
    updated: Instant,
}

/// A rate or burst that cannot describe a bucket.
#[derive(Debug, thiserror::Error)]
#[error("invalid rate limit: rate_per_sec must be a finite number >= 0 (0 = unlimited), got {0}")]
pub struct InvalidRate(pub f64);

impl TokenBucket {
    /// A full bucket. `rate_per_sec == 0` disables limiting; `burst` below 1 counts as 1.
    pub fn new(rate_per_sec: f64, burst: u32) -> Result<Self, InvalidRate> {
        if !rate_per_sec.is_finite() || rate_per_sec < 0.0 {
            return Err(InvalidRate(rate_per_sec));
        }
        let burst = f64::from(burst.max(1));
        Ok(Self {
            rate_per_sec: (rate_per_sec > 0.0).then_some(rate_per_sec),
            burst,
            state: Mutex::new(BucketState {
                tokens: burst,
                updated: Instant::now(),
            }),
        })
    }

    /// Takes one token, waiting until it is available. Cancel-safe in the sense that matters here: a
    /// dropped waiter's token is simply spent.
    pub async fn acquire(&self) {
        let wait = self.reserve().await;
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// Reserves a token and returns how long the caller must wait before using it.
    async fn reserve(&self) -> Duration {
        let Some(rate) = self.rate_per_sec else {
            return Duration::ZERO;
        };
        let mut s = self.state.lock().await;
        let now = Instant::now();
        let refill = now.duration_since(s.updated).as_secs_f64() * rate;
        s.tokens = (s.tokens + refill).min(self.burst);
        s.updated = now;
        s.tokens -= 1.0;
        if s.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-s.tokens / rate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn burst_then_steady_rate() {
        let bucket = TokenBucket::new(10.0, 3).unwrap();
        let start = Instant::now();
        for _ in 0..3 {
            bucket.acquire().await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO, "the burst is free");
        for _ in 0..10 {
            bucket.acquire().await;
        }
        let elapsed = start.elapsed().as_secs_f64();
        assert!(
            (0.99..=1.01).contains(&elapsed),
            "10 more tokens at 10/s took {elapsed}s"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_waiters_are_spaced() {
        let bucket = std::sync::Arc::new(TokenBucket::new(4.0, 1).unwrap());
        let start = Instant::now();
        let tasks: Vec<_> = (0..5)
            .map(|_| {
                let b = bucket.clone();
                tokio::spawn(async move {
                    b.acquire().await;
                    Instant::now()
                })
            })
            .collect();
        let mut times = Vec::new();
        for t in tasks {
            times.push(t.await.unwrap().duration_since(start).as_secs_f64());
        }
        times.sort_by(f64::total_cmp);
        assert_eq!(times[0], 0.0);
        assert!((times[4] - 1.0).abs() < 0.01, "{times:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn zero_rate_is_unlimited_and_bad_rates_are_refused() {
        let bucket = TokenBucket::new(0.0, 1).unwrap();
        let start = Instant::now();
        for _ in 0..1000 {
            bucket.acquire().await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert!(TokenBucket::new(-1.0, 1).is_err());
        assert!(TokenBucket::new(f64::NAN, 1).is_err());
    }
}
