//! The WeatherAPI quota: every call counted per calendar month (UTC) in PostgreSQL (`api_calls`), so
//! that replicas and restarts agree, and the optional `weatherapi.monthly_call_budget` enforced before
//! a run calls.
//!
//! Counting happens *before* calling: a run reserves the calls it plans ([`CallMeter::open`], one
//! upsert), takes from that reservation before each HTTP attempt, reserves again for what it had not
//! planned (retries), and gives back what it did not use when it ends ([`CallMeter::close`]). A crash
//! can leave a reservation counted but never lose a call that was made: the count errs high, never low.
//!
//! [`usage`] is the one read below `weatherflow status`, `/api/v1/status`, the dashboard and the
//! `weatherflow_weatherapi_calls_month` metric, and what an alert at a fraction of the budget reads.

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr, Statement};
use serde::Serialize;
use tokio::sync::Mutex;

use crate::config::WeatherApiConfig;

/// Which WeatherAPI endpoint a call went to; the `api_calls.endpoint` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `GET current.json` for one location.
    Current,
    /// `POST current.json?q=bulk`: one call per location in it, as WeatherAPI bills it.
    Bulk,
    /// `GET history.json` for one location and day.
    History,
}

impl Endpoint {
    /// The value stored in `api_calls.endpoint`.
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Current => "current",
            Endpoint::Bulk => "bulk",
            Endpoint::History => "history",
        }
    }
}

/// The first day of `at`'s month: the `api_calls.month` it is counted in.
pub fn month_of(at: DateTime<Utc>) -> NaiveDate {
    NaiveDate::from_ymd_opt(at.year(), at.month(), 1).expect("the first of a month exists")
}

/// When the month after `at`'s begins (UTC): when a monthly quota resets.
pub fn resets_at(at: DateTime<Utc>) -> DateTime<Utc> {
    let (y, m) = if at.month() == 12 {
        (at.year() + 1, 1)
    } else {
        (at.year(), at.month() + 1)
    };
    Utc.with_ymd_and_hms(y, m, 1, 0, 0, 0)
        .single()
        .expect("midnight UTC is unambiguous")
}

/// This month's calls against the budget (also the `weatherapi_calls` field of `/api/v1/status`,
/// hence its OpenAPI schema).
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Usage {
    /// The first day of the month counted.
    pub month: NaiveDate,
    /// Calls counted this month, every process's (reservations of runs in progress included).
    pub used: u64,
    /// `weatherapi.monthly_call_budget`, when set.
    pub budget: Option<u64>,
    /// `used / budget`, when there is a budget.
    pub fraction: Option<f64>,
    /// Calls left before the budget, when there is one.
    pub remaining: Option<u64>,
    /// When the month, and with it the count, starts again.
    pub resets_at: DateTime<Utc>,
}

/// This month's usage (the read behind every face that shows the quota).
pub async fn usage(db: &DatabaseConnection, cfg: &WeatherApiConfig) -> Result<Usage, DbErr> {
    let now = Utc::now();
    let used = used_in(db, month_of(now)).await?;
    Ok(Usage::new(now, used, cfg.monthly_call_budget))
}

impl Usage {
    fn new(now: DateTime<Utc>, used: u64, budget: Option<u64>) -> Self {
        Usage {
            month: month_of(now),
            used,
            budget,
            fraction: budget.map(|b| if b == 0 { 1.0 } else { used as f64 / b as f64 }),
            remaining: budget.map(|b| b.saturating_sub(used)),
            resets_at: resets_at(now),
        }
    }

    /// `used` of `budget` (`n%`), or `used` alone without a budget: the one-line form `status` shows.
    pub fn line(&self) -> String {
        match (self.budget, self.fraction) {
            (Some(b), Some(f)) => format!(
                "{} of {} calls this month ({:.1}%), resets {}",
                self.used,
                b,
                f * 100.0,
                self.resets_at.format("%Y-%m-%d %H:%M UTC")
            ),
            _ => format!(
                "{} calls this month (no weatherapi.monthly_call_budget), resets {}",
                self.used,
                self.resets_at.format("%Y-%m-%d %H:%M UTC")
            ),
        }
    }
}

async fn used_in(db: &impl ConnectionTrait, month: NaiveDate) -> Result<u64, DbErr> {
    let row = db
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT COALESCE(sum(calls), 0)::int8 FROM api_calls WHERE month = $1",
            [month.into()],
        ))
        .await?;
    let n: i64 = row.map_or(Ok(0), |r| r.try_get_by_index(0))?;
    Ok(n.max(0) as u64)
}

/// Adds `n` (negative: gives back) to `month`'s count of `endpoint`.
async fn add(db: &impl ConnectionTrait, month: NaiveDate, endpoint: Endpoint, n: i64) -> Result<(), DbErr> {
    db.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "INSERT INTO api_calls (month, endpoint, calls) VALUES ($1, $2, GREATEST($3, 0)) \
         ON CONFLICT (month, endpoint) DO UPDATE \
         SET calls = GREATEST(api_calls.calls + $3, 0), updated_at = now()",
        [month.into(), endpoint.as_str().into(), n.into()],
    ))
    .await?;
    Ok(())
}

