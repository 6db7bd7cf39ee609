//! Creating, watching, signalling and reaping child processes.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use rustix::io::Errno;
use rustix::process::{
    pidfd_open, pidfd_send_signal, waitid, Pid, PidfdFlags, Signal, WaitId, WaitIdOptions,
};

/// How a child ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ExitStatus {
    /// It exited with this code.
    Code(i32),
    /// It was killed by this signal.
    Signal(i32),
}

impl ExitStatus {
    /// Python's `exitcode`: the code, or `-signal`.
    pub(crate) fn exitcode(self) -> i32 {
        match self {
            ExitStatus::Code(c) => c,
            ExitStatus::Signal(s) => -s,
        }
    }
}

/// The number a process exits with for `code` (what a Rust `main` returning it exits with).
/// On Unix an [`ExitCode`](std::process::ExitCode) can only be made from a `u8`, and stable
/// Rust offers no way to read it back but comparing, so this compares it with each of them.
pub(crate) fn exit_code_number(code: std::process::ExitCode) -> i32 {
    use std::process::ExitCode;
    if code == ExitCode::SUCCESS {
        return 0;
    }
    (1..=u8::MAX)
        .find(|&n| ExitCode::from(n) == code)
        .map_or(1, i32::from)
}

/// This process's id.
pub(crate) fn getpid() -> u32 {
    rustix::process::getpid().as_raw_nonzero().get() as u32
}

/// The parent's process id (0 if none).
pub(crate) fn getppid() -> u32 {
    rustix::process::getppid().map_or(0, |p| p.as_raw_nonzero().get() as u32)
}

/// Number of threads in this process.
pub(crate) fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(1, |d| d.count())
}

/// `fork()` in the calling thread. Returns `None` in the child, the child's pid in the parent.
///
/// The caller must have made sure that the child can run safely with only the calling
/// thread (no other thread holds a lock the child needs): `start::fork` refuses to get
/// here from a multi-threaded process unless the user opted in through an `unsafe` call.
pub(crate) fn fork_process() -> io::Result<Option<u32>> {
    register_fork_hook();
    // SAFETY: fork() itself is always memory-safe to call; what the child may do afterwards
    // is restricted by our caller (see above). glibc's fork runs its atfork handlers, which
    // keep malloc and stdio usable in the child.
    let r = unsafe { libc::fork() };
    match r {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(None),
        pid => Ok(Some(pid as u32)),
    }
}

/// Forks the calling (single-threaded) fork server so that the new process becomes a child
/// of the server's *parent* (`CLONE_PARENT`): the process that asked for it can wait for it,
/// get its exit status and be sure its pid is not reused before it has reaped it.
///
/// Returns `None` in the child, the child's pid in the server.
pub(crate) fn fork_as_sibling() -> io::Result<Option<u32>> {
    let flags = (libc::CLONE_PARENT as libc::c_ulong) | (libc::SIGCHLD as libc::c_ulong);
    // The atfork handlers will not run: the child must not share the heap's large
    // allocations with the server.
    super::heap::before_raw_fork();
    // SAFETY: a raw clone without CLONE_VM and with a null stack behaves like fork(): the
    // child gets a copy-on-write copy of the address space and continues on a copy of the
    // current stack. The fork server is single-threaded while serving (any other thread,
    // such as a test harness's main thread, is parked in a blocking wait and holds no
    // lock), so no lock can be left held in the child. glibc's atfork handlers do not run;
    // its per-thread tid cache keeps the server's value, which glibc (>= 2.34) does not use
    // for signalling oneself (raise/abort use gettid()).
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone,
            flags,
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_int>(),
            std::ptr::null_mut::<libc::c_int>(),
            0 as libc::c_ulong,
        )
    };
    match r {
        -1 => Err(io::Error::last_os_error()),
        0 => {
            // glibc's atfork handlers did not run: say we are a new process ourselves.
            forked_child();
            Ok(None)
        }
        pid => Ok(Some(pid as u32)),
    }
}

