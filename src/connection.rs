//! Pipes: two connected endpoints that carry whole messages, like Python's
//! `multiprocessing.Pipe`.
//!
//! [`pipe`] returns a duplex pair (both ends send and receive); [`pipe_simplex`] a one-way
//! pair `(reader, writer)`, like `Pipe(duplex=False)`. Underneath is a Unix stream socket
//! with length-prefixed frames: messages never merge or split, however large (1 GiB works),
//! and handles inside a message (other connections, queues, locks, …) travel as file
//! descriptors next to the bytes. A [`Connection`] is itself a handle: put it in a
//! [`Process`](crate::Process)'s arguments and it arrives working in the child.
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
//! Errors: the peer gone and everything read → [`Error::Eof`]; the peer gone in the middle
//! of a message → [`Error::Io`] (`UnexpectedEof`); bytes that are not a frame or do not
//! decode as `T` → [`Error::Codec`]. Sending to a closed peer → [`Error::Io`]
//! (`BrokenPipe`), never a SIGPIPE.
//!
//! [`Listener`] and [`Client`] make connections between unrelated processes over Unix or
//! TCP sockets, authenticated with a shared `authkey` (mutual HMAC-SHA256 challenge, as in
//! Python 3.12+).

mod auth;
mod net;

pub(crate) use net::{accept_raw, authenticate_server, connect_raw};
pub use net::{Address, Client, Listener, ToAddress};

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{codec, sys, Error, Result};

const MAGIC: u32 = 0x3143_504d; // "MPC1" little-endian
const HEADER: usize = 16;
/// Frames claiming more than this are refused as corrupt before anything is allocated.
pub(crate) const MAX_FRAME: u64 = 1 << 36; // 64 GiB
const READ_BUF: usize = 64 * 1024;
/// Large payloads are received into a buffer that grows as bytes arrive (so a lying header
/// cannot make us allocate), starting at this size.
const FIRST_CHUNK: usize = 64 << 20;

fn header(len: usize, nfds: usize) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    h[4..8].copy_from_slice(&(nfds as u32).to_le_bytes());
    h[8..16].copy_from_slice(&(len as u64).to_le_bytes());
    h
}

fn parse_header(h: &[u8], limit: u64) -> Result<(usize, usize)> {
    let magic = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
    let nfds = u32::from_le_bytes([h[4], h[5], h[6], h[7]]) as usize;
    let mut l = [0u8; 8];
    l.copy_from_slice(&h[8..16]);
    let len = u64::from_le_bytes(l);
    if magic != MAGIC {
        return Err(Error::Codec(
            "garbage on the connection: bytes are not a multiproc frame".into(),
        ));
    }
    if nfds > sys::MAX_FDS_PER_MESSAGE {
        return Err(Error::Codec(format!("frame claims {nfds} handles")));
    }
    if len > limit {
        return Err(Error::Codec(format!(
            "frame claims {len} bytes, more than the {limit}-byte limit"
        )));
    }
    Ok((len as usize, nfds))
}

struct ReadState {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    fds: VecDeque<OwnedFd>,
    /// Set after a framing error: the stream cannot be resynchronised.
    broken: bool,
    /// Frames claiming more bytes than this are refused (and break the stream).
    limit: u64,
    /// Whether a read looks a few times without blocking before it sleeps.
    spin: bool,
}

impl ReadState {
    fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// Reads more bytes into the buffer. Returns false at end of stream.
    fn fill(&mut self, fd: BorrowedFd<'_>) -> Result<bool> {
        if self.start > 0 && self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let end = self.end;
        let n = sys::recv_some(fd, &mut self.buf[end..], &mut self.fds, self.spin)?;
        self.end += n;
        Ok(n > 0)
    }

    fn truncated() -> Error {
        Error::Io(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the peer closed the connection in the middle of a message",
        ))
    }
}

enum Payload<'a> {
    Borrowed(&'a [u8]),
    Owned(Vec<u8>),
}

/// An untyped framed channel over a stream socket: the machinery under [`Connection`], the
/// fork server and the child bootstrap.
pub(crate) struct RawConn {
    fd: OwnedFd,
    rd: Mutex<ReadState>,
    wr: Mutex<Vec<u8>>,
}

impl RawConn {
    pub(crate) fn new(fd: OwnedFd) -> RawConn {
        RawConn {
            fd,
            rd: Mutex::new(ReadState {
                buf: vec![0u8; READ_BUF].into_boxed_slice(),
                start: 0,
                end: 0,
                fds: VecDeque::new(),
                broken: false,
                limit: MAX_FRAME,
                spin: true,
            }),
            wr: Mutex::new(Vec::new()),
        }
    }

