//! Starting child processes: [`init`], the three [`StartMethod`]s, and the child's side.
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
//! # What runs again in a child
//!
//! A Spawn child, and the fork server, are new executions of your binary: everything in
//! `main` *before* `multiproc::init()` runs again in them (so keep `init()` the first line),
//! then `init()` takes over and never returns. In a test binary the harness starts, runs
//! only the test that called `init()` (`<name> --exact --nocapture`), and `init()` at the top
//! of that test takes over; the harness's own output is discarded. Nothing of your program
//! after `init()` runs in a child, except the target function. Fork and fork-server children
//! run no code of `main` at all: they are copies of a process already inside `init()`.

use std::ffi::OsString;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{mpsc, Mutex, OnceLock};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::ipc::RawConn;
use crate::log::log_event;
use crate::{codec, process, sys, Error, Result};

mod context;
mod forkserver;

pub use context::{get_context, Context};

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

/// Must be the first statement of `main` (and of every `#[test]` that starts processes).
///
/// In the parent it only records that the program is ready to start children. In a child
/// started by multiproc, or in the fork server, it runs that process's work and never
/// returns. See the [module docs](crate::start) for what runs again in a child.
///
/// ```
/// fn main() {
///     multiproc::init();
///     let p = multiproc::spawn(|x: u32| x * 2, 21).unwrap();
///     assert_eq!(p.join().unwrap(), 42);
/// }
/// ```
pub fn init() {
    if let Some(name) = std::thread::current().name() {
        if name != "main" {
            // A test harness's thread: re-running this test reaches this init() again.
            let _ = ENTRY_TEST.set(name.to_string());
        }
    }
    if !INITIALIZED.swap(true, Ordering::SeqCst) {
        process::register_exit_handler();
    }
    let Some(role) = std::env::var_os(ROLE_VAR) else {
        // Started by mpirun/srun: rank 0 goes on, the other ranks serve cluster pools.
        #[cfg(feature = "mpi")]
        crate::pool::cluster::on_init();
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
        "shm-tracker" => crate::shared_memory::tracker_main(sock),
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

/// The type of the trampoline a child calls: it decodes the arguments, runs the target and
/// reports. Returns the exit code.
pub(crate) type Entry =
    fn(target: i64, sig: u64, args: &[u8], fds: Vec<OwnedFd>, result: Option<RawConn>) -> i32;

/// Everything a child needs to know, sent from the parent.
#[derive(Serialize, Deserialize, Debug)]
pub(crate) struct Boot {
    pub(crate) build_id: u64,
    pub(crate) entry: i64,
    pub(crate) entry_sig: u64,
    pub(crate) target: i64,
    pub(crate) target_sig: u64,
    pub(crate) name: String,
    pub(crate) identity: Vec<u32>,
    pub(crate) daemon: bool,
    pub(crate) parent_pid: u32,
    pub(crate) parent_name: String,
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

/// The process-wide settings a child inherits from its parent, whatever its start method
/// (as Python's children inherit the start method): the default start method, and whether
/// `Fork` may fork a process with threads.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub(crate) struct Settings {
    method: StartMethod,
    fork_with_threads: bool,
    /// The logging threshold (see [`crate::log`]).
    log: u8,
}

impl Settings {
    /// This process's settings now.
    fn current() -> Settings {
        Settings {
            method: get_start_method(),
            fork_with_threads: FORK_WITH_THREADS.load(Ordering::SeqCst),
            log: crate::log::current_threshold(),
        }
    }

    /// Makes them this process's settings (in a new child).
    fn apply(self) {
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
    entry: i64,
    entry_sig: u64,
    target: i64,
    target_sig: u64,
}

impl Code {
    /// Code that runs `target(args)` and ignores its return value (a [`Process`](crate::Process)).
    pub(crate) fn process<A: DeserializeOwned, R>(target: fn(A) -> R) -> Code {
        Code::with_entry(run_discarding::<A, R> as Entry, target)
    }

    /// Code that runs `target(args)` and sends the result back (a [`JoinHandle`](crate::JoinHandle)).
    pub(crate) fn returning<A: DeserializeOwned, R: Serialize>(target: fn(A) -> R) -> Code {
        Code::with_entry(run_returning::<A, R> as Entry, target)
    }

    fn with_entry<A, R>(entry: Entry, target: fn(A) -> R) -> Code {
        Code {
            entry: sys::offset_of(entry as usize),
            entry_sig: sys::type_sig::<Entry>(),
            target: sys::user_offset_of(target as usize),
            target_sig: sys::type_sig::<fn(A) -> R>(),
        }
    }
}

/// The error for a function that a child cannot run because it is not part of the main
/// executable (see [`sys::user_offset_of`]).
pub(crate) fn foreign_fn_error() -> Error {
    Error::invalid(
        "the function to run in another process is not in this program's executable (it \
         comes from a dynamic library or plugin): a child process cannot find it there; \
         call it from a function of the program instead",
    )
}

/// A started child, as the parent sees it.
pub(crate) struct Launched {
    pub(crate) pid: u32,
    pub(crate) pidfd: OwnedFd,
}

/// What to start.
pub(crate) struct LaunchSpec {
    pub(crate) method: StartMethod,
    pub(crate) code: Code,
    pub(crate) name: String,
    pub(crate) identity: Vec<u32>,
    pub(crate) daemon: bool,
    pub(crate) args: Vec<u8>,
    /// Raw descriptors of the handles inside `args`, borrowed from the caller's arguments,
    /// which outlive the launch.
    pub(crate) arg_fds: Vec<RawFd>,
    /// The child's end of the result socket, for value-returning children.
    pub(crate) result: Option<OwnedFd>,
    /// Test hook: pretend the child is another build.
    pub(crate) build_id_override: Option<u64>,
    /// The environment changes and working directory of the child.
    pub(crate) env: Vec<(OsString, Option<OsString>)>,
    pub(crate) env_clear: bool,
    pub(crate) cwd: Option<PathBuf>,
    /// Descriptors to install as the child's standard input, output and error.
    pub(crate) stdio: [Option<OwnedFd>; 3],
    /// The parent's ends of the child's stdio pipes: a forked child closes its copies (a
    /// child holding the write end of its own standard input would never see its end).
    pub(crate) parent_ends: Vec<RawFd>,
}

impl LaunchSpec {
    /// The bootstrap message; moves the encoded arguments out of the spec (no copy).
    fn boot(&mut self, has_stdout: bool) -> Boot {
        let me = process::current_process();
        Boot {
            build_id: self.build_id_override.unwrap_or_else(sys::build_id),
            entry: self.code.entry,
            entry_sig: self.code.entry_sig,
            target: self.code.target,
            target_sig: self.code.target_sig,
            name: self.name.clone(),
            identity: self.identity.clone(),
            daemon: self.daemon,
            parent_pid: me.pid(),
            parent_name: me.name().to_string(),
            args: std::mem::take(&mut self.args),
            has_result: self.result.is_some(),
            has_stdout,
            has_started: false,
            shm_tracker: Some(crate::shared_memory::tracker_address()),
            settings: Settings::current(),
            stdio: [0, 1, 2].map(|i| self.stdio[i].is_some()),
            env: std::mem::take(&mut self.env),
            env_clear: self.env_clear,
            cwd: self.cwd.take(),
        }
    }

    /// A duplicate of the parent's standard output for the child, unless the builder
    /// set the child's own.
    fn default_stdout(&self) -> Result<Option<OwnedFd>> {
        if self.stdio[1].is_some() {
            return Ok(None);
        }
        Ok(Some(sys::dup_stdout()?))
    }
}

/// Starts a child as `spec` says.
pub(crate) fn launch(spec: LaunchSpec) -> Result<Launched> {
    ensure_initialized()?;
    if spec.code.target == sys::FOREIGN_FN {
        return Err(foreign_fn_error());
    }
    let pid = match spec.method {
        StartMethod::Fork => launch_fork(spec)?,
        StartMethod::Spawn => launch_spawn(spec)?,
        StartMethod::ForkServer => forkserver::launch(spec)?,
    };
    let pidfd = sys::open_pidfd(pid)?;
    Ok(Launched { pid, pidfd })
}

fn launch_fork(mut spec: LaunchSpec) -> Result<u32> {
    if !FORK_WITH_THREADS.load(Ordering::SeqCst) && sys::thread_count() > 1 {
        return Err(Error::invalid(
            "StartMethod::Fork refused: this process has other threads, and a lock one of \
             them holds would stay locked for ever in the child. Use ForkServer or Spawn, \
             or call `unsafe { multiproc::allow_fork_with_threads(true) }` if you know it is safe",
        ));
    }
    let boot = spec.boot(false);
    let parent = sys::getpid();
    let _ = std::io::stdout().flush();
    match sys::fork_process()? {
        Some(pid) => Ok(pid),
        None => {
            // The child: the descriptors of the handles are inherited; take copies so that
            // the normal decoding path owns them.
            sys::die_with_parent(parent);
            let _ = sys::stdin_to_devnull();
            after_fork_in_child();
            let mut fds = Vec::new();
            if let Some(r) = spec.result {
                fds.push(r);
            }
            fds.extend(spec.stdio.into_iter().flatten());
            for &fd in &spec.parent_ends {
                sys::close_in_forked_child(fd);
            }
            for &fd in &spec.arg_fds {
                match sys::dup_raw(fd) {
                    Ok(d) => fds.push(d),
                    Err(e) => {
                        log_event!(Error, "forked child lost a handle: {e}");
                        sys::exit_immediately(255);
                    }
                }
            }
            run_child(boot, fds)
        }
    }
}

/// The descriptors that travel with a bootstrap:
/// \[result]\[stdout]\[stdin, stdout, stderr as set]\[handles…].
fn boot_fds(spec: &LaunchSpec, stdout: Option<&OwnedFd>) -> Vec<RawFd> {
    use std::os::fd::AsRawFd;
    let mut fds = Vec::with_capacity(5 + spec.arg_fds.len());
    if let Some(r) = &spec.result {
        fds.push(r.as_raw_fd());
    }
    if let Some(s) = stdout {
        fds.push(s.as_raw_fd());
    }
    fds.extend(spec.stdio.iter().flatten().map(|f| f.as_raw_fd()));
    fds.extend_from_slice(&spec.arg_fds);
    fds
}

fn harness_args() -> Vec<OsString> {
    match ENTRY_TEST.get() {
        Some(test) => vec![
            test.into(),
            "--exact".into(),
            "--nocapture".into(),
            "--test-threads=1".into(),
            // An #[ignore] (soak) test must run in the child too.
            "--include-ignored".into(),
        ],
        None => Vec::new(),
    }
}

/// Executes `/proc/self/exe` in `role`, with `stdin` as its bootstrap socket. Run on a
/// thread that lives as long as the process (see [`on_lasting_thread`]).
pub(crate) fn exec_self(role: &str, stdin: OwnedFd) -> Result<u32> {
    let mut cmd = std::process::Command::new("/proc/self/exe");
    cmd.args(harness_args())
        .env(ROLE_VAR, format!("{role}:{}", sys::getpid()))
        .stdin(std::process::Stdio::from(stdin));
    if ENTRY_TEST.get().is_some() {
        // The harness prints before init() takes over; the child installs the real stdout
        // it is sent once it gets there.
        cmd.stdout(std::process::Stdio::null());
    }
    let child = cmd.spawn()?;
    // The child is reaped through its pid(fd) by multiproc, not by std.
    Ok(child.id())
}

fn launch_spawn(mut spec: LaunchSpec) -> Result<u32> {
    let (ours, theirs) = sys::stream_pair()?;
    let pid = on_lasting_thread(move || exec_self("spawn", theirs))?;
    let ours = RawConn::new(ours);
    let stdout = spec.default_stdout()?;
    let boot = spec.boot(stdout.is_some());
    let fds = boot_fds(&spec, stdout.as_ref());
    // A child that dies before reading gives EPIPE here; its exit status tells the rest.
    let _ = ours.send_bytes(&codec::encode(&boot)?, &fds);
    Ok(pid)
}

type Job = Box<dyn FnOnce() + Send>;

/// Runs `f` on a thread that lives as long as the process: the main thread if we are on it,
/// else a dedicated helper thread.
///
/// A child's "parent" in the kernel is the *thread* that created it, and the
/// parent-death signal (which makes children die with their parent) fires when that thread
/// exits. So children must not be created by short-lived threads.
pub(crate) fn on_lasting_thread<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    if sys::is_main_thread() {
        return f();
    }
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    let tx = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("multiproc-spawner".into())
            .spawn(move || {
                for job in rx {
                    job();
                }
            })
            .expect("cannot start multiproc's spawner thread");
        Mutex::new(tx)
    });
    let (rtx, rrx) = mpsc::sync_channel(1);
    let job: Job = Box::new(move || {
        let _ = rtx.send(f());
    });
    tx.lock()
        .unwrap_or_else(|p| p.into_inner())
        .send(job)
        .expect("multiproc's spawner thread is gone");
    rrx.recv()
        .expect("multiproc's spawner thread dropped a job")
}

