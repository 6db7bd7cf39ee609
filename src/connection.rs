//! Pipes: two connected endpoints that carry whole messages, like Python's
//! `multiprocessing.Pipe`.
//!
//! [`pipe`] returns a duplex pair (both ends send and receive); [`pipe_simplex`] a one-way
//! pair `(reader, writer)`, like `Pipe(duplex=False)`. Messages never merge or split,
//! however large (1 GiB works), and handles inside a message (other connections, queues,
//! locks, …) travel as file descriptors next to the bytes. A [`Connection`] is itself a
//! handle: put it in a [`Process`](crate::Process)'s arguments and it arrives working in the
//! child, and several processes may share one end (each message is sent and received whole,
//! by exactly one receiver). A process that shares an end may be killed at any moment, even
//! in the middle of a large message: the others go on with whole messages (the one it was
//! sending is not sent; the one it was receiving went with it), never garbage or a hang.
//!
//! Underneath is a Unix packet socket (`SOCK_SEQPACKET`), and beside it a ring in shared
//! memory per direction: messages up to 32 KiB without handles go through the ring with no
//! system call (millions a second), those with handles through the socket as one packet
//! each, in one order; larger messages up to 2 MiB through a second area of the same shared
//! memory (its pages are used only by such messages); a larger message goes in a memory
//! file without a name (nothing is ever left in /dev/shm) whose descriptor travels in a
//! packet: `send` encodes the value straight into the file (its strings and runs of
//! numbers written from the value's own memory), `send_bytes` copies the bytes into it
//! once. Up to 128 MiB the file is one the sender keeps and lends (the receiver copies the
//! message out and gives it back, so the next one is written into existing pages; see
//! [`Queue`](crate::Queue) for the memory this keeps); a larger one is sealed read-only
//! and read in place. The socket also wakes a receiver that sleeps and reports the
//! end of file when every copy of the peer is closed — or its process killed. Each end holds two
//! descriptors (its socket and the lanes' memory file), and making a pipe costs a few more
//! system calls than a socket pair alone (about 35 µs on a small VM where CPython's `Pipe()`
//! takes 20): pipes are cheap to use, not to make by the thousand.
//!
//! ```
//! multiproc::init();
//! let (a, b) = multiproc::pipe::<String>().unwrap();
//! a.send(&"hello".to_string()).unwrap();
//! assert_eq!(b.recv().unwrap(), "hello");
//! drop(a);
//! assert!(matches!(b.recv(), Err(multiproc::Error::Eof)));
//! ```
//!
//! Errors: the peer gone and everything read → [`Error::Eof`]; bytes that are not a message
//! or do not decode as `T` → [`Error::Codec`] (for that message: the pipe goes on).
//! Sending to a closed peer → [`Error::Io`] (`BrokenPipe`), never a SIGPIPE. (Connections
//! from a [`Listener`] are byte streams: there the peer gone in the middle of a message is
//! [`Error::Io`] (`UnexpectedEof`), and garbage ends the stream.)
//!
//! [`Listener`] and [`Client`] make connections between unrelated processes over Unix or
//! TCP sockets, authenticated with a shared `authkey` (mutual HMAC-SHA256 challenge, as in
//! Python 3.12+).

mod auth;
mod net;
mod wait;

pub(crate) use auth::send_busy;
pub(crate) use net::{accept_raw, authenticate_server, connect_raw};
pub use net::{Address, Client, Listener, ToAddress};
pub use wait::{wait, Waitable};

use std::fmt;
use std::marker::PhantomData;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ipc::conn::{lane_pair, RawConn};
use crate::{codec, Error, Result};

/// A file descriptor that travels inside a message: put it in a value sent through a
/// [`Connection`], a [`Queue`](crate::Queue), a [`Process`](crate::Process)'s or a pool
/// task's arguments, and the receiver gets its own descriptor for the same open file,
/// socket or pipe (Python's `send_handle`/`DupFd`, passed with `SCM_RIGHTS`). Encoding it
/// anywhere else (a plain [`codec::encode`]) is an [`Error::Codec`].
///
/// ```
/// multiproc::init();
/// use std::io::Write;
/// use multiproc::connection::Fd;
/// fn log_to((name, out): (String, Fd)) {
///     writeln!(std::fs::File::from(out.into_inner()), "hello from {name}").unwrap();
/// }
/// let (mut reader, writer) = std::os::unix::net::UnixStream::pair().unwrap();
/// let h = multiproc::spawn(log_to, ("child".to_string(), Fd::new(writer.into()))).unwrap();
/// h.join().unwrap();
/// let mut s = String::new();
/// std::io::Read::read_to_string(&mut reader, &mut s).unwrap();
/// assert_eq!(s, "hello from child\n");
/// ```
#[doc(alias = "DupFd")]
#[doc(alias = "send_handle")]
#[derive(Debug)]
pub struct Fd(OwnedFd);

