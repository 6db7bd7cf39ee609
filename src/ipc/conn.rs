//! The framed transport under every channel of the crate: [`RawConn`], an untyped
//! connection over a Unix stream socket with length-prefixed frames and descriptors
//! beside them, and for pipes the [lanes](super::lane) in shared memory that carry small
//! messages without a system call, beside a packet socket whose packets cannot be cut by
//! a process killed while sending or receiving (large messages travel on it as sealed
//! memory files: see the lanes' docs). [`Connection`](crate::Connection) is its typed public
//! face; the fork server, the child bootstrap, the pool's workers and the manager use it
//! directly.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::lane::{Lane, K_BIG, K_INLINE, K_SOCKET};
use super::wait::SLICE;
use crate::{codec, sys, Error, Result};

const MAGIC: u32 = 0x3143_504d; // "MPC1" little-endian
pub(crate) const HEADER: usize = 16;
/// Frames claiming more than this are refused as corrupt before anything is allocated.
pub(crate) const MAX_FRAME: u64 = 1 << 36; // 64 GiB
const READ_BUF: usize = 64 * 1024;
/// Receive and send buffers up to this size are kept for the next message (a pipe's large
/// messages up to the lanes' large-message limit reuse warm memory).
const KEEP_SCRATCH: usize = (2 << 20) + 4096;
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

// --- packets on a lane socket (see the lanes' module docs) -----------------------------------

/// The magic of a packet on a pipe's packet socket.
const PKT_MAGIC: u32 = 0x3250_504d; // "MPP2"
/// Bytes of a packet's header: magic, kind, body length, sequence number.
const PKT_HDR: usize = 24;
/// Packet kinds: the message's bytes follow the header; the message's bytes are in a
/// sealed memory file, the packet's first descriptor; a doorbell (wakes a sleeping
/// receiver, carries nothing).
const PKT_INLINE: u32 = 1;
const PKT_SPILLED: u32 = 2;
const PKT_BELL: u32 = 3;

fn packet_header(kind: u32, len: usize, seq: u64) -> [u8; PKT_HDR] {
    let mut h = [0u8; PKT_HDR];
    h[0..4].copy_from_slice(&PKT_MAGIC.to_le_bytes());
    h[4..8].copy_from_slice(&kind.to_le_bytes());
    h[8..16].copy_from_slice(&(len as u64).to_le_bytes());
    h[16..24].copy_from_slice(&seq.to_le_bytes());
    h
}

/// A packet's header: `(kind, len, seq)`, or `None` if the bytes are not one.
fn parse_packet_header(h: &[u8]) -> Option<(u32, u64, u64)> {
    let word = |a: usize, b: usize| h.get(a..b);
    let magic = u32::from_le_bytes(word(0, 4)?.try_into().ok()?);
    let kind = u32::from_le_bytes(word(4, 8)?.try_into().ok()?);
    let len = u64::from_le_bytes(word(8, 16)?.try_into().ok()?);
    let seq = u64::from_le_bytes(word(16, 24)?.try_into().ok()?);
    (magic == PKT_MAGIC && (PKT_INLINE..=PKT_BELL).contains(&kind)).then_some((kind, len, seq))
}

/// A message to send: its bytes, or a sealed memory file the codec wrote it to and its length.
enum Body<'a> {
    Bytes(&'a [u8]),
    Sealed(BorrowedFd<'a>, usize),
}

/// The sealed memory file a large message travels in: the codec's, or a copy made to send.
enum Spill<'a> {
    Sealed(BorrowedFd<'a>),
    Copied(OwnedFd),
}

impl Spill<'_> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Spill::Sealed(fd) => *fd,
            Spill::Copied(fd) => fd.as_fd(),
        }
    }
}

