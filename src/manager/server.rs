//! The manager's server process: a listening socket, one thread per client connection,
//! and a table of objects. Each operation runs under its object's own mutex, so it is
//! atomic; blocking operations (queue get, lock acquire, event wait) wait on a condition
//! variable in slices and give up when their client hangs up.

use std::collections::{HashMap, VecDeque};
use std::os::fd::AsFd;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use super::protocol::{Create, Kind, Op, Reply, Request, Response, Wait};
use super::ErasedShared;
use crate::connection::{
    accept_raw, authenticate_server, send_busy, Address, Connection, Listener,
};
use crate::ipc::RawConn;
use crate::sys::FnRef;
use crate::{codec, sys, Error, RemoteErrorKind};

/// Most client connections served at once; more are told the server is busy.
const MAX_CONNECTIONS: usize = 4096;
/// Most connections still authenticating: their own small budget, so that peers that
/// never finish (slow, hostile) cannot crowd out clients that do. When it is full, the
/// oldest waiting connection is dropped for the new one: a client that authenticates at
/// once gets in however many idle connections an attacker keeps open.
const MAX_PENDING: usize = 64;
/// How often a blocked operation checks that its client is still there.
const CHECK_PEER: Duration = Duration::from_millis(100);

/// A registered type's constructor: decodes the initial value.
pub(crate) type Constructor =
    fn(Vec<u8>) -> Result<Box<dyn ErasedShared>, (RemoteErrorKind, String)>;

/// A registered type as sent to the server: its name and its constructor, named by offset.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Registration {
    pub(crate) name: String,
    pub(crate) ctor: FnRef<Constructor>,
}

/// Messages on the control pipe between the owning [`Manager`](super::Manager) and its
/// server.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Control {
    /// Server → owner: listening on this address.
    Ready(Address),
    /// Server → owner: could not start.
    Failed(String),
    /// Owner → server: stop now.
    Shutdown,
    /// Server → owner: the initializer panicked (message, location).
    InitPanicked(String, Option<String>),
    /// Server → owner: the initializer returned a failure (why).
    InitFailed(String),
}

/// The server process's arguments.
#[derive(Serialize, Deserialize)]
pub(crate) struct ServerArgs {
    pub(crate) control: Connection<Control>,
    pub(crate) address: Address,
    pub(crate) authkey: Vec<u8>,
    pub(crate) registry: Vec<Registration>,
    pub(crate) max_message: u64,
}

/// The server's arguments with its initializer (Python's `start(initializer, initargs)`).
#[derive(Serialize, Deserialize)]
pub(crate) struct ServerStart<I> {
    pub(crate) args: ServerArgs,
    pub(crate) init: Option<crate::pool::InitSpec<I>>,
}

/// Runs the initializer in the server; the reason it failed, if it did.
fn run_initializer<I, IR: std::process::Termination>(
    init: crate::pool::InitSpec<I>,
) -> Option<Control> {
    let Some(f) = init.target.typed::<fn(I) -> IR>().get() else {
        return Some(Control::Failed(
            "the initializer's type does not match in the manager's server".into(),
        ));
    };
    match crate::start::call_reporting(f, init.args) {
        Ok(0) => None,
        Ok(code) => Some(Control::InitFailed(crate::start::initializer_reported(
            code,
        ))),
        Err(p) => Some(match crate::start::take_last_panic() {
            Some((message, location, _)) => Control::InitPanicked(message, location),
            None => Control::InitPanicked(crate::error::panic_message(&*p), None),
        }),
    }
}

type RemoteErr = (RemoteErrorKind, String);

fn err(kind: RemoteErrorKind, msg: impl Into<String>) -> RemoteErr {
    (kind, msg.into())
}

#[derive(Default)]
struct LockState {
    held: bool,
    /// The session that acquired it, when known.
    holder: Option<u64>,
    /// Released because its holder's process went away: the next acquirer is told.
    abandoned: bool,
}

struct QueueState {
    items: VecDeque<ByteBuf>,
    maxsize: Option<u64>,
    /// Items put and not yet marked done (Python's `unfinished_tasks`).
    unfinished: u64,
}

enum Obj {
    List(Mutex<Vec<ByteBuf>>),
    Dict(Mutex<IndexMap<ByteBuf, ByteBuf>>),
    Namespace(Mutex<IndexMap<String, ByteBuf>>),
    Queue(Mutex<QueueState>, Condvar),
    Value(Mutex<ByteBuf>),
    Lock(Mutex<LockState>, Condvar),
    Event(Mutex<bool>, Condvar),
    Shared(String, Mutex<Box<dyn ErasedShared>>),
    /// A kind of [`objects`](super::objects).
    Object(String, Arc<dyn super::objects::Object>),
}

