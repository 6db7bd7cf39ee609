//! What `multiproc` reports about itself, like Python's `multiprocessing.log_to_stderr()`:
//! processes started and ended, pool workers that died and their replacements, locks taken
//! over from a dead holder, manager connections and refused authkeys, the fork server
//! started and stopped, and the errors a child meets before it can run its target.
//!
//! Turn it on without changing the program with the environment variable `MULTIPROC_LOG`
//! (`error`, `warning`, `info`, `debug` or `off`; children inherit it), or from code with
//! [`log_to_stderr`]. Lines go to standard error in Python's format,
//! `[LEVEL/ProcessName] message`. Without either, only errors are printed (a child that
//! cannot start its target has no one else to tell).
//!
//! With the `tracing` cargo feature every event is also a [`tracing`](https://docs.rs/tracing)
//! event with target `multiproc`; once the program installs a global `tracing` subscriber,
//! events go only there (filter them as usual) and nothing is printed by this module.
//!
//! The other things `multiproc` writes to standard error are a child's panic report
//! (`Process NAME:` and the panic message), as Python prints a child's traceback, and the
//! `Err` a [`Process`](crate::Process)'s target (or a pool's or manager's initializer)
//! returned, as `Error: {e:?}`, as a Rust `main` prints it, after the same `Process NAME:`
//! line.
//!
//! ```
//! multiproc::init();
//! multiproc::log_to_stderr(multiproc::log::Level::Debug);
//! // ... every process started from here on is reported on standard error:
//! // [DEBUG/MainProcess] started process Process-1 (pid 1234)
//! let h = multiproc::spawn(|x: u8| x, 1).unwrap();
//! assert_eq!(h.join().unwrap(), 1);
//! ```

use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

/// How much to report, from the least to the most.
///
/// ```
/// use multiproc::log::Level;
/// assert!(Level::Error < Level::Debug);
/// assert_eq!(Level::parse("WARN"), Some(Level::Warning));
/// assert_eq!(Level::Warning.to_string(), "WARNING");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Something failed: a child could not start its target, a callback panicked.
    Error = 1,
    /// Something went wrong and was handled: a worker died, a lock's holder died, a
    /// client gave a wrong authkey.
    Warning = 2,
    /// Worth knowing: a worker was replaced, a fork server was started.
    Info = 3,
    /// Everything: each process started and ended, each manager connection.
    Debug = 4,
}

impl Level {
    /// Reads a level name as `MULTIPROC_LOG` takes it (any case): `error`, `warning`
    /// (or `warn`), `info`, `debug`. `None` for anything else (`off` included).
    ///
    /// ```
    /// use multiproc::log::Level;
    /// assert_eq!(Level::parse("debug"), Some(Level::Debug));
    /// assert_eq!(Level::parse("off"), None);
    /// ```
    pub fn parse(s: &str) -> Option<Level> {
        match s.trim().to_ascii_lowercase().as_str() {
            "error" => Some(Level::Error),
            "warn" | "warning" => Some(Level::Warning),
            "info" => Some(Level::Info),
            "debug" | "trace" => Some(Level::Debug),
            _ => None,
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Error => "ERROR",
            Level::Warning => "WARNING",
            Level::Info => "INFO",
            Level::Debug => "DEBUG",
        })
    }
}

/// The environment variable read for the level.
pub const ENV_VAR: &str = "MULTIPROC_LOG";

const UNSET: u8 = u8::MAX;
const OFF: u8 = 0;
/// The threshold: events of a level at most this are printed. `UNSET`: not read yet.
static THRESHOLD: AtomicU8 = AtomicU8::new(UNSET);

fn from_env() -> u8 {
    match std::env::var(ENV_VAR) {
        Ok(v) => Level::parse(&v).map_or(OFF, |l| l as u8),
        Err(_) => Level::Error as u8,
    }
}

fn threshold() -> u8 {
    let t = THRESHOLD.load(Ordering::Relaxed);
    if t != UNSET {
        return t;
    }
    let t = from_env();
    THRESHOLD.store(t, Ordering::Relaxed);
    t
}

/// Prints `multiproc`'s events of `level` and above on standard error (Python's
/// `multiprocessing.log_to_stderr(level)`), in this process and in the children it starts
/// afterwards (whatever their start method).
///
/// ```
/// multiproc::log_to_stderr(multiproc::log::Level::Warning);
/// assert_eq!(multiproc::log::level(), Some(multiproc::log::Level::Warning));
/// ```
pub fn log_to_stderr(level: Level) {
    THRESHOLD.store(level as u8, Ordering::Relaxed);
}

/// The level now printed on standard error (`None`: nothing, not even errors).
///
/// ```
/// multiproc::log_to_stderr(multiproc::log::Level::Info);
/// assert_eq!(multiproc::log::level(), Some(multiproc::log::Level::Info));
/// ```
pub fn level() -> Option<Level> {
    match threshold() {
        1 => Some(Level::Error),
        2 => Some(Level::Warning),
        3 => Some(Level::Info),
        4 => Some(Level::Debug),
        _ => None,
    }
}

/// The threshold, for a child to take over ([`set_threshold`]).
pub(crate) fn current_threshold() -> u8 {
    threshold()
}

/// In a new child: the parent's threshold.
pub(crate) fn set_threshold(t: u8) {
    THRESHOLD.store(t, Ordering::Relaxed);
}

/// In a new child whose builder set `MULTIPROC_LOG`: that decides.
pub(crate) fn reload_env() {
    THRESHOLD.store(from_env(), Ordering::Relaxed);
}

/// Set once the process has begun to exit through `exit()` (the `atexit` handler): from
/// then on events are not given to `tracing`.
static EXITING: AtomicBool = AtomicBool::new(false);

/// The process is exiting (`main` returned, or `exit` was called): the thread-local storage
/// of the exiting thread is already destroyed, and a subscriber that uses its own (as
/// `tracing_subscriber::fmt` does) would panic, which at that point aborts the program. The
/// events of the exit (the fork server stopped, children joined) go to standard error
/// instead, under `MULTIPROC_LOG`'s threshold as without the `tracing` feature.
pub(crate) fn exiting() {
    EXITING.store(true, Ordering::Relaxed);
}

/// Reports one event (use the [`log_event!`] macro).
pub(crate) fn emit(level: Level, args: fmt::Arguments<'_>) {
    #[cfg(feature = "tracing")]
    if !EXITING.load(Ordering::Relaxed) {
        match level {
            Level::Error => tracing::error!(target: "multiproc", "{}", args),
            Level::Warning => tracing::warn!(target: "multiproc", "{}", args),
            Level::Info => tracing::info!(target: "multiproc", "{}", args),
            Level::Debug => tracing::debug!(target: "multiproc", "{}", args),
        }
        if tracing::dispatcher::has_been_set() {
            return;
        }
    }
    if level as u8 <= threshold() {
        let me = crate::identity::current_process();
        let _ = writeln!(std::io::stderr().lock(), "[{level}/{}] {args}", me.name());
    }
}

/// `log_event!(Warning, "format", args…)`: reports an event of that [`Level`].
macro_rules! log_event {
    ($level:ident, $($arg:tt)+) => {
        $crate::log::emit($crate::log::Level::$level, format_args!($($arg)+))
    };
}
pub(crate) use log_event;
