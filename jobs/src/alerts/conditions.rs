//! The conditions alerts are raised on. Each is one function from shared state (PostgreSQL, the
//! broker's committed offsets) to [`Finding`]s: for a subject, the condition holds ([`Verdict::Firing`],
//! with how long it must hold before it is announced) or it does not ([`Verdict::Clear`]). A condition
//! that cannot be judged now (the broker does not answer) returns no finding for it, which leaves its
//! incident as it is. Adding a condition is a [`Kind`] variant and its function, called from
//! [`super::evaluate`] (this file's, or `operating.rs`'s).

use std::time::Duration;

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr, Statement};
use serde_json::json;

use crate::config::{AlertsConfig, Config, KafkaConfig};
use crate::runs::{self, JobName, RunStatus};

/// A condition's name: `alert_incidents.kind` and the body's `kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A run of a job failed after its retries; cleared by the job's next success.
    RunFailed,
    /// The persist consumer group's lag stayed above `alerts.lag_max_records`.
    ConsumerLag,
    /// The database refused the persist writers' inserts for `alerts.outage_for_secs`.
    DatabaseOutage,
    /// More than `alerts.quarantine_max_ratio` of the recent records were quarantined.
    QuarantineRate,
    /// The scheduler paused a job after `pause_after_failures` failed runs in a row.
    AutoPaused,
    /// The analytics window's newest observation is older than `analytics.max_staleness_secs`.
    StaleData,
    /// This month's WeatherAPI calls reached `alerts.quota_alert_ratio` of the budget.
    ApiQuota,
}

impl Kind {
    /// Every condition, in the order they are evaluated.
    pub const ALL: [Kind; 7] = [
        Kind::RunFailed,
        Kind::ConsumerLag,
        Kind::DatabaseOutage,
        Kind::QuarantineRate,
        Kind::AutoPaused,
        Kind::StaleData,
        Kind::ApiQuota,
    ];

    /// The stored and sent name.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::RunFailed => "run_failed",
            Kind::ConsumerLag => "consumer_lag",
            Kind::DatabaseOutage => "database_outage",
            Kind::QuarantineRate => "quarantine_rate",
            Kind::AutoPaused => "job_auto_paused",
            Kind::StaleData => "data_not_fresh",
            Kind::ApiQuota => "api_quota",
        }
    }

    /// The kind named `name` in `alert_incidents.kind`.
    pub fn parse(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

/// The run a message is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunFacts {
    /// Its job.
    pub job: JobName,
    /// Its `job_runs` id.
    pub run_id: i64,
    /// Its status.
    pub status: RunStatus,
    /// Its error, when it failed.
    pub error: Option<String>,
}

/// One condition's judgement of one subject.
#[derive(Debug, Clone)]
pub struct Finding {
    /// The condition.
    pub kind: Kind,
    /// What it is about (a job, the consumer group, `database`).
    pub subject: String,
    /// Whether it holds.
    pub verdict: Verdict,
}

/// Whether a condition holds for a subject.
#[derive(Debug, Clone)]
pub enum Verdict {
    /// It holds.
    Firing {
        /// The alert's line.
        summary: String,
        /// How long it must hold before it is announced (zero: at once).
        hold: Duration,
        /// The run it is about, if any.
        run: Option<RunFacts>,
        /// Its figures, for the body's `details`.
        details: serde_json::Value,
    },
    /// It does not.
    Clear {
        /// The resolved message's line, when the condition has something to say (the run that
        /// succeeded); else a generic one.
        summary: Option<String>,
        /// The run that cleared it, if any.
        run: Option<RunFacts>,
    },
}

impl Verdict {
    fn clear() -> Self {
        Verdict::Clear {
            summary: None,
            run: None,
        }
    }
}

