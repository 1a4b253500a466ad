//! Checks of the Kafka connection's security: the settings librdkafka must accept, and a probe that
//! turns librdkafka's asynchronous authentication and TLS errors into one immediate, clear failure.
//!
//! librdkafka reports a refused password or an untrusted certificate through its error callback
//! and then keeps reconnecting: a metadata request or a produce would only time out (a producer
//! after `message.timeout.ms`, two minutes). [`probe`] watches the callback while it asks for
//! metadata, so a job or `check` fails within about a second, naming the setting to fix.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::error::KafkaError;
use rdkafka::metadata::Metadata;
use rdkafka::producer::{BaseProducer, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;

use super::client::{base_config, sasl_password};
use super::error::KafkaSetupError;
use crate::config::{KafkaConfig, is_secret_property};

/// How long one metadata attempt of [`probe`] waits before it looks at the error callback again.
const PROBE_SLICE: Duration = Duration::from_millis(250);

/// The `[kafka]` setting that sets a librdkafka property, for error messages.
fn setting_for(property: &str) -> String {
    match property {
        "security.protocol"
        | "sasl.mechanism"
        | "sasl.username"
        | "sasl.password"
        | "ssl.ca.location"
        | "ssl.certificate.location"
        | "ssl.key.location" => format!("kafka.{}", property.replace('.', "_")),
        other => format!("kafka.client.\"{other}\""),
    }
}

/// What librdkafka said about a rejected property, without the value when it is a secret.
fn property_error(err: KafkaError) -> KafkaSetupError {
    match err {
        KafkaError::ClientConfig(_, reason, name, _) => {
            let reason = if is_secret_property(&name) {
                "invalid value (not shown: a secret)".to_owned()
            } else {
                reason
            };
            KafkaSetupError::Property {
                setting: setting_for(&name),
                reason,
            }
        }
        other => KafkaSetupError::Client(other),
    }
}

/// Checks, without touching the network, that the password file is readable and that librdkafka
/// knows every property and accepts every value; each `[kafka.client]` entry is checked on its own
/// first, so an unknown one is named. Run once at start.
pub fn check_settings(cfg: &KafkaConfig) -> Result<(), KafkaSetupError> {
    sasl_password(cfg)?;
    for (name, value) in cfg.client.iter() {
        let mut one = ClientConfig::new();
        one.set(name, value);
        one.create_native_config().map_err(property_error)?;
    }
    base_config(cfg).create_native_config().map_err(property_error)?;
    Ok(())
}

/// Whether the connection uses TLS or SASL, the only cases with authentication or TLS errors to
/// watch for (the `[kafka.client]` table wins, as in [`super::base_config`]).
pub fn is_secured(cfg: &KafkaConfig) -> bool {
    let from_table = cfg
        .client
        .iter()
        .find(|(k, _)| *k == "security.protocol")
        .map(|(_, v)| v);
    from_table
        .or(cfg.security_protocol.as_deref())
        .is_some_and(|p| !p.eq_ignore_ascii_case("plaintext"))
}

/// The first authentication or TLS error librdkafka reported on a client.
#[derive(Default)]
struct Watch {
    /// The error code and librdkafka's reason (which never holds the password).
    seen: Mutex<Option<(RDKafkaErrorCode, String)>>,
}

impl ClientContext for Watch {
    fn error(&self, error: KafkaError, reason: &str) {
        let Some(code) = error.rdkafka_error_code() else {
            return;
        };
        if matches!(code, RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SSL)
            && let Ok(mut seen) = self.seen.lock()
            && seen.is_none()
        {
            *seen = Some((code, reason.to_owned()));
        }
    }
}

impl ProducerContext for Watch {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &DeliveryResult<'_>, _: Self::DeliveryOpaque) {}
}

/// Turns a reported authentication or TLS error into the error that names the settings.
fn classify(cfg: &KafkaConfig, code: RDKafkaErrorCode, reason: String) -> KafkaSetupError {
    if code == RDKafkaErrorCode::Authentication {
        return KafkaSetupError::Authentication {
            bootstrap: cfg.bootstrap_servers.clone(),
            username: cfg.sasl_username.clone().unwrap_or_default(),
            mechanism: cfg.sasl_mechanism.clone().unwrap_or_else(|| "GSSAPI".into()),
            reason,
        };
    }
    KafkaSetupError::Tls {
        bootstrap: cfg.bootstrap_servers.clone(),
        reason,
    }
}

/// A client that could not be created: TLS files that do not load are a TLS error.
pub(crate) fn creation_error(cfg: &KafkaConfig, err: KafkaError) -> KafkaSetupError {
    match err {
        KafkaError::ClientCreation(reason) if reason.contains("ssl") => KafkaSetupError::Tls {
            bootstrap: cfg.bootstrap_servers.clone(),
            reason,
        },
        KafkaError::ClientConfig(..) => property_error(err),
        other => KafkaSetupError::Client(other),
    }
}

/// Checks the settings, connects and asks for the cluster's metadata, failing at the first
/// authentication or TLS error instead of waiting out the timeout. Blocking: run it on a blocking
/// thread.
pub fn probe(cfg: &KafkaConfig) -> Result<Metadata, KafkaSetupError> {
    check_settings(cfg)?;
    let producer: BaseProducer<Watch> = base_config(cfg)
        .create_with_context(Watch::default())
        .map_err(|e| creation_error(cfg, e))?;
    let deadline = Instant::now() + Duration::from_secs(cfg.request_timeout_secs);
    loop {
        let slice = PROBE_SLICE.min(deadline.saturating_duration_since(Instant::now()));
        let result = producer.client().fetch_metadata(None, slice);
        // Serves the error callback.
        producer.poll(Duration::ZERO);
        let seen = producer.context().seen.lock().ok().and_then(|mut s| s.take());
        match (result, seen) {
            (Ok(md), _) => return Ok(md),
            (Err(_), Some((code, reason))) => return Err(classify(cfg, code, reason)),
            (Err(source), None) if Instant::now() >= deadline => {
                return Err(KafkaSetupError::Unreachable {
                    bootstrap: cfg.bootstrap_servers.clone(),
                    source,
                });
            }
            (Err(_), None) => {}
        }
    }
}

/// [`probe`] from async code, on a blocking thread.
pub async fn probe_async(cfg: &KafkaConfig) -> Result<Metadata, KafkaSetupError> {
    let cfg = cfg.clone();
    match tokio::task::spawn_blocking(move || probe(&cfg)).await {
        Ok(result) => result,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

#[cfg(test)]
mod tests {
    use secrecy::{ExposeSecret, SecretString};

    use super::*;

    fn kafka(client: &[(&str, &str)]) -> KafkaConfig {
        let mut k = KafkaConfig::default();
        for (n, v) in client {
            k.client.insert(*n, *v);
        }
        k
    }

    #[test]
    fn unknown_client_property_is_named() {
        let err = check_settings(&kafka(&[("linger.ms", "3"), ("no.such.property", "1")])).unwrap_err();
        let shown = err.to_string();
        assert!(shown.contains("no.such.property"), "{shown}");
        assert!(check_settings(&kafka(&[("linger.ms", "3")])).is_ok());
    }

    #[test]
    fn bad_security_protocol_names_the_setting() {
        let k = KafkaConfig {
            security_protocol: Some("tls_please".into()),
            ..Default::default()
        };
        let shown = check_settings(&k).unwrap_err().to_string();
        assert!(shown.contains("kafka.security_protocol"), "{shown}");
    }

    #[test]
    fn only_tls_or_sasl_is_secured() {
        assert!(!is_secured(&KafkaConfig::default()));
        let sasl = KafkaConfig {
            security_protocol: Some("SASL_SSL".into()),
            ..Default::default()
        };
        assert!(is_secured(&sasl));
        assert!(!is_secured(&kafka(&[("security.protocol", "PLAINTEXT")])));
        assert!(is_secured(&kafka(&[("security.protocol", "ssl")])));
    }

    #[test]
    fn secret_values_do_not_print() {
        let mut k = kafka(&[("sasl.password", "pw-in-table"), ("linger.ms", "7")]);
        k.sasl_password = Some(SecretString::from("pw-in-field"));
        let shown = format!("{k:?}");
        assert!(
            !shown.contains("pw-in-table") && !shown.contains("pw-in-field"),
            "{shown}"
        );
        assert!(shown.contains("linger.ms"), "{shown}");
        let c = base_config(&k);
        assert!(!format!("{c:?}").contains("pw-in"));
    }

    #[test]
    fn password_file_is_read_and_trimmed() {
        let path = std::env::temp_dir().join(format!("wf-sasl-{}", std::process::id()));
        std::fs::write(&path, "from-file\n").unwrap();
        let k = KafkaConfig {
            sasl_password_file: Some(path.clone()),
            ..Default::default()
        };
        assert_eq!(sasl_password(&k).unwrap().unwrap().expose_secret(), "from-file");
        std::fs::remove_file(&path).unwrap();
        let shown = check_settings(&k).unwrap_err().to_string();
        assert!(shown.contains("kafka.sasl_password_file"), "{shown}");
    }
}
