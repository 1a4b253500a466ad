//! The scheduler service: runs the jobs of `schedules.toml` on their cron schedules.
