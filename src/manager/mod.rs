//! Managers: a server process that holds shared objects (lists, dicts, sets, namespaces,
//! queues and joinable queues, values, arrays, locks, re-entrant locks, semaphores,
//! conditions, events, barriers, and your own registered types), used from any process
//! through proxies — Python's `multiprocessing.Manager()` and `BaseManager`.
//!
//! [`Manager::start`] starts the server as a child process listening on a Unix socket
//! (in Linux's abstract namespace: no file is left behind). A client process connects,
//! proves it knows the manager's authkey, and then hands the server its end of a fresh
//! channel with shared-memory lanes (as under [`pipe`](crate::pipe)), over which its
//! requests travel: a request and its reply usually cost no system call. Each proxy
//! method is one request/reply round trip over a pooled connection, applied atomically in
//! the server (one thread per client connection, one mutex per object); errors raised
//! there (a missing key, say) come back as [`Error::Remote`] (an index out of range as
//! [`Error::IndexOutOfRange`], as everywhere) and the server keeps serving. Proxies are
//! `Clone` and serializable: put one in a [`Process`]'s arguments, a pool task or a pipe
//! message, and it reconnects in the receiving process on first use.
//!
//! ```
//! multiproc::init();
//! use multiproc::manager::ListProxy;
//!
//! fn insert_record((record, records): ((String, u32), ListProxy<(String, u32)>)) {
//!     records.push(record).unwrap();
//! }
//!
//! let manager = multiproc::Manager::start().unwrap();
//! let records = manager.list(vec![("Sam".to_string(), 10), ("Adam".to_string(), 9)]).unwrap();
//! multiproc::spawn(insert_record, (("Jeff".to_string(), 8), records.clone()))
//!     .unwrap()
//!     .join()
//!     .unwrap();
//! assert_eq!(records.len().unwrap(), 3);
//! assert_eq!(records.get(2).unwrap(), ("Jeff".to_string(), 8));
//! ```
//!
//! **Network mode** ([`Manager::serve`], [`Manager::connect`]) listens on TCP instead, like
//! `BaseManager(address, authkey)`. Every connection, local or remote, starts with a mutual
//! HMAC-SHA256 challenge on the manager's authkey: a peer that does not know the key gets
//! [`Error::AuthenticationFailed`] and reaches nothing. A peer that sends garbage or an
//! oversized frame loses only its own connection. Objects can be given names
//! ([`Manager::publish`]) so that clients find them ([`Manager::lookup`]).
//!
//! Lifetime: an object lives while some process holds a proxy to it, or a published name
//! points at it (see [`Manager::object_count`]). A proxy sent to another process (in a
//! process's arguments, through a pipe or a queue) keeps the object alive until the
//! receiver first uses it — or until the sender dies — so the receiver finds it even if
//! the sender dropped its own proxy at once. A proxy stored in a manager's object (a queue
//! in a list, a dict in a dict) is held by that object: what it points at lives as long
//! as the container does, whoever reads it. (Unlike Python, taking the value out of the
//! container again does not end that hold: it ends with the container.) When a process
//! dies, its holds go with it. The server stops when its [`Manager`] is dropped or shut down, or when the
//! process that started it dies. Once it is gone (killed, say), every call in every
//! process fails with an [`Error::Io`] of kind `ConnectionAborted` that says the manager
//! server is gone — a `get` blocked in it too — except in the process that shut it down,
//! where calls give [`Error::Closed`].
//!
//! A serialized proxy contains the server's address and authkey, as in Python: send it
//! only to processes you trust with the key.

mod client;
mod objects;
mod protocol;
mod proxy;
pub(crate) use proxy::resolve_index;
mod server;

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::connection::{Address, ToAddress};
use crate::sys::FnRef;
use crate::{Error, Process, Result, StartMethod};
use client::{Endpoint, ObjRef};
use protocol::{Create, Kind, Reply, Request};
use server::{Constructor, Control, Registration, ServerArgs, ServerStart};

pub use objects::array::ArrayProxy;
pub use objects::barrier::BarrierProxy;
pub use objects::condition::ConditionProxy;
pub use objects::joinable_queue::JoinableQueueProxy;
pub use objects::rlock::RLockProxy;
pub use objects::semaphore::{BoundedSemaphoreProxy, SemaphoreProxy};
pub use objects::set::SetProxy;
pub(crate) use proxy::ErasedShared;
pub use proxy::{
    DictIter, DictProxy, EventProxy, ListIndex, ListIter, ListProxy, LockProxy, LockProxyGuard,
    NamespaceProxy, QueueProxy, Shared, SharedProxy, ValueProxy,
};

