//! The shared-memory tracker: one helper process per process tree that unlinks the names
//! of blocks whose creator died without unlinking them (Python's `resource_tracker`).

use std::collections::HashSet;

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{LazyLock, Mutex};

use serde::{Deserialize, Serialize};

use super::{ensure_initialized, exec_self, on_lasting_thread};
use crate::codec::{FdOwned, FdRef};
use crate::ipc::RawConn;
use crate::sys::futex::{ident_of, ident_pid, process_gone};
use crate::sys::memfd::{self};
use crate::sys::state_file;
use crate::{codec, sys, Error, Result};

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
// registration, when it next starts a child (`hand_over_if_dead`), or at the latest when
// it exits normally (`hand_over_at_exit`).
//
// The names of a process killed after its tracker died, with no registration in between,
// are not lost either: the tracker keeps which process (pid and start time) holds which
// names in a state file (`sys::state_file`, an anonymous file) that it hands to each
// client as it greets it, and that every client keeps open. The first client that
// reaches a replacement hands it the dead tracker's file (`Adopt`); the replacement
// unlinks at once the names of owners that are gone, and watches the others through
// pidfds until they reconnect (their connection is then the authority again) or die. So
// the names are recovered at the next use of the tracker (or start of a child) by any
// process that had used the dead one, or at its normal exit. What remains: a tree in
// which every process that held the file is killed too (the tracker with everything,
// `kill -9 -1`).

/// What a client says to the tracker (sent as [`ClientMsg`]: the same wire form).
#[derive(Deserialize)]
enum TrackerMsg {
    Register(String),
    Unregister(String),
    /// The state file of a tracker that died: take its names over.
    Adopt(FdOwned),
}

/// [`TrackerMsg`] as a client sends it.
#[derive(Serialize)]
enum ClientMsg<'a> {
    Register(String),
    Unregister(String),
    Adopt(FdRef<'a>),
}

/// The state file's contents: each owner's identity (`sys::futex::ident_of`) and names.
type State = Vec<(u64, Vec<String>)>;

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
    /// The state file of the tracker we are (or were last) connected to: handed to a
    /// replacement if that tracker dies.
    table: Option<std::os::fd::OwnedFd>,
}