impl Obj {
    fn kind(&self) -> Kind {
        match self {
            Obj::List(_) => Kind::List,
            Obj::Dict(_) => Kind::Dict,
            Obj::Namespace(_) => Kind::Namespace,
            Obj::Queue(..) => Kind::Queue,
            Obj::Value(_) => Kind::Value,
            Obj::Lock(..) => Kind::Lock,
            Obj::Event(..) => Kind::Event,
            Obj::Shared(n, _) => Kind::Shared(n.clone()),
            Obj::Object(n, _) => Kind::Object(n.clone()),
        }
    }
}

struct State {
    objects: RwLock<HashMap<u64, Arc<Obj>>>,
    names: Mutex<HashMap<String, u64>>,
    next_id: AtomicU64,
    registry: HashMap<String, Constructor>,
    authkey: Vec<u8>,
    max_message: u64,
    connections: AtomicUsize,
    /// Live connections per client session.
    sessions: Mutex<HashMap<u64, usize>>,
    /// Every lock object, to release those whose holder went away.
    locks: Mutex<Vec<(u64, Arc<Obj>)>>,
    /// Who keeps each object alive.
    refs: Mutex<HashMap<u64, Holds>>,
}

/// Who keeps an object alive. It is deleted when nothing does.
#[derive(Default)]
struct Holds {
    /// Proxies held, per client session (process).
    sessions: HashMap<u64, u32>,
    /// Proxies sent to other processes and not yet taken up there, per sending session.
    pinned: HashMap<u64, u32>,
    /// Published names pointing at it.
    names: u32,
    /// Containers (lists, dicts, queues, …) a value holding a proxy to it was stored in,
    /// with how many such values: it lives as long as they do.
    containers: HashMap<u64, u32>,
}

impl Holds {
    fn is_free(&self) -> bool {
        self.sessions.is_empty()
            && self.pinned.is_empty()
            && self.names == 0
            && self.containers.is_empty()
    }
}

/// Connections that never introduced themselves hold objects under this session, which
/// never ends.
const NO_SESSION: u64 = 0;

thread_local! {
    /// Set while a registered type's code runs: its panics are reported to the client,
    /// not printed by the server.
    static IN_USER_CODE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// Where the last caught panic happened.
    static PANIC_AT: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

fn quiet_panics_in_user_code() {
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if IN_USER_CODE.with(|c| c.get()) {
            let at = info.location().map(|l| l.to_string());
            PANIC_AT.with(|p| *p.borrow_mut() = at);
        } else {
            prev(info);
        }
    }));
}

