//! Sending messages to the webhooks, apart from everything else: the evaluator puts a message in a
//! bounded queue and returns, and one task of its own delivers the queue in order (an incident's
//! `resolved` never overtakes its `opened`), to every webhook at once, each attempt bounded by
//! `alerts.delivery_timeout_secs`, retried with backoff up to `alerts.delivery_attempts`, and recorded in
//! `alert_deliveries`. A webhook that is down delays only the messages behind it, never a job, a tick
//! or the evaluation; when the queue is full a message is dropped with an error in the log (its
//! incident is still in `alert_incidents`).
//!
//! The URLs are secrets: they are used for the request and nowhere else. Logs, errors and
//! `alert_deliveries.url` carry their origin only ([`webhook_origin`]), and reqwest's errors are
//! stripped of their URL before they are shown.

use std::time::Duration;

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::message::Message;
use crate::backoff::Backoff;
use crate::config::{AlertsConfig, webhook_origin};

/// Messages waiting for delivery at most; more are dropped (and logged), so a webhook that is down
/// for days cannot grow memory.
pub const QUEUE: usize = 256;

/// Ceiling of one delay between attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// One webhook: its secret URL, and what may be shown of it.
struct Webhook {
    url: SecretString,
    origin: String,
}

/// How deliveries go, from `[alerts]`.
struct Sender {
    db: DatabaseConnection,
    http: reqwest::Client,
    webhooks: Vec<Webhook>,
    attempts: u32,
    backoff: Backoff,
    timeout: Duration,
    dashboard: Option<String>,
}

/// The evaluator's end of the queue.
#[derive(Clone)]
pub struct Outbox {
    tx: mpsc::Sender<Message>,
}

impl Outbox {
    /// Queues `message` without waiting; false (and an error in the log) when the queue is full.
    pub fn send(&self, message: Message) -> bool {
        match self.tx.try_send(message) {
            Ok(()) => true,
            Err(e) => {
                let m = e.into_inner();
                tracing::error!(incident_id = m.incident_id, kind = m.kind.as_str(), subject = %m.subject,
                    event = m.event.as_str(), queue = QUEUE, "alert queue full or closed; message dropped");
                false
            }
        }
    }
}

/// Starts the delivery task for `urls`; it stops when `shutdown` is cancelled (between attempts) or
/// every [`Outbox`] is dropped and the queue is empty.
pub fn start(
    db: DatabaseConnection,
    cfg: &AlertsConfig,
    urls: Vec<SecretString>,
    shutdown: CancellationToken,
) -> Result<(Outbox, JoinHandle<()>), reqwest::Error> {
    let timeout = Duration::from_secs(cfg.delivery_timeout_secs.max(1));
    let http = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        // A redirect would send the body (and a token in the URL) somewhere not configured.
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let webhooks = urls
        .into_iter()
        .map(|url| Webhook {
            origin: webhook_origin(url.expose_secret()),
            url,
        })
        .collect();
    let sender = Sender {
        db,
        http,
        webhooks,
        attempts: cfg.delivery_attempts.max(1),
        backoff: Backoff::new(Duration::from_millis(cfg.delivery_backoff_ms), BACKOFF_MAX),
        timeout,
        dashboard: cfg.dashboard_url.clone(),
    };
    let (tx, rx) = mpsc::channel(QUEUE);
    let task = tokio::spawn(sender.run(rx, shutdown));
    Ok((Outbox { tx }, task))
}

/// How one attempt went.
struct Attempt {
    status: Option<u16>,
    error: Option<String>,
    delivered: bool,
    retry: bool,
}

impl Sender {
    async fn run(self, mut rx: mpsc::Receiver<Message>, shutdown: CancellationToken) {
        loop {
            let message = tokio::select! {
                _ = shutdown.cancelled() => break,
                m = rx.recv() => match m {
                    Some(m) => m,
                    None => break,
                },
            };
            let body = message.body(self.dashboard.as_deref());
            let each = self.webhooks.iter().map(|hook| self.deliver(hook, &message, &body, &shutdown));
            futures::future::join_all(each).await;
        }
        let left = rx.len();
        if left > 0 {
            tracing::warn!(messages = left, "alerts: shutting down with messages not delivered");
        }
    }

    /// Every attempt at `message` to `hook`, until one is delivered, one fails for good, the attempts
    /// are used up or shutdown begins.
    async fn deliver(&self, hook: &Webhook, message: &Message, body: &serde_json::Value, shutdown: &CancellationToken) {
        for attempt in 1..=self.attempts {
            if attempt > 1 {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(self.backoff.delay(attempt - 2)) => {}
                }
            }
            let outcome = self.attempt(hook, body).await;
            self.record(hook, message, attempt, &outcome).await;
            let (incident_id, event) = (message.incident_id, message.event.as_str());
            if outcome.delivered {
                tracing::info!(incident_id, event, webhook = %hook.origin, attempt, "alert delivered");
                return;
            }
            let error = outcome.error.as_deref().unwrap_or("");
            if !outcome.retry || attempt == self.attempts {
                tracing::error!(incident_id, event, webhook = %hook.origin, attempt, status = ?outcome.status,
                    error, "alert not delivered; giving up");
                return;
            }
            tracing::warn!(incident_id, event, webhook = %hook.origin, attempt, status = ?outcome.status,
                error, "alert delivery failed; retrying");
        }
    }

    async fn attempt(&self, hook: &Webhook, body: &serde_json::Value) -> Attempt {
        let sent = self.http.post(hook.url.expose_secret()).json(body).send().await;
        match sent {
            Ok(resp) => {
                let status = resp.status();
                let code = status.as_u16();
                Attempt {
                    status: Some(code),
                    error: (!status.is_success()).then(|| format!("HTTP {status}")),
                    delivered: status.is_success(),
                    // 4xx other than 408 and 429 means this request will never be taken.
                    retry: status.is_server_error() || code == 408 || code == 429,
                }
            }
            Err(e) => Attempt {
                status: None,
                error: Some(self.describe(e)),
                delivered: false,
                retry: true,
            },
        }
    }

    /// The error without its URL, with its causes (connection refused, TLS, timeout).
    fn describe(&self, e: reqwest::Error) -> String {
        if e.is_timeout() {
            return format!("no answer within {} s", self.timeout.as_secs());
        }
        let e = e.without_url();
        let mut text = e.to_string();
        let mut cause = std::error::Error::source(&e);
        while let Some(c) = cause {
            text.push_str(": ");
            text.push_str(&c.to_string());
            cause = c.source();
        }
        text
    }

    async fn record(&self, hook: &Webhook, message: &Message, attempt: u32, outcome: &Attempt) {
        let stmt = Statement::from_sql_and_values(
            DbBackend::Postgres,
            r#"INSERT INTO alert_deliveries (incident_id, event, url, attempt, http_status, error)
               VALUES ($1, $2, $3, $4, $5, $6)"#,
            vec![
                message.incident_id.into(),
                message.event.as_str().into(),
                hook.origin.clone().into(),
                (attempt as i32).into(),
                outcome.status.map(i32::from).into(),
                outcome.error.clone().into(),
            ],
        );
        if let Err(e) = self.db.execute_raw(stmt).await {
            tracing::warn!(incident_id = message.incident_id, error = %e, "alerts: cannot record a delivery attempt");
        }
    }
}
