//! The terminal as the library's status sink: `kdharness: ...` lines on stderr and
//! indicatif progress bars, quieter with `-q`, more detailed with `-v`.

use crate::status::{Level, Meter, Sink};

/// Stderr, filtered by verbosity.
pub struct Terminal {
    /// 0: warnings only; 1: status; 2: detail too.
    pub verbosity: u8,
}

impl Sink for Terminal {
    fn message(&self, level: Level, text: &str) {
        match level {
            Level::Error => eprintln!("error: {text}"),
            Level::Warn => eprintln!("kdharness: warning: {text}"),
            Level::Info if self.verbosity >= 1 => eprintln!("kdharness: {text}"),
            Level::Detail if self.verbosity >= 2 => eprintln!("kdharness: {text}"),
            _ => {}
        }
    }

    /// A bar on a terminal (indicatif draws nothing when stderr is not one), none with `-q`.
    fn progress(&self, length: u64, what: &str, unit: &str) -> Box<dyn Meter> {
        if self.verbosity == 0 {
            return Box::new(Bar(indicatif::ProgressBar::hidden()));
        }
        let bar = indicatif::ProgressBar::with_draw_target(Some(length), indicatif::ProgressDrawTarget::stderr());
        let template = format!("{{msg}} [{{bar:30}}] {{pos}}/{{len}} {unit}, {{elapsed}} (eta {{eta}})");
        let style = indicatif::ProgressStyle::with_template(&template)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> ");
        bar.set_style(style);
        bar.set_message(what.to_string());
        Box::new(Bar(bar))
    }
}

struct Bar(indicatif::ProgressBar);

impl Meter for Bar {
    fn advance(&self, n: u64) {
        self.0.inc(n);
    }
    fn finish(&self) {
        self.0.finish_and_clear();
    }
    fn abandon(&self) {
        self.0.abandon();
    }
}
