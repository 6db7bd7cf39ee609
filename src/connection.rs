//! Pipes: two connected endpoints that carry whole messages, like Python's
//! `multiprocessing.Pipe`.
//!
//! [`pipe`] returns a duplex pair (both ends send and receive); [`pipe_simplex`] a one-way
//! pair `(reader, writer)`, like `Pipe(duplex=False)`. Messages never merge or split,
//! however large (1 GiB works), and handles inside a message (other connections, queues,
//! locks, …) travel as file descriptors next to the bytes. A [`Connection`] is itself a
//! handle: put it in a [`Process`](crate::Process)'s arguments and it arrives working in the
//! child, and several processes may share one end (each message is sent and received whole,
//! by exactly one receiver).
//!
//! Underneath is a Unix stream socket with length-prefixed frames, and beside it a ring in
//! shared memory per direction: messages up to 32 KiB without handles go through the ring
//! with no system call (millions a second), larger ones and those with handles through the
//! socket, in one order. The socket also wakes a receiver that sleeps and reports the end of
//! file when every copy of the peer is closed — or its process killed. Each end holds two
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
//! Errors: the peer gone and everything read → [`Error::Eof`]; the peer gone in the middle
//! of a message → [`Error::Io`] (`UnexpectedEof`); bytes that are not a frame or do not
//! decode as `T` → [`Error::Codec`]. Sending to a closed peer → [`Error::Io`]
//! (`BrokenPipe`), never a SIGPIPE.
//!
//! [`Listener`] and [`Client`] make connections between unrelated processes over Unix or
//! TCP sockets, authenticated with a shared `authkey` (mutual HMAC-SHA256 challenge, as in
//! Python 3.12+).

mod auth;
mod lane;
mod net;
mod wait;

pub(crate) use auth::send_busy;
pub(crate) use net::{accept_raw, authenticate_server, connect_raw, HANDSHAKE_TIMEOUT};
pub use net::{Address, Client, Listener, ToAddress};
pub use wait::{wait, Waitable};

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{codec, sys, Error, Result};
use lane::{Lane, K_INLINE, K_SOCKET};

const MAGIC: u32 = 0x3143_504d; // "MPC1" little-endian
/// The magic of a doorbell: a frame with no payload that only wakes a sleeping receiver.
const DOORBELL: u32 = 0x3144_504d; // "MPD1"
pub(crate) const HEADER: usize = 16;
/// Frames claiming more than this are refused as corrupt before anything is allocated.
pub(crate) const MAX_FRAME: u64 = 1 << 36; // 64 GiB
const READ_BUF: usize = 64 * 1024;
/// Large payloads are received into a buffer that grows as bytes arrive (so a lying header
/// cannot make us allocate), starting at this size.
const FIRST_CHUNK: usize = 64 << 20;

pub(crate) fn header(len: usize, nfds: usize) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    h[4..8].copy_from_slice(&(nfds as u32).to_le_bytes());
    h[8..16].copy_from_slice(&(len as u64).to_le_bytes());
    h
}

fn doorbell() -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[0..4].copy_from_slice(&DOORBELL.to_le_bytes());
    h
}

fn is_doorbell(h: &[u8]) -> bool {
    h.len() >= HEADER && h[..HEADER] == doorbell()
}

fn parse_header(h: &[u8], limit: u64) -> Result<(usize, usize)> {
    let magic = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
    let nfds = u32::from_le_bytes([h[4], h[5], h[6], h[7]]) as usize;
    let mut l = [0u8; 8];
    l.copy_from_slice(&h[8..16]);
    let len = u64::from_le_bytes(l);
    if magic != MAGIC {
        return Err(Error::codec(
            "garbage on the connection: bytes are not a multiproc frame",
        ));
    }
    if nfds > sys::MAX_FDS_PER_MESSAGE {
        return Err(Error::codec(format!("frame claims {nfds} handles")));
    }
    if len > limit {
        return Err(Error::codec(format!(
            "frame claims {len} bytes, more than the {limit}-byte limit"
        )));
    }
    Ok((len as usize, nfds))
}

