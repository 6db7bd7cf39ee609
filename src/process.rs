//! Processes: [`Process`] (Python's `multiprocessing.Process`), [`spawn`] and
//! [`JoinHandle`] (std::thread's style, with the return value), and the functions that
//! describe the current process and its children.
//!
//! ```
//! multiproc::init();
//! fn print_cube(n: i64) {
//!     println!("Cube: {}", n * n * n);
//! }
//! let mut p = multiproc::Process::new(print_cube, 3);
//! p.start().unwrap();
//! p.join().unwrap();
//! assert_eq!(p.exitcode(), Some(0));
//! ```
//!
//! Every child dies with its parent (it gets SIGKILL if the parent dies), and is reaped by
//! `join`, `exitcode`, `is_alive` or, once its `Process` was dropped, by the next `start` or
//! [`active_children`]. When the parent exits normally, daemon children are terminated and
//! the others are waited for, as in Python.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::{PipeReader, PipeWriter};
use std::marker::PhantomData;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::connection::Waitable;
use crate::identity::next_identity;
pub use crate::identity::{current_process, parent_process, ProcessInfo};
use crate::ipc::RawConn;
use crate::start::{self, Code, LaunchSpec, Outcome, StartMethod};
use crate::{codec, sys, Error, Result};

fn default_name(identity: &[u32]) -> String {
    let parts: Vec<String> = identity.iter().map(u32::to_string).collect();
    format!("Process-{}", parts.join(":"))
}

/// The number of CPUs this process may use (respecting affinity masks and cgroup quotas):
/// Python's `process_cpu_count()` (3.13). Python's `cpu_count()` counts every CPU of the
/// machine; a pool sized by that would start more workers than the process may run at once
/// when a mask or a quota limits it. It is what [`Pool::new(0)`](crate::Pool::new) starts.
///
/// ```
/// assert!(multiproc::cpu_count() >= 1);
/// ```
#[doc(alias = "process_cpu_count")]
pub fn cpu_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A started child: shared by its handle and the registry of live children.
pub(crate) struct ChildState {
    pid: u32,
    pidfd: OwnedFd,
    name: String,
    daemon: bool,
    status: Mutex<Option<sys::ExitStatus>>,
    detached: AtomicBool,
    /// Reaped by the SIGCHLD handler as soon as it ends ([`Process::reap_when_ended`]):
    /// taken out of the handler's set before the pidfd closes.
    reaped_early: AtomicBool,
}

impl Drop for ChildState {
    fn drop(&mut self) {
        if self.reaped_early.load(Ordering::SeqCst) {
            sys::stop_reaping(&self.pidfd);
        }
    }
}

impl ChildState {
    fn new(launched: start::Launched, name: String, daemon: bool) -> Arc<ChildState> {
        Arc::new(ChildState {
            pid: launched.pid,
            pidfd: launched.pidfd,
            name,
            daemon,
            status: Mutex::new(None),
            detached: AtomicBool::new(false),
            reaped_early: AtomicBool::new(false),
        })
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// The pidfd: readable once the process has ended.
    pub(crate) fn pidfd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.pidfd.as_fd()
    }

    /// The exit status if it has ended (reaping it), without blocking.
    pub(crate) fn poll(&self) -> Result<Option<sys::ExitStatus>> {
        let mut st = self.status.lock().unwrap_or_else(|p| p.into_inner());
        if st.is_none() {
            *st = sys::try_reap(&self.pidfd)?;
            if let Some(s) = *st {
                crate::log::log_event!(
                    Debug,
                    "process {} (pid {}) ended with exit code {}",
                    self.name,
                    self.pid,
                    s.exitcode()
                );
            }
        }
        Ok(*st)
    }

    /// Waits up to `timeout` (`None`: for ever) for it to end; reaps it.
    pub(crate) fn wait(&self, timeout: Option<Duration>) -> Result<Option<sys::ExitStatus>> {
        if let Some(s) = self.poll()? {
            return Ok(Some(s));
        }
        if sys::wait_exited(&self.pidfd, timeout)? {
            // Readable pidfd: it has exited; reap (another thread may have beaten us to it,
            // in which case the status is recorded).
            loop {
                if let Some(s) = self.poll()? {
                    return Ok(Some(s));
                }
                std::thread::yield_now();
            }
        }
        Ok(None)
    }

    pub(crate) fn signal(&self, sig: i32) -> Result<()> {
        let st = self.status.lock().unwrap_or_else(|p| p.into_inner());
        if st.is_some() {
            return Ok(()); // already reaped: its pid may belong to someone else now
        }
        Ok(sys::signal_pidfd(&self.pidfd, sig)?)
    }

    fn info(&self) -> ProcessInfo {
        ProcessInfo::new(self.name.clone(), self.pid, self.daemon)
    }

    fn died_error(&self, status: Option<sys::ExitStatus>) -> Error {
        match status {
            Some(sys::ExitStatus::Signal(s)) => Error::WorkerDied {
                pid: self.pid,
                exitcode: None,
                signal: Some(s),
            },
            Some(sys::ExitStatus::Code(c)) => Error::WorkerDied {
                pid: self.pid,
                exitcode: Some(c),
                signal: None,
            },
            None => Error::WorkerDied {
                pid: self.pid,
                exitcode: None,
                signal: None,
            },
        }
    }
}

static REGISTRY: Mutex<Vec<Arc<ChildState>>> = Mutex::new(Vec::new());

fn register(child: &Arc<ChildState>) {
    let mut r = REGISTRY.lock().unwrap_or_else(|p| p.into_inner());
    // Reap children whose handles were dropped and that have ended since.
    r.retain(|c| !(c.detached.load(Ordering::SeqCst) && matches!(c.poll(), Ok(Some(_)))));
    r.push(child.clone());
}

fn unregister(child: &Arc<ChildState>) {
    let mut r = REGISTRY.lock().unwrap_or_else(|p| p.into_inner());
    r.retain(|c| !Arc::ptr_eq(c, child));
}

/// The children of this process that are still running; finished ones are reaped (Python's
/// `active_children()`).
///
/// ```
/// multiproc::init();
/// fn nap(ms: u64) { std::thread::sleep(std::time::Duration::from_millis(ms)) }
/// let mut p = multiproc::Process::new(nap, 2000);
/// p.start().unwrap();
/// assert!(multiproc::active_children().iter().any(|c| Some(c.pid()) == p.pid()));
/// p.kill().unwrap();
/// p.join().unwrap();
/// assert!(!multiproc::active_children().iter().any(|c| Some(c.pid()) == p.pid()));
/// ```
pub fn active_children() -> Vec<ProcessInfo> {
    let mut r = REGISTRY.lock().unwrap_or_else(|p| p.into_inner());
    r.retain(|c| matches!(c.poll(), Ok(None)));
    r.iter().map(|c| c.info()).collect()
}

/// At exit (a hook run by `start`, before it stops the fork server): terminates daemon
/// children and waits for the others (Python's exit behaviour).
pub(crate) fn exit_handler_body() {
    let children: Vec<Arc<ChildState>> = match REGISTRY.lock() {
        Ok(mut r) => r.drain(..).collect(),
        Err(p) => p.into_inner().drain(..).collect(),
    };
    for c in &children {
        if c.daemon {
            let _ = c.signal(libc::SIGTERM);
        }
    }
    for c in &children {
        let _ = c.wait(None);
    }
}

