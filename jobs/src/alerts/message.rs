//! What a webhook receives: one JSON body per incident event, with a `text` field that Slack and
//! Mattermost incoming webhooks render as is, and the structured fields beside it for any other
//! receiver.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::conditions::{Kind, RunFacts};

/// Which end of an incident a message announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The condition began (and, for those with a duration, lasted long enough).
    Opened,
    /// The condition ended.
    Resolved,
}

impl Event {
    /// `opened` or `resolved`: the body's `event` and `alert_deliveries.event`.
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Opened => "opened",
            Event::Resolved => "resolved",
        }
    }
}

/// One message about one incident, as recorded in `alert_incidents`.
#[derive(Debug, Clone)]
pub struct Message {
    /// `alert_incidents.id`.
    pub incident_id: i64,
    /// Opened or resolved.
    pub event: Event,
    /// The condition.
    pub kind: Kind,
    /// What it is about: a job, the consumer group, `database`.
    pub subject: String,
    /// One line saying what happened (opened) or that it is over (resolved).
    pub summary: String,
    /// The run the message is about: the failed run when opened, the succeeding run when resolved.
    pub run: Option<RunFacts>,
    /// When the condition was first seen.
    pub since: DateTime<Utc>,
    /// When the incident was announced.
    pub opened_at: Option<DateTime<Utc>>,
    /// When it ended.
    pub resolved_at: Option<DateTime<Utc>>,
    /// The condition's figures (lag, ratio, refusals).
    pub details: Value,
}

impl Message {
    /// The JSON body, with `link` the dashboard's address when one is configured.
    pub fn body(&self, dashboard: Option<&str>) -> Value {
        let link = dashboard.map(|base| format!("{}/", base.trim_end_matches('/')));
        let run = self.run.as_ref();
        json!({
            "event": self.event.as_str(),
            "kind": self.kind.as_str(),
            "subject": self.subject,
            "incident_id": self.incident_id,
            "job": run.map(|r| r.job.as_str()),
            "run_id": run.map(|r| r.run_id),
            "status": run.map(|r| r.status.as_str()),
            "error": run.and_then(|r| r.error.as_deref()),
            "since": self.since,
            "opened_at": self.opened_at,
            "resolved_at": self.resolved_at,
            "link": link,
            "details": self.details,
            "text": self.text(link.as_deref()),
        })
    }

    /// The line a chat shows: what, about what, and where to look.
    fn text(&self, link: Option<&str>) -> String {
        let head = match self.event {
            Event::Opened => "[weatherflow] ALERT",
            Event::Resolved => "[weatherflow] RESOLVED",
        };
        let mut text = format!("{head} {} ({}): {}", self.kind.as_str(), self.subject, self.summary);
        // A bare URL: Slack and Mattermost both turn it into a link (their markup for named links
        // differs).
        if let Some(link) = link {
            text.push_str(&format!(" {link}"));
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runs::{JobName, RunStatus};

    #[test]
    fn the_body_carries_the_run_the_link_and_a_text_for_chats() {
        let at = DateTime::parse_from_rfc3339("2026-12-07T15:00:00Z").unwrap().to_utc();
        let m = Message {
            incident_id: 7,
            event: Event::Opened,
            kind: Kind::RunFailed,
            subject: "fetch".into(),
            summary: "fetch failed after its retries (run 42): boom".into(),
            run: Some(RunFacts {
                job: JobName::Fetch,
                run_id: 42,
                status: RunStatus::Failed,
                error: Some("boom".into()),
            }),
            since: at,
            opened_at: Some(at),
            resolved_at: None,
            details: json!({}),
        };
        let body = m.body(Some("https://dash.example/"));
        assert_eq!(body["job"], "fetch");
        assert_eq!(body["run_id"], 42);
        assert_eq!(body["status"], "failed");
        assert_eq!(body["error"], "boom");
        assert_eq!(body["link"], "https://dash.example/");
        assert_eq!(body["opened_at"], "2026-12-07T15:00:00Z");
        assert_eq!(
            body["text"],
            "[weatherflow] ALERT run_failed (fetch): fetch failed after its retries (run 42): boom \
             https://dash.example/"
        );
        assert_eq!(m.body(None)["link"], Value::Null);
    }
}