impl Fd {
    /// Takes ownership of `fd`.
    ///
    /// ```
    /// let f = std::fs::File::open("/dev/null").unwrap();
    /// let fd = multiproc::connection::Fd::new(f.into());
    /// # drop(fd);
    /// ```
    pub fn new(fd: OwnedFd) -> Fd {
        Fd(fd)
    }

    /// The descriptor.
    ///
    /// ```
    /// let fd = multiproc::connection::Fd::new(std::fs::File::open("/dev/null").unwrap().into());
    /// let file = std::fs::File::from(fd.into_inner());
    /// # drop(file);
    /// ```
    pub fn into_inner(self) -> OwnedFd {
        self.0
    }
}

impl From<OwnedFd> for Fd {
    fn from(fd: OwnedFd) -> Fd {
        Fd(fd)
    }
}

impl From<Fd> for OwnedFd {
    fn from(fd: Fd) -> OwnedFd {
        fd.0
    }
}

impl AsFd for Fd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

impl Serialize for Fd {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        codec::FdRef(self.0.as_fd()).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Fd {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(Fd(codec::FdOwned::deserialize(d)?.0))
    }
}

/// One end of a pipe, carrying messages of type `T` (Python's `multiprocessing.Connection`).
///
/// `send` and `recv` take `&self`; a connection may be shared between threads (each message
/// is sent and received whole). It implements [`AsFd`]/[`AsRawFd`] (Python's `fileno()`), so
/// it can be waited on with `poll(2)` next to other descriptors: for an end that receives,
/// the descriptor is a stand-in (an epoll set) that is readable exactly when a message or
/// the end of file waits, and from the first time it is asked for, every later message to
/// this end travels through the socket (a system call each) so that the kernel sees it.
/// Sending to a receiver that was killed fails with `BrokenPipe` within a millisecond or
/// at once if the pipe is full; one that closed its end, at once.
///
/// ```
/// multiproc::init();
/// let (parent, child) = multiproc::pipe::<Vec<u32>>().unwrap();
/// child.send(&vec![1, 2, 3]).unwrap();
/// assert!(parent.poll(Some(std::time::Duration::from_secs(1))).unwrap());
/// assert_eq!(parent.recv().unwrap(), vec![1, 2, 3]);
/// ```
pub struct Connection<T> {
    raw: Arc<RawConn>,
    readable: bool,
    writable: bool,
    _t: PhantomData<fn(T) -> T>,
}

impl<T> fmt::Debug for Connection<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("fd", &self.raw.as_fd().as_raw_fd())
            .field("readable", &self.readable)
            .field("writable", &self.writable)
            .finish()
    }
}

/// A duplex pipe: both ends send and receive `T` (Python's `Pipe()`).
///
/// ```
/// multiproc::init();
/// let (a, b) = multiproc::pipe::<i32>().unwrap();
/// a.send(&1).unwrap();
/// b.send(&2).unwrap();
/// assert_eq!((b.recv().unwrap(), a.recv().unwrap()), (1, 2));
/// ```
pub fn pipe<T>() -> Result<(Connection<T>, Connection<T>)> {
    let (a, b) = lane_pair(true)?;
    Ok((
        Connection::from_raw(a, true, true),
        Connection::from_raw(b, true, true),
    ))
}

/// A one-way pipe `(reader, writer)` (Python's `Pipe(duplex=False)`). Sending on the reader
/// or receiving on the writer is an [`Error::InvalidOperation`].
///
/// ```
/// multiproc::init();
/// let (rx, tx) = multiproc::pipe_simplex::<u8>().unwrap();
/// tx.send(&7).unwrap();
/// assert_eq!(rx.recv().unwrap(), 7);
/// assert!(matches!(rx.send(&1), Err(multiproc::Error::InvalidOperation(_))));
/// ```
pub fn pipe_simplex<T>() -> Result<(Connection<T>, Connection<T>)> {
    let (a, b) = lane_pair(false)?;
    // The kernel enforces the direction too.
    let _ = rustix::net::shutdown(&a, rustix::net::Shutdown::Write);
    let _ = rustix::net::shutdown(&b, rustix::net::Shutdown::Read);
    Ok((
        Connection::from_raw(a, true, false),
        Connection::from_raw(b, false, true),
    ))
}