/// In a forked child (a hook run by `start`): the parent's children are not ours.
pub(crate) fn forget_after_fork() {
    if let Ok(mut r) = REGISTRY.try_lock() {
        // Dropping closes our inherited copies of the pidfds; the parent keeps its own.
        r.clear();
    }
}

trait ErasedArgs: Send {
    fn encode(&self, out: &mut Vec<u8>) -> Result<Vec<OwnedFd>>;
}

impl<A: Serialize + Send> ErasedArgs for A {
    fn encode(&self, out: &mut Vec<u8>) -> Result<Vec<OwnedFd>> {
        codec::encode_with_fds(self, out)
    }
}

/// A process object, like Python's `multiprocessing.Process`: created with a target function
/// and its arguments, started with [`start`](Process::start), waited for with
/// [`join`](Process::join).
///
/// The target is a plain `fn(A) -> R` (or a closure that captures nothing); its return value
/// decides the exit code as a Rust `main`'s does (`()` and `Ok(())` give 0, an `Err` gives 1,
/// see [`Process::new`]) — use [`spawn`] to get a value back. Several arguments travel as a
/// tuple.
/// Handles in `args` (connections, queues, locks, …) arrive working in the child.
///
/// [`Process::new`] takes the defaults; [`Builder`] sets every option (name, daemon flag,
/// start method, environment, working directory, standard streams) and makes either a
/// `Process` ([`Builder::process`]) or a started child with its result
/// ([`Builder::spawn`]). [`with_name`](Process::with_name) and friends are shorthands for
/// the builder's options, kept for Python's `Process(name=..., daemon=...)`.
///
/// ```
/// multiproc::init();
/// fn greet((name, times): (String, u32)) {
///     for _ in 0..times { println!("hi from {name}"); }
/// }
/// let mut p = multiproc::Process::new(greet, ("Ann".to_string(), 2)).with_name("greeter");
/// assert_eq!(p.name(), "greeter");
/// p.start().unwrap();
/// assert!(matches!(p.start(), Err(multiproc::Error::AlreadyStarted)));
/// p.join().unwrap();
/// assert_eq!(p.exitcode(), Some(0));
/// ```
pub struct Process {
    name: String,
    opts: Builder,
    code: Code,
    args: Option<Box<dyn ErasedArgs>>,
    identity: Vec<u32>,
    child: Option<Arc<ChildState>>,
    pipes: Pipes,
}

/// The parent's ends of the pipes made by [`Stdio::piped`].
#[derive(Default)]
struct Pipes {
    stdin: Option<PipeWriter>,
    stdout: Option<PipeReader>,
    stderr: Option<PipeReader>,
}

impl Pipes {
    /// The ends as descriptors, for the launch to carry: a forked child closes its copies
    /// of them (see `LaunchSpec::parent_ends`). Undone by [`from_fds`](Self::from_fds).
    fn into_fds(self) -> [Option<OwnedFd>; 3] {
        [
            self.stdin.map(OwnedFd::from),
            self.stdout.map(OwnedFd::from),
            self.stderr.map(OwnedFd::from),
        ]
    }

    fn from_fds([stdin, stdout, stderr]: [Option<OwnedFd>; 3]) -> Pipes {
        Pipes {
            stdin: stdin.map(PipeWriter::from),
            stdout: stdout.map(PipeReader::from),
            stderr: stderr.map(PipeReader::from),
        }
    }
}

impl fmt::Debug for Process {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Process")
            .field("name", &self.name)
            .field("daemon", &self.opts.daemon)
            .field("pid", &self.pid())
            .finish()
    }
}

impl Process {
    /// A process that will run `target(args)`. Named "Process-N" (N counts the processes
    /// created by this process), not a daemon, started with the default start method: the
    /// same as `Builder::new().process(target, args)`.
    ///
    /// The target's return value decides the [exit code](Process::exitcode) the way a Rust
    /// `main`'s does ([`std::process::Termination`]): `()` and `Ok(())` give 0; an `Err(e)`
    /// is printed to the child's standard error as `Error: {e:?}`, after a line
    /// `Process NAME:` (Python's header for an exception in a process), and gives 1
    /// (Python's exit code when the target raises); an [`ExitCode`](std::process::ExitCode) gives its
    /// number. A panic gives 1 too. To get a value back, use [`spawn`] instead.
    ///
    /// ```
    /// multiproc::init();
    /// let p = multiproc::Process::new(|x: i32| assert!(x > 0), 1);
    /// assert!(p.name().starts_with("Process-"));
    /// assert_eq!(p.pid(), None);
    ///
    /// fn parse(s: String) -> Result<(), std::num::ParseIntError> {
    ///     s.parse::<i32>().map(drop)
    /// }
    /// let mut good = multiproc::Process::new(parse, "42".to_string());
    /// let mut bad = multiproc::Builder::new()
    ///     .stderr(multiproc::process::Stdio::null()) // where "Error: ParseIntError { .. }" goes
    ///     .process(parse, "forty-two".to_string());
    /// good.start().unwrap();
    /// bad.start().unwrap();
    /// good.join().unwrap();
    /// bad.join().unwrap();
    /// assert_eq!(good.exitcode(), Some(0));
    /// assert_eq!(bad.exitcode(), Some(1));
    /// ```
    pub fn new<A, R>(target: fn(A) -> R, args: A) -> Process
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: std::process::Termination + 'static,
    {
        Builder::new().process(target, args)
    }

    fn with_code<A>(opts: Builder, code: Code, args: A) -> Process
    where
        A: Serialize + Send + 'static,
    {
        let identity = next_identity();
        Process {
            name: opts.name.clone().unwrap_or_else(|| default_name(&identity)),
            opts,
            code,
            args: Some(Box::new(args)),
            identity,
            child: None,
            pipes: Pipes::default(),
        }
    }

    /// Has the started child reaped by the crate's SIGCHLD handler as soon as it ends (a
    /// helper process: the manager's server), so that no zombie is left until the owner's
    /// next look; its exit status still reaches [`join`](Process::join) and
    /// [`exitcode`](Process::exitcode). Does nothing if the handler cannot take it.
    pub(crate) fn reap_when_ended(&self) {
        if let Some(c) = &self.child {
            if !c.reaped_early.load(Ordering::SeqCst) && sys::reap_when_ended(&c.pidfd) {
                c.reaped_early.store(true, Ordering::SeqCst);
            }
        }
    }

    /// Sets the name (Python's `name=`; [`Builder::name`]). As in Python, it may also be
    /// changed once the process has started: the child keeps the name it started with.
    ///
    /// ```
    /// let p = multiproc::Process::new(|_: ()| (), ()).with_name("digger-1");
    /// assert_eq!(p.name(), "digger-1");
    /// ```
    pub fn with_name(mut self, name: impl Into<String>) -> Process {
        self.name = name.into();
        self
    }