/// Opens a pidfd for our own (unreaped) child: it cannot be a recycled pid.
pub(crate) fn open_pidfd(pid: u32) -> io::Result<OwnedFd> {
    let pid = i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .ok_or_else(|| io::Error::other(format!("{pid} is not a pid")))?;
    Ok(pidfd_open(pid, PidfdFlags::empty())?)
}

/// Reaps the child behind `pidfd` if it has ended; `None` while it runs.
pub(crate) fn try_reap(pidfd: impl AsFd) -> io::Result<Option<ExitStatus>> {
    loop {
        match waitid(
            WaitId::PidFd(pidfd.as_fd()),
            WaitIdOptions::EXITED | WaitIdOptions::NOHANG,
        ) {
            Ok(Some(st)) => {
                if let Some(sig) = st.terminating_signal() {
                    return Ok(Some(ExitStatus::Signal(sig)));
                }
                if let Some(code) = st.exit_status() {
                    return Ok(Some(ExitStatus::Code(code)));
                }
                // waitid with NOHANG reports "no child ready" as a zeroed status.
                return Ok(None);
            }
            Ok(None) => return Ok(None),
            Err(Errno::INTR) => continue,
            // Reaped already by the SIGCHLD handler, which kept its status.
            Err(Errno::CHILD) => match reaped_by_handler(pidfd.as_fd()) {
                Some(st) => return Ok(Some(st)),
                None => return Err(Errno::CHILD.into()),
            },
            Err(e) => return Err(e.into()),
        }
    }
}

// --- helpers reaped as soon as they end --------------------------------------------------
//
// The fork server, the shared-memory trackers and the manager servers this process started
// are its children. One
// killed on its own would stay a zombie until the next use noticed it; instead a SIGCHLD
// handler reaps each of them as soon as it ends. It waits for exactly those processes,
// through their pidfds (`waitid(P_PIDFD, …)`), never for "any child": the statuses of the
// program's other children (its processes, those of std or tokio) are left to their
// owners. A handler the program or a library had installed before runs after ours; SIGCHLD
// set to SIG_IGN (children reaped by the kernel) is left alone. A thread waiting for them
// instead would make `StartMethod::Fork` refuse to fork (the process would no longer be
// single-threaded).

/// The pidfds of the helpers to reap (-1: a free slot; -2: one being freed).
static HELPERS: [std::sync::atomic::AtomicI32; HELPER_SLOTS] =
    [const { std::sync::atomic::AtomicI32::new(-1) }; HELPER_SLOTS];
/// How many helpers can be reaped at once (a fork server, a few trackers, a few manager
/// servers); more are reaped as before, by their owner's next look.
const HELPER_SLOTS: usize = 16;
/// The exit status the handler reaped for the helper in the same slot of [`HELPERS`]
/// (0: none yet; else [`encode_status`]), for [`try_reap`] to return: the helper's owner
/// (a `Process`, the manager's server) still learns how it ended. Cleared when the slot is
/// freed.
static EXITED: [std::sync::atomic::AtomicI64; HELPER_SLOTS] =
    [const { std::sync::atomic::AtomicI64::new(0) }; HELPER_SLOTS];

/// A status as [`EXITED`] keeps it: kind in the high half (1 code, 2 signal), the number in
/// the low half.
fn encode_status(st: ExitStatus) -> i64 {
    match st {
        ExitStatus::Code(c) => (1 << 32) | i64::from(c as u32),
        ExitStatus::Signal(s) => (2 << 32) | i64::from(s as u32),
    }
}

fn decode_status(v: i64) -> Option<ExitStatus> {
    let n = (v & 0xffff_ffff) as u32 as i32;
    match v >> 32 {
        1 => Some(ExitStatus::Code(n)),
        2 => Some(ExitStatus::Signal(n)),
        _ => None,
    }
}

