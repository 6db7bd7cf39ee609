//! Starting child processes: [`init`](crate::init), the three [`StartMethod`]s, and the child's side.
//!
//! # The model
//!
//! A child runs a plain `fn(A) -> R` of the same binary with arguments `A` that are encoded
//! in the parent and decoded in the child (handles inside travel as file descriptors). The
//! function is named to the child as an offset inside the executable, checked against a
//! build identity and the function's type (see `sys::code`), so a child of another build
//! fails with [`Error::BuildMismatch`] instead of jumping anywhere.
//!
//! # Start methods
//!
//! - [`StartMethod::ForkServer`] (the default): on first use, one clean helper process is
//!   started from `/proc/self/exe`. It does nothing but `init()` and then forks a child
//!   for each request. Children are made children of *your* process (`CLONE_PARENT`), so
//!   exit codes, `join` and signals work exactly as for a direct child.
//! - [`StartMethod::Spawn`]: every child is a fresh `exec` of `/proc/self/exe`.
//! - [`StartMethod::Fork`]: `fork()` of the calling process. Refused when the process has
//!   more than one thread (a lock held by another thread would stay locked for ever in the
//!   child), unless the caller takes responsibility through
//!   [`allow_fork_with_threads`].
//!
//! # Helper processes, and SIGCHLD
//!
//! The fork server, a [shared-memory tracker](crate::shared_memory) and a
//! [manager](crate::Manager)'s server this process started are its children. So that one
//! killed on its own does not stay a zombie until the next use notices, multiproc installs
//! a SIGCHLD handler the first time it starts one. The handler reaps those helpers only,
//! each through its pidfd, and keeps the exit status for their owner (a manager's
//! `shutdown` still learns how its server ended): it never waits for "any child", so the
//! exit statuses of your other children (started by multiproc, by
//! `std::process`, by tokio) stay theirs to collect. A handler installed before it runs
//! after it; if SIGCHLD is ignored (the kernel reaps every child), none is installed.
//!
//! ## `EINTR` in your own system calls
//!
//! Once the handler is installed, every child that ends (any child of the process, not only
//! the helpers) runs it, on one of the process's threads: by preference the thread that
//! started that child, or the one that started the fork server for the children it
//! forks. The handler is installed with `SA_RESTART`, so reads, writes and most other calls
//! that it interrupts go on by themselves; but Linux never restarts some calls after a
//! handler ran, whatever the flags: `poll`, `ppoll`, `select`, `epoll_wait`, `nanosleep` and
//! `clock_nanosleep`, futex waits with a timeout, and calls on a socket that has a
//! time-out (`SO_RCVTIMEO`, `SO_SNDTIMEO`: reads, writes, `accept`, `connect`). Those
//! return `EINTR`
//! ([`ErrorKind::Interrupted`](std::io::ErrorKind::Interrupted)) when a child ends while
//! they wait. This happens with any SIGCHLD handler (Python installs none, so a Python
//! program does not see it there).
//!
//! multiproc's own waits handle it: each retries with the time that is *left* of its
//! timeout (never the whole timeout again, never an early return or an error), so
//! `Queue::get_timeout`, `Connection::poll`, `Lock::acquire_timeout`, `Event::wait_timeout`,
//! `AsyncResult::get_timeout`, `Process::join_timeout` and the others keep their timeouts
//! however many children end. So do std's (`thread::sleep`, `Condvar::wait_timeout`,
//! `read_exact`, `write_all`) and tokio's. A call of *yours* (through `libc`, `rustix`,
//! `nix` or a C library) must do the same: retry on `EINTR`, with the remaining time
//! computed from a deadline taken before the first try. For example:
//!
//! ```
//! use std::time::{Duration, Instant};
//! // Waits up to `timeout` for `fd` to be readable, riding out signals.
//! fn wait_readable(fd: std::os::fd::BorrowedFd<'_>, timeout: Duration) -> std::io::Result<bool> {
//!     use rustix::event::{poll, PollFd, PollFlags, Timespec};
//!     let deadline = Instant::now() + timeout;
//!     loop {
//!         let left = deadline.saturating_duration_since(Instant::now());
//!         let ts = Timespec { tv_sec: left.as_secs() as _, tv_nsec: left.subsec_nanos() as _ };
//!         let mut fds = [PollFd::new(&fd, PollFlags::IN)];
//!         match poll(&mut fds, Some(&ts)) {
//!             Ok(n) => return Ok(n > 0),
//!             Err(rustix::io::Errno::INTR) => continue, // a child ended: wait for the rest
//!             Err(e) => return Err(e.into()),
//!         }
//!     }
//! }
//! let (r, _w) = std::io::pipe().unwrap();
//! use std::os::fd::AsFd;
//! assert!(!wait_readable(r.as_fd(), Duration::from_millis(10)).unwrap());
//! ```
//!
//! A program that would rather not see `EINTR` in some thread can block SIGCHLD there
//! (`pthread_sigmask`); the kernel then runs the handler on another thread. Blocking it in
//! *every* thread delays the reaping of killed helpers until their next use.
//!
//! # What runs again in a child
//!
//! A Spawn child, and the fork server, are new executions of your binary: everything in
//! `main` *before* `multiproc::init()` runs again in them (so keep `init()` the first line),
//! then `init()` takes over and never returns. In a test binary the harness starts, runs
//! only the test that called `init()` (`<name> --exact --nocapture`), and `init()` at the top
//! of that test takes over; the harness's own output is discarded. Nothing of your program
//! after `init()` runs in a child, except the target function. Fork and fork-server children
//! run no code of `main` at all: they are copies of a process already inside `init()`.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::ipc::RawConn;
use crate::log::log_event;
use crate::{codec, sys, Error, Result};

