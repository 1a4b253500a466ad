//! Validation of envelopes into typed observations (owned by the persist job).
