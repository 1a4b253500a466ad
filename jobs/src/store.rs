//! Batched, idempotent writes of observations and rejections (owned by the persist job).
