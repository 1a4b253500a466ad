//! The WeatherAPI.com client.