/// Largest request or reply the server accepts by default (1 GiB); see
/// [`ManagerBuilder::max_message_size`].
pub const DEFAULT_MAX_MESSAGE: u64 = 1 << 30;
/// How long [`Manager::start`] waits for the server to report that it listens.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long shutdown waits for the server to exit before killing it.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

struct ServerProcess {
    process: Process,
    control: crate::Connection<Control>,
}

/// A handle to a manager's server: creates shared objects and hands out proxies to them.
///
/// The manager that [`start`](Manager::start)ed (or [`serve`](Manager::serve)d) the server
/// owns it: dropping that handle, or calling [`shutdown`](Manager::shutdown), stops the
/// server process and waits for it. A handle from [`connect`](Manager::connect) only uses
/// the server.
///
/// ```
/// multiproc::init();
/// let manager = multiproc::Manager::start().unwrap();
/// let d = manager.dict::<String, i32>().unwrap();
/// d.insert("x".into(), 1).unwrap();
/// manager.shutdown().unwrap();
/// assert!(matches!(d.len(), Err(multiproc::Error::Closed))); // the server is gone
/// ```
pub struct Manager {
    ep: Arc<Endpoint>,
    server: Mutex<Option<ServerProcess>>,
    /// Set once an owner has stopped its server.
    stopped: std::sync::atomic::AtomicBool,
}

impl fmt::Debug for Manager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let owner = self.server.lock().map(|s| s.is_some()).unwrap_or(false);
        f.debug_struct("Manager")
            .field("address", &self.ep.address)
            .field("owner", &owner)
            .finish()
    }
}

/// Options for a manager's server: address, authkey, registered types, limits.
///
/// ```
/// multiproc::init();
/// let m = multiproc::Manager::builder()
///     .address("127.0.0.1:0")
///     .authkey(b"secret")
///     .max_message_size(1 << 20)
///     .start()
///     .unwrap();
/// assert!(matches!(m.address(), multiproc::connection::Address::Tcp(_)));
/// ```
pub struct ManagerBuilder {
    launch: Launch,
    address: Option<Result<Address>>,
    authkey: Option<Vec<u8>>,
    registry: Vec<Registration>,
    max_message: u64,
    start_method: Option<StartMethod>,
    /// The first invalid setting: [`start`](ManagerBuilder::start) refuses it.
    invalid: Option<String>,
}

/// Makes the server's process from its arguments (with the initializer, if any).
type Launch = Arc<dyn Fn(ServerArgs) -> Process + Send + Sync>;

impl fmt::Debug for ManagerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManagerBuilder")
            .field("address", &self.address)
            .field("max_message_size", &self.max_message)
            .field("start_method", &self.start_method)
            .finish()
    }
}

impl Default for ManagerBuilder {
    fn default() -> Self {
        ManagerBuilder {
            launch: Arc::new(|args| {
                Process::new(
                    server::server_main::<(), ()>,
                    ServerStart { args, init: None },
                )
            }),
            address: None,
            authkey: None,
            registry: Vec::new(),
            max_message: DEFAULT_MAX_MESSAGE,
            start_method: None,
            invalid: None,
        }
    }
}

impl ManagerBuilder {
    /// Where the server listens: `"host:port"` for TCP (port 0 picks one), `/path` for a
    /// Unix socket file, `@name` for an abstract Unix socket. Default: a fresh abstract
    /// Unix socket.
    ///
    /// ```
    /// multiproc::init();
    /// let m = multiproc::Manager::builder().address("@mp-doc-builder").start().unwrap();
    /// assert_eq!(m.address().to_string(), "@mp-doc-builder");
    /// ```
    pub fn address(mut self, address: impl ToAddress) -> Self {
        self.address = Some(address.to_address());
        self
    }

    /// The shared secret every client must prove it knows. Default: the process tree's
    /// [authkey](crate::ProcessInfo::authkey), as in Python (see [`Manager::authkey`]).
    ///
    /// ```
    /// multiproc::init();
    /// let m = multiproc::Manager::builder().authkey(b"k").start().unwrap();
    /// assert_eq!(m.authkey(), b"k");
    /// ```
    pub fn authkey(mut self, authkey: &[u8]) -> Self {
        self.authkey = Some(authkey.to_vec());
        self
    }