/// Runs a registered type's code, turning a panic into a `Panicked` error.
fn run_user<R>(f: impl FnOnce() -> R) -> Result<R, RemoteErr> {
    IN_USER_CODE.with(|c| c.set(true));
    let r = std::panic::catch_unwind(AssertUnwindSafe(f));
    IN_USER_CODE.with(|c| c.set(false));
    r.map_err(|p| {
        let at = PANIC_AT.with(|a| a.borrow_mut().take());
        let msg = crate::error::panic_message(&*p);
        let msg = match at {
            Some(at) => format!("{msg} (at {at})"),
            None => msg,
        };
        err(RemoteErrorKind::Panicked, msg)
    })
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The server process's entry point.
pub(crate) fn server_main<I, IR: std::process::Termination>(start: ServerStart<I>) {
    let ServerStart { args, init } = start;
    if let Some(init) = init {
        if let Some(failed) = run_initializer::<I, IR>(init) {
            let _ = args.control.send(&failed);
            return;
        }
    }
    let ServerArgs {
        control,
        address,
        authkey,
        registry,
        max_message,
    } = args;
    quiet_panics_in_user_code();
    sys::ignore_sigint();
    let listener = match Listener::bind(&address, None) {
        Ok(l) => l,
        Err(e) => {
            let _ = control.send(&Control::Failed(format!("cannot listen on {address}: {e}")));
            return;
        }
    };
    let mut table = HashMap::new();
    for r in registry {
        match r.ctor.get() {
            Some(f) => {
                table.insert(r.name, f);
            }
            None => {
                let _ = control.send(&Control::Failed(format!(
                    "registered type {} cannot be located in the server's executable",
                    r.name
                )));
                return;
            }
        }
    }
    let state = Arc::new(State {
        objects: RwLock::new(HashMap::new()),
        names: Mutex::new(HashMap::new()),
        next_id: AtomicU64::new(1),
        registry: table,
        authkey,
        max_message,
        connections: AtomicUsize::new(0),
        sessions: Mutex::new(HashMap::new()),
        locks: Mutex::new(Vec::new()),
        refs: Mutex::new(HashMap::new()),
    });
    if control
        .send(&Control::Ready(listener.address().clone()))
        .is_err()
    {
        return;
    }
    let st = state.clone();
    let accepted = std::thread::Builder::new()
        .name("manager-accept".into())
        .spawn(move || accept_loop(listener, st));
    if accepted.is_err() {
        return;
    }
    // Serve until the owner says stop or goes away (its end of the pipe closes).
    let _ = control.recv();
    // The process ends without running destructors: remove a socket file by hand.
    if let Address::Unix(path) = &address {
        let _ = std::fs::remove_file(path);
    }
}

/// Connections still authenticating, oldest first. Each one's handshake has its own
/// deadline (the connection's, 5 s for the whole exchange, which a peer
/// dribbling bytes cannot stretch); this list only bounds how many wait at once.
#[derive(Default)]
struct Pending {
    next: u64,
    conns: std::collections::VecDeque<(u64, Arc<RawConn>)>,
}

impl Pending {
    /// Ends a connection that may not finish its handshake: tells its peer the server is
    /// busy and shuts it down (its thread, blocked reading, wakes up and gives up).
    fn cut(conn: &RawConn) {
        send_busy(conn);
        sys::shutdown_both(conn);
    }

    /// Adds a connection (cutting the oldest if the budget is full); returns its id.
    fn admit(&mut self, conn: Arc<RawConn>) -> u64 {
        if self.conns.len() >= MAX_PENDING {
            if let Some((_, oldest)) = self.conns.pop_front() {
                Pending::cut(&oldest);
            }
        }
        self.next += 1;
        self.conns.push_back((self.next, conn));
        self.next
    }

    /// Takes connection `id` out once it has authenticated; false if it was cut meanwhile.
    fn settle(&mut self, id: u64) -> bool {
        match self.conns.iter().position(|(i, _)| *i == id) {
            Some(k) => {
                self.conns.remove(k);
                true
            }
            None => false,
        }
    }
}

fn accept_loop(listener: Listener, state: Arc<State>) {
    let pending = Arc::new(Mutex::new(Pending::default()));
    loop {
        match sys::wait_readable(listener.as_fd(), None) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(_) => {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        }
        let conn = match accept_raw(&listener) {
            Ok(c) => c,
            Err(_) => {
                // Out of descriptors or similar: back off instead of spinning.
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        if state.connections.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            state.connections.fetch_sub(1, Ordering::SeqCst);
            send_busy(&conn);
            continue; // dropping closes it
        }
        let conn = Arc::new(conn);
        let id = lock(&pending).admit(conn.clone());
        let st = state.clone();
        let pend = pending.clone();
        let spawned = std::thread::Builder::new()
            .name("manager-conn".into())
            .spawn(move || {
                serve_connection(conn, &st, || lock(&pend).settle(id));
                st.connections.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            state.connections.fetch_sub(1, Ordering::SeqCst);
            lock(&pending).settle(id);
        }
    }
}

/// Authenticates one client, then answers its requests until it hangs up or sends
/// something that is not a frame. Only this connection is affected by what it sends.
fn serve_connection(conn: Arc<RawConn>, state: &State, settle: impl FnOnce() -> bool) {
    conn.set_spin(false);
    let authenticated = authenticate_server(&conn, &state.authkey);
    // Out of the budget of waiting connections either way; cut meanwhile: give up.
    let kept = settle();
    if let Err(e) = authenticated {
        if matches!(e, Error::AuthenticationFailed) {
            crate::log::log_event!(
                Warning,
                "manager refused a connection: wrong authkey or not a multiproc client"
            );
        } else {
            crate::log::log_event!(
                Debug,
                "manager dropped a connection during authentication: {e}"
            );
        }
        return;
    }
    if !kept {
        return;
    }
    crate::log::log_event!(Debug, "manager accepted a connection");
    conn.set_max_frame(state.max_message);
    let mut session = None;
    if let Some(lane) = serve_requests(&conn, state, &mut session) {
        // The socket is not needed any more: the client talks over its lane.
        drop(conn);
        serve_lane(&lane, state, session);
    }
    if let Some(s) = session {
        end_session(state, s);
    }
}

fn end_session(state: &State, s: u64) {
    {
        let mut sessions = lock(&state.sessions);
        match sessions.get_mut(&s) {
            Some(n) if *n > 1 => {
                *n -= 1;
                return;
            }
            _ => {
                sessions.remove(&s);
            }
        }
    }
    // The client process has no connection left: it died (or dropped every proxy).
    // Locks it holds are released, and their next acquirer learns it.
    let locks = lock(&state.locks).clone();
    for (_, l) in locks {
        if let Obj::Lock(m, cv) = &*l {
            let mut g = lock(m);
            if g.held && g.holder == Some(s) {
                g.held = false;
                g.holder = None;
                g.abandoned = true;
                cv.notify_all();
            }
        }
    }
    // Objects give back what it held.
    let objects: Vec<Arc<Obj>> = state
        .objects
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .values()
        .filter(|o| matches!(***o, Obj::Object(..)))
        .cloned()
        .collect();
    for o in objects {
        if let Obj::Object(_, o) = &*o {
            o.session_ended(s);
        }
    }
    // Its proxies are gone with it.
    let freed: Vec<u64> = {
        let mut refs = lock(&state.refs);
        let mut freed = Vec::new();
        for (id, h) in refs.iter_mut() {
            h.sessions.remove(&s);
            h.pinned.remove(&s);
            if h.is_free() {
                freed.push(*id);
            }
        }
        for id in &freed {
            refs.remove(id);
        }
        freed
    };
    delete(state, &freed);
}

/// Removes objects nothing holds any more.
fn delete(state: &State, ids: &[u64]) {
    let mut ids = ids.to_vec();
    // Objects held only by deleted containers go with them, and so on down.
    while !ids.is_empty() {
        {
            let mut objects = state.objects.write().unwrap_or_else(|p| p.into_inner());
            for id in &ids {
                objects.remove(id);
            }
        }
        lock(&state.locks).retain(|(id, _)| !ids.contains(id));
        lock(&state.names).retain(|_, id| !ids.contains(id));
        let mut refs = lock(&state.refs);
        let mut next = Vec::new();
        for (id, h) in refs.iter_mut() {
            let before = h.containers.len();
            h.containers.retain(|c, _| !ids.contains(c));
            if h.containers.len() != before && h.is_free() {
                next.push(*id);
            }
        }
        for id in &next {
            refs.remove(id);
        }
        ids = next;
    }
}

/// Changes who holds object `id`; deletes it when nothing does. False: no such object.
fn update_holds(state: &State, id: u64, f: impl FnOnce(&mut Holds)) -> bool {
    let free = {
        let mut refs = lock(&state.refs);
        let Some(h) = refs.get_mut(&id) else {
            return false;
        };
        f(h);
        let free = h.is_free();
        if free {
            refs.remove(&id);
        }
        free
    };
    if free {
        delete(state, &[id]);
    }
    true
}

fn not_found(id: u64) -> Response {
    Err(err(
        RemoteErrorKind::NotFound,
        format!("no object with id {id} (it was freed, or never existed)"),
    ))
}

/// The channel a connection's requests and replies travel on: the socket itself, or the
/// channel with lanes the client handed over.
pub(crate) trait Wire {
    fn reply(&self, r: &Response) -> crate::Result<()>;
    fn peer_gone(&self) -> bool;
}

impl Wire for RawConn {
    fn reply(&self, r: &Response) -> crate::Result<()> {
        self.send_value(r)
    }
    fn peer_gone(&self) -> bool {
        sys::peer_closed(self.as_fd())
    }
}

/// Serves requests on the socket. Returns the client's channel with lanes if it moves to it.
fn serve_requests(conn: &RawConn, state: &State, session: &mut Option<u64>) -> Option<RawConn> {
    loop {
        let req = conn.recv_with(|bytes, fds| Ok((codec::decode::<Request>(bytes), fds)));
        let response = match req {
            Ok((Ok(Request::Hello(s)), _)) => {
                if session.is_none() {
                    *lock(&state.sessions).entry(s).or_insert(0) += 1;
                    *session = Some(s);
                }
                Some(Ok(Reply::Unit))
            }
            Ok((Ok(Request::UseLane), fds)) => {
                let mut fds = fds.into_iter();
                let lane = match (fds.next(), fds.next(), fds.next()) {
                    (Some(sock), Some(lane), None) => {
                        RawConn::from_lane_fds(sock, lane).map_err(|e| format!("UseLane: {e}"))
                    }
                    _ => Err("UseLane needs exactly two descriptors".to_string()),
                };
                match lane {
                    Ok(lane) => {
                        lane.set_max_frame(state.max_message);
                        let ok: Response = Ok(Reply::Unit);
                        if conn.send_value(&ok).is_err() {
                            return None;
                        }
                        return Some(lane);
                    }
                    Err(m) => Some(Err(err(RemoteErrorKind::ProtocolError, m))),
                }
            }
            Ok((Ok(req), _)) => handle(state, conn, req, *session),
            Ok((Err(e), _)) => Some(Err(err(
                RemoteErrorKind::ProtocolError,
                format!("request not understood: {e}"),
            ))),
            // End of stream, garbage, an oversized frame, I/O error: drop this client.
            Err(_) => return None,
        };
        if let Some(response) = response {
            if conn.send_value(&response).is_err() {
                return None;
            }
        }
    }
}

/// Serves a client over its channel with lanes until it closes it or sends garbage.
fn serve_lane(lane: &RawConn, state: &State, session: Option<u64>) {
    loop {
        let response = match lane.recv_value::<Request>() {
            Ok(Request::Hello(_)) | Ok(Request::UseLane) => Some(Err(err(
                RemoteErrorKind::ProtocolError,
                "already introduced",
            ))),
            Ok(req) => handle(state, lane, req, session),
            Err(Error::Codec(msg)) if !lane.is_broken() => Some(Err(err(
                RemoteErrorKind::ProtocolError,
                format!("request not understood: {msg}"),
            ))),
            Err(_) => return,
        };
        if let Some(response) = response {
            if lane.send_value(&response).is_err() {
                return;
            }
        }
    }
}

/// Answers one request. `None`: the reply was already sent (blocking operations send
/// their own, to undo their effect when the client is gone).
fn handle(state: &State, conn: &dyn Wire, req: Request, session: Option<u64>) -> Option<Response> {
    let who = session.unwrap_or(NO_SESSION);
    Some(match req {
        Request::Acquire(id, received) => {
            if update_holds(state, id, |h| {
                *h.sessions.entry(who).or_insert(0) += 1;
                if received {
                    // The receiver holds it now: one sender's pin is done.
                    let sender = h.pinned.keys().next().copied();
                    if let Some(s) = sender {
                        if let Some(n) = h.pinned.get_mut(&s) {
                            *n -= 1;
                            if *n == 0 {
                                h.pinned.remove(&s);
                            }
                        }
                    }
                }
            }) {
                Ok(Reply::Unit)
            } else {
                not_found(id)
            }
        }
        Request::Release(id) => {
            update_holds(state, id, |h| {
                if let Some(n) = h.sessions.get_mut(&who) {
                    *n -= 1;
                    if *n == 0 {
                        h.sessions.remove(&who);
                    }
                }
            });
            Ok(Reply::Unit)
        }
        Request::Pin(id) => {
            if update_holds(state, id, |h| *h.pinned.entry(who).or_insert(0) += 1) {
                Ok(Reply::Unit)
            } else {
                not_found(id)
            }
        }
        Request::Contain(container, ids) => {
            for id in ids {
                // The container's hold replaces one of this process's pins.
                update_holds(state, id, |h| {
                    *h.containers.entry(container).or_insert(0) += 1;
                    if let Some(n) = h.pinned.get_mut(&who) {
                        *n -= 1;
                        if *n == 0 {
                            h.pinned.remove(&who);
                        }
                    }
                });
            }
            Ok(Reply::Unit)
        }
        Request::ObjectCount => Ok(Reply::Len(
            state
                .objects
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .len() as u64,
        )),
        Request::Hello(_) | Request::UseLane => Err(err(
            RemoteErrorKind::ProtocolError,
            "unexpected introduction",
        )),
        Request::Create(c) => create(state, c, who),
        Request::Call(id, op) => {
            let obj = state
                .objects
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .get(&id)
                .cloned();
            let Some(obj) = obj else {
                return Some(Err(err(
                    RemoteErrorKind::NotFound,
                    format!("no object with id {id}"),
                )));
            };
            match (&*obj, op) {
                (Obj::Queue(m, cv), Op::QueueGet(wait)) => {
                    queue_get(m, cv, conn, wait);
                    return None;
                }
                (Obj::Lock(m, cv), Op::LockAcquire(wait)) => {
                    lock_acquire(m, cv, conn, wait, session);
                    return None;
                }
                (Obj::Object(_, o), Op::Object(req)) => {
                    let cx = super::objects::Cx { conn, session: who };
                    o.call(&req, &cx).map(|b| Reply::Bytes(ByteBuf::from(b)))
                }
                (_, op) => call(&obj, conn, op),
            }
        }
        Request::Publish(name, id) => {
            if !update_holds(state, id, |h| h.names += 1) {
                return Some(not_found(id));
            }
            let previous = lock(&state.names).insert(name, id);
            if let Some(old) = previous {
                update_holds(state, old, |h| h.names = h.names.saturating_sub(1));
            }
            Ok(Reply::Unit)
        }
        Request::Lookup(name) => {
            let id = lock(&state.names).get(&name).copied();
            let obj = id.and_then(|id| {
                state
                    .objects
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&id)
                    .map(|o| (id, o.kind()))
            });
            match obj {
                Some((id, kind))
                    if update_holds(state, id, |h| *h.sessions.entry(who).or_insert(0) += 1) =>
                {
                    Ok(Reply::Object(id, kind))
                }
                _ => Err(err(
                    RemoteErrorKind::NotFound,
                    format!("no object named {name:?}"),
                )),
            }
        }
    })
}

/// Takes the first item, waiting as allowed, and sends it; if the client is gone by then,
/// the item goes back to the front of the queue.
fn queue_get(m: &Mutex<QueueState>, cv: &Condvar, conn: &dyn Wire, wait: Wait) {
    let (mut g, ok) = wait_on(m, cv, conn, wait, |q| !q.items.is_empty());
    let item = if ok { g.items.pop_front() } else { None };
    if item.is_some() {
        cv.notify_all();
    }
    drop(g);
    let reply: Response = Ok(Reply::MaybeBytes(item));
    if conn.reply(&reply).is_err() {
        if let Ok(Reply::MaybeBytes(Some(v))) = reply {
            lock(m).items.push_front(v);
            cv.notify_all();
        }
    }
}

/// Acquires the lock, waiting as allowed, and says so; if the client is gone by then, the
/// lock is released again.
fn lock_acquire(
    m: &Mutex<LockState>,
    cv: &Condvar,
    conn: &dyn Wire,
    wait: Wait,
    session: Option<u64>,
) {
    let (mut g, ok) = wait_on(m, cv, conn, wait, |l| !l.held);
    let mut reply: Response = Ok(Reply::Bool(ok));
    if ok {
        g.held = true;
        g.holder = session;
        if std::mem::take(&mut g.abandoned) {
            reply = Ok(Reply::OwnerDied);
        }
    }
    drop(g);
    if conn.reply(&reply).is_err() && ok {
        let mut g = lock(m);
        g.held = false;
        g.holder = None;
        cv.notify_all();
    }
}

fn create(state: &State, c: Create, who: u64) -> Response {
    let obj = match c {
        Create::List(items) => Obj::List(Mutex::new(items)),
        Create::Dict(pairs) => Obj::Dict(Mutex::new(pairs.into_iter().collect())),
        Create::Namespace => Obj::Namespace(Mutex::new(IndexMap::new())),
        Create::Queue(maxsize) => Obj::Queue(
            Mutex::new(QueueState {
                items: VecDeque::new(),
                maxsize: maxsize.filter(|&m| m > 0),
                unfinished: 0,
            }),
            Condvar::new(),
        ),
        Create::Value(v) => Obj::Value(Mutex::new(v)),
        Create::Lock => Obj::Lock(Mutex::new(LockState::default()), Condvar::new()),
        Create::Event => Obj::Event(Mutex::new(false), Condvar::new()),
        Create::Shared(name, init) => {
            let Some(ctor) = state.registry.get(&name) else {
                return Err(err(
                    RemoteErrorKind::TypeError,
                    format!("type {name} is not registered with this manager"),
                ));
            };
            let made = run_user(move || ctor(init.into_vec()))?;
            Obj::Shared(name, Mutex::new(made?))
        }
        Create::Object(name, init) => match super::objects::construct(&name, &init) {
            Some(made) => Obj::Object(name, made?),
            None => {
                return Err(err(
                    RemoteErrorKind::TypeError,
                    format!("this manager has no object kind {name}"),
                ))
            }
        },
    };
    let kind = obj.kind();
    let id = state.next_id.fetch_add(1, Ordering::Relaxed);
    let obj = Arc::new(obj);
    if kind == Kind::Lock {
        lock(&state.locks).push((id, obj.clone()));
    }
    // The creator holds it.
    let mut holds = Holds::default();
    holds.sessions.insert(who, 1);
    lock(&state.refs).insert(id, holds);
    state
        .objects
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .insert(id, obj);
    Ok(Reply::Object(id, kind))
}

/// A list position as Python reads it: negative counts from the end.
fn index(i: i64, len: usize) -> Result<usize, RemoteErr> {
    // Its text is turned back into the error by the client (`Error::from_remote`).
    super::proxy::resolve_index(i, len).map_err(|e| err(RemoteErrorKind::IndexError, e.to_string()))
}

/// A slice `start..end` clamped to a list of `len` values, as Python's slices are.
fn slice(start: u64, end: u64, len: usize) -> std::ops::Range<usize> {
    let end = end.min(len as u64) as usize;
    let start = (start.min(len as u64) as usize).min(end);
    start..end
}

fn wrong_kind(obj: &Obj, op: &Op) -> RemoteErr {
    let name = format!("{op:?}");
    let name = name.split('(').next().unwrap_or("?").to_string();
    err(
        RemoteErrorKind::TypeError,
        format!("operation {name} does not apply to a {:?}", obj.kind()),
    )
}

/// Waits on `cv` until `ready(&guard)` holds, the wait runs out, or the client hangs up.
/// Returns the guard and whether it is ready — never for a client that hung up (killed
/// while its request was on the way or while it waited): what the caller would take for
/// it (an item, a lock) stays for the others. A channel with lanes would take the reply
/// all the same (its ring asks the kernel about its reader only now and then), and the
/// item would be lost with the dead client.
pub(crate) fn wait_on<'a, T>(
    m: &'a Mutex<T>,
    cv: &Condvar,
    conn: &dyn Wire,
    wait: Wait,
    ready: impl Fn(&T) -> bool,
) -> (MutexGuard<'a, T>, bool) {
    let mut g = lock(m);
    if ready(&g) {
        return (g, !conn.peer_gone());
    }
    let deadline = match wait {
        Wait::No => return (g, false),
        Wait::Forever => None,
        // A deadline too far to represent is no deadline.
        Wait::For(d) => crate::sys::deadline(d),
    };
    loop {
        let slice = match deadline {
            None => CHECK_PEER,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return (g, false);
                }
                left.min(CHECK_PEER)
            }
        };
        g = match cv.wait_timeout(g, slice) {
            Ok((g, _)) => g,
            Err(p) => p.into_inner().0,
        };
        if ready(&g) {
            return (g, !conn.peer_gone());
        }
        if conn.peer_gone() {
            return (g, false);
        }
    }
}

