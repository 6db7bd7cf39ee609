//! What a child is started with: the bootstrap message ([`Boot`]) the parent sends, the
//! settings a child inherits, and the checked reference to the function it runs ([`Code`]).

use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::Ordering;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::ipc::RawConn;
use crate::Error;

use crate::sys::{AnyFnRef, FnRef};

use super::*;

/// The type of the trampoline a child calls: it decodes the arguments, runs the target and
/// reports. Returns the exit code.
pub(crate) type Entry =
    fn(target: AnyFnRef, args: &[u8], fds: Vec<OwnedFd>, result: Option<RawConn>) -> i32;

/// Everything a child needs to know, sent from the parent.
#[derive(Serialize, Deserialize, Debug)]
pub(crate) struct Boot {
    pub(crate) build_id: u64,
    pub(crate) entry: FnRef<Entry>,
    pub(crate) target: AnyFnRef,
    pub(crate) name: String,
    pub(crate) identity: Vec<u32>,
    pub(crate) daemon: bool,
    pub(crate) parent_pid: u32,
    pub(crate) parent_name: String,
    pub(crate) parent_daemon: bool,
    /// The process tree's authkey (Python's `Process.authkey`), inherited.
    pub(crate) authkey: Vec<u8>,
    pub(crate) args: Vec<u8>,
    /// fds\[0] is a socket for the result.
    pub(crate) has_result: bool,
    /// The next fd is the parent's standard output, to install as ours.
    pub(crate) has_stdout: bool,
    /// The last fd is a socket on which a fork-server child says its pid first thing:
    /// if the server dies before it answers, the parent learns from it whether the child
    /// exists (it must not start the target a second time).
    pub(crate) has_started: bool,
    /// The shared-memory tracker of the process tree (its socket name): the child uses it
    /// instead of starting its own.
    pub(crate) shm_tracker: Option<String>,
    /// The parent's process-wide settings, which the child takes over.
    pub(crate) settings: Settings,
    /// For standard input, output and error: whether the next fd is to be installed as it
    /// (the builder's `Stdio` settings).
    pub(crate) stdio: [bool; 3],
    /// Environment changes: set (`Some`) or remove (`None`), after clearing it if
    /// `env_clear`.
    pub(crate) env: Vec<(OsString, Option<OsString>)>,
    pub(crate) env_clear: bool,
    /// The working directory to change to.
    pub(crate) cwd: Option<PathBuf>,
}

/// The process-wide settings a child inherits from its parent, whatever its start method:
/// the default start method (the one the child was started with, when one was chosen for
/// it, as Python's children of a context), and whether `Fork` may fork a process with
/// threads.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub(crate) struct Settings {
    pub(super) method: StartMethod,
    pub(super) fork_with_threads: bool,
    /// The logging threshold (see [`crate::log`]).
    pub(super) log: u8,
}

impl Settings {
    /// This process's settings now.
    pub(super) fn current() -> Settings {
        Settings {
            method: get_start_method(),
            fork_with_threads: FORK_WITH_THREADS.load(Ordering::SeqCst),
            log: crate::log::current_threshold(),
        }
    }

    /// Makes them this process's settings (in a new child).
    pub(super) fn apply(self) {
        let _ = set_start_method(self.method);
        FORK_WITH_THREADS.store(self.fork_with_threads, Ordering::SeqCst);
        crate::log::set_threshold(self.log);
    }
}

/// What a value-returning child sends back.
#[derive(Serialize, Deserialize)]
pub(crate) enum Outcome<R> {
    Returned(R),
    Panicked {
        message: String,
        location: Option<String>,
        backtrace: Option<String>,
    },
    /// The child is another build: the function could not be located.
    BuildMismatch(String),
    /// The arguments could not be decoded, or the result encoded.
    Codec(String),
}

/// The code a child is started with: a trampoline and the user's function.
#[derive(Clone, Copy)]
pub(crate) struct Code {
    pub(super) entry: FnRef<Entry>,
    pub(super) target: AnyFnRef,
}

impl Code {
    /// Code that runs `target(args)` and exits with the code its return value reports, as a
    /// Rust `main` does (a [`Process`](crate::Process)).
    pub(crate) fn process<A: DeserializeOwned, R: std::process::Termination>(
        target: fn(A) -> R,
    ) -> Code {
        Code::with_entry(run_reporting::<A, R> as Entry, target)
    }

    /// Code that runs `target(args)` and sends the result back (a [`JoinHandle`](crate::JoinHandle)).
    pub(crate) fn returning<A: DeserializeOwned, R: Serialize>(target: fn(A) -> R) -> Code {
        Code::with_entry(run_returning::<A, R> as Entry, target)
    }

    pub(super) fn with_entry<A, R>(entry: Entry, target: fn(A) -> R) -> Code {
        Code {
            entry: FnRef::of(entry),
            target: FnRef::of(target).erase(),
        }
    }
}

/// The error for a function that a child cannot run because it is not part of the main
/// executable (see `sys::FnRef`).
pub(crate) fn foreign_fn_error() -> Error {
    Error::invalid(
        "the function to run in another process is not in this program's executable (it \
         comes from a dynamic library or plugin): a child process cannot find it there; \
         call it from a function of the program instead",
    )
}