    /// Largest request the server accepts from an authenticated client; a bigger frame
    /// closes that client's connection. Unauthenticated peers may send only a few hundred
    /// bytes. Less than 1024 bytes is refused: [`start`](ManagerBuilder::start) then
    /// returns [`Error::InvalidOperation`].
    ///
    /// ```
    /// multiproc::init();
    /// let b = multiproc::Manager::builder().max_message_size(4096);
    /// # drop(b);
    /// assert!(multiproc::Manager::builder().max_message_size(10).start().is_err());
    /// ```
    pub fn max_message_size(mut self, bytes: u64) -> Self {
        if bytes < 1024 {
            self.invalid
                .get_or_insert_with(|| "max_message_size must be at least 1024 bytes".into());
        }
        self.max_message = bytes;
        self
    }

    /// The start method for the server process (default: the global one).
    ///
    /// ```
    /// multiproc::init();
    /// let m = multiproc::Manager::builder()
    ///     .start_method(multiproc::StartMethod::Spawn)
    ///     .start()
    ///     .unwrap();
    /// assert_eq!(m.value(1).unwrap().get().unwrap(), 1);
    /// ```
    pub fn start_method(mut self, method: StartMethod) -> Self {
        self.start_method = Some(method);
        self
    }

    /// A function the server process runs once, with `args`, before it serves anyone
    /// (Python's `manager.start(initializer, initargs)`). Its return value counts as a Rust
    /// `main`'s does (see [`Process::new`]): if it returns an `Err` (printed on the
    /// server's standard error), [`start`](ManagerBuilder::start) returns
    /// [`Error::InvalidOperation`]; if it panics, the panic as [`Error::TaskPanicked`].
    ///
    /// ```
    /// multiproc::init();
    /// fn quiet(level: u8) { assert!(level < 10, "level {level} is too loud"); }
    /// let m = multiproc::Manager::builder().initializer(quiet, 1).start().unwrap();
    /// # drop(m);
    /// let bad = multiproc::Manager::builder().initializer(quiet, 11).start();
    /// assert!(matches!(bad, Err(multiproc::Error::TaskPanicked { .. })));
    ///
    /// fn check(level: u8) -> Result<(), String> {
    ///     if level < 10 { Ok(()) } else { Err(format!("level {level} is too loud")) }
    /// }
    /// assert!(multiproc::Manager::builder().initializer(check, 1).start().is_ok());
    /// let bad = multiproc::Manager::builder().initializer(check, 11).start();
    /// assert!(matches!(bad, Err(multiproc::Error::InvalidOperation(_))));
    /// ```
    #[doc(alias = "start")]
    pub fn initializer<I, IR>(mut self, f: fn(I) -> IR, args: I) -> Self
    where
        I: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
        IR: std::process::Termination + 'static,
    {
        let spec = crate::pool::InitSpec {
            target: FnRef::of(f).erase(),
            args,
        };
        if spec.target.is_foreign() && self.invalid.is_none() {
            self.invalid = Some(crate::start::foreign_fn_error().to_string());
        }
        self.launch = Arc::new(move |args| {
            Process::new(
                server::server_main::<I, IR>,
                ServerStart {
                    args,
                    init: Some(spec.clone()),
                },
            )
        });
        self
    }

    /// Registers a [`Shared`] type, so that [`Manager::create`] can make values of it in
    /// the server (Python's `BaseManager.register`). Clients of a network server create
    /// registered types by name, without registering them themselves.
    ///
    /// ```
    /// # use serde::{Deserialize, Serialize};
    /// #[derive(Serialize, Deserialize)]
    /// struct Tally(u64);
    /// impl multiproc::manager::Shared for Tally {
    ///     type Request = ();
    ///     type Reply = u64;
    ///     fn handle(&mut self, _: ()) -> u64 { self.0 += 1; self.0 }
    /// }
    /// multiproc::init();
    /// let m = multiproc::Manager::builder().register::<Tally>().start().unwrap();
    /// let t = m.create(Tally(0)).unwrap();
    /// assert_eq!(t.call(()).unwrap(), 1);
    /// ```
    pub fn register<S: Shared>(mut self) -> Self {
        let ctor = FnRef::of(proxy::construct::<S> as Constructor);
        if ctor.is_foreign() && self.invalid.is_none() {
            self.invalid = Some(crate::start::foreign_fn_error().to_string());
        }
        self.registry.push(Registration {
            name: S::registered_name(),
            ctor,
        });
        self
    }

