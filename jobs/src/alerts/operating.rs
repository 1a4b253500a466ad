//! The conditions on how the platform is operated rather than on one run: a job the scheduler
//! paused after its failures, data too old to publish a fit over, and the WeatherAPI quota nearing
//! its budget. Each reads the same function the faces show (`runs::pause`, the analytics job's
//! freshness, `quota::usage`), so an alert never disagrees with `weatherflow status`.

use std::time::Duration;

use sea_orm::DbErr;
use serde_json::json;

use super::conditions::{Finding, Inputs, Kind, Verdict};
use crate::runs::pause;

/// Per pausable job: firing while the scheduler's auto-pause holds it, clear otherwise (resumed, or
/// paused by a person, which is not an incident).
pub(super) async fn auto_paused(inputs: &Inputs<'_>) -> Result<Vec<Finding>, DbErr> {
    let pauses = pause::all(inputs.db).await?;
    Ok(pause::PAUSABLE
        .iter()
        .map(|&job| {
            let verdict = match pauses.iter().find(|p| p.job == job && p.auto) {
                Some(p) => Verdict::Firing {
                    summary: format!(
                        "{} was {} after failing runs in a row; it stays paused until `weatherflow resume {}`",
                        job.as_str(),
                        p.describe(),
                        job.as_str()
                    ),
                    hold: Duration::ZERO,
                    run: None,
                    details: json!({"paused_at": p.paused_at, "paused_by": p.paused_by, "reason": p.reason}),
                },
                None => Verdict::Clear {
                    summary: Some(format!("{} is no longer auto-paused", job.as_str())),
                    run: None,
                },
            };
            Finding {
                kind: Kind::AutoPaused,
                subject: job.as_str().to_owned(),
                verdict,
            }
        })
        .collect())
}

/// The analytics window's newest observation against `analytics.max_staleness_secs` (0: off). A
/// window with no observation at all says nothing: the nightly run records that skip itself.
pub(super) async fn stale_data(inputs: &Inputs<'_>) -> Result<Vec<Finding>, DbErr> {
    if inputs.config.analytics.max_staleness_secs == 0 {
        return Ok(Vec::new());
    }
    let f = crate::jobs::analytics::freshness::freshness(inputs.db, inputs.config)
        .await
        .map_err(|e| DbErr::Custom(format!("reading the newest observation: {e}")))?;
    if f.newest.is_none() {
        return Ok(Vec::new());
    }
    let verdict = if f.stale() {
        Verdict::Firing {
            summary: format!("data not fresh: {}", f.reason()),
            hold: Duration::ZERO,
            run: None,
            details: f.to_json(),
        }
    } else {
        Verdict::Clear {
            summary: Some(format!("data fresh again: {}", f.reason())),
            run: None,
        }
    };
    Ok(vec![Finding {
        kind: Kind::StaleData,
        subject: format!("observations/{}", f.source.as_str()),
        verdict,
    }])
}

/// This month's WeatherAPI calls at or above `alerts.quota_alert_ratio` of
/// `weatherapi.monthly_call_budget`; nothing to say without a budget.
pub(super) async fn api_quota(inputs: &Inputs<'_>) -> Result<Vec<Finding>, DbErr> {
    let usage = crate::quota::usage(inputs.db, &inputs.config.weatherapi).await?;
    let (Some(budget), Some(fraction)) = (usage.budget, usage.fraction) else {
        return Ok(Vec::new());
    };
    let bound = inputs.alerts.quota_alert_ratio;
    let verdict = if fraction >= bound {
        Verdict::Firing {
            summary: format!(
                "{} of this month's {budget} WeatherAPI calls used ({:.0} %, alert at {:.0} %); {} remain until {}",
                usage.used,
                fraction * 100.0,
                bound * 100.0,
                usage.remaining.unwrap_or(0),
                crate::runs::tick_text(usage.resets_at)
            ),
            hold: Duration::ZERO,
            run: None,
            details: json!({"used": usage.used, "budget": budget, "fraction": fraction,
                            "remaining": usage.remaining, "resets_at": usage.resets_at}),
        }
    } else {
        Verdict::Clear {
            summary: Some(format!(
                "{} of {budget} WeatherAPI calls used ({:.0} %)",
                usage.used,
                fraction * 100.0
            )),
            run: None,
        }
    };
    Ok(vec![Finding {
        kind: Kind::ApiQuota,
        subject: "weatherapi".to_owned(),
        verdict,
    }])
}