/// The status the SIGCHLD handler kept for the helper behind `pidfd`, if it reaped it.
fn reaped_by_handler(pidfd: BorrowedFd<'_>) -> Option<ExitStatus> {
    use std::os::fd::AsRawFd;
    use std::sync::atomic::Ordering::SeqCst;
    let fd = pidfd.as_raw_fd();
    let i = HELPERS.iter().position(|slot| slot.load(SeqCst) == fd)?;
    // A handler on another thread may have reaped it and not yet written the status down
    // (a few instructions: it never blocks).
    while IN_HANDLER.load(SeqCst) != 0 {
        std::hint::spin_loop();
    }
    decode_status(EXITED[i].load(SeqCst))
}

/// Handlers running now: a pidfd taken out of [`HELPERS`] is closed only once none is (one
/// may have read it just before), so that the handler never waits on a reused number.
static IN_HANDLER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
/// The SIGCHLD disposition before ours (`sa_sigaction`, and whether it takes a `siginfo`).
static PREV_HANDLER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
static PREV_SIGINFO: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// 0: not installed yet; 1: installed; 2: not installed (SIGCHLD ignored, or refused).
static HANDLER_STATE: std::sync::Mutex<u8> = std::sync::Mutex::new(0);

extern "C" fn on_sigchld(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    use std::sync::atomic::Ordering::SeqCst;
    // SAFETY: __errno_location returns this thread's errno; saved and put back so that the
    // interrupted code does not see ours.
    let errno = unsafe { *libc::__errno_location() };
    IN_HANDLER.fetch_add(1, SeqCst);
    for (slot, exited) in HELPERS.iter().zip(&EXITED) {
        let fd = slot.load(SeqCst);
        if fd >= 0 {
            // SAFETY: waitid is async-signal-safe; `fd` is a pidfd that stays open while
            // this handler runs (see IN_HANDLER); WNOHANG never blocks; the status is
            // written to a local, whose fields are read only once waitid filled them in
            // (si_pid != 0: a child was reaped).
            let st = unsafe {
                let mut si: libc::siginfo_t = std::mem::zeroed();
                let r = libc::waitid(
                    libc::P_PIDFD,
                    fd as libc::id_t,
                    &mut si,
                    libc::WEXITED | libc::WNOHANG,
                );
                if r == 0 && si.si_pid() != 0 {
                    match si.si_code {
                        libc::CLD_EXITED => Some(ExitStatus::Code(si.si_status())),
                        _ => Some(ExitStatus::Signal(si.si_status())),
                    }
                } else {
                    None
                }
            };
            if let Some(st) = st {
                exited.store(encode_status(st), SeqCst);
            }
        }
    }
    IN_HANDLER.fetch_sub(1, SeqCst);
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
    let prev = PREV_HANDLER.load(SeqCst);
    if prev != libc::SIG_DFL && prev != libc::SIG_IGN {
        // SAFETY: `prev` is the handler installed before ours, called as the kernel would
        // have called it (with the siginfo form if it asked for SA_SIGINFO).
        unsafe {
            if PREV_SIGINFO.load(SeqCst) {
                let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                    std::mem::transmute(prev);
                f(sig, info, ctx);
            } else {
                let f: extern "C" fn(libc::c_int) = std::mem::transmute(prev);
                f(sig);
            }
        }
    }
}

