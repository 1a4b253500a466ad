//! The `[web]` configuration section (env `WEATHERFLOW_WEB_<FIELD>`), part of [`crate::config::Config`].

use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::config::ConfigError;

/// Web mode settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebConfig {
    /// Address `weatherflow serve` listens on; loopback unless told otherwise.
    pub listen: String,
    /// Bearer token that allows `POST /api/v1/runs/{job}` (env `WEATHERFLOW_WEB_TOKEN`). Unset: the
    /// endpoint answers 403. Never printed.
    pub token: Option<SecretString>,
    /// A file holding the token, used when `token` is not set.
    pub token_file: Option<PathBuf>,
    /// A request (headers included) must be read and answered within this time; slower clients are
    /// cut off.
    pub request_timeout_secs: u64,
    /// How long cached answers that change with the stream (status, latest observations, lag) live.
    pub cache_ttl_ms: u64,
}

impl Default for WebConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            token: None,
            token_file: None,
            request_timeout_secs: 10,
            cache_ttl_ms: 2000,
        }
    }
}

impl WebConfig {
    /// The token from `token`, else from `token_file` (trimmed). `Ok(None)` when neither is set.
    pub fn resolve_token(&self) -> Result<Option<SecretString>, ConfigError> {
        if let Some(t) = &self.token
            && !t.expose_secret().trim().is_empty()
        {
            return Ok(Some(t.clone()));
        }
        let Some(path) = &self.token_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        let token = text.trim();
        Ok((!token.is_empty()).then(|| SecretString::from(token.to_owned())))
    }
}