/// The pid of this process's fork server, if it has one (a test hook: tests kill it).
#[doc(hidden)]
pub fn fork_server_pid() -> Option<u32> {
    forkserver::server_pid()
}

/// Stops and reaps this process's fork server (at exit).
pub(crate) fn shutdown_fork_server() {
    forkserver::shutdown();
}

/// Resets what a forked child must not share with its parent.
/// (The caches of the OS layer — identity, thread ids — follow `sys::fork_generation` by
/// themselves.)
pub(crate) fn after_fork_in_child() {
    crate::shared_memory::forget_after_fork();
    forkserver::forget_after_fork();
    process::forget_after_fork();
}

/// The panic of the target, recorded by the child's panic hook.
pub(crate) type PanicRecord = (String, Option<String>, Option<String>);
static LAST_PANIC: Mutex<Option<PanicRecord>> = Mutex::new(None);
/// When set, the child's panic hook records panics without printing them (pool workers:
/// the panic travels to the parent as the task's error instead).
static QUIET_PANICS: AtomicBool = AtomicBool::new(false);

/// Makes this child's panic hook silent (it still records the panic).
pub(crate) fn set_quiet_panics(quiet: bool) {
    QUIET_PANICS.store(quiet, Ordering::SeqCst);
}

/// The last panic recorded by the child's panic hook: (message, location, backtrace).
pub(crate) fn take_last_panic() -> Option<PanicRecord> {
    LAST_PANIC.lock().ok().and_then(|mut g| g.take())
}

