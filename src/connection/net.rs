//! Connections between unrelated processes: [`Listener`] and [`Client`] over Unix or TCP
//! sockets, authenticated with a shared key (Python's `multiprocessing.connection`).

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{auth, Connection};
use crate::ipc::RawConn;
use crate::{sys, Error, Result};

/// How long a peer gets to complete the authentication handshake: one deadline for the
/// whole of it, on either side (a peer that dribbles a byte now and then does not extend
/// it).
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// A socket address: TCP (`"127.0.0.1:50000"`), a Unix socket file (`"/tmp/sock"`, any
/// string starting with `/` or `.`), or a Linux abstract Unix socket (`"@name"`, or
/// `"\0name"` as Python writes it: no file, nothing to clean up).
///
/// ```
/// use multiproc::connection::Address;
/// let a: Address = "127.0.0.1:5000".parse().unwrap();
/// assert!(matches!(a, Address::Tcp(_)));
/// assert_eq!(a.to_string(), "127.0.0.1:5000");
/// assert!(matches!("/tmp/x.sock".parse::<Address>().unwrap(), Address::Unix(_)));
/// assert_eq!("@mp-demo".parse::<Address>().unwrap(), Address::Abstract(b"mp-demo".to_vec()));
/// assert_eq!("\0mp-demo".parse::<Address>().unwrap(), Address::Abstract(b"mp-demo".to_vec()));
/// assert!("no port here".parse::<Address>().is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Address {
    /// A TCP address.
    Tcp(SocketAddr),
    /// A Unix socket bound to a file.
    Unix(PathBuf),
    /// A Unix socket in Linux's abstract namespace.
    Abstract(Vec<u8>),
}

impl Address {
    /// Parses an address (see [`Address`] for the forms). Host names are resolved; the
    /// first address found is used.
    ///
    /// ```
    /// let a = multiproc::connection::Address::parse("localhost:80").unwrap();
    /// assert!(matches!(a, multiproc::connection::Address::Tcp(_)));
    /// ```
    pub fn parse(s: &str) -> Result<Address> {
        if let Some(name) = s.strip_prefix('@').or_else(|| s.strip_prefix('\0')) {
            return Ok(Address::Abstract(name.as_bytes().to_vec()));
        }
        if s.starts_with('/') || s.starts_with('.') {
            return Ok(Address::Unix(PathBuf::from(s)));
        }
        if let Ok(sa) = s.parse::<SocketAddr>() {
            return Ok(Address::Tcp(sa));
        }
        match s.to_socket_addrs() {
            Ok(mut it) => it
                .next()
                .map(Address::Tcp)
                .ok_or_else(|| Error::invalid(format!("address {s:?} resolves to nothing"))),
            Err(e) => Err(Error::invalid(format!(
                "{s:?} is not an address (host:port, /path, or @name): {e}"
            ))),
        }
    }

    pub(crate) fn sock(&self) -> sys::SockAddr {
        match self {
            Address::Tcp(a) => sys::SockAddr::Tcp(*a),
            Address::Unix(p) => sys::SockAddr::Path(p.clone()),
            Address::Abstract(n) => sys::SockAddr::Abstract(n.clone()),
        }
    }

    fn from_sock(a: sys::SockAddr) -> Address {
        match a {
            sys::SockAddr::Tcp(a) => Address::Tcp(a),
            sys::SockAddr::Path(p) => Address::Unix(p),
            sys::SockAddr::Abstract(n) => Address::Abstract(n),
        }
    }
}

impl FromStr for Address {
    type Err = Error;
    fn from_str(s: &str) -> Result<Address> {
        Address::parse(s)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Tcp(a) => write!(f, "{a}"),
            Address::Unix(p) => write!(f, "{}", p.display()),
            Address::Abstract(n) => write!(f, "@{}", String::from_utf8_lossy(n)),
        }
    }
}

/// Anything that names an [`Address`]: `&str`, `String`, `SocketAddr`, `Address`.
///
/// ```
/// use multiproc::connection::{Address, ToAddress};
/// let a = "127.0.0.1:1".to_address().unwrap();
/// assert_eq!(a, Address::Tcp("127.0.0.1:1".parse().unwrap()));
/// ```
pub trait ToAddress {
    /// The address this names.
    fn to_address(&self) -> Result<Address>;
}

