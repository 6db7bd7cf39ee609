//! The parent's side of a start: building a child's bootstrap and starting it by fork,
//! through the fork server, or by `exec` of this binary.

use std::ffi::OsString;
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Mutex, OnceLock};

use crate::ipc::RawConn;
use crate::{codec, sys, Error, Result};

use super::*;

/// A started child, as the parent sees it.
pub(crate) struct Launched {
    pub(crate) pid: u32,
    pub(crate) pidfd: OwnedFd,
    /// The spec's [`parent_ends`](LaunchSpec::parent_ends), handed back.
    pub(crate) parent_ends: [Option<OwnedFd>; 3],
}

/// What to start.
pub(crate) struct LaunchSpec {
    pub(crate) method: StartMethod,
    pub(crate) code: Code,
    pub(crate) name: String,
    pub(crate) identity: Vec<u32>,
    pub(crate) daemon: bool,
    pub(crate) args: Vec<u8>,
    /// The descriptors of the handles inside `args` (duplicates, see `codec`).
    pub(crate) arg_fds: Vec<OwnedFd>,
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
    /// The parent's ends of the child's stdio pipes, carried through the launch and handed
    /// back in [`Launched`]: a forked child closes its copies of them (a child holding the
    /// write end of its own standard input would never see its end).
    pub(crate) parent_ends: [Option<OwnedFd>; 3],
    /// The child's authkey, when not this process's.
    pub(crate) authkey: Option<Vec<u8>>,
}

impl LaunchSpec {
    /// The bootstrap message; moves the encoded arguments out of the spec (no copy).
    pub(super) fn boot(&mut self, has_stdout: bool) -> Boot {
        let me = crate::identity::current_process();
        Boot {
            build_id: self.build_id_override.unwrap_or_else(sys::build_id),
            entry: self.code.entry,
            target: self.code.target,
            name: self.name.clone(),
            identity: self.identity.clone(),
            daemon: self.daemon,
            parent_pid: me.pid(),
            parent_name: me.name().to_string(),
            parent_daemon: me.daemon(),
            authkey: self
                .authkey
                .take()
                .unwrap_or_else(|| crate::identity::tree_authkey().to_vec()),
            args: std::mem::take(&mut self.args),
            has_result: self.result.is_some(),
            has_stdout,
            has_started: false,
            shm_tracker: Some(tracker::tracker_address()),
            // A child started with a method chosen for it (by a context or a builder) has
            // that method as its default, as Python's `BaseProcess._bootstrap` forces a
            // context's `_start_method` in the child; otherwise `method` is the parent's
            // default, which the child inherits.
            settings: Settings {
                method: self.method,
                ..Settings::current()
            },
            stdio: [0, 1, 2].map(|i| self.stdio[i].is_some()),
            env: std::mem::take(&mut self.env),
            env_clear: self.env_clear,
            cwd: self.cwd.take(),
        }
    }

    /// A duplicate of the parent's standard output for the child, unless the builder
    /// set the child's own.
    pub(super) fn default_stdout(&self) -> Result<Option<OwnedFd>> {
        if self.stdio[1].is_some() {
            return Ok(None);
        }
        Ok(Some(sys::dup_stdout()?))
    }
}

/// Starts a child as `spec` says.
pub(crate) fn launch(mut spec: LaunchSpec) -> Result<Launched> {
    ensure_initialized()?;
    if spec.code.target.is_foreign() {
        return Err(foreign_fn_error());
    }
    // Our shared-memory names are safe with a live tracker before the child is (a best
    // effort: a start does not fail for it).
    tracker::hand_over_if_dead();
    let mut parent_ends = std::mem::take(&mut spec.parent_ends);
    let pid = match spec.method {
        StartMethod::Fork => {
            let (pid, ends) = launch_fork(spec, parent_ends)?;
            parent_ends = ends;
            pid
        }
        StartMethod::Spawn => launch_spawn(spec)?,
        StartMethod::ForkServer => forkserver::launch(spec)?,
    };
    let pidfd = sys::open_pidfd(pid)?;
    Ok(Launched {
        pid,
        pidfd,
        parent_ends,
    })
}

