//! Token-bucket rate limiting of outgoing API requests (owned by the fetch job).