/// What the conditions read.
pub struct Inputs<'a> {
    /// The shared state.
    pub db: &'a DatabaseConnection,
    /// Thresholds.
    pub alerts: &'a AlertsConfig,
    /// Where the consumer group's offsets are.
    pub kafka: &'a KafkaConfig,
    /// The rest of the configuration (the freshness bound, the API budget).
    pub config: &'a Config,
}

fn stmt(sql: &str, values: Vec<sea_orm::Value>) -> Statement {
    Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
}

/// Per job, its latest decisive run: a success clears, a failure the executor marked final
/// (`details.final`: retries used up, or an error retrying would repeat) or a run closed as
/// abandoned fires. Failed attempts that will be retried, skipped ticks and running rows decide
/// nothing. One index walk per job (`job_runs_job_started_at_idx`), not a scan of the history.
pub(super) async fn run_failed(inputs: &Inputs<'_>) -> Result<Vec<Finding>, DbErr> {
    let jobs: Vec<String> = JobName::ALL.iter().map(|j| j.as_str().to_owned()).collect();
    let rows = inputs
        .db
        .query_all_raw(stmt(
            r#"SELECT j.job, r.id, r.status, r.error
               FROM unnest($1::text[]) AS j(job)
               CROSS JOIN LATERAL (
                   SELECT id, status, error FROM job_runs
                   WHERE job_runs.job = j.job
                     AND (status = 'succeeded'
                          OR (status = 'failed' AND (details->>'final' = 'true' OR error = $2)))
                   ORDER BY started_at DESC, id DESC LIMIT 1
               ) r"#,
            vec![jobs.into(), runs::ABANDONED.into()],
        ))
        .await?;
    let mut out = Vec::new();
    for row in rows {
        let job: String = row.try_get_by_index(0)?;
        let Ok(job) = job.parse::<JobName>() else {
            continue;
        };
        let run_id: i64 = row.try_get_by_index(1)?;
        let status: String = row.try_get_by_index(2)?;
        let error: Option<String> = row.try_get_by_index(3)?;
        let failed = status == RunStatus::Failed.as_str();
        let run = RunFacts {
            job,
            run_id,
            status: if failed { RunStatus::Failed } else { RunStatus::Succeeded },
            error: error.clone(),
        };
        let verdict = if failed {
            Verdict::Firing {
                summary: format!(
                    "{job} failed after its retries (run {run_id}): {}",
                    error.as_deref().unwrap_or("no error recorded")
                ),
                hold: Duration::ZERO,
                run: Some(run),
                details: json!({}),
            }
        } else {
            Verdict::Clear {
                summary: Some(format!("{job} succeeded again (run {run_id})")),
                run: Some(run),
            }
        };
        out.push(Finding {
            kind: Kind::RunFailed,
            subject: job.as_str().to_owned(),
            verdict,
        });
    }
    Ok(out)
}

/// The persist group's total lag against `alerts.lag_max_records`. No finding when the threshold is
/// unset, the topic does not exist yet, or the broker does not answer (logged).
pub(super) async fn consumer_lag(inputs: &Inputs<'_>) -> Vec<Finding> {
    let Some(max) = inputs.alerts.lag_max_records else {
        return Vec::new();
    };
    let kafka = inputs.kafka.clone();
    let read = tokio::task::spawn_blocking(move || crate::kafka::consumer_lag(&kafka)).await;
    let parts = match read {
        Ok(Ok(Some(parts))) => parts,
        Ok(Ok(None)) => return Vec::new(),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "alerts: cannot read the consumer lag; lag not judged this time");
            return Vec::new();
        }
        Err(e) => {
            tracing::warn!(error = %e, "alerts: the lag probe panicked");
            return Vec::new();
        }
    };
    let total: i64 = parts.iter().map(|p| p.lag()).sum();
    let group = &inputs.kafka.consumer_group;
    let verdict = if total > i64::try_from(max).unwrap_or(i64::MAX) {
        let hold = Duration::from_secs(inputs.alerts.lag_for_secs);
        Verdict::Firing {
            summary: format!(
                "consumer group {group} lags {total} records behind {} (bound {max}, for more than {} s)",
                inputs.kafka.observations_topic,
                hold.as_secs()
            ),
            hold,
            run: None,
            details: json!({"lag": total, "max_records": max, "topic": inputs.kafka.observations_topic}),
        }
    } else {
        Verdict::Clear {
            summary: Some(format!("consumer group {group} lags {total} records (bound {max})")),
            run: None,
        }
    };
    vec![Finding {
        kind: Kind::ConsumerLag,
        subject: group.clone(),
        verdict,
    }]
}