/// The receiving half of a framed channel over a stream socket: a read buffer, the
/// descriptors that arrived, and the frame decoder.
pub(crate) struct ReadState {
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
    /// Whether reads take only the bytes of the frame being read, leaving the next one in
    /// the kernel (a pipe with lanes: other processes may read the next one, and the
    /// socket's readiness must stay meaningful).
    exact: bool,
    /// Where a message taken from a lane is copied.
    scratch: Vec<u8>,
    /// How long a lane receiver looks at its ring before it sleeps (adapted to how soon
    /// messages came after earlier sleeps).
    spin_for: Duration,
}

impl ReadState {
    pub(crate) fn new(limit: u64) -> ReadState {
        ReadState {
            buf: vec![0u8; READ_BUF].into_boxed_slice(),
            start: 0,
            end: 0,
            fds: VecDeque::new(),
            broken: false,
            limit: limit.min(MAX_FRAME),
            spin: true,
            exact: false,
            scratch: Vec::new(),
            spin_for: MIN_SPIN,
        }
    }

    fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// Reads more bytes into the buffer, wanting `need` more (in exact mode, no more than
    /// that). Returns false at end of stream.
    fn fill(&mut self, fd: BorrowedFd<'_>, need: usize) -> Result<bool> {
        if self.start > 0 && self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let end = self.end;
        let stop = if self.exact {
            (end + need.max(1)).min(self.buf.len())
        } else {
            self.buf.len()
        };
        let n = match sys::recv_some(fd, &mut self.buf[end..stop], &mut self.fds, self.spin) {
            Ok(n) => n,
            // The peer closed while bytes it had not read (a doorbell, say) waited on its
            // side: for us, the end of the stream.
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => 0,
            Err(e) => return Err(e.into()),
        };
        self.end += n;
        Ok(n > 0)
    }

    /// Appends up to `max` bytes to `v` straight from `fd`.
    fn read_spare(&self, fd: BorrowedFd<'_>, v: &mut Vec<u8>, max: usize) -> io::Result<usize> {
        sys::recv_into_spare(fd, v, max)
    }

    /// Reads one frame from `fd` and hands its payload and descriptors to `f`: small
    /// payloads are lent from the read buffer, large ones handed over in the vector they
    /// were received into.
    pub(crate) fn read_frame<R>(
        &mut self,
        fd: BorrowedFd<'_>,
        f: impl FnOnce(Payload<'_>, Vec<OwnedFd>) -> Result<R>,
    ) -> Result<R> {
        if self.broken {
            return Err(Error::codec(
                "the connection received garbage earlier and cannot be read further",
            ));
        }
        loop {
            while self.buffered() < HEADER {
                if !self.fill(fd, HEADER - self.buffered())? {
                    return if self.buffered() == 0 {
                        Err(Error::Eof)
                    } else {
                        Err(Self::truncated())
                    };
                }
            }
            if !is_doorbell(&self.buf[self.start..self.end]) {
                break;
            }
            self.start += HEADER;
        }
        let limit = self.limit;
        let (len, nfds) = match parse_header(&self.buf[self.start..self.start + HEADER], limit) {
            Ok(x) => x,
            Err(e) => {
                self.broken = true;
                return Err(e);
            }
        };
        if self.fds.len() < nfds {
            self.broken = true;
            return Err(Error::codec(format!(
                "frame announces {nfds} handles but {} arrived",
                self.fds.len()
            )));
        }
        let fds: Vec<OwnedFd> = self.fds.drain(..nfds).collect();
        self.start += HEADER;
        if len <= self.buf.len() {
            // Small frame: assemble it in the read buffer and decode in place.
            if self.start + len > self.buf.len() {
                let (s, e) = (self.start, self.end);
                self.buf.copy_within(s..e, 0);
                self.end -= s;
                self.start = 0;
            }
            while self.buffered() < len {
                if !self.fill(fd, len - self.buffered())? {
                    self.broken = true;
                    return Err(Self::truncated());
                }
            }
            let s = self.start;
            self.start += len;
            if self.start == self.end {
                self.start = 0;
                self.end = 0;
            }
            return f(Payload::Borrowed(&self.buf[s..s + len]), fds);
        }
        // Large frame: take what is buffered, then read straight into the payload vector,
        // growing it as bytes arrive.
        let mut payload: Vec<u8> = Vec::with_capacity(len.min(FIRST_CHUNK));
        let take = self.buffered().min(len);
        payload.extend_from_slice(&self.buf[self.start..self.start + take]);
        self.start += take;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        while payload.len() < len {
            if payload.len() == payload.capacity() {
                let grow = payload.capacity().min(len - payload.len());
                payload.reserve_exact(grow);
            }
            let want = len - payload.len();
            match self.read_spare(fd, &mut payload, want) {
                Ok(0) => {
                    self.broken = true;
                    return Err(Self::truncated());
                }
                Ok(_) => {}
                Err(e) => {
                    self.broken = true;
                    return Err(e.into());
                }
            }
        }
        f(Payload::Owned(payload), fds)
    }

    fn truncated() -> Error {
        Error::Io(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the peer closed the connection in the middle of a message",
        ))
    }
}