    /// Starts the server process and returns the owning [`Manager`]. A TCP address already
    /// in use → [`Error::Io`].
    ///
    /// ```
    /// multiproc::init();
    /// let m = multiproc::Manager::builder().start().unwrap();
    /// m.shutdown().unwrap();
    /// ```
    pub fn start(self) -> Result<Manager> {
        if let Some(why) = self.invalid {
            return Err(Error::InvalidOperation(why));
        }
        let address = match self.address {
            Some(a) => a?,
            None => {
                let mut r = [0u8; 12];
                getrandom::fill(&mut r)
                    .map_err(|e| Error::Io(std::io::Error::other(format!("no randomness: {e}"))))?;
                let hex: String = r.iter().map(|b| format!("{b:02x}")).collect();
                Address::Abstract(
                    format!("multiproc-manager-{}-{hex}", std::process::id()).into_bytes(),
                )
            }
        };
        // Python's default: the process's authkey (inherited by its children).
        let authkey = match self.authkey {
            Some(k) => k,
            None => crate::identity::tree_authkey().to_vec(),
        };
        let (ours, theirs) = crate::pipe::<Control>()?;
        let args = ServerArgs {
            control: theirs,
            address,
            authkey: authkey.clone(),
            registry: self.registry,
            max_message: self.max_message,
        };
        let process = (self.launch)(args);
        // Python's name for it: "SyncManager-" and the process's identity.
        let name = process.name().replacen("Process", "SyncManager", 1);
        let mut process = process.with_name(name).with_daemon(true);
        if let Some(m) = self.start_method {
            process = process.with_start_method(m);
        }
        process.start()?;
        // Its death (killed on its own) is reaped at once, not at the next look.
        process.reap_when_ended();
        let stop = |process: &Process| {
            let _ = process.kill();
            let _ = process.join();
        };
        let ready = match ours.poll(Some(START_TIMEOUT)) {
            Ok(true) => ours.recv(),
            Ok(false) => Err(Error::Timeout),
            Err(e) => Err(e),
        };
        let bound = match ready {
            Ok(Control::Ready(a)) => a,
            Ok(Control::Failed(msg)) => {
                stop(&process);
                return Err(Error::Io(std::io::Error::other(msg)));
            }
            Ok(Control::InitFailed(why)) => {
                stop(&process);
                return Err(Error::InvalidOperation(why));
            }
            Ok(Control::InitPanicked(message, location)) => {
                stop(&process);
                return Err(Error::TaskPanicked {
                    message,
                    location,
                    backtrace: None,
                });
            }
            Ok(Control::Shutdown) => {
                stop(&process);
                return Err(Error::codec("unexpected message from the manager"));
            }
            Err(e) => {
                stop(&process);
                return Err(e);
            }
        };
        Ok(Manager {
            ep: Endpoint::get(&bound, &authkey),
            server: Mutex::new(Some(ServerProcess {
                process,
                control: ours,
            })),
            stopped: std::sync::atomic::AtomicBool::new(false),
        })
    }
}

impl Manager {
    /// Starts a manager server process on a private Unix socket with the process tree's
    /// [authkey](crate::ProcessInfo::authkey) (Python's `multiprocessing.Manager()`).
    ///
    /// # Errors
    ///
    /// Those of starting a process ([`Process::start`]: [`Error::NotInitialized`] when
    /// [`init()`](crate::init) was not called first, an [`Error::Io`] from the system, …),
    /// [`Error::Eof`] if the server process died before it was ready, [`Error::Timeout`]
    /// if it was not ready within 30 s.
    ///
    /// ```
    /// multiproc::init();
    /// let manager = multiproc::Manager::start().unwrap();
    /// let l = manager.list(vec![1, 2]).unwrap();
    /// assert_eq!(l.to_vec().unwrap(), vec![1, 2]);
    /// ```
    pub fn start() -> Result<Manager> {
        ManagerBuilder::default().start()
    }

    /// Options for the server: address, authkey, registered types.
    ///
    /// ```
    /// multiproc::init();
    /// let m = multiproc::Manager::builder().authkey(b"abc").start().unwrap();
    /// # drop(m);
    /// ```
    pub fn builder() -> ManagerBuilder {
        ManagerBuilder::default()
    }

