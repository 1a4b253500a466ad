//! Least-squares fits of temp_c on wind_kph (owned by the analytics job).