/// A received frame's bytes.
pub(crate) enum Payload<'a> {
    /// Lent from the read buffer.
    Borrowed(&'a [u8]),
    /// Received into its own vector (large frames).
    Owned(Vec<u8>),
}

/// An untyped framed channel over a stream socket: the machinery under [`Connection`], the
/// fork server and the child bootstrap. A pipe's ends also share [lanes](lane) in shared
/// memory that carry small messages without a system call.
pub(crate) struct RawConn {
    // Declared before `lane`: the socket is closed before the lane records the close, so
    // that a sender who looks after seeing the record finds the socket closed.
    fd: OwnedFd,
    rd: Mutex<ReadState>,
    wr: Mutex<WriteState>,
    lane: Option<LaneEnd>,
}

/// The sending half's scratch state.
struct WriteState {
    buf: Vec<u8>,
    /// When a lane sender last asked the kernel whether any receiver is left, and the
    /// receivers' close count it saw then.
    checked_at: Instant,
    closes_seen: u32,
}

impl WriteState {
    fn new() -> WriteState {
        WriteState {
            buf: Vec::new(),
            checked_at: Instant::now(),
            closes_seen: 0,
        }
    }
}

/// Shortest and longest look at a lane's ring before its receiver sleeps.
const MIN_SPIN: Duration = crate::shmsync::SPIN;
const MAX_SPIN: Duration = Duration::from_micros(120);

/// How often a lane sender asks the kernel whether its receivers are still there (the
/// ring itself cannot tell that a receiving process was killed).
const PEER_CHECK: Duration = Duration::from_millis(1);

/// This end's view of its pipe's lanes.
struct LaneEnd {
    lane: Arc<Lane>,
    /// The direction this end sends on, and the one it receives on.
    tx: Option<usize>,
    rx: Option<usize>,
    /// For an end whose descriptor was handed out for `poll(2)`: the descriptor to hand out.
    ready: OnceLock<Option<sys::Readiness>>,
    /// Whether `ready` was raised for messages that were in the ring at the hand-out.
    raised: AtomicBool,
}

impl Drop for LaneEnd {
    fn drop(&mut self) {
        if let Some(d) = self.rx {
            self.lane.note_rx_close(d);
        }
    }
}

/// What a receiver waiting on a lane found.
enum Ready {
    /// A record in the ring.
    Ring,
    /// Bytes on the socket that no record announced: read them as a frame.
    Socket,
    /// End of file, and the ring is empty.
    Eof,
    /// The other descriptor waited on is readable.
    Other,
    TimedOut,
}

/// What [`RawConn::wait_message_or`] found.
pub(crate) enum Wake {
    /// A message (or the end of the stream) can be read.
    Message,
    /// The other descriptor is readable.
    Other,
    TimedOut,
}

impl RawConn {
    pub(crate) fn new(fd: OwnedFd) -> RawConn {
        RawConn {
            fd,
            rd: Mutex::new(ReadState::new(MAX_FRAME)),
            wr: Mutex::new(WriteState::new()),
            lane: None,
        }
    }

    fn with_lane(fd: OwnedFd, lane: Arc<Lane>, tx: Option<usize>, rx: Option<usize>) -> RawConn {
        let mut c = RawConn::new(fd);
        c.rd.get_mut().unwrap_or_else(|p| p.into_inner()).exact = true;
        c.lane = Some(LaneEnd {
            lane,
            tx,
            rx,
            ready: OnceLock::new(),
            raised: AtomicBool::new(false),
        });
        c
    }

    /// Two ends of a duplex channel with lanes (crate-internal request/reply channels).
    /// Hand the second to another process with [`lane_fds`](Self::lane_fds) and rebuild it
    /// there with [`from_lane_fds`](Self::from_lane_fds).
    pub(crate) fn lane_pair() -> Result<(RawConn, RawConn)> {
        lane_pair(true)
    }

