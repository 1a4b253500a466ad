//! A local stand-in for WeatherAPI.com (axum, in-process, random port), answering like the real
//! service: the key is read from the query only and checked first (401/1002 missing, 401/2006
//! unknown, 403/2007 quota, 403/2008 disabled, 403/2009 bulk on the free plan); 400/1003 for a missing
//! `q`, 400/1006 for an unknown one; bulk `POST current.json?q=bulk` with 400/9000 for a bad body and
//! 400/9001 for more than 50 locations; JSON bodies from real recordings (floats written `1013.0`,
//! solar fields as bare `0`, an unpadded `localtime` hour); the CDN's headers; 400/1005 for any other
//! path.
//!
//! `history.json?q=&dt=yyyy-MM-dd` answers `{location, forecast:{forecastday:[{date, date_epoch, day,
//! astro, hour:[24 hours]}]}}` with no `current`, the hours at the location's local midnight onwards
//! (its `tz_id`), each with `time_epoch`, `time` and the measurements of the fixture's `current`
//! varied by the hour, so the fixture's own `last_updated` hour is the same observation. The plan's
//! depth is checked like the real service does: a day further back than the key's plan reaches
//! (Free 1 day, others 365) is 403/2009; a missing or malformed `dt`, one before 2010-01-01 or after
//! today is 400/9999 (the real service's code for these is not documented).
//!
//! Tests program failures per `q` ("the next N requests for London answer 503", "... 429 with
//! Retry-After", "... sleep past the client's timeout", "... a garbage body"); `q=bulk` targets bulk
//! requests. Every request is recorded, so tests can count attempts.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::Value;

/// The key the stub accepts with full (bulk-capable) access.
pub const KEY: &str = "stub-valid-key-0001";
/// A key whose monthly quota is used up (403/2007).
pub const QUOTA_KEY: &str = "stub-quota-exceeded";
/// A disabled key (403/2008).
pub const DISABLED_KEY: &str = "stub-disabled";
/// A free-plan key: single requests work, bulk answers 403/2009.
pub const FREE_PLAN_KEY: &str = "stub-free-plan";

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// Everything, bulk included.
    Valid,
    /// 403/2007 on every call.
    QuotaExceeded,
    /// 403/2008 on every call.
    Disabled,
    /// Single calls work; bulk is 403/2009.
    FreePlan,
}

/// A programmed failure for the next request(s) with a given `q`.
#[derive(Debug, Clone)]
pub enum Failure {
    /// This status with a CDN-style HTML body (e.g. 500, 502, 503).
    Status(u16),
    /// 429, with `Retry-After: <secs>` when given.
    RateLimited {
        /// The `Retry-After` seconds.
        retry_after_secs: Option<u64>,
    },
    /// Sleep this long, then answer normally (to outlast the client's timeout).
    Delay(Duration),
    /// 200 with this non-JSON body.
    Garbage(&'static str),
}

/// One request as the stub received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// When it arrived.
    pub at: Instant,
    /// GET or POST.
    pub method: String,
    /// The path, e.g. `/v1/current.json`.
    pub path: String,
    /// The decoded `q`.
    pub q: Option<String>,
    /// The decoded `key`.
    pub key: Option<String>,
    /// The decoded `aqi`.
    pub aqi: Option<String>,
    /// The request body, if any.
    pub body: Option<String>,
}

/// A location the stub knows, as JSON text written like the real API.
#[derive(Debug, Clone)]
pub struct Fixture {
    /// `q` values (lower-case) that resolve to it.
    pub aliases: Vec<String>,
    /// The `location` object.
    pub location: String,
    /// `current`'s fields up to `gust_kph`, without braces.
    pub current_fields: String,
    /// The `air_quality` object, sent only with `aqi=yes`.
    pub air_quality: Option<String>,
    /// Fields after `air_quality` (solar radiation), without braces.
    pub trailing_fields: Option<String>,
}

