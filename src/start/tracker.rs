//! The shared-memory tracker: one helper process per process tree that unlinks the names
//! of blocks whose creator died without unlinking them (Python's `resource_tracker`).

use std::collections::HashSet;

use std::io;
use std::os::fd::AsFd;
use std::sync::{LazyLock, Mutex};

use serde::{Deserialize, Serialize};

use super::{ensure_initialized, exec_self, on_lasting_thread};
use crate::ipc::RawConn;
use crate::sys::memfd::{self};
use crate::{sys, Error, Result};

// --- the tracker --------------------------------------------------------------------------
//
// One tracker serves a whole tree of processes. The first process that needs one (or starts
// a child) picks an abstract Unix socket name; children learn it in their bootstrap (or by
// inheritance, after `fork`). Whoever first registers a block starts the tracker on that
// name; everyone else connects to it. Each process has its own connection, and the tracker
// unlinks the names a connection registered (and did not unregister) when that connection
// closes: when its process ends, however it ends. The tracker leaves its creator's session
// and process group (`setsid`), so a signal to the whole group does not take it along:
// after `kill -9 -PGID` it sees every connection close and unlinks everything.
//
// A tracker killed on its own is replaced at the next registration by whichever process
// notices first (the name is free again once the dead socket is closed); every process
// registers its live names again with the replacement when it reconnects, at its next
// registration or, at the latest, when it exits normally (`hand_over_at_exit`). A gap
// remains: a process killed (not exiting) after its tracker died, with no registration in
// between, leaves its names, as nothing watches the tracker meanwhile.

#[derive(Serialize, Deserialize)]
enum TrackerMsg {
    Register(String),
    Unregister(String),
}

/// This process's side of the tracker.
struct TrackerClient {
    /// The tracker's abstract socket name, shared by the process tree; chosen on first use.
    addr: Option<String>,
    /// Our connection, once made.
    conn: Option<RawConn>,
    /// The names this process registered and has not unregistered: sent again to a
    /// replacement tracker.
    names: HashSet<String>,
    /// The pid of the tracker we are connected to (for tests).
    pid: Option<u32>,
    /// Trackers this process started (its children): reaped once they end.
    started: Vec<std::os::fd::OwnedFd>,
}

static TRACKER: LazyLock<Mutex<TrackerClient>> = LazyLock::new(|| {
    Mutex::new(TrackerClient {
        addr: None,
        conn: None,
        names: HashSet::new(),
        pid: None,
        started: Vec::new(),
    })
});

fn tracker() -> std::sync::MutexGuard<'static, TrackerClient> {
    TRACKER.lock().unwrap_or_else(|p| p.into_inner())
}

impl TrackerClient {
    fn addr(&mut self) -> String {
        self.addr
            .get_or_insert_with(|| {
                format!(
                    "multiproc-shm-tracker-{}-{}",
                    sys::getpid(),
                    &memfd::unique_name()[3..]
                )
            })
            .clone()
    }

    /// Registers `name` (true) or unregisters it (false) with the tracker, reconnecting
    /// (and starting a tracker) as needed. Returns whether the set of names changed.
    fn update(&mut self, name: &str, register: bool) -> Result<bool> {
        let changed = if register {
            self.names.insert(name.to_string())
        } else {
            self.names.remove(name)
        };
        self.started
            .retain(|pidfd| matches!(sys::try_reap(pidfd), Ok(None)));
        let msg = if register {
            TrackerMsg::Register(name.to_string())
        } else {
            TrackerMsg::Unregister(name.to_string())
        };
        let mut last_err = None;
        for _attempt in 0..3 {
            match &self.conn {
                // The tracker acknowledges each message once it has recorded it: a message
                // sent to a tracker that died before reading it is never taken as done.
                Some(conn) => match conn.send_value(&msg).and_then(|()| conn.recv_value::<u8>()) {
                    Ok(_) => return Ok(changed),
                    // The tracker is gone: connect to (or start) its replacement, which
                    // gets every name again.
                    Err(e) => {
                        self.conn = None;
                        last_err = Some(e);
                    }
                },
                None if self.names.is_empty() => return Ok(changed),
                None => match self.connect() {
                    Ok(()) => return Ok(changed),
                    Err(e) => last_err = Some(e),
                },
            }
        }
        Err(last_err.unwrap_or(Error::Eof))
    }