impl<T> Connection<T> {
    pub(crate) fn from_raw(raw: RawConn, readable: bool, writable: bool) -> Self {
        Connection {
            raw: Arc::new(raw),
            readable,
            writable,
            _t: PhantomData,
        }
    }

    fn check_writable(&self) -> Result<()> {
        if self.writable {
            Ok(())
        } else {
            Err(Error::invalid("this end of a one-way pipe is read-only"))
        }
    }

    fn check_readable(&self) -> Result<()> {
        if self.readable {
            Ok(())
        } else {
            Err(Error::invalid("this end of a one-way pipe is write-only"))
        }
    }

    /// Sends raw bytes as one message (Python's `send_bytes`).
    ///
    /// ```
    /// multiproc::init();
    /// let (a, b) = multiproc::pipe::<()>().unwrap();
    /// a.send_bytes(b"raw").unwrap();
    /// assert_eq!(b.recv_bytes().unwrap(), b"raw");
    /// ```
    ///
    /// To send part of a buffer (Python's `send_bytes(buffer, offset, size)`), pass a
    /// slice of it: `conn.send_bytes(&buf[offset..offset + size])`.
    ///
    /// ```
    /// multiproc::init();
    /// let (a, b) = multiproc::pipe::<()>().unwrap();
    /// let buf = b"0123456789";
    /// a.send_bytes(&buf[2..2 + 5]).unwrap();
    /// assert_eq!(b.recv_bytes().unwrap(), b"23456");
    /// ```
    pub fn send_bytes(&self, bytes: &[u8]) -> Result<()> {
        self.check_writable()?;
        self.raw.send_bytes(bytes, &[])
    }

    /// Receives one message as raw bytes (Python's `recv_bytes`). [`Error::Eof`] once the
    /// peer has closed and everything was read.
    ///
    /// ```
    /// multiproc::init();
    /// let (a, b) = multiproc::pipe::<u32>().unwrap();
    /// a.send(&5).unwrap();
    /// assert_eq!(b.recv_bytes().unwrap(), vec![5, 0, 0, 0]); // the encoding of 5u32
    /// ```
    pub fn recv_bytes(&self) -> Result<Vec<u8>> {
        self.check_readable()?;
        self.raw.recv_bytes()
    }

    /// Receives one message of at most `maxlength` bytes (Python's
    /// `recv_bytes(maxlength)`). A longer message is refused before any of its bytes are
    /// copied or memory is set aside for it, with an [`Error::Io`] of kind
    /// [`InvalidData`](std::io::ErrorKind::InvalidData) (Python: `OSError: bad message
    /// length`), and this end then receives nothing more: every later receive on it (or
    /// on its clones in this process) is an [`Error::Closed`], as Python closes the
    /// connection there. Use it to read from a peer you do not trust with your memory.
    ///
    /// ```
    /// multiproc::init();
    /// let (a, b) = multiproc::pipe::<()>().unwrap();
    /// a.send_bytes(b"short").unwrap();
    /// assert_eq!(b.recv_bytes_max(5).unwrap(), b"short");
    /// a.send_bytes(b"far too long").unwrap();
    /// match b.recv_bytes_max(5) {
    ///     Err(multiproc::Error::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::InvalidData),
    ///     other => panic!("{other:?}"),
    /// }
    /// assert!(matches!(b.recv_bytes(), Err(multiproc::Error::Closed)));
    /// ```
    #[doc(alias = "recv_bytes")]
    pub fn recv_bytes_max(&self, maxlength: usize) -> Result<Vec<u8>> {
        self.check_readable()?;
        self.raw.recv_bytes_bounded(Some(maxlength))
    }

    /// Receives one message into `buf` and returns its length (Python's
    /// `recv_bytes_into`; to fill from an offset, pass `&mut buf[offset..]`). A message
    /// longer than `buf` is received all the same and handed back whole in
    /// [`Error::BufferTooShort`]; `buf` is then left as it was. [`Error::Eof`] once the
    /// peer has closed and everything was read.
    ///
    /// ```
    /// multiproc::init();
    /// let (a, b) = multiproc::pipe::<()>().unwrap();
    /// let mut buf = [0u8; 8];
    /// a.send_bytes(b"abc").unwrap();
    /// let n = b.recv_bytes_into(&mut buf[2..]).unwrap();
    /// assert_eq!((n, &buf[..5]), (3, &b"\0\0abc"[..]));
    /// a.send_bytes(b"far too long").unwrap();
    /// match b.recv_bytes_into(&mut buf) {
    ///     Err(multiproc::Error::BufferTooShort { message }) => assert_eq!(message, b"far too long"),
    ///     other => panic!("{other:?}"),
    /// }
    /// ```
    pub fn recv_bytes_into(&self, buf: &mut [u8]) -> Result<usize> {
        self.check_readable()?;
        self.raw.recv_with(|bytes, _fds| {
            if bytes.len() > buf.len() {
                return Err(Error::BufferTooShort {
                    message: bytes.to_vec(),
                });
            }
            buf[..bytes.len()].copy_from_slice(bytes);
            Ok(bytes.len())
        })
    }