impl Fixture {
    /// The `current` object for `aqi`.
    pub fn current(&self, aqi: bool) -> String {
        let mut s = format!("{{{}", self.current_fields);
        if let (true, Some(aq)) = (aqi, &self.air_quality) {
            s.push_str(",\"air_quality\":");
            s.push_str(aq);
        }
        if let Some(t) = &self.trailing_fields {
            s.push(',');
            s.push_str(t);
        }
        s.push('}');
        s
    }

    /// The whole `current.json` body for `aqi`.
    pub fn body(&self, aqi: bool) -> String {
        format!(
            "{{\"location\":{},\"current\":{}}}",
            self.location,
            self.current(aqi)
        )
    }

    /// `(name, region, country)` of the location.
    pub fn names(&self) -> (String, String, String) {
        let v: Value = serde_json::from_str(&self.location).expect("fixture location is JSON");
        let s = |f: &str| v[f].as_str().unwrap_or_default().to_owned();
        (s("name"), s("region"), s("country"))
    }
}

fn fixture(
    aliases: &[&str],
    location: &str,
    current_fields: &str,
    aq: Option<&str>,
    trailing: Option<&str>,
) -> Fixture {
    Fixture {
        aliases: aliases.iter().map(|a| a.to_lowercase()).collect(),
        location: location.into(),
        current_fields: current_fields.into(),
        air_quality: aq.map(Into::into),
        trailing_fields: trailing.map(Into::into),
    }
}

