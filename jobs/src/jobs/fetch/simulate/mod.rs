//! The simulated source: realistic WeatherAPI-shaped `current.json` bodies, deterministic for a seed.
//!
//! Used when no API key is configured (offline runs, demos, CI) and by the benchmarks, which call
//! [`payload`] directly to generate realistic messages and rows. The output is a pure function of
//! `(location, 15-minute bucket of the time, seed)`: fetching again within the same bucket yields the
//! same bytes, and so the same observation, which persist de-duplicates. **Keep [`payload`] stable**:
//! its randomness is a hand-written SplitMix64 over a FNV-1a hash, not `rand`, whose generators may
//! change between versions.
//!
//! The model, per place: an annual mean and seasonal swing by latitude (or from a small table of the
//! default locations in `schedules.toml`), a diurnal cycle on local solar time peaking at 15:00,
//! weather systems as smooth noise (pressure over 12 h, wind and cloud over 3 h), and temperature
//! falling 0.2 °C per km/h of wind above 12 km/h, plus noise — so the analytics regression of
//! `temp_c` on `wind_kph` has a real, known signal (slope ≈ −0.2).

use std::f64::consts::PI;

use chrono::{DateTime, Datelike, Timelike, Utc};
use chrono_tz::Tz;

mod render;

use self::render::*;

/// Observations are reported on this grid, like the real API (`last_updated_epoch` is a multiple).
pub const OBSERVATION_INTERVAL_SECS: i64 = 900;

/// Temperature change per km/h of wind, the signal the analytics job should find.
pub const WIND_TEMP_SLOPE: f64 = -0.2;

