//! Status and progress: how library code tells the user what it is doing, without knowing
//! who is listening.
//!
//! Every stage reports through the free functions here ([`info`], [`detail`], [`warn`],
//! [`progress`]); the program that uses the library installs one [`Sink`] that decides
//! where the words go. The `kdharness` command line installs a terminal sink (stderr lines,
//! indicatif bars, `-q`/`-v`); a library user that installs nothing hears nothing. This is
//! the only way status leaves the library: no module below `cli/` prints.

use std::sync::{Arc, RwLock};

/// How much a message matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// A part of the run failed (the rest goes on).
    Error,
    /// About the results (shown even when the user asked for quiet).
    Warn,
    /// What the run is doing.
    Info,
    /// Extra detail.
    Detail,
}

/// Where status goes: installed once by the program with [`install`].
pub trait Sink: Send + Sync {
    /// One status line.
    fn message(&self, level: Level, text: &str);
    /// A progress indicator over `length` units of `unit`, labelled `what`.
    fn progress(&self, length: u64, what: &str, unit: &str) -> Box<dyn Meter>;
}

/// A running progress indicator.
pub trait Meter: Send {
    /// `n` more units are done.
    fn advance(&self, n: u64);
    /// The work is complete: the indicator disappears.
    fn finish(&self);
    /// The work stopped early: the indicator stays where it is.
    fn abandon(&self);
}

static SINK: RwLock<Option<Arc<dyn Sink>>> = RwLock::new(None);

/// Sends every later message and progress indicator to `sink`.
pub fn install(sink: Arc<dyn Sink>) {
    *SINK.write().unwrap_or_else(|e| e.into_inner()) = Some(sink);
}

fn sink() -> Option<Arc<dyn Sink>> {
    SINK.read().unwrap_or_else(|e| e.into_inner()).clone()
}

fn send(level: Level, text: impl std::fmt::Display) {
    if let Some(sink) = sink() {
        sink.message(level, &text.to_string());
    }
}

/// What the run is doing.
pub fn info(text: impl std::fmt::Display) {
    send(Level::Info, text);
}

/// Extra detail.
pub fn detail(text: impl std::fmt::Display) {
    send(Level::Detail, text);
}

/// A part of the run failed; the rest goes on and the caller reports the failure.
pub fn error(text: impl std::fmt::Display) {
    send(Level::Error, text);
}

/// Something about the results the user should know.
pub fn warn(text: impl std::fmt::Display) {
    send(Level::Warn, text);
}

/// A progress indicator over `length` units (invisible when no sink is installed).
pub fn progress(length: usize, what: &str, unit: &str) -> Progress {
    Progress(sink().map(|s| s.progress(length as u64, what, unit)))
}

/// A progress indicator handed out by [`progress`].
pub struct Progress(Option<Box<dyn Meter>>);

impl Progress {
    /// `n` more units are done.
    pub fn inc(&self, n: u64) {
        if let Some(m) = &self.0 {
            m.advance(n);
        }
    }

    /// The work is complete.
    pub fn finish(&self) {
        if let Some(m) = &self.0 {
            m.finish();
        }
    }

    /// The work stopped early.
    pub fn abandon(&self) {
        if let Some(m) = &self.0 {
            m.abandon();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    struct Recorder(Mutex<Vec<String>>);

    struct Count(Arc<Recorder>);

    impl Meter for Count {
        fn advance(&self, n: u64) {
            self.0.0.lock().unwrap().push(format!("+{n}"));
        }
        fn finish(&self) {
            self.0.0.lock().unwrap().push("finish".into());
        }
        fn abandon(&self) {}
    }

    struct Shared(Arc<Recorder>);

    impl Sink for Shared {
        fn message(&self, level: Level, text: &str) {
            self.0.0.lock().unwrap().push(format!("{level:?}: {text}"));
        }
        fn progress(&self, length: u64, what: &str, unit: &str) -> Box<dyn Meter> {
            self.0.0.lock().unwrap().push(format!("{what}: {length} {unit}"));
            Box::new(Count(self.0.clone()))
        }
    }

    #[test]
    fn messages_and_progress_reach_the_installed_sink() {
        let recorder = Arc::new(Recorder(Mutex::new(Vec::new())));
        install(Arc::new(Shared(recorder.clone())));
        warn("w");
        detail(format!("d{}", 1));
        let bar = progress(3, "scoring", "samples");
        bar.inc(2);
        bar.finish();
        let seen = recorder.0.lock().unwrap().clone();
        let expected = ["Warn: w", "Detail: d1", "scoring: 3 samples", "+2", "finish"];
        // Other tests of this process may report too: ours arrive in order.
        let ours: Vec<&String> = seen.iter().filter(|s| expected.contains(&s.as_str())).collect();
        assert_eq!(ours, expected.iter().collect::<Vec<_>>());
    }
}