static TRACKER: LazyLock<Mutex<TrackerClient>> = LazyLock::new(|| {
    Mutex::new(TrackerClient {
        addr: None,
        conn: None,
        names: HashSet::new(),
        pid: None,
        started: Vec::new(),
        table: None,
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
        self.started.retain(|pidfd| {
            let running = matches!(sys::try_reap(pidfd), Ok(None));
            if !running {
                sys::stop_reaping(pidfd);
            }
            running
        });
        let msg = if register {
            ClientMsg::Register(name.to_string())
        } else {
            ClientMsg::Unregister(name.to_string())
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
                // Nothing to say to a tracker: unless we hold a dead one's state, whose
                // names (ours among them, perhaps one just unregistered) must be taken
                // over rather than left to be unlinked later by the wrong owner.
                None if self.names.is_empty() && self.table.is_none() => return Ok(changed),
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
                    // The tracker greets each client it accepted (with its state file): a
                    // connection that was still in the backlog of a tracker that is
                    // exiting gets no greeting.
                    match (pid, conn.recv_value::<FdOwned>()) {
                        (Some(pid), Ok(table)) => (conn, pid, table.0),
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
            let (conn, pid, table) = conn;
            let ask = |msg: &ClientMsg<'_>| {
                conn.send_value(msg)
                    .and_then(|()| conn.recv_value::<u8>().map(drop))
            };
            // A dead tracker's state first: the replacement takes its names over (ours
            // are then those we register next, not the old ones).
            let mut sent = match &self.table {
                Some(old) if !state_file::same_file(old, &table) && !state_file::is_empty(old) => {
                    ask(&ClientMsg::Adopt(FdRef(old.as_fd())))
                }
                _ => Ok(()),
            };
            for n in &self.names {
                if sent.is_err() {
                    break;
                }
                sent = ask(&ClientMsg::Register(n.clone()));
            }
            match sent {
                Ok(()) => {
                    self.conn = Some(conn);
                    self.pid = Some(pid);
                    self.table = Some(table);
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

    /// Starts a tracker listening on `addr`: its connection, pid and state file. `None`:
    /// the name is taken (another process started one first).
    fn start(&mut self, addr: &str) -> Result<Option<(RawConn, u32, std::os::fd::OwnedFd)>> {
        ensure_initialized()?;
        let (ours, theirs) = sys::stream_pair()?;
        let pid = on_lasting_thread(move || exec_self("shm-tracker", theirs))?;
        let pidfd = sys::open_pidfd(pid)?;
        let conn = RawConn::new(ours);
        let reply = conn
            .send_value(addr)
            .and_then(|()| conn.recv_value::<std::result::Result<(), String>>());
        // Killed on its own, it is reaped at once rather than left a zombie until next use.
        sys::reap_when_ended(&pidfd);
        self.started.push(pidfd);
        match reply {
            // It is ready: it has left our process group and listens on `addr`; it
            // greets us as every client.
            Ok(Ok(())) => match conn.recv_value::<FdOwned>() {
                Ok(table) => Ok(Some((conn, pid, table.0))),
                Err(e) => Err(Error::Io(io::Error::other(format!(
                    "the shared memory tracker did not start: {e}"
                )))),
            },
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
    for pidfd in t.started.drain(..) {
        sys::stop_reaping(&pidfd);
    }
    t.table = None;
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

/// A client connection as the tracker holds it: its identity and the names it holds.
struct Client {
    conn: RawConn,
    ident: u64,
    names: HashSet<String>,
}

/// The names of a process that registered them with a tracker that died, taken over from
/// that tracker's state file and watched through a pidfd until the process reconnects or
/// ends.
struct Adopted {
    pidfd: OwnedFd,
    ident: u64,
    names: HashSet<String>,
}

/// What the tracker holds, and its state file.
struct Tracker {
    clients: Vec<Client>,
    adopted: Vec<Adopted>,
    table: OwnedFd,
    seq: u64,
}

impl Tracker {
    /// Writes who holds which names to the state file (before a change is acknowledged).
    fn save(&mut self) {
        let state: Vec<(u64, Vec<&String>)> = self
            .clients
            .iter()
            .map(|c| (c.ident, &c.names))
            .chain(self.adopted.iter().map(|a| (a.ident, &a.names)))
            .filter(|(_, n)| !n.is_empty())
            .map(|(i, n)| (i, n.iter().collect()))
            .collect();
        if let Ok(bytes) = codec::encode(&state) {
            self.seq += 1;
            let _ = state_file::write(&self.table, self.seq, &bytes);
        }
    }

    /// A client of identity `ident` connected: its connection is the authority on its names
    /// again (it registers every one it holds), instead of what was adopted for it.
    fn accept(&mut self, conn: RawConn, ident: u64) {
        self.adopted.retain(|a| a.ident != ident);
        self.clients.push(Client {
            conn,
            ident,
            names: HashSet::new(),
        });
    }

    /// Takes over the names in a dead tracker's state file `old`: those of owners that are
    /// gone are unlinked at once, the others watched until their owner reconnects or ends.
    /// The file is emptied, so that no other client hands it over again (its names may
    /// belong to someone else by then).
    fn adopt(&mut self, old: OwnedFd) {
        if state_file::same_file(&old, &self.table) {
            return;
        }
        let state = state_file::read(&old).and_then(|b| codec::decode::<State>(&b).ok());
        let _ = state_file::clear(&old);
        for (ident, names) in state.unwrap_or_default() {
            if self.clients.iter().any(|c| c.ident == ident) {
                continue; // connected again: it registers what it still holds
            }
            if let Some(a) = self.adopted.iter_mut().find(|a| a.ident == ident) {
                a.names.extend(names);
                continue;
            }
            let pid = ident_pid(ident);
            match sys::open_pidfd(pid) {
                // Opened, then checked: the pidfd is of the process that registered them.
                Ok(pidfd) if !process_gone(pid, Some(ident)) => self.adopted.push(Adopted {
                    pidfd,
                    ident,
                    names: names.into_iter().collect(),
                }),
                _ => {
                    for n in names {
                        let _ = memfd::unlink_named(&n);
                    }
                }
            }
        }
        self.save();
    }
}

/// The tracker process: serves the connections of every process of the tree, and unlinks
/// the names a connection registered when that connection closes (and those it adopted
/// from a dead tracker when their owner ends). Exits once no connection and no adopted
/// owner is left.
pub(crate) fn tracker_main(first: RawConn) -> ! {
    memfd::become_tracker();
    let Ok(addr) = first.recv_value::<String>() else {
        sys::exit_immediately(0)
    };
    let Ok(table) = state_file::create() else {
        let _ = first.send_value(&Err::<(), String>("no state file".into()));
        sys::exit_immediately(0)
    };
    let listener = match sys::listen_on(&sys::SockAddr::Abstract(addr.into_bytes()), 128) {
        Ok((l, _)) => l,
        Err(e) => {
            let _ = first.send_value(&Err::<(), String>(e.to_string()));
            sys::exit_immediately(0)
        }
    };
    let greet = |conn: &RawConn| conn.send_value(&FdRef(table.as_fd())).is_ok();
    if first.send_value(&Ok::<(), String>(())).is_err() || !greet(&first) {
        sys::exit_immediately(0);
    }
    let Some(first_ident) = sys::peer_pid_if_same_user(&first)
        .ok()
        .flatten()
        .map(ident_of)
    else {
        sys::exit_immediately(0)
    };
    let Some(first) = tracker_client(first) else {
        sys::exit_immediately(0)
    };
    let Ok(table_copy) = table.try_clone() else {
        sys::exit_immediately(0)
    };
    let mut t = Tracker {
        clients: Vec::new(),
        adopted: Vec::new(),
        table: table_copy,
        seq: 0,
    };
    t.accept(first, first_ident);
    loop {
        if t.clients.is_empty() && t.adopted.is_empty() {
            // Take a client that connected meanwhile rather than leave it unserved.
            match sys::wait_readable(listener.as_fd(), Some(std::time::Duration::ZERO)) {
                Ok(true) => {}
                _ => break,
            }
        }
        let clients = t.clients.len();
        let ready = {
            let mut fds = vec![listener.as_fd()];
            fds.extend(t.clients.iter().map(|c| c.conn.as_fd()));
            fds.extend(t.adopted.iter().map(|a| a.pidfd.as_fd()));
            match sys::readable_of(&fds, None) {
                Ok(r) => r,
                Err(_) => break,
            }
        };
        // Adopted owners that ended first, then clients, each from the back, so that
        // removing one keeps the other indices.
        let mut ended = false;
        for &i in ready.iter().rev().filter(|&&i| i > clients) {
            let gone = t.adopted.swap_remove(i - 1 - clients);
            for n in gone.names {
                let _ = memfd::unlink_named(&n);
            }
            ended = true;
        }
        for &i in ready.iter().rev().filter(|&&i| i > 0 && i <= clients) {
            let open = loop {
                let conn = &t.clients[i - 1].conn;
                // Readable: a whole message is there or on its way (see CLIENT_IO_TIMEOUT).
                conn.set_read_deadline(Some(std::time::Instant::now() + CLIENT_IO_TIMEOUT));
                match conn.recv_value::<TrackerMsg>() {
                    Ok(TrackerMsg::Register(n)) => {
                        t.clients[i - 1].names.insert(n);
                    }
                    Ok(TrackerMsg::Unregister(n)) => {
                        t.clients[i - 1].names.remove(&n);
                    }
                    Ok(TrackerMsg::Adopt(old)) => t.adopt(old.0),
                    Err(_) => break false,
                }
                // Recorded, in the state file too: say so (the client waits for it
                // before it counts on us).
                t.save();
                let conn = &t.clients[i - 1].conn;
                if conn.send_value(&0u8).is_err() {
                    break false;
                }
                if !conn.has_buffered_input() {
                    break true;
                }
            };
            if !open {
                let gone = t.clients.swap_remove(i - 1);
                for n in gone.names {
                    let _ = memfd::unlink_named(&n);
                }
                ended = true;
            }
        }
        if ended {
            t.save();
        }
        if ready.first() == Some(&0) {
            if let Ok(fd) = sys::accept_one(&listener) {
                if let Ok(Some(pid)) = sys::peer_pid_if_same_user(&fd) {
                    if let Some(conn) = tracker_client(RawConn::new(fd)) {
                        if greet(&conn) {
                            t.accept(conn, ident_of(pid));
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
/// as the dead one would have; with them, the dead tracker's state, so that the names of
/// other processes killed meanwhile are unlinked too. Without this, names registered with a dead tracker would
/// be left in /dev/shm by a process that made no other registration before it ended.
pub(crate) fn hand_over_at_exit() {
    // Never wait at exit for a thread that still holds the tracker: best effort.
    let Ok(mut t) = TRACKER.try_lock() else {
        return;
    };
    t.hand_over_if_dead();
}

/// Before this process starts a child: if the tracker that holds its names died meanwhile,
/// hands them (and the dead tracker's state) to a replacement now, as
/// [`hand_over_at_exit`] does. A process that registers nothing after its tracker was
/// killed, and is then killed itself, would otherwise leave its names in /dev/shm: they
/// would be only in the dead tracker's state, which no live process holds (its children
/// do not get it). Starting a child is a moment every such process passes through, and
/// this costs nothing to a process that holds no names (one `poll` to one that does).
pub(crate) fn hand_over_if_dead() {
    // Not waiting for the lock: a thread that holds it is talking to the tracker (and
    // notices a dead one itself), and a start must not wait behind a tracker that hangs.
    let mut t = match TRACKER.try_lock() {
        Ok(t) => t,
        Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
        Err(std::sync::TryLockError::WouldBlock) => return,
    };
    t.hand_over_if_dead();
}

impl TrackerClient {
    /// Connects to a replacement (handing over our names and the dead tracker's state) if
    /// we hold names or a dead tracker's state and our tracker is gone.
    fn hand_over_if_dead(&mut self) {
        // Our names, or a dead tracker's state that nobody handed over yet.
        let holds_state = self
            .table
            .as_ref()
            .is_some_and(|f| !state_file::is_empty(f));
        if self.names.is_empty() && !holds_state {
            return;
        }
        if self.conn.as_ref().is_some_and(|c| !sys::peer_closed(c)) {
            return;
        }
        self.conn = None;
        let _ = self.connect();
    }
}

/// In a forked child: keep the tree's tracker, but not the parent's connection or names.
pub(crate) fn forget_after_fork() {
    if let Ok(mut t) = TRACKER.try_lock() {
        t.conn = None;
        t.names.clear();
        t.pid = None;
        for pidfd in t.started.drain(..) {
            sys::stop_reaping(&pidfd);
        }
        t.table = None;
    }
}
