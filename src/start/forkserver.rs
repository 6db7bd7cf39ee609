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
use std::sync::Mutex;
use std::time::Duration;

use super::{boot_fds, exec_self, on_lasting_thread, run_child, Boot, LaunchSpec};
use crate::connection::RawConn;
use crate::{codec, sys, Error, Result};

struct Client {
    conn: RawConn,
    pidfd: OwnedFd,
}

static SERVER: Mutex<Option<Client>> = Mutex::new(None);

fn start_server() -> Result<Client> {
    let (ours, theirs) = sys::stream_pair()?;
    let pid = on_lasting_thread(move || exec_self("forkserver", theirs))?;
    let pidfd = sys::open_pidfd(pid)?;
    Ok(Client {
        conn: RawConn::new(ours),
        pidfd,
    })
}

/// Asks the fork server (starting it if needed) to start the child `spec` describes.
pub(super) fn launch(mut spec: LaunchSpec) -> Result<u32> {
    let stdout = spec.default_stdout()?;
    let boot = codec::encode(&spec.boot(stdout.is_some()))?;
    let fds = boot_fds(&spec, stdout.as_ref());
    let mut g = SERVER.lock().unwrap_or_else(|p| p.into_inner());
    let mut last_err = None;
    for _attempt in 0..2 {
        if g.is_none() {
            *g = Some(start_server()?);
        }
        let Some(c) = g.as_ref() else { continue };
        let reply = c
            .conn
            .send_bytes(&boot, &fds)
            .and_then(|()| c.conn.recv_value::<std::result::Result<u32, String>>());
        match reply {
            Ok(Ok(pid)) => return Ok(pid),
            Ok(Err(msg)) => {
                return Err(Error::Io(std::io::Error::other(format!(
                    "the fork server could not fork: {msg}"
                ))))
            }
            Err(e) => {
                // The server died (killed, say): reap it and start a new one.
                if let Some(old) = g.take() {
                    let _ = sys::signal_pidfd(&old.pidfd, libc::SIGKILL);
                    let _ = sys::wait_exited(&old.pidfd, None);
                    let _ = sys::try_reap(&old.pidfd);
                }
                last_err = Some(e);
            }
        }
    }
    Err(last_err.unwrap_or(Error::Eof))
}

/// The server's loop. Never returns: exits when the parent closes its end.
pub(super) fn serve(conn: RawConn) -> ! {
    // Computed once here, inherited by every child.
    let _ = sys::build_id();
    loop {
        let req = conn.recv_with(|bytes, fds| Ok((codec::decode::<Boot>(bytes)?, fds)));
        let (boot, fds) = match req {
            Ok(r) => r,
            Err(_) => sys::exit_immediately(0),
        };
        match sys::fork_as_sibling() {
            Ok(None) => {
                drop(conn);
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
}

/// Stops this process's fork server, if it has one, and reaps it: called at exit, so that
/// no server is left to be adopted (and perhaps never reaped) by init.
pub(super) fn shutdown() {
    let client = match SERVER.try_lock() {
        Ok(mut g) => g.take(),
        Err(_) => None,
    };
    if let Some(Client { conn, pidfd }) = client {
        drop(conn); // end of file: the server exits
        if !matches!(
            sys::wait_exited(&pidfd, Some(Duration::from_secs(2))),
            Ok(true)
        ) {
            let _ = sys::signal_pidfd(&pidfd, libc::SIGKILL);
            let _ = sys::wait_exited(&pidfd, None);
        }
        let _ = sys::try_reap(&pidfd);
    }
}