    /// Makes it a daemon: terminated when its parent exits (Python's `daemon=True`;
    /// [`Builder::daemon`]).
    ///
    /// # Panics
    ///
    /// If the process has already started, as Python's `p.daemon = True` then fails its
    /// assertion (`process has already started`): the child was started with the flag it
    /// had, and a changed flag would misreport it. [`set_daemon`](Process::set_daemon)
    /// gives [`Error::AlreadyStarted`] instead.
    ///
    /// ```
    /// let p = multiproc::Process::new(|_: ()| (), ()).with_daemon(true);
    /// assert!(p.daemon());
    /// ```
    #[track_caller]
    pub fn with_daemon(mut self, daemon: bool) -> Process {
        self.refuse_after_start("daemon flag");
        self.opts.daemon = daemon;
        self
    }

    /// Whether [`start`](Process::start) has been called successfully: the settings the
    /// child starts with (daemon flag, authkey, start method) are fixed from then on.
    fn has_started(&self) -> bool {
        self.child.is_some() || self.args.is_none()
    }

    /// Panics with a message that says which setting came too late (see the `# Panics`
    /// sections of the `with_*` methods).
    #[track_caller]
    fn refuse_after_start(&self, what: &str) {
        if self.has_started() {
            panic!(
                "cannot change the {what} of process {}: {}",
                self.name,
                Error::AlreadyStarted
            );
        }
    }

    /// Sets the daemon flag (Python's `p.daemon = flag`), before the process starts.
    ///
    /// # Errors
    ///
    /// [`Error::AlreadyStarted`] once it has started (Python: `AssertionError: process has
    /// already started`); the flag is left as it was.
    ///
    /// ```
    /// multiproc::init();
    /// let mut p = multiproc::Process::new(|_: ()| (), ());
    /// p.set_daemon(true).unwrap();
    /// p.start().unwrap();
    /// assert!(matches!(p.set_daemon(false), Err(multiproc::Error::AlreadyStarted)));
    /// assert!(p.daemon());
    /// p.join().unwrap();
    /// ```
    #[doc(alias = "daemon")]
    pub fn set_daemon(&mut self, daemon: bool) -> Result<()> {
        if self.has_started() {
            return Err(Error::AlreadyStarted);
        }
        self.opts.daemon = daemon;
        Ok(())
    }

    /// Sets the child's authkey (Python's `p.authkey = key` before `start()`;
    /// [`Builder::authkey`]).
    ///
    /// # Panics
    ///
    /// If the process has already started, like [`with_daemon`](Process::with_daemon):
    /// the child runs with the key it started with, and [`authkey`](Process::authkey)
    /// would then name a key that the child does not have. (Python lets `p.authkey` be
    /// assigned after `start()`, but that changes only the parent's record, never the
    /// running child's key.) [`set_authkey`](Process::set_authkey) gives
    /// [`Error::AlreadyStarted`] instead.
    ///
    /// ```
    /// let p = multiproc::Process::new(|_: ()| (), ()).with_authkey(b"k");
    /// assert_eq!(p.authkey(), b"k");
    /// ```
    #[track_caller]
    pub fn with_authkey(mut self, authkey: &[u8]) -> Process {
        self.refuse_after_start("authkey");
        self.opts.authkey = Some(HiddenKey(authkey.to_vec()));
        self
    }

    /// Sets the child's authkey (Python's `p.authkey = key`), before the process starts.
    ///
    /// # Errors
    ///
    /// [`Error::AlreadyStarted`] once it has started: the child keeps the key it started
    /// with, and so does [`authkey`](Process::authkey).
    ///
    /// ```
    /// multiproc::init();
    /// fn key(_: ()) { assert_eq!(multiproc::current_process().authkey(), b"first") }
    /// let mut p = multiproc::Process::new(key, ());
    /// p.set_authkey(b"first").unwrap();
    /// p.start().unwrap();
    /// assert!(matches!(p.set_authkey(b"second"), Err(multiproc::Error::AlreadyStarted)));
    /// assert_eq!(p.authkey(), b"first");
    /// p.join().unwrap();
    /// assert_eq!(p.exitcode(), Some(0));
    /// ```
    pub fn set_authkey(&mut self, authkey: &[u8]) -> Result<()> {
        if self.has_started() {
            return Err(Error::AlreadyStarted);
        }
        self.opts.authkey = Some(HiddenKey(authkey.to_vec()));
        Ok(())
    }

    /// The child's authkey (Python's `Process.authkey`): the one set with
    /// [`with_authkey`](Process::with_authkey) or [`Builder::authkey`], else this process's.
    ///
    /// ```
    /// multiproc::init();
    /// let p = multiproc::Process::new(|_: ()| (), ());
    /// assert_eq!(p.authkey(), multiproc::current_process().authkey());
    /// ```
    pub fn authkey(&self) -> Vec<u8> {
        match &self.opts.authkey {
            Some(k) => k.0.clone(),
            None => crate::identity::tree_authkey().to_vec(),
        }
    }

    /// Starts this process with `method` instead of the default
    /// ([`Builder::start_method`]); in the child, `method` is then the default (its
    /// [`get_start_method`](crate::get_start_method)), as in a child of Python's
    /// `get_context(method).Process`.
    ///
    /// ```
    /// multiproc::init();
    /// use multiproc::StartMethod;
    /// fn its_default(_: ()) {
    ///     std::process::exit((multiproc::get_start_method() != StartMethod::Spawn) as i32)
    /// }
    /// let mut p = multiproc::Process::new(its_default, ()).with_start_method(StartMethod::Spawn);
    /// p.start().unwrap();
    /// p.join().unwrap();
    /// assert_eq!(p.exitcode(), Some(0));
    /// ```
    ///
    /// # Panics
    ///
    /// If the process has already started, like [`with_daemon`](Process::with_daemon):
    /// it was started with the method it had. (Python has no such setting: a `Process`
    /// takes its start method from the context that made it.)
    #[track_caller]
    pub fn with_start_method(mut self, method: StartMethod) -> Process {
        self.refuse_after_start("start method");
        self.opts.method = Some(method);
        self
    }

    #[doc(hidden)]
    /// Test hook: make the child believe it is another build. Panics after start, like
    /// the other settings the child starts with.
    #[track_caller]
    pub fn with_build_id_override(mut self, id: u64) -> Process {
        self.refuse_after_start("build id");
        self.opts.build_id_override = Some(id);
        self
    }

    /// The name.
    ///
    /// ```
    /// assert_eq!(multiproc::Process::new(|_: ()| (), ()).with_name("x").name(), "x");
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether it is a daemon.
    ///
    /// ```
    /// assert!(!multiproc::Process::new(|_: ()| (), ()).daemon());
    /// ```
    pub fn daemon(&self) -> bool {
        self.opts.daemon
    }

    /// Starts the process. A second call gives [`Error::AlreadyStarted`]. After a successful
    /// start the parent's copy of the arguments is dropped (so a connection end moved into
    /// them is closed in the parent, as in Python).
    ///
    /// # Errors
    ///
    /// - [`Error::AlreadyStarted`]: it was started before.
    /// - [`Error::NotInitialized`]: [`init()`](crate::init) was not called first in `main`
    ///   (or in the `#[test]`).
    /// - [`Error::Codec`]: the arguments could not be encoded.
    /// - [`Error::InvalidOperation`]: [`StartMethod::Fork`] while this process has other
    ///   threads (see [`allow_fork_with_threads`](crate::allow_fork_with_threads)), or a
    ///   target that is not in the program's executable (from a dynamic library).
    /// - [`Error::Io`]: the system refused (no more processes, a
    ///   [`current_dir`](Builder::current_dir) that is not a directory, …).
    ///
    /// ```
    /// multiproc::init();
    /// let mut p = multiproc::Process::new(|_: ()| (), ());
    /// p.start().unwrap();
    /// assert!(p.pid().is_some());
    /// p.join().unwrap();
    /// ```
    pub fn start(&mut self) -> Result<()> {
        self.start_inner(None).map(|_| ())
    }