/// Installs the SIGCHLD handler once. False if it is not there (SIGCHLD ignored, or the
/// system refused).
fn install_sigchld_handler() -> bool {
    use std::sync::atomic::Ordering::SeqCst;
    let mut state = HANDLER_STATE.lock().unwrap_or_else(|p| p.into_inner());
    if *state == 0 {
        // SAFETY: sigaction with a zeroed struct filled in: our handler is an extern "C"
        // fn that only makes async-signal-safe calls and atomic operations; the previous
        // disposition is read into a local first and recorded before ours can run.
        *state = unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGCHLD, std::ptr::null(), &mut old) != 0
                || old.sa_sigaction == libc::SIG_IGN
            {
                2
            } else {
                PREV_HANDLER.store(old.sa_sigaction, SeqCst);
                PREV_SIGINFO.store(old.sa_flags & libc::SA_SIGINFO != 0, SeqCst);
                let mut new: libc::sigaction = std::mem::zeroed();
                new.sa_sigaction = on_sigchld as *const () as usize;
                new.sa_flags =
                    libc::SA_SIGINFO | libc::SA_RESTART | (old.sa_flags & libc::SA_NOCLDSTOP);
                libc::sigemptyset(&mut new.sa_mask);
                if libc::sigaction(libc::SIGCHLD, &new, std::ptr::null_mut()) == 0 {
                    1
                } else {
                    2
                }
            }
        };
    }
    *state == 1
}

/// Has the helper child behind `pidfd` (the fork server, a tracker) reaped as soon as it
/// ends, by the SIGCHLD handler, until [`stop_reaping`]. Returns whether it will be (no
/// free slot, or SIGCHLD ignored: then it is reaped as before, by its owner's next use).
pub(crate) fn reap_when_ended(pidfd: &OwnedFd) -> bool {
    use std::os::fd::AsRawFd;
    use std::sync::atomic::Ordering::SeqCst;
    if !install_sigchld_handler() {
        return false;
    }
    let fd = pidfd.as_raw_fd();
    let Some(i) = HELPERS
        .iter()
        .position(|slot| slot.compare_exchange(-1, fd, SeqCst, SeqCst).is_ok())
    else {
        return false;
    };
    // It may have ended before it was placed (no SIGCHLD will come for it): look once,
    // and keep its status as the handler would have.
    if let Ok(Some(st)) = try_reap(pidfd) {
        EXITED[i].store(encode_status(st), SeqCst);
    }
    true
}

/// Takes `pidfd` out of the helpers the SIGCHLD handler reaps; call it before closing
/// `pidfd` (which may then be reused). Waits for a handler that is running to finish.
pub(crate) fn stop_reaping(pidfd: &OwnedFd) {
    use std::os::fd::AsRawFd;
    use std::sync::atomic::Ordering::SeqCst;
    let fd = pidfd.as_raw_fd();
    // The slot is marked closing (-2: the handler skips it, and no helper can take it)
    // until its status is cleared, so that a status cleared here is never the next
    // helper's.
    let mut found = Vec::new();
    for (i, slot) in HELPERS.iter().enumerate() {
        if slot.compare_exchange(fd, -2, SeqCst, SeqCst).is_ok() {
            found.push(i);
        }
    }
    if !found.is_empty() {
        // A handler on another thread may have read `fd` just before: it is short and
        // never blocks. (One on this thread has finished before we get here.)
        while IN_HANDLER.load(SeqCst) != 0 {
            std::hint::spin_loop();
        }
        for i in found {
            EXITED[i].store(0, SeqCst);
            HELPERS[i].store(-1, SeqCst);
        }
    }
}

