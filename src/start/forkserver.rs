//! The fork server: one clean helper process that forks children on request.
//!
//! It is started from `/proc/self/exe` the first time a [`StartMethod::ForkServer`]
//! process is started, goes through `init()` and then only serves requests: it never runs
//! user code itself, so every child starts from the same small, single-threaded state.
//! Children are created with `CLONE_PARENT`: they are children of the requesting process,
//! which waits for them, reads their exit status and signals them directly.
//!
//! [`StartMethod::ForkServer`]: super::StartMethod::ForkServer

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use super::{boot_fds, exec_self, on_lasting_thread, run_child, Boot, LaunchSpec};
use crate::ipc::RawConn;
use crate::{codec, sys, Error, Result};

struct Client {
    conn: RawConn,
    pidfd: OwnedFd,
}

static SERVER: Mutex<Option<Client>> = Mutex::new(None);
/// The current server's pid (0: none), readable without waiting for a start in progress.
static SERVER_PID: AtomicU32 = AtomicU32::new(0);

/// The pid of this process's fork server, if it has started one (test hook).
pub(super) fn server_pid() -> Option<u32> {
    Some(SERVER_PID.load(Ordering::SeqCst)).filter(|&p| p != 0)
}

fn start_server() -> Result<Client> {
    let (ours, theirs) = sys::stream_pair()?;
    let pid = on_lasting_thread(move || exec_self("forkserver", theirs))?;
    let pidfd = sys::open_pidfd(pid)?;
    // Killed on its own, it is reaped at once rather than left a zombie until next use.
    sys::reap_when_ended(&pidfd);
    SERVER_PID.store(pid, Ordering::SeqCst);
    crate::log::log_event!(Info, "started the fork server (pid {pid})");
    Ok(Client {
        conn: RawConn::new(ours),
        pidfd,
    })
}

/// Asks the fork server (starting it if needed) to start the child `spec` describes.
///
/// The target runs at most once: if the server dies before it answers, it may have forked
/// the child already. The child says its pid on its own socket before anything else, so
/// that socket tells: a pid (the child exists: it is ours, and it is the answer), or end
/// of file once the dead server's copy is closed (no child: ask a new server).
pub(super) fn launch(mut spec: LaunchSpec) -> Result<u32> {
    use std::os::fd::AsFd;
    let stdout = spec.default_stdout()?;
    let mut boot = spec.boot(stdout.is_some());
    boot.has_started = true;
    let boot = codec::encode(&boot)?;
    let mut g = SERVER.lock().unwrap_or_else(|p| p.into_inner());
    let mut last_err = None;
    for _attempt in 0..2 {
        if g.is_none() {
            *g = Some(start_server()?);
        }
        let Some(c) = g.as_ref() else { continue };
        let (started, child_end) = sys::stream_pair()?;
        let mut fds = boot_fds(&spec, stdout.as_ref());
        fds.push(child_end.as_fd());
        let sent = c.conn.send_bytes(&boot, &fds);
        drop(child_end);
        let reply = sent.and_then(|()| c.conn.recv_value::<std::result::Result<u32, String>>());
        if reply.is_err() {
            // Did the dying server fork the child? Only the child can still hold the
            // other end: it says its pid, or the end closes.
            if let Ok(pid) = RawConn::new(started).recv_value::<u32>() {
                if let Some(old) = g.take() {
                    reap_server(old);
                }
                return Ok(pid);
            }
        }
        match reply {
            Ok(Ok(pid)) => return Ok(pid),
            Ok(Err(msg)) => {
                return Err(Error::Io(std::io::Error::other(format!(
                    "the fork server could not fork: {msg}"
                ))))
            }
            Err(e) => {
                // The server died (killed, say) without starting the child: reap it and
                // start a new one.
                crate::log::log_event!(Warning, "the fork server died ({e}); starting a new one");
                if let Some(old) = g.take() {
                    reap_server(old);
                }
                last_err = Some(e);
            }
        }
    }
    Err(last_err.unwrap_or(Error::Eof))
}

/// Kills (if need be) and reaps a server that stopped answering.
fn reap_server(old: Client) {
    sys::stop_reaping(&old.pidfd);
    let _ = sys::signal_pidfd(&old.pidfd, libc::SIGKILL);
    let _ = sys::wait_exited(&old.pidfd, None);
    let _ = sys::try_reap(&old.pidfd);
}

/// The server's loop. Never returns: exits when the parent closes its end.
///
/// It ignores SIGINT, as CPython's fork server does: a Ctrl-C in a terminal goes to the
/// whole foreground process group, and what to do about it is the program's decision, not
/// its helper's. Its children get SIGINT's disposition back before anything else.
pub(super) fn serve(conn: RawConn) -> ! {
    sys::ignore_sigint();
    // Computed once here, inherited by every child.
    let _ = sys::build_id();
    loop {
        let req = conn.recv_with(|bytes, fds| Ok((codec::decode::<Boot>(bytes)?, fds)));
        let (boot, mut fds) = match req {
            Ok(r) => r,
            Err(_) => sys::exit_immediately(0),
        };
        let started = if boot.has_started { fds.pop() } else { None };
        match sys::fork_as_sibling() {
            Ok(None) => {
                sys::restore_sigint();
                drop(conn);
                // First thing: tell the parent we exist (see `launch`).
                if let Some(s) = started {
                    let _ = RawConn::new(s).send_value(&sys::getpid());
                }
                sys::die_with_parent(boot.parent_pid);
                run_child(boot, fds)
            }
            Ok(Some(pid)) => {
                drop(fds);
                if conn.send_value(&Ok::<u32, String>(pid)).is_err() {
                    sys::exit_immediately(0);
                }
            }
            Err(e) => {
                drop(fds);
                if conn.send_value(&Err::<u32, String>(e.to_string())).is_err() {
                    sys::exit_immediately(0);
                }
            }
        }
    }
}

/// In a forked child: the parent's fork server is not ours.
pub(super) fn forget_after_fork() {
    if let Ok(mut g) = SERVER.try_lock() {
        *g = None;
    }
    SERVER_PID.store(0, Ordering::SeqCst);
}

/// Stops this process's fork server, if it has one, and reaps it: called at exit, so that
/// no server is left to be adopted (and perhaps never reaped) by init.
pub(super) fn shutdown() {
    let client = match SERVER.try_lock() {
        Ok(mut g) => g.take(),
        Err(_) => None,
    };
    if let Some(Client { conn, pidfd }) = client {
        sys::stop_reaping(&pidfd);
        drop(conn); // end of file: the server exits
        if !matches!(
            sys::wait_exited(&pidfd, Some(Duration::from_secs(2))),
            Ok(true)
        ) {
            let _ = sys::signal_pidfd(&pidfd, libc::SIGKILL);
            let _ = sys::wait_exited(&pidfd, None);
        }
        let _ = sys::try_reap(&pidfd);
        crate::log::log_event!(Debug, "stopped the fork server");
    }
}