    /// The descriptors that carry the second end of a [`lane_pair`](Self::lane_pair) to
    /// another process: its socket and its lanes.
    pub(crate) fn lane_fds(&self) -> Option<[RawFd; 2]> {
        let le = self.lane.as_ref()?;
        Some([self.fd.as_raw_fd(), le.lane.fd().as_raw_fd()])
    }

    /// Rebuilds the second end of a [`lane_pair`](Self::lane_pair) from its descriptors.
    pub(crate) fn from_lane_fds(sock: OwnedFd, lane: OwnedFd) -> Result<RawConn> {
        let lane = Arc::new(Lane::from_fd(lane)?);
        Ok(RawConn::with_lane(sock, lane, Some(1), Some(0)))
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

    /// A connected pair over a fresh socket pair, without lanes.
    #[cfg(test)]
    pub(crate) fn pair() -> Result<(RawConn, RawConn)> {
        let (a, b) = sys::stream_pair()?;
        Ok((RawConn::new(a), RawConn::new(b)))
    }

    /// Sends `value` as one frame, with the descriptors of the handles inside it.
    pub(crate) fn send_value<T: Serialize + ?Sized>(&self, value: &T) -> Result<()> {
        let mut ws = self.wr.lock().unwrap_or_else(|p| p.into_inner());
        let mut buf = std::mem::take(&mut ws.buf);
        buf.clear();
        buf.extend_from_slice(&[0u8; HEADER]);
        let r = codec::encode_with_fds(value, &mut buf)
            .and_then(|fds| self.send_frame(&mut ws, &buf[HEADER..], &fds));
        if buf.capacity() <= (1 << 20) {
            ws.buf = buf;
        }
        r
    }

    /// Sends `bytes` as one frame.
    pub(crate) fn send_bytes(&self, bytes: &[u8], fds: &[RawFd]) -> Result<()> {
        let mut ws = self.wr.lock().unwrap_or_else(|p| p.into_inner());
        self.send_frame(&mut ws, bytes, fds)
    }

    /// Sends one frame: through the lane if there is one, else on the socket.
    fn send_frame(&self, ws: &mut WriteState, body: &[u8], fds: &[RawFd]) -> Result<()> {
        if fds.len() > sys::MAX_FDS_PER_MESSAGE {
            return Err(Error::invalid(format!(
                "a message can carry at most {} handles",
                sys::MAX_FDS_PER_MESSAGE
            )));
        }
        if let Some(le) = &self.lane {
            if let Some(d) = le.tx {
                return self.lane_send(ws, &le.lane, d, body, fds);
            }
        }
        let h = header(body.len(), fds.len());
        sys::send_all(self.fd.as_fd(), &[&h, body], fds).map_err(Error::Io)
    }

    fn lane_send(
        &self,
        ws: &mut WriteState,
        lane: &Lane,
        d: usize,
        body: &[u8],
        fds: &[RawFd],
    ) -> Result<()> {
        let sock = self.fd.as_fd();
        let gone = || sys::peer_hung_up(sock);
        // The ring accepts messages whether or not anyone will read them: ask the kernel
        // now and then (and whenever a receiver closed) whether any receiver is left.
        let closes = lane.rx_closes(d);
        let now = Instant::now();
        if closes != ws.closes_seen || now.duration_since(ws.checked_at) >= PEER_CHECK {
            ws.closes_seen = closes;
            ws.checked_at = now;
            if gone() {
                return Err(Error::Io(io::ErrorKind::BrokenPipe.into()));
            }
        }
        let _g = lane
            .lock_producer(d, None)
            .ok_or_else(|| Error::invalid("pipe lock"))?;
        if lane.is_broken(d) {
            return Err(Error::Io(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "another process died while sending a message on this pipe: it can carry \
                 nothing more",
            )));
        }
        if fds.is_empty() && body.len() <= lane.max_inline() && !lane.socket_only(d) {
            lane.wait_free(d, Lane::record_size(body.len()), gone)?;
            if lane.publish(d, K_INLINE, &[body]) {
                sys::send_all(sock, &[&doorbell()], &[]).map_err(Error::Io)?;
            }
            return Ok(());
        }
        lane.wait_free(d, Lane::record_size(0), gone)?;
        // The frame itself wakes a sleeping receiver.
        lane.publish(d, K_SOCKET, &[]);
        let h = header(body.len(), fds.len());
        lane.set_frame_busy(d, true);
        let r = sys::send_all(sock, &[&h, body], fds).map_err(Error::Io);
        lane.set_frame_busy(d, false);
        r
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
        if let Some(le) = &self.lane {
            if let Some(d) = le.rx {
                return self.lane_recv(&mut st, le, d, f);
            }
        }
        st.read_frame(self.fd.as_fd(), f)
    }

