//! Progress of long work on standard error: a bar (indicatif) when standard error is a terminal,
//! plain periodic lines otherwise (logs, CI, `2> file`), so that one reporter serves the history
//! backfill, replay and re-drive alike and a log never fills with a bar's redraws.
//!
//! A line reads `<label>: <done> of <total> (<pct>%) <message>` (`<label>: <done> <message>` when the
//! total is unknown). Lines come at most every [`LINE_EVERY`], the first one interval after the start,
//! and one more when the work finishes, so a short run prints one line and a long one a few per
//! minute.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often a plain line is printed while the work goes on.
pub const LINE_EVERY: Duration = Duration::from_secs(5);

/// Where the plain lines go.
type Sink = Box<dyn Write + Send>;

/// A progress reporter; cheap to share by reference across tasks.
pub struct Progress {
    label: String,
    mode: Mode,
}

enum Mode {
    Bar(ProgressBar),
    Lines(Mutex<Lines>),
}

struct Lines {
    out: Sink,
    every: Duration,
    /// When the last line was printed (at first: when the reporter was made).
    last: Instant,
    done: u64,
    total: Option<u64>,
    message: String,
}

impl Progress {
    /// A bar when standard error is a terminal, else plain lines every [`LINE_EVERY`].
    pub fn stderr(label: &str, total: Option<u64>) -> Self {
        if std::io::stderr().is_terminal() {
            Self::bar(label, total)
        } else {
            Self::lines(label, total, LINE_EVERY, Box::new(std::io::stderr()))
        }
    }

    /// A bar on standard error.
    fn bar(label: &str, total: Option<u64>) -> Self {
        let bar = match total {
            Some(n) => ProgressBar::new(n),
            None => ProgressBar::new_spinner(),
        };
        bar.set_draw_target(ProgressDrawTarget::stderr());
        let template = match total {
            Some(_) => "{prefix}: [{bar:30}] {pos}/{len} ({percent}%) {wide_msg} [{elapsed_precise}, ETA {eta}]",
            None => "{prefix}: {spinner} {pos} {wide_msg} [{elapsed_precise}]",
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(label.to_owned());
        bar.enable_steady_tick(Duration::from_millis(200));
        Progress {
            label: label.to_owned(),
            mode: Mode::Bar(bar),
        }
    }

    /// Plain lines to `out`, at most every `every` (tests give their own sink and interval).
    pub fn lines(label: &str, total: Option<u64>, every: Duration, out: Sink) -> Self {
        Progress {
            label: label.to_owned(),
            mode: Mode::Lines(Mutex::new(Lines {
                out,
                every,
                last: Instant::now(),
                done: 0,
                total,
                message: String::new(),
            })),
        }
    }

    /// Sets the total (when it is learnt late).
    pub fn set_total(&self, total: u64) {
        match &self.mode {
            Mode::Bar(bar) => bar.set_length(total),
            Mode::Lines(lines) => lines_of(lines).total = Some(total),
        }
    }

    /// `n` more units done.
    pub fn inc(&self, n: u64) {
        match &self.mode {
            Mode::Bar(bar) => bar.inc(n),
            Mode::Lines(lines) => {
                let mut l = lines_of(lines);
                l.done += n;
                l.maybe_print(&self.label);
            }
        }
    }

    /// `done` units done in all, and what the work is at.
    pub fn update(&self, done: u64, message: impl Into<String>) {
        let message = message.into();
        match &self.mode {
            Mode::Bar(bar) => {
                bar.set_position(done);
                bar.set_message(message);
            }
            Mode::Lines(lines) => {
                let mut l = lines_of(lines);
                l.done = done;
                l.message = message;
                l.maybe_print(&self.label);
            }
        }
    }

    /// What the work is at, without moving the count.
    pub fn set_message(&self, message: impl Into<String>) {
        let message = message.into();
        match &self.mode {
            Mode::Bar(bar) => bar.set_message(message),
            Mode::Lines(lines) => {
                let mut l = lines_of(lines);
                l.message = message;
                l.maybe_print(&self.label);
            }
        }
    }

    /// Ends the report with `message`: the bar stays as drawn, the lines get a last one.
    pub fn finish(&self, message: impl Into<String>) {
        let message = message.into();
        match &self.mode {
            Mode::Bar(bar) => bar.finish_with_message(message),
            Mode::Lines(lines) => {
                let mut l = lines_of(lines);
                l.message = message;
                l.print(&self.label);
            }
        }
    }
}

/// The lines' state; a panic elsewhere while printing leaves it usable.
fn lines_of(lines: &Mutex<Lines>) -> std::sync::MutexGuard<'_, Lines> {
    lines.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Lines {
    fn maybe_print(&mut self, label: &str) {
        if self.last.elapsed() >= self.every {
            self.print(label);
        }
    }

    fn print(&mut self, label: &str) {
        self.last = Instant::now();
        let line = line(label, self.done, self.total, &self.message);
        // Progress is advisory: a closed stderr must not fail the work.
        let _ = writeln!(self.out, "{line}");
        let _ = self.out.flush();
    }
}

/// One plain progress line.
pub fn line(label: &str, done: u64, total: Option<u64>, message: &str) -> String {
    let mut s = match total {
        Some(t) if t > 0 => format!(
            "{label}: {done} of {t} ({:.0}%)",
            done as f64 * 100.0 / t as f64
        ),
        Some(t) => format!("{label}: {done} of {t}"),
        None => format!("{label}: {done}"),
    };
    if !message.is_empty() {
        s.push(' ');
        s.push_str(message);
    }
    s
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// A sink the test can read back.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Shared {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    #[test]
    fn lines_are_periodic_and_end_with_a_last_one() {
        let out = Shared::default();
        let p = Progress::lines("backfill", Some(8), Duration::from_millis(300), Box::new(out.clone()));
        p.inc(1); // within the first interval: nothing
        std::thread::sleep(Duration::from_millis(350));
        p.inc(1); // an interval later: a line
        p.update(6, "London 2026-12-05"); // within the next interval: nothing
        p.finish("done: 8 calls");
        let text = out.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines, ["backfill: 2 of 8 (25%)", "backfill: 6 of 8 (75%) done: 8 calls"], "{text}");
    }

    #[test]
    fn every_update_prints_when_the_interval_is_zero() {
        let out = Shared::default();
        let p = Progress::lines("replay", None, Duration::ZERO, Box::new(out.clone()));
        p.update(10, "1 stored");
        p.set_message("2 stored");
        p.set_total(20);
        p.inc(10);
        assert_eq!(
            out.text(),
            "replay: 10 1 stored\nreplay: 10 2 stored\nreplay: 20 of 20 (100%) 2 stored\n"
        );
    }

    #[test]
    fn a_line_without_total_or_message_is_the_count() {
        assert_eq!(line("x", 3, None, ""), "x: 3");
        assert_eq!(line("x", 0, Some(0), "m"), "x: 0 of 0 m");
    }
}
