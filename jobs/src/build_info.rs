//! What this binary was built from (stamped by `jobs/build.rs`): `weatherflow --version`, `/healthz`
//! and the start-up log line name the same commit and profile.

/// The commit the binary was built from, 12 hex digits, or `unknown` (built outside a git checkout
/// without `BUILD_GIT_COMMIT`).
pub const COMMIT: &str = env!("WF_BUILD_COMMIT");

/// The cargo profile: `release` or `debug`.
pub const PROFILE: &str = env!("WF_BUILD_PROFILE");

/// `0.1.0 (commit 1a2b3c4d5e6f, release build)`: what `--version` prints after the name.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("WF_BUILD_COMMIT"),
    ", ",
    env!("WF_BUILD_PROFILE"),
    " build)"
);
