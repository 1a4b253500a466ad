//! The `current.json` text: the real API's field order and number style, so that a simulated body
//! parses exactly like a recorded one.

use std::fmt::Write;

use chrono::{DateTime, FixedOffset, Offset, Utc};

use super::{Place, Weather, Zone};

const COMPASS: [&str; 16] = [
    "N", "NNE", "NE", "ENE", "E", "ESE", "SE", "SSE", "S", "SSW", "SW", "WSW", "W", "WNW", "NW", "NNW",
];

pub(super) fn compass(degree: u32) -> &'static str {
    COMPASS[((f64::from(degree) / 22.5).round() as usize) % 16]
}

/// Writes the body in the real API's field order and number style (`13.0`, not `13`).
pub(super) fn render(place: &Place, observed: DateTime<Utc>, w: &Weather) -> String {
    let (tz_id, local) = local_times(place.zone, observed);
    let epoch = observed.timestamp();
    let (day_text, night_text, code, icon) = w.condition;
    let text = if w.is_day { day_text } else { night_text };
    let period = if w.is_day { "day" } else { "night" };
    let mut s = String::with_capacity(1100);
    // Writing into a String cannot fail.
    let _ = write!(
        s,
        r#"{{"location":{{"name":{},"region":{},"country":{},"lat":{},"lon":{},"tz_id":"{tz_id}","localtime_epoch":{epoch},"localtime":"{}"}},"#,
        json_str(&place.name),
        json_str(&place.region),
        json_str(&place.country),
        num(place.lat, 4),
        num(place.lon, 4),
        local.format("%Y-%m-%d %-H:%M"),
    );
    let _ = write!(
        s,
        r#""current":{{"last_updated_epoch":{epoch},"last_updated":"{}","temp_c":{},"temp_f":{},"is_day":{},"condition":{{"text":"{text}","icon":"//cdn.weatherapi.com/weather/64x64/{period}/{icon}.png","code":{code}}},"#,
        local.format("%Y-%m-%d %H:%M"),
        f1(w.temp_c),
        f1(c_to_f(w.temp_c)),
        u8::from(w.is_day),
    );
    let _ = write!(
        s,
        r#""wind_mph":{},"wind_kph":{},"wind_degree":{},"wind_dir":"{}","pressure_mb":{},"pressure_in":{},"precip_mm":{},"precip_in":{},"humidity":{},"cloud":{},"#,
        f1(w.wind_kph * 0.621_371),
        f1(w.wind_kph),
        w.wind_degree,
        compass(w.wind_degree),
        f1(w.pressure_mb),
        num(w.pressure_mb * 0.029_53, 2),
        f1(w.precip_mm),
        num(w.precip_mm / 25.4, 2),
        w.humidity,
        w.cloud,
    );
    let _ = write!(
        s,
        r#""feelslike_c":{},"feelslike_f":{},"windchill_c":{},"windchill_f":{},"heatindex_c":{},"heatindex_f":{},"dewpoint_c":{},"dewpoint_f":{},"vis_km":{},"vis_miles":{},"uv":{},"gust_mph":{},"gust_kph":{}}}}}"#,
        f1(w.feelslike_c),
        f1(c_to_f(w.feelslike_c)),
        f1(w.windchill_c),
        f1(c_to_f(w.windchill_c)),
        f1(w.heatindex_c),
        f1(c_to_f(w.heatindex_c)),
        f1(w.dewpoint_c),
        f1(c_to_f(w.dewpoint_c)),
        f1(w.vis_km),
        f1((w.vis_km * 0.621_371).round()),
        f1(w.uv),
        f1(w.gust_kph * 0.621_371),
        f1(w.gust_kph),
    );
    s
}

/// The `tz_id` and the local time of `t`.
pub(super) fn local_times(zone: Zone, t: DateTime<Utc>) -> (String, DateTime<FixedOffset>) {
    match zone {
        Zone::Named(tz) => (tz.name().to_owned(), t.with_timezone(&tz).fixed_offset()),
        Zone::Hours(h) => {
            let h = h.clamp(-12, 14);
            // IANA's Etc zones count the other way round: Etc/GMT-1 is UTC+1.
            let id = match h {
                0 => "Etc/GMT".to_owned(),
                h if h > 0 => format!("Etc/GMT-{h}"),
                h => format!("Etc/GMT+{}", -h),
            };
            let offset = FixedOffset::east_opt(h * 3600).unwrap_or(Utc.fix());
            (id, t.with_timezone(&offset))
        }
    }
}

pub(super) fn c_to_f(c: f64) -> f64 {
    c * 9.0 / 5.0 + 32.0
}

/// One decimal, always written (`13.0`), never `-0.0`.
pub(super) fn f1(x: f64) -> String {
    num(x, 1)
}

/// At most `decimals` decimals, at least one (`29.85`, `0.0`, `1015.0`), like the API writes them.
pub(super) fn num(x: f64, decimals: i32) -> String {
    let r = round_to(x, decimals);
    let r = if r == 0.0 { 0.0 } else { r };
    let text = r.to_string();
    if text.contains('.') { text } else { text + ".0" }
}

pub(super) fn round_to(x: f64, decimals: i32) -> f64 {
    let m = 10f64.powi(decimals);
    (x * m).round() / m
}

pub(super) fn json_str(s: &str) -> String {
    // Serialising a &str cannot fail.
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}