impl ToAddress for str {
    fn to_address(&self) -> Result<Address> {
        Address::parse(self)
    }
}
impl ToAddress for String {
    fn to_address(&self) -> Result<Address> {
        Address::parse(self)
    }
}
impl ToAddress for Address {
    fn to_address(&self) -> Result<Address> {
        Ok(self.clone())
    }
}
impl ToAddress for SocketAddr {
    fn to_address(&self) -> Result<Address> {
        Ok(Address::Tcp(*self))
    }
}
impl<A: ToAddress + ?Sized> ToAddress for &A {
    fn to_address(&self) -> Result<Address> {
        (**self).to_address()
    }
}

/// A socket that accepts connections (Python's `multiprocessing.connection.Listener`).
///
/// With an `authkey`, each accepted peer must prove it knows the key (and the listener
/// proves it too); a peer that fails gets nothing, and `accept` returns
/// [`Error::AuthenticationFailed`]. A Unix socket file is removed when the listener is
/// dropped.
///
/// ```
/// multiproc::init();
/// use multiproc::connection::{Client, Listener};
/// let listener = Listener::bind("127.0.0.1:0", Some(b"secret")).unwrap();
/// let addr = listener.address().clone();
/// let t = std::thread::spawn(move || {
///     let c = Client::connect::<String>(&addr, Some(b"secret")).unwrap();
///     c.send(&"hello".to_string()).unwrap();
/// });
/// let conn = listener.accept::<String>().unwrap();
/// assert_eq!(conn.recv().unwrap(), "hello");
/// t.join().unwrap();
/// ```
pub struct Listener {
    fd: OwnedFd,
    address: Address,
    authkey: Option<Vec<u8>>,
    owns_file: bool,
}

impl fmt::Debug for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listener")
            .field("address", &self.address)
            .field("authenticated", &self.authkey.is_some())
            .finish()
    }
}

impl Listener {
    /// Binds and listens on `address` (TCP port 0 picks a free port: see
    /// [`address`](Listener::address)). `authkey: None` accepts any peer.
    ///
    /// ```
    /// let l = multiproc::connection::Listener::bind("@mp-doc-listener", None).unwrap();
    /// assert_eq!(l.address().to_string(), "@mp-doc-listener");
    /// ```
    pub fn bind(address: impl ToAddress, authkey: Option<&[u8]>) -> Result<Listener> {
        let address = address.to_address()?;
        let (fd, bound) = sys::listen_on(&address.sock(), 128)?;
        Ok(Listener {
            fd,
            owns_file: matches!(address, Address::Unix(_)),
            address: Address::from_sock(bound),
            authkey: authkey.map(<[u8]>::to_vec),
        })
    }

    /// The address it listens on (with the real port when bound to port 0).
    ///
    /// ```
    /// let l = multiproc::connection::Listener::bind("127.0.0.1:0", None).unwrap();
    /// assert!(matches!(l.address(), multiproc::connection::Address::Tcp(a) if a.port() != 0));
    /// ```
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// Waits for a peer, authenticates it when the listener has a key, and returns the
    /// connection. A peer with the wrong key → [`Error::AuthenticationFailed`] (the listener
    /// stays usable).
    ///
    /// # Errors
    ///
    /// Each error is about the one peer accepted; the listener stays usable after it.
    /// [`Error::AuthenticationFailed`]: a wrong key, or bytes that are not the handshake.
    /// [`Error::Eof`]: the peer hung up between handshake messages. [`Error::Io`] of kind
    /// `TimedOut`: the peer had not finished the handshake 5 s after it connected (one
    /// deadline for the whole exchange, however slowly it sends); of kind `UnexpectedEof`:
    /// it hung up inside a message; any other kind: `accept(2)` itself failed.
    ///
    /// ```
    /// multiproc::init();
    /// use multiproc::connection::{Client, Listener};
    /// let l = Listener::bind("127.0.0.1:0", Some(b"k")).unwrap();
    /// let addr = l.address().clone();
    /// let t = std::thread::spawn(move || Client::connect::<u8>(&addr, Some(b"wrong")).map(|_| ()));
    /// assert!(matches!(l.accept::<u8>(), Err(multiproc::Error::AuthenticationFailed)));
    /// assert!(matches!(t.join().unwrap(), Err(multiproc::Error::AuthenticationFailed)));
    /// ```
    pub fn accept<T>(&self) -> Result<Connection<T>> {
        let raw = accept_raw(self)?;
        if let Some(key) = &self.authkey {
            authenticate_server(&raw, key)?;
        }
        Ok(Connection::from_raw(raw, true, true))
    }
}