    /// Sends a file descriptor, of any kind, as one message (Python's
    /// `multiprocessing.reduction.send_handle`); the peer takes it with
    /// [`recv_handle`](Connection::recv_handle). The descriptor is duplicated into the
    /// receiving process; this one stays open here. To send descriptors inside other
    /// values, use [`Fd`].
    ///
    /// ```
    /// multiproc::init();
    /// use std::io::{Read, Write};
    /// fn write_to(conn: multiproc::Connection<()>) {
    ///     let fd = conn.recv_handle().unwrap();
    ///     std::fs::File::from(fd).write_all(b"written by the child").unwrap();
    /// }
    /// let (ours, theirs) = multiproc::pipe::<()>().unwrap();
    /// let h = multiproc::spawn(write_to, theirs).unwrap();
    /// let (mut reader, writer) = std::os::unix::net::UnixStream::pair().unwrap();
    /// ours.send_handle(&writer).unwrap();
    /// drop(writer);
    /// h.join().unwrap();
    /// let mut s = String::new();
    /// reader.read_to_string(&mut s).unwrap();
    /// assert_eq!(s, "written by the child");
    /// ```
    pub fn send_handle(&self, fd: &impl AsFd) -> Result<()> {
        self.check_writable()?;
        self.raw.send_value(&codec::FdRef(fd.as_fd()))
    }

    /// Receives a file descriptor sent with [`send_handle`](Connection::send_handle)
    /// (Python's `multiprocessing.reduction.recv_handle`). A message that carries none →
    /// [`Error::Codec`].
    ///
    /// ```
    /// multiproc::init();
    /// let (a, b) = multiproc::pipe::<()>().unwrap();
    /// let file = std::fs::File::open("/dev/null").unwrap();
    /// a.send_handle(&file).unwrap();
    /// let fd = b.recv_handle().unwrap();
    /// assert_ne!(std::os::fd::AsRawFd::as_raw_fd(&fd), std::os::fd::AsRawFd::as_raw_fd(&file));
    /// ```
    pub fn recv_handle(&self) -> Result<OwnedFd> {
        self.check_readable()?;
        Ok(self.raw.recv_value::<codec::FdOwned>()?.0)
    }

    /// Whether a message (or end of file) is ready, waiting up to `timeout`; `None` waits
    /// for ever, `Some(Duration::ZERO)` only looks.
    ///
    /// ```
    /// multiproc::init();
    /// use std::time::Duration;
    /// let (a, b) = multiproc::pipe::<u8>().unwrap();
    /// assert!(!b.poll(Some(Duration::ZERO)).unwrap());
    /// a.send(&1).unwrap();
    /// assert!(b.poll(Some(Duration::from_secs(5))).unwrap());
    /// ```
    pub fn poll(&self, timeout: Option<Duration>) -> Result<bool> {
        self.check_readable()?;
        self.raw.poll(timeout)
    }

    /// Closes this end (the same as dropping it). The peer sees end of file once every
    /// copy of this end (its clones, and the copies sent to other processes) is closed.
    ///
    /// ```
    /// multiproc::init();
    /// let (a, b) = multiproc::pipe::<u8>().unwrap();
    /// a.close();
    /// assert!(matches!(b.recv(), Err(multiproc::Error::Eof)));
    /// ```
    pub fn close(self) {
        drop(self);
    }

    /// Whether this end can receive.
    ///
    /// ```
    /// multiproc::init();
    /// let (rx, tx) = multiproc::pipe_simplex::<u8>().unwrap();
    /// assert!(rx.readable() && !tx.readable());
    /// ```
    pub fn readable(&self) -> bool {
        self.readable
    }

    /// Whether this end can send.
    ///
    /// ```
    /// multiproc::init();
    /// let (rx, tx) = multiproc::pipe_simplex::<u8>().unwrap();
    /// assert!(tx.writable() && !rx.writable());
    /// ```
    pub fn writable(&self) -> bool {
        self.writable
    }
}

