//! Progress of the bulk commands (`kms token create-many`, `kms token revoke-many`) on a
//! terminal. Drawn on stderr, and only when stderr is a terminal: stdout carries the JSON
//! answer alone, and a script (whose stderr is a pipe or a file) sees no progress text.
//!
//! A bulk call is one all-or-nothing batch of at most 1,000, so the command never splits
//! its input: the progress is a bar over checking the input, entry by entry, then a spinner
//! with the elapsed time while the one batch is made (argon2id per new token) and
//! committed, then a closing line.

use std::borrow::Cow;
use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often the spinner of a step moves.
const TICK: Duration = Duration::from_millis(100);

/// The progress display of one command; does nothing when stderr is not a terminal.
#[derive(Debug)]
pub(crate) struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    /// Progress on stderr when it is a terminal; nothing otherwise.
    pub(crate) fn on_terminal() -> Progress {
        Progress::shown_if(std::io::stderr().is_terminal())
    }

    fn shown_if(shown: bool) -> Progress {
        Progress {
            bar: shown.then(|| ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())),
        }
    }

    /// A step that reports no progress of its own: a spinner, `what` and the time so far.
    pub(crate) fn step(&self, what: impl Into<Cow<'static, str>>) {
        let Some(bar) = &self.bar else { return };
        bar.set_style(style(
            "{spinner} {msg} ({elapsed})",
            ProgressStyle::default_spinner,
        ));
        bar.unset_length();
        bar.set_message(what);
        bar.enable_steady_tick(TICK);
    }

    /// A bar over `len` items (advanced by [`inc`](Self::inc)), labelled `what`.
    pub(crate) fn items(&self, what: impl Into<Cow<'static, str>>, len: usize) {
        let Some(bar) = &self.bar else { return };
        bar.disable_steady_tick();
        bar.set_style(style(
            "{msg} [{bar:30}] {pos}/{len} ({elapsed})",
            ProgressStyle::default_bar,
        ));
        bar.set_position(0);
        bar.set_length(u64::try_from(len).unwrap_or(u64::MAX));
        bar.set_message(what);
    }

    /// One more item done.
    pub(crate) fn inc(&self) {
        if let Some(bar) = &self.bar {
            bar.inc(1);
        }
    }

    /// Ends the display with a last line, `what` and the time taken, left on stderr.
    pub(crate) fn done(self, what: &str) {
        let Some(bar) = &self.bar else { return };
        bar.disable_steady_tick();
        bar.set_style(style("{msg}", ProgressStyle::default_spinner));
        let took = bar.elapsed().as_secs_f64();
        bar.finish_with_message(format!("{what} ({took:.1} s)"));
    }
}

impl Drop for Progress {
    /// A command that fails clears its progress, so its error message stands alone.
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            if !bar.is_finished() {
                bar.finish_and_clear();
            }
        }
    }
}

/// `template`, or `fallback` should it not parse (it is a constant, so it does).
fn style(template: &str, fallback: fn() -> ProgressStyle) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| fallback())
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]
mod tests {
    use super::*;

    #[test]
    fn the_templates_parse() {
        for t in [
            "{spinner} {msg} ({elapsed})",
            "{msg} [{bar:30}] {pos}/{len} ({elapsed})",
            "{msg}",
        ] {
            ProgressStyle::with_template(t).unwrap();
        }
    }

    #[test]
    fn off_a_terminal_nothing_is_drawn_or_kept() {
        let p = Progress::shown_if(false);
        p.step("reading");
        p.items("checking", 3);
        p.inc();
        assert!(p.bar.is_none());
        p.done("done");
    }
}