/// The built-in locations: London 2026 (full shape, air quality, bare-0 solar fields), Roswell 2023
/// (minimal shape, unpadded `localtime`), New Delhi 2026 (non-zero solar), and the bulk docs'
/// Boston (`53,-0.12`) and Bell (`90201`).
pub fn builtin_fixtures() -> Vec<Fixture> {
    vec![
        fixture(
            &["London", "51.5171,-0.1062"],
            r#"{"name":"London","region":"City of London, Greater London","country":"United Kingdom","lat":51.5171,"lon":-0.1062,"tz_id":"Europe/London","localtime_epoch":1767633260,"localtime":"2026-01-05 17:14"}"#,
            r#""last_updated_epoch":1767632400,"last_updated":"2026-01-05 17:00","temp_c":0.1,"temp_f":32.2,"is_day":0,"condition":{"text":"Clear","icon":"//cdn.weatherapi.com/weather/64x64/night/113.png","code":1000},"wind_mph":8.1,"wind_kph":13.0,"wind_degree":318,"wind_dir":"NW","pressure_mb":1015.0,"pressure_in":29.97,"precip_mm":0.0,"precip_in":0.0,"humidity":69,"cloud":0,"feelslike_c":-3.9,"feelslike_f":25.0,"windchill_c":-4.0,"windchill_f":24.8,"heatindex_c":0.0,"heatindex_f":32.0,"dewpoint_c":-6.1,"dewpoint_f":21.1,"vis_km":10.0,"vis_miles":6.0,"uv":0.0,"gust_mph":13.1,"gust_kph":21.1"#,
            Some(
                r#"{"co":258.85,"no2":55.55,"o3":10.0,"so2":4.85,"pm2_5":9.95,"pm10":14.25,"us-epa-index":1,"gb-defra-index":1}"#,
            ),
            Some(r#""short_rad":0,"diff_rad":0,"dni":0,"gti":0"#),
        ),
        fixture(
            &["Roswell", "34.02,-84.36"],
            r#"{"name":"Roswell","region":"Georgia","country":"United States of America","lat":34.02,"lon":-84.36,"tz_id":"America/New_York","localtime_epoch":1697457029,"localtime":"2023-10-16 7:50"}"#,
            r#""last_updated_epoch":1697456700,"last_updated":"2023-10-16 07:45","temp_c":7.2,"temp_f":45.0,"is_day":1,"condition":{"text":"Sunny","icon":"//cdn.weatherapi.com/weather/64x64/day/113.png","code":1000},"wind_mph":8.1,"wind_kph":13.0,"wind_degree":330,"wind_dir":"NNW","pressure_mb":1013.0,"pressure_in":29.91,"precip_mm":0.0,"precip_in":0.0,"humidity":86,"cloud":0,"feelslike_c":5.1,"feelslike_f":41.1,"vis_km":16.0,"vis_miles":9.0,"uv":1.0,"gust_mph":11.8,"gust_kph":18.9"#,
            None,
            None,
        ),
        fixture(
            &["New Delhi", "Delhi"],
            r#"{"name":"New Delhi","region":"Delhi","country":"India","lat":28.6,"lon":77.2,"tz_id":"Asia/Kolkata","localtime_epoch":1769151600,"localtime":"2026-01-23 12:30"}"#,
            r#""last_updated_epoch":1769151600,"last_updated":"2026-01-23 12:30","temp_c":21.1,"temp_f":70.0,"is_day":1,"condition":{"text":"Mist","icon":"//cdn.weatherapi.com/weather/64x64/day/143.png","code":1030},"wind_mph":4.7,"wind_kph":7.6,"wind_degree":292,"wind_dir":"WNW","pressure_mb":1017.0,"pressure_in":30.03,"precip_mm":0.0,"precip_in":0.0,"humidity":53,"cloud":0,"feelslike_c":21.1,"feelslike_f":70.0,"windchill_c":22.5,"windchill_f":72.4,"heatindex_c":23.4,"heatindex_f":74.2,"dewpoint_c":6.3,"dewpoint_f":43.4,"vis_km":2.5,"vis_miles":1.0,"uv":4.3,"gust_mph":5.4,"gust_kph":8.7"#,
            Some(
                r#"{"co":1150.85,"no2":80.15,"o3":95.0,"so2":20.35,"pm2_5":180.25,"pm10":210.5,"us-epa-index":5,"gb-defra-index":10}"#,
            ),
            Some(r#""short_rad":114.12,"diff_rad":58.37,"dni":0.0,"gti":56.2"#),
        ),
        fixture(
            &["53,-0.12", "Boston, Lincolnshire"],
            r#"{"name":"Boston","region":"Lincolnshire","country":"United Kingdom","lat":53.0,"lon":-0.12,"tz_id":"Europe/London","localtime_epoch":1673620218,"localtime":"2023-01-13 14:30"}"#,
            r#""last_updated_epoch":1673620200,"last_updated":"2023-01-13 14:30","temp_c":8.7,"temp_f":47.7,"is_day":1,"condition":{"text":"Partly cloudy","icon":"//cdn.weatherapi.com/weather/64x64/day/116.png","code":1003},"wind_mph":24.2,"wind_kph":38.9,"wind_degree":260,"wind_dir":"W","pressure_mb":1005.0,"pressure_in":29.68,"precip_mm":0.0,"precip_in":0.0,"humidity":74,"cloud":75,"feelslike_c":4.4,"feelslike_f":39.9,"vis_km":10.0,"vis_miles":6.0,"uv":2.0,"gust_mph":33.1,"gust_kph":53.3"#,
            None,
            None,
        ),
        fixture(
            &["90201"],
            r#"{"name":"Bell","region":"California","country":"USA","lat":33.97,"lon":-118.17,"tz_id":"America/Los_Angeles","localtime_epoch":1673620220,"localtime":"2023-01-13 6:30"}"#,
            r#""last_updated_epoch":1673620200,"last_updated":"2023-01-13 06:30","temp_c":10.0,"temp_f":50.0,"is_day":0,"condition":{"text":"Clear","icon":"//cdn.weatherapi.com/weather/64x64/night/113.png","code":1000},"wind_mph":2.2,"wind_kph":3.6,"wind_degree":10,"wind_dir":"N","pressure_mb":1020.0,"pressure_in":30.13,"precip_mm":0.0,"precip_in":0.0,"humidity":74,"cloud":0,"feelslike_c":10.3,"feelslike_f":50.5,"vis_km":16.0,"vis_miles":9.0,"uv":1.0,"gust_mph":3.6,"gust_kph":5.8"#,
            None,
            None,
        ),
    ]
}

#[derive(Debug)]
struct Inner {
    keys: HashMap<String, KeyKind>,
    fixtures: Vec<Fixture>,
    failures: HashMap<String, VecDeque<Failure>>,
    requests: Vec<Recorded>,
    calls_left: u64,
}

type Shared = Arc<Mutex<Inner>>;

/// A running stub; it stops with the test's runtime.
#[derive(Clone)]
pub struct WeatherApiStub {
    /// `http://127.0.0.1:<port>/v1`, for `weatherapi.base_url`.
    pub base_url: String,
    inner: Shared,
}

impl WeatherApiStub {
    /// Starts a stub on a random local port with the built-in fixtures and keys.
    pub async fn start() -> Self {
        let keys = HashMap::from([
            (KEY.to_owned(), KeyKind::Valid),
            (QUOTA_KEY.to_owned(), KeyKind::QuotaExceeded),
            (DISABLED_KEY.to_owned(), KeyKind::Disabled),
            (FREE_PLAN_KEY.to_owned(), KeyKind::FreePlan),
        ]);
        let inner: Shared = Arc::new(Mutex::new(Inner {
            keys,
            fixtures: builtin_fixtures(),
            failures: HashMap::new(),
            requests: Vec::new(),
            calls_left: 5_000_000,
        }));
        let app = Router::new()
            .route("/v1/current.json", get(current).post(current_post))
            .route("/v1/forecast.json", get(forecast))
            .route("/v1/history.json", get(history))
            .route("/v1/future.json", get(future))
            .route("/v1/search.json", get(search))
            .fallback(invalid_url)
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the stub");
        let addr = listener.local_addr().expect("stub address");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        WeatherApiStub {
            base_url: format!("http://{addr}/v1"),
            inner,
        }
    }

    /// Registers another key.
    pub fn add_key(&self, key: &str, kind: KeyKind) {
        self.lock().keys.insert(key.to_owned(), kind);
    }

    /// The next `n` requests whose `q` is `q` (case-insensitive; `bulk` for bulk requests) fail so.
    pub fn fail_next(&self, q: &str, n: usize, failure: Failure) {
        let mut inner = self.lock();
        let queue = inner.failures.entry(q.to_lowercase()).or_default();
        queue.extend(std::iter::repeat_n(failure, n));
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().requests.clone()
    }

    /// Requests received with this `q` (case-insensitive).
    pub fn requests_for(&self, q: &str) -> Vec<Recorded> {
        let q = q.to_lowercase();
        self.requests()
            .into_iter()
            .filter(|r| r.q.as_deref().map(str::to_lowercase).as_deref() == Some(q.as_str()))
            .collect()
    }

    /// The fixture `q` resolves to.
    pub fn fixture(&self, q: &str) -> Fixture {
        find(&self.lock().fixtures, q).unwrap_or_else(|| panic!("no stub fixture for {q:?}"))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("stub state")
    }
}

fn find(fixtures: &[Fixture], q: &str) -> Option<Fixture> {
    let q = q.trim().to_lowercase();
    fixtures.iter().find(|f| f.aliases.contains(&q)).cloned()
}

type Params = HashMap<String, String>;

fn record(inner: &Shared, method: &Method, uri: &Uri, params: &Params, body: Option<&Bytes>) {
    let rec = Recorded {
        at: Instant::now(),
        method: method.to_string(),
        path: uri.path().to_owned(),
        q: params.get("q").cloned(),
        key: params.get("key").cloned(),
        aqi: params.get("aqi").cloned(),
        body: body.map(|b| String::from_utf8_lossy(b).into_owned()),
    };
    inner.lock().expect("stub state").requests.push(rec);
}

fn json(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn api_error(status: u16, code: i64, message: &str) -> Response {
    let status = StatusCode::from_u16(status).expect("status");
    json(
        status,
        serde_json::json!({"error": {"code": code, "message": message}}).to_string(),
    )
}

/// 200 with the CDN's headers and the remaining-calls counter.
fn ok(inner: &Shared, body: String) -> Response {
    let left = {
        let mut i = inner.lock().expect("stub state");
        i.calls_left = i.calls_left.saturating_sub(1);
        i.calls_left
    };
    let mut response = json(StatusCode::OK, body);
    let h: &mut HeaderMap = response.headers_mut();
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=180"),
    );
    h.insert("x-weatherapi-qpm-left", HeaderValue::from(left));
    h.insert("cdn-cache", HeaderValue::from_static("MISS"));
    h.insert(header::SERVER, HeaderValue::from_static("BunnyCDN-DE1-1055"));
    h.insert(header::VIA, HeaderValue::from_static("1.1 varnish"));
    response
}

/// Applies the programmed failure for `q`, if any: `Some(response)` answers instead of the API.
async fn injected(inner: &Shared, q: Option<&str>) -> Option<Response> {
    let failure = {
        let mut i = inner.lock().expect("stub state");
        let q = q?.trim().to_lowercase();
        i.failures.get_mut(&q).and_then(VecDeque::pop_front)
    }?;
    match failure {
        Failure::Status(code) => {
            let status = StatusCode::from_u16(code).expect("status");
            let body = format!(
                "<html><body><h1>{code} {}</h1></body></html>",
                status.canonical_reason().unwrap_or("")
            );
            Some((status, [(header::CONTENT_TYPE, "text/html")], body).into_response())
        }
        Failure::RateLimited { retry_after_secs } => {
            let mut r = StatusCode::TOO_MANY_REQUESTS.into_response();
            if let Some(s) = retry_after_secs {
                r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s));
            }
            Some(r)
        }
        Failure::Delay(d) => {
            tokio::time::sleep(d).await;
            None
        }
        Failure::Garbage(body) => {
            Some((StatusCode::OK, [(header::CONTENT_TYPE, "text/html")], body).into_response())
        }
    }
}

