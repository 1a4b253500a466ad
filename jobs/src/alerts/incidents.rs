//! `alert_incidents`: what turns a stream of findings, every replica every tick, into one message when
//! an incident opens and one when it ends.
//!
//! A firing finding inserts a pending row (at most one unresolved row per kind and subject: the
//! partial unique index) and then announces it with a conditional `UPDATE … WHERE opened_at IS NULL
//! AND since <= now() - hold`. PostgreSQL re-checks that condition on a row another transaction just
//! updated, so when two replicas race exactly one gets the row back, and only that one sends. A clear
//! finding deletes a pending row that was never announced and resolves an announced one the same way.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr, QueryResult, Statement};
use serde_json::Value;

use super::conditions::{Finding, RunFacts, Verdict};
use super::message::{Event, Message};

fn stmt(sql: &str, values: Vec<sea_orm::Value>) -> Statement {
    Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
}

/// Records `finding`; the message to send when this call opened or resolved its incident.
pub async fn record(db: &DatabaseConnection, finding: &Finding) -> Result<Option<Message>, DbErr> {
    match &finding.verdict {
        Verdict::Firing {
            summary,
            hold,
            run,
            details,
        } => fire(db, finding, summary, *hold, run.as_ref(), details).await,
        Verdict::Clear { summary, run } => clear(db, finding, summary.as_deref(), run.as_ref()).await,
    }
}

async fn fire(
    db: &DatabaseConnection,
    finding: &Finding,
    summary: &str,
    hold: Duration,
    run: Option<&RunFacts>,
    details: &Value,
) -> Result<Option<Message>, DbErr> {
    let (kind, subject) = (finding.kind.as_str(), finding.subject.as_str());
    let run_id = run.map(|r| r.run_id);
    db.execute_raw(stmt(
        r#"INSERT INTO alert_incidents (kind, subject, summary, details, run_id)
           VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (kind, subject) WHERE resolved_at IS NULL DO NOTHING"#,
        vec![
            kind.into(),
            subject.into(),
            summary.into(),
            details.clone().into(),
            run_id.into(),
        ],
    ))
    .await?;
    let row = db
        .query_one_raw(stmt(
            r#"UPDATE alert_incidents
               SET opened_at = now(), summary = $3, details = $4, run_id = $5
               WHERE kind = $1 AND subject = $2 AND resolved_at IS NULL AND opened_at IS NULL
                 AND since <= now() - make_interval(secs => $6)
               RETURNING id, since, opened_at, resolved_at"#,
            vec![
                kind.into(),
                subject.into(),
                summary.into(),
                details.clone().into(),
                run_id.into(),
                hold.as_secs_f64().into(),
            ],
        ))
        .await?;
    row.map(|row| message(&row, Event::Opened, finding, summary, run.cloned(), details.clone()))
        .transpose()
}

async fn clear(
    db: &DatabaseConnection,
    finding: &Finding,
    summary: Option<&str>,
    run: Option<&RunFacts>,
) -> Result<Option<Message>, DbErr> {
    let (kind, subject) = (finding.kind.as_str(), finding.subject.as_str());
    // A condition that ended before it lasted long enough was never announced: nothing to resolve.
    db.execute_raw(stmt(
        r#"DELETE FROM alert_incidents
           WHERE kind = $1 AND subject = $2 AND resolved_at IS NULL AND opened_at IS NULL"#,
        vec![kind.into(), subject.into()],
    ))
    .await?;
    let row = db
        .query_one_raw(stmt(
            r#"UPDATE alert_incidents SET resolved_at = now()
               WHERE kind = $1 AND subject = $2 AND resolved_at IS NULL AND opened_at IS NOT NULL
               RETURNING id, since, opened_at, resolved_at, summary, details"#,
            vec![kind.into(), subject.into()],
        ))
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let opened: String = row.try_get_by_index(4)?;
    let details: Value = row.try_get_by_index(5)?;
    let summary = match summary {
        Some(s) => format!("{s}; was: {opened}"),
        None => format!("over; was: {opened}"),
    };
    message(&row, Event::Resolved, finding, &summary, run.cloned(), details).map(Some)
}

/// The message of an incident row `id, since, opened_at, resolved_at` just changed.
fn message(
    row: &QueryResult,
    event: Event,
    finding: &Finding,
    summary: &str,
    run: Option<RunFacts>,
    details: Value,
) -> Result<Message, DbErr> {
    Ok(Message {
        incident_id: row.try_get_by_index(0)?,
        event,
        kind: finding.kind,
        subject: finding.subject.clone(),
        summary: summary.to_owned(),
        run,
        since: row.try_get_by_index::<DateTime<Utc>>(1)?,
        opened_at: row.try_get_by_index(2)?,
        resolved_at: row.try_get_by_index(3)?,
        details,
    })
}
