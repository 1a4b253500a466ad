//! `job_runs`: the history of every job run, scheduled or manual.

use sea_orm::entity::prelude::*;

/// One run of one job.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "job_runs")]
pub struct Model {
    /// Surrogate key.
    #[sea_orm(primary_key)]
    pub id: i64,
    /// Which job ran.
    pub job: JobName,
    /// Why it ran.
    pub trigger: Trigger,
    /// Start time.
    pub started_at: DateTimeUtc,
    /// End time; `None` while running.
    pub finished_at: Option<DateTimeUtc>,
    /// Where the run is, or how it ended.
    pub status: RunStatus,
    /// Records read.
    pub records_in: Option<i64>,
    /// Records written.
    pub records_out: Option<i64>,
    /// Error message of a failed run.
    pub error: Option<String>,
    /// Job-specific summary (fetch: per-location outcomes).
    pub details: Option<Json>,
}

/// The jobs weatherflow runs. The stored text is also what the job's advisory lock key is derived
/// from, so a job is named by this enum everywhere: a typo cannot take another job's lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "Text")]
pub enum JobName {
    /// WeatherAPI (or the simulator) → Kafka.
    #[sea_orm(string_value = "fetch")]
    Fetch,
    /// Kafka → PostgreSQL.
    #[sea_orm(string_value = "persist")]
    Persist,
    /// The regression of temperature on wind speed.
    #[sea_orm(string_value = "analytics")]
    Analytics,
    /// Quarantined records run again through validation and the store (`weatherflow rejects
    /// redrive`).
    #[sea_orm(string_value = "redrive")]
    Redrive,
    /// A range of the observations topic read again and stored where missing (`weatherflow replay`).
    #[sea_orm(string_value = "replay")]
    Replay,
    /// The monthly partitions of `observations` kept: the coming months made, old ones dropped
    /// (scheduled in `schedules.toml`, or `weatherflow run maintenance`).
    #[sea_orm(string_value = "maintenance")]
    Maintenance,
}

/// Why a run started (`job_runs.trigger`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "Text")]
pub enum Trigger {
    /// A cron tick of the scheduler service.
    #[sea_orm(string_value = "schedule")]
    Schedule,
    /// `weatherflow run …` (or the web API).
    #[sea_orm(string_value = "manual")]
    Manual,
}

/// Where a run is, or how it ended (`job_runs.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "Text")]
pub enum RunStatus {
    /// Started, not finished (or abandoned by a process that died, until closed).
    #[sea_orm(string_value = "running")]
    Running,
    /// Did its work.
    #[sea_orm(string_value = "succeeded")]
    Succeeded,
    /// Failed; `error` says why.
    #[sea_orm(string_value = "failed")]
    Failed,
    /// Had nothing it could do, or was not run (a tick another replica had); `details` says why.
    #[sea_orm(string_value = "skipped")]
    Skipped,
}

/// The stored text of each variant, for logs, tables and SQL parameters.
macro_rules! stored_text {
    ($ty:ty { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl $ty {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$ty] = &[$(<$ty>::$variant),+];

            /// The value stored in the database.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(<$ty>::$variant => $text),+
                }
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $ty {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                <$ty>::ALL
                    .iter()
                    .copied()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| {
                        let known: Vec<&str> = <$ty>::ALL.iter().map(|v| v.as_str()).collect();
                        format!("unknown value {s:?} (known: {})", known.join(", "))
                    })
            }
        }
    };
}

stored_text!(JobName {
    Fetch => "fetch",
    Persist => "persist",
    Analytics => "analytics",
    Redrive => "redrive",
    Replay => "replay",
    Maintenance => "maintenance",
});
stored_text!(Trigger { Schedule => "schedule", Manual => "manual" });
stored_text!(RunStatus {
    Running => "running",
    Succeeded => "succeeded",
    Failed => "failed",
    Skipped => "skipped",
});

/// A run has the regression results it produced.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    /// Results written by this run.
    #[sea_orm(has_many = "super::regression_results::Entity")]
    RegressionResults,
}

impl Related<super::regression_results::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::RegressionResults.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}

#[cfg(test)]
mod tests {
    use super::*;
    use sea_orm::{ActiveEnum, Iterable};

    /// The hand-written text must be the value SeaORM stores, or SQL built from `as_str` would miss rows.
    #[test]
    fn stored_text_matches_the_active_enum_values() {
        for j in JobName::ALL {
            assert_eq!(j.as_str(), j.to_value());
            assert_eq!(j.as_str().parse::<JobName>(), Ok(*j));
        }
        for t in Trigger::ALL {
            assert_eq!(t.as_str(), t.to_value());
        }
        for s in RunStatus::ALL {
            assert_eq!(s.as_str(), s.to_value());
        }
        assert_eq!(JobName::iter().count(), JobName::ALL.len());
        assert!(
            "fetchh"
                .parse::<JobName>()
                .unwrap_err()
                .contains("known: fetch, persist, analytics")
        );
    }
}