fn install_child_panic_hook(name: String) {
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = if let Some(s) = info.payload().downcast_ref::<&str>() {
            (*s).to_string()
        } else if let Some(s) = info.payload().downcast_ref::<String>() {
            s.clone()
        } else {
            "Box<dyn Any>".to_string()
        };
        let location = info.location().map(|l| l.to_string());
        let bt = std::backtrace::Backtrace::capture();
        let backtrace = match bt.status() {
            std::backtrace::BacktraceStatus::Captured => Some(bt.to_string()),
            _ => None,
        };
        if let Ok(mut g) = LAST_PANIC.try_lock() {
            *g = Some((message, location, backtrace));
        }
        if QUIET_PANICS.load(Ordering::SeqCst) {
            return;
        }
        // The one documented direct write (see `crate::log`): the panic report, as Python
        // prints a child's traceback.
        eprintln!("Process {name}:");
        prev(info);
    }));
}

/// The child's side: set up, check the build, call the trampoline, exit.
pub(crate) fn run_child(boot: Boot, mut fds: Vec<OwnedFd>) -> ! {
    // Its name and the parent's settings (logging included) first: what follows may log.
    process::set_current(&boot);
    boot.settings.apply();
    let result = if boot.has_result && !fds.is_empty() {
        Some(RawConn::new(fds.remove(0)))
    } else {
        None
    };
    if boot.has_stdout && !fds.is_empty() {
        let out = fds.remove(0);
        let _ = sys::set_stdout(out.as_fd());
    }
    for (i, _) in boot.stdio.iter().enumerate().filter(|(_, set)| **set) {
        if fds.is_empty() {
            break;
        }
        let fd = fds.remove(0);
        if let Err(e) = sys::set_stdio(i, fd.as_fd()) {
            log_event!(
                Error,
                "cannot set up standard stream {i} of process {}: {e}",
                boot.name
            );
            finish_child(255);
        }
    }
    if boot.env_clear {
        for (k, _) in std::env::vars_os() {
            std::env::remove_var(k);
        }
    }
    for (k, v) in &boot.env {
        match v {
            Some(v) => std::env::set_var(k, v),
            None => std::env::remove_var(k),
        }
    }
    if boot.env_clear || boot.env.iter().any(|(k, _)| k == crate::log::ENV_VAR) {
        crate::log::reload_env();
    }
    if let Some(dir) = &boot.cwd {
        if let Err(e) = std::env::set_current_dir(dir) {
            log_event!(
                Error,
                "process {} cannot change to directory {}: {e}",
                boot.name,
                dir.display()
            );
            finish_child(255);
        }
    }
    crate::shared_memory::adopt_tracker(boot.shm_tracker.clone());
    install_child_panic_hook(boot.name.clone());
    let code = match sys::fn_at::<Entry>(boot.entry, boot.build_id, boot.entry_sig) {
        Some(entry) => entry(boot.target, boot.target_sig, &boot.args, fds, result),
        None => {
            let msg = format!(
                "the child's executable (build {:#x}) is not the parent's (build {:#x})",
                sys::build_id(),
                boot.build_id
            );
            log_event!(Error, "cannot start process {}: {msg}", boot.name);
            if let Some(r) = &result {
                let _ = r.send_value(&Outcome::<()>::BuildMismatch(msg));
            }
            255
        }
    };
    finish_child(code)
}