    fn start_inner(&mut self, result: Option<OwnedFd>) -> Result<()> {
        if self.child.is_some() {
            return Err(Error::AlreadyStarted);
        }
        let Some(args) = self.args.as_ref() else {
            return Err(Error::AlreadyStarted);
        };
        if let Some(dir) = &self.opts.cwd {
            // Checked here, where the error can be returned; the child changes to it.
            if !std::fs::metadata(dir)?.is_dir() {
                return Err(Error::Io(std::io::Error::new(
                    std::io::ErrorKind::NotADirectory,
                    format!("current_dir {} is not a directory", dir.display()),
                )));
            }
        }
        let mut bytes = Vec::new();
        let arg_fds = args.encode(&mut bytes)?;
        let mut pipes = Pipes::default();
        let stdio = self.opts.child_stdio(&mut pipes)?;
        let mut launched = start::launch(LaunchSpec {
            method: self.opts.method.unwrap_or_else(start::get_start_method),
            code: self.code,
            name: self.name.clone(),
            identity: self.identity.clone(),
            daemon: self.opts.daemon,
            args: bytes,
            arg_fds,
            result,
            build_id_override: self.opts.build_id_override,
            env: self.opts.env.clone(),
            env_clear: self.opts.env_clear,
            cwd: self.opts.cwd.clone(),
            stdio,
            parent_ends: pipes.into_fds(),
            authkey: self.opts.authkey.as_ref().map(|k| k.0.clone()),
        })?;
        self.args = None;
        self.pipes = Pipes::from_fds(std::mem::take(&mut launched.parent_ends));
        let child = ChildState::new(launched, self.name.clone(), self.opts.daemon);
        crate::log::log_event!(Debug, "started process {} (pid {})", self.name, child.pid);
        register(&child);
        self.child = Some(child);
        Ok(())
    }

    /// The started child's shared state (for the pool, which watches and kills workers).
    pub(crate) fn child_state(&self) -> Option<Arc<ChildState>> {
        self.child.clone()
    }

    fn started(&self) -> Result<&Arc<ChildState>> {
        self.child.as_ref().ok_or(Error::NotStarted)
    }

    /// The parent's end of the child's standard input, once started with
    /// [`Stdio::piped`] for it ([`Builder::stdin`]); `None` otherwise or once taken. Drop
    /// it to close the child's input.
    ///
    /// ```
    /// multiproc::init();
    /// use std::io::{Read, Write};
    /// use multiproc::process::{Builder, Stdio};
    /// fn shout(_: ()) {
    ///     let mut s = String::new();
    ///     std::io::stdin().read_to_string(&mut s).unwrap();
    ///     print!("{}", s.to_uppercase());
    /// }
    /// let mut p = Builder::new().stdin(Stdio::piped()).stdout(Stdio::piped()).process(shout, ());
    /// p.start().unwrap();
    /// p.take_stdin().unwrap().write_all(b"hello").unwrap(); // dropped: end of input
    /// let mut out = String::new();
    /// p.take_stdout().unwrap().read_to_string(&mut out).unwrap();
    /// p.join().unwrap();
    /// assert_eq!(out, "HELLO");
    /// ```
    pub fn take_stdin(&mut self) -> Option<PipeWriter> {
        self.pipes.stdin.take()
    }

    /// The parent's end of the child's standard output, once started with
    /// [`Stdio::piped`] for it ([`Builder::stdout`]); `None` otherwise or once taken.
    ///
    /// ```
    /// multiproc::init();
    /// use std::io::Read;
    /// use multiproc::process::{Builder, Stdio};
    /// let mut p = Builder::new().stdout(Stdio::piped()).process(|n: u32| println!("{n}"), 7);
    /// p.start().unwrap();
    /// let mut out = String::new();
    /// p.take_stdout().unwrap().read_to_string(&mut out).unwrap();
    /// p.join().unwrap();
    /// assert_eq!(out, "7\n");
    /// ```
    pub fn take_stdout(&mut self) -> Option<PipeReader> {
        self.pipes.stdout.take()
    }

    /// The parent's end of the child's standard error, once started with
    /// [`Stdio::piped`] for it ([`Builder::stderr`]); `None` otherwise or once taken.
    ///
    /// ```
    /// multiproc::init();
    /// use std::io::Read;
    /// use multiproc::process::{Builder, Stdio};
    /// let mut p = Builder::new().stderr(Stdio::piped()).process(|_: ()| eprint!("oops"), ());
    /// p.start().unwrap();
    /// let mut err = String::new();
    /// p.take_stderr().unwrap().read_to_string(&mut err).unwrap();
    /// p.join().unwrap();
    /// assert_eq!(err, "oops");
    /// ```
    pub fn take_stderr(&mut self) -> Option<PipeReader> {
        self.pipes.stderr.take()
    }

