//! The one-pass parse side by side: validation of the same generated messages through the scanner
//! and through serde alone, in alternating rounds on one thread, so the ratio is not at the mercy of
//! which of the two ran in a neighbour's burst.

use std::time::Instant;

use chrono::Utc;

use super::{PLACES, envelope_bytes, payload};
use crate::jobs::persist::validate::{OnePass, Rules, validate_with};

/// Messages validated per round: enough for a round of milliseconds, few enough to stay in cache
/// like the consumer's batch does.
const MESSAGES: u64 = 20_000;
/// Alternating rounds of each parse; the median of each is printed.
const ROUNDS: usize = 7;

/// Prints the validation cost per message through each parse and their ratio.
pub(super) fn parse_costs() -> anyhow::Result<()> {
    let epoch0 = Utc::now().timestamp() - (MESSAGES / PLACES + 2) as i64 * 900;
    let messages: Vec<Vec<u8>> = (0..MESSAGES)
        .map(|i| envelope_bytes(payload(i, epoch0).1, Utc::now()))
        .collect::<anyhow::Result<_>>()?;
    let rules = Rules::default();
    let now = Utc::now();
    // Both parses must read every message to the same observation, or the timing compares nothing.
    for m in &messages {
        let fast = validate_with(OnePass::Scanner, Some(m), now, &rules);
        let slow = validate_with(OnePass::Serde, Some(m), now, &rules);
        anyhow::ensure!(
            fast.is_ok() && fast == slow,
            "the scanner and serde read a bench message differently"
        );
    }
    let mut times = [Vec::new(), Vec::new()];
    for _ in 0..ROUNDS {
        for (k, one_pass) in [OnePass::Scanner, OnePass::Serde].into_iter().enumerate() {
            let started = Instant::now();
            let valid = messages
                .iter()
                .filter(|m| validate_with(one_pass, Some(m), now, &rules).is_ok())
                .count();
            times[k].push(started.elapsed().as_secs_f64() * 1e6 / MESSAGES as f64);
            anyhow::ensure!(
                valid == messages.len(),
                "{one_pass:?}: {valid} of {MESSAGES} valid"
            );
        }
    }
    let [scanner, serde] = times.map(|mut t| {
        t.sort_by(f64::total_cmp);
        t[t.len() / 2]
    });
    println!(
        "  validate, per message            scanner {scanner:.2} µs, serde alone {serde:.2} µs, scanner / serde {:.2} (medians of {ROUNDS} alternating rounds of {MESSAGES})",
        scanner / serde
    );
    Ok(())
}
