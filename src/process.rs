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

use std::fmt;
use std::marker::PhantomData;
use std::os::fd::{BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::connection::{RawConn, Waitable};
use crate::start::{self, Boot, Code, LaunchSpec, Outcome, StartMethod};
use crate::{codec, sys, Error, Result};

/// A process's name and pid, as returned by [`current_process`], [`parent_process`] and
/// [`active_children`].
///
/// ```
/// let me = multiproc::current_process();
/// assert_eq!(me.name(), "MainProcess");
/// assert_eq!(me.pid(), std::process::id());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessInfo {
    name: String,
    pid: u32,
}

impl ProcessInfo {
    /// The process's name ("MainProcess" for the program's first process, "Process-N" by
    /// default for children).
    ///
    /// ```
    /// assert_eq!(multiproc::current_process().name(), "MainProcess");
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process id.
    ///
    /// ```
    /// assert!(multiproc::current_process().pid() > 0);
    /// ```
    pub fn pid(&self) -> u32 {
        self.pid
    }
}

struct Current {
    info: ProcessInfo,
    identity: Vec<u32>,
    parent: Option<ProcessInfo>,
}

static CURRENT: Mutex<Option<Current>> = Mutex::new(None);
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Records who we are, in a child (called by the child bootstrap).
pub(crate) fn set_current(boot: &Boot) {
    let mut g = CURRENT.lock().unwrap_or_else(|p| p.into_inner());
    *g = Some(Current {
        info: ProcessInfo {
            name: boot.name.clone(),
            pid: sys::getpid(),
        },
        identity: boot.identity.clone(),
        parent: Some(ProcessInfo {
            name: boot.parent_name.clone(),
            pid: boot.parent_pid,
        }),
    });
    COUNTER.store(0, Ordering::SeqCst);
}

/// The process this code runs in (Python's `multiprocessing.current_process()`).
///
/// ```
/// multiproc::init();
/// assert_eq!(multiproc::current_process().name(), "MainProcess");
/// fn me(_: ()) -> String { multiproc::current_process().name().to_string() }
/// let h = multiproc::Builder::new().name("worker").spawn(me, ()).unwrap();
/// assert_eq!(h.join().unwrap(), "worker");
/// ```
pub fn current_process() -> ProcessInfo {
    let g = CURRENT.lock().unwrap_or_else(|p| p.into_inner());
    match &*g {
        Some(c) => c.info.clone(),
        None => ProcessInfo {
            name: "MainProcess".into(),
            pid: sys::getpid(),
        },
    }
}

/// The process that started this one, or `None` in the main process (Python's
/// `parent_process()`).
///
/// ```
/// multiproc::init();
/// assert!(multiproc::parent_process().is_none());
/// fn parent(_: ()) -> Option<u32> { multiproc::parent_process().map(|p| p.pid()) }
/// let h = multiproc::spawn(parent, ()).unwrap();
/// assert_eq!(h.join().unwrap(), Some(std::process::id()));
/// ```
pub fn parent_process() -> Option<ProcessInfo> {
    let g = CURRENT.lock().unwrap_or_else(|p| p.into_inner());
    g.as_ref().and_then(|c| c.parent.clone())
}

fn next_identity() -> Vec<u32> {
    let mut id = {
        let g = CURRENT.lock().unwrap_or_else(|p| p.into_inner());
        g.as_ref().map(|c| c.identity.clone()).unwrap_or_default()
    };
    id.push(COUNTER.fetch_add(1, Ordering::SeqCst) + 1);
    id
}

fn default_name(identity: &[u32]) -> String {
    let parts: Vec<String> = identity.iter().map(u32::to_string).collect();
    format!("Process-{}", parts.join(":"))
}

/// The number of CPUs this process may use (respecting affinity masks and cgroup quotas).
///
/// ```
/// assert!(multiproc::cpu_count() >= 1);
/// ```
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
        ProcessInfo {
            name: self.name.clone(),
            pid: self.pid,
        }
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

extern "C" fn at_exit() {
    exit_handler_body();
}

pub(crate) fn register_exit_handler() {
    sys::at_exit(at_exit);
}

/// Terminates daemon children and waits for the others (Python's exit behaviour).
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
    start::shutdown_fork_server();
}

/// In a forked child: the parent's children are not ours.
pub(crate) fn forget_after_fork() {
    if let Ok(mut r) = REGISTRY.try_lock() {
        // Dropping closes our inherited copies of the pidfds; the parent keeps its own.
        r.clear();
    }
    COUNTER.store(0, Ordering::SeqCst);
}

trait ErasedArgs: Send {
    fn encode(&self, out: &mut Vec<u8>) -> Result<Vec<RawFd>>;
}

impl<A: Serialize + Send> ErasedArgs for A {
    fn encode(&self, out: &mut Vec<u8>) -> Result<Vec<RawFd>> {
        codec::encode_with_fds(self, out)
    }
}

/// A process object, like Python's `multiprocessing.Process`: created with a target function
/// and its arguments, started with [`start`](Process::start), waited for with
/// [`join`](Process::join).
///
/// The target is a plain `fn(A) -> R` (or a closure that captures nothing); its return value
/// is discarded — use [`spawn`] to get it back. Several arguments travel as a tuple.
/// Handles in `args` (connections, queues, locks, …) arrive working in the child.
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
    daemon: bool,
    method: Option<StartMethod>,
    code: Code,
    args: Option<Box<dyn ErasedArgs>>,
    identity: Vec<u32>,
    child: Option<Arc<ChildState>>,
    build_id_override: Option<u64>,
}