    /// The process id, once started.
    ///
    /// ```
    /// assert_eq!(multiproc::Process::new(|_: ()| (), ()).pid(), None);
    /// ```
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.pid)
    }

    /// Whether it has been started and has not ended yet.
    ///
    /// ```
    /// multiproc::init();
    /// let mut p = multiproc::Process::new(|_: ()| (), ());
    /// assert!(!p.is_alive());
    /// p.start().unwrap();
    /// p.join().unwrap();
    /// assert!(!p.is_alive());
    /// ```
    pub fn is_alive(&self) -> bool {
        match &self.child {
            Some(c) => matches!(c.poll(), Ok(None)),
            None => false,
        }
    }

    /// Waits until the process ends. [`Error::NotStarted`] if it was never started.
    ///
    /// ```
    /// multiproc::init();
    /// let mut p = multiproc::Process::new(|_: ()| std::process::exit(7), ());
    /// p.start().unwrap();
    /// p.join().unwrap();
    /// assert_eq!(p.exitcode(), Some(7));
    /// ```
    pub fn join(&self) -> Result<()> {
        self.started()?.wait(None).map(|_| ())
    }

    /// Waits up to `timeout`; returns whether the process has ended. A zero timeout only
    /// looks.
    ///
    /// ```
    /// multiproc::init();
    /// use std::time::Duration;
    /// fn nap(ms: u64) { std::thread::sleep(Duration::from_millis(ms)) }
    /// let mut p = multiproc::Process::new(nap, 5000);
    /// p.start().unwrap();
    /// assert!(!p.join_timeout(Duration::ZERO).unwrap());
    /// p.terminate().unwrap();
    /// assert!(p.join_timeout(Duration::from_secs(10)).unwrap());
    /// assert_eq!(p.exitcode(), Some(-15));
    /// ```
    pub fn join_timeout(&self, timeout: Duration) -> Result<bool> {
        Ok(self.started()?.wait(Some(timeout))?.is_some())
    }

    /// The exit code: `None` while running (or before start); `0` on success; `1` if the
    /// target panicked or returned an `Err`; the number of the
    /// [`ExitCode`](std::process::ExitCode) it returned or of `std::process::exit`; `-N` if
    /// killed by signal N.
    ///
    /// ```
    /// multiproc::init();
    /// let mut p = multiproc::Process::new(|_: ()| panic!("boom"), ());
    /// assert_eq!(p.exitcode(), None);
    /// p.start().unwrap();
    /// p.join().unwrap();
    /// assert_eq!(p.exitcode(), Some(1));
    /// ```
    pub fn exitcode(&self) -> Option<i32> {
        let c = self.child.as_ref()?;
        c.poll().ok().flatten().map(sys::ExitStatus::exitcode)
    }

    /// Sends SIGTERM (Python's `terminate()`). Nothing happens if it has already ended.
    ///
    /// ```
    /// multiproc::init();
    /// fn nap(s: u64) { std::thread::sleep(std::time::Duration::from_secs(s)) }
    /// let mut p = multiproc::Process::new(nap, 60);
    /// p.start().unwrap();
    /// p.terminate().unwrap();
    /// p.join().unwrap();
    /// assert_eq!(p.exitcode(), Some(-15));
    /// ```
    pub fn terminate(&self) -> Result<()> {
        self.started()?.signal(libc::SIGTERM)
    }

    /// Sends SIGINT, as Ctrl-C does (Python 3.14's `interrupt()`). Nothing happens if it
    /// has already ended. A child without a handler of its own for SIGINT ends with exit
    /// code `-2` (Python's child raises `KeyboardInterrupt` and ends with `1` instead,
    /// unless it set SIGINT back to its default, as `test_interrupt_no_handler` does).
    /// A program started with SIGINT ignored (a background job of a non-interactive
    /// shell, `nohup`) passes that on to its children, in Python as here: such a child
    /// ignores the interrupt.
    ///
    /// ```
    /// use std::time::Duration;
    /// multiproc::init();
    /// fn nap(s: u64) { std::thread::sleep(Duration::from_secs(s)) }
    /// let mut p = multiproc::Process::new(nap, 60);
    /// p.start().unwrap();
    /// p.interrupt().unwrap();
    /// if p.join_timeout(Duration::from_secs(20)).unwrap() {
    ///     assert_eq!(p.exitcode(), Some(-2));
    /// } else {
    ///     // This program ignores SIGINT, and so does its child: stop it another way.
    ///     p.kill().unwrap();
    ///     p.join().unwrap();
    /// }
    /// ```
    pub fn interrupt(&self) -> Result<()> {
        self.started()?.signal(libc::SIGINT)
    }

    /// Sends SIGKILL (Python's `kill()`).
    ///
    /// ```
    /// multiproc::init();
    /// fn nap(s: u64) { std::thread::sleep(std::time::Duration::from_secs(s)) }
    /// let mut p = multiproc::Process::new(nap, 60);
    /// p.start().unwrap();
    /// p.kill().unwrap();
    /// p.join().unwrap();
    /// assert_eq!(p.exitcode(), Some(-9));
    /// ```
    pub fn kill(&self) -> Result<()> {
        self.started()?.signal(libc::SIGKILL)
    }

    /// A descriptor that becomes readable when the process ends (Python's
    /// `Process.sentinel`), to wait on with [`wait`](crate::connection::wait) or `poll(2)`
    /// beside connections; `None` before [`start`](Process::start). It is a pidfd, valid as
    /// long as this `Process` lives; it does not reap the child (`join` does).
    ///
    /// ```
    /// multiproc::init();
    /// use multiproc::connection::wait;
    /// fn nap(s: u64) { std::thread::sleep(std::time::Duration::from_secs(s)) }
    /// let mut p = multiproc::Process::new(nap, 60);
    /// assert!(p.sentinel().is_none());
    /// p.start().unwrap();
    /// p.kill().unwrap();
    /// assert_eq!(wait(&[&p.sentinel().unwrap()], None).unwrap(), vec![0]);
    /// p.join().unwrap();
    /// assert_eq!(p.exitcode(), Some(-9));
    /// ```
    pub fn sentinel(&self) -> Option<BorrowedFd<'_>> {
        self.child.as_ref().map(|c| c.pidfd())
    }
}

/// Ready once the process has ended (see [`wait`](crate::connection::wait)); a process
/// never started gives [`Error::NotStarted`].
///
/// ```
/// multiproc::init();
/// use multiproc::connection::{wait, Waitable};
/// let mut p = multiproc::Process::new(|_: ()| (), ());
/// assert!(matches!(p.is_ready(), Err(multiproc::Error::NotStarted)));
/// p.start().unwrap();
/// assert_eq!(wait(&[&p], None).unwrap(), vec![0]);
/// p.join().unwrap();
/// ```
impl Waitable for Process {
    fn wait_fd(&self) -> Option<BorrowedFd<'_>> {
        self.sentinel()
    }

    fn is_ready(&self) -> Result<bool> {
        self.started()?.pidfd().is_ready()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(c) = self.child.take() {
            if matches!(c.poll(), Ok(Some(_))) {
                unregister(&c);
            } else {
                // Still running: reaped later by `start`, `active_children` or at exit.
                c.detached.store(true, Ordering::SeqCst);
            }
        }
    }
}

/// What a child's standard input, output or error is connected to ([`Builder::stdin`],
/// [`Builder::stdout`], [`Builder::stderr`]), like [`std::process::Stdio`].
///
/// Without a setting, a child's standard input is `/dev/null` (as in Python) and its
/// output and error are the parent's.
///
/// ```
/// use multiproc::process::Stdio;
/// let _ = Stdio::inherit();
/// let _ = Stdio::null();
/// let _ = Stdio::piped();
/// let _ = Stdio::from(std::fs::File::open("/dev/null").unwrap());
/// ```
#[derive(Clone, Debug)]
pub struct Stdio(StdioKind);

#[derive(Clone, Debug)]
enum StdioKind {
    Inherit,
    Null,
    Piped,
    Fd(Arc<OwnedFd>),
}

impl Stdio {
    /// The parent's own stream (for standard input: the parent's standard input, which
    /// the child then shares).
    ///
    /// ```
    /// let b = multiproc::Builder::new().stdout(multiproc::process::Stdio::inherit());
    /// # let _ = b;
    /// ```
    pub fn inherit() -> Stdio {
        Stdio(StdioKind::Inherit)
    }

    /// `/dev/null`: input at its end, output discarded.
    ///
    /// ```
    /// multiproc::init();
    /// use multiproc::{process::Stdio, Builder};
    /// let h = Builder::new().stdout(Stdio::null()).spawn(|_: ()| println!("unseen"), ()).unwrap();
    /// h.join().unwrap();
    /// ```
    pub fn null() -> Stdio {
        Stdio(StdioKind::Null)
    }

    /// A new pipe: the parent gets the other end with [`Process::take_stdin`],
    /// [`take_stdout`](Process::take_stdout) or [`take_stderr`](Process::take_stderr)
    /// (or [`JoinHandle`]'s methods of the same names).
    ///
    /// With [`StartMethod::Fork`] other children forked later inherit the parent's end of
    /// such a pipe too (as with Python's fork); the other start methods do not leak it.
    ///
    /// ```
    /// multiproc::init();
    /// use std::io::Read;
    /// use multiproc::{process::Stdio, Builder};
    /// let mut h = Builder::new().stdout(Stdio::piped()).spawn(|_: ()| print!("hi"), ()).unwrap();
    /// let mut out = String::new();
    /// h.take_stdout().unwrap().read_to_string(&mut out).unwrap();
    /// h.join().unwrap();
    /// assert_eq!(out, "hi");
    /// ```
    pub fn piped() -> Stdio {
        Stdio(StdioKind::Piped)
    }
}