/// Accepts one raw connection with the handshake frame limit in force.
pub(crate) fn accept_raw(l: &Listener) -> Result<RawConn> {
    let fd = sys::accept_one(&l.fd)?;
    sys::set_nodelay(&fd, &l.address.sock());
    Ok(RawConn::new(fd))
}

/// Runs the listener's side of the handshake with a time limit and the small frame limit,
/// then lifts both.
pub(crate) fn authenticate_server(raw: &RawConn, key: &[u8]) -> Result<()> {
    handshake(raw, key, auth::server_handshake)
}

/// Runs one side of the handshake under its limits: frames of at most
/// [`auth::HANDSHAKE_MAX_FRAME`] bytes and [`HANDSHAKE_TIMEOUT`] for the whole exchange
/// (a deadline for the reads, however slowly the peer sends; a time-out for each write);
/// lifts them once it succeeded.
fn handshake(raw: &RawConn, key: &[u8], side: fn(&RawConn, &[u8]) -> Result<()>) -> Result<()> {
    raw.set_max_frame(auth::HANDSHAKE_MAX_FRAME);
    sys::set_io_timeout(raw, Some(HANDSHAKE_TIMEOUT))?;
    raw.set_read_deadline(Some(std::time::Instant::now() + HANDSHAKE_TIMEOUT));
    side(raw, key).map_err(handshake_timed_out)?;
    raw.set_read_deadline(None);
    sys::set_io_timeout(raw, None)?;
    raw.set_max_frame(crate::ipc::conn::MAX_FRAME);
    Ok(())
}

/// A read or write of the handshake that ran out of time (the socket's timeout gives
/// `EAGAIN`, "resource temporarily unavailable") becomes an error that says so.
fn handshake_timed_out(e: Error) -> Error {
    match e {
        Error::Io(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "the peer did not complete the authentication handshake within {} s",
                    HANDSHAKE_TIMEOUT.as_secs()
                ),
            ))
        }
        e => e,
    }
}

/// Connects and runs the client's side of the handshake (with a time limit).
pub(crate) fn connect_raw(address: &Address, authkey: Option<&[u8]>) -> Result<RawConn> {
    let fd = sys::connect_to(&address.sock())?;
    let raw = RawConn::new(fd);
    if let Some(key) = authkey {
        handshake(&raw, key, auth::client_handshake)?;
    }
    Ok(raw)
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let (true, Address::Unix(p)) = (self.owns_file, &self.address) {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Connects to a [`Listener`] (Python's `multiprocessing.connection.Client`).
///
/// ```
/// multiproc::init();
/// use multiproc::connection::{Client, Listener};
/// let l = Listener::bind("127.0.0.1:0", None).unwrap();
/// let c = Client::connect::<u32>(l.address(), None).unwrap();
/// let s = l.accept::<u32>().unwrap();
/// c.send(&7).unwrap();
/// assert_eq!(s.recv().unwrap(), 7);
/// ```
#[derive(Debug)]
pub struct Client;

impl Client {
    /// Connects to `address`; with an `authkey`, both sides prove they know it (wrong key
    /// → [`Error::AuthenticationFailed`]).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when nothing listens there (`ConnectionRefused`, or `NotFound` for a
    /// Unix socket file) or the address does not resolve. [`Error::AuthenticationFailed`]:
    /// a wrong key, a server that hung up on us during the handshake, or bytes that are
    /// not the handshake. [`Error::Io`] of kind `TimedOut`: the server had not finished
    /// the handshake 5 s after the connection was made (one deadline for the whole
    /// exchange).
    ///
    /// ```
    /// assert!(multiproc::connection::Client::connect::<u8>("127.0.0.1:1", None).is_err());
    /// ```
    pub fn connect<T>(address: impl ToAddress, authkey: Option<&[u8]>) -> Result<Connection<T>> {
        let raw = connect_raw(&address.to_address()?, authkey)?;
        Ok(Connection::from_raw(raw, true, true))
    }
}