/// Why calls were not made.
#[derive(Debug, thiserror::Error)]
pub enum QuotaError {
    /// The calls planned (or one more, for a retry) would pass the monthly budget.
    #[error(
        "{needed} WeatherAPI call(s) would pass weatherapi.monthly_call_budget = {budget}: {used} used this month, \
         {remaining} remain; the month resets at {}",
        .resets_at.format("%Y-%m-%d %H:%M UTC")
    )]
    OverBudget {
        /// Calls the run needs.
        needed: u64,
        /// The budget.
        budget: u64,
        /// Calls counted this month.
        used: u64,
        /// Calls left.
        remaining: u64,
        /// When the count starts again.
        resets_at: DateTime<Utc>,
    },
    /// The count could not be read or written; nothing is called uncounted.
    #[error("counting WeatherAPI calls in api_calls: {0}")]
    Db(#[from] DbErr),
}

/// One run's meter: calls are reserved in PostgreSQL before they are made.
pub struct CallMeter {
    db: DatabaseConnection,
    budget: Option<u64>,
    /// (month of the reservation, calls reserved and not yet made), per endpoint in use.
    state: Mutex<Reserved>,
}

#[derive(Default)]
struct Reserved {
    /// The month the open reservation was counted in, and per endpoint the calls left in it.
    month: Option<NaiveDate>,
    left: Vec<(Endpoint, u64)>,
}

impl std::fmt::Debug for CallMeter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallMeter").field("budget", &self.budget).finish_non_exhaustive()
    }
}

impl CallMeter {
    /// Opens a meter for a run that plans `planned` calls to `endpoint`: fails before any call when
    /// they would pass the budget, else counts them at once.
    pub async fn open(
        db: &DatabaseConnection,
        cfg: &WeatherApiConfig,
        endpoint: Endpoint,
        planned: u64,
    ) -> Result<Self, QuotaError> {
        let meter = CallMeter {
            db: db.clone(),
            budget: cfg.monthly_call_budget,
            state: Mutex::new(Reserved::default()),
        };
        meter.reserve(endpoint, planned).await?;
        Ok(meter)
    }

    /// Takes `n` calls to `endpoint` from the reservation, reserving more first when it is short.
    pub async fn take(&self, endpoint: Endpoint, n: u64) -> Result<(), QuotaError> {
        {
            let mut state = self.state.lock().await;
            let month = month_of(Utc::now());
            if state.month == Some(month)
                && let Some((_, left)) = state.left.iter_mut().find(|(e, l)| *e == endpoint && *l >= n)
            {
                *left -= n;
                return Ok(());
            }
        }
        self.reserve(endpoint, n).await?;
        let mut state = self.state.lock().await;
        if let Some((_, left)) = state.left.iter_mut().find(|(e, _)| *e == endpoint) {
            *left = left.saturating_sub(n);
        }
        Ok(())
    }

    /// Counts `n` more calls to `endpoint`, refused when they would pass the budget. The check and the
    /// increment are one transaction under a lock on the month, so two processes cannot both take the
    /// last calls.
    async fn reserve(&self, endpoint: Endpoint, n: u64) -> Result<(), QuotaError> {
        if n == 0 {
            return Ok(());
        }
        let now = Utc::now();
        let month = month_of(now);
        let txn = sea_orm::TransactionTrait::begin(&self.db).await?;
        // One advisory lock per month serialises check-then-add across processes.
        txn.execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT pg_advisory_xact_lock(hashtext('weatherflow.api_calls'), $1)",
            [(month.year() * 12 + month.month() as i32).into()],
        ))
        .await?;
        if let Some(budget) = self.budget {
            let used = used_in(&txn, month).await?;
            if used + n > budget {
                return Err(QuotaError::OverBudget {
                    needed: n,
                    budget,
                    used,
                    remaining: budget.saturating_sub(used),
                    resets_at: resets_at(now),
                });
            }
        }
        add(&txn, month, endpoint, n as i64).await?;
        txn.commit().await?;
        let mut state = self.state.lock().await;
        if state.month != Some(month) {
            // A new month: what was reserved in the old one stays counted there (it was reserved).
            state.month = Some(month);
            state.left.clear();
        }
        match state.left.iter_mut().find(|(e, _)| *e == endpoint) {
            Some((_, left)) => *left += n,
            None => state.left.push((endpoint, n)),
        }
        Ok(())
    }

    /// Gives back the calls reserved and not made; the count is then exactly the calls made.
    pub async fn close(self) -> Result<(), DbErr> {
        let state = self.state.into_inner();
        let Some(month) = state.month else {
            return Ok(());
        };
        for (endpoint, left) in state.left {
            if left > 0 {
                add(&self.db, month, endpoint, -(left as i64)).await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_reset_at_the_first_midnight_utc() {
        let at = Utc.with_ymd_and_hms(2026, 12, 7, 15, 0, 0).unwrap();
        assert_eq!(month_of(at), NaiveDate::from_ymd_opt(2026, 12, 1).unwrap());
        assert_eq!(resets_at(at), Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap());
        let feb = Utc.with_ymd_and_hms(2028, 2, 29, 23, 59, 59).unwrap();
        assert_eq!(resets_at(feb), Utc.with_ymd_and_hms(2028, 3, 1, 0, 0, 0).unwrap());
    }

    #[test]
    fn usage_reports_the_fraction_and_what_remains() {
        let at = Utc.with_ymd_and_hms(2026, 12, 7, 15, 0, 0).unwrap();
        let u = Usage::new(at, 80, Some(100));
        assert_eq!((u.fraction, u.remaining), (Some(0.8), Some(20)));
        assert!(u.line().contains("80 of 100 calls this month (80.0%)"), "{}", u.line());
        let over = Usage::new(at, 120, Some(100));
        assert_eq!(over.remaining, Some(0));
        let none = Usage::new(at, 5, None);
        assert_eq!((none.fraction, none.remaining), (None, None));
    }
}