/// Flushes output, joins this child's own children, and exits with `code`.
fn finish_child(code: i32) -> ! {
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    process::exit_handler_body();
    sys::exit_immediately(code)
}

fn bad_target(sig_ok: bool) -> i32 {
    if !sig_ok {
        log_event!(
            Error,
            "the target function's type does not match; not calling it"
        );
    }
    255
}

fn run_discarding<A: DeserializeOwned, R>(
    target: i64,
    sig: u64,
    args: &[u8],
    fds: Vec<OwnedFd>,
    _result: Option<RawConn>,
) -> i32 {
    let Some(f) = sys::fn_at::<fn(A) -> R>(target, sys::build_id(), sig) else {
        return bad_target(false);
    };
    let a: A = match codec::decode_with_fds(args, fds) {
        Ok(a) => a,
        Err(e) => {
            log_event!(Error, "cannot decode the process's arguments: {e}");
            return 255;
        }
    };
    match std::panic::catch_unwind(AssertUnwindSafe(move || {
        drop(f(a));
    })) {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

fn run_returning<A: DeserializeOwned, R: Serialize>(
    target: i64,
    sig: u64,
    args: &[u8],
    fds: Vec<OwnedFd>,
    result: Option<RawConn>,
) -> i32 {
    let Some(result) = result else {
        return bad_target(true);
    };
    let Some(f) = sys::fn_at::<fn(A) -> R>(target, sys::build_id(), sig) else {
        let _ = result.send_value(&Outcome::<()>::BuildMismatch(
            "the target function's type does not match".into(),
        ));
        return bad_target(false);
    };
    let a: A = match codec::decode_with_fds(args, fds) {
        Ok(a) => a,
        Err(e) => {
            let _ = result.send_value(&Outcome::<()>::Codec(format!(
                "cannot decode the arguments: {e}"
            )));
            return 255;
        }
    };
    match std::panic::catch_unwind(AssertUnwindSafe(move || f(a))) {
        Ok(r) => match result.send_value(&Outcome::Returned(r)) {
            Ok(()) => 0,
            Err(Error::Codec(m)) => {
                let _ = result.send_value(&Outcome::<()>::Codec(format!(
                    "cannot encode the result: {m}"
                )));
                1
            }
            Err(_) => 1,
        },
        Err(_) => {
            let (message, location, backtrace) = LAST_PANIC
                .lock()
                .ok()
                .and_then(|mut g| g.take())
                .unwrap_or_else(|| ("<unknown panic>".into(), None, None));
            let _ = result.send_value(&Outcome::<R>::Panicked {
                message,
                location,
                backtrace,
            });
            1
        }
    }
}
