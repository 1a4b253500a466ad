//! CPU time of a benchmark phase, split between this process, PostgreSQL and the rest of the
//! machine (the broker, mostly), from `/proc`. The benchmark runs everything on one host, so the
//! split says whose work a phase was: a rate alone cannot tell a slow consumer from a busy server.
//! The time the hypervisor took from the machine (steal) is counted apart: it is nobody's work here,
//! but it says how far a run's rates were held down by other tenants.

use std::time::Duration;

/// `/proc` counts in clock ticks of 1/100 s (`USER_HZ`, 100 on every Linux architecture we run).
const TICK: Duration = Duration::from_millis(10);

/// Cumulative CPU time at one instant.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Cpu {
    own: u64,
    postgres: u64,
    machine: u64,
    steal: u64,
}

/// CPU time spent between two [`Cpu`] readings.
#[derive(Debug, Clone, Copy)]
pub(super) struct CpuUse {
    /// This process, all threads.
    pub(super) own: Duration,
    /// Every `postgres` process, with the backends that exited meanwhile (their time is in their
    /// parent's children counters).
    pub(super) postgres: Duration,
    /// The rest of the machine's busy time: the broker's JVM and whatever else ran.
    pub(super) rest: Duration,
    /// Time the hypervisor gave the machine's CPUs to other guests.
    pub(super) steal: Duration,
}

impl Cpu {
    /// Reads the counters now. Off Linux, or where `/proc` cannot be read, everything is zero.
    pub(super) fn now() -> Self {
        let own = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|s| ticks(&s, false))
            .unwrap_or(0);
        let (machine, steal) = machine_ticks().unwrap_or((0, 0));
        Self {
            own,
            postgres: postgres_ticks(),
            machine,
            steal,
        }
    }

    /// What was spent since `earlier`.
    pub(super) fn since(&self, earlier: &Cpu) -> CpuUse {
        let own = self.own.saturating_sub(earlier.own);
        let postgres = self.postgres.saturating_sub(earlier.postgres);
        let machine = self.machine.saturating_sub(earlier.machine);
        CpuUse {
            own: TICK * own as u32,
            postgres: TICK * postgres as u32,
            rest: TICK * machine.saturating_sub(own + postgres) as u32,
            steal: TICK * self.steal.saturating_sub(earlier.steal) as u32,
        }
    }
}

impl CpuUse {
    /// "weatherflow 1.23 s, PostgreSQL 2.34 s, rest of the machine 0.50 s, stolen 0.10 s" per million
    /// of `rows` rows.
    pub(super) fn per_million(&self, rows: u64) -> String {
        let per = |d: Duration| d.as_secs_f64() * 1e6 / rows.max(1) as f64;
        format!(
            "weatherflow {:.2} s, PostgreSQL {:.2} s, rest of the machine {:.2} s, stolen by the hypervisor {:.2} s",
            per(self.own),
            per(self.postgres),
            per(self.rest),
            per(self.steal)
        )
    }
}

/// utime + stime of a `/proc/<pid>/stat` line, with the reaped children's (cutime + cstime) when
/// `children`. The command name may hold spaces and parentheses, so fields count from the last `)`.
fn ticks(stat: &str, children: bool) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After the name: state (field 3), ..., utime (14), stime (15), cutime (16), cstime (17).
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    let mut sum = field(14)? + field(15)?;
    if children {
        sum += field(16)? + field(17)?;
    }
    Some(sum)
}

fn postgres_ticks() -> u64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut sum = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        if std::fs::read_to_string(path.join("comm")).is_ok_and(|c| c.trim_end() == "postgres")
            && let Ok(stat) = std::fs::read_to_string(path.join("stat"))
        {
            sum += ticks(&stat, true).unwrap_or(0);
        }
    }
    sum
}

/// All CPUs' busy time (the `cpu` line of `/proc/stat`: user, nice, system, irq, softirq) and
/// their stolen time.
fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    machine_line(stat.lines().next()?)
}

fn machine_line(line: &str) -> Option<(u64, u64)> {
    let line = line.strip_prefix("cpu ")?;
    let v: Vec<u64> = line.split_whitespace().filter_map(|f| f.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal (guest time is already inside user).
    let busy = [0, 1, 2, 5, 6].iter().map(|&i| v.get(i)).sum::<Option<u64>>()?;
    Some((busy, *v.get(7)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_count_from_the_last_parenthesis() {
        let line = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 11 13 20 0 1 0 5 1 1";
        assert_eq!(ticks(line, false), Some(10));
        assert_eq!(ticks(line, true), Some(34));
        assert_eq!(ticks("42 (x) S 1", false), None);
    }

    #[test]
    fn steal_is_apart_from_busy_time() {
        let line = "cpu  100 2 30 5000 40 6 7 90 0 0";
        assert_eq!(machine_line(line), Some((145, 90)));
        assert_eq!(machine_line("cpu  1 2 3"), None);
        assert_eq!(machine_line("cpu0 1 2 3 4 5 6 7 8"), None);
    }

    #[test]
    fn this_process_is_counted() {
        // Spin until the process has been counted 50 ms of CPU: a spin of fixed length gets less
        // than that while other builds share the cores. The wall-clock bound only ends the test
        // when nothing is counted at all.
        let before = Cpu::now();
        let mut x = 0u64;
        let until = std::time::Instant::now() + Duration::from_secs(20);
        let mut used = Cpu::now().since(&before);
        while used.own < Duration::from_millis(50) && std::time::Instant::now() < until {
            for _ in 0..100_000 {
                x = x.wrapping_add(std::hint::black_box(1));
            }
            used = Cpu::now().since(&before);
        }
        assert!(
            used.own >= Duration::from_millis(50),
            "{used:?} after {x} iterations"
        );
    }
}
