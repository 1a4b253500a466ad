//! The Kafka failures the callers tell apart.

use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

/// Kafka failures the callers tell apart.
#[derive(Debug, thiserror::Error)]
pub enum KafkaSetupError {
    /// The client could not be created (bad configuration).
    #[error("kafka client configuration rejected: {0}")]
    Client(#[source] KafkaError),
    /// The broker did not answer (down, wrong address, or timeout).
    #[error("kafka broker at {bootstrap} unreachable (set KAFKA_BOOTSTRAP_SERVERS): {source}")]
    Unreachable {
        /// The configured bootstrap servers.
        bootstrap: String,
        /// The client's error.
        source: KafkaError,
    },
    /// The broker refused the SASL credentials.
    #[error(
        "kafka authentication failed at {bootstrap} for user '{username}' ({mechanism}): {reason} — check \
         kafka.sasl_username and kafka.sasl_password (WEATHERFLOW_KAFKA_SASL_PASSWORD or kafka.sasl_password_file)"
    )]
    Authentication {
        /// The configured bootstrap servers.
        bootstrap: String,
        /// `kafka.sasl_username`.
        username: String,
        /// `kafka.sasl_mechanism`.
        mechanism: String,
        /// librdkafka's reason (it never holds the password).
        reason: String,
    },
    /// The TLS handshake failed (untrusted or unreadable certificate, wrong protocol).
    #[error(
        "kafka TLS handshake with {bootstrap} failed: {reason} — check kafka.ssl_ca_location (the CA that \
         signed the broker's certificate) and kafka.security_protocol"
    )]
    Tls {
        /// The configured bootstrap servers.
        bootstrap: String,
        /// librdkafka's (OpenSSL's) reason.
        reason: String,
    },
    /// librdkafka does not know a property, or refuses its value.
    #[error("{setting}: rejected by librdkafka: {reason}")]
    Property {
        /// The setting, e.g. `kafka.security_protocol` or `kafka.client."linger.ms"`.
        setting: String,
        /// librdkafka's reason (without the value when it is a secret).
        reason: String,
    },
    /// `kafka.sasl_password_file` could not be read.
    #[error("cannot read kafka.sasl_password_file {path}: {source}")]
    PasswordFile {
        /// The file.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The broker refused to create a topic.
    #[error("cannot create topic {topic}: {code}")]
    CreateTopic {
        /// The topic's name.
        topic: String,
        /// The broker's error code.
        code: RDKafkaErrorCode,
    },
}
