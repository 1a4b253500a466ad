//! The simulated source: realistic WeatherAPI-shaped payloads, deterministic for a seed.