/// The database refusing the persist writers' inserts (`db::refusals`, as the server sees it), or
/// this process's own writers waiting out a database outage (`outages`, when the consumer runs here).
pub(super) async fn database_outage(inputs: &Inputs<'_>) -> Result<Vec<Finding>, DbErr> {
    let mut reasons = crate::db::write_refusals(inputs.db).await?;
    reasons.extend(crate::outages::database_outage());
    let verdict = if reasons.is_empty() {
        Verdict::clear()
    } else {
        let hold = Duration::from_secs(inputs.alerts.outage_for_secs);
        Verdict::Firing {
            summary: format!(
                "the database has refused the persist writers for more than {} s: {}",
                hold.as_secs(),
                reasons.join("; ")
            ),
            hold,
            run: None,
            details: json!({"reasons": reasons}),
        }
    };
    Ok(vec![Finding {
        kind: Kind::DatabaseOutage,
        subject: "database".to_owned(),
        verdict,
    }])
}

/// Quarantined against stored records of the last `alerts.quarantine_window_secs`. Stored records are
/// counted by `ingested_at` among those observed within the window plus a day, so the count walks
/// `observations_observed_at_idx` over recent partitions instead of scanning the table (a history
/// backfill's old observations are not counted).
pub(super) async fn quarantine_rate(inputs: &Inputs<'_>) -> Result<Vec<Finding>, DbErr> {
    let Some(max) = inputs.alerts.quarantine_max_ratio else {
        return Ok(Vec::new());
    };
    let window = inputs.alerts.quarantine_window_secs as f64;
    let row = inputs
        .db
        .query_one_raw(stmt(
            r#"SELECT
                 (SELECT count(*) FROM rejected_records
                  WHERE received_at > now() - make_interval(secs => $1)),
                 (SELECT count(*) FROM observations
                  WHERE observed_at > now() - make_interval(secs => $1) - interval '1 day'
                    AND ingested_at > now() - make_interval(secs => $1))"#,
            vec![window.into()],
        ))
        .await?;
    let Some(row) = row else {
        return Ok(Vec::new());
    };
    let rejected: i64 = row.try_get_by_index(0)?;
    let stored: i64 = row.try_get_by_index(1)?;
    let total = rejected + stored;
    let subject = "rejected_records".to_owned();
    if total < i64::try_from(inputs.alerts.quarantine_min_records).unwrap_or(i64::MAX) {
        // Too few records to judge: an open incident stays open until enough records say otherwise.
        return Ok(Vec::new());
    }
    let ratio = rejected as f64 / total as f64;
    let verdict = if ratio > max {
        Verdict::Firing {
            summary: format!(
                "{rejected} of {total} records ({:.1} %) were quarantined in the last {} s (bound {:.1} %)",
                ratio * 100.0,
                window,
                max * 100.0
            ),
            hold: Duration::ZERO,
            run: None,
            details: json!({"rejected": rejected, "total": total, "ratio": ratio, "max_ratio": max}),
        }
    } else {
        Verdict::Clear {
            summary: Some(format!(
                "{rejected} of {total} records ({:.1} %) quarantined in the last {} s",
                ratio * 100.0,
                window
            )),
            run: None,
        }
    };
    Ok(vec![Finding {
        kind: Kind::QuarantineRate,
        subject,
        verdict,
    }])
}
