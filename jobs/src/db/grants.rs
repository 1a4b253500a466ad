//! The roles the long-running services connect as, and what each may do, table by table.
//!
//! The migrations run as the schema owner (the role of `DATABASE_URL` for `weatherflow migrate`),
//! which owns every table. The scheduler, the consumer and the web face connect as roles of their own
//! (created by `scripts/services.sh up` and the compose `postgres` service's init script, with
//! passwords from files or the environment) holding only the grants below: the web role reads what
//! it serves and writes nothing but the run rows of the runs it starts. `weatherflow migrate up`
//! applies them after the migrations, to each of these roles that exists, so a new table's grants
//! land with the migration that makes it.
//!
//! A new table: add its line(s) to [`GRANTS`] (and its id sequence's, for a role that inserts), or
//! no service role can touch it.

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr, Statement};

/// A service role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceRole {
    /// `weatherflow serve`: reads; writes the run rows of the runs started over HTTP.
    Web,
    /// `weatherflow consumer`: stores observations and quarantined records, and its run rows.
    Consumer,
    /// `weatherflow scheduler`: runs fetch, analytics and maintenance, and the consumer unless
    /// `--no-consumer`. Maintenance's partition changes need the owner: the role is a member of it
    /// without inheriting its rights, and maintenance's transactions `SET LOCAL ROLE` to it.
    Scheduler,
}

impl ServiceRole {
    /// Every service role.
    pub const ALL: [ServiceRole; 3] = [ServiceRole::Web, ServiceRole::Consumer, ServiceRole::Scheduler];

    /// The PostgreSQL role's name.
    pub fn name(self) -> &'static str {
        match self {
            ServiceRole::Web => "weatherflow_web",
            ServiceRole::Consumer => "weatherflow_consumer",
            ServiceRole::Scheduler => "weatherflow_scheduler",
        }
    }
}

use ServiceRole::{Consumer, Scheduler, Web};

/// Every grant: role, privileges, and the objects (`TABLE`s by default, or `SEQUENCE name`).
pub const GRANTS: &[(ServiceRole, &str, &[&str])] = &[
    // What the web face serves (the API, the dashboard, /readyz's migration check).
    (
        Web,
        "SELECT",
        &["observations", "regression_results", "job_runs", "rejected_records", "seaql_migrations"],
    ),
    // The run rows of POST /api/v1/runs/{job}, and what those runs write (an analytics fit).
    (Web, "INSERT, UPDATE", &["job_runs"]),
    (Web, "INSERT", &["regression_results"]),
    (Web, "USAGE", &["SEQUENCE job_runs_id_seq", "SEQUENCE regression_results_id_seq"]),
    // The quota shown by the status API, and counted by a fetch started over HTTP.
    (Web, "SELECT, INSERT, UPDATE", &["api_calls"]),
    // Pause and resume over HTTP (POST /api/v1/jobs/{job}/pause|resume) and the pauses it shows.
    (Web, "SELECT, INSERT, DELETE", &["job_pauses"]),
    (Web, "INSERT", &["job_pause_events"]),
    (Web, "USAGE", &["SEQUENCE job_pause_events_id_seq"]),
    // The persist consumer: observations and quarantined records in, its own run rows.
    (Consumer, "SELECT, INSERT", &["observations", "rejected_records"]),
    (Consumer, "SELECT, INSERT, UPDATE", &["job_runs"]),
    (Consumer, "SELECT", &["seaql_migrations"]),
    // A paused persist holds its partitions: the consumer reads the pause state.
    (Consumer, "SELECT", &["job_pauses"]),
    (
        Consumer,
        "USAGE",
        &[
            "SEQUENCE observations_id_seq",
            "SEQUENCE rejected_records_id_seq",
            "SEQUENCE job_runs_id_seq",
        ],
    ),
    // The scheduler: the consumer's rights (it runs one), the fits, the history, the quarantine's
    // retention.
    (Scheduler, "SELECT, INSERT", &["observations", "regression_results"]),
    (Scheduler, "SELECT, INSERT, DELETE", &["rejected_records"]),
    (Scheduler, "SELECT, INSERT, UPDATE", &["job_runs"]),
    (Scheduler, "SELECT", &["seaql_migrations"]),
    // The WeatherAPI quota and the history backfill's completed days (fetch).
    (Scheduler, "SELECT, INSERT, UPDATE", &["api_calls", "history_backfill"]),
    // Pauses: honoured at each tick, and the auto-pause after failed runs.
    (Scheduler, "SELECT, INSERT, DELETE", &["job_pauses"]),
    (Scheduler, "INSERT", &["job_pause_events"]),
    // Webhook alerts: the incidents it opens and resolves, the delivery attempts it records.
    (Scheduler, "SELECT, INSERT, UPDATE", &["alert_incidents"]),
    (Scheduler, "SELECT, INSERT", &["alert_deliveries"]),
    (
        Scheduler,
        "USAGE",
        &[
            "SEQUENCE observations_id_seq",
            "SEQUENCE rejected_records_id_seq",
            "SEQUENCE job_runs_id_seq",
            "SEQUENCE regression_results_id_seq",
            "SEQUENCE alert_incidents_id_seq",
            "SEQUENCE alert_deliveries_id_seq",
            "SEQUENCE job_pause_events_id_seq",
        ],
    ),
];

/// The `GRANT` statements of `role`.
pub fn statements(role: ServiceRole) -> Vec<String> {
    let mut out = Vec::new();
    for (r, privileges, objects) in GRANTS {
        if *r != role {
            continue;
        }
        for object in *objects {
            let object = if object.starts_with("SEQUENCE ") {
                (*object).to_owned()
            } else {
                format!("TABLE {object}")
            };
            out.push(format!("GRANT {privileges} ON {object} TO {}", role.name()));
        }
    }
    out
}

/// Applies the grants of every service role that exists on the server; returns the roles that do
/// not (nothing to grant to: that deployment connects its services as the owner).
pub async fn apply(db: &DatabaseConnection) -> Result<Vec<&'static str>, DbErr> {
    let mut missing = Vec::new();
    for role in ServiceRole::ALL {
        let exists = db
            .query_one_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT 1 FROM pg_roles WHERE rolname = $1",
                [role.name().into()],
            ))
            .await?
            .is_some();
        if !exists {
            missing.push(role.name());
            continue;
        }
        for sql in statements(role) {
            db.execute_unprepared(&sql).await?;
        }
    }
    Ok(missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_web_role_writes_only_run_rows_fits_the_quota_count_and_pauses() {
        let web = statements(ServiceRole::Web).join("\n");
        assert!(web.contains("GRANT SELECT ON TABLE observations TO weatherflow_web"), "{web}");
        for line in web.lines().filter(|l| !l.starts_with("GRANT SELECT ON")) {
            assert!(
                line.contains("job_runs")
                    || line.contains("regression_results")
                    || line.contains("api_calls")
                    || line.contains("job_pause"),
                "{line}"
            );
            // Only a pause is ever deleted (resume).
            assert!(!line.contains("DELETE") || line.contains("TABLE job_pauses "), "{line}");
        }
    }
}