    /// Sets the largest frame this end accepts (at most [`MAX_FRAME`]); a bigger one is an
    /// [`Error::Codec`] and breaks the stream. Network servers use a small limit before a
    /// peer has authenticated.
    pub(crate) fn set_max_frame(&self, limit: u64) {
        let mut st = self.rd.lock().unwrap_or_else(|p| p.into_inner());
        st.limit = limit.min(MAX_FRAME);
    }

    /// Turns off the brief non-blocking look before a blocking read: for request/reply
    /// channels (the manager's), where the answer is never already on its way, looking
    /// only costs the peer CPU time it needs to answer.
    pub(crate) fn set_spin(&self, spin: bool) {
        let mut st = self.rd.lock().unwrap_or_else(|p| p.into_inner());
        st.spin = spin;
    }

    pub(crate) fn pair() -> Result<(RawConn, RawConn)> {
        let (a, b) = sys::stream_pair()?;
        Ok((RawConn::new(a), RawConn::new(b)))
    }

    /// Sends `value` as one frame, with the descriptors of the handles inside it.
    pub(crate) fn send_value<T: Serialize + ?Sized>(&self, value: &T) -> Result<()> {
        let mut buf = self.wr.lock().unwrap_or_else(|p| p.into_inner());
        buf.clear();
        buf.extend_from_slice(&[0u8; HEADER]);
        let fds = codec::encode_with_fds(value, &mut buf)?;
        if fds.len() > sys::MAX_FDS_PER_MESSAGE {
            return Err(Error::invalid(format!(
                "a message can carry at most {} handles",
                sys::MAX_FDS_PER_MESSAGE
            )));
        }
        let h = header(buf.len() - HEADER, fds.len());
        buf[..HEADER].copy_from_slice(&h);
        let r = sys::send_all(self.fd.as_fd(), &[&buf], &fds);
        if buf.capacity() > (1 << 20) {
            *buf = Vec::new();
        }
        r.map_err(Error::Io)
    }

    /// Sends `bytes` as one frame.
    pub(crate) fn send_bytes(&self, bytes: &[u8], fds: &[RawFd]) -> Result<()> {
        let _g = self.wr.lock().unwrap_or_else(|p| p.into_inner());
        let h = header(bytes.len(), fds.len());
        sys::send_all(self.fd.as_fd(), &[&h, bytes], fds).map_err(Error::Io)
    }

    /// Receives one frame and hands its payload and descriptors to `f`.
    pub(crate) fn recv_with<R>(
        &self,
        f: impl FnOnce(&[u8], Vec<OwnedFd>) -> Result<R>,
    ) -> Result<R> {
        self.recv_frame(|p, fds| match p {
            Payload::Borrowed(b) => f(b, fds),
            Payload::Owned(v) => f(&v, fds),
        })
    }

