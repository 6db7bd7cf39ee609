//! The client side: one [`Endpoint`] per (server address, authkey) in each process, holding
//! a small pool of authenticated connections. An operation takes a connection from the
//! pool (connecting the first time), makes one round trip, and puts it back, so threads
//! using proxies at the same time each get their own connection. After a fork, the child
//! never uses the parent's connections.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_bytes::ByteBuf;

use super::protocol::{Reply, Request, Response};
use crate::connection::{connect_raw, Address};
use crate::ipc::RawConn;
use crate::{codec, Error, Result};

/// Idle connections kept per endpoint.
const MAX_IDLE: usize = 16;
/// How long [`Endpoint::server_listens`] waits for a connection, then for the server's
/// first word.
const PROBE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

struct Pool {
    /// The fork generation the connections belong to (see `sys::fork_generation`).
    generation: u64,
    /// This process's session id with the server (new after a fork).
    session: u64,
    idle: Vec<Conn>,
}

/// One authenticated connection: for a local (Unix socket) server, a channel with
/// shared-memory lanes, where a request and its reply usually cost no system call; for a
/// TCP one, the socket itself.
pub(crate) struct Conn(RawConn);

impl Conn {
    fn round_trip(&self, req: &Request) -> Result<Response> {
        self.0.send_value(req)?;
        self.0.recv_value::<Response>()
    }
}

fn new_session() -> u64 {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        // Unique enough without randomness: pid and time.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        return t ^ (u64::from(std::process::id()) << 40);
    }
    u64::from_le_bytes(b)
}

pub(crate) struct Endpoint {
    /// Set when the owner shut the server down: calls fail at once.
    closed: std::sync::atomic::AtomicBool,
    pub(crate) address: Address,
    pub(crate) authkey: Vec<u8>,
    pool: Mutex<Pool>,
}

static ENDPOINTS: Mutex<Vec<Weak<Endpoint>>> = Mutex::new(Vec::new());

impl Endpoint {
    /// The endpoint for this server in this process (shared by every proxy of it).
    pub(crate) fn get(address: &Address, authkey: &[u8]) -> Arc<Endpoint> {
        let mut all = ENDPOINTS.lock().unwrap_or_else(|p| p.into_inner());
        all.retain(|w| w.strong_count() > 0);
        for w in all.iter() {
            if let Some(e) = w.upgrade() {
                if &e.address == address
                    && e.authkey == authkey
                    && !e.closed.load(Ordering::Acquire)
                {
                    return e;
                }
            }
        }
        let e = Arc::new(Endpoint {
            closed: std::sync::atomic::AtomicBool::new(false),
            address: address.clone(),
            authkey: authkey.to_vec(),
            pool: Mutex::new(Pool {
                generation: crate::sys::fork_generation(),
                session: new_session(),
                idle: Vec::new(),
            }),
        });
        all.push(Arc::downgrade(&e));
        e
    }

    fn checkout(&self) -> Result<Conn> {
        let session = {
            let mut p = self.pool.lock().unwrap_or_else(|p| p.into_inner());
            let generation = crate::sys::fork_generation();
            if p.generation != generation {
                // Forked: these sockets are shared with the parent. Close our copies.
                p.idle.clear();
                p.generation = generation;
                p.session = new_session();
            }
            if let Some(c) = p.idle.pop() {
                return Ok(c);
            }
            p.session
        };
        self.connect_session(session)
    }

    /// A new authenticated connection to the server, introduced with this process's
    /// session id.
    pub(crate) fn connect(&self) -> Result<Conn> {
        let session = {
            let mut p = self.pool.lock().unwrap_or_else(|p| p.into_inner());
            let generation = crate::sys::fork_generation();
            if p.generation != generation {
                p.idle.clear();
                p.generation = generation;
                p.session = new_session();
            }
            p.session
        };
        self.connect_session(session)
    }

    fn connect_session(&self, session: u64) -> Result<Conn> {
        let conn = connect_raw(&self.address, Some(&self.authkey))?;
        conn.set_spin(false);
        let check = |r: Response| match r {
            Ok(_) => Ok(()),
            Err((kind, message)) => Err(Error::from_remote(kind, message)),
        };
        conn.send_value(&Request::Hello(session))?;
        check(conn.recv_value::<Response>()?)?;
        if matches!(self.address, Address::Tcp(_)) {
            return Ok(Conn(conn));
        }
        // A local server: move to a channel with lanes.
        let (ours, theirs) = RawConn::lane_pair()?;
        let fds = theirs
            .lane_fds()
            .ok_or_else(|| Error::invalid("a lane pair without lanes"))?;
        let req = codec::encode(&Request::UseLane)?;
        conn.send_bytes(&req, &fds)?;
        drop(theirs);
        check(conn.recv_value::<Response>()?)?;
        Ok(Conn(ours))
    }