impl<T: Serialize> Connection<T> {
    /// Sends one message. Handles inside `value` travel with it.
    ///
    /// ```
    /// multiproc::init();
    /// let (a, b) = multiproc::pipe::<(String, u32)>().unwrap();
    /// a.send(&("bob".to_string(), 12)).unwrap();
    /// assert_eq!(b.recv().unwrap(), ("bob".to_string(), 12));
    /// ```
    pub fn send(&self, value: &T) -> Result<()> {
        self.check_writable()?;
        self.raw.send_value(value)
    }
}

impl<T: DeserializeOwned> Connection<T> {
    /// Receives one message, blocking until it arrives. [`Error::Eof`] once the peer has
    /// closed and everything was read.
    ///
    /// ```
    /// multiproc::init();
    /// let (a, b) = multiproc::pipe::<String>().unwrap();
    /// a.send(&"end".to_string()).unwrap();
    /// assert_eq!(b.recv().unwrap(), "end");
    /// ```
    pub fn recv(&self) -> Result<T> {
        self.check_readable()?;
        self.raw.recv_value()
    }

    /// Receives one message without blocking the async runtime (the `tokio` feature): the
    /// async form of [`recv`](Connection::recv), with the same errors. It waits for this
    /// end's descriptor (its [`AsFd`] one) through tokio's reactor, so from the first time
    /// it waits, messages to this end travel through the socket, as for any user of the
    /// descriptor. See [`docs::asynchronous`](crate::docs::asynchronous).
    ///
    /// # Cancel safety
    /// Cancel-safe: a message is taken only inside the poll that returns it, so a future
    /// dropped before it completed has taken nothing, and the next receive gets the
    /// message.
    ///
    /// ```
    /// multiproc::init();
    /// fn answer(conn: multiproc::Connection<String>) {
    ///     let q: String = conn.recv().unwrap();
    ///     conn.send(&format!("{q}? 42")).unwrap();
    /// }
    /// let (here, there) = multiproc::pipe::<String>().unwrap();
    /// let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    /// rt.block_on(async {
    ///     let h = multiproc::spawn(answer, there).unwrap();
    ///     here.send(&"the answer".to_string()).unwrap();
    ///     assert_eq!(here.recv_async().await.unwrap(), "the answer? 42");
    ///     h.join().unwrap();
    /// });
    /// ```
    #[cfg(feature = "tokio")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
    pub async fn recv_async(&self) -> Result<T> {
        self.check_readable()?;
        let attempt = || self.raw.try_recv_value().transpose();
        // A message already there is taken before the descriptor is handed out.
        if let Some(r) = attempt() {
            return r;
        }
        crate::ipc::bell::wait_until(self.as_fd(), || {}, attempt).await
    }
}

/// A clone refers to the same end (like a second reference to a Python `Connection`): both
/// share one descriptor and one receive buffer, so they can be used from several threads.
/// Each message is sent and received whole. The end is closed when the last clone is
/// dropped.
///
/// ```
/// multiproc::init();
/// let (a, b) = multiproc::pipe::<u8>().unwrap();
/// let a2 = a.clone();
/// std::thread::spawn(move || a2.send(&1).unwrap()).join().unwrap();
/// assert_eq!(b.recv().unwrap(), 1);
/// ```
impl<T> Clone for Connection<T> {
    fn clone(&self) -> Self {
        Connection {
            raw: self.raw.clone(),
            readable: self.readable,
            writable: self.writable,
            _t: PhantomData,
        }
    }
}

impl<T> AsFd for Connection<T> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.raw.pollable_fd()
    }
}

/// Ready when a message or the end of file waits (see [`wait()`]).
///
/// ```
/// multiproc::init();
/// use multiproc::connection::Waitable;
/// let (a, b) = multiproc::pipe::<u8>().unwrap();
/// assert!(!b.is_ready().unwrap());
/// a.send(&1).unwrap();
/// assert!(b.is_ready().unwrap());
/// ```
impl<T> Waitable for Connection<T> {
    fn wait_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.as_fd())
    }

    fn is_ready(&self) -> Result<bool> {
        self.poll(Some(Duration::ZERO))
    }
}

impl<T> AsRawFd for Connection<T> {
    fn as_raw_fd(&self) -> RawFd {
        self.raw.pollable_fd().as_raw_fd()
    }
}

impl<T> Serialize for Connection<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Connection", 3)?;
        st.serialize_field("raw", &*self.raw)?;
        st.serialize_field("readable", &self.readable)?;
        st.serialize_field("writable", &self.writable)?;
        st.end()
    }
}

impl<'de, T> Deserialize<'de> for Connection<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(rename = "Connection")]
        struct W {
            raw: RawConn,
            readable: bool,
            writable: bool,
        }
        let w = W::deserialize(d)?;
        Ok(Connection::from_raw(w.raw, w.readable, w.writable))
    }
}
