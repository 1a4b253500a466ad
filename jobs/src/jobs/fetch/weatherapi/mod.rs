//! The WeatherAPI.com client: `current.json` for one location or in bulk, errors by class, retries.
//!
//! * [`WeatherApi`] holds one pooled HTTPS client (rustls) and the key. The key is sent only as the
//!   `key` query parameter and appears in no log line, error or `Debug` output: reqwest errors have
//!   their URL stripped, and the client logs locations, never URLs.
//! * [`ApiError::class`] tells the caller what to do: stop the run (key/account problems), fail one
//!   location (unknown place, unparsable body), or retry (429, 5xx, network, timeout). Retries are
//!   done here, bounded by attempts and total time, paced by the fetch job's token bucket.
//! * `history.json` ([`WeatherApi::history`]) gives one local day's hours, each turned into a
//!   `current.json`-shaped payload (see [`HistoryDay`]).
//! * Bodies are not re-serialised: [`Current::payload`] is the server's bytes.
//!
//! The test stub in `jobs/tests/common/weatherapi_stub.rs` answers like the real service (statuses,
//! error codes, bodies, bulk shape); the tests in `jobs/tests/fetch.rs` drive this client against it.

mod body;
mod client;
mod error;
mod history;

pub use body::{Current, Location};
pub use client::{Attempted, BULK_MAX, WeatherApi};
pub use error::{ApiError, ApiErrorAction};
pub use history::{HistoryDay, HistoryHour};