    /// Starts a server process listening on TCP `address` with `authkey` (Python's
    /// `BaseManager(address, authkey).start()`); other programs reach it with
    /// [`Manager::connect`].
    ///
    /// # Errors
    ///
    /// Those of [`Manager::start`], and an [`Error::Io`] whose message says why when the
    /// server cannot bind `address` (a port in use, a host that is not this machine's, …).
    ///
    /// ```
    /// multiproc::init();
    /// let server = multiproc::Manager::serve("127.0.0.1:0", b"secret").unwrap();
    /// let jobs = server.queue::<String>().unwrap();
    /// server.publish("jobs", &jobs).unwrap();
    ///
    /// let client = multiproc::Manager::connect(server.address(), b"secret").unwrap();
    /// let q = client.lookup::<multiproc::manager::QueueProxy<String>>("jobs").unwrap();
    /// q.put("build".into()).unwrap();
    /// assert_eq!(jobs.get().unwrap(), "build");
    /// assert!(matches!(
    ///     multiproc::Manager::connect(server.address(), b"wrong"),
    ///     Err(multiproc::Error::AuthenticationFailed)
    /// ));
    /// ```
    pub fn serve(address: impl ToAddress, authkey: &[u8]) -> Result<Manager> {
        ManagerBuilder::default()
            .address(address)
            .authkey(authkey)
            .start()
    }

