//! The `[kafka.client]` table's type: librdkafka properties passed verbatim to every client
//! ([`crate::kafka::base_config`] applies them), with secret values hidden from Debug output.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer};

/// Parts of a librdkafka property name that mark its value as secret (`sasl.password`,
/// `ssl.key.password`, `ssl.key.pem`, `sasl.oauthbearer.client.secret`, ...): such values are
/// never printed, not even in an error about the value.
const SECRET_MARKERS: [&str; 5] = ["password", "secret", "pem", "token", "oauthbearer.config"];

/// Whether a librdkafka property holds a secret.
pub(crate) fn is_secret_property(name: &str) -> bool {
    SECRET_MARKERS.iter().any(|m| name.contains(m))
}

/// The `[kafka.client]` table: librdkafka properties passed verbatim to every client. TOML
/// integers, floats and booleans are accepted and passed as their text. Debug output hides the
/// values of secret properties.
#[derive(Clone, Default)]
pub struct ClientProperties(BTreeMap<String, String>);

impl ClientProperties {
    /// The properties, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Adds or replaces one property (tests and programmatic configuration).
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.0.insert(name.into(), value.into());
    }
}

impl fmt::Debug for ClientProperties {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(
                self.iter()
                    .map(|(k, v)| (k, if is_secret_property(k) { "[REDACTED]" } else { v })),
            )
            .finish()
    }
}

/// One TOML scalar of the `[kafka.client]` table.
#[derive(Deserialize)]
#[serde(untagged)]
enum Scalar {
    Text(String),
    Integer(i64),
    Float(f64),
    Boolean(bool),
}

impl<'de> Deserialize<'de> for ClientProperties {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = BTreeMap::<String, Scalar>::deserialize(d)?;
        let map = raw
            .into_iter()
            .map(|(k, v)| {
                let text = match v {
                    Scalar::Text(s) => s,
                    Scalar::Integer(i) => i.to_string(),
                    Scalar::Float(x) => x.to_string(),
                    Scalar::Boolean(b) => b.to_string(),
                };
                (k, text)
            })
            .collect();
        Ok(Self(map))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn toml_scalars_become_text() {
        let t: toml::Table = "[kafka.client]\n\"linger.ms\" = 7\n\"enable.idempotence\" = true\n"
            .parse()
            .unwrap();
        let c: super::super::Config = toml::Value::Table(t).try_into().unwrap();
        let props: Vec<_> = c.kafka.client.iter().collect();
        assert_eq!(props, [("enable.idempotence", "true"), ("linger.ms", "7")]);
    }
}