    pub(crate) fn checkin(&self, c: Conn) {
        let mut p = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        if p.generation == crate::sys::fork_generation() && p.idle.len() < MAX_IDLE {
            p.idle.push(c);
        }
    }

    /// One round trip. A connection that failed is not reused.
    pub(crate) fn call(&self, req: &Request) -> Result<Reply> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let conn = self.checkout().map_err(|e| self.explain(e))?;
        let resp = conn.round_trip(req).map_err(|e| self.explain(e))?;
        self.checkin(conn);
        resp.map_err(|(kind, message)| Error::from_remote(kind, message))
    }

    /// Whether a server still listens at the address. Not when a connection to it is
    /// refused, or (a server that is dying: its connections break a moment before its
    /// listening socket closes) reset, or accepted and then closed without a word, where a
    /// live server says something at once (its challenge, or that it is busy). A probe
    /// that learns neither (no connection or no word within [`PROBE_WAIT`]: a connection
    /// made while the listener closed can be left hanging) is made once more; still unsure,
    /// it listens.
    fn server_listens(&self) -> bool {
        (0..2).find_map(|_| self.probe_listener()).unwrap_or(true)
    }

    /// One probe of [`server_listens`](Self::server_listens): `None` when unsure.
    fn probe_listener(&self) -> Option<bool> {
        use std::io::ErrorKind::{ConnectionRefused, ConnectionReset, NotFound, TimedOut};
        use std::os::fd::AsFd;
        match crate::sys::connect_within(&self.address.sock(), PROBE_WAIT) {
            Err(e) if matches!(e.kind(), ConnectionRefused | ConnectionReset | NotFound) => {
                Some(false)
            }
            Err(e) if e.kind() == TimedOut => None,
            Err(_) => Some(true),
            Ok(fd) => match crate::sys::wait_readable(fd.as_fd(), Some(PROBE_WAIT)) {
                // A first byte: a challenge (or a busy server's word). None: reset.
                Ok(true) => Some(
                    std::io::Read::read(&mut std::fs::File::from(fd), &mut [0u8; 1])
                        .is_ok_and(|n| n > 0),
                ),
                _ => None,
            },
        }
    }

    /// A call whose connection broke, or could not be made: when nothing listens at the
    /// server's address any more, the error says that the manager is gone (an `Io` error
    /// of kind `ConnectionAborted`) instead of a bare end of file, broken pipe or refused
    /// connection, or (a server that died during the handshake) a refused authentication.
    /// A server that still listens (it closed only this connection, or refused our key)
    /// leaves the error as it is.
    fn explain(&self, e: Error) -> Error {
        use std::io::ErrorKind::*;
        let broke = match &e {
            Error::Eof | Error::AuthenticationFailed => true,
            Error::Io(e) => matches!(
                e.kind(),
                BrokenPipe
                    | ConnectionReset
                    | ConnectionAborted
                    | UnexpectedEof
                    | ConnectionRefused
                    | NotFound
            ),
            _ => false,
        };
        if !broke {
            return e;
        }
        if self.server_listens() {
            return e;
        }
        Error::Io(std::io::Error::new(
            ConnectionAborted,
            format!(
                "the manager server at {} is gone: it was shut down or died ({e})",
                self.address
            ),
        ))
    }

    /// The server was shut down: drops the idle connections, and later calls fail with
    /// [`Error::Closed`] instead of trying to connect.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let mut p = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        p.idle.clear();
    }

    /// Like [`call`](Endpoint::call), but only over an idle connection: never connects.
    /// For best-effort notices sent from `Drop`, which must not block on a server that
    /// cannot be reached.
    pub(crate) fn call_if_connected(&self, req: &Request) {
        let conn = {
            let mut p = self.pool.lock().unwrap_or_else(|p| p.into_inner());
            if p.generation != crate::sys::fork_generation() {
                return;
            }
            p.idle.pop()
        };
        if let Some(conn) = conn {
            if conn.round_trip(req).is_ok() {
                self.checkin(conn);
            }
        }
    }
}

/// What every proxy holds: its server and its object's id. Clones share one
/// [`ObjInner`]; the server is told when this process holds the object and when it lets
/// go. Serializes as (address, authkey, id) and reconnects lazily wherever it is
/// deserialized.
#[derive(Clone)]
pub(crate) struct ObjRef {
    inner: Arc<ObjInner>,
}

/// No hold taken.
const NOT_HELD: u64 = u64::MAX;

pub(crate) struct ObjInner {
    ep: Arc<Endpoint>,
    id: u64,
    /// The fork generation in which this process took its hold on the object
    /// ([`NOT_HELD`]: none yet). A forked child must take its own.
    held: AtomicU64,
    /// Set for a proxy received from another process until it takes its hold: the
    /// sender's pin is then released.
    received: std::sync::atomic::AtomicBool,
}