/// An API error answer: (HTTP status, code, message).
type Refusal = (u16, i64, &'static str);

fn refuse((status, code, message): Refusal) -> Response {
    api_error(status, code, message)
}

/// Checks the key: `Err(refusal)` when the API would refuse it.
fn authenticate(inner: &Shared, params: &Params, bulk: bool) -> Result<(), Refusal> {
    let key = params.get("key").map(String::as_str).unwrap_or("");
    if key.is_empty() {
        return Err((401, 1002, "API key is invalid or not provided."));
    }
    let kind = inner.lock().expect("stub state").keys.get(key).copied();
    match kind {
        None => Err((401, 2006, "API key is invalid.")),
        Some(KeyKind::QuotaExceeded) => Err((403, 2007, "API key has exceeded calls per month quota.")),
        Some(KeyKind::Disabled) => Err((403, 2008, "API key has been disabled.")),
        Some(KeyKind::FreePlan) if bulk => Err((
            403,
            2009,
            "API key does not have access to the resource. Please check pricing page for what is allowed in your API subscription plan.",
        )),
        Some(_) => Ok(()),
    }
}

/// The fixture for the request's `q`, or the API's 1003/1006 answer.
fn locate(inner: &Shared, params: &Params) -> Result<Fixture, Refusal> {
    let q = params.get("q").map(|q| q.trim()).unwrap_or("");
    if q.is_empty() {
        return Err((400, 1003, "Parameter q is missing."));
    }
    find(&inner.lock().expect("stub state").fixtures, q).ok_or((400, 1006, "No matching location found."))
}

fn aqi(params: &Params) -> bool {
    params.get("aqi").is_some_and(|v| v == "yes")
}

async fn current(
    State(inner): State<Shared>,
    method: Method,
    uri: Uri,
    Query(params): Query<Params>,
) -> Response {
    record(&inner, &method, &uri, &params, None);
    current_answer(&inner, &params).await
}

/// The single-location `current.json` answer: injected failure, then key, then `q`.
async fn current_answer(inner: &Shared, params: &Params) -> Response {
    if let Some(r) = injected(inner, params.get("q").map(String::as_str)).await {
        return r;
    }
    if let Err(r) = authenticate(inner, params, false) {
        return refuse(r);
    }
    match locate(inner, params) {
        Ok(f) => ok(inner, f.body(aqi(params))),
        Err(r) => refuse(r),
    }
}

async fn current_post(
    State(inner): State<Shared>,
    method: Method,
    uri: Uri,
    Query(params): Query<Params>,
    body: Bytes,
) -> Response {
    record(&inner, &method, &uri, &params, Some(&body));
    if params.get("q").map(String::as_str) != Some("bulk") {
        return current_answer(&inner, &params).await;
    }
    if let Some(r) = injected(&inner, Some("bulk")).await {
        return r;
    }
    if let Err(r) = authenticate(&inner, &params, true) {
        return refuse(r);
    }
    let invalid = || {
        api_error(
            400,
            9000,
            "Json body passed in bulk request is invalid. Please make sure it is valid json with utf-8 encoding.",
        )
    };
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return invalid();
    };
    let Some(locations) = request.get("locations").and_then(Value::as_array) else {
        return invalid();
    };
    if locations.len() > 50 {
        return api_error(
            400,
            9001,
            "Json body contains too many locations for bulk request. Please keep it below 50 in a single request.",
        );
    }
    let fixtures = inner.lock().expect("stub state").fixtures.clone();
    let with_aqi = aqi(&params);
    let mut entries = Vec::with_capacity(locations.len());
    for loc in locations {
        let Some(q) = loc.get("q").and_then(Value::as_str) else {
            return invalid();
        };
        let mut entry = String::from("{\"query\":{");
        if let Some(id) = loc.get("custom_id") {
            entry.push_str(&format!("\"custom_id\":{id},"));
        }
        entry.push_str(&format!("\"q\":{}", Value::from(q)));
        match find(&fixtures, q) {
            Some(f) => entry.push_str(&format!(
                ",\"location\":{},\"current\":{}",
                f.location,
                f.current(with_aqi)
            )),
            None => entry.push_str(",\"error\":{\"code\":1006,\"message\":\"No matching location found.\"}"),
        }
        entry.push_str("}}");
        entries.push(entry);
    }
    ok(&inner, format!("{{\"bulk\":[{}]}}", entries.join(",")))
}