/// Forks the child. The parent's ends of its stdio pipes come back to the parent; the child
/// drops its copies.
pub(super) fn launch_fork(
    mut spec: LaunchSpec,
    parent_ends: [Option<OwnedFd>; 3],
) -> Result<(u32, [Option<OwnedFd>; 3])> {
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
        Some(pid) => Ok((pid, parent_ends)),
        None => {
            // The child: the descriptors of the handles are inherited; take copies so that
            // the normal decoding path owns them.
            sys::die_with_parent(parent);
            let _ = sys::stdin_to_devnull();
            hooks::after_fork_in_child();
            let mut fds = Vec::new();
            if let Some(r) = spec.result {
                fds.push(r);
            }
            fds.extend(spec.stdio.into_iter().flatten());
            fds.extend(spec.arg_fds);
            // This process's copies of the parent's ends must not stay open here.
            drop(parent_ends);
            run_child(boot, fds)
        }
    }
}

/// The descriptors that travel with a bootstrap:
/// \[result]\[stdout]\[stdin, stdout, stderr as set]\[handles…].
pub(super) fn boot_fds<'a>(
    spec: &'a LaunchSpec,
    stdout: Option<&'a OwnedFd>,
) -> Vec<BorrowedFd<'a>> {
    let mut fds = Vec::with_capacity(5 + spec.arg_fds.len());
    fds.extend(spec.result.as_ref().map(|r| r.as_fd()));
    fds.extend(stdout.map(|s| s.as_fd()));
    fds.extend(spec.stdio.iter().flatten().map(|f| f.as_fd()));
    fds.extend(spec.arg_fds.iter().map(|f| f.as_fd()));
    fds
}

pub(super) fn harness_args() -> Vec<OsString> {
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
    sys::exec_without_other_fds(&mut cmd);
    if ENTRY_TEST.get().is_some() {
        // The harness prints before init() takes over; the child installs the real stdout
        // it is sent once it gets there.
        cmd.stdout(std::process::Stdio::null());
    }
    let child = cmd.spawn()?;
    // The child is reaped through its pid(fd) by multiproc, not by std.
    Ok(child.id())
}

pub(super) fn launch_spawn(mut spec: LaunchSpec) -> Result<u32> {
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

pub(super) type Job = Box<dyn FnOnce() + Send>;

/// Runs `f` on a thread that lives as long as the process: the main thread if we are on it,
/// else a dedicated helper thread.
///
/// A child's "parent" in the kernel is the *thread* that created it, and the
/// parent-death signal (which makes children die with their parent) fires when that thread
/// exits. So children must not be created by short-lived threads.
pub(crate) fn on_lasting_thread<R: Send + 'static>(
    f: impl FnOnce() -> Result<R> + Send + 'static,
) -> Result<R> {
    if sys::is_main_thread() {
        return f();
    }
    let gone = || Error::Io(std::io::Error::other("multiproc's spawner thread is gone"));
    static SPAWNER: OnceLock<Option<Mutex<mpsc::Sender<Job>>>> = OnceLock::new();
    let tx = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("multiproc-spawner".into())
            .spawn(move || {
                for job in rx {
                    job();
                }
            })
            .ok()
            .map(|_| Mutex::new(tx))
    });
    let Some(tx) = tx else {
        return Err(Error::Io(std::io::Error::other(
            "cannot start multiproc's spawner thread",
        )));
    };
    let (rtx, rrx) = mpsc::sync_channel(1);
    let job: Job = Box::new(move || {
        // A panic stays in this job: the spawner thread lives on for the next one, and the
        // caller gets an error instead of the result.
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| {
            Err(Error::Io(std::io::Error::other(
                "starting a process on multiproc's spawner thread panicked",
            )))
        });
        let _ = rtx.send(r);
    });
    tx.lock()
        .unwrap_or_else(|p| p.into_inner())
        .send(job)
        .map_err(|_| gone())?;
    rrx.recv().map_err(|_| gone())?
}

/// The pid of this process's fork server, if it has one (a test hook: tests kill it).
#[doc(hidden)]
pub fn fork_server_pid() -> Option<u32> {
    forkserver::server_pid()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_on_the_spawner_thread_is_an_error_and_the_thread_lives_on() {
        // Not the main thread: the work goes to the spawner thread.
        let r = std::thread::spawn(|| {
            let failed = on_lasting_thread(|| -> Result<u32> { panic!("boom") });
            let next = on_lasting_thread(|| Ok(sys::is_main_thread()));
            (failed, next)
        })
        .join()
        .expect("the calling thread itself does not panic");
        assert!(matches!(r.0, Err(Error::Io(_))), "{:?}", r.0);
        assert!(!r.1.expect("the spawner thread still runs jobs"));
    }
}