mod boot;
mod child;
mod forkserver;
mod hooks;
mod launch;
mod tracker;

pub(crate) use boot::*;
pub(crate) use child::*;
pub(crate) use hooks::Hooks;
pub use launch::fork_server_pid;
pub(crate) use launch::*;
pub use tracker::tracker_pid;
pub(crate) use tracker::{tracker_register, tracker_unregister};

const ROLE_VAR: &str = "MULTIPROC_ROLE";

/// How a new process is created. See the [module docs](self).
///
/// ```
/// use multiproc::StartMethod;
/// assert_eq!(multiproc::get_start_method(), StartMethod::ForkServer);
/// assert_ne!(StartMethod::Fork, StartMethod::Spawn);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StartMethod {
    /// `fork()` the calling process (refused if it has other threads).
    Fork,
    /// Re-execute the current binary for every child.
    Spawn,
    /// Ask a single-threaded helper, started once from the current binary, to fork.
    ForkServer,
}

static METHOD: AtomicU8 = AtomicU8::new(2);
static FORK_WITH_THREADS: AtomicBool = AtomicBool::new(false);
static INITIALIZED: AtomicBool = AtomicBool::new(false);
static ENTRY_TEST: OnceLock<String> = OnceLock::new();

fn method_from(v: u8) -> StartMethod {
    match v {
        0 => StartMethod::Fork,
        1 => StartMethod::Spawn,
        _ => StartMethod::ForkServer,
    }
}

/// Sets the default start method for processes started from now on (Python's
/// `set_start_method`). Individual processes may override it with
/// [`Process::with_start_method`](crate::Process::with_start_method). Children inherit
/// it, whatever method started them (as in Python), together with
/// [`allow_fork_with_threads`].
///
/// ```
/// multiproc::init();
/// multiproc::set_start_method(multiproc::StartMethod::Spawn).unwrap();
/// assert_eq!(multiproc::get_start_method(), multiproc::StartMethod::Spawn);
/// ```
pub fn set_start_method(method: StartMethod) -> Result<()> {
    let v = match method {
        StartMethod::Fork => 0,
        StartMethod::Spawn => 1,
        StartMethod::ForkServer => 2,
    };
    METHOD.store(v, Ordering::SeqCst);
    Ok(())
}