    fn lane_recv<R>(
        &self,
        st: &mut ReadState,
        le: &LaneEnd,
        d: usize,
        f: impl FnOnce(Payload<'_>, Vec<OwnedFd>) -> Result<R>,
    ) -> Result<R> {
        if st.broken {
            return Err(Error::codec(
                "the connection received garbage earlier and cannot be read further",
            ));
        }
        let lane = &*le.lane;
        let sock = self.fd.as_fd();
        let _g = lane
            .lock_consumer(d, None)
            .ok_or_else(|| Error::invalid("pipe lock"))?;
        loop {
            match lane.peek(d)? {
                Some(rec) if rec.kind == K_INLINE => {
                    let mut scratch = std::mem::take(&mut st.scratch);
                    scratch.clear();
                    lane.read_body(d, &rec, &mut scratch);
                    lane.advance(d, &rec);
                    le.after_take(d);
                    let r = f(Payload::Borrowed(&scratch), Vec::new());
                    if scratch.capacity() <= 64 << 10 {
                        st.scratch = scratch;
                    }
                    return r;
                }
                Some(rec) => {
                    debug_assert_eq!(rec.kind, K_SOCKET);
                    let mut taken = false;
                    let r = st.read_frame(sock, |p, fds| {
                        lane.advance(d, &rec);
                        taken = true;
                        f(p, fds)
                    });
                    if !taken {
                        // The frame was not there (garbage, or cut short): the record is
                        // spent all the same.
                        lane.advance(d, &rec);
                    }
                    le.after_take(d);
                    return r;
                }
                None => match self.lane_wait(st, lane, d, None, None)? {
                    Ready::Ring | Ready::TimedOut | Ready::Other => continue,
                    Ready::Socket => return st.read_frame(sock, f),
                    Ready::Eof => return Err(Error::Eof),
                },
            }
        }
    }

    /// Waits (consumer lock held) until the ring of direction `d` has a record, or the
    /// socket has unannounced bytes or its end, or `deadline` passes.
    fn lane_wait(
        &self,
        st: &mut ReadState,
        lane: &Lane,
        d: usize,
        deadline: Option<Instant>,
        also: Option<BorrowedFd<'_>>,
    ) -> Result<Ready> {
        if st.buffered() > 0 {
            return Ok(Ready::Socket);
        }
        // Look at the ring for a while: a sender streaming small messages, or a peer
        // answering a request, usually has the next message there within microseconds,
        // and not sleeping spares both sides the cost of a wake-up (tens of microseconds
        // on some virtual machines).
        let t0 = Instant::now();
        let patient = deadline.is_none_or(|dl| dl > t0);
        let spin = st.spin_for;
        let mut i = 0u32;
        while patient && i < u32::MAX {
            if !lane.is_empty(d) {
                // Found while looking: look a little less long next time.
                st.spin_for = (spin - spin / 16).max(MIN_SPIN);
                return Ok(Ready::Ring);
            }
            i += 1;
            if i.is_multiple_of(16) {
                let now = Instant::now();
                if now - t0 > spin || deadline.is_some_and(|dl| now >= dl) {
                    break;
                }
            }
            std::hint::spin_loop();
        }
        let r = self.lane_sleep(lane, d, deadline, also);
        if let Ok(Ready::Ring) = r {
            // It came after we went to sleep. If it came soon, looking a little longer
            // would have caught it: next time, look that long (up to a bound).
            let waited = t0.elapsed();
            st.spin_for = if waited < MAX_SPIN {
                (waited + waited / 4).clamp(MIN_SPIN, MAX_SPIN)
            } else {
                MIN_SPIN
            };
        }
        r
    }

    /// The sleeping part of [`lane_wait`](Self::lane_wait): raise the flag that makes
    /// senders ring, and sleep in `poll(2)` on the socket.
    fn lane_sleep(
        &self,
        lane: &Lane,
        d: usize,
        deadline: Option<Instant>,
        also: Option<BorrowedFd<'_>>,
    ) -> Result<Ready> {
        let sock = self.fd.as_fd();
        loop {
            lane.set_rx_sleep(d, true);
            if !lane.is_empty(d) {
                lane.set_rx_sleep(d, false);
                return Ok(Ready::Ring);
            }
            let mut h = [0u8; HEADER];
            let front = match sys::peek_nowait(sock, &mut h) {
                // The peer closed with bytes it had not read (doorbells) on its side.
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Some(0),
                r => r?,
            };
            match front {
                Some(0) => {
                    lane.set_rx_sleep(d, false);
                    return Ok(if lane.is_empty(d) {
                        Ready::Eof
                    } else {
                        Ready::Ring
                    });
                }
                Some(HEADER) if is_doorbell(&h) => {
                    sys::discard_exact(sock, HEADER)?;
                    continue;
                }
                Some(_) => {
                    lane.set_rx_sleep(d, false);
                    return Ok(if lane.is_empty(d) {
                        Ready::Socket
                    } else {
                        Ready::Ring
                    });
                }
                None => {}
            }
            let timeout = deadline.map(|dl| dl.saturating_duration_since(Instant::now()));
            let mask = if timeout == Some(Duration::ZERO) {
                0
            } else if let Some(other) = also {
                sys::wait_any_readable(&[sock, other], timeout)?
            } else {
                u32::from(sys::wait_readable(sock, timeout)?)
            };
            lane.set_rx_sleep(d, false);
            if !lane.is_empty(d) {
                return Ok(Ready::Ring);
            }
            if mask & 2 != 0 {
                return Ok(Ready::Other);
            }
            if mask == 0 {
                return Ok(Ready::TimedOut);
            }
        }
    }

    /// Waits until a message (or the end of the stream) can be read from this end, or
    /// `other` is readable (a pidfd: the peer process ended), or `timeout` passes. For
    /// crate-internal channels whose peer is one known process (pool workers).
    pub(crate) fn wait_message_or(
        &self,
        other: BorrowedFd<'_>,
        timeout: Option<Duration>,
    ) -> Result<Wake> {
        self.wait_ready(timeout, Some(other))
    }

    /// Waits until a message (or the end of the stream, or garbage) can be read, or `also`
    /// is readable, or `timeout` passes.
    fn wait_ready(&self, timeout: Option<Duration>, also: Option<BorrowedFd<'_>>) -> Result<Wake> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut st = self.rd.lock().unwrap_or_else(|p| p.into_inner());
        if st.buffered() > 0 || st.broken || !st.fds.is_empty() {
            return Ok(Wake::Message);
        }
        if let Some((le, d)) = self.lane.as_ref().and_then(|le| Some((le, le.rx?))) {
            let Some(_g) = le.lane.lock_consumer(d, deadline) else {
                return Ok(Wake::TimedOut);
            };
            return Ok(
                match self.lane_wait(&mut st, &le.lane, d, deadline, also)? {
                    Ready::Ring | Ready::Socket | Ready::Eof => Wake::Message,
                    Ready::Other => Wake::Other,
                    Ready::TimedOut => Wake::TimedOut,
                },
            );
        }
        drop(st);
        let sock = self.fd.as_fd();
        let mask = match also {
            Some(other) => sys::wait_any_readable(&[sock, other], timeout)?,
            None => u32::from(sys::wait_readable(sock, timeout)?),
        };
        Ok(match mask {
            0 => Wake::TimedOut,
            m if m & 1 != 0 => Wake::Message,
            _ => Wake::Other,
        })
    }

    /// The descriptor of this end's lanes, if it has any.
    pub(crate) fn lane_fd(&self) -> Option<BorrowedFd<'_>> {
        self.lane.as_ref().map(|le| le.lane.fd())
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
        Ok(matches!(self.wait_ready(timeout, None)?, Wake::Message))
    }