impl From<std::fs::File> for Stdio {
    /// The file (opened for reading for standard input, for writing for the others).
    ///
    /// ```
    /// multiproc::init();
    /// let path = std::env::temp_dir().join(format!("multiproc-doc-{}", std::process::id()));
    /// let file = std::fs::File::create(&path).unwrap();
    /// let h = multiproc::Builder::new().stdout(file).spawn(|_: ()| print!("logged"), ()).unwrap();
    /// h.join().unwrap();
    /// assert_eq!(std::fs::read_to_string(&path).unwrap(), "logged");
    /// std::fs::remove_file(&path).unwrap();
    /// ```
    fn from(f: std::fs::File) -> Stdio {
        Stdio(StdioKind::Fd(Arc::new(f.into())))
    }
}

impl From<OwnedFd> for Stdio {
    /// Any descriptor: a socket, a pipe end, a file.
    ///
    /// ```
    /// let fd: std::os::fd::OwnedFd = std::fs::File::open("/dev/null").unwrap().into();
    /// let b = multiproc::Builder::new().stdin(fd);
    /// # let _ = b;
    /// ```
    fn from(fd: OwnedFd) -> Stdio {
        Stdio(StdioKind::Fd(Arc::new(fd)))
    }
}

/// The one process builder: name, daemon flag, start method, environment, working
/// directory and standard streams; then [`process`](Builder::process) for a [`Process`]
/// (Python's style, started later) or [`spawn`](Builder::spawn) to start one at once and
/// get its result through a [`JoinHandle`] (std::thread's style).
///
/// The environment and the working directory are applied in the child before the target
/// runs (for a `Spawn` child, after the program's `main` reached `multiproc::init()`).
///
/// ```
/// multiproc::init();
/// let h = multiproc::Builder::new()
///     .name("adder")
///     .start_method(multiproc::StartMethod::ForkServer)
///     .env("GREETING", "hi")
///     .current_dir("/")
///     .spawn(|(a, b): (i32, i32)| {
///         assert_eq!(std::env::var("GREETING").unwrap(), "hi");
///         assert_eq!(std::env::current_dir().unwrap(), std::path::Path::new("/"));
///         a + b
///     }, (2, 3))
///     .unwrap();
/// assert_eq!(h.join().unwrap(), 5);
/// ```
#[derive(Clone, Debug, Default)]
pub struct Builder {
    name: Option<String>,
    daemon: bool,
    method: Option<StartMethod>,
    build_id_override: Option<u64>,
    env: Vec<(OsString, Option<OsString>)>,
    env_clear: bool,
    cwd: Option<PathBuf>,
    stdio: [Option<Stdio>; 3],
    authkey: Option<HiddenKey>,
}

/// An authkey, kept out of `Debug` output.
#[derive(Clone)]
struct HiddenKey(Vec<u8>);

impl fmt::Debug for HiddenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<hidden>")
    }
}

impl Builder {
    /// Default options.
    ///
    /// ```
    /// let b = multiproc::Builder::new();
    /// # let _ = b;
    /// ```
    pub fn new() -> Builder {
        Builder::default()
    }

    /// The child's name (Python's `name=`).
    ///
    /// ```
    /// let p = multiproc::Builder::new().name("w").process(|_: ()| (), ());
    /// assert_eq!(p.name(), "w");
    /// ```
    pub fn name(mut self, name: impl Into<String>) -> Builder {
        self.name = Some(name.into());
        self
    }

    /// Whether the child is a daemon (Python's `daemon=`).
    ///
    /// ```
    /// let p = multiproc::Builder::new().daemon(true).process(|_: ()| (), ());
    /// assert!(p.daemon());
    /// ```
    pub fn daemon(mut self, daemon: bool) -> Builder {
        self.daemon = daemon;
        self
    }

    /// The child's authkey (Python's `p.authkey = key` before `start()`): its
    /// [`current_process().authkey()`](crate::ProcessInfo::authkey), which its own children
    /// inherit and a [`Manager`](crate::Manager) started there uses by default. Default:
    /// this process's authkey.
    ///
    /// ```
    /// multiproc::init();
    /// fn key(_: ()) -> Vec<u8> { multiproc::current_process().authkey() }
    /// let h = multiproc::Builder::new().authkey(b"secret").spawn(key, ()).unwrap();
    /// assert_eq!(h.join().unwrap(), b"secret");
    /// assert_ne!(multiproc::current_process().authkey(), b"secret"); // ours is unchanged
    /// ```
    pub fn authkey(mut self, authkey: &[u8]) -> Builder {
        self.authkey = Some(HiddenKey(authkey.to_vec()));
        self
    }

    /// The start method for this child, which is then the child's default (its
    /// [`get_start_method`](crate::get_start_method)), as in a child of Python's
    /// `get_context(method).Process`. Without it, the child starts with this process's
    /// default and inherits it.
    ///
    /// ```
    /// multiproc::init();
    /// use multiproc::StartMethod;
    /// fn its_default(_: ()) -> StartMethod { multiproc::get_start_method() }
    /// let h = multiproc::Builder::new()
    ///     .start_method(StartMethod::Spawn)
    ///     .spawn(its_default, ())
    ///     .unwrap();
    /// assert_eq!(h.join().unwrap(), StartMethod::Spawn);
    /// ```
    pub fn start_method(mut self, method: StartMethod) -> Builder {
        self.method = Some(method);
        self
    }

    #[doc(hidden)]
    /// Test hook: make the child believe it is another build.
    pub fn build_id_override(mut self, id: u64) -> Builder {
        self.build_id_override = Some(id);
        self
    }

    /// Sets an environment variable in the child ([`std::process::Command::env`]).
    ///
    /// ```
    /// multiproc::init();
    /// let h = multiproc::Builder::new()
    ///     .env("MODE", "fast")
    ///     .spawn(|_: ()| std::env::var("MODE").ok(), ())
    ///     .unwrap();
    /// assert_eq!(h.join().unwrap().as_deref(), Some("fast"));
    /// ```
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Builder {
        self.env
            .push((key.as_ref().to_owned(), Some(value.as_ref().to_owned())));
        self
    }

    /// Removes an environment variable in the child.
    ///
    /// ```
    /// multiproc::init();
    /// let h = multiproc::Builder::new()
    ///     .env_remove("HOME")
    ///     .spawn(|_: ()| std::env::var_os("HOME").is_none(), ())
    ///     .unwrap();
    /// assert!(h.join().unwrap());
    /// ```
    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Builder {
        self.env.push((key.as_ref().to_owned(), None));
        self
    }

    /// Starts the child's environment empty (variables set with [`env`](Builder::env)
    /// are then the only ones).
    ///
    /// ```
    /// multiproc::init();
    /// let h = multiproc::Builder::new()
    ///     .env_clear()
    ///     .env("ONLY", "1")
    ///     .spawn(|_: ()| std::env::vars().map(|(k, _)| k).collect::<Vec<_>>(), ())
    ///     .unwrap();
    /// assert_eq!(h.join().unwrap(), vec!["ONLY".to_string()]);
    /// ```
    pub fn env_clear(mut self) -> Builder {
        self.env.clear();
        self.env_clear = true;
        self
    }