/// forecast.json: shape only (`forecastday` is empty); our client does not call it.
async fn forecast(
    State(inner): State<Shared>,
    method: Method,
    uri: Uri,
    Query(params): Query<Params>,
) -> Response {
    shape_only(&inner, &method, &uri, &params, true)
}

/// future.json: shape only, no `current`.
async fn future(
    State(inner): State<Shared>,
    method: Method,
    uri: Uri,
    Query(params): Query<Params>,
) -> Response {
    shape_only(&inner, &method, &uri, &params, false)
}

/// How many days back `history.json` reaches for a key of this kind.
fn history_depth(kind: Option<KeyKind>) -> i64 {
    match kind {
        Some(KeyKind::FreePlan) => 1,
        _ => 365,
    }
}

/// history.json: one local day's 24 hours for the location, after the usual checks and the plan's
/// depth.
async fn history(
    State(inner): State<Shared>,
    method: Method,
    uri: Uri,
    Query(params): Query<Params>,
) -> Response {
    record(&inner, &method, &uri, &params, None);
    if let Some(r) = injected(&inner, params.get("q").map(String::as_str)).await {
        return r;
    }
    if let Err(r) = authenticate(&inner, &params, false) {
        return refuse(r);
    }
    let f = match locate(&inner, &params) {
        Ok(f) => f,
        Err(r) => return refuse(r),
    };
    let internal = || api_error(400, 9999, "Internal application error.");
    let Some(day) = params
        .get("dt")
        .and_then(|d| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
    else {
        return internal();
    };
    let today = chrono::Utc::now().date_naive();
    let earliest = chrono::NaiveDate::from_ymd_opt(2010, 1, 1).expect("date");
    if day < earliest || day > today {
        return internal();
    }
    let kind = {
        let i = inner.lock().expect("stub state");
        params.get("key").and_then(|k| i.keys.get(k).copied())
    };
    if (today - day).num_days() > history_depth(kind) {
        return api_error(
            403,
            2009,
            "API key does not have access to the resource. Please check pricing page for what is allowed in your API subscription plan.",
        );
    }
    ok(&inner, history_body(&f, day, aqi(&params)))
}

/// The `history.json` body of fixture `f` for local day `day`.
pub fn history_body(f: &Fixture, day: chrono::NaiveDate, with_aqi: bool) -> String {
    use chrono::TimeZone;
    let loc: Value = serde_json::from_str(&f.location).expect("fixture location is JSON");
    let tz: chrono_tz::Tz = loc["tz_id"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .unwrap_or(chrono_tz::UTC);
    let midnight = tz
        .from_local_datetime(&day.and_hms_opt(0, 0, 0).expect("midnight"))
        .earliest()
        .expect("local midnight exists")
        .timestamp();
    let current: serde_json::Map<String, Value> =
        serde_json::from_str(&f.current(with_aqi)).expect("fixture current is JSON");
    let base = current.get("temp_c").and_then(Value::as_f64).unwrap_or(10.0);
    let hours: Vec<String> = (0..24)
        .map(|h| {
            let epoch = midnight + h * 3600;
            let local = tz.timestamp_opt(epoch, 0).single().expect("an instant");
            let mut fields = vec![
                format!("\"time_epoch\":{epoch}"),
                format!("\"time\":\"{}\"", local.format("%Y-%m-%d %H:%M")),
            ];
            // The fixture's own hour keeps its measurements; the others vary by a few tenths.
            let temp = if local.format("%H:%M").to_string() == current_time(&current) {
                base
            } else {
                ((base + ((h as f64) * 0.7).sin() * 3.0) * 10.0).round() / 10.0
            };
            for (k, v) in &current {
                match k.as_str() {
                    "last_updated_epoch" | "last_updated" => {}
                    "temp_c" => fields.push(format!("\"temp_c\":{temp:?}")),
                    _ => fields.push(format!("{}:{v}", Value::from(k.as_str()))),
                }
            }
            fields.push("\"snow_cm\":0.0,\"will_it_rain\":0,\"chance_of_rain\":0,\"will_it_snow\":0,\"chance_of_snow\":0".into());
            format!("{{{}}}", fields.join(","))
        })
        .collect();
    format!(
        "{{\"location\":{},\"forecast\":{{\"forecastday\":[{{\"date\":\"{day}\",\"date_epoch\":{midnight},\"day\":{{\"maxtemp_c\":{:.1},\"mintemp_c\":{:.1},\"avgtemp_c\":{base:.1},\"maxwind_kph\":20.2,\"totalprecip_mm\":0.0,\"avghumidity\":70,\"condition\":{{\"text\":\"Partly cloudy\",\"icon\":\"//cdn.weatherapi.com/weather/64x64/day/116.png\",\"code\":1003}},\"uv\":1.0}},\"astro\":{{\"sunrise\":\"08:06 AM\",\"sunset\":\"04:03 PM\",\"moonrise\":\"07:12 PM\",\"moonset\":\"10:45 AM\",\"moon_phase\":\"Waning Gibbous\",\"moon_illumination\":\"99\",\"is_moon_up\":0,\"is_sun_up\":0}},\"hour\":[{}]}}]}}}}",
        f.location,
        base + 3.0,
        base - 3.0,
        hours.join(",")
    )
}

/// The `HH:MM` of the fixture's `current.last_updated`.
fn current_time(current: &serde_json::Map<String, Value>) -> String {
    let t = current.get("last_updated").and_then(Value::as_str).unwrap_or("");
    t.rsplit(' ')
        .next()
        .map(|hm| format!("{hm:0>5}"))
        .unwrap_or_default()
}

/// A forecast-shaped answer with an empty `forecastday` list, after the usual checks; with or
/// without `current` (forecast has it, history and future do not).
fn shape_only(inner: &Shared, method: &Method, uri: &Uri, params: &Params, with_current: bool) -> Response {
    record(inner, method, uri, params, None);
    if let Err(r) = authenticate(inner, params, false) {
        return refuse(r);
    }
    match locate(inner, params) {
        Ok(f) => {
            let current = if with_current {
                format!(",\"current\":{}", f.current(aqi(params)))
            } else {
                String::new()
            };
            ok(
                inner,
                format!(
                    "{{\"location\":{}{current},\"forecast\":{{\"forecastday\":[]}}}}",
                    f.location
                ),
            )
        }
        Err(r) => refuse(r),
    }
}

/// search.json: an array of hits by name prefix; `[]` when nothing matches.
async fn search(
    State(inner): State<Shared>,
    method: Method,
    uri: Uri,
    Query(params): Query<Params>,
) -> Response {
    record(&inner, &method, &uri, &params, None);
    if let Err(r) = authenticate(&inner, &params, false) {
        return refuse(r);
    }
    let q = params
        .get("q")
        .map(|q| q.trim().to_lowercase())
        .unwrap_or_default();
    if q.is_empty() {
        return api_error(400, 1003, "Parameter q is missing.");
    }
    let fixtures = inner.lock().expect("stub state").fixtures.clone();
    // Written by hand to keep the API's field order (serde_json's map would sort the keys).
    let hits: Vec<String> = fixtures
        .iter()
        .enumerate()
        .filter_map(|(i, f)| {
            let loc: Value = serde_json::from_str(&f.location).ok()?;
            let (name, region, country) = f.names();
            name.to_lowercase().starts_with(&q).then(|| {
                let url = format!("{name} {region} {country}")
                    .to_lowercase()
                    .split(|c: char| !c.is_alphanumeric())
                    .filter(|w| !w.is_empty())
                    .collect::<Vec<_>>()
                    .join("-");
                format!(
                    "{{\"id\":{},\"name\":{},\"region\":{},\"country\":{},\"lat\":{},\"lon\":{},\"url\":{}}}",
                    2_801_268 + i,
                    Value::from(name),
                    Value::from(region),
                    Value::from(country),
                    loc["lat"],
                    loc["lon"],
                    Value::from(url)
                )
            })
        })
        .collect();
    ok(&inner, format!("[{}]", hits.join(",")))
}

async fn invalid_url(
    State(inner): State<Shared>,
    method: Method,
    uri: Uri,
    Query(params): Query<Params>,
) -> Response {
    record(&inner, &method, &uri, &params, None);
    api_error(400, 1005, "API request url is invalid.")
}

/// A WeatherAPI stand-in that never answers in time: every request hangs for a minute. Its base URL
/// and the server's task.
pub async fn hanging() -> (String, tokio::task::JoinHandle<()>) {
    let app = axum::Router::new().fallback(|| async {
        tokio::time::sleep(std::time::Duration::from_secs(60)).await;
        "{}"
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (format!("http://{addr}/v1"), server)
}