/// In a forked child: the parent's helpers are not its children (the slots hold the
/// parent's descriptors, whose copies the child's owners close).
pub(crate) fn forget_helpers_after_fork() {
    for (slot, exited) in HELPERS.iter().zip(&EXITED) {
        slot.store(-1, std::sync::atomic::Ordering::SeqCst);
        exited.store(0, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Waits until the child behind `pidfd` has ended (without reaping it), up to `timeout`.
pub(crate) fn wait_exited(pidfd: impl AsFd, timeout: Option<Duration>) -> io::Result<bool> {
    super::socket::wait_readable(pidfd.as_fd(), timeout)
}

/// Sends `sig` (a signal number) through a pidfd. A process that already ended is not an error.
pub(crate) fn signal_pidfd(pidfd: impl AsFd, sig: i32) -> io::Result<()> {
    let sig = Signal::from_named_raw(sig).ok_or_else(|| io::Error::other("bad signal number"))?;
    match pidfd_send_signal(pidfd, sig) {
        Ok(()) | Err(Errno::SRCH) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Arranges for this process to be SIGKILLed when its parent (thread) dies, and exits at once
/// if the parent `expected_parent` is already gone.
pub(crate) fn die_with_parent(expected_parent: u32) {
    let _ = rustix::process::set_parent_process_death_signal(Some(Signal::KILL));
    if getppid() != expected_parent {
        exit_immediately(1);
    }
}

/// SIGINT's disposition before [`ignore_sigint`], for [`restore_sigint`].
static SIGINT_WAS_IGNORED: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Ignores `SIGINT` in this process: a helper's protection from a Ctrl-C in the terminal,
/// which goes to the whole foreground process group (a manager's server and the fork
/// server, as in CPython: the program decides what a Ctrl-C does, and stops its helpers
/// itself).
pub(crate) fn ignore_sigint() {
    // SAFETY: setting a signal's disposition to SIG_IGN installs no handler code; it is
    // always sound.
    let prev = unsafe { libc::signal(libc::SIGINT, libc::SIG_IGN) };
    SIGINT_WAS_IGNORED.store(prev == libc::SIG_IGN, std::sync::atomic::Ordering::SeqCst);
}

/// Gives SIGINT back the disposition it had before [`ignore_sigint`] (in a child of the
/// fork server, before it runs anything of the user's).
pub(crate) fn restore_sigint() {
    let back = if SIGINT_WAS_IGNORED.load(std::sync::atomic::Ordering::SeqCst) {
        libc::SIG_IGN
    } else {
        libc::SIG_DFL
    };
    // SAFETY: SIG_DFL or SIG_IGN: no handler code of ours is installed.
    unsafe {
        libc::signal(libc::SIGINT, back);
    }
}

/// Ends the process at once: no destructors, no atexit handlers, no buffered output flushed.
pub(crate) fn exit_immediately(code: i32) -> ! {
    // SAFETY: _exit is always safe to call; it never returns.
    unsafe { libc::_exit(code) }
}

/// Makes the process `cmd` executes start without any descriptor from 3 up that it would
/// otherwise inherit (one this process, or a library in it, opened without close-on-exec),
/// as Python's spawn and fork server start theirs (`close_fds=True`): what a new process
/// needs comes through its standard input. On kernels before 5.11 (no `close_range`) such
/// descriptors are inherited as before.
pub(crate) fn exec_without_other_fds(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    let mark_the_rest = || {
        // SAFETY: close_range takes plain integers. CLOSE_RANGE_CLOEXEC only sets the flag,
        // so descriptors std still uses before exec (its close-on-exec pipe that reports an
        // exec failure) stay open until then; 0-2 are left alone.
        let _ = unsafe {
            libc::syscall(
                libc::SYS_close_range,
                3u32,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            )
        };
        Ok(())
    };
    // SAFETY: the closure runs in the forked child just before exec: one system call
    // (async-signal-safe), no allocation, no lock; std has already moved the child's
    // standard streams onto 0-2 by then.
    unsafe {
        cmd.pre_exec(mark_the_rest);
    }
}

/// Points standard input at /dev/null (Python does this in every child).
pub(crate) fn stdin_to_devnull() -> io::Result<()> {
    let null = std::fs::File::open("/dev/null")?;
    rustix::stdio::dup2_stdin(&null)?;
    Ok(())
}

/// Makes `fd` this process's standard output.
pub(crate) fn set_stdout(fd: impl AsFd) -> io::Result<()> {
    rustix::stdio::dup2_stdout(fd)?;
    Ok(())
}

/// Takes standard input as an owned descriptor (a duplicate; fd 0 itself stays open).
pub(crate) fn take_stdin_dup() -> io::Result<OwnedFd> {
    super::socket::dup_fd(rustix::stdio::stdin())
}

/// A duplicate of this process's standard input (0), output (1) or error (2).
pub(crate) fn dup_stdio(which: usize) -> io::Result<OwnedFd> {
    match which {
        0 => super::socket::dup_fd(rustix::stdio::stdin()),
        1 => super::socket::dup_fd(rustix::stdio::stdout()),
        _ => super::socket::dup_fd(rustix::stdio::stderr()),
    }
}

/// Makes `fd` this process's standard input (0), output (1) or error (2).
pub(crate) fn set_stdio(which: usize, fd: impl AsFd) -> io::Result<()> {
    match which {
        0 => rustix::stdio::dup2_stdin(fd)?,
        1 => rustix::stdio::dup2_stdout(fd)?,
        _ => rustix::stdio::dup2_stderr(fd)?,
    }
    Ok(())
}

/// Runs `f` with standard error (fd 2) sent to an anonymous file instead, puts it back,
/// and returns `f`'s result with what was written meanwhile. Used around a target's
/// [`Termination::report`](std::process::Termination::report), which prints a failure
/// straight to standard error: the child puts Python's `Process NAME:` line before it.
/// If the file cannot be made, `f` writes to standard error as usual (nothing captured).
pub(crate) fn capturing_stderr<R>(f: impl FnOnce() -> R) -> (R, Vec<u8>) {
    use rustix::fs::{memfd_create, MemfdFlags};
    use std::io::{Read, Seek};
    let Ok(file) = memfd_create("multiproc-report", MemfdFlags::CLOEXEC) else {
        return (f(), Vec::new());
    };
    let Ok(saved) = dup_stdio(2) else {
        return (f(), Vec::new());
    };
    if rustix::stdio::dup2_stderr(&file).is_err() {
        return (f(), Vec::new());
    }
    let r = f();
    let _ = rustix::stdio::dup2_stderr(&saved);
    let mut file = std::fs::File::from(file);
    let mut out = Vec::new();
    let _ = file.rewind().and_then(|()| file.read_to_end(&mut out));
    (r, out)
}

/// A duplicate of this process's standard output.
pub(crate) fn dup_stdout() -> io::Result<OwnedFd> {
    super::socket::dup_fd(rustix::stdio::stdout())
}

/// Registers `f` to run when the process exits normally (`exit`, or return from `main`).
pub(crate) fn at_exit(f: extern "C" fn()) {
    // SAFETY: atexit only records the function pointer; `f` is a plain extern "C" fn.
    unsafe {
        libc::atexit(f);
    }
}

/// Is the calling thread the process's main thread?
pub(crate) fn is_main_thread() -> bool {
    rustix::thread::gettid() == rustix::process::getpid()
}

/// The fork generation: a number that changes in a child each time a process forks, however
/// it forked — through libc's `fork` (ours or anyone's: a `pthread_atfork` handler bumps it)
/// or through the fork server's raw `clone` (which bumps it itself). Every per-process cache
/// (the process identity and thread ids of the robust mutex, pooled manager connections)
/// compares it, instead of asking the kernel on each use: this is the crate's one way to
/// learn "I am a forked child".
static FORK_GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

extern "C" fn forked_child() {
    FORK_GENERATION.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
}

fn register_fork_hook() {
    static REGISTER: std::sync::Once = std::sync::Once::new();
    REGISTER.call_once(|| {
        // SAFETY: pthread_atfork only records the function pointers; the child handler is
        // an extern "C" fn that does one atomic add, which is async-signal-safe.
        unsafe {
            libc::pthread_atfork(None, None, Some(forked_child));
        }
    });
}

/// The current fork generation (see [`FORK_GENERATION`]); registers the fork hook first.
#[inline]
pub(crate) fn fork_generation() -> u64 {
    register_fork_hook();
    fork_generation_now()
}

/// [`fork_generation`] for callers that registered the hook already (before caching
/// anything that depends on it): one relaxed load.
#[inline]
pub(crate) fn fork_generation_now() -> u64 {
    FORK_GENERATION.load(std::sync::atomic::Ordering::Relaxed)
}