/// A place as the simulator reports it in `location`.
#[derive(Debug, Clone, PartialEq)]
pub struct Place {
    /// `location.name`.
    pub name: String,
    /// `location.region` (empty for pseudo-locations).
    pub region: String,
    /// `location.country` (`Simulated` for pseudo-locations).
    pub country: String,
    /// Latitude, decimal degrees.
    pub lat: f64,
    /// Longitude, decimal degrees.
    pub lon: f64,
    /// Time zone for `localtime` and `tz_id`.
    zone: Zone,
    /// Annual mean temperature, °C.
    mean_c: f64,
    /// Half the difference between the warmest and coldest month, °C.
    season_c: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Zone {
    Named(Tz),
    /// Whole hours east of UTC, for places without a table entry.
    Hours(i32),
}

/// One table entry: (name, region, country, lat, lon, tz, annual mean °C, seasonal half-range °C).
type Normals = (&'static str, &'static str, &'static str, f64, f64, Tz, f64, f64);

/// The default locations of `schedules.toml` with real coordinates and climate normals.
#[rustfmt::skip]
const KNOWN: [Normals; 12] = [
    ("London", "City of London, Greater London", "United Kingdom", 51.5171, -0.1062, Tz::Europe__London, 11.3, 6.8),
    ("Paris", "Ile-de-France", "France", 48.8567, 2.3508, Tz::Europe__Paris, 12.3, 7.6),
    ("Berlin", "Berlin", "Germany", 52.5167, 13.4, Tz::Europe__Berlin, 10.0, 9.3),
    ("Madrid", "Madrid", "Spain", 40.4, -3.6833, Tz::Europe__Madrid, 15.0, 10.0),
    ("Reykjavik", "Capital Region", "Iceland", 64.15, -21.95, Tz::Atlantic__Reykjavik, 5.0, 5.5),
    ("New York", "New York", "United States of America", 40.7142, -74.0064, Tz::America__New_York, 13.0, 12.0),
    ("Chicago", "Illinois", "United States of America", 41.85, -87.65, Tz::America__Chicago, 10.5, 14.0),
    ("Denver", "Colorado", "United States of America", 39.7392, -104.9847, Tz::America__Denver, 10.5, 11.5),
    ("Tokyo", "Tokyo", "Japan", 35.6895, 139.6917, Tz::Asia__Tokyo, 16.0, 10.5),
    ("Sydney", "New South Wales", "Australia", -33.8833, 151.2167, Tz::Australia__Sydney, 18.5, 5.0),
    ("Cape Town", "Western Cape", "South Africa", -33.9167, 18.4167, Tz::Africa__Johannesburg, 17.0, 4.5),
    ("Sao Paulo", "Sao Paulo", "Brazil", -23.5333, -46.6167, Tz::America__Sao_Paulo, 20.0, 3.5),
];

/// Resolves a WeatherAPI `q` to a place: a default location by name (case-insensitive), `lat,lon`
/// coordinates, or else a stable pseudo-location derived from a hash of the name.
pub fn place(location_q: &str) -> Place {
    let q = location_q.trim();
    if let Some(known) = KNOWN.iter().find(|k| k.0.eq_ignore_ascii_case(q)) {
        let (name, region, country, lat, lon, tz, mean_c, season_c) = *known;
        return Place {
            name: name.into(),
            region: region.into(),
            country: country.into(),
            lat,
            lon,
            zone: Zone::Named(tz),
            mean_c,
            season_c,
        };
    }
    let (lat, lon) = coordinates(q).unwrap_or_else(|| {
        // Pseudo-locations land in the populated latitudes.
        let h = fnv1a(q.to_lowercase().as_bytes());
        let lat = -55.0 + unit(splitmix(h)) * 120.0;
        let lon = -180.0 + unit(splitmix(h ^ 0x5bd1e995)) * 360.0;
        (round_to(lat, 4), round_to(lon, 4))
    });
    Place {
        name: q.to_owned(),
        region: String::new(),
        country: "Simulated".into(),
        lat,
        lon,
        zone: Zone::Hours((lon / 15.0).round() as i32),
        mean_c: 28.0 - 0.0065 * lat * lat,
        season_c: 1.0 + 0.14 * lat.abs(),
    }
}

/// `lat,lon` in decimal degrees, within range.
fn coordinates(q: &str) -> Option<(f64, f64)> {
    let (lat, lon) = q.split_once(',')?;
    let lat: f64 = lat.trim().parse().ok()?;
    let lon: f64 = lon.trim().parse().ok()?;
    ((-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon)).then_some((lat, lon))
}

/// The observation time the simulator reports for a fetch at `at`: `at` rounded down to
/// [`OBSERVATION_INTERVAL_SECS`].
pub fn observation_time(at: DateTime<Utc>) -> DateTime<Utc> {
    let secs = at.timestamp();
    let bucket = secs - secs.rem_euclid(OBSERVATION_INTERVAL_SECS);
    DateTime::from_timestamp(bucket, 0).unwrap_or(at)
}

/// A WeatherAPI `current.json` body (`{"location":…,"current":…}`, minified, fields in the real
/// API's order) for `location_q` at the observation time of `at`, from `seed`.
///
/// Deterministic: the same `(location_q, observation_time(at), seed)` always gives the same bytes;
/// another seed gives other weather. Values stay inside persist's validation ranges (temp_c
/// −90..60, humidity 0..100, wind_kph 0..420, pressure_mb 850..1090). Stable across releases: the
/// benchmarks and tests rely on it.
pub fn payload(location_q: &str, at: DateTime<Utc>, seed: u64) -> String {
    let place = place(location_q);
    let observed = observation_time(at);
    let w = Weather::at(&place, observed, seed);
    render(&place, observed, &w)
}

/// The simulated state of the atmosphere at one place and time.
struct Weather {
    temp_c: f64,
    is_day: bool,
    condition: (&'static str, &'static str, u16, u16),
    wind_kph: f64,
    wind_degree: u32,
    pressure_mb: f64,
    precip_mm: f64,
    humidity: u32,
    cloud: u32,
    feelslike_c: f64,
    windchill_c: f64,
    heatindex_c: f64,
    dewpoint_c: f64,
    vis_km: f64,
    uv: f64,
    gust_kph: f64,
}

/// Noise channels, so each quantity has its own independent series.
#[derive(Clone, Copy)]
enum Channel {
    Pressure = 1,
    Wind,
    WindDir,
    Cloud,
    Temp,
    Gust,
    Jitter,
}

struct Noise {
    seed: u64,
    place: u64,
    t: i64,
}

impl Noise {
    /// A standard-normal value at one knot of a channel's series.
    fn knot(&self, channel: Channel, index: i64) -> f64 {
        let mut h = self.seed ^ self.place.rotate_left(17);
        h = splitmix(h ^ (channel as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        h = splitmix(h ^ index as u64);
        let u1 = unit(h).max(1e-12);
        let u2 = unit(splitmix(h));
        (-2.0 * u1.ln()).sqrt() * (2.0 * PI * u2).cos()
    }

    /// A smooth standard-normal series: knots every `period` seconds, smoothstep between them,
    /// rescaled so the interpolation keeps unit variance.
    fn smooth(&self, channel: Channel, period: i64) -> f64 {
        let k = self.t.div_euclid(period);
        let f = (self.t - k * period) as f64 / period as f64;
        let s = f * f * (3.0 - 2.0 * f);
        let (a, b) = (self.knot(channel, k), self.knot(channel, k + 1));
        (a * (1.0 - s) + b * s) / ((1.0 - s).powi(2) + s * s).sqrt()
    }

    /// An independent standard-normal value for this instant.
    fn white(&self, channel: Channel) -> f64 {
        self.knot(channel, self.t)
    }
}

impl Weather {
    fn at(place: &Place, t: DateTime<Utc>, seed: u64) -> Self {
        let noise = Noise {
            seed,
            place: fnv1a(place_identity(place).as_bytes()),
            t: t.timestamp(),
        };
        let pressure_anom = noise.smooth(Channel::Pressure, 12 * 3600);
        let wind_noise = noise.smooth(Channel::Wind, 3 * 3600);
        let cloud_noise = noise.smooth(Channel::Cloud, 3 * 3600);

        let elevation = solar_elevation(place.lat, place.lon, t);
        let is_day = elevation > 0.0;
        let solar_hour = (t.hour() as f64 + t.minute() as f64 / 60.0 + place.lon / 15.0).rem_euclid(24.0);
        let diurnal = (2.0 * PI * (solar_hour - 15.0) / 24.0).cos();
        let hemisphere = if place.lat >= 0.0 { 1.0 } else { -1.0 };
        let season = hemisphere * (2.0 * PI * (t.ordinal() as f64 - 200.0) / 365.25).cos();

        // Lows bring wind and cloud; the wind is log-normal-ish with a median near 11 km/h.
        let wind_kph = round_to(
            (13.0 * (0.4 * wind_noise - 0.25 * pressure_anom).exp() - 2.0).clamp(0.0, 150.0),
            1,
        );
        let cloud = (50.0 + 35.0 * cloud_noise - 12.0 * pressure_anom).clamp(0.0, 100.0);
        let cloud_frac = cloud / 100.0;
        let diurnal_range = 4.5 * (1.0 - 0.5 * cloud_frac);
        let climate = place.mean_c + place.season_c * season;
        let temp_c = (climate
            + diurnal_range * diurnal
            + WIND_TEMP_SLOPE * (wind_kph - 12.0)
            + 1.2 * noise.smooth(Channel::Temp, 3600)
            + 0.4 * noise.white(Channel::Jitter))
        .clamp(-85.0, 55.0);
        let temp_c = round_to(temp_c, 1);

        let wet = cloud_noise - 0.5 * pressure_anom;
        let precip_mm = if cloud > 80.0 && wet > 1.0 {
            round_to((wet - 0.8) * 1.5, 1)
        } else {
            0.0
        };
        let humidity =
            (68.0 - 12.0 * diurnal + 10.0 * cloud_noise + if precip_mm > 0.0 { 15.0 } else { 0.0 })
                .clamp(8.0, 100.0)
                .round()
                .min(humidity_at_dew_point(temp_c, MAX_DEW_POINT_C).floor());
        let pressure_mb = (1013.0 + 9.0 * pressure_anom).clamp(960.0, 1050.0).round();
        let wind_degree = (250.0 + 80.0 * noise.smooth(Channel::WindDir, 6 * 3600)).rem_euclid(360.0) as u32;
        let gust_kph = round_to(wind_kph * (1.3 + 0.2 * noise.white(Channel::Gust).abs()) + 1.5, 1);

        let windchill_c = round_to(wind_chill(temp_c, wind_kph), 1);
        let heatindex_c = round_to(heat_index(temp_c, humidity), 1);
        let feelslike_c = if temp_c <= 10.0 && wind_kph > 4.8 {
            windchill_c
        } else if temp_c >= 27.0 {
            heatindex_c
        } else {
            temp_c
        };
        let dewpoint_c = round_to(dew_point(temp_c, humidity), 1);
        let vis_km = if precip_mm > 1.5 {
            5.0
        } else if precip_mm > 0.0 {
            8.0
        } else {
            10.0
        };
        let uv = if is_day {
            round_to(
                11.0 * elevation.sin().max(0.0).powf(1.5) * (1.0 - 0.6 * cloud_frac),
                1,
            )
        } else {
            0.0
        };
        let condition = condition(is_day, cloud, precip_mm, temp_c);
        Weather {
            temp_c,
            is_day,
            condition,
            wind_kph,
            wind_degree,
            pressure_mb,
            precip_mm,
            humidity: humidity as u32,
            cloud: cloud.round() as u32,
            feelslike_c,
            windchill_c,
            heatindex_c,
            dewpoint_c,
            vis_km,
            uv,
            gust_kph,
        }
    }
}

/// What seeds a place's series: its identity, so `London` and `london` share weather.
fn place_identity(place: &Place) -> String {
    crate::envelope::location_key(&place.name, &place.region, &place.country)
}

/// Solar elevation in radians (declination and hour angle; good to a degree or so).
fn solar_elevation(lat: f64, lon: f64, t: DateTime<Utc>) -> f64 {
    let decl = (23.44f64).to_radians() * (2.0 * PI * (284.0 + t.ordinal() as f64) / 365.0).sin();
    let solar_hour = t.hour() as f64 + t.minute() as f64 / 60.0 + lon / 15.0;
    let hour_angle = (15.0 * (solar_hour - 12.0)).to_radians();
    let lat = lat.to_radians();
    (lat.sin() * decl.sin() + lat.cos() * decl.cos() * hour_angle.cos()).asin()
}

/// (day text, night text, code, icon number) as WeatherAPI reports them.
fn condition(
    is_day: bool,
    cloud: f64,
    precip_mm: f64,
    temp_c: f64,
) -> (&'static str, &'static str, u16, u16) {
    match (precip_mm, temp_c) {
        (p, t) if p > 1.5 && t <= 0.0 => ("Moderate snow", "Moderate snow", 1219, 332),
        (p, t) if p > 0.0 && t <= 0.0 => ("Light snow", "Light snow", 1213, 326),
        (p, _) if p > 1.5 => ("Moderate rain", "Moderate rain", 1189, 302),
        (p, _) if p > 0.0 => ("Light rain", "Light rain", 1183, 296),
        _ if cloud < 10.0 => (if is_day { "Sunny" } else { "Clear" }, "Clear", 1000, 113),
        _ if cloud < 50.0 => ("Partly cloudy", "Partly cloudy", 1003, 116),
        _ if cloud < 85.0 => ("Cloudy", "Cloudy", 1006, 119),
        _ => ("Overcast", "Overcast", 1009, 122),
    }
}

/// The North American / UK wind-chill index (°C, km/h); equals `t` outside its domain.
fn wind_chill(t: f64, v: f64) -> f64 {
    if t > 10.0 || v <= 4.8 {
        return t;
    }
    let p = v.powf(0.16);
    13.12 + 0.6215 * t - 11.37 * p + 0.3965 * t * p
}

/// Rothfusz heat index (°C); equals `t` below 27 °C.
fn heat_index(t: f64, rh: f64) -> f64 {
    if t < 27.0 {
        return t;
    }
    let f = t * 9.0 / 5.0 + 32.0;
    let hi = -42.379 + 2.049_015_23 * f + 10.143_331_27 * rh
        - 0.224_755_41 * f * rh
        - 0.006_837_83 * f * f
        - 0.054_817_17 * rh * rh
        + 0.001_228_74 * f * f * rh
        + 0.000_852_82 * f * rh * rh
        - 0.000_001_99 * f * f * rh * rh;
    (hi - 32.0) * 5.0 / 9.0
}

/// The highest dew point the simulated air holds (°C). Without it a hot, wet hour reached 100 % at
/// 36 °C: a dew point beyond the world's record, and a heat index (`feelslike_c`) of 80 °C that
/// persist refuses as out of range. At 24 °C the heat index stays below 68 °C up to the 55 °C the
/// temperature is clamped to.
const MAX_DEW_POINT_C: f64 = 24.0;

/// The relative humidity (%) of air at `t` whose dew point is `dew` (the Magnus formula inverted).
fn humidity_at_dew_point(t: f64, dew: f64) -> f64 {
    100.0 * (magnus(dew) - magnus(t)).exp()
}

/// The Magnus formula's temperature term, `ln` of the saturation vapour pressure up to a constant.
fn magnus(t: f64) -> f64 {
    17.62 * t / (243.12 + t)
}

/// Magnus-formula dew point (°C).
fn dew_point(t: f64, rh: f64) -> f64 {
    let gamma = (rh.max(1.0) / 100.0).ln() + magnus(t);
    243.12 * gamma / (17.62 - gamma)
}

/// FNV-1a, 64 bit: a stable hash (std's hasher may change between Rust releases).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// SplitMix64's output function: a stable, well-mixed 64-bit hash of a 64-bit input.
fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A uniform value in [0, 1) from 53 random bits.
fn unit(x: u64) -> f64 {
    (x >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn same_bucket_and_seed_give_identical_bytes() {
        let a = payload("London", t("2026-01-05T17:01:00Z"), 7);
        let b = payload("london ", t("2026-01-05T17:14:59Z"), 7);
        assert_eq!(a, b);
        assert_ne!(a, payload("London", t("2026-01-05T17:15:00Z"), 7));
        assert_ne!(a, payload("London", t("2026-01-05T17:01:00Z"), 8));
    }

    #[test]
    fn output_is_pinned() {
        // Benchmarks and tests rely on payload() not drifting; a deliberate model change updates this.
        let p = payload("Paris", t("2026-03-01T12:00:00Z"), 1);
        assert_eq!(p, PINNED_PARIS);
    }

    const PINNED_PARIS: &str = r#"{"location":{"name":"Paris","region":"Ile-de-France","country":"France","lat":48.8567,"lon":2.3508,"tz_id":"Europe/Paris","localtime_epoch":1772366400,"localtime":"2026-03-01 13:00"},"current":{"last_updated_epoch":1772366400,"last_updated":"2026-03-01 13:00","temp_c":12.2,"temp_f":54.0,"is_day":1,"condition":{"text":"Cloudy","icon":"//cdn.weatherapi.com/weather/64x64/day/119.png","code":1006},"wind_mph":2.9,"wind_kph":4.7,"wind_degree":228,"wind_dir":"SW","pressure_mb":1011.0,"pressure_in":29.85,"precip_mm":0.0,"precip_in":0.0,"humidity":58,"cloud":50,"feelslike_c":12.2,"feelslike_f":54.0,"windchill_c":12.2,"windchill_f":54.0,"heatindex_c":12.2,"heatindex_f":54.0,"dewpoint_c":4.2,"dewpoint_f":39.6,"vis_km":10.0,"vis_miles":6.0,"uv":3.1,"gust_mph":5.3,"gust_kph":8.5}}"#;

    #[test]
    fn shape_matches_current_json() {
        let p = payload("Tokyo", t("2026-01-05T08:07:00Z"), 3);
        let v: Value = serde_json::from_str(&p).unwrap();
        assert_eq!(v["location"]["name"], "Tokyo");
        assert_eq!(v["location"]["tz_id"], "Asia/Tokyo");
        assert_eq!(v["location"]["localtime"], "2026-01-05 17:00");
        assert_eq!(v["current"]["last_updated"], "2026-01-05 17:00");
        assert_eq!(
            v["current"]["last_updated_epoch"],
            t("2026-01-05T08:00:00Z").timestamp()
        );
        for field in [
            "temp_c",
            "wind_kph",
            "pressure_mb",
            "humidity",
            "cloud",
            "gust_kph",
            "uv",
        ] {
            assert!(v["current"][field].is_number(), "{field} in {p}");
        }
        assert!(p.contains("\"pressure_mb\":") && !p.contains("-0.0"), "{p}");
        let early = payload("Tokyo", t("2026-01-04T21:00:00Z"), 3);
        assert!(
            early.contains("\"localtime\":\"2026-01-05 6:00\""),
            "hour not zero-padded: {early}"
        );
    }

    #[test]
    fn unknown_names_and_coordinates_give_stable_valid_places() {
        let a = place("Atlantis Springs");
        assert_eq!(a, place("Atlantis Springs"));
        assert_eq!(a.country, "Simulated");
        assert!((-90.0..=90.0).contains(&a.lat) && (-180.0..=180.0).contains(&a.lon));
        let c = place("48.8567,2.3508");
        assert_eq!((c.lat, c.lon), (48.8567, 2.3508));
        let p = payload("Atlantis \"Springs\"", t("2026-06-01T00:00:00Z"), 0);
        let v: Value = serde_json::from_str(&p).unwrap();
        assert_eq!(v["location"]["name"], "Atlantis \"Springs\"");
    }

    /// Every payload the simulator makes passes persist's validation: the pseudo-locations the fault
    /// and cluster stages' backlogs use (`bl-001`…), hot and humid ones among them, every hour of
    /// the day over a year. (`bl-029` at 2026-12-06 02:30 UTC once came out at 36.2 °C and 100 %, a
    /// `feelslike_c` of 79.6 °C, and failed the cluster stage's exactly-once count.)
    #[test]
    fn every_payload_passes_persist_validation() {
        use crate::envelope::{Envelope, Source};
        use crate::jobs::persist::validate::{Rules, validate};
        let start = t("2026-01-01T00:00:00Z");
        let rules = Rules::default();
        for k in 1..=100 {
            let q = format!("bl-{k:03}");
            // A dense sweep of the quantities that broke, without JSON.
            let place = place(&q);
            for step in 0..3000 {
                let w = Weather::at(&place, start + chrono::Duration::minutes(173 * step), 0);
                assert!((-100.0..=70.0).contains(&w.feelslike_c), "{q}: {}", w.feelslike_c);
                assert!(w.dewpoint_c <= MAX_DEW_POINT_C, "{q}: {}", w.dewpoint_c);
            }
            for step in 0..60 {
                let at = start + chrono::Duration::minutes(8761 * step);
                let body = serde_json::value::RawValue::from_string(payload(&q, at, 0)).unwrap();
                let envelope = Envelope::new(Source::Simulated, at, &q, body);
                if let Err(r) = validate(Some(&envelope.to_bytes()), at, &rules) {
                    panic!("{q} at {at}: {}", r.reason);
                }
            }
        }
        let hot_and_wet = payload("bl-029", t("2026-12-06T02:30:00Z"), 0);
        let c = &serde_json::from_str::<Value>(&hot_and_wet).unwrap()["current"];
        assert_eq!(c["temp_c"].as_f64(), Some(36.2), "the hour that failed: {c}");
        assert!(c["feelslike_c"].as_f64().unwrap() <= 70.0, "{c}");
        assert!(c["dewpoint_c"].as_f64().unwrap() <= MAX_DEW_POINT_C, "{c}");
    }

    #[test]
    fn values_stay_in_persist_ranges_everywhere() {
        let places = [
            "Reykjavik",
            "Sao Paulo",
            "-89.5,10",
            "89.9,-179",
            "0,0",
            "Nowhere",
        ];
        let mut at = t("2026-01-01T00:00:00Z");
        for i in 0..3000 {
            for (j, q) in places.iter().enumerate() {
                let v: Value = serde_json::from_str(&payload(q, at, i * 7 + j as u64)).unwrap();
                let c = &v["current"];
                let in_range = |f: &str, lo: f64, hi: f64| {
                    let x = c[f].as_f64().unwrap();
                    assert!((lo..=hi).contains(&x), "{q} {f}={x}");
                };
                in_range("temp_c", -90.0, 60.0);
                in_range("humidity", 0.0, 100.0);
                in_range("wind_kph", 0.0, 420.0);
                in_range("pressure_mb", 850.0, 1090.0);
            }
            at += chrono::Duration::minutes(173);
        }
    }

    #[test]
    fn temperature_falls_with_wind() {
        // Least-squares slope of temp_c on wind_kph over two months of one place.
        let (mut xs, mut ys) = (Vec::new(), Vec::new());
        let mut at = t("2026-04-01T00:00:00Z");
        for _ in 0..(60 * 24 * 4) {
            let v: Value = serde_json::from_str(&payload("Berlin", at, 42)).unwrap();
            xs.push(v["current"]["wind_kph"].as_f64().unwrap());
            ys.push(v["current"]["temp_c"].as_f64().unwrap());
            at += chrono::Duration::minutes(15);
        }
        let n = xs.len() as f64;
        let (mx, my) = (xs.iter().sum::<f64>() / n, ys.iter().sum::<f64>() / n);
        let sxy: f64 = xs.iter().zip(&ys).map(|(x, y)| (x - mx) * (y - my)).sum();
        let sxx: f64 = xs.iter().map(|x| (x - mx).powi(2)).sum();
        let slope = sxy / sxx;
        assert!((-0.3..=-0.1).contains(&slope), "slope {slope}");
        assert!(
            xs.iter().any(|w| *w > 25.0) && xs.iter().any(|w| *w < 5.0),
            "wind varies"
        );
    }
}