impl fmt::Debug for ObjRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.inner.ep.address, self.inner.id)
    }
}

impl ObjRef {
    /// A proxy whose hold the server already took for this process (create, lookup).
    pub(crate) fn held(ep: Arc<Endpoint>, id: u64) -> ObjRef {
        ObjRef {
            inner: Arc::new(ObjInner {
                ep,
                id,
                held: AtomicU64::new(crate::sys::fork_generation()),
                received: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    pub(crate) fn id(&self) -> u64 {
        self.inner.id
    }

    /// Takes this process's hold on the object before its first use here.
    fn ensure_held(&self) -> Result<()> {
        let g = crate::sys::fork_generation();
        let held = self.inner.held.load(Ordering::Acquire);
        if held == g {
            return Ok(());
        }
        let received = self.inner.received.swap(false, Ordering::AcqRel);
        self.inner
            .ep
            .call(&Request::Acquire(self.inner.id, received))?;
        if self
            .inner
            .held
            .compare_exchange(held, g, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            // Another thread took the hold at the same time: give ours back.
            let _ = self.inner.ep.call(&Request::Release(self.inner.id));
        }
        Ok(())
    }

    pub(crate) fn call(&self, op: super::protocol::Op) -> Result<Reply> {
        self.ensure_held()?;
        let contained = take_contained(&self.inner.ep);
        let r = self.inner.ep.call(&Request::Call(self.inner.id, op))?;
        contain(&self.inner.ep, self.inner.id, contained);
        Ok(r)
    }
}

thread_local! {
    /// Set while a value is encoded to be sent to a manager (see [`encoding_for_server`]).
    static FOR_SERVER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// Proxies encoded in such values, since the last request that took them.
    static CONTAINED: std::cell::RefCell<Vec<(Arc<Endpoint>, u64)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` (which encodes a value for a manager's object) noting the proxies the value
/// holds: once it is stored, the object storing it keeps theirs alive, as a Python
/// container keeps what it refers to.
pub(crate) fn encoding_for_server<R>(f: impl FnOnce() -> R) -> R {
    let prev = FOR_SERVER.with(|c| c.replace(true));
    let r = f();
    FOR_SERVER.with(|c| c.set(prev));
    r
}

/// The ids of the proxies to `ep`'s objects noted by [`encoding_for_server`] (the others
/// are dropped: another server cannot hold them).
pub(crate) fn take_contained(ep: &Arc<Endpoint>) -> Vec<u64> {
    CONTAINED.with(|c| {
        let mut c = c.borrow_mut();
        if c.is_empty() {
            return Vec::new();
        }
        c.drain(..)
            .filter(|(e, _)| Arc::ptr_eq(e, ep))
            .map(|(_, id)| id)
            .collect()
    })
}

/// Tells the server that object `container` now holds the objects `ids`.
pub(crate) fn contain(ep: &Endpoint, container: u64, ids: Vec<u64>) {
    if !ids.is_empty() {
        // If this fails, the pins stay until this process ends: kept too long, never lost.
        let _ = ep.call(&Request::Contain(container, ids));
    }
}

impl Drop for ObjInner {
    fn drop(&mut self) {
        if *self.held.get_mut() == crate::sys::fork_generation() {
            // Best effort and never blocking on a connect: a release that cannot be sent
            // now happens when this process's connections close.
            self.ep.call_if_connected(&Request::Release(self.id));
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(rename = "ManagerProxy")]
struct Wire {
    address: Address,
    authkey: ByteBuf,
    id: u64,
    /// The sender pinned the object for the receiver, who releases that pin once it holds
    /// the object. False for a proxy stored in a manager's object, which holds it instead.
    pinned: bool,
}

impl Serialize for ObjRef {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        // The receiver takes its own hold when it first uses the proxy; until then, the
        // server keeps the object alive for it (while this process lives). If the server
        // cannot be reached, the proxy is useless anyway; it still encodes.
        let _ = self.inner.ep.call(&Request::Pin(self.inner.id));
        let for_server = FOR_SERVER.with(|c| c.get());
        if for_server {
            CONTAINED.with(|c| c.borrow_mut().push((self.inner.ep.clone(), self.inner.id)));
        }
        Wire {
            address: self.inner.ep.address.clone(),
            authkey: ByteBuf::from(self.inner.ep.authkey.clone()),
            id: self.inner.id,
            pinned: !for_server,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for ObjRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let w = Wire::deserialize(d)?;
        Ok(ObjRef {
            inner: Arc::new(ObjInner {
                ep: Endpoint::get(&w.address, &w.authkey),
                id: w.id,
                held: AtomicU64::new(NOT_HELD),
                received: std::sync::atomic::AtomicBool::new(w.pinned),
            }),
        })
    }
}