    /// The child's working directory. Checked when the process starts: a missing
    /// directory is an [`Error::Io`] from `start`/`spawn`.
    ///
    /// ```
    /// multiproc::init();
    /// let h = multiproc::Builder::new()
    ///     .current_dir("/tmp")
    ///     .spawn(|_: ()| std::env::current_dir().unwrap(), ())
    ///     .unwrap();
    /// assert_eq!(h.join().unwrap(), std::path::Path::new("/tmp").canonicalize().unwrap());
    /// assert!(multiproc::Builder::new().current_dir("/no/such/dir").spawn(|_: ()| (), ()).is_err());
    /// ```
    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Builder {
        self.cwd = Some(dir.as_ref().to_owned());
        self
    }

    /// The child's standard input (default: `/dev/null`, as in Python). See [`Stdio`].
    ///
    /// ```
    /// multiproc::init();
    /// use std::io::Write;
    /// use multiproc::process::Stdio;
    /// fn count_lines(_: ()) -> usize { std::io::stdin().lines().count() }
    /// let mut h = multiproc::Builder::new().stdin(Stdio::piped()).spawn(count_lines, ()).unwrap();
    /// h.take_stdin().unwrap().write_all(b"a\nb\nc\n").unwrap();
    /// assert_eq!(h.join().unwrap(), 3);
    /// ```
    pub fn stdin(mut self, s: impl Into<Stdio>) -> Builder {
        self.stdio[0] = Some(s.into());
        self
    }

    /// The child's standard output (default: the parent's). See [`Stdio`].
    ///
    /// ```
    /// let b = multiproc::Builder::new().stdout(multiproc::process::Stdio::null());
    /// # let _ = b;
    /// ```
    pub fn stdout(mut self, s: impl Into<Stdio>) -> Builder {
        self.stdio[1] = Some(s.into());
        self
    }

    /// The child's standard error (default: the parent's). See [`Stdio`].
    ///
    /// ```
    /// let b = multiproc::Builder::new().stderr(multiproc::process::Stdio::null());
    /// # let _ = b;
    /// ```
    pub fn stderr(mut self, s: impl Into<Stdio>) -> Builder {
        self.stdio[2] = Some(s.into());
        self
    }

    /// The descriptors the child installs as its standard streams (`None`: the default),
    /// keeping the parent's ends of new pipes in `pipes`.
    fn child_stdio(&self, pipes: &mut Pipes) -> Result<[Option<OwnedFd>; 3]> {
        let mut out: [Option<OwnedFd>; 3] = [None, None, None];
        for (i, slot) in self.stdio.iter().enumerate() {
            let Some(Stdio(kind)) = slot else { continue };
            out[i] = Some(match kind {
                StdioKind::Inherit => sys::dup_stdio(i)?,
                StdioKind::Null => std::fs::OpenOptions::new()
                    .read(i == 0)
                    .write(i != 0)
                    .open("/dev/null")?
                    .into(),
                StdioKind::Fd(fd) => sys::dup_fd(fd.as_ref())?,
                StdioKind::Piped => {
                    let (r, w) = std::io::pipe()?;
                    if i == 0 {
                        pipes.stdin = Some(w);
                        r.into()
                    } else {
                        if i == 1 {
                            pipes.stdout = Some(r);
                        } else {
                            pipes.stderr = Some(r);
                        }
                        w.into()
                    }
                }
            });
        }
        Ok(out)
    }

    /// A [`Process`] with these options that will run `target(args)` once
    /// [`start`](Process::start)ed (its return value decides the exit code, as with
    /// [`Process::new`]).
    ///
    /// ```
    /// multiproc::init();
    /// let mut p = multiproc::Builder::new()
    ///     .name("quiet")
    ///     .stdout(multiproc::process::Stdio::null())
    ///     .process(|n: u8| println!("{n}"), 1);
    /// p.start().unwrap();
    /// p.join().unwrap();
    /// assert_eq!(p.exitcode(), Some(0));
    /// ```
    pub fn process<A, R>(self, target: fn(A) -> R, args: A) -> Process
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: std::process::Termination + 'static,
    {
        Process::with_code(self, Code::process(target), args)
    }

    /// Starts `f(args)` in a new process; [`JoinHandle::join`] returns its result.
    ///
    /// ```
    /// multiproc::init();
    /// let h = multiproc::Builder::new().spawn(|s: String| s.len(), "four".to_string()).unwrap();
    /// assert_eq!(h.join().unwrap(), 4);
    /// ```
    pub fn spawn<A, R>(self, f: fn(A) -> R, args: A) -> Result<JoinHandle<R>>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + 'static,
    {
        let mut p = Process::with_code(self, Code::returning(f), args);
        let (ours, theirs) = sys::stream_pair()?;
        p.start_inner(Some(theirs))?;
        Ok(JoinHandle {
            process: p,
            result: RawConn::new(ours),
            joined: false,
            _r: PhantomData,
        })
    }
}

/// Runs `f(args)` in a new process and returns a handle to its result, in the style of
/// `std::thread::spawn`.
///
/// # Errors
///
/// Those of [`Process::start`]. What goes wrong in the child comes from
/// [`JoinHandle::join`]: its panic as [`Error::TaskPanicked`], its death as
/// [`Error::WorkerDied`].
///
/// ```
/// multiproc::init();
/// let h = multiproc::spawn(|n: u64| (1..=n).product::<u64>(), 10).unwrap();
/// assert_eq!(h.join().unwrap(), 3_628_800);
///
/// let h = multiproc::spawn(|_: ()| -> u8 { panic!("no luck") }, ()).unwrap();
/// match h.join() {
///     Err(multiproc::Error::TaskPanicked { message, .. }) => assert_eq!(message, "no luck"),
///     other => panic!("{other:?}"),
/// }
/// ```
pub fn spawn<A, R>(f: fn(A) -> R, args: A) -> Result<JoinHandle<R>>
where
    A: Serialize + DeserializeOwned + Send + 'static,
    R: Serialize + DeserializeOwned + 'static,
{
    Builder::new().spawn(f, args)
}

/// A handle to a process started by [`spawn`]: join it to get the function's result.
///
/// Dropping it without joining leaves the process running (it is reaped later, and killed
/// if this process dies).
///
/// ```
/// multiproc::init();
/// let h = multiproc::spawn(|x: f64| x.sqrt(), 16.0).unwrap();
/// assert!(h.pid() > 0);
/// assert_eq!(h.join().unwrap(), 4.0);
/// ```
pub struct JoinHandle<R> {
    process: Process,
    result: RawConn,
    /// `join_timeout` already returned the result.
    joined: bool,
    _r: PhantomData<fn() -> R>,
}

impl<R> fmt::Debug for JoinHandle<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle")
            .field("process", &self.process)
            .finish()
    }
}

impl<R> JoinHandle<R> {
    /// The child's process id.
    ///
    /// ```
    /// multiproc::init();
    /// let h = multiproc::spawn(|_: ()| std::process::id(), ()).unwrap();
    /// let pid = h.pid();
    /// assert_eq!(h.join().unwrap(), pid);
    /// ```
    pub fn pid(&self) -> u32 {
        self.process.pid().unwrap_or(0)
    }

