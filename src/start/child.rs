//! The child's side of a start: reading the bootstrap, running the target under a panic
//! hook, reporting its outcome, and what a forked child resets.

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::panic::AssertUnwindSafe;
use std::process::Termination;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::identity::ProcessInfo;
use crate::ipc::RawConn;
use crate::log::log_event;
use crate::{codec, sys, Error};

use crate::sys::AnyFnRef;

use super::*;

/// The panic of the target, recorded by the child's panic hook.
pub(crate) type PanicRecord = (String, Option<String>, Option<String>);
pub(super) static LAST_PANIC: Mutex<Option<PanicRecord>> = Mutex::new(None);
/// When set, the child's panic hook records panics without printing them (pool workers:
/// the panic travels to the parent as the task's error instead).
pub(super) static QUIET_PANICS: AtomicBool = AtomicBool::new(false);

/// Makes this child's panic hook silent (it still records the panic).
pub(crate) fn set_quiet_panics(quiet: bool) {
    QUIET_PANICS.store(quiet, Ordering::SeqCst);
}

/// In a forked child: the parent's panic settings (a pool worker's quiet panics) and the
/// last panic it recorded are not ours.
pub(super) fn forget_after_fork() {
    QUIET_PANICS.store(false, Ordering::SeqCst);
    if let Ok(mut g) = LAST_PANIC.try_lock() {
        *g = None;
    }
}

/// The last panic recorded by the child's panic hook: (message, location, backtrace).
pub(crate) fn take_last_panic() -> Option<PanicRecord> {
    LAST_PANIC.lock().ok().and_then(|mut g| g.take())
}

/// Installs the child's panic hook, once per process: a child forked from a child
/// inherits its parent's hook, which names the process it runs in (not the one that
/// installed it), so it is not wrapped a second time.
pub(super) fn install_child_panic_hook() {
    static INSTALLED: AtomicBool = AtomicBool::new(false);
    if INSTALLED.swap(true, Ordering::SeqCst) {
        return;
    }
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
        eprintln!("Process {}:", crate::identity::current_process().name());
        prev(info);
    }));
}

/// The child's side: set up, check the build, call the trampoline, exit.
pub(crate) fn run_child(boot: Boot, mut fds: Vec<OwnedFd>) -> ! {
    // Its name and the parent's settings (logging included) first: what follows may log.
    crate::identity::set_current(
        boot.name.clone(),
        boot.identity.clone(),
        boot.daemon,
        ProcessInfo::new(
            boot.parent_name.clone(),
            boot.parent_pid,
            boot.parent_daemon,
        ),
        &boot.authkey,
    );
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
    tracker::adopt_tracker(boot.shm_tracker.clone());
    install_child_panic_hook();
    let entry = if boot.build_id == sys::build_id() {
        boot.entry.get()
    } else {
        None
    };
    let code = match entry {
        Some(entry) => entry(boot.target, &boot.args, fds, result),
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
pub(super) fn finish_child(code: i32) -> ! {
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    hooks::at_exit();
    sys::exit_immediately(code)
}

pub(super) fn bad_target(sig_ok: bool) -> i32 {
    if !sig_ok {
        log_event!(
            Error,
            "the target function's type does not match; not calling it"
        );
    }
    255
}

/// Calls `f(a)` and lets its result report as a Rust `main`'s does
/// ([`Termination::report`]: an `Err` is printed to standard error as `Error: {e:?}`):
/// the exit code it reports (0 for success), or the panic. For process targets and the
/// initializers of pools and managers.
///
/// What the report prints (a failure: `()`, `Ok` and exit codes print nothing) comes
/// after Python's header line for an exception in a process, `Process NAME:`, as a
/// panic's report does (see [`install_child_panic_hook`]).
pub(crate) fn call_reporting<A, R: Termination>(f: fn(A) -> R, a: A) -> std::thread::Result<i32> {
    let r = std::panic::catch_unwind(AssertUnwindSafe(move || f(a)))?;
    let (code, printed) =
        sys::capturing_stderr(|| std::panic::catch_unwind(AssertUnwindSafe(move || r.report())));
    if !printed.is_empty() {
        let mut report =
            format!("Process {}:\n", crate::identity::current_process().name()).into_bytes();
        report.extend_from_slice(&printed);
        // Written directly, as the panic hook writes its report (Python prints a
        // target's traceback to standard error).
        let _ = std::io::stderr().lock().write_all(&report);
    }
    code.map(sys::exit_code_number)
}

/// Why an initializer failed that returned a failure (`code`, from [`call_reporting`]).
pub(crate) fn initializer_reported(code: i32) -> String {
    format!(
        "the initializer returned a failure (exit code {code}); it printed the error on \
         standard error"
    )
}

/// Runs a [`Process`](crate::Process)'s target; its return value decides the exit code, as
/// a Rust `main`'s does ([`Termination::report`]: an `Err` is printed to standard error as
/// `Error: {e:?}`, after `Process NAME:`, and gives 1); a panic gives 1.
pub(super) fn run_reporting<A: DeserializeOwned, R: Termination>(
    target: AnyFnRef,
    args: &[u8],
    fds: Vec<OwnedFd>,
    _result: Option<RawConn>,
) -> i32 {
    let Some(f) = target.typed::<fn(A) -> R>().get() else {
        return bad_target(false);
    };
    let a: A = match codec::decode_with_fds(args, fds) {
        Ok(a) => a,
        Err(e) => {
            log_event!(Error, "cannot decode the process's arguments: {e}");
            return 255;
        }
    };
    call_reporting(f, a).unwrap_or(1)
}

pub(super) fn run_returning<A: DeserializeOwned, R: Serialize>(
    target: AnyFnRef,
    args: &[u8],
    fds: Vec<OwnedFd>,
    result: Option<RawConn>,
) -> i32 {
    let Some(result) = result else {
        return bad_target(true);
    };
    let Some(f) = target.typed::<fn(A) -> R>().get() else {
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
