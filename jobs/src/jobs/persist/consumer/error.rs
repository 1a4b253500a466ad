//! Why a persist run's pipeline (the consumer thread and its writers) stopped with an error, and
//! what the run's caller should do about each cause.
//!
//! Before this type every failure of the consumer went back as retryable, so a writer that had
//! panicked, or a client librdkafka had declared unusable, was started again by the scheduler to fail
//! the same way. Each variant now says whether another attempt can help ([`ConsumerError::kind`]).

use std::sync::Arc;

use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use tokio::task::JoinError;

use crate::job_error::{JobError, JobErrorKind};

/// A failure of the persist pipeline.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConsumerError {
    /// librdkafka refused to create the consumer: a configuration it rejects, the same next time
    /// (or, with a code, whatever that code says).
    #[error("creating the Kafka consumer")]
    Create(#[source] KafkaError),
    /// The subscription was refused.
    #[error("subscribing to {topic}")]
    Subscribe {
        /// The observations topic.
        topic: Arc<str>,
        /// The client's error.
        #[source]
        source: KafkaError,
    },
    /// librdkafka raised a fatal error: the client instance cannot be used any more, and the cause
    /// (a fenced static member, an unsupported broker feature) stays for the next attempt.
    #[error("fatal Kafka consumer error: {0}")]
    FatalKafka(RDKafkaErrorCode),
    /// A writer's queue closed while the consumer still had batches for it. A writer ends only when
    /// the consumer drops its sender, so this one panicked: a bug, which panics again on the same
    /// records.
    #[error("a database writer stopped unexpectedly")]
    WriterGone,
    /// A writer the consumer counted as idle had a full queue: the consumer's bookkeeping is wrong.
    #[error("an idle database writer's queue was full")]
    WriterQueueFull,
    /// The consumer thread panicked.
    #[error("the consumer thread panicked")]
    ConsumerPanicked(#[source] JoinError),
    /// A writer task panicked.
    #[error("a writer task panicked")]
    WriterPanicked(#[source] JoinError),
    /// The run was stopped (shutdown, cancellation) while records it had read still waited for the
    /// database: they are read again by the next run.
    #[error(
        "stopped during a database outage: {records} records read but not stored (their offsets were \
         not committed; the next run reads them again)"
    )]
    Abandoned {
        /// Records read and not stored.
        records: u64,
    },
}

impl ConsumerError {
    /// Fatal, retryable or interrupted.
    pub(crate) fn kind(&self) -> JobErrorKind {
        match self {
            ConsumerError::Create(e) | ConsumerError::Subscribe { source: e, .. } => kafka_kind(e),
            ConsumerError::FatalKafka(_)
            | ConsumerError::WriterGone
            | ConsumerError::WriterQueueFull
            | ConsumerError::ConsumerPanicked(_)
            | ConsumerError::WriterPanicked(_) => JobErrorKind::Fatal,
            ConsumerError::Abandoned { .. } => JobErrorKind::Interrupted,
        }
    }
}

impl From<ConsumerError> for JobError {
    fn from(e: ConsumerError) -> Self {
        JobError::new(e.kind(), e)
    }
}

/// What a client error means for another attempt: the configuration, a fatal error and refused
/// credentials or permissions repeat; a broker that is down, moving or slow is worth waiting for, and
/// so is any code not named here (as every consumer error was before).
fn kafka_kind(e: &KafkaError) -> JobErrorKind {
    if matches!(
        e,
        KafkaError::ClientCreation(_) | KafkaError::ClientConfig(..) | KafkaError::MessageConsumptionFatal(_)
    ) {
        return JobErrorKind::Fatal;
    }
    match e.rdkafka_error_code() {
        Some(
            RDKafkaErrorCode::Fatal
            | RDKafkaErrorCode::InvalidArgument
            | RDKafkaErrorCode::Authentication
            | RDKafkaErrorCode::SaslAuthenticationFailed
            | RDKafkaErrorCode::SSL
            | RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::GroupAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed
            | RDKafkaErrorCode::UnsupportedFeature,
        ) => JobErrorKind::Fatal,
        _ => JobErrorKind::Retryable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn panicked() -> JoinError {
        tokio::spawn(async { panic!("boom") }).await.unwrap_err()
    }

    #[tokio::test]
    async fn a_panicked_writer_or_consumer_thread_is_fatal() {
        assert_eq!(ConsumerError::WriterGone.kind(), JobErrorKind::Fatal);
        assert_eq!(ConsumerError::WriterQueueFull.kind(), JobErrorKind::Fatal);
        assert_eq!(
            ConsumerError::WriterPanicked(panicked().await).kind(),
            JobErrorKind::Fatal
        );
        let err = JobError::from(ConsumerError::ConsumerPanicked(panicked().await));
        assert_eq!(err.kind(), JobErrorKind::Fatal);
        assert!(
            err.to_string().starts_with("the consumer thread panicked"),
            "{err}"
        );
    }

    #[test]
    fn a_fatal_client_error_is_fatal_and_a_broker_outage_retryable() {
        assert_eq!(
            ConsumerError::FatalKafka(RDKafkaErrorCode::Fatal).kind(),
            JobErrorKind::Fatal
        );
        assert_eq!(
            ConsumerError::Create(KafkaError::ClientCreation(
                "bad value for session.timeout.ms".into()
            ))
            .kind(),
            JobErrorKind::Fatal
        );
        let subscribe = |source| ConsumerError::Subscribe {
            topic: Arc::from("observations"),
            source,
        };
        for transient in [
            RDKafkaErrorCode::AllBrokersDown,
            RDKafkaErrorCode::BrokerTransportFailure,
            RDKafkaErrorCode::CoordinatorNotAvailable,
            RDKafkaErrorCode::RequestTimedOut,
        ] {
            let err = subscribe(KafkaError::MetadataFetch(transient));
            assert_eq!(err.kind(), JobErrorKind::Retryable, "{transient:?}");
        }
        let denied = subscribe(KafkaError::MetadataFetch(
            RDKafkaErrorCode::TopicAuthorizationFailed,
        ));
        assert_eq!(denied.kind(), JobErrorKind::Fatal);
        let err = JobError::from(subscribe(KafkaError::MetadataFetch(
            RDKafkaErrorCode::AllBrokersDown,
        )));
        assert!(err.is_retryable());
        assert!(
            err.to_string().starts_with("subscribing to observations: "),
            "{err}"
        );
    }

    #[test]
    fn a_stop_with_records_not_stored_is_interrupted() {
        let err = JobError::from(ConsumerError::Abandoned { records: 3 });
        assert_eq!(err.kind(), JobErrorKind::Interrupted);
        assert!(err.to_string().contains("3 records read but not stored"), "{err}");
    }
}