    /// Connects to the tree's tracker, starting it if there is none, and registers every
    /// name this process holds.
    fn connect(&mut self) -> Result<()> {
        let addr = self.addr();
        let sock = sys::SockAddr::Abstract(addr.clone().into_bytes());
        let mut last_err = None;
        for _attempt in 0..5 {
            let conn = match sys::connect_to(&sock) {
                Ok(fd) => {
                    let pid = sys::peer_pid_if_same_user(&fd)?;
                    let conn = RawConn::new(fd);
                    // The tracker greets each client it accepted: a connection that was
                    // still in the backlog of a tracker that is exiting gets no greeting.
                    match (pid, conn.recv_value::<u8>()) {
                        (Some(pid), Ok(_)) => (conn, pid),
                        (None, _) => {
                            return Err(Error::Io(io::Error::new(
                                io::ErrorKind::PermissionDenied,
                                format!(
                                "the shared memory tracker socket {addr:?} belongs to another user"
                            ),
                            )))
                        }
                        (_, Err(e)) => {
                            last_err = Some(e);
                            continue;
                        }
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound
                    ) =>
                {
                    match self.start(&addr)? {
                        Some(c) => c,
                        None => continue, // another process started it meanwhile
                    }
                }
                Err(e) => return Err(Error::Io(e)),
            };
            let (conn, pid) = conn;
            let mut sent = Ok(());
            for n in &self.names {
                sent = conn
                    .send_value(&TrackerMsg::Register(n.clone()))
                    .and_then(|()| conn.recv_value::<u8>().map(drop));
                if sent.is_err() {
                    break;
                }
            }
            match sent {
                Ok(()) => {
                    self.conn = Some(conn);
                    self.pid = Some(pid);
                    return Ok(());
                }
                Err(e) => last_err = Some(e),
            }
        }
        Err(Error::Io(io::Error::other(format!(
            "cannot reach the shared memory tracker: {}",
            last_err.map_or_else(|| "no tracker".to_string(), |e| e.to_string())
        ))))
    }

    /// Starts a tracker listening on `addr`. `None`: the name is taken (another process
    /// started one first).
    fn start(&mut self, addr: &str) -> Result<Option<(RawConn, u32)>> {
        ensure_initialized()?;
        let (ours, theirs) = sys::stream_pair()?;
        let pid = on_lasting_thread(move || exec_self("shm-tracker", theirs))?;
        let pidfd = sys::open_pidfd(pid)?;
        let conn = RawConn::new(ours);
        let reply = conn
            .send_value(addr)
            .and_then(|()| conn.recv_value::<std::result::Result<(), String>>());
        self.started.push(pidfd);
        match reply {
            // It is ready: it has left our process group and listens on `addr`.
            Ok(Ok(())) => Ok(Some((conn, pid))),
            Ok(Err(_in_use)) => Ok(None),
            Err(e) => Err(Error::Io(io::Error::other(format!(
                "the shared memory tracker did not start: {e}"
            )))),
        }
    }
}

pub(crate) fn tracker_register(name: &str) -> Result<bool> {
    tracker().update(name, true)
}

pub(crate) fn tracker_unregister(name: &str) -> Result<bool> {
    tracker().update(name, false)
}

/// The tracker's socket name, to pass to a child so that it uses the same tracker.
pub(crate) fn tracker_address() -> String {
    tracker().addr()
}

/// In a child: use the parent's tracker (`addr`), with a connection of our own.
pub(crate) fn adopt_tracker(addr: Option<String>) {
    let mut t = tracker();
    t.addr = addr;
    t.conn = None;
    t.names.clear();
    t.pid = None;
    t.started.clear();
}

/// The pid of the tracker this process is connected to, if it is connected (test hook).
#[doc(hidden)]
pub fn tracker_pid() -> Option<u32> {
    tracker().pid
}

/// How long the tracker waits for the rest of a message it began to read, or for room to
/// write an acknowledgement. A client of ours writes each message whole (one system call)
/// and reads each acknowledgement at once, so only a peer that is not one (it sent part of
/// a message and stopped, or it reads nothing) ever waits that long: it is dropped, instead
/// of stopping the tracker, and so every `SharedMemory::create` of the tree, for ever.
const CLIENT_IO_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// The largest message the tracker takes: a name (at most 255 bytes) and its framing.
const CLIENT_MAX_FRAME: u64 = 4096;

/// A client connection as the tracker holds it: with its limits (see [`CLIENT_IO_TIMEOUT`]).
fn tracker_client(conn: RawConn) -> Option<RawConn> {
    sys::set_io_timeout(&conn, Some(CLIENT_IO_TIMEOUT)).ok()?;
    conn.set_max_frame(CLIENT_MAX_FRAME);
    Some(conn)
}

/// The tracker process: serves the connections of every process of the tree, and unlinks
/// the names a connection registered when that connection closes. Exits once no
/// connection is left.
pub(crate) fn tracker_main(first: RawConn) -> ! {
    memfd::become_tracker();
    let Ok(addr) = first.recv_value::<String>() else {
        sys::exit_immediately(0)
    };
    let listener = match sys::listen_on(&sys::SockAddr::Abstract(addr.into_bytes()), 128) {
        Ok((l, _)) => l,
        Err(e) => {
            let _ = first.send_value(&Err::<(), String>(e.to_string()));
            sys::exit_immediately(0)
        }
    };
    if first.send_value(&Ok::<(), String>(())).is_err() {
        sys::exit_immediately(0);
    }
    let Some(first) = tracker_client(first) else {
        sys::exit_immediately(0)
    };
    let mut clients: Vec<(RawConn, HashSet<String>)> = vec![(first, HashSet::new())];
    loop {
        if clients.is_empty() {
            // Take a client that connected meanwhile rather than leave it unserved.
            match sys::wait_readable(listener.as_fd(), Some(std::time::Duration::ZERO)) {
                Ok(true) => {}
                _ => break,
            }
        }
        let ready = {
            let mut fds = vec![listener.as_fd()];
            fds.extend(clients.iter().map(|(c, _)| c.as_fd()));
            match sys::readable_of(&fds, None) {
                Ok(r) => r,
                Err(_) => break,
            }
        };
        // Clients first, from the back, so that removing one keeps the other indices.
        for &i in ready.iter().rev().filter(|&&i| i > 0) {
            let (conn, names) = &mut clients[i - 1];
            let open = loop {
                // Readable: a whole message is there or on its way (see CLIENT_IO_TIMEOUT).
                conn.set_read_deadline(Some(std::time::Instant::now() + CLIENT_IO_TIMEOUT));
                match conn.recv_value::<TrackerMsg>() {
                    Ok(TrackerMsg::Register(n)) => {
                        names.insert(n);
                    }
                    Ok(TrackerMsg::Unregister(n)) => {
                        names.remove(&n);
                    }
                    Err(_) => break false,
                }
                // Recorded: say so (the client waits for it before it counts on us).
                if conn.send_value(&0u8).is_err() {
                    break false;
                }
                if !conn.has_buffered_input() {
                    break true;
                }
            };
            if !open {
                let (_, names) = clients.swap_remove(i - 1);
                for n in names {
                    let _ = memfd::unlink_named(&n);
                }
            }
        }
        if ready.first() == Some(&0) {
            if let Ok(fd) = sys::accept_one(&listener) {
                if matches!(sys::peer_pid_if_same_user(&fd), Ok(Some(_))) {
                    if let Some(conn) = tracker_client(RawConn::new(fd)) {
                        if conn.send_value(&0u8).is_ok() {
                            clients.push((conn, HashSet::new()));
                        }
                    }
                }
            }
        }
    }
    sys::exit_immediately(0)
}

/// At a normal exit (the main process's, or a child's when its work is done): if the
/// tracker that holds this process's names died meanwhile (killed on its own), hands them
/// to its replacement (started if needed), which unlinks them once this process is gone,
/// as the dead one would have. Without this, names registered with a dead tracker would
/// be left in /dev/shm by a process that made no other registration before it ended.
pub(crate) fn hand_over_at_exit() {
    // Never wait at exit for a thread that still holds the tracker: best effort.
    let Ok(mut t) = TRACKER.try_lock() else {
        return;
    };
    if t.names.is_empty() {
        return;
    }
    if t.conn.as_ref().is_some_and(|c| !sys::peer_closed(c)) {
        return;
    }
    t.conn = None;
    let _ = t.connect();
}

/// In a forked child: keep the tree's tracker, but not the parent's connection or names.
pub(crate) fn forget_after_fork() {
    if let Ok(mut t) = TRACKER.try_lock() {
        t.conn = None;
        t.names.clear();
        t.pid = None;
        t.started.clear();
    }
}
