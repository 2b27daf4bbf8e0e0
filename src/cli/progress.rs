//! The progress display of `restore` and `export`: a bar on a terminal (indicatif), plain lines every few
//! seconds when stderr is a file or a pipe, so logs of unattended runs stay readable.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often a plain progress line is written.
const PLAIN_EVERY: Duration = Duration::from_secs(2);

/// Items and bytes done, counted by outcome, shown as they change.
pub struct Progress {
    verb: &'static str,
    outcomes: &'static [&'static str],
    bar: Option<ProgressBar>,
    state: Mutex<State>,
}

struct State {
    started: Instant,
    last_line: Instant,
    items: u64,
    bytes: u64,
    counts: Vec<u64>,
    total_items: Option<u64>,
}

impl Progress {
    /// A display for `verb` (such as "restore"), counting each item under one of `outcomes`, out of
    /// `total_items` when known.
    pub fn new(
        verb: &'static str,
        outcomes: &'static [&'static str],
        total_items: Option<u64>,
    ) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar =
                ProgressBar::with_draw_target(total_items, ProgressDrawTarget::stderr_with_hz(4));
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} {bar:30} {pos}/{len} items {msg} [{per_sec}, ETA {eta}]",
                )
                .expect("the template is valid"),
            );
            bar
        });
        let now = Instant::now();
        Progress {
            verb,
            outcomes,
            bar,
            state: Mutex::new(State {
                started: now,
                last_line: now,
                items: 0,
                bytes: 0,
                counts: vec![0; outcomes.len()],
                total_items,
            }),
        }
    }

    /// Sets the number of items once it is known (an export learns it as it goes).
    pub fn set_total(&self, total: u64) {
        self.state.lock().expect("not poisoned").total_items = Some(total);
        if let Some(bar) = &self.bar {
            bar.set_length(total);
        }
    }

    /// One item done, of `bytes`, with outcome `outcome` (an index into the outcomes).
    pub fn item(&self, outcome: usize, bytes: u64) {
        let mut state = self.state.lock().expect("not poisoned");
        state.items += 1;
        state.bytes += bytes;
        state.counts[outcome] += 1;
        let summary = self.counts(&state);
        match &self.bar {
            Some(bar) => {
                bar.set_message(summary);
                bar.inc(1);
            }
            None if state.last_line.elapsed() >= PLAIN_EVERY => {
                state.last_line = Instant::now();
                eprintln!("{}", self.line(&state));
            }
            None => {}
        }
    }

    /// Clears the bar, or writes the last plain line.
    pub fn finish(&self) {
        let state = self.state.lock().expect("not poisoned");
        match &self.bar {
            Some(bar) => bar.finish_and_clear(),
            None => eprintln!("{}", self.line(&state)),
        }
    }

    fn counts(&self, state: &State) -> String {
        let megabytes = state.bytes as f64 / 1_000_000.0;
        let counts: Vec<String> = self
            .outcomes
            .iter()
            .zip(&state.counts)
            .map(|(name, count)| format!("{name} {count}"))
            .collect();
        format!("{megabytes:.1} MB; {}", counts.join(", "))
    }

    fn line(&self, state: &State) -> String {
        let elapsed = state.started.elapsed().as_secs_f64().max(0.001);
        let rate = state.items as f64 / elapsed;
        let of = state
            .total_items
            .map(|total| format!("/{total}"))
            .unwrap_or_default();
        let eta = match state.total_items {
            Some(total) if rate > 0.0 && total >= state.items => {
                format!(", ETA {:.0} s", (total - state.items) as f64 / rate)
            }
            _ => String::new(),
        };
        format!(
            "{}: {}{of} items, {}, {rate:.1} items/s{eta}",
            self.verb,
            state.items,
            self.counts(state),
        )
    }
}