    /// The child's name.
    ///
    /// ```
    /// multiproc::init();
    /// let h = multiproc::Builder::new().name("n").spawn(|_: ()| (), ()).unwrap();
    /// assert_eq!(h.name(), "n");
    /// h.join().unwrap();
    /// ```
    pub fn name(&self) -> &str {
        self.process.name()
    }

    /// Whether the child has ended.
    ///
    /// ```
    /// multiproc::init();
    /// let h = multiproc::spawn(|_: ()| (), ()).unwrap();
    /// while !h.is_finished() { std::thread::yield_now(); }
    /// h.join().unwrap();
    /// ```
    pub fn is_finished(&self) -> bool {
        !self.process.is_alive()
    }

    /// Sends SIGKILL to the child; `join` then gives [`Error::WorkerDied`].
    ///
    /// ```
    /// multiproc::init();
    /// fn nap(s: u64) { std::thread::sleep(std::time::Duration::from_secs(s)) }
    /// let h = multiproc::spawn(nap, 60).unwrap();
    /// h.kill().unwrap();
    /// assert!(matches!(h.join(), Err(multiproc::Error::WorkerDied { signal: Some(9), .. })));
    /// ```
    pub fn kill(&self) -> Result<()> {
        self.process.kill()
    }

    /// The parent's end of the child's piped standard input ([`Process::take_stdin`]).
    ///
    /// ```
    /// multiproc::init();
    /// let mut h = multiproc::spawn(|_: ()| (), ()).unwrap();
    /// assert!(h.take_stdin().is_none()); // not piped
    /// h.join().unwrap();
    /// ```
    pub fn take_stdin(&mut self) -> Option<PipeWriter> {
        self.process.take_stdin()
    }

    /// The parent's end of the child's piped standard output ([`Process::take_stdout`]).
    ///
    /// ```
    /// multiproc::init();
    /// use std::io::Read;
    /// let mut h = multiproc::Builder::new()
    ///     .stdout(multiproc::process::Stdio::piped())
    ///     .spawn(|_: ()| print!("out"), ())
    ///     .unwrap();
    /// let mut s = String::new();
    /// h.take_stdout().unwrap().read_to_string(&mut s).unwrap();
    /// h.join().unwrap();
    /// assert_eq!(s, "out");
    /// ```
    pub fn take_stdout(&mut self) -> Option<PipeReader> {
        self.process.take_stdout()
    }

    /// The parent's end of the child's piped standard error ([`Process::take_stderr`]).
    ///
    /// ```
    /// multiproc::init();
    /// let mut h = multiproc::spawn(|_: ()| (), ()).unwrap();
    /// assert!(h.take_stderr().is_none()); // not piped
    /// h.join().unwrap();
    /// ```
    pub fn take_stderr(&mut self) -> Option<PipeReader> {
        self.process.take_stderr()
    }

    /// A descriptor that becomes readable when the child ends (see
    /// [`Process::sentinel`]).
    ///
    /// ```
    /// multiproc::init();
    /// use multiproc::connection::wait;
    /// let h = multiproc::spawn(|x: u8| x, 3).unwrap();
    /// assert_eq!(wait(&[&h.sentinel()], None).unwrap(), vec![0]);
    /// assert_eq!(h.join().unwrap(), 3);
    /// ```
    pub fn sentinel(&self) -> BorrowedFd<'_> {
        self.process
            .child
            .as_ref()
            .expect("a JoinHandle's process is started")
            .pidfd()
    }
}

/// Ready once the child has ended (see [`wait`](crate::connection::wait)).
///
/// ```
/// multiproc::init();
/// use multiproc::connection::wait;
/// let a = multiproc::spawn(|x: u8| x, 1).unwrap();
/// let b = multiproc::spawn(|s: u64| std::thread::sleep(std::time::Duration::from_secs(s)), 60).unwrap();
/// assert_eq!(wait(&[&a, &b], None).unwrap(), vec![0]);
/// b.kill().unwrap();
/// assert_eq!(a.join().unwrap(), 1);
/// assert!(matches!(b.join(), Err(multiproc::Error::WorkerDied { .. })));
/// ```
impl<R> Waitable for JoinHandle<R> {
    fn wait_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.sentinel())
    }

    fn is_ready(&self) -> Result<bool> {
        self.process.is_ready()
    }
}

impl<R: DeserializeOwned> JoinHandle<R> {
    /// Waits for the child and returns what its function returned. A panic in the child
    /// gives [`Error::TaskPanicked`] (message, location); a child killed by a signal, or one
    /// that exited without returning, gives [`Error::WorkerDied`].
    ///
    /// ```
    /// multiproc::init();
    /// let h = multiproc::spawn(|v: Vec<i32>| v.iter().sum::<i32>(), vec![1, 2, 3]).unwrap();
    /// assert_eq!(h.join().unwrap(), 6);
    /// ```
    pub fn join(mut self) -> Result<R> {
        self.finish()
    }

    /// Waits at most `timeout` for the child's result: `Ok(Some(r))` once it returned
    /// (the outcome [`join`](JoinHandle::join) would give: a panic or a death is an
    /// `Err`), `Ok(None)` if it is still running — the handle stays usable, call again
    /// or `join`. A zero timeout only looks. After the result was returned, another call
    /// is an [`Error::InvalidOperation`].
    ///
    /// ```
    /// multiproc::init();
    /// use std::time::Duration;
    /// fn slow(e: multiproc::Event) -> u32 { e.wait(); 42 }
    /// let go = multiproc::Event::new().unwrap();
    /// let mut h = multiproc::spawn(slow, go.clone()).unwrap();
    /// assert_eq!(h.join_timeout(Duration::ZERO).unwrap(), None); // still waiting for `go`
    /// go.set();
    /// assert_eq!(h.join_timeout(Duration::from_secs(60)).unwrap(), Some(42));
    /// assert!(h.join_timeout(Duration::ZERO).is_err()); // already joined
    /// ```
    pub fn join_timeout(&mut self, timeout: Duration) -> Result<Option<R>> {
        if self.joined {
            return Err(Error::invalid(
                "JoinHandle::join_timeout after the result was taken",
            ));
        }
        // The result socket is readable once the child sent its outcome or closed its end
        // (it ended, one way or another).
        if !self.result.poll(Some(timeout))? {
            return Ok(None);
        }
        self.joined = true;
        self.finish().map(Some)
    }

    fn finish(&mut self) -> Result<R> {
        let outcome = self.result.recv_value::<Outcome<R>>();
        let child = self.process.started()?.clone();
        let status = child.wait(None)?;
        match outcome {
            Ok(Outcome::Returned(r)) => Ok(r),
            Ok(Outcome::Panicked {
                message,
                location,
                backtrace,
            }) => Err(Error::TaskPanicked {
                message,
                location,
                backtrace,
            }),
            Ok(Outcome::BuildMismatch(m)) => Err(Error::BuildMismatch(m)),
            Ok(Outcome::Codec(m)) => Err(Error::codec(m)),
            Err(Error::Codec(m)) => Err(Error::Codec(m)),
            Err(_) => Err(child.died_error(status)),
        }
    }
}