fn call(obj: &Obj, conn: &dyn Wire, op: Op) -> Response {
    use RemoteErrorKind::*;
    match (obj, op) {
        (Obj::List(l), op) => {
            let mut l = lock(l);
            match op {
                Op::ListPush(v) => {
                    l.push(v);
                    Ok(Reply::Unit)
                }
                Op::ListGet(i) => Ok(Reply::Bytes(l[index(i, l.len())?].clone())),
                Op::ListSet(i, v) => {
                    let i = index(i, l.len())?;
                    l[i] = v;
                    Ok(Reply::Unit)
                }
                Op::ListLen => Ok(Reply::Len(l.len() as u64)),
                Op::ListPop => match l.pop() {
                    Some(v) => Ok(Reply::Bytes(v)),
                    None => Err(err(IndexError, "pop from empty list")),
                },
                Op::ListRemove(i) => {
                    let i = index(i, l.len())?;
                    Ok(Reply::Bytes(l.remove(i)))
                }
                Op::ListExtend(vs) => {
                    l.extend(vs);
                    Ok(Reply::Unit)
                }
                Op::ListInsert(i, v) => {
                    // Python's `list.insert`: negative counts from the end, and a position
                    // past either end is clamped to it.
                    let len = l.len() as i64;
                    let at = if i < 0 { (len + i).max(0) } else { i.min(len) };
                    l.insert(at as usize, v);
                    Ok(Reply::Unit)
                }
                Op::ListClear => {
                    l.clear();
                    Ok(Reply::Unit)
                }
                Op::ListToVec => Ok(Reply::List(l.clone())),
                Op::ListCount(v) => Ok(Reply::Len(l.iter().filter(|x| **x == v).count() as u64)),
                Op::ListIndex(v, start, end) => {
                    let r = slice(start, end, l.len());
                    match l[r.clone()].iter().position(|x| *x == v) {
                        Some(i) => Ok(Reply::Len((r.start + i) as u64)),
                        None => Err(err(ValueError, "value is not in list")),
                    }
                }
                Op::ListRemoveValue(v) => match l.iter().position(|x| *x == v) {
                    Some(i) => {
                        l.remove(i);
                        Ok(Reply::Unit)
                    }
                    None => Err(err(ValueError, "list.remove(x): x not in list")),
                },
                Op::ListReverse => {
                    l.reverse();
                    Ok(Reply::Unit)
                }
                Op::ListSlice(start, end) => {
                    let r = slice(start, end, l.len());
                    Ok(Reply::List(l[r].to_vec()))
                }
                Op::ListSetSlice(start, end, vs) => {
                    let r = slice(start, end, l.len());
                    l.splice(r, vs);
                    Ok(Reply::Unit)
                }
                Op::ListDelSlice(start, end) => {
                    let r = slice(start, end, l.len());
                    l.drain(r);
                    Ok(Reply::Unit)
                }
                Op::ListSwapIf(old, new) => {
                    let same = *l == old;
                    if same {
                        *l = new;
                    }
                    Ok(Reply::Bool(same))
                }
                op => Err(wrong_kind(obj, &op)),
            }
        }
        (Obj::Dict(d), op) => {
            let mut d = lock(d);
            match op {
                Op::DictInsert(k, v) => Ok(Reply::MaybeBytes(d.insert(k, v))),
                Op::DictGet(k) => Ok(Reply::MaybeBytes(d.get(&k).cloned())),
                Op::DictRemove(k) => Ok(Reply::MaybeBytes(d.shift_remove(&k))),
                Op::DictContains(k) => Ok(Reply::Bool(d.contains_key(&k))),
                Op::DictLen => Ok(Reply::Len(d.len() as u64)),
                Op::DictKeys => Ok(Reply::List(d.keys().cloned().collect())),
                Op::DictValues => Ok(Reply::List(d.values().cloned().collect())),
                Op::DictItems => Ok(Reply::Pairs(
                    d.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                )),
                Op::DictClear => {
                    d.clear();
                    Ok(Reply::Unit)
                }
                Op::DictUpdate(pairs) => {
                    d.extend(pairs);
                    Ok(Reply::Unit)
                }
                Op::DictSetDefault(k, v) => Ok(Reply::Bytes(d.entry(k).or_insert(v).clone())),
                Op::DictPopItem => Ok(Reply::Pairs(d.pop().into_iter().collect())),
                Op::DictItemAt(i) => Ok(Reply::Pairs(
                    usize::try_from(i)
                        .ok()
                        .and_then(|i| d.get_index(i))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .into_iter()
                        .collect(),
                )),
                op => Err(wrong_kind(obj, &op)),
            }
        }
        (Obj::Namespace(n), op) => {
            let mut n = lock(n);
            match op {
                Op::NsSet(k, v) => {
                    n.insert(k, v);
                    Ok(Reply::Unit)
                }
                Op::NsGet(k) => match n.get(&k) {
                    Some(v) => Ok(Reply::Bytes(v.clone())),
                    None => Err(err(KeyError, format!("namespace has no attribute {k:?}"))),
                },
                Op::NsRemove(k) => match n.shift_remove(&k) {
                    Some(_) => Ok(Reply::Unit),
                    None => Err(err(KeyError, format!("namespace has no attribute {k:?}"))),
                },
                Op::NsNames => Ok(Reply::Names(n.keys().cloned().collect())),
                op => Err(wrong_kind(obj, &op)),
            }
        }
        (Obj::Queue(m, cv), op) => match op {
            Op::QueuePut(v, wait) => {
                let (mut g, ok) = wait_on(m, cv, conn, wait, |q| {
                    q.maxsize.is_none_or(|max| (q.items.len() as u64) < max)
                });
                if ok {
                    g.items.push_back(v);
                    g.unfinished += 1;
                    cv.notify_all();
                }
                Ok(Reply::Bool(ok))
            }
            Op::QueueSize => Ok(Reply::Len(lock(m).items.len() as u64)),
            Op::QueueTaskDone => {
                let mut g = lock(m);
                if g.unfinished == 0 {
                    return Err(err(ValueError, "task_done() called too many times"));
                }
                g.unfinished -= 1;
                if g.unfinished == 0 {
                    cv.notify_all();
                }
                Ok(Reply::Unit)
            }
            Op::QueueJoin(wait) => {
                let (_g, ok) = wait_on(m, cv, conn, wait, |q| q.unfinished == 0);
                Ok(Reply::Bool(ok))
            }
            Op::QueueUnfinished => Ok(Reply::Len(lock(m).unfinished)),
            Op::QueueFull => {
                let g = lock(m);
                Ok(Reply::Bool(
                    g.maxsize.is_some_and(|max| g.items.len() as u64 >= max),
                ))
            }
            op => Err(wrong_kind(obj, &op)),
        },
        (Obj::Value(v), op) => {
            let mut v = lock(v);
            match op {
                Op::ValueGet => Ok(Reply::Bytes(v.clone())),
                Op::ValueSet(n) => {
                    *v = n;
                    Ok(Reply::Unit)
                }
                Op::ValueSwap(n) => Ok(Reply::Bytes(std::mem::replace(&mut *v, n))),
                op => Err(wrong_kind(obj, &op)),
            }
        }
        (Obj::Lock(m, cv), op) => match op {
            Op::LockRelease => {
                let mut g = lock(m);
                if !g.held {
                    // Its holder died and the server released it: this release stands
                    // for that one, so that it succeeds whether or not the server has
                    // seen the death yet (and the next acquirer is not told).
                    if std::mem::take(&mut g.abandoned) {
                        return Ok(Reply::Unit);
                    }
                    return Err(err(ValueError, "release of an unlocked lock"));
                }
                g.held = false;
                g.holder = None;
                cv.notify_all();
                Ok(Reply::Unit)
            }
            Op::LockLocked => Ok(Reply::Bool(lock(m).held)),
            op => Err(wrong_kind(obj, &op)),
        },
        (Obj::Event(m, cv), op) => match op {
            Op::EventSet => {
                *lock(m) = true;
                cv.notify_all();
                Ok(Reply::Unit)
            }
            Op::EventClear => {
                *lock(m) = false;
                Ok(Reply::Unit)
            }
            Op::EventIsSet => Ok(Reply::Bool(*lock(m))),
            Op::EventWait(wait) => {
                let (_g, ok) = wait_on(m, cv, conn, wait, |set| *set);
                Ok(Reply::Bool(ok))
            }
            op => Err(wrong_kind(obj, &op)),
        },
        (Obj::Shared(_, s), op) => {
            let mut s = lock(s);
            match op {
                Op::SharedCall(req) => {
                    run_user(|| s.call(&req))?.map(|b| Reply::Bytes(ByteBuf::from(b)))
                }
                Op::SharedGet => run_user(|| s.snapshot())?.map(|b| Reply::Bytes(ByteBuf::from(b))),
                op => Err(wrong_kind(obj, &op)),
            }
        }
        // Requests to these are answered in `handle`, which knows the session.
        (Obj::Object(..), op) => Err(wrong_kind(obj, &op)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client killed while its request was on the way: its channel with lanes still takes
    /// the reply (a ring accepts bytes whether or not anyone will read them, and asks the
    /// kernel about its reader only now and then), but the kernel says it hung up.
    struct KilledClient;

    impl Wire for KilledClient {
        fn reply(&self, _: &Response) -> crate::Result<()> {
            Ok(())
        }
        fn peer_gone(&self) -> bool {
            true
        }
    }

    #[test]
    fn blocking_operations_of_a_killed_client_take_nothing() {
        let q = Mutex::new(QueueState {
            items: VecDeque::from([ByteBuf::from(vec![1u8])]),
            maxsize: None,
            unfinished: 1,
        });
        let cv = Condvar::new();
        queue_get(&q, &cv, &KilledClient, Wait::Forever);
        assert_eq!(lock(&q).items.len(), 1, "the item went to a dead client");
        let l = Mutex::new(LockState::default());
        lock_acquire(&l, &cv, &KilledClient, Wait::Forever, None);
        assert!(!lock(&l).held, "the lock went to a dead client");
    }
}
