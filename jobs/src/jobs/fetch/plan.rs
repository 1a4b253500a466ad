//! How each source's locations become messages: the API plan (single or bulk requests with bounded
//! concurrency) and the simulated plan (one observation per location and fetch time).

use chrono::{DateTime, Utc};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::simulate;
use super::sink::Sink;
use super::summary::LocationOutcome;
use super::weatherapi::{ApiError, ApiErrorAction, Current, WeatherApi};
use crate::envelope::{self, Envelope, Source};

/// One run's plan for the API source.
pub(crate) struct Plan<'a> {
    pub(crate) api: &'a WeatherApi,
    pub(crate) locations: &'a [String],
    pub(crate) bulk: bool,
    /// Locations per bulk request.
    pub(crate) batch: usize,
    /// Requests in flight.
    pub(crate) concurrency: usize,
    /// Signalled once the topic is known to exist. The first wave of requests (`concurrency` of them)
    /// goes out before; the rest wait for it, so a broker that is down costs one wave of quota.
    pub(crate) topic_ready: &'a CancellationToken,
}

impl Plan<'_> {
    /// Fetches every location and hands each answer to `sink` as it arrives. Returns the fatal error
    /// that stopped the run early, if any; requests still in flight then are dropped.
    pub(crate) async fn fetch_all(
        &self,
        shutdown: &CancellationToken,
        sink: &mut Sink,
        outcomes: &mut [LocationOutcome],
    ) -> Option<ApiError> {
        let indices: Vec<usize> = (0..self.locations.len()).collect();
        let units: Vec<Vec<usize>> = if self.bulk {
            indices.chunks(self.batch).map(<[usize]>::to_vec).collect()
        } else {
            indices.into_iter().map(|i| vec![i]).collect()
        };
        // A shutdown stops new units from starting; the ones in flight finish.
        let answers = futures::stream::iter(units)
            .take_until(shutdown.cancelled())
            .enumerate()
            .map(|(n, unit)| self.fetch_unit(n, unit, shutdown))
            .buffer_unordered(self.concurrency);
        let mut answers = std::pin::pin!(answers);
        while let Some((results, attempts)) = answers.next().await {
            let results = match results {
                Ok(results) => results,
                Err((unit, e)) => {
                    for i in unit {
                        outcomes[i].failed(e.to_string(), attempts);
                    }
                    if e.class() == ApiErrorAction::Fatal {
                        return Some(e);
                    }
                    continue;
                }
            };
            let mut fatal = None;
            for (i, result) in results {
                match result {
                    Ok(current) => {
                        sink.send_current(i, &self.locations[i], current, attempts, outcomes)
                            .await
                    }
                    Err(e) => {
                        outcomes[i].failed(e.to_string(), attempts);
                        if e.class() == ApiErrorAction::Fatal {
                            fatal = Some(e);
                        }
                    }
                }
            }
            if fatal.is_some() {
                return fatal;
            }
        }
        None
    }

    /// One request (single or bulk): each location's result, or the error that failed the whole
    /// request with the locations it held; and the attempts it took.
    async fn fetch_unit(
        &self,
        n: usize,
        unit: Vec<usize>,
        shutdown: &CancellationToken,
    ) -> (UnitResult, u32) {
        if n >= self.concurrency {
            tokio::select! {
                biased;
                _ = self.topic_ready.cancelled() => {}
                // Stopped before asking: its locations stay skipped.
                _ = shutdown.cancelled() => return (Ok(Vec::new()), 0),
            }
        }
        if let [i] = unit[..]
            && !self.bulk
        {
            let answer = self.api.current(&self.locations[i], shutdown).await;
            return (Ok(vec![(i, answer.result)]), answer.attempts);
        }
        let queries: Vec<String> = unit.iter().map(|&i| self.locations[i].clone()).collect();
        let answer = self.api.current_bulk(&queries, shutdown).await;
        let results = match answer.result {
            Ok(per_location) => Ok(unit.into_iter().zip(per_location).collect()),
            Err(e) => Err((unit, e)),
        };
        (results, answer.attempts)
    }
}

/// Per-location results of one request, or the error that failed all its locations.
type UnitResult = Result<Vec<(usize, Result<Current, ApiError>)>, (Vec<usize>, ApiError)>;

/// The fetch times a simulated run reports: `now`, preceded by one per observation interval over
/// the last `backfill_hours`, oldest first.
pub(crate) fn simulated_times(now: DateTime<Utc>, backfill_hours: u32) -> Vec<DateTime<Utc>> {
    let step = simulate::OBSERVATION_INTERVAL_SECS;
    let steps = i64::from(backfill_hours) * 3600 / step;
    (0..=steps)
        .rev()
        .map(|k| now - chrono::Duration::seconds(k * step))
        .collect()
}

/// Produces a simulated observation for each location at each of `times`.
pub(crate) async fn simulate_all(
    locations: &[String],
    times: &[DateTime<Utc>],
    seed: u64,
    sink: &mut Sink,
    outcomes: &mut [LocationOutcome],
) {
    let now = Utc::now();
    for (i, q) in locations.iter().enumerate() {
        for at in times {
            simulate_one(i, q, *at, now, seed, sink, outcomes).await;
        }
    }
}

/// Produces one simulated observation of location `i` for a fetch at `at`.
async fn simulate_one(
    i: usize,
    q: &str,
    at: DateTime<Utc>,
    now: DateTime<Utc>,
    seed: u64,
    sink: &mut Sink,
    outcomes: &mut [LocationOutcome],
) {
    let place = simulate::place(q);
    let key = envelope::location_key(&place.name, &place.region, &place.country);
    let body = simulate::payload(q, at, seed);
    let envelope = match serde_json::value::RawValue::from_string(body) {
        Ok(payload) => Envelope::new(Source::Simulated, now, q, payload),
        Err(e) => {
            outcomes[i].failed(format!("simulator produced invalid JSON: {e}"), 0);
            return;
        }
    };
    sink.send(i, key, &envelope, 0, outcomes).await;
}