    /// Connects to a running manager server (Python's `BaseManager.connect()`),
    /// authenticating at once: a wrong key → [`Error::AuthenticationFailed`]. Dropping the
    /// returned handle does not stop the server.
    ///
    /// # Errors
    ///
    /// Those of [`Client::connect`](crate::connection::Client::connect): an [`Error::Io`]
    /// when no server listens there (`ConnectionRefused`) or it did not finish the
    /// handshake within 5 s (`TimedOut`), [`Error::AuthenticationFailed`] for a wrong key.
    ///
    /// ```
    /// multiproc::init();
    /// let server = multiproc::Manager::serve("127.0.0.1:0", b"k").unwrap();
    /// let client = multiproc::Manager::connect(server.address(), b"k").unwrap();
    /// let v = client.value(5u8).unwrap();
    /// assert_eq!(v.get().unwrap(), 5);
    /// ```
    pub fn connect(address: impl ToAddress, authkey: &[u8]) -> Result<Manager> {
        let ep = Endpoint::get(&address.to_address()?, authkey);
        let conn = ep.connect()?;
        ep.checkin(conn);
        Ok(Manager {
            ep,
            server: Mutex::new(None),
            stopped: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The address the server listens on (the real port when started on port 0).
    ///
    /// ```
    /// multiproc::init();
    /// let m = multiproc::Manager::start().unwrap();
    /// assert!(matches!(m.address(), multiproc::connection::Address::Abstract(_)));
    /// ```
    pub fn address(&self) -> &Address {
        &self.ep.address
    }

    /// The server's authkey: the one given to the builder, or by default the process
    /// tree's [authkey](crate::ProcessInfo::authkey), as in Python.
    ///
    /// ```
    /// multiproc::init();
    /// let m = multiproc::Manager::start().unwrap();
    /// assert_eq!(m.authkey(), multiproc::current_process().authkey());
    /// ```
    pub fn authkey(&self) -> &[u8] {
        &self.ep.authkey
    }

    /// The server process's id, for the handle that started it.
    ///
    /// ```
    /// multiproc::init();
    /// let m = multiproc::Manager::start().unwrap();
    /// assert!(m.server_pid().is_some());
    /// ```
    pub fn server_pid(&self) -> Option<u32> {
        let s = self.server.lock().unwrap_or_else(|p| p.into_inner());
        s.as_ref().and_then(|s| s.process.pid())
    }

    fn make(&self, c: Create) -> Result<ObjRef> {
        let contained = client::take_contained(&self.ep);
        match self.ep.call(&Request::Create(c))? {
            Reply::Object(id, _) => {
                client::contain(&self.ep, id, contained);
                Ok(ObjRef::held(self.ep.clone(), id))
            }
            r => Err(Error::codec(format!(
                "unexpected reply from the manager: {r:?}"
            ))),
        }
    }

    /// A new shared list holding `items` (Python's `manager.list(items)`).
    ///
    /// ```
    /// multiproc::init();
    /// let m = multiproc::Manager::start().unwrap();
    /// let l = m.list(["a".to_string()]).unwrap();
    /// assert_eq!(l.get(0).unwrap(), "a");
    /// ```
    pub fn list<T, I>(&self, items: I) -> Result<ListProxy<T>>
    where
        T: Serialize + DeserializeOwned,
        I: IntoIterator<Item = T>,
    {
        let items = items
            .into_iter()
            .map(|x| proxy::enc(&x))
            .collect::<Result<Vec<_>>>()?;
        Ok(ListProxy::from_obj(self.make(Create::List(items))?))
    }

    /// A new, empty shared dictionary (Python's `manager.dict()`).
    ///
    /// ```
    /// multiproc::init();
    /// let m = multiproc::Manager::start().unwrap();
    /// assert!(m.dict::<u32, String>().unwrap().is_empty().unwrap());
    /// ```
    pub fn dict<K, V>(&self) -> Result<DictProxy<K, V>>
    where
        K: Serialize + DeserializeOwned,
        V: Serialize + DeserializeOwned,
    {
        self.dict_from(std::iter::empty())
    }

    /// A new shared dictionary holding `entries`.
    ///
    /// ```
    /// multiproc::init();
    /// let m = multiproc::Manager::start().unwrap();
    /// let d = m.dict_from([(1, "one".to_string())]).unwrap();
    /// assert_eq!(d.get(&1).unwrap().as_deref(), Some("one"));
    /// ```
    pub fn dict_from<K, V, I>(&self, entries: I) -> Result<DictProxy<K, V>>
    where
        K: Serialize + DeserializeOwned,
        V: Serialize + DeserializeOwned,
        I: IntoIterator<Item = (K, V)>,
    {
        let entries = entries
            .into_iter()
            .map(|(k, v)| Ok((proxy::enc(&k)?, proxy::enc(&v)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(DictProxy::from_obj(self.make(Create::Dict(entries))?))
    }

    /// A new namespace (Python's `manager.Namespace()`).
    ///
    /// ```
    /// multiproc::init();
    /// let m = multiproc::Manager::start().unwrap();
    /// let ns = m.namespace().unwrap();
    /// ns.set("x", 1.5).unwrap();
    /// assert_eq!(ns.get::<f64>("x").unwrap(), 1.5);
    /// ```
    pub fn namespace(&self) -> Result<NamespaceProxy> {
        Ok(NamespaceProxy::from_obj(self.make(Create::Namespace)?))
    }

    /// A new unbounded queue (Python's `manager.Queue()`).
    ///
    /// ```
    /// multiproc::init();
    /// let m = multiproc::Manager::start().unwrap();
    /// let q = m.queue::<u8>().unwrap();
    /// q.put(1).unwrap();
    /// assert_eq!(q.get().unwrap(), 1);
    /// ```
    pub fn queue<T: Serialize + DeserializeOwned>(&self) -> Result<QueueProxy<T>> {
        Ok(QueueProxy::from_obj(self.make(Create::Queue(None))?))
    }

    /// A new queue holding at most `maxsize` items (Python's `manager.Queue(maxsize)`);
    /// 0 means unbounded.
    ///
    /// ```
    /// multiproc::init();
    /// let m = multiproc::Manager::start().unwrap();
    /// let q = m.bounded_queue::<u8>(1).unwrap();
    /// q.put(1).unwrap();
    /// assert!(q.try_put(2).is_err());
    /// ```
    pub fn bounded_queue<T: Serialize + DeserializeOwned>(
        &self,
        maxsize: usize,
    ) -> Result<QueueProxy<T>> {
        Ok(QueueProxy::from_obj(
            self.make(Create::Queue(Some(maxsize as u64)))?,
        ))
    }

    /// A new shared value (Python's `manager.Value(typecode, value)`).
    ///
    /// ```
    /// multiproc::init();
    /// let m = multiproc::Manager::start().unwrap();
    /// assert_eq!(m.value((1, 'a')).unwrap().get().unwrap(), (1, 'a'));
    /// ```
    pub fn value<T: Serialize + DeserializeOwned>(&self, value: T) -> Result<ValueProxy<T>> {
        Ok(ValueProxy::from_obj(
            self.make(Create::Value(proxy::enc(&value)?))?,
        ))
    }

    /// A new lock (Python's `manager.Lock()`).
    ///
    /// ```
    /// multiproc::init();
    /// let m = multiproc::Manager::start().unwrap();
    /// let l = m.lock().unwrap();
    /// assert!(l.try_acquire().unwrap());
    /// ```
    pub fn lock(&self) -> Result<LockProxy> {
        Ok(LockProxy::from_obj(self.make(Create::Lock)?))
    }

    /// A new event (Python's `manager.Event()`).
    ///
    /// ```
    /// multiproc::init();
    /// let m = multiproc::Manager::start().unwrap();
    /// assert!(!m.event().unwrap().is_set().unwrap());
    /// ```
    pub fn event(&self) -> Result<EventProxy> {
        Ok(EventProxy::from_obj(self.make(Create::Event)?))
    }

    /// A new object of a registered [`Shared`] type, starting as `init`. A type the server
    /// does not know → [`Error::Remote`] with `TypeError`.
    ///
    /// ```
    /// # use serde::{Deserialize, Serialize};
    /// #[derive(Serialize, Deserialize)]
    /// struct Stack(Vec<u8>);
    /// impl multiproc::manager::Shared for Stack {
    ///     type Request = Option<u8>; // Some: push, None: pop
    ///     type Reply = Option<u8>;
    ///     fn handle(&mut self, r: Option<u8>) -> Option<u8> {
    ///         match r { Some(v) => { self.0.push(v); None } None => self.0.pop() }
    ///     }
    /// }
    /// multiproc::init();
    /// let m = multiproc::Manager::builder().register::<Stack>().start().unwrap();
    /// let s = m.create(Stack(vec![])).unwrap();
    /// s.call(Some(4)).unwrap();
    /// assert_eq!(s.call(None).unwrap(), Some(4));
    /// // Not registered with this manager:
    /// assert!(multiproc::Manager::start().unwrap().create(Stack(vec![])).is_err());
    /// ```
    pub fn create<S: Shared>(&self, init: S) -> Result<SharedProxy<S>> {
        Ok(SharedProxy::from_obj(self.make(Create::Shared(
            S::registered_name(),
            proxy::enc(&init)?,
        ))?))
    }

    /// Gives `proxy`'s object a name that any client of this server can
    /// [`lookup`](Manager::lookup) (replacing an earlier object of that name).
    ///
    /// ```
    /// multiproc::init();
    /// let m = multiproc::Manager::start().unwrap();
    /// let l = m.list(vec![1u8]).unwrap();
    /// m.publish("numbers", &l).unwrap();
    /// let again = m.lookup::<multiproc::manager::ListProxy<u8>>("numbers").unwrap();
    /// assert_eq!(again.to_vec().unwrap(), vec![1]);
    /// ```
    pub fn publish<P: Proxy>(&self, name: &str, proxy: &P) -> Result<()> {
        let id = proxy.obj_ref().id();
        match self.ep.call(&Request::Publish(name.to_string(), id))? {
            Reply::Unit => Ok(()),
            r => Err(Error::codec(format!(
                "unexpected reply from the manager: {r:?}"
            ))),
        }
    }

    /// A proxy to the object published under `name`. No such name →
    /// [`Error::Remote`] with `NotFound`; an object of another kind → `TypeError`.
    ///
    /// ```
    /// multiproc::init();
    /// let m = multiproc::Manager::start().unwrap();
    /// let e = m.event().unwrap();
    /// m.publish("ready", &e).unwrap();
    /// assert!(m.lookup::<multiproc::manager::EventProxy>("ready").is_ok());
    /// assert!(m.lookup::<multiproc::manager::LockProxy>("ready").is_err());
    /// assert!(m.lookup::<multiproc::manager::LockProxy>("nothing").is_err());
    /// ```
    pub fn lookup<P: Proxy>(&self, name: &str) -> Result<P> {
        match self.ep.call(&Request::Lookup(name.to_string()))? {
            Reply::Object(id, kind) => {
                if !P::accepts(&kind) {
                    // The server took a hold for us; give it back.
                    let _ = self.ep.call(&Request::Release(id));
                    return Err(Error::Remote {
                        kind: crate::RemoteErrorKind::TypeError,
                        message: format!("{name:?} is a {kind:?}, not the proxy's kind"),
                    });
                }
                Ok(P::from_obj_ref(ObjRef::held(self.ep.clone(), id)))
            }
            r => Err(Error::codec(format!(
                "unexpected reply from the manager: {r:?}"
            ))),
        }
    }

    /// How many objects the server holds now (Python's `_number_of_objects()`). An object
    /// is freed once no process holds a proxy to it (a proxy on its way to another process
    /// counts until the receiver uses it, or its sender dies) and no published name points
    /// at it.
    ///
    /// ```
    /// multiproc::init();
    /// let m = multiproc::Manager::start().unwrap();
    /// let l = m.list(vec![1]).unwrap();
    /// let l2 = l.clone();
    /// assert_eq!(m.object_count().unwrap(), 1);
    /// drop(l);
    /// assert_eq!(m.object_count().unwrap(), 1); // l2 still holds it
    /// drop(l2);
    /// assert_eq!(m.object_count().unwrap(), 0);
    /// ```
    pub fn object_count(&self) -> Result<usize> {
        match self.ep.call(&Request::ObjectCount)? {
            Reply::Len(n) => Ok(n as usize),
            r => Err(Error::codec(format!(
                "unexpected reply from the manager: {r:?}"
            ))),
        }
    }

    /// Stops the server and waits for it to exit (killing it if it does not within a few
    /// seconds). Proxies fail afterwards. Calling it again does nothing. On a handle from
    /// [`connect`](Manager::connect) → [`Error::InvalidOperation`]: only the owner stops
    /// the server.
    ///
    /// ```
    /// multiproc::init();
    /// let m = multiproc::Manager::start().unwrap();
    /// m.shutdown().unwrap();
    /// m.shutdown().unwrap();
    /// ```
    pub fn shutdown(&self) -> Result<()> {
        let mut guard = self.server.lock().unwrap_or_else(|p| p.into_inner());
        let Some(srv) = guard.take() else {
            // An owner whose server already stopped has nothing to do; a connected handle
            // never had a server to stop.
            return if self.stopped.load(std::sync::atomic::Ordering::SeqCst) {
                Ok(())
            } else {
                Err(Error::invalid(
                    "only the manager that started the server can shut it down",
                ))
            };
        };
        self.stopped
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.ep.close();
        let _ = srv.control.send(&Control::Shutdown);
        drop(srv.control);
        if !srv.process.join_timeout(STOP_TIMEOUT)? {
            srv.process.kill()?;
            srv.process.join()?;
        }
        Ok(())
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        let owner = self
            .server
            .lock()
            .map(|s| s.is_some())
            .unwrap_or_else(|p| p.into_inner().is_some());
        if owner {
            let _ = self.shutdown();
        }
    }
}

mod sealed {
    pub trait Sealed {}
}

/// A proxy type that [`Manager::publish`] and [`Manager::lookup`] accept. Implemented by
/// every proxy of this module; sealed.
///
/// ```
/// fn takes_proxy<P: multiproc::manager::Proxy>(_: &P) {}
/// multiproc::init();
/// let m = multiproc::Manager::start().unwrap();
/// takes_proxy(&m.lock().unwrap());
/// ```
#[allow(private_interfaces)]
pub trait Proxy: sealed::Sealed + Sized {
    #[doc(hidden)]
    fn obj_ref(&self) -> &ObjRef;
    #[doc(hidden)]
    fn from_obj_ref(obj: ObjRef) -> Self;
    #[doc(hidden)]
    fn accepts(kind: &Kind) -> bool;
}

macro_rules! impl_proxy {
    ($t:ty, [$($g:ident),*], $pat:pat $(, $cond:expr)?) => {
        impl<$($g),*> sealed::Sealed for $t {}
        #[allow(private_interfaces)]
        impl<$($g),*> Proxy for $t {
            fn obj_ref(&self) -> &ObjRef {
                self.obj()
            }
            fn from_obj_ref(obj: ObjRef) -> Self {
                <$t>::from_obj(obj)
            }
            fn accepts(kind: &Kind) -> bool {
                matches!(kind, $pat $(if $cond(kind))?)
            }
        }
    };
}

impl_proxy!(ListProxy<T>, [T], Kind::List);
impl_proxy!(DictProxy<K, V>, [K, V], Kind::Dict);
impl_proxy!(NamespaceProxy, [], Kind::Namespace);
impl_proxy!(QueueProxy<T>, [T], Kind::Queue);
impl_proxy!(ValueProxy<T>, [T], Kind::Value);
impl_proxy!(LockProxy, [], Kind::Lock);
impl_proxy!(EventProxy, [], Kind::Event);

impl<S: Shared> sealed::Sealed for SharedProxy<S> {}
#[allow(private_interfaces)]
impl<S: Shared> Proxy for SharedProxy<S> {
    fn obj_ref(&self) -> &ObjRef {
        self.obj()
    }
    fn from_obj_ref(obj: ObjRef) -> Self {
        SharedProxy::from_obj(obj)
    }
    fn accepts(kind: &Kind) -> bool {
        matches!(kind, Kind::Shared(n) if *n == S::registered_name())
    }
}