    /// Whether garbage or a truncated frame made this end unusable.
    pub(crate) fn is_broken(&self) -> bool {
        self.rd.lock().unwrap_or_else(|p| p.into_inner()).broken
    }

    pub(crate) fn has_buffered_input(&self) -> bool {
        match self.rd.try_lock() {
            Ok(st) => st.buffered() > 0 || !st.fds.is_empty(),
            Err(_) => true,
        }
    }

    /// The descriptor to hand out for `poll(2)`: the socket, or for an end that receives
    /// through a lane, a stand-in that is readable when the socket is or when messages that
    /// were in the ring at the first hand-out wait (later messages all come through the
    /// socket: see [`lane`]).
    fn pollable_fd(&self) -> BorrowedFd<'_> {
        let Some(le) = &self.lane else {
            return self.fd.as_fd();
        };
        let Some(d) = le.rx else {
            return self.fd.as_fd();
        };
        let ready = le.ready.get_or_init(|| {
            let r = sys::Readiness::new(self.fd.as_fd()).ok()?;
            if let Some(g) = le.lane.lock_producer(d, None) {
                le.lane.set_socket_only(d);
                drop(g);
            }
            if !le.lane.is_empty(d) {
                le.raised.store(true, Ordering::SeqCst);
                r.raise();
                if le.lane.is_empty(d) && le.raised.swap(false, Ordering::SeqCst) {
                    r.lower();
                }
            }
            Some(r)
        });
        match ready {
            Some(r) => r.fd(),
            // No epoll set could be made (out of descriptors): the socket, whose readiness
            // then misses the messages already in the ring.
            None => self.fd.as_fd(),
        }
    }
}