impl fmt::Debug for Process {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Process")
            .field("name", &self.name)
            .field("daemon", &self.daemon)
            .field("pid", &self.pid())
            .finish()
    }
}

impl Process {
    /// A process that will run `target(args)`. Named "Process-N" (N counts the processes
    /// created by this process), not a daemon, started with the default start method.
    ///
    /// ```
    /// multiproc::init();
    /// let p = multiproc::Process::new(|x: i32| x + 1, 1);
    /// assert!(p.name().starts_with("Process-"));
    /// assert_eq!(p.pid(), None);
    /// ```
    pub fn new<A, R>(target: fn(A) -> R, args: A) -> Process
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: 'static,
    {
        let identity = next_identity();
        Process {
            name: default_name(&identity),
            daemon: false,
            method: None,
            code: Code::process(target),
            args: Some(Box::new(args)),
            identity,
            child: None,
            build_id_override: None,
        }
    }

    /// Sets the name (Python's `name=`).
    ///
    /// ```
    /// let p = multiproc::Process::new(|_: ()| (), ()).with_name("digger-1");
    /// assert_eq!(p.name(), "digger-1");
    /// ```
    pub fn with_name(mut self, name: impl Into<String>) -> Process {
        self.name = name.into();
        self
    }

    /// Makes it a daemon: terminated when its parent exits (Python's `daemon=True`).
    ///
    /// ```
    /// let p = multiproc::Process::new(|_: ()| (), ()).with_daemon(true);
    /// assert!(p.daemon());
    /// ```
    pub fn with_daemon(mut self, daemon: bool) -> Process {
        self.daemon = daemon;
        self
    }

    /// Starts this process with `method` instead of the default.
    ///
    /// ```
    /// multiproc::init();
    /// let mut p = multiproc::Process::new(|_: ()| (), ())
    ///     .with_start_method(multiproc::StartMethod::Spawn);
    /// p.start().unwrap();
    /// p.join().unwrap();
    /// assert_eq!(p.exitcode(), Some(0));
    /// ```
    pub fn with_start_method(mut self, method: StartMethod) -> Process {
        self.method = Some(method);
        self
    }

    #[doc(hidden)]
    /// Test hook: make the child believe it is another build.
    pub fn with_build_id_override(mut self, id: u64) -> Process {
        self.build_id_override = Some(id);
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
        self.daemon
    }

    /// Starts the process. A second call gives [`Error::AlreadyStarted`]. After a successful
    /// start the parent's copy of the arguments is dropped (so a connection end moved into
    /// them is closed in the parent, as in Python).
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
        let mut bytes = Vec::new();
        let arg_fds = args.encode(&mut bytes)?;
        let launched = start::launch(LaunchSpec {
            method: self.method.unwrap_or_else(start::get_start_method),
            code: self.code,
            name: self.name.clone(),
            identity: self.identity.clone(),
            daemon: self.daemon,
            args: bytes,
            arg_fds,
            result,
            build_id_override: self.build_id_override,
        })?;
        self.args = None;
        let child = ChildState::new(launched, self.name.clone(), self.daemon);
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
    /// target panicked; the code given to `std::process::exit`; `-N` if killed by signal N.
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

/// Options for a process started with [`Builder::spawn`]: name, daemon flag, start method.
///
/// ```
/// multiproc::init();
/// let h = multiproc::Builder::new()
///     .name("adder")
///     .start_method(multiproc::StartMethod::ForkServer)
///     .spawn(|(a, b): (i32, i32)| a + b, (2, 3))
///     .unwrap();
/// assert_eq!(h.join().unwrap(), 5);
/// ```
#[derive(Clone, Debug, Default)]
pub struct Builder {
    name: Option<String>,
    daemon: bool,
    method: Option<StartMethod>,
    build_id_override: Option<u64>,
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

    /// The child's name.
    ///
    /// ```
    /// let b = multiproc::Builder::new().name("w");
    /// # let _ = b;
    /// ```
    pub fn name(mut self, name: impl Into<String>) -> Builder {
        self.name = Some(name.into());
        self
    }

    /// Whether the child is a daemon.
    ///
    /// ```
    /// let b = multiproc::Builder::new().daemon(true);
    /// # let _ = b;
    /// ```
    pub fn daemon(mut self, daemon: bool) -> Builder {
        self.daemon = daemon;
        self
    }

    /// The start method for this child.
    ///
    /// ```
    /// let b = multiproc::Builder::new().start_method(multiproc::StartMethod::Spawn);
    /// # let _ = b;
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
        let identity = next_identity();
        let mut p = Process {
            name: self.name.unwrap_or_else(|| default_name(&identity)),
            daemon: self.daemon,
            method: self.method,
            code: Code::returning(f),
            args: Some(Box::new(args)),
            identity,
            child: None,
            build_id_override: self.build_id_override,
        };
        let (ours, theirs) = sys::stream_pair()?;
        p.start_inner(Some(theirs))?;
        Ok(JoinHandle {
            process: p,
            result: RawConn::new(ours),
            _r: PhantomData,
        })
    }
}

/// Runs `f(args)` in a new process and returns a handle to its result, in the style of
/// `std::thread::spawn`.
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
    pub fn join(self) -> Result<R> {
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
