//! The `[web]` configuration section (env `WEATHERFLOW_WEB_<FIELD>`), part of [`crate::config::Config`].

use std::path::PathBuf;

use secrecy::SecretString;

use super::ConfigError;
use super::field::section;

section! {
    /// Web mode: `weatherflow serve` and the `--http` listeners (docs/web.md).
    pub struct WebConfig in "web" {
        /// Address `weatherflow serve` listens on; loopback unless told otherwise.
        pub listen: String = "127.0.0.1:8080".into();
        /// Bearer token that allows `POST /api/v1/runs/{job}`. Unset: the endpoint answers 403.
        /// Never shown.
        pub token: Option<SecretString> = None;
        /// A file holding the token, used when `web.token` is not set.
        pub token_file: Option<PathBuf> = None;
        /// A request (headers included) must be read and answered within this time, in seconds;
        /// slower clients are cut off.
        pub request_timeout_secs: u64 = 10;
        /// How long cached answers that change with the stream (status, latest observations, lag)
        /// live, in milliseconds.
        pub cache_ttl_ms: u64 = 2000;
        /// Clients reach this process over TLS only (a proxy in front terminates it): every answer
        /// then carries `Strict-Transport-Security`, so browsers never use plain HTTP for this host
        /// again. Off while anything serves it over plain HTTP.
        pub behind_tls: bool = false;
    }
}

impl WebConfig {
    /// The token from `token`, else from `token_file` (trimmed). `Ok(None)` when neither is set.
    pub fn resolve_token(&self) -> Result<Option<SecretString>, ConfigError> {
        super::secret_or_file(self.token.as_ref(), self.token_file.as_deref()).map_err(|source| {
            ConfigError::Read {
                path: self.token_file.clone().unwrap_or_default(),
                source,
            }
        })
    }
}