impl LaneEnd {
    /// After a record was taken: lower the hand-out descriptor once the messages it stood
    /// for are all read.
    fn after_take(&self, d: usize) {
        if self.raised.load(Ordering::Relaxed) && self.lane.is_empty(d) {
            if let Some(Some(r)) = self.ready.get() {
                if self.raised.swap(false, Ordering::SeqCst) {
                    r.lower();
                }
            }
        }
    }
}

impl AsFd for RawConn {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

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

/// Makes the two ends of a pipe over a fresh socket pair, with lanes. `duplex`: both ends
/// send and receive; else `(reader, writer)`.
fn lane_pair(duplex: bool) -> Result<(RawConn, RawConn)> {
    let (a, b) = sys::stream_pair()?;
    let lane = Arc::new(Lane::create()?);
    if duplex {
        Ok((
            RawConn::with_lane(a, lane.clone(), Some(0), Some(1)),
            RawConn::with_lane(b, lane, Some(1), Some(0)),
        ))
    } else {
        Ok((
            RawConn::with_lane(a, lane.clone(), None, Some(0)),
            RawConn::with_lane(b, lane, Some(0), None),
        ))
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

/// Ready when a message or the end of file waits (see [`wait`]).
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
        if self.raw.has_buffered_input() {
            return Err(serde::ser::Error::custom(
                "this connection holds received bytes not yet read; it cannot be sent",
            ));
        }
        use serde::ser::SerializeStruct;
        let lane = self.raw.lane.as_ref();
        let dir = |d: Option<usize>| d.map_or(u8::MAX, |d| d as u8);
        let mut st = s.serialize_struct("Connection", 6)?;
        st.serialize_field("fd", &codec::FdRef(self.raw.fd.as_fd()))?;
        st.serialize_field("readable", &self.readable)?;
        st.serialize_field("writable", &self.writable)?;
        st.serialize_field("lane", &lane.map(|l| codec::FdRef(l.lane.fd())))?;
        st.serialize_field("tx", &dir(lane.and_then(|l| l.tx)))?;
        st.serialize_field("rx", &dir(lane.and_then(|l| l.rx)))?;
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
            lane: Option<codec::FdOwned>,
            tx: u8,
            rx: u8,
        }
        let w = W::deserialize(d)?;
        let dir = |d: u8| match d {
            0 | 1 => Ok(Some(d as usize)),
            u8::MAX => Ok(None),
            _ => Err(serde::de::Error::custom("bad pipe direction")),
        };
        let raw = match w.lane {
            None => RawConn::new(w.fd.0),
            Some(l) => {
                let lane = Lane::from_fd(l.0).map_err(crate::codec::handle_error)?;
                RawConn::with_lane(w.fd.0, Arc::new(lane), dir(w.tx)?, dir(w.rx)?)
            }
        };
        Ok(Connection::from_raw(raw, w.readable, w.writable))
    }
}