    /// Receives one frame: small payloads are lent from the read buffer, large ones handed
    /// over in the vector they were received into.
    fn recv_frame<R>(&self, f: impl FnOnce(Payload<'_>, Vec<OwnedFd>) -> Result<R>) -> Result<R> {
        let mut st = self.rd.lock().unwrap_or_else(|p| p.into_inner());
        if st.broken {
            return Err(Error::Codec(
                "the connection received garbage earlier and cannot be read further".into(),
            ));
        }
        let fd = self.fd.as_fd();
        while st.buffered() < HEADER {
            if !st.fill(fd)? {
                return if st.buffered() == 0 {
                    Err(Error::Eof)
                } else {
                    Err(ReadState::truncated())
                };
            }
        }
        let limit = st.limit;
        let (len, nfds) = match parse_header(&st.buf[st.start..st.start + HEADER], limit) {
            Ok(x) => x,
            Err(e) => {
                st.broken = true;
                return Err(e);
            }
        };
        if st.fds.len() < nfds {
            st.broken = true;
            return Err(Error::Codec(format!(
                "frame announces {nfds} handles but {} arrived",
                st.fds.len()
            )));
        }
        let fds: Vec<OwnedFd> = st.fds.drain(..nfds).collect();
        st.start += HEADER;
        if len <= st.buf.len() {
            // Small frame: assemble it in the read buffer and decode in place.
            if st.start + len > st.buf.len() {
                let (s, e) = (st.start, st.end);
                st.buf.copy_within(s..e, 0);
                st.end -= s;
                st.start = 0;
            }
            while st.buffered() < len {
                if !st.fill(fd)? {
                    st.broken = true;
                    return Err(ReadState::truncated());
                }
            }
            let s = st.start;
            st.start += len;
            if st.start == st.end {
                st.start = 0;
                st.end = 0;
            }
            return f(Payload::Borrowed(&st.buf[s..s + len]), fds);
        }
        // Large frame: take what is buffered, then read straight into the payload vector,
        // growing it as bytes arrive.
        let mut payload: Vec<u8> = Vec::with_capacity(len.min(FIRST_CHUNK));
        let take = st.buffered().min(len);
        payload.extend_from_slice(&st.buf[st.start..st.start + take]);
        st.start += take;
        if st.start == st.end {
            st.start = 0;
            st.end = 0;
        }
        while payload.len() < len {
            if payload.len() == payload.capacity() {
                let grow = payload.capacity().min(len - payload.len());
                payload.reserve_exact(grow);
            }
            let want = len - payload.len();
            match sys::recv_into_spare(fd, &mut payload, want) {
                Ok(0) => {
                    st.broken = true;
                    return Err(ReadState::truncated());
                }
                Ok(_) => {}
                Err(e) => {
                    st.broken = true;
                    return Err(e.into());
                }
            }
        }
        drop(st);
        f(Payload::Owned(payload), fds)
    }

    /// Receives one frame and decodes it as `T` (handles inside are rebuilt).
    pub(crate) fn recv_value<T: DeserializeOwned>(&self) -> Result<T> {
        self.recv_with(|bytes, fds| codec::decode_with_fds(bytes, fds))
    }

    /// Receives one frame's bytes; descriptors sent with it are closed.
    pub(crate) fn recv_bytes(&self) -> Result<Vec<u8>> {
        self.recv_frame(|p, _fds| match p {
            Payload::Borrowed(b) => Ok(b.to_vec()),
            Payload::Owned(v) => Ok(v),
        })
    }

    /// Whether a frame (or end of stream) can be read without blocking, waiting up to
    /// `timeout` (`None`: forever).
    pub(crate) fn poll(&self, timeout: Option<Duration>) -> Result<bool> {
        {
            let st = self.rd.lock().unwrap_or_else(|p| p.into_inner());
            if st.buffered() > 0 || st.broken {
                return Ok(true);
            }
        }
        Ok(sys::wait_readable(self.fd.as_fd(), timeout)?)
    }

    pub(crate) fn has_buffered_input(&self) -> bool {
        match self.rd.try_lock() {
            Ok(st) => st.buffered() > 0 || !st.fds.is_empty(),
            Err(_) => true,
        }
    }
}

impl AsFd for RawConn {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// One end of a pipe, carrying messages of type `T` (Python's `multiprocessing.Connection`).
///
/// `send` and `recv` take `&self`; a connection may be shared between threads (each message
/// is sent and received whole). It implements [`AsFd`]/[`AsRawFd`] (Python's `fileno()`), so
/// it can be waited on with `poll(2)` next to other descriptors.
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
            .field("fd", &self.raw.fd.as_raw_fd())
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
    let (a, b) = RawConn::pair()?;
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
    let (a, b) = RawConn::pair()?;
    // The kernel enforces the direction too.
    let _ = rustix::net::shutdown(&a.fd, rustix::net::Shutdown::Write);
    let _ = rustix::net::shutdown(&b.fd, rustix::net::Shutdown::Read);
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
    /// assert_eq!(b.recv_bytes().unwrap(), vec![5]); // postcard's encoding of 5u32
    /// ```
    pub fn recv_bytes(&self) -> Result<Vec<u8>> {
        self.check_readable()?;
        self.raw.recv_bytes()
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
        self.raw.fd.as_fd()
    }
}

impl<T> AsRawFd for Connection<T> {
    fn as_raw_fd(&self) -> RawFd {
        self.raw.fd.as_raw_fd()
    }
}

impl<T> Serialize for Connection<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        if self.raw.has_buffered_input() {
            return Err(serde::ser::Error::custom(
                "this connection holds received bytes not yet read; it cannot be sent",
            ));
        }
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Connection", 3)?;
        st.serialize_field("fd", &codec::FdRef(self.raw.fd.as_fd()))?;
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
            fd: codec::FdOwned,
            readable: bool,
            writable: bool,
        }
        let w = W::deserialize(d)?;
        Ok(Connection::from_raw(
            RawConn::new(w.fd.0),
            w.readable,
            w.writable,
        ))
    }
}