/// The current default start method ([`StartMethod::ForkServer`] unless changed).
///
/// ```
/// assert_eq!(multiproc::get_start_method(), multiproc::StartMethod::ForkServer);
/// ```
pub fn get_start_method() -> StartMethod {
    method_from(METHOD.load(Ordering::SeqCst))
}

/// Every start method this platform offers, the default first (Python's
/// `get_all_start_methods`). On Linux all three are available; [`StartMethod::Fork`] is
/// refused while the process has other threads (see [`allow_fork_with_threads`]).
///
/// ```
/// use multiproc::StartMethod;
/// let all = multiproc::get_all_start_methods();
/// assert_eq!(all[0], StartMethod::ForkServer);
/// assert!(all.contains(&StartMethod::Spawn) && all.contains(&StartMethod::Fork));
/// ```
pub fn get_all_start_methods() -> Vec<StartMethod> {
    vec![
        StartMethod::ForkServer,
        StartMethod::Spawn,
        StartMethod::Fork,
    ]
}

/// Lets [`StartMethod::Fork`] fork even when this process has other threads.
///
/// # Safety
///
/// In the child, only the forking thread exists. If another thread held a lock at the
/// moment of the fork (the allocator's, stdout's, a logger's, one of yours), the child
/// deadlocks or sees torn state when it touches it. Call this only when you know the
/// other threads hold no lock the child will need (for example, they are parked waiting).
///
/// ```
/// multiproc::init();
/// // SAFETY: this doctest's only other thread, if any, is idle.
/// unsafe { multiproc::allow_fork_with_threads(true) };
/// ```
// `unsafe` here is the caller's contract (see Safety); the body does nothing unsafe.
#[allow(unsafe_code)]
pub unsafe fn allow_fork_with_threads(allow: bool) {
    FORK_WITH_THREADS.store(allow, Ordering::SeqCst);
}

/// `multiproc::init()` (see [`crate::init`]), with the hooks of the modules above `start`.
pub(crate) fn init(hooks: &'static Hooks) {
    hooks::set(hooks);
    if let Some(name) = std::thread::current().name() {
        if name != "main" {
            // A test harness's thread: re-running this test reaches this init() again.
            let _ = ENTRY_TEST.set(name.to_string());
        }
    }
    if !INITIALIZED.swap(true, Ordering::SeqCst) {
        sys::at_exit(hooks::at_exit_c);
    }
    let Some(role) = std::env::var_os(ROLE_VAR) else {
        // Not started by multiproc: the program's main process (with the `mpi` feature,
        // started by mpirun/srun: rank 0 goes on, the other ranks serve cluster pools).
        hooks::on_main_init();
        return;
    };
    std::env::remove_var(ROLE_VAR);
    let role = role.to_string_lossy().into_owned();
    let (kind, ppid) = role.split_once(':').unwrap_or((role.as_str(), "0"));
    let ppid: u32 = ppid.parse().unwrap_or(0);
    sys::die_with_parent(ppid);
    let sock = match sys::take_stdin_dup() {
        Ok(fd) => RawConn::new(fd),
        Err(e) => {
            log_event!(Error, "child cannot read its bootstrap: {e}");
            sys::exit_immediately(255);
        }
    };
    let _ = sys::stdin_to_devnull();
    match kind {
        "spawn" => match sock.recv_with(|bytes, fds| Ok((codec::decode::<Boot>(bytes)?, fds))) {
            Ok((boot, fds)) => {
                drop(sock);
                run_child(boot, fds)
            }
            Err(e) => {
                log_event!(Error, "child cannot read its bootstrap: {e}");
                sys::exit_immediately(255);
            }
        },
        "forkserver" => forkserver::serve(sock),
        "shm-tracker" => tracker::tracker_main(sock),
        other => {
            log_event!(Error, "unknown child role {other:?}");
            sys::exit_immediately(255);
        }
    }
}

pub(crate) fn ensure_initialized() -> Result<()> {
    if INITIALIZED.load(Ordering::SeqCst) {
        Ok(())
    } else {
        Err(Error::NotInitialized)
    }
}
