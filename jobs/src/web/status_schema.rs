//! The body of `GET /api/v1/status`, described for the OpenAPI document ([`super::openapi`]) only:
//! [`super::api::status_value`] builds it as JSON, which the dashboard shares, and the schemathesis
//! stage (`scripts/test-openapi.sh`) checks that the two agree. A field added to the answer is one
//! more field here.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::queries::RunRow;

/// The body of `GET /api/v1/status`.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct StatusBody {
    /// When the answer was computed.
    now: DateTime<Utc>,
    /// Every job, in a fixed order.
    jobs: Vec<JobStatus>,
    /// The persist consumer's lag, from the latest background sample.
    consumer_lag: ConsumerLag,
    /// Row counts per table.
    tables: BTreeMap<String, TableRows>,
    /// This month's WeatherAPI calls, every process's, against `weatherapi.monthly_call_budget`.
    weatherapi_calls: crate::quota::Usage,
    /// The newest observation the nightly fit would use, against `analytics.max_staleness_secs`.
    freshness: Freshness,
}

/// The `freshness` field of `/api/v1/status`: every field but `error` when it was read, only
/// `error` when it could not be.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct Freshness {
    /// The source the fit would use (`weatherapi` or `simulated`).
    source: Option<String>,
    /// Its newest observation in the window; `null` when the window has none.
    newest_observation: Option<DateTime<Utc>>,
    /// That observation's age, in seconds.
    age_secs: Option<u64>,
    /// `analytics.max_staleness_secs` (0: not checked).
    max_staleness_secs: Option<u64>,
    /// Older than the bound: the nightly fit would be skipped (or failed, `analytics.on_stale`).
    stale: Option<bool>,
    /// Records the persist group has still to consume, when known.
    consumer_lag: Option<i64>,
    /// When it was read.
    checked_at: Option<DateTime<Utc>>,
    /// Why it could not be read.
    error: Option<String>,
}

/// One job in `/api/v1/status`.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct JobStatus {
    /// The job's name.
    job: String,
    /// Its latest run; `null` when it never ran.
    last_run: Option<RunRow>,
    /// Its next fire time (RFC 3339, UTC); `null` when not scheduled.
    next_fire: Option<String>,
    /// Whether it runs continuously (persist, as the consumer).
    continuous: bool,
    /// Who paused it, when and why; `null` when it is not paused.
    paused: Option<crate::runs::pause::Pause>,
}

/// The consumer lag in `/api/v1/status`.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct ConsumerLag {
    /// The observations topic.
    topic: String,
    /// The persist consumer's group.
    group: String,
    /// What the latest sample found.
    state: LagState,
    /// When it was taken; `null` before the first.
    sampled_at: Option<DateTime<Utc>>,
    /// Messages still to consume, all partitions.
    total: i64,
    /// Per partition (empty unless `state` is `ok`).
    partitions: Vec<PartitionLagRow>,
    /// Why Kafka could not be read, when `state` is `unreachable`.
    error: Option<String>,
}

/// What a lag sample found.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum LagState {
    /// No sample yet.
    Pending,
    /// The topic does not exist (nothing fetched so far).
    NoTopic,
    /// Kafka did not answer.
    Unreachable,
    /// Sampled.
    Ok,
}

/// One partition's lag.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct PartitionLagRow {
    /// Partition id.
    partition: i32,
    /// The group's committed offset; `null` when it never committed here.
    committed: Option<i64>,
    /// The offset the next message will get.
    end: i64,
    /// Messages still to consume.
    lag: i64,
}

/// One table's row count.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct TableRows {
    /// Rows: exact below a threshold, else the planner's estimate.
    rows: i64,
    /// Whether `rows` is an estimate.
    estimated: bool,
}