fn check_fd_count(fds: &[BorrowedFd<'_>]) -> Result<()> {
    if fds.len() > sys::MAX_FDS_PER_MESSAGE {
        return Err(Error::invalid(format!(
            "a message can carry at most {} handles",
            sys::MAX_FDS_PER_MESSAGE
        )));
    }
    Ok(())
}

fn unannounced() -> Error {
    Error::codec(
        "garbage on a pipe's socket (a packet that no message announced): it was discarded",
    )
}

/// What a receiver found on the socket for a `SOCKET` record.
enum Found {
    /// The record's packet, taken: its length in the read buffer, and its descriptors.
    Packet(usize, Vec<OwnedFd>),
    /// Its packet went with a receiver that was killed after taking it (or its sender
    /// gave up): skip the record.
    Lost,
    /// Its packet is in front, left there (only looked for).
    There,
    /// Its sender is between the record and the packet: `Other` (the descriptor waited on
    /// beside is readable) or `TimedOut`.
    NotYet(Ready),
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
    /// The longest message the receive in progress takes (`recv_bytes_max`), if bounded.
    msg_max: Option<u64>,
    /// Set once a message longer than a receive's bound was refused: as in Python, which
    /// closes the connection there, this end receives nothing more.
    refused: bool,
    /// Frames claiming more bytes than this are refused (and break the stream).
    limit: u64,
    /// Whether a read looks a few times without blocking before it sleeps.
    spin: bool,
    /// Where a message taken from a lane is copied.
    scratch: Vec<u8>,
    /// How long a lane receiver looks at its ring before it sleeps (adapted to how soon
    /// messages came after earlier sleeps).
    spin_for: Duration,
    /// When set, a read that finds no byte by then fails with `TimedOut`, however the
    /// bytes before it trickled in: one limit for a whole exchange (a handshake), which a
    /// socket's per-call time-out cannot give (each byte would start it anew).
    deadline: Option<Instant>,
}

impl ReadState {
    /// Keeps `scratch` (emptied by its next user) for the next message unless it grew
    /// past [`KEEP_SCRATCH`].
    fn keep_scratch(&mut self, scratch: Vec<u8>) {
        if scratch.capacity() <= KEEP_SCRATCH {
            self.scratch = scratch;
        }
    }

    pub(crate) fn new(limit: u64) -> ReadState {
        ReadState {
            buf: vec![0u8; READ_BUF].into_boxed_slice(),
            start: 0,
            end: 0,
            fds: VecDeque::new(),
            broken: false,
            msg_max: None,
            refused: false,
            limit: limit.min(MAX_FRAME),
            spin: true,
            scratch: Vec::new(),
            spin_for: MIN_SPIN,
            deadline: None,
        }
    }

    /// Waits until `fd` has bytes (or its end) to read, or fails once the deadline, if
    /// any, has passed.
    fn before_read(&self, fd: BorrowedFd<'_>) -> Result<()> {
        let Some(dl) = self.deadline else {
            return Ok(());
        };
        let left = dl.saturating_duration_since(Instant::now());
        if left.is_zero() || !sys::wait_readable(fd, Some(left))? {
            return Err(Error::Io(io::Error::new(
                io::ErrorKind::TimedOut,
                "the connection's deadline passed before its message came whole",
            )));
        }
        Ok(())
    }

    fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// Refuses a message of `len` bytes, before any of its bytes are copied, if it is
    /// longer than the bound of the receive in progress; this end then receives nothing
    /// more (Python closes the connection there).
    fn check_len(&mut self, len: u64) -> Result<()> {
        match self.msg_max {
            Some(max) if len > max => {
                self.refused = true;
                Err(Error::Io(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "bad message length: the message has {len} bytes, more than the \
                         maximum of {max}; this connection receives nothing more"
                    ),
                )))
            }
            _ => Ok(()),
        }
    }

    /// The error of a receive on an end that refused a message as too long.
    fn refused_error() -> Error {
        Error::Closed
    }

    /// Reads more bytes into the buffer. Returns false at end of stream.
    fn fill(&mut self, fd: BorrowedFd<'_>) -> Result<bool> {
        if self.start > 0 && self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        self.before_read(fd)?;
        let end = self.end;
        let n = match sys::recv_some(fd, &mut self.buf[end..], &mut self.fds, self.spin) {
            Ok(n) => n,
            // The peer closed while bytes it had not read waited on its side: for us, the
            // end of the stream.
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
        while self.buffered() < HEADER {
            if !self.fill(fd)? {
                return if self.buffered() == 0 {
                    Err(Error::Eof)
                } else {
                    Err(Self::truncated())
                };
            }
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
        self.check_len(len as u64)?;
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
                if !self.fill(fd)? {
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
        sys::memfd::prepare_fill(payload.spare_capacity_mut());
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
                sys::memfd::prepare_fill(payload.spare_capacity_mut());
            }
            let want = len - payload.len();
            if let Err(e) = self.before_read(fd) {
                self.broken = true;
                return Err(e);
            }
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

/// An untyped framed channel over a stream socket: the machinery under [`Connection`](crate::connection::Connection), the
/// fork server and the child bootstrap. A pipe's ends instead hold a packet socket and
/// share [lanes](crate::ipc::lane) in shared memory that carry small messages without a system call.
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
const MIN_SPIN: Duration = crate::ipc::wait::SPIN;
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
    /// A packet on the socket that no record announced (garbage: see `lane_sleep`).
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
    pub(crate) fn lane_fds(&self) -> Option<[BorrowedFd<'_>; 2]> {
        let le = self.lane.as_ref()?;
        Some([self.fd.as_fd(), le.lane.fd()])
    }

    /// Rebuilds the second end of a [`lane_pair`](Self::lane_pair) from its descriptors.
    pub(crate) fn from_lane_fds(sock: OwnedFd, lane: OwnedFd) -> Result<RawConn> {
        let lane = Arc::new(Lane::from_fd(lane)?);
        RawConn::lane_end(sock, lane, Some(1), Some(0))
    }

    /// [`with_lane`](Self::with_lane) for descriptors that came from another process: the
    /// socket must be a packet socket (the lanes' protocol rests on it).
    fn lane_end(
        sock: OwnedFd,
        lane: Arc<Lane>,
        tx: Option<usize>,
        rx: Option<usize>,
    ) -> Result<RawConn> {
        if !sys::is_packet_socket(sock.as_fd()) {
            return Err(Error::codec("a pipe's socket is not a packet socket"));
        }
        Ok(RawConn::with_lane(sock, lane, tx, rx))
    }

    /// Sets the largest frame this end accepts (at most [`MAX_FRAME`]); a bigger one is an
    /// [`Error::Codec`] and breaks the stream. Network servers use a small limit before a
    /// peer has authenticated.
    pub(crate) fn set_max_frame(&self, limit: u64) {
        let mut st = self.rd.lock().unwrap_or_else(|p| p.into_inner());
        st.limit = limit.min(MAX_FRAME);
    }

    /// Sets (or lifts, with `None`) a deadline for every read of this end: once it has
    /// passed, a receive that lacks bytes fails with a `TimedOut` [`Error::Io`] however
    /// slowly the peer kept sending. Network handshakes use it.
    pub(crate) fn set_read_deadline(&self, deadline: Option<Instant>) {
        let mut st = self.rd.lock().unwrap_or_else(|p| p.into_inner());
        st.deadline = deadline;
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

    /// Sends `value` as one frame, with the descriptors of the handles inside it. Through
    /// lanes, a value whose encoding is too large for their large-message area is encoded
    /// straight into the sealed memory file that carries it (written once, from the value's
    /// own memory), as a [`Queue`](crate::Queue)'s large items are.
    pub(crate) fn send_value<T: Serialize + ?Sized>(&self, value: &T) -> Result<()> {
        let mut ws = self.wr.lock().unwrap_or_else(|p| p.into_inner());
        let mut buf = std::mem::take(&mut ws.buf);
        buf.clear();
        let lane = self.lane.as_ref().and_then(|le| Some((&le.lane, le.tx?)));
        let r = match lane {
            Some((lane, d)) => {
                codec::encode_spilling(value, &mut buf, lane.max_big()).and_then(|(fds, file)| {
                    let fds = borrowed(&fds);
                    let body = match &file {
                        Some((seg, len)) => Body::Sealed(seg.as_fd(), *len),
                        None => Body::Bytes(&buf),
                    };
                    self.lane_send(&mut ws, lane, d, body, &fds)
                })
            }
            None => {
                buf.extend_from_slice(&[0u8; HEADER]);
                codec::encode_with_fds(value, &mut buf)
                    .and_then(|fds| self.send_frame(&mut ws, &buf[HEADER..], &borrowed(&fds)))
            }
        };
        if buf.capacity() <= KEEP_SCRATCH {
            ws.buf = buf;
        }
        r
    }

    /// The size past which a frame sent through this end's lanes travels as a sealed
    /// memory file ([`send_sealed`](Self::send_sealed)); `None` without lanes to send on.
    pub(crate) fn spill_threshold(&self) -> Option<usize> {
        let le = self.lane.as_ref()?;
        le.tx?;
        Some(le.lane.max_big())
    }

    /// Sends the `len` bytes of `file`, a sealed memory file, as one frame (an end with
    /// lanes to send on only: see [`spill_threshold`](Self::spill_threshold)), with the
    /// descriptors `fds`.
    pub(crate) fn send_sealed(
        &self,
        file: BorrowedFd<'_>,
        len: usize,
        fds: &[BorrowedFd<'_>],
    ) -> Result<()> {
        let mut ws = self.wr.lock().unwrap_or_else(|p| p.into_inner());
        match self.lane.as_ref().and_then(|le| Some((&le.lane, le.tx?))) {
            Some((lane, d)) => self.lane_send(&mut ws, lane, d, Body::Sealed(file, len), fds),
            None => Err(Error::invalid("a sealed frame needs lanes to travel")),
        }
    }

    /// Sends `bytes` as one frame.
    pub(crate) fn send_bytes(&self, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> Result<()> {
        let mut ws = self.wr.lock().unwrap_or_else(|p| p.into_inner());
        self.send_frame(&mut ws, bytes, fds)
    }

    /// Sends one frame: through the lane if there is one, else on the socket.
    fn send_frame(&self, ws: &mut WriteState, body: &[u8], fds: &[BorrowedFd<'_>]) -> Result<()> {
        if let Some(le) = &self.lane {
            if let Some(d) = le.tx {
                return self.lane_send(ws, &le.lane, d, Body::Bytes(body), fds);
            }
        }
        check_fd_count(fds)?;
        let h = header(body.len(), fds.len());
        sys::send_all(self.fd.as_fd(), &[&h, body], fds).map_err(Error::Io)
    }

    fn lane_send(
        &self,
        ws: &mut WriteState,
        lane: &Lane,
        d: usize,
        body: Body<'_>,
        fds: &[BorrowedFd<'_>],
    ) -> Result<()> {
        check_fd_count(fds)?;
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
        // A message too large for a record goes through the large-message area if it fits
        // there; a larger one, or one that must travel on the socket and does not fit a
        // packet, goes into a sealed memory file first, before the lock is taken (copying
        // it holds up nobody). One the codec already wrote to a sealed file
        // (`Body::Sealed`) goes in that file.
        let by_ring = fds.is_empty() && !lane.socket_only(d);
        let spill_limit = || -> Result<()> {
            if fds.len() >= sys::MAX_FDS_PER_MESSAGE {
                return Err(Error::invalid(format!(
                    "a large message can carry at most {} handles",
                    sys::MAX_FDS_PER_MESSAGE - 1
                )));
            }
            Ok(())
        };
        let (body, mut spill) = match body {
            Body::Bytes(b) => (b, None),
            Body::Sealed(file, len) => {
                spill_limit()?;
                (&[][..], Some((Spill::Sealed(file), len)))
            }
        };
        let spill_file = || -> Result<Option<(Spill, usize)>> {
            spill_limit()?;
            Ok(Some((
                Spill::Copied(sys::memfd::message_copy(body)?),
                body.len(),
            )))
        };
        let big = body.len() > lane.max_inline();
        if spill.is_none() && big && (!by_ring || body.len() > lane.max_big()) {
            spill = spill_file()?;
        }
        let _g = lane
            .lock_producer(d, None)
            .ok_or_else(|| Error::invalid("pipe lock"))?;
        if spill.is_none() && fds.is_empty() && !lane.socket_only(d) {
            let ring = if big {
                lane.send_big(d, body, gone)?
            } else {
                lane.wait_free(d, Lane::record_size(body.len()), gone)?;
                lane.publish(d, K_INLINE, &[body])
            };
            if ring {
                let bell = packet_header(PKT_BELL, 0, 0);
                sys::send_packet(sock, &[&bell], &[]).map_err(Error::Io)?;
            }
            return Ok(());
        }
        if spill.is_none() && big {
            // The direction turned socket-only since the look above.
            spill = spill_file()?;
        }
        // The record first, then its packet (see the lanes' protocol): the packet itself
        // wakes a sleeping receiver.
        lane.wait_free(d, Lane::record_size(8), gone)?;
        let seq = lane.next_seq(d);
        lane.publish(d, K_SOCKET, &[&seq.to_le_bytes()]);
        let r = match &spill {
            Some((file, len)) => {
                let mut all = Vec::with_capacity(fds.len() + 1);
                all.push(file.as_fd());
                all.extend_from_slice(fds);
                let h = packet_header(PKT_SPILLED, *len, seq);
                sys::send_packet(sock, &[&h], &all)
            }
            None => {
                let h = packet_header(PKT_INLINE, body.len(), seq);
                sys::send_packet(sock, &[&h, body], fds)
            }
        };
        // Queued, or failed: either way no receiver must wait for it any more.
        lane.set_sent(d, seq);
        r.map_err(Error::Io)
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
        self.recv_frame_max(None, f)
    }

    /// [`recv_frame`](Self::recv_frame) of a message of at most `max` bytes (`None`: any):
    /// a longer one is refused before its bytes are copied, and this end receives nothing
    /// more.
    fn recv_frame_max<R>(
        &self,
        max: Option<u64>,
        f: impl FnOnce(Payload<'_>, Vec<OwnedFd>) -> Result<R>,
    ) -> Result<R> {
        let mut st = self.rd.lock().unwrap_or_else(|p| p.into_inner());
        if st.refused {
            return Err(ReadState::refused_error());
        }
        st.msg_max = max;
        let r = match self.lane.as_ref().and_then(|le| Some((le, le.rx?))) {
            // Without a deadline, `lane_recv` waits until it has an outcome.
            Some((le, d)) => self
                .lane_recv(&mut st, le, d, None, f)
                .and_then(|r| r.ok_or(Error::Timeout)),
            None => st.read_frame(self.fd.as_fd(), f),
        };
        st.msg_max = None;
        r
    }

    /// Receives one frame and decodes it as `T`, only if that needs no waiting: `None` if
    /// nothing has arrived yet, or if another thread of this process is receiving from
    /// this end right now (it will take what comes). A frame whose first bytes have
    /// arrived is read whole, waiting for the rest, which its sender is writing. For the
    /// async receive, which waits for readiness on [`pollable_fd`](Self::pollable_fd).
    #[cfg(feature = "tokio")]
    pub(crate) fn try_recv_value<T: DeserializeOwned>(&self) -> Result<Option<T>> {
        let mut st = match self.rd.try_lock() {
            Ok(st) => st,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return Ok(None),
        };
        if st.refused {
            return Err(ReadState::refused_error());
        }
        fn decode<T: DeserializeOwned>(p: Payload<'_>, fds: Vec<OwnedFd>) -> Result<T> {
            match p {
                Payload::Borrowed(b) => codec::decode_with_fds(b, fds),
                Payload::Owned(v) => codec::decode_with_fds(&v, fds),
            }
        }
        let decode = decode::<T>;
        if let Some((le, d)) = self.lane.as_ref().and_then(|le| Some((le, le.rx?))) {
            return self.lane_recv(&mut st, le, d, Some(Instant::now()), decode);
        }
        let sock = self.fd.as_fd();
        if st.buffered() == 0
            && st.fds.is_empty()
            && !st.broken
            && !sys::wait_readable(sock, Some(Duration::ZERO)).map_err(Error::Io)?
        {
            return Ok(None);
        }
        st.read_frame(sock, decode).map(Some)
    }

    /// Takes the next record of direction `d` (and its frame): waits for one until
    /// `deadline` (`None`: for ever), giving `None` if none came by then or another
    /// process holds the receivers' lock at the deadline.
    fn lane_recv<R>(
        &self,
        st: &mut ReadState,
        le: &LaneEnd,
        d: usize,
        deadline: Option<Instant>,
        f: impl FnOnce(Payload<'_>, Vec<OwnedFd>) -> Result<R>,
    ) -> Result<Option<R>> {
        let lane = &*le.lane;
        let sock = self.fd.as_fd();
        let Some(_g) = lane.lock_consumer(d, deadline) else {
            return match deadline {
                Some(_) => Ok(None),
                None => Err(Error::invalid("pipe lock")),
            };
        };
        loop {
            match lane.peek(d)? {
                Some(rec) if rec.kind == K_INLINE => {
                    st.check_len(lane.message_len(d, &rec))?;
                    let mut scratch = std::mem::take(&mut st.scratch);
                    scratch.clear();
                    lane.read_body(d, &rec, &mut scratch);
                    lane.advance(d, &rec);
                    le.after_take(d);
                    let r = f(Payload::Borrowed(&scratch), Vec::new());
                    st.keep_scratch(scratch);
                    return r.map(Some);
                }
                Some(rec) if rec.kind == K_BIG => {
                    st.check_len(lane.message_len(d, &rec))?;
                    let mut scratch = std::mem::take(&mut st.scratch);
                    scratch.clear();
                    let got = lane.read_big(d, &rec, &mut scratch);
                    lane.advance(d, &rec);
                    le.after_take(d);
                    match got {
                        // Lost with a receiver killed while taking it: on to the next.
                        Ok(false) => st.keep_scratch(scratch),
                        Ok(true) => {
                            let r = f(Payload::Borrowed(&scratch), Vec::new());
                            st.keep_scratch(scratch);
                            return r.map(Some);
                        }
                        Err(e) => {
                            st.keep_scratch(scratch);
                            return Err(e);
                        }
                    }
                }
                Some(rec) => {
                    debug_assert_eq!(rec.kind, K_SOCKET);
                    let seq = lane.socket_seq(d, &rec);
                    let found = self.find_packet(st, lane, d, seq, true, None, None)?;
                    // Taken (or lost): the record is spent.
                    if let Found::Packet(..) | Found::Lost = found {
                        lane.advance(d, &rec);
                        le.after_take(d);
                    }
                    if let Found::Packet(n, fds) = found {
                        return Self::open_packet(st, n, fds, f).map(Some);
                    }
                }
                None => match self.lane_wait(st, lane, d, deadline, None)? {
                    Ready::TimedOut if deadline.is_some() => return Ok(None),
                    Ready::Ring | Ready::TimedOut | Ready::Other => continue,
                    Ready::Socket => {
                        // A packet no record announced (see `lane_sleep`): garbage.
                        sys::discard_packet(sock)?;
                        return Err(unannounced());
                    }
                    Ready::Eof => return Err(Error::Eof),
                },
            }
        }
    }

    /// Finds (consumer lock held) the packet numbered `seq` that a `SOCKET` record
    /// announced, following the lanes' protocol: takes it into the read buffer, or finds
    /// that it is lost. Doorbells and older packets in front of it are thrown away; garbage
    /// in front of it is thrown away and reported (the record stays for the next call).
    /// Without `take`, the packet is only looked for and left in front. While its sender is
    /// between the record and the packet, waits until `deadline` or until `also` is
    /// readable.
    #[allow(clippy::too_many_arguments)]
    fn find_packet(
        &self,
        st: &mut ReadState,
        lane: &Lane,
        d: usize,
        seq: u64,
        take: bool,
        deadline: Option<Instant>,
        also: Option<BorrowedFd<'_>>,
    ) -> Result<Found> {
        let sock = self.fd.as_fd();
        loop {
            // Read before looking at the socket: a packet counted as sent was queued.
            let sent = lane.sent(d);
            let mut h = [0u8; PKT_HDR];
            match sys::peek_nowait(sock, &mut h)? {
                // Every sender is gone: the packet will never come.
                Some(0) => return Ok(Found::Lost),
                Some(n) => match parse_packet_header(&h[..n]) {
                    None => {
                        sys::discard_packet(sock)?;
                        return Err(unannounced());
                    }
                    Some((kind, _, n)) if kind == PKT_BELL || n < seq => {
                        sys::discard_packet(sock)?;
                    }
                    Some((_, _, n)) if n > seq => return Ok(Found::Lost),
                    Some(_) if !take => return Ok(Found::There),
                    Some(_) => {
                        let mut fds = Vec::new();
                        return match sys::recv_packet(sock, &mut st.buf, &mut fds)? {
                            Some(sys::Packet::Got {
                                len,
                                cut: false,
                                fds_cut: false,
                            }) => Ok(Found::Packet(len, fds)),
                            // Another receiver cannot have taken it: we hold the lock.
                            _ => Err(unannounced()),
                        };
                    }
                },
                None if sent >= seq => return Ok(Found::Lost),
                None => {
                    // Its sender is between the record and the packet, or died there:
                    // wait for the socket, and look whether the sender's lock is free
                    // (taking over a dead sender's lock marks its packet as given up).
                    let slice = deadline.map_or(SLICE, |dl| {
                        dl.saturating_duration_since(Instant::now()).min(SLICE)
                    });
                    let mask = match also {
                        Some(other) => sys::wait_any_readable(&[sock, other], Some(slice))?,
                        None => u32::from(sys::wait_readable(sock, Some(slice))?),
                    };
                    if mask & 1 == 0 {
                        drop(lane.lock_producer(d, Some(Instant::now())));
                        if lane.sent(d) < seq {
                            if mask & 2 != 0 {
                                return Ok(Found::NotYet(Ready::Other));
                            }
                            if deadline.is_some_and(|dl| Instant::now() >= dl) {
                                return Ok(Found::NotYet(Ready::TimedOut));
                            }
                        }
                    }
                }
            }
        }
    }

    /// Hands the message in the packet just taken (`n` bytes in the read buffer, with
    /// `fds`) to `f`: bytes inside the packet, or a sealed memory file mapped in place.
    fn open_packet<R>(
        st: &mut ReadState,
        n: usize,
        fds: Vec<OwnedFd>,
        f: impl FnOnce(Payload<'_>, Vec<OwnedFd>) -> Result<R>,
    ) -> Result<R> {
        let Some((kind, len, _)) = parse_packet_header(&st.buf[..n.min(PKT_HDR)]) else {
            return Err(unannounced());
        };
        if len > st.limit {
            let limit = st.limit;
            return Err(Error::codec(format!(
                "message claims {len} bytes, more than the {limit}-byte limit"
            )));
        }
        st.check_len(len)?;
        match kind {
            PKT_INLINE if n == PKT_HDR + len as usize => {
                f(Payload::Borrowed(&st.buf[PKT_HDR..n]), fds)
            }
            PKT_SPILLED if n == PKT_HDR && !fds.is_empty() && len > 0 => {
                let mut fds = fds;
                let file = fds.remove(0);
                let mut bytes =
                    sys::memfd::MessageBytes::receive(file, len as usize).map_err(|e| {
                        Error::codec(format!("a large message's memory file is not valid: {e}"))
                    })?;
                // The packet was taken whole: a lent file goes back to its sender now.
                bytes.give_back();
                f(Payload::Borrowed(bytes.as_slice()), fds)
            }
            _ => Err(unannounced()),
        }
    }

    /// Waits (consumer lock held) until the ring of direction `d` has a record, or the
    /// socket has an unannounced packet or its end, or `deadline` passes.
    fn lane_wait(
        &self,
        st: &mut ReadState,
        lane: &Lane,
        d: usize,
        deadline: Option<Instant>,
        also: Option<BorrowedFd<'_>>,
    ) -> Result<Ready> {
        // Look at the ring for a while: a sender streaming small messages, or a peer
        // answering a request, usually has the next message there within microseconds,
        // and not sleeping spares both sides the cost of a wake-up (tens of microseconds
        // on some virtual machines).
        let t0 = Instant::now();
        let patient = deadline.is_none_or(|dl| dl > t0);
        let spin = st.spin_for;
        let mut i = 0u32;
        let yielding = crate::ipc::wait::yield_between_looks();
        while patient && i < u32::MAX {
            if !lane.is_empty(d) {
                // Found while looking: look a little less long next time.
                st.spin_for = (spin - spin / 16).max(MIN_SPIN);
                return Ok(Ready::Ring);
            }
            i += 1;
            if yielding || i.is_multiple_of(16) {
                let now = Instant::now();
                if now - t0 > spin || deadline.is_some_and(|dl| now >= dl) {
                    break;
                }
            }
            if yielding {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
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
            let mut h = [0u8; PKT_HDR];
            match sys::peek_nowait(sock, &mut h)? {
                Some(0) => {
                    lane.set_rx_sleep(d, false);
                    return Ok(if lane.is_empty(d) {
                        Ready::Eof
                    } else {
                        Ready::Ring
                    });
                }
                Some(n) if parse_packet_header(&h[..n]).is_some_and(|p| p.0 == PKT_BELL) => {
                    sys::discard_packet(sock)?;
                    continue;
                }
                // A packet: its record was published before it was sent, so an empty ring
                // now means that nobody announced it.
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
        let deadline = timeout.and_then(sys::deadline);
        let mut st = self.rd.lock().unwrap_or_else(|p| p.into_inner());
        if st.buffered() > 0 || st.broken || st.refused || !st.fds.is_empty() {
            return Ok(Wake::Message);
        }
        if let Some((le, d)) = self.lane.as_ref().and_then(|le| Some((le, le.rx?))) {
            let Some(_g) = le.lane.lock_consumer(d, deadline) else {
                return Ok(Wake::TimedOut);
            };
            loop {
                let mut r = self.lane_wait(&mut st, &le.lane, d, deadline, also)?;
                if let Ready::Ring = r {
                    match self.lane_ready(&mut st, le, d, deadline, also)? {
                        Some(ready) => r = ready,
                        None => continue,
                    }
                }
                return Ok(match r {
                    Ready::Ring | Ready::Socket | Ready::Eof => Wake::Message,
                    Ready::Other => Wake::Other,
                    Ready::TimedOut => Wake::TimedOut,
                });
            }
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
        self.recv_bytes_bounded(None)
    }

    /// [`recv_bytes`](Self::recv_bytes) of a message of at most `max` bytes (`None`: any).
    /// A longer one is refused before its bytes are copied or allocated, with an
    /// [`Error::Io`] of kind `InvalidData`, and this end receives nothing more: each
    /// later receive is an [`Error::Closed`] (Python closes the connection there).
    pub(crate) fn recv_bytes_bounded(&self, max: Option<usize>) -> Result<Vec<u8>> {
        self.recv_frame_max(max.map(|m| m as u64), |p, _fds| match p {
            Payload::Borrowed(b) => Ok(b.to_vec()),
            Payload::Owned(v) => Ok(v),
        })
    }

    /// With a record at the head of direction `d`'s ring (consumer lock held), whether its
    /// message can be taken now: `Ring` if so; `None` if it was lost with a receiver killed
    /// while taking it (the record is skipped: look again); `Other` or `TimedOut` if its
    /// sender is between the record and the packet when `also` is readable or `deadline`
    /// passes. So a wait that says "a message" is followed by a receive that does not block.
    fn lane_ready(
        &self,
        st: &mut ReadState,
        le: &LaneEnd,
        d: usize,
        deadline: Option<Instant>,
        also: Option<BorrowedFd<'_>>,
    ) -> Result<Option<Ready>> {
        let lane = &*le.lane;
        let Some(rec) = lane.peek(d)? else {
            return Ok(None);
        };
        let lost = match rec.kind {
            K_BIG => lane.big_freed(d, &rec),
            K_SOCKET => {
                let seq = lane.socket_seq(d, &rec);
                match self.find_packet(st, lane, d, seq, false, deadline, also)? {
                    Found::NotYet(r) => return Ok(Some(r)),
                    Found::Lost => true,
                    Found::There | Found::Packet(..) => false,
                }
            }
            _ => false,
        };
        if !lost {
            return Ok(Some(Ready::Ring));
        }
        lane.advance(d, &rec);
        le.after_take(d);
        Ok(None)
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
    /// socket: see [`lane`](crate::ipc::lane)).
    pub(crate) fn pollable_fd(&self) -> BorrowedFd<'_> {
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

/// Makes the two ends of a pipe over a fresh socket pair, with lanes. `duplex`: both ends
/// send and receive; else `(reader, writer)`.
pub(crate) fn lane_pair(duplex: bool) -> Result<(RawConn, RawConn)> {
    let (a, b) = sys::packet_pair()?;
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

/// A [`RawConn`] inside a message (an end of a pipe sent to another process): its socket
/// and its lanes' memory file travel as descriptors beside the bytes, with the lane
/// directions this end sends and receives on.
impl Serialize for RawConn {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        if self.has_buffered_input() {
            return Err(serde::ser::Error::custom(
                "this connection holds received bytes not yet read; it cannot be sent",
            ));
        }
        use serde::ser::SerializeStruct;
        let lane = self.lane.as_ref();
        let dir = |d: Option<usize>| d.map_or(u8::MAX, |d| d as u8);
        let mut st = s.serialize_struct("RawConn", 4)?;
        st.serialize_field("fd", &codec::FdRef(self.fd.as_fd()))?;
        st.serialize_field("lane", &lane.map(|l| codec::FdRef(l.lane.fd())))?;
        st.serialize_field("tx", &dir(lane.and_then(|l| l.tx)))?;
        st.serialize_field("rx", &dir(lane.and_then(|l| l.rx)))?;
        st.end()
    }
}

impl<'de> Deserialize<'de> for RawConn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(rename = "RawConn")]
        struct W {
            fd: codec::FdOwned,
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
        Ok(match w.lane {
            None => RawConn::new(w.fd.0),
            Some(l) => {
                let lane = Lane::from_fd(l.0).map_err(crate::codec::handle_error)?;
                RawConn::lane_end(w.fd.0, Arc::new(lane), dir(w.tx)?, dir(w.rx)?)
                    .map_err(crate::codec::handle_error)?
            }
        })
    }
}

/// Borrows owned descriptors for one send.
pub(crate) fn borrowed(fds: &[OwnedFd]) -> Vec<BorrowedFd<'_>> {
    fds.iter().map(|f| f.as_fd()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-way pipe's `(reader, writer)` and the lanes they share.
    fn simplex() -> (RawConn, RawConn, Arc<Lane>) {
        let (r, w) = lane_pair(false).unwrap();
        let lane = r.lane.as_ref().unwrap().lane.clone();
        (r, w, lane)
    }

    /// Sends a packet numbered `seq` with `body` inside, without a record.
    fn raw_packet(w: &RawConn, seq: u64, body: &[u8]) {
        let h = packet_header(PKT_INLINE, body.len(), seq);
        sys::send_packet(w.fd.as_fd(), &[&h, body], &[]).unwrap();
    }

    #[test]
    fn poll_is_not_ready_for_messages_lost_with_a_killed_receiver() {
        let (r, w, lane) = simplex();
        // A receiver took the packet of a large message and was killed before it moved
        // past the record (here the packet is taken off the socket by hand): nothing is
        // left to read, so poll must not say there is.
        w.send_bytes(&vec![7u8; 3 << 20], &[]).unwrap();
        let mut buf = vec![0u8; READ_BUF];
        let mut fds = Vec::new();
        sys::recv_packet(r.fd.as_fd(), &mut buf, &mut fds).unwrap();
        assert!(!r.poll(Some(Duration::ZERO)).unwrap());
        // The same for a message in the large-message area whose bytes such a receiver
        // freed.
        w.send_bytes(&vec![8u8; 100 << 10], &[]).unwrap();
        let rec = lane.peek(0).unwrap().unwrap();
        assert!(lane.read_big(0, &rec, &mut Vec::new()).unwrap());
        assert!(!r.poll(Some(Duration::ZERO)).unwrap());
        // A sender between its record and its packet: nothing to read yet.
        let g = lane.lock_producer(0, None).unwrap();
        let seq = lane.next_seq(0);
        lane.publish(0, K_SOCKET, &[&seq.to_le_bytes()]);
        assert!(!r.poll(Some(Duration::ZERO)).unwrap());
        raw_packet(&w, seq, b"late");
        lane.set_sent(0, seq);
        drop(g);
        assert!(r.poll(Some(Duration::ZERO)).unwrap());
        assert_eq!(r.recv_bytes().unwrap(), b"late");
        w.send_bytes(b"fine", &[]).unwrap();
        assert!(r.poll(Some(Duration::ZERO)).unwrap());
        assert_eq!(r.recv_bytes().unwrap(), b"fine");
    }

    #[test]
    fn a_wait_for_a_dead_senders_message_ends_with_its_death() {
        let (r, w, lane) = simplex();
        // A sender (a thread here, gone as a killed worker is) published a record and died
        // holding the senders' lock, before its packet. `w` stays open, as another copy of
        // the dead one's end would: no end of file tells the receiver.
        let l = lane.clone();
        std::thread::spawn(move || {
            let g = l.lock_producer(0, None).unwrap();
            let seq = l.next_seq(0);
            l.publish(0, K_SOCKET, &[&seq.to_le_bytes()]);
            std::mem::forget(g);
        })
        .join()
        .unwrap();
        // The pool's handler waits for a message or its worker's death (readable here).
        let (dead, pidfd) = sys::stream_pair().unwrap();
        sys::send_all(dead.as_fd(), &[b"x"], &[]).unwrap();
        let woke = r.wait_message_or(pidfd.as_fd(), Some(Duration::from_secs(60)));
        assert!(
            matches!(woke, Ok(Wake::Other)),
            "a message announced but never sent"
        );
        w.send_bytes(b"next", &[]).unwrap();
        assert_eq!(r.recv_bytes().unwrap(), b"next");
    }

    #[test]
    fn a_packet_taken_by_a_killed_receiver_is_skipped() {
        let (r, w, _) = simplex();
        // Larger than the lanes' large-message area takes: a sealed memory file.
        let big = vec![7u8; 3 << 20];
        // A receiver takes the packet of a large message and dies before it moves past
        // the record: here, the packet is taken off the socket by hand.
        w.send_bytes(&big, &[]).unwrap();
        let mut buf = vec![0u8; READ_BUF];
        let mut fds = Vec::new();
        assert!(matches!(
            sys::recv_packet(r.fd.as_fd(), &mut buf, &mut fds).unwrap(),
            Some(sys::Packet::Got { len: PKT_HDR, .. })
        ));
        assert_eq!(fds.len(), 1, "the sealed memory file");
        fds.clear();
        // The next receiver skips the lost one, with nothing on the socket behind it ...
        w.send_bytes(b"inline", &[]).unwrap();
        assert_eq!(r.recv_bytes().unwrap(), b"inline");
        // ... or with the next packet behind it.
        w.send_bytes(&big, &[]).unwrap();
        sys::recv_packet(r.fd.as_fd(), &mut buf, &mut fds).unwrap();
        fds.clear();
        let mut other = big.clone();
        other[(3 << 20) - 1] = 8;
        w.send_bytes(&other, &[]).unwrap();
        assert_eq!(r.recv_bytes().unwrap(), other);
    }

    #[test]
    fn a_record_whose_sender_gave_up_is_skipped() {
        let (r, w, lane) = simplex();
        // A sender published its record and never sent the packet (its send failed, or
        // it died and the next sender took its lock over: both mark it as sent).
        {
            let _g = lane.lock_producer(0, None).unwrap();
            let seq = lane.next_seq(0);
            lane.publish(0, K_SOCKET, &[&seq.to_le_bytes()]);
            lane.set_sent(0, seq);
        }
        w.send_bytes(b"next", &[]).unwrap();
        assert_eq!(r.recv_bytes().unwrap(), b"next");
    }

    #[test]
    fn a_receiver_waits_for_a_packet_announced_but_not_yet_sent() {
        let (r, w, lane) = simplex();
        let w = Arc::new(w);
        let (announced_tx, announced) = std::sync::mpsc::channel();
        let t = {
            let (w, lane) = (w.clone(), lane.clone());
            std::thread::spawn(move || {
                let _g = lane.lock_producer(0, None).unwrap();
                let seq = lane.next_seq(0);
                lane.publish(0, K_SOCKET, &[&seq.to_le_bytes()]);
                announced_tx.send(()).unwrap();
                // The receiver is (about to be) waiting for the packet.
                std::thread::sleep(Duration::from_millis(50));
                raw_packet(&w, seq, b"late");
                lane.set_sent(0, seq);
            })
        };
        announced.recv().unwrap();
        assert_eq!(r.recv_bytes().unwrap(), b"late");
        t.join().unwrap();
    }

    #[test]
    fn stale_and_unannounced_packets_are_thrown_away() {
        let (r, w, lane) = simplex();
        // A packet with an old number in front of a message's packet: dropped quietly.
        raw_packet(&w, 0, b"stale");
        w.send_bytes(&[1u8; 40_000], &[]).unwrap();
        assert_eq!(r.recv_bytes().unwrap(), vec![1u8; 40_000]);
        // A packet no record announced: an error for it, and the pipe goes on.
        raw_packet(&w, 99, b"nobody's");
        assert!(matches!(r.recv_bytes(), Err(Error::Codec(_))));
        w.send_bytes(b"fine", &[]).unwrap();
        assert_eq!(r.recv_bytes().unwrap(), b"fine");
        // A spilled packet whose file is missing: an error for that message only.
        {
            let _g = lane.lock_producer(0, None).unwrap();
            let seq = lane.next_seq(0);
            lane.publish(0, K_SOCKET, &[&seq.to_le_bytes()]);
            let h = packet_header(PKT_SPILLED, 100, seq);
            sys::send_packet(w.fd.as_fd(), &[&h], &[]).unwrap();
            lane.set_sent(0, seq);
        }
        assert!(matches!(r.recv_bytes(), Err(Error::Codec(_))));
        w.send_bytes(b"still fine", &[]).unwrap();
        assert_eq!(r.recv_bytes().unwrap(), b"still fine");
    }

    #[test]
    fn large_messages_with_handles_keep_them() {
        let (r, w, _) = simplex();
        let (x, y) = sys::stream_pair().unwrap();
        let big = vec![3u8; 1 << 20];
        w.send_bytes(&big, &[x.as_fd()]).unwrap();
        let (bytes, fds) = r.recv_with(|b, fds| Ok((b.to_vec(), fds))).unwrap();
        assert_eq!(bytes, big);
        assert_eq!(fds.len(), 1, "the handle, not the memory file");
        sys::send_all(fds[0].as_fd(), &[b"through"], &[]).unwrap();
        let mut buf = [0u8; 7];
        assert_eq!(rustix::io::read(&y, &mut buf).unwrap(), 7);
        assert_eq!(&buf, b"through");
    }
}
