//! Web mode: `weatherflow serve` (health, metrics, the JSON API under `/api/v1`, the dashboard at `/`)
//! and the health-and-metrics listener of `scheduler --http` and `consumer --http`.
//!
//! Every handler reads through [`AppState`]: the database pool, the configuration, the response
//! cache, and the readiness checks and consumer-lag sample refreshed in the background, so no
//! request waits on Kafka.

pub mod api;
pub mod cache;
pub mod dashboard;
pub mod error;
pub mod health;
pub mod lag;
pub mod openapi;
pub mod params;
pub mod pause;
pub mod queries;
pub mod readiness;
pub mod server;
pub mod status_schema;
pub mod trigger;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use sea_orm::DatabaseConnection;
use secrecy::SecretString;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::jobs::fetch::AutoSource;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

/// The shared parts; behind one `Arc` so a clone per request is one reference count.
pub struct Inner {
    /// The configuration the process loaded.
    pub config: Arc<Config>,
    /// The pool on the platform's database.
    pub db: DatabaseConnection,
    /// `web.token`, resolved once; `None` disables `POST /api/v1/runs/{job}`.
    pub token: Option<SecretString>,
    /// Rendered answers (see [`cache`]).
    pub cache: Arc<cache::ResponseCache>,
    /// The latest consumer-lag sample (see [`lag`]).
    pub lag: Arc<lag::LagSampler>,
    /// What `/readyz` answers from (see [`readiness`]).
    pub ready: Arc<readiness::Readiness>,
    /// Manual runs started over HTTP; shutdown waits for them.
    pub runs: TaskTracker,
    /// What `auto` means for the fetches `POST /api/v1/runs/fetch` starts, decided when `serve`
    /// started; `None` where the trigger is not served (`--http`, benchmarks).
    pub fetch_source: Option<AutoSource>,
    /// Cancelled on SIGTERM; manual runs get it as their shutdown token.
    pub shutdown: CancellationToken,
    /// The dashboard's compiled templates.
    pub templates: minijinja::Environment<'static>,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// Builds the state and starts its background tasks (readiness and lag sampling on one Kafka
    /// client, cache invalidation), which stop with `shutdown`.
    pub fn start(
        config: Arc<Config>,
        db: DatabaseConnection,
        shutdown: CancellationToken,
        fetch_source: Option<AutoSource>,
    ) -> anyhow::Result<Self> {
        crate::metrics::install();
        let token = config.web.resolve_token()?;
        let cache = Arc::new(cache::ResponseCache::default());
        let lag = Arc::new(lag::LagSampler::default());
        tokio::spawn(cache::watch(db.clone(), cache.clone(), shutdown.clone()));
        let ready = Arc::new(readiness::Readiness::default());
        tokio::spawn(readiness::watch(
            config.kafka.clone(),
            db.clone(),
            ready.clone(),
            lag.clone(),
            shutdown.clone(),
        ));
        Ok(Self(Arc::new(Inner {
            config,
            db,
            token,
            cache,
            lag,
            ready,
            runs: TaskTracker::new(),
            fetch_source,
            shutdown,
            templates: dashboard::templates()?,
        })))
    }

    /// The request timeout as a [`Duration`].
    fn timeout(&self) -> Duration {
        Duration::from_secs(self.config.web.request_timeout_secs.max(1))
    }
}

/// `/healthz`, `/readyz` and `/metrics`: what every long-running service serves.
fn ops_routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
}

/// The whole application of `weatherflow serve`.
pub fn app(state: AppState) -> Router {
    let api = Router::new()
        .route("/results", get(api::results))
        .route("/runs", get(api::runs))
        .route("/runs/{job}", post(trigger::start_run))
        .route("/jobs/{job}/pause", post(pause::pause_job))
        .route("/jobs/{job}/resume", post(pause::resume_job))
        .route("/status", get(api::status))
        .route("/observations/latest", get(api::latest_observations))
        .route("/observations", get(api::observations))
        .route("/rejections", get(api::rejections))
        .route("/rejects", get(api::rejects))
        .route("/schema/envelope", get(api::envelope_schema))
        .route("/openapi.json", get(openapi::openapi_json))
        .fallback(error::not_found);
    ops_routes()
        .route("/", get(dashboard::page))
        .nest("/api/v1", api)
        .layer(middleware::from_fn_with_state(state.clone(), count_request))
        .layer(middleware::from_fn_with_state(state.clone(), security_headers))
        .with_state(state)
}

/// Only the health and metrics endpoints (`scheduler --http`, `consumer --http`).
pub fn ops_app(state: AppState) -> Router {
    ops_routes()
        .layer(middleware::from_fn_with_state(state.clone(), count_request))
        .layer(middleware::from_fn_with_state(state.clone(), security_headers))
        .with_state(state)
}

/// The dashboard has no script, no frame, no form and no outside resource: the policy allows its
/// inline `<style>` and its images (the inline SVG plot) and nothing else, so an injected script
/// would not run even past the template's escaping. nginx sends the same headers (deploy/nginx).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// `Strict-Transport-Security` when `web.behind_tls`: a year, the usual floor for browsers' preload
/// lists. Sent only over TLS because a proxy that serves plain HTTP as well would lock its users out.
pub const STRICT_TRANSPORT_SECURITY: &str = "max-age=31536000";

/// Sets the security headers on every answer, errors and 404s included.
async fn security_headers(State(state): State<AppState>, req: Request, next: Next) -> Response {
    use axum::http::HeaderValue;
    use axum::http::header::{
        CONTENT_SECURITY_POLICY as CSP, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
    };
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(CSP, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if state.config.web.behind_tls {
        h.insert(
            axum::http::header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static(STRICT_TRANSPORT_SECURITY),
        );
    }
    resp
}

/// Records every request's route, status and time in the registry.
async fn count_request(State(_): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let started = Instant::now();
    let resp = next.run(req).await;
    crate::metrics::http_request(&route, resp.status().as_u16(), started.elapsed());
    resp
}

/// Binds `addr` and serves `router` until `shutdown`, then waits for manual runs to end.
pub async fn run(addr: &str, state: AppState, router: Router) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    let local = listener.local_addr()?;
    tracing::info!(%local, "http listening");
    server::serve(listener, router, state.timeout(), state.shutdown.clone()).await;
    state.runs.close();
    state.runs.wait().await;
    Ok(())
}

/// Starts the health-and-metrics listener of a long-running service on `addr` (`--http`), in the
/// background; it stops with `shutdown`.
pub async fn spawn_ops(
    addr: &str,
    config: Arc<Config>,
    db: DatabaseConnection,
    shutdown: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let state = AppState::start(config, db, shutdown.clone(), None)?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} (--http): {e}"))?;
    tracing::info!(local = %listener.local_addr()?, "health and metrics listening");
    let router = ops_app(state.clone());
    Ok(tokio::spawn(async move {
        server::serve(listener, router, state.timeout(), shutdown).await;
    }))
}
