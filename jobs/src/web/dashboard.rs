//! `GET /`: the dashboard, server-rendered by minijinja from `templates/dashboard.html`, with no
//! JavaScript. Every value is auto-escaped (the template's name ends in `.html`), so a location
//! named `<script>` shows as text; the only unescaped value is the plot, an SVG this process drew.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde_json::{Value, json};

use super::AppState;
use super::cache::UNTIL_WRITE;
use super::error::ApiError;
use super::params::Params;
use super::queries::{self, ResultRow};
use crate::envelope::Source;
use crate::jobs::analytics::SCOPE_ALL;
use crate::jobs::analytics::fit::LineFit;

/// Seconds between the page's own reloads.
pub const REFRESH_SECS: u64 = 30;

/// Points the dashboard's plot draws at most: enough to show the cloud, small enough to inline.
const PLOT_POINTS: usize = 1500;

/// Places the dashboard lists (the first, by key); `/api/v1/observations/latest` pages through all.
const DASHBOARD_PLACES: u64 = 100;

/// The compiled templates.
pub fn templates() -> anyhow::Result<minijinja::Environment<'static>> {
    let mut env = minijinja::Environment::new();
    env.add_template("dashboard.html", include_str!("templates/dashboard.html"))?;
    Ok(env)
}

/// `GET /`.
pub async fn page(State(state): State<AppState>, RawQuery(raw): RawQuery) -> Result<Response, ApiError> {
    Params::parse(raw.as_deref(), &[])?;
    let ttl = Duration::from_millis(state.config.web.cache_ttl_ms);
    let body = state
        .cache
        .get_or_fill("dashboard", ttl, || async {
            let ctx = context(&state).await?;
            state
                .templates
                .get_template("dashboard.html")
                .and_then(|t| t.render(minijinja::value::Serde(&ctx)))
                .map(Bytes::from)
                .map_err(|e| ApiError::internal("rendering the dashboard", e))
        })
        .await?;
    Ok(([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response())
}

async fn context(state: &AppState) -> Result<Value, ApiError> {
    let db = &state.db;
    let results: Vec<ResultRow> = crate::jobs::analytics::results::latest_per_scope(db, 200)
        .await?
        .into_iter()
        .map(ResultRow::from)
        .collect();
    let plot = plot_svg(state, results.iter().find(|r| r.scope == SCOPE_ALL)).await?;
    let status = super::api::status_value(state).await?;
    // The first page only: the page stays small whatever the number of places; the API pages on.
    let observations = queries::latest_observations(db, None, DASHBOARD_PLACES).await?;
    // The table's note says how many of the latest readings are made up, so a person sees it before
    // reading any number.
    let simulated_observations = observations
        .iter()
        .filter(|o| o.source == Source::Simulated.as_str())
        .count();
    let runs = queries::runs(db, None, None, 25).await?;
    let rejections = queries::rejection_summary(db).await?;
    Ok(json!({
        "refresh_secs": REFRESH_SECS,
        "generated_at": Utc::now().format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        "results": results,
        "plot_svg": plot,
        "jobs": status["jobs"],
        "lag": status["consumer_lag"],
        "tables": status["tables"],
        "quota": status["weatherapi_calls"],
        "observations": observations,
        "simulated_observations": simulated_observations,
        "places_shown": DASHBOARD_PLACES,
        "runs": runs,
        "rejections": rejections,
    }))
}

/// The scatter of scope `all` with its fitted line, drawn once per results generation (a write
/// invalidates it). `None` before the first fit.
async fn plot_svg(state: &AppState, all: Option<&ResultRow>) -> Result<Option<String>, ApiError> {
    let Some(all) = all else {
        return Ok(None);
    };
    let svg = state
        .cache
        .get_or_fill("plot", UNTIL_WRITE, || draw(state, all))
        .await?;
    Ok(Some(String::from_utf8_lossy(&svg).into_owned()))
}

async fn draw(state: &AppState, all: &ResultRow) -> Result<Bytes, ApiError> {
    let source = match all.source.as_str() {
        "weatherapi" => Some(Source::Weatherapi),
        "simulated" => Some(Source::Simulated),
        _ => None,
    };
    let (wind, temp) = queries::plot_samples(&state.db, PLOT_POINTS, source).await?;
    let fit = LineFit {
        n: usize::try_from(all.n_samples).unwrap_or(0),
        intercept: all.intercept,
        slope: all.slope,
        r_squared: all.r_squared,
        rmse: all.rmse,
        slope_stderr: all.slope_stderr,
    };
    let svg = tokio::task::spawn_blocking(move || {
        let scatter = crate::jobs::analytics::draw::Scatter {
            scope: SCOPE_ALL,
            wind: &wind,
            temp: &temp,
            origin: (0.0, 0.0),
            fit: &fit,
            max_points: PLOT_POINTS,
        };
        crate::jobs::analytics::draw::svg(&scatter).map(|s| scalable(&s))
    })
    .await
    .map_err(|e| ApiError::internal("drawing the plot", e))?
    .map_err(|e| ApiError::internal("drawing the plot", e))?;
    Ok(Bytes::from(svg))
}

/// plotters writes a fixed `width` and `height`; without them (the `viewBox` stays) the page scales
/// the plot to a phone's width.
fn scalable(svg: &str) -> String {
    let Some(start) = svg.find("<svg") else {
        return svg.to_owned();
    };
    let Some(end) = svg[start..].find('>').map(|e| start + e) else {
        return svg.to_owned();
    };
    let mut head = svg[start..end].to_owned();
    for name in [" width=\"", " height=\""] {
        if let Some(at) = head.find(name)
            && let Some(len) = head[at + name.len()..].find('"')
        {
            head.replace_range(at..at + name.len() + len + 1, "");
        }
    }
    if !head.contains("viewBox") {
        return svg.to_owned();
    }
    format!(
        "{}{head} role=\"img\" aria-label=\"temperature against wind speed\"{}",
        &svg[..start],
        &svg[end..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plot_scales() {
        let svg = r#"<svg width="960" height="640" viewBox="0 0 960 640" xmlns="x"><rect/></svg>"#;
        let out = scalable(svg);
        assert!(
            out.starts_with(r#"<svg viewBox="0 0 960 640" xmlns="x" role="img""#),
            "{out}"
        );
        assert!(out.ends_with("><rect/></svg>"), "{out}");
    }

    #[test]
    fn the_quota_section_shows_the_budget_when_there_is_one() {
        let env = templates().unwrap();
        let t = env.get_template("dashboard.html").unwrap();
        let quota = |budget: Option<u64>| {
            let usage = serde_json::to_value(crate::quota::Usage {
                month: chrono::NaiveDate::from_ymd_opt(2026, 12, 1).unwrap(),
                used: 80,
                budget,
                fraction: budget.map(|b| 80.0 / b as f64),
                remaining: budget.map(|b| b - 80),
                resets_at: "2027-01-01T00:00:00Z".parse().unwrap(),
            })
            .unwrap();
            let html = t
                .render(minijinja::value::Serde(&json!({ "quota": usage, "tables": {}, "jobs": [], "lag": {}, "runs": [], "rejections": {}, "observations": [], "results": [] })))
                .unwrap();
            let at = html.find("WeatherAPI calls this month").unwrap();
            html[at..].to_owned()
        };
        let with = quota(Some(200));
        assert!(with.contains("80 calls of 200 (40.0%), 120 left"), "{with}");
        let without = quota(None);
        assert!(without.contains("80 calls;") && !without.contains("left"), "{without}");
    }
}
