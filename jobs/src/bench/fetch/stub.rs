//! The bench's stand-in for WeatherAPI.com: `GET /v1/current.json?key=…&q=…` answered after a fixed
//! latency with the simulator's body for `q`, on a random loopback port. It records when the first
//! request arrived and when the last answer left, so a run's time splits into start-up, HTTP and
//! finish.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::Utc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::jobs::fetch::simulate;

/// The key the stub expects; a bench value, not a secret.
pub(super) const KEY: &str = "bench-key";

/// The first request's arrival, the last answer's departure and the answers given since the last
/// [`Stub::reset`].
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Window {
    pub(super) first_request: Option<Instant>,
    pub(super) last_answer: Option<Instant>,
    pub(super) requests: usize,
}

#[derive(Clone)]
struct Shared {
    latency: Duration,
    window: Arc<Mutex<Window>>,
}

/// A running stub; stops with the token it was started with.
pub(super) struct Stub {
    /// `http://127.0.0.1:<port>/v1`, the client's `weatherapi.base_url`.
    pub(super) base_url: String,
    window: Arc<Mutex<Window>>,
}

impl Stub {
    pub(super) async fn start(latency: Duration, stop: CancellationToken) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let window = Arc::new(Mutex::new(Window::default()));
        let shared = Shared {
            latency,
            window: window.clone(),
        };
        let app = Router::new()
            .route("/v1/current.json", get(current))
            .with_state(shared);
        tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned());
            if let Err(e) = serve.await {
                eprintln!("warning: the WeatherAPI stub stopped: {e}");
            }
        });
        Ok(Self {
            base_url: format!("http://127.0.0.1:{port}/v1"),
            window,
        })
    }

    /// The window since the last reset, and a new one begun.
    pub(super) fn reset(&self) -> Window {
        std::mem::take(&mut *self.window.lock().expect("stub window lock"))
    }
}

async fn current(State(s): State<Shared>, Query(params): Query<HashMap<String, String>>) -> Response {
    s.window
        .lock()
        .expect("stub window lock")
        .first_request
        .get_or_insert_with(Instant::now);
    tokio::time::sleep(s.latency).await;
    let answer = match (params.get("key").map(String::as_str), params.get("q")) {
        (Some(KEY), Some(q)) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            simulate::payload(q, Utc::now(), 1),
        )
            .into_response(),
        (Some(KEY), None) => error(StatusCode::BAD_REQUEST, 1003, "Parameter q is missing."),
        _ => error(StatusCode::UNAUTHORIZED, 2006, "API key provided is invalid"),
    };
    let mut w = s.window.lock().expect("stub window lock");
    w.last_answer = Some(Instant::now());
    w.requests += 1;
    answer
}

fn error(status: StatusCode, code: u32, message: &str) -> Response {
    let body = serde_json::json!({"error": {"code": code, "message": message}}).to_string();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}
