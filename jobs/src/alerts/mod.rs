//! Webhook alerts (docs/alerts.md): the scheduler service evaluates [`conditions`] every
//! `alerts.evaluate_every_secs` from shared state, [`incidents`] turns the findings into one message
//! when an incident opens and one when it ends (agreed in PostgreSQL, so replicas never send twice),
//! and [`delivery`] sends the messages to the webhooks in a task of its own.
//!
//! It lives at the crate root because the scheduler service runs it but it reads what several owners
//! write (the run history, the consumer's offsets, the quarantine); no job calls it.

pub mod conditions;
pub mod delivery;
pub mod incidents;
pub mod message;
mod operating;

use std::time::Duration;

use sea_orm::{DatabaseConnection, DbErr};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use conditions::{Finding, Kind, RunFacts, Verdict};
pub use delivery::Outbox;
pub use message::{Event, Message};

use crate::config::{AlertsConfig, Config, ConfigError, KafkaConfig};

/// Why alerts could not start.
#[derive(Debug, thiserror::Error)]
pub enum AlertsError {
    /// The webhook URLs could not be read or are not URLs.
    #[error("alerts configuration: {0}")]
    Config(#[from] ConfigError),
    /// The HTTP client could not be built (its TLS setup).
    #[error("building the alerts' HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// The evaluator and its delivery task.
pub struct Alerts {
    db: DatabaseConnection,
    alerts: AlertsConfig,
    kafka: KafkaConfig,
    config: Box<Config>,
    outbox: Outbox,
    delivery: JoinHandle<()>,
}

impl Alerts {
    /// Starts the delivery task when `[alerts]` names at least one webhook; `None` when it names none
    /// (alerts off). Delivery stops when `shutdown` is cancelled.
    pub fn start(
        config: &Config,
        db: DatabaseConnection,
        shutdown: &CancellationToken,
    ) -> Result<Option<Self>, AlertsError> {
        let urls = config.alerts.resolve_webhooks()?;
        if urls.is_empty() {
            return Ok(None);
        }
        let webhooks = urls.len();
        let (outbox, delivery) = delivery::start(db.clone(), &config.alerts, urls, shutdown.clone())?;
        tracing::info!(
            webhooks,
            every_secs = config.alerts.evaluate_every().as_secs(),
            "alerts on"
        );
        Ok(Some(Self {
            db,
            alerts: config.alerts.clone(),
            kafka: config.kafka.clone(),
            config: Box::new(config.clone()),
            outbox,
            delivery,
        }))
    }

    /// One evaluation of every condition: records the findings and queues the messages of the
    /// incidents this call opened or resolved, which it returns.
    pub async fn evaluate(&self) -> Result<Vec<Message>, DbErr> {
        let inputs = conditions::Inputs {
            db: &self.db,
            alerts: &self.alerts,
            kafka: &self.kafka,
            config: &self.config,
        };
        let findings = evaluate(&inputs).await?;
        let mut sent = Vec::new();
        for finding in &findings {
            let Some(message) = incidents::record(&self.db, finding).await? else {
                continue;
            };
            tracing::warn!(incident_id = message.incident_id, event = message.event.as_str(),
                kind = message.kind.as_str(), subject = %message.subject, summary = %message.summary, "alert");
            self.outbox.send(message.clone());
            sent.push(message);
        }
        Ok(sent)
    }

    /// Evaluates every `alerts.evaluate_every_secs` until `shutdown`, then lets the delivery task
    /// finish its attempt in flight. A failed evaluation (the database unreachable) is logged and tried
    /// again at the next interval.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut every = tokio::time::interval(self.alerts.evaluate_every());
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = every.tick() => {}
            }
            if let Err(e) = self.evaluate().await {
                tracing::warn!(error = %e, "alerts: evaluation failed; trying again at the next interval");
            }
        }
        let Self {
            outbox,
            mut delivery,
            alerts,
            ..
        } = self;
        drop(outbox);
        let bound = Duration::from_secs(alerts.delivery_timeout_secs) + Duration::from_secs(1);
        if tokio::time::timeout(bound, &mut delivery).await.is_err() {
            tracing::warn!("alerts: a delivery was still in flight at shutdown; dropped");
            delivery.abort();
        }
    }
}

/// Every condition's findings. A database error fails the pass (nothing can be recorded anyway).
async fn evaluate(inputs: &conditions::Inputs<'_>) -> Result<Vec<Finding>, DbErr> {
    let mut findings = Vec::new();
    for kind in Kind::ALL {
        let found = match kind {
            Kind::RunFailed => conditions::run_failed(inputs).await?,
            Kind::ConsumerLag => conditions::consumer_lag(inputs).await,
            Kind::DatabaseOutage => conditions::database_outage(inputs).await?,
            Kind::QuarantineRate => conditions::quarantine_rate(inputs).await?,
            Kind::AutoPaused => operating::auto_paused(inputs).await?,
            Kind::StaleData => operating::stale_data(inputs).await?,
            Kind::ApiQuota => operating::api_quota(inputs).await?,
        };
        findings.extend(found);
    }
    Ok(findings)
}
