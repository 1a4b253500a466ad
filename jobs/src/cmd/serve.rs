//! `weatherflow serve`: the web application (docs/web.md), until SIGTERM or SIGINT; and the
//! `--http` listener of the long-running services.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::jobs::fetch::AutoSource;
use crate::{db, web};

/// Serves the dashboard, the API, health and metrics on `listen` (default: `web.listen`).
pub async fn run(config: &Config, listen: Option<&str>, shutdown: CancellationToken) -> anyhow::Result<()> {
    let conn = db::connect(&config.database).await?;
    let addr = listen.unwrap_or(&config.web.listen).to_owned();
    // `auto` of the fetches POST /api/v1/runs/fetch starts, decided (and logged) once.
    let fetch_source = AutoSource::at_start(config)?;
    let state = web::AppState::start(Arc::new(config.clone()), conn, shutdown, Some(fetch_source))?;
    if state.token.is_none() {
        tracing::info!("web.token is not set: POST /api/v1/runs/{{job}} answers 403");
    }
    web::run(&addr, state.clone(), web::app(state)).await
}

/// Starts `/healthz`, `/readyz` and `/metrics` on `addr` in the background when `--http` is given.
pub async fn ops(
    config: &Config,
    addr: Option<&str>,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    let Some(addr) = addr else {
        return Ok(None);
    };
    let conn = db::connect(&config.database).await?;
    let handle = web::spawn_ops(addr, Arc::new(config.clone()), conn, shutdown.clone()).await?;
    Ok(Some(handle))
}
