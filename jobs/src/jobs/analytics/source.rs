//! Which observations a fit uses: one source, never a mix of WeatherAPI and simulated rows.
//!
//! `auto` (the default) fits the WeatherAPI rows when the window has any and the simulated rows only
//! when it has nothing else, so a simulated run beside real data leaves the published regression
//! as it was. `weatherapi` and `simulated` pick one explicitly. Whether the window holds a WeatherAPI
//! row is one probe of the `(source, observed_at)` index per partition of the window.

use serde::Deserialize;

use super::read::{Window, any_of_sql};
use crate::envelope::Source;

/// The source a run fits: `--source`, or `source` in `[analytics.args]` of `schedules.toml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum FitSource {
    /// WeatherAPI rows when the window has any, else the simulated ones.
    #[default]
    Auto,
    /// WeatherAPI rows only.
    Weatherapi,
    /// Simulated rows only.
    Simulated,
}

impl FitSource {
    /// The name used in flags, `schedules.toml` and run details.
    pub fn as_str(self) -> &'static str {
        match self {
            FitSource::Auto => "auto",
            FitSource::Weatherapi => "weatherapi",
            FitSource::Simulated => "simulated",
        }
    }
}

/// The source to fit, and why it was chosen (for the log and the run's details).
pub(crate) async fn resolve(
    pool: &sqlx::PgPool,
    window: Window,
    choice: FitSource,
) -> Result<(Source, &'static str), sqlx::Error> {
    match choice {
        FitSource::Weatherapi => Ok((Source::Weatherapi, "chosen: --source weatherapi")),
        FitSource::Simulated => Ok((Source::Simulated, "chosen: --source simulated")),
        FitSource::Auto => {
            let mut query =
                sqlx::query_scalar::<_, bool>(sqlx::AssertSqlSafe(any_of_sql(window, Source::Weatherapi)));
            for b in [window.0, window.1].into_iter().flatten() {
                query = query.bind(b);
            }
            Ok(if query.fetch_one(pool).await? {
                (
                    Source::Weatherapi,
                    "auto: the window holds WeatherAPI observations",
                )
            } else {
                (
                    Source::Simulated,
                    "auto: the window holds no WeatherAPI observation, only simulated ones (if any)",
                )
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_asks_for_weatherapi_rows_in_the_window() {
        let t = Some(chrono::Utc::now());
        let sql = any_of_sql((t, None), Source::Weatherapi);
        assert_eq!(
            sql,
            "SELECT EXISTS (SELECT 1 FROM observations\nWHERE observed_at >= $1\n  AND source = 'weatherapi')"
        );
        assert!(any_of_sql((None, None), Source::Weatherapi).ends_with("WHERE source = 'weatherapi')"));
    }

    #[test]
    fn the_choice_reads_from_schedules_toml() {
        #[derive(Deserialize)]
        struct Args {
            source: FitSource,
        }
        let args: Args = toml::from_str("source = \"weatherapi\"").unwrap();
        assert_eq!(args.source, FitSource::Weatherapi);
        assert!(toml::from_str::<Args>("source = \"mixed\"").is_err());
    }
}
