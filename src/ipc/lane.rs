//! The shared-memory lanes beside a pipe's socket: one byte ring per direction in a memfd
//! segment that every holder of either end maps. Small messages travel through the ring
//! with no system call, messages up to 2 MiB through a large-message area beside it; the
//! socket keeps everything the kernel must see — descriptors inside messages, larger
//! messages, wake-ups of a sleeping receiver ("doorbells") and the
//! end of file when every copy of the peer is closed.
//!
//! # The socket carries packets, never a byte stream
//! The socket is a `SOCK_SEQPACKET` pair: each send is one packet that the kernel queues
//! whole or not at all, and each receive takes exactly one packet. Every packet is small
//! (a 24-byte header: magic, kind, length, sequence number; and at most
//! [`max_inline`](Lane::max_inline) bytes of body): a message larger than that travels as
//! a sealed, nameless memory file (`memfd`, sealed read-only) attached to its packet, which
//! the receiver maps and reads in place. So processes that share an end can be killed at
//! any instant without cutting anything: a sender dies before its packet is queued (nothing
//! was sent) or after (all of it was); a receiver dies before it takes a packet (the next
//! receiver gets it) or after (that one message went with it). Nothing is left in
//! /dev/shm either way: the memory file goes with its last descriptor. (A byte stream
//! cannot promise this: a sender killed in the middle of a large frame left its receivers
//! waiting for the rest for as long as another sender kept the socket open, and a receiver
//! killed in the middle of one left the rest to be read as garbage by the next.)
//!
//! # The large-message area
//! Messages too large for a record (over 32 KiB) and at most half of it (2 MiB), without
//! descriptors, travel through a second byte ring per direction after the record rings, the
//! large-message area: the sender reserves the message's bytes (moves `btail`), copies them
//! in, and publishes a `BIG` record holding their position and length; the receiver that
//! takes the record copies them out and frees them (moves `bhead` to their end) before it
//! moves past the record. The area's pages are touched only by such messages, and reused
//! warm from one to the next (a memory file per message would allocate and free every
//! page each time). A sender killed after reserving leaves a hole: receivers free up to
//! the end of each message they take, so it goes with the next one, and a sender that
//! finds no room while no record is left reclaims everything reserved. A `BIG` record whose
//! bytes are already freed (its receiver was killed between freeing them and moving past
//! the record) is skipped as lost with that receiver, like a packet.
//!
//! # Records and order
//! Every message, whichever way its bytes travel, has one record in its direction's ring:
//! `INLINE` carries the message's bytes; `SOCKET` carries the sequence number of the packet
//! on the socket that is this message; `BIG` the position and length of the message in the
//! large-message area. Receivers take records in ring order and read the
//! socket only when a record tells them to, so messages never overtake one another. Each
//! direction's ring is a record ring of [`record`] (its format, and `tail`/`head` index
//! words whose item count the lanes leave at zero); the large-message area is raw bytes
//! with its own plain 64-bit positions (`btail`/`bhead`).
//!
//! # Protocol
//! * Senders hold the direction's producer lock while they write a record, and for a
//!   `SOCKET` record also while they send its packet, so packets reach the socket in
//!   record order even when processes share an end. A record becomes visible only when
//!   `tail` moves past it: a sender killed mid-write leaves nothing.
//! * A `SOCKET` record is published before its packet is sent, and the packet's sequence
//!   number (taken from `seq`) is stored in `sent` once the packet is queued or its send
//!   failed. A sender that takes over the lock of one that died stores `seq` in `sent`:
//!   the dead one's packet was queued before it died or never will be.
//! * Receivers hold the consumer lock while they take a record (and its packet), and move
//!   `head` only after that. At a `SOCKET` record with number `n`, a receiver looks at the
//!   front packet: number `n` is taken; a doorbell or an older number (never sent by this
//!   crate) is thrown away; a newer number, or no packet while `sent >= n`, means that
//!   packet went with a receiver killed after taking it, and the record is skipped; no
//!   packet while `sent < n` means the sender is between its record and its packet, and the
//!   receiver waits for the socket (looking every [`SLICE`] whether that sender died).
//!   Because records come first, a packet found while the ring is empty was announced by
//!   nobody: it is garbage, thrown away and reported.
//! * A wait for a message (`poll`, the pool's wait for a reply or its worker's death) looks
//!   at the record in front the same way before it says "ready", without taking it: one
//!   whose message is lost is skipped, and one whose packet has not come yet is not ready
//!   (its wait ends when the sender's packet comes, the sender is found dead, or the other
//!   descriptor waited on is readable). So a receive after "ready" does not block.
//! * A receiver with nothing to read looks for a while, then raises `rx_sleep` and sleeps in
//!   `poll(2)` on the socket. A sender that finds `rx_sleep` raised after publishing lowers
//!   it and sends a doorbell frame. The socket's end of file (the peer's last copy closed,
//!   or its process killed) wakes the receiver too.
//! * A sender with no room waits on a futex (the receiver wakes it when it frees space and
//!   the sender's flag is up), checking between slices whether the receivers are gone.
//! * `SOCKET_ONLY` (set when a receiver hands out its descriptor for `poll(2)`): every
//!   message then travels as a `SOCKET` record and a frame, so the descriptor's readiness
//!   follows the messages.

use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::*};
use std::time::Instant;

use crate::ipc::record::{self, Bytes, Front, Idx, Records};
use crate::ipc::wait::{self, Guard, SLICE};
use crate::sys::memfd::Mapping;
use crate::{Error, Result};

const MAGIC: u32 = 0x4c50_504d; // "MPPL"
const VERSION: u32 = 6;
/// Bytes of header before the rings.
const HDR: usize = 4096;
/// Bytes of record ring per direction.
const CAP: u64 = 128 << 10;
/// Bytes of the large-message area per direction, after the two record rings. Its pages
/// are touched only by messages too large for a record, so a pipe that never carries one
/// costs no memory for it.
const BIG: u64 = 4 << 20;
/// Bytes of the whole segment.
const SEG: usize = HDR + 2 * CAP as usize + 2 * BIG as usize;

// Global header words.
const O_MAGIC: usize = 0;
const O_VERSION: usize = 4;
const O_CAP: usize = 8;
const O_BIG: usize = 16;

// Per-direction block, at `DIR0 + d * DIR_STRIDE`. `tail` and `head` each have a 128-byte
// pair of cache lines to themselves, as in the queues' ring (see `ring.rs`'s layout): a
// receiver that has caught up reads `tail` after every message, and the senders' lock and
// owner words on that line made each send wait for the line to come back several times.
// Words written by senders, by receivers, and each side's sleeping flag sit on separate
// lines.
const DIR0: usize = 512;
const DIR_STRIDE: usize = 1024;
const D_TAIL: usize = 0;
const D_HEAD: usize = 128;
const D_RX_SLEEP: usize = 256;
const D_TX_SLEEP: usize = 384;
const D_SPACE_SEQ: usize = 388;
/// The senders' mutex: lock word, parking word (+4), owner record (`D_POWNER`).
const D_PLOCK: usize = 512;
const D_POWNER: usize = 520;
const D_SEQ: usize = 528;
const D_SENT: usize = 536;
/// End of the large-message area's reserved bytes (senders').
const D_BTAIL: usize = 544;
/// The senders' copy of `tail` (see [`Records::tail_copy`]).
const D_PTAIL: usize = 552;
/// The receivers' mutex: lock word, parking word (+4), owner record (`D_COWNER`).
const D_CLOCK: usize = 640;
const D_COWNER: usize = 648;
/// Start of the large-message area's bytes still in use (receivers').
const D_BHEAD: usize = 656;
const D_FLAGS: usize = 768;
const D_RX_CLOSES: usize = 772;
const _: () = assert!(D_RX_CLOSES + 4 <= DIR_STRIDE && DIR0 + 2 * DIR_STRIDE <= HDR);

/// Direction flag: every message goes through the socket (see the module docs).
const FLAG_SOCKET_ONLY: u32 = 1;

/// Record kinds.
pub(crate) const K_INLINE: u32 = 1;
pub(crate) const K_SOCKET: u32 = 2;
pub(crate) const K_BIG: u32 = 3;
const K_MASK: u32 = 0xf;
/// The lanes' check marker in a record's kind word (see [`record`]).
const K_CHECK: u32 = 0x5a3c_0000;

/// A record at the head of a ring.
pub(crate) struct Record {
    pub(crate) kind: u32,
    head: Idx,
    len: u64,
}

/// The lanes of one pipe, mapped in this process.
pub(crate) struct Lane {
    mem: Mapping,
    /// This process's last look at each direction's `head` (used under its producer lock):
    /// `head` only moves forward, so a stale copy only underestimates the free space, and
    /// the shared word (on a line the receivers write after every message) is read only
    /// when the copy says there is no room.
    head_seen: [AtomicU64; 2],
}

impl Lane {
    /// New lanes for a pipe (two directions; a one-way pipe uses the first).
    pub(crate) fn create() -> Result<Lane> {
        let mem = Mapping::anonymous(SEG)?;
        mem.u64_at(O_CAP).store(CAP, Relaxed);
        mem.u64_at(O_BIG).store(BIG, Relaxed);
        mem.u32_at(O_VERSION).store(VERSION, Relaxed);
        mem.u32_at(O_MAGIC).store(MAGIC, Release);
        Ok(Lane::with(mem))
    }

    fn with(mem: Mapping) -> Lane {
        let head_seen = [0, 1].map(|d| AtomicU64::new(Self::records(d).head(&mem, Acquire).raw()));
        Lane { mem, head_seen }
    }

    /// Maps the lanes of a pipe whose end arrived from another process.
    pub(crate) fn from_fd(fd: OwnedFd) -> Result<Lane> {
        let bad = || Error::codec("a pipe's shared memory is not valid");
        let mem = Mapping::from_memfd(fd, SEG).map_err(|_| bad())?;
        if mem.u32_at(O_MAGIC).load(Acquire) != MAGIC
            || mem.u32_at(O_VERSION).load(Relaxed) != VERSION
            || mem.u64_at(O_CAP).load(Relaxed) != CAP
            || mem.u64_at(O_BIG).load(Relaxed) != BIG
            || mem.len() != SEG
        {
            return Err(bad());
        }
        Ok(Lane::with(mem))
    }

    /// The memory file, to send with an end of the pipe.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.mem.fd()
    }

    /// Largest message that travels inside a record.
    pub(crate) fn max_inline(&self) -> usize {
        (CAP / 4) as usize - 8
    }

    /// Largest message that travels through the large-message area (larger ones go as
    /// sealed memory files on the socket).
    pub(crate) fn max_big(&self) -> usize {
        (BIG / 2) as usize
    }

    #[inline]
    fn w32(&self, d: usize, off: usize) -> &AtomicU32 {
        self.mem.u32_at(DIR0 + d * DIR_STRIDE + off)
    }
    #[inline]
    fn w64(&self, d: usize, off: usize) -> &AtomicU64 {
        self.mem.u64_at(DIR0 + d * DIR_STRIDE + off)
    }
    /// Direction `d`'s record ring, with its index words `D_TAIL` and `D_HEAD` (which
    /// count no items: the lanes only need positions).
    #[inline]
    fn records(d: usize) -> Records {
        let dir = DIR0 + d * DIR_STRIDE;
        Records::new(
            Bytes::new(HDR + d * CAP as usize, CAP),
            K_CHECK,
            dir + D_TAIL,
            dir + D_HEAD,
            dir + D_PTAIL,
        )
    }
    /// Direction `d`'s large-message area: raw bytes, no records.
    #[inline]
    fn area(d: usize) -> Bytes {
        Bytes::new(HDR + 2 * CAP as usize + d * BIG as usize, BIG)
    }

    // --- flags -------------------------------------------------------------------------------

    /// Whether messages in direction `d` must all travel through the socket.
    #[inline]
    pub(crate) fn socket_only(&self, d: usize) -> bool {
        self.w32(d, D_FLAGS).load(Acquire) & FLAG_SOCKET_ONLY != 0
    }

    /// Makes every later message in direction `d` travel through the socket. Call with the
    /// producer lock held, so that no sender is between its look at the flag and its record.
    pub(crate) fn set_socket_only(&self, d: usize) {
        self.w32(d, D_FLAGS).fetch_or(FLAG_SOCKET_ONLY, SeqCst);
    }

    /// How many times a receiving end of direction `d` was closed somewhere (a hint for
    /// senders to look whether any receiver is left).
    #[inline]
    pub(crate) fn rx_closes(&self, d: usize) -> u32 {
        self.w32(d, D_RX_CLOSES).load(Relaxed)
    }

    /// Records that a receiving end of direction `d` was closed in this process.
    pub(crate) fn note_rx_close(&self, d: usize) {
        self.w32(d, D_RX_CLOSES).fetch_add(1, SeqCst);
    }

    // --- locks -------------------------------------------------------------------------------

    /// Takes direction `d`'s producer lock. A dead holder's lock is taken over: it left no
    /// visible record behind, and the packet of its last `SOCKET` record, if any, was
    /// queued before it died or never will be (see the module docs).
    pub(crate) fn lock_producer(&self, d: usize, deadline: Option<Instant>) -> Option<Guard<'_>> {
        let (g, got) = wait::lock(
            self.w32(d, D_PLOCK),
            self.w32(d, D_PLOCK + 4),
            self.w64(d, D_POWNER),
            deadline,
        )?;
        if got == wait::Got::OwnerDied {
            let last = self.w64(d, D_SEQ).load(SeqCst);
            self.w64(d, D_SENT).store(last, SeqCst);
            // Its copy of the tail may be behind what it published.
            Self::records(d).recopy_tail(&self.mem);
        }
        Some(g)
    }

    /// The sequence number of the next packet on direction `d`'s socket, taken (producer
    /// lock held). Numbers start at 1.
    pub(crate) fn next_seq(&self, d: usize) -> u64 {
        // Wrapping: the word is shared, and garbage another process wrote must not panic
        // here (real numbers never reach 2^64).
        let n = self.w64(d, D_SEQ).load(Relaxed).wrapping_add(1);
        self.w64(d, D_SEQ).store(n, SeqCst);
        n
    }

    /// Records that packet `n` of direction `d` was queued on the socket, or that its send
    /// failed (producer lock held): receivers stop waiting for it.
    pub(crate) fn set_sent(&self, d: usize, n: u64) {
        self.w64(d, D_SENT).store(n, SeqCst);
    }

    /// The number of the last packet of direction `d` that was queued or given up.
    pub(crate) fn sent(&self, d: usize) -> u64 {
        self.w64(d, D_SENT).load(SeqCst)
    }

    /// Takes direction `d`'s consumer lock.
    pub(crate) fn lock_consumer(&self, d: usize, deadline: Option<Instant>) -> Option<Guard<'_>> {
        let (g, _) = wait::lock(
            self.w32(d, D_CLOCK),
            self.w32(d, D_CLOCK + 4),
            self.w64(d, D_COWNER),
            deadline,
        )?;
        Some(g)
    }

    // --- sending (producer lock held) ------------------------------------------------------

    /// Bytes a record with a body of `len` bytes takes.
    #[inline]
    pub(crate) fn record_size(len: usize) -> u64 {
        record::size(len as u64)
    }

    /// `tail` as the senders know it (see [`Records::tail_copy`]).
    #[inline]
    fn ptail(&self, d: usize) -> Idx {
        Self::records(d).tail_copy(&self.mem)
    }

    /// Bytes free in direction `d`'s ring now, from the shared `head` and `tail` (the
    /// producer lock held); both copies are refreshed: garbage in the senders' copy of
    /// `tail` (another process can write anywhere in the segment) must not make a sender
    /// wait for room that never comes. Without garbage the copy and the word are equal.
    fn free(&self, d: usize) -> u64 {
        let r = Self::records(d);
        let t = r.recopy_tail(&self.mem);
        let h = r.head(&self.mem, SeqCst);
        self.head_seen[d].store(h.raw(), Relaxed);
        r.free(t, h)
    }

    /// Whether `need` bytes are free in direction `d`, looking at the shared `head` only
    /// when this process's last look says no.
    fn has_room(&self, d: usize, need: u64) -> bool {
        let seen = Idx::from_raw(self.head_seen[d].load(Relaxed));
        Self::records(d).free(self.ptail(d), seen) >= need || self.free(d) >= need
    }

    /// Waits until `need` bytes are free in direction `d`. `gone()` says whether every
    /// receiver has closed; it is asked whenever the wait lasts, and makes the wait fail
    /// with `BrokenPipe`.
    pub(crate) fn wait_free(&self, d: usize, need: u64, gone: impl Fn() -> bool) -> Result<()> {
        self.wait_space(d, || self.has_room(d, need), gone)
    }

    /// Waits until `room()` (receivers free space in direction `d` and wake its senders).
    fn wait_space(&self, d: usize, room: impl Fn() -> bool, gone: impl Fn() -> bool) -> Result<()> {
        while !room() {
            let _ = wait::wait_while(
                self.w32(d, D_SPACE_SEQ),
                self.w32(d, D_TX_SLEEP),
                || !room(),
                Some(Instant::now() + SLICE),
            );
            if !room() && gone() {
                return Err(Error::Io(std::io::ErrorKind::BrokenPipe.into()));
            }
        }
        Ok(())
    }

    fn big_free(&self, d: usize) -> u64 {
        let t = self.w64(d, D_BTAIL).load(Relaxed);
        let h = self.w64(d, D_BHEAD).load(SeqCst);
        BIG.saturating_sub(t.wrapping_sub(h))
    }

    /// Sends `body` (at most [`max_big`](Self::max_big) bytes) through direction `d`'s
    /// large-message area: reserves its bytes, copies them in, and publishes a `BIG` record
    /// that points at them (returns whether a receiver must be rung, as
    /// [`publish`](Self::publish)). A sender killed after reserving leaves a hole that
    /// receivers skip (they free up to the end of each message they take) and that the
    /// next sender reclaims once the ring is empty.
    pub(crate) fn send_big(&self, d: usize, body: &[u8], gone: impl Fn() -> bool) -> Result<bool> {
        debug_assert!(body.len() <= self.max_big());
        let need = record::round8(body.len() as u64);
        let tail = self.w64(d, D_BTAIL);
        let room = || {
            if self.big_free(d) >= need {
                return true;
            }
            // Nothing in the ring points into the area (a record is taken whole before the
            // head moves past it): whatever is still reserved is a dead sender's hole.
            if self.is_empty(d) {
                self.w64(d, D_BHEAD).store(tail.load(Relaxed), SeqCst);
            }
            self.big_free(d) >= need
        };
        self.wait_space(d, room, &gone)?;
        self.wait_free(d, Self::record_size(16), &gone)?;
        let mut pos = tail.load(Relaxed);
        // With nothing in the area, start again at its first byte: a pipe that carries one
        // large message at a time (requests and replies) keeps reusing the same warm pages
        // instead of walking onto fresh ones for a whole lap. (Only when `bhead == btail`:
        // no receiver is reading or about to free anything in the area then.)
        // Positions only grow (by at most 4 MiB a message: 2^64 bytes is never reached); one
        // that would overflow is garbage another process wrote.
        let lap = pos.checked_next_multiple_of(BIG).ok_or_else(big_garbage)?;
        if lap != pos
            && self
                .w64(d, D_BHEAD)
                .compare_exchange(pos, lap, SeqCst, SeqCst)
                .is_ok()
        {
            pos = lap;
        }
        tail.store(pos.checked_add(need).ok_or_else(big_garbage)?, SeqCst);
        Self::area(d).write(&self.mem, pos, body);
        let mut rec = [0u8; 16];
        rec[..8].copy_from_slice(&pos.to_le_bytes());
        rec[8..].copy_from_slice(&(body.len() as u64).to_le_bytes());
        Ok(self.publish(d, K_BIG, &[&rec]))
    }

    /// Writes a record of `kind` whose body is the concatenation of `parts` at the tail of
    /// direction `d` and makes it visible (room must have been waited for). Returns whether
    /// a receiver is asleep and must be woken with a doorbell (the flag is lowered: exactly
    /// one sender rings).
    pub(crate) fn publish(&self, d: usize, kind: u32, parts: &[&[u8]]) -> bool {
        Self::records(d).publish(&self.mem, kind, parts, 0, false);
        let sleep = self.w32(d, D_RX_SLEEP);
        sleep.load(SeqCst) != 0 && sleep.swap(0, SeqCst) != 0
    }

    // --- receiving (consumer lock held) ------------------------------------------------------

    /// Whether direction `d` holds no record.
    #[inline]
    pub(crate) fn is_empty(&self, d: usize) -> bool {
        Self::records(d).is_empty(&self.mem)
    }

    /// The record at the head of direction `d`, if any. Garbage in the ring (a record that
    /// fails its checks) empties the ring and is an [`Error::Codec`].
    pub(crate) fn peek(&self, d: usize) -> Result<Option<Record>> {
        let r = Self::records(d);
        let head = r.head(&self.mem, Relaxed);
        let tail = r.tail(&self.mem, Acquire);
        let (kind, len) = match r.front(&self.mem, head, tail) {
            Front::Empty => return Ok(None),
            Front::Record(h) => (h.kind & K_MASK, h.len),
            Front::Garbage => (0, 0),
        };
        if !(kind == K_INLINE || (kind == K_SOCKET && len == 8) || (kind == K_BIG && len == 16)) {
            r.skip_to(&self.mem, tail);
            self.wake_sender(d);
            return Err(Error::codec(
                "garbage in a pipe's shared memory: its contents were discarded",
            ));
        }
        Ok(Some(Record { kind, head, len }))
    }

    /// The packet number a `SOCKET` record carries.
    pub(crate) fn socket_seq(&self, d: usize, rec: &Record) -> u64 {
        Self::records(d).body_u64(&self.mem, rec.head.pos(), 0)
    }

    /// The length of the message an `INLINE` or `BIG` record carries (a `SOCKET`
    /// record's is in the header of its packet), read before any of its bytes.
    pub(crate) fn message_len(&self, d: usize, rec: &Record) -> u64 {
        if rec.kind == K_BIG {
            self.big_span(d, rec).1
        } else {
            rec.len
        }
    }

    /// Appends the body of `rec` (an `INLINE` record) to `out`.
    pub(crate) fn read_body(&self, d: usize, rec: &Record, out: &mut Vec<u8>) {
        Self::records(d).body_append(&self.mem, rec.head.pos(), 0, rec.len as usize, out);
    }

    /// Where the message of a `BIG` record lies: its position, length and (padded) end.
    fn big_span(&self, d: usize, rec: &Record) -> (u64, u64, u64) {
        let pos = Self::records(d).body_u64(&self.mem, rec.head.pos(), 0);
        let len = Self::records(d).body_u64(&self.mem, rec.head.pos(), 8);
        (pos, len, pos.saturating_add(record::round8(len)))
    }

    /// Whether the bytes of a `BIG` record's message are freed already: a receiver killed
    /// after freeing them (before it moved the head) took the message with it.
    pub(crate) fn big_freed(&self, d: usize, rec: &Record) -> bool {
        self.big_span(d, rec).2 <= self.w64(d, D_BHEAD).load(SeqCst)
    }

    /// Appends the message a `BIG` record points at to `out` and frees its bytes in the
    /// large-message area: `Ok(false)` if a receiver killed after freeing them (before it
    /// moved the head) took the message with it. A record pointing outside the reserved
    /// bytes is an [`Error::Codec`].
    pub(crate) fn read_big(&self, d: usize, rec: &Record, out: &mut Vec<u8>) -> Result<bool> {
        let (pos, len, end) = self.big_span(d, rec);
        let head = self.w64(d, D_BHEAD);
        let h = head.load(SeqCst);
        let t = self.w64(d, D_BTAIL).load(SeqCst);
        if len == 0 || len > BIG / 2 || t < h || t - h > BIG {
            return Err(big_garbage());
        }
        if end <= h {
            // Freed already: the receiver that took it was killed before moving the head.
            return Ok(false);
        }
        if pos < h || end > t {
            return Err(big_garbage());
        }
        Self::area(d).read(&self.mem, pos, len as usize, out);
        head.store(end, SeqCst);
        Ok(true)
    }

    /// Removes `rec` from the head of direction `d`.
    pub(crate) fn advance(&self, d: usize, rec: &Record) {
        Self::records(d).advance(&self.mem, rec.head, record::size(rec.len), 0);
        self.wake_sender(d);
    }

    #[inline]
    fn wake_sender(&self, d: usize) {
        wait::wake(self.w32(d, D_SPACE_SEQ), self.w32(d, D_TX_SLEEP));
    }

    /// Raises or lowers direction `d`'s "receiver asleep on the socket" flag.
    #[inline]
    pub(crate) fn set_rx_sleep(&self, d: usize, on: bool) {
        self.w32(d, D_RX_SLEEP).store(u32::from(on), SeqCst);
    }

    /// Test hook: where the message of a `BIG` record starts in the area.
    #[cfg(test)]
    fn records_body_pos(&self, rec: &Record) -> u64 {
        Self::records(0).body_u64(&self.mem, rec.head.pos(), 0)
    }

    /// Test hook: publishes raw bytes as a record header and body.
    #[cfg(test)]
    pub(crate) fn inject_garbage(&self, d: usize, bytes: &[u8]) {
        let r = Self::records(d);
        let t = self.ptail(d);
        r.bytes().write(&self.mem, t.pos(), bytes);
        r.set_tail(&self.mem, t.after(record::round8(bytes.len() as u64), 0));
    }
}

fn big_garbage() -> Error {
    Error::codec("garbage in a pipe's shared memory: a large message outside its area")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn records_come_out_in_order_and_wrap_around() {
        let lane = Lane::create().unwrap();
        let mut out = Vec::new();
        // Enough traffic to wrap the ring several times, with bodies of every length mod 8.
        for i in 0..20_000u32 {
            let body = vec![i as u8; (i % 300) as usize];
            let need = Lane::record_size(body.len());
            lane.wait_free(0, need, || false).unwrap();
            assert!(!lane.publish(
                0,
                K_INLINE,
                &[&body[..body.len() / 2], &body[body.len() / 2..]]
            ));
            if i % 3 == 0 {
                lane.publish(0, K_SOCKET, &[&u64::from(i).to_le_bytes()]);
            }
            let rec = lane.peek(0).unwrap().unwrap();
            assert_eq!(rec.kind, K_INLINE);
            out.clear();
            lane.read_body(0, &rec, &mut out);
            lane.advance(0, &rec);
            assert_eq!(out, body);
            if i % 3 == 0 {
                let rec = lane.peek(0).unwrap().unwrap();
                assert_eq!(rec.kind, K_SOCKET);
                assert_eq!(lane.socket_seq(0, &rec), u64::from(i));
                lane.advance(0, &rec);
            }
            assert!(lane.is_empty(0));
        }
        // The other direction was never touched.
        assert!(lane.peek(1).unwrap().is_none());
    }

    /// Positions of the large-message area near the end of the `u64` range (garbage another
    /// process wrote: real ones never get there) make a send an error, not an overflow.
    #[test]
    fn garbage_positions_of_the_large_message_area_are_an_error() {
        for v in [u64::MAX, u64::MAX - 8, u64::MAX - BIG + 2] {
            let lane = Lane::create().unwrap();
            lane.w64(0, D_BTAIL).store(v, SeqCst);
            lane.w64(0, D_BHEAD).store(v, SeqCst);
            let r = lane.send_big(0, &[7u8; 100], || false);
            assert!(matches!(r, Err(Error::Codec(_))), "{v}: {r:?}");
        }
    }

    /// The bodies of every record in direction `d`, taken.
    fn take_all(lane: &Lane, d: usize) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        while let Some(rec) = lane.peek(d).unwrap() {
            let mut out = Vec::new();
            lane.read_body(d, &rec, &mut out);
            lane.advance(d, &rec);
            got.push(out);
        }
        got
    }

    /// Senders keep their own copy of the tail; one that dies after publishing a record but
    /// before moving its copy must not make the next sender write over that record (or
    /// move the tail back): the next holder of the lock copies the tail again.
    #[test]
    fn a_sender_dead_between_its_two_tail_stores_loses_nothing() {
        let lane = std::sync::Arc::new(Lane::create().unwrap());
        lane.publish(0, K_INLINE, &[b"one"]);
        let l2 = lane.clone();
        std::thread::spawn(move || {
            let g = l2.lock_producer(0, None).unwrap();
            Lane::records(0).publish_shared_only(&l2.mem, K_INLINE, &[b"two"], 0);
            std::mem::forget(g);
        })
        .join()
        .unwrap();
        let g = lane.lock_producer(0, None).unwrap();
        lane.publish(0, K_INLINE, &[b"three"]);
        drop(g);
        let got = take_all(&lane, 0);
        assert_eq!(got, [b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]);
    }

    /// Garbage in the senders' copy of the tail that says "no room" must not make a send
    /// wait for ever: the sender copies the shared tail again when it finds no room.
    #[test]
    fn garbage_in_the_senders_copy_of_the_tail_is_corrected() {
        let lane = Lane::create().unwrap();
        lane.publish(0, K_INLINE, &[b"one"]);
        lane.w64(0, D_PTAIL).store(u64::MAX, SeqCst);
        lane.wait_free(0, Lane::record_size(3), || true).unwrap();
        lane.publish(0, K_INLINE, &[b"two"]);
        let got = take_all(&lane, 0);
        assert_eq!(got, [b"one".to_vec(), b"two".to_vec()]);
    }

    /// A packet number at the end of the `u64` range (garbage another process wrote) wraps
    /// instead of overflowing.
    #[test]
    fn a_garbage_packet_number_wraps() {
        let lane = Lane::create().unwrap();
        lane.w64(0, D_SEQ).store(u64::MAX, SeqCst);
        assert_eq!(lane.next_seq(0), 0);
        assert_eq!(lane.next_seq(0), 1);
    }

    #[test]
    fn a_sleeping_receiver_is_rung_exactly_once() {
        let lane = Lane::create().unwrap();
        lane.set_rx_sleep(1, true);
        assert!(lane.publish(1, K_INLINE, &[b"x"]));
        assert!(
            !lane.publish(1, K_INLINE, &[b"y"]),
            "only the first sender rings"
        );
    }

    #[test]
    fn garbage_in_the_ring_is_a_codec_error_and_is_discarded() {
        let lane = Lane::create().unwrap();
        lane.inject_garbage(0, &[0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8]);
        assert!(matches!(lane.peek(0), Err(Error::Codec(_))));
        assert!(lane.is_empty(0));
        // A record claiming more bytes than were published.
        let mut h = Vec::new();
        h.extend_from_slice(&1000u32.to_le_bytes());
        h.extend_from_slice(&(K_INLINE | K_CHECK).to_le_bytes());
        lane.inject_garbage(0, &h);
        assert!(matches!(lane.peek(0), Err(Error::Codec(_))));
        // The lane works again afterwards.
        lane.publish(0, K_INLINE, &[b"ok"]);
        let rec = lane.peek(0).unwrap().unwrap();
        let mut out = Vec::new();
        lane.read_body(0, &rec, &mut out);
        assert_eq!(out, b"ok");
    }

    #[test]
    fn a_full_ring_reports_a_gone_receiver() {
        let lane = Lane::create().unwrap();
        let body = vec![0u8; 1000];
        while lane.free(0) >= Lane::record_size(body.len()) {
            lane.publish(0, K_INLINE, &[&body]);
        }
        let t = Instant::now();
        let r = lane.wait_free(0, Lane::record_size(body.len()), || true);
        assert!(matches!(r, Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe));
        assert!(t.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn segments_that_are_not_lanes_are_refused() {
        let other = Mapping::anonymous(SEG).unwrap();
        let fd = other.fd().try_clone_to_owned().unwrap();
        assert!(matches!(Lane::from_fd(fd), Err(Error::Codec(_))));
    }

    #[test]
    fn large_messages_come_out_in_order_and_wrap_the_area() {
        let lane = Lane::create().unwrap();
        let mut out = Vec::new();
        let body = |i: u32| -> Vec<u8> {
            let len = lane.max_inline()
                + 1
                + (i as usize * 97_531) % (lane.max_big() / 2 - lane.max_inline());
            (0..len).map(|k| (k as u32 ^ i) as u8).collect()
        };
        // Sizes that wrap the 4 MiB area at every alignment, with small records between;
        // one message always stays in the area while the next goes in, so positions walk
        // on (an empty area starts again at its first byte).
        let mut wrapped = 0;
        for i in 0..41u32 {
            if i < 40 {
                let at = lane.w64(0, D_BTAIL).load(SeqCst);
                assert!(!lane.send_big(0, &body(i), || false).unwrap());
                wrapped += usize::from(at / BIG != (at + body(i).len() as u64 - 1) / BIG);
                lane.publish(0, K_INLINE, &[&i.to_le_bytes()]);
            }
            if i == 0 {
                continue;
            }
            let rec = lane.peek(0).unwrap().unwrap();
            assert_eq!(rec.kind, K_BIG);
            out.clear();
            assert!(lane.read_big(0, &rec, &mut out).unwrap());
            lane.advance(0, &rec);
            assert!(out == body(i - 1), "message {} changed", i - 1);
            let rec = lane.peek(0).unwrap().unwrap();
            out.clear();
            lane.read_body(0, &rec, &mut out);
            lane.advance(0, &rec);
            assert_eq!(out, (i - 1).to_le_bytes());
        }
        assert!(lane.is_empty(0));
        assert!(wrapped >= 3, "the area wrapped {wrapped} times");
    }

    #[test]
    fn one_large_message_at_a_time_reuses_the_start_of_the_area() {
        let lane = Lane::create().unwrap();
        let mut out = Vec::new();
        for i in 0..10u8 {
            let body = vec![i; lane.max_inline() + 1000 * usize::from(i) + 1];
            lane.send_big(0, &body, || false).unwrap();
            let rec = lane.peek(0).unwrap().unwrap();
            assert_eq!(
                lane.records_body_pos(&rec) % BIG,
                0,
                "message {i} starts at the area's first byte"
            );
            out.clear();
            assert!(lane.read_big(0, &rec, &mut out).unwrap());
            lane.advance(0, &rec);
            assert_eq!(out, body);
        }
        // Two in flight: the second goes after the first, not over it.
        let a = vec![1u8; lane.max_inline() + 1];
        let b = vec![2u8; lane.max_inline() + 1];
        lane.send_big(0, &a, || false).unwrap();
        lane.send_big(0, &b, || false).unwrap();
        for want in [a, b] {
            let rec = lane.peek(0).unwrap().unwrap();
            out.clear();
            assert!(lane.read_big(0, &rec, &mut out).unwrap());
            lane.advance(0, &rec);
            assert_eq!(out, want);
        }
    }

    #[test]
    fn a_dead_senders_hole_is_skipped_and_reclaimed() {
        let lane = Lane::create().unwrap();
        let big = vec![7u8; lane.max_big()];
        // A sender reserved half the area and died before publishing its record.
        let t = lane.w64(0, D_BTAIL).load(SeqCst);
        lane.w64(0, D_BTAIL).store(t + BIG / 2, SeqCst);
        // The next message still fits; a receiver taking it frees the hole too.
        lane.send_big(0, &big, || false).unwrap();
        let rec = lane.peek(0).unwrap().unwrap();
        let mut out = Vec::new();
        assert!(lane.read_big(0, &rec, &mut out).unwrap());
        lane.advance(0, &rec);
        assert_eq!(out, big);
        assert_eq!(lane.big_free(0), BIG);
        // Two holes fill the whole area: with the ring empty, the sender reclaims them
        // instead of waiting for ever.
        let t = lane.w64(0, D_BTAIL).load(SeqCst);
        lane.w64(0, D_BTAIL).store(t + BIG, SeqCst);
        assert_eq!(lane.big_free(0), 0);
        lane.send_big(0, &big, || true).unwrap();
        assert_eq!(lane.big_free(0), BIG - BIG / 2);
    }

    #[test]
    fn a_large_message_freed_by_a_dead_receiver_is_skipped() {
        let lane = Lane::create().unwrap();
        let body = vec![1u8; lane.max_inline() + 100];
        lane.send_big(0, &body, || false).unwrap();
        let rec = lane.peek(0).unwrap().unwrap();
        let mut out = Vec::new();
        // A receiver copied it and freed its bytes, then died before moving the head.
        assert!(lane.read_big(0, &rec, &mut out).unwrap());
        let again = lane.peek(0).unwrap().unwrap();
        out.clear();
        assert!(
            !lane.read_big(0, &again, &mut out).unwrap(),
            "taken already"
        );
        assert!(out.is_empty());
    }

    #[test]
    fn a_large_record_pointing_outside_its_area_is_a_codec_error() {
        let lane = Lane::create().unwrap();
        for (pos, len) in [(0u64, 100u64), (0, 0), (0, BIG), (1 << 40, 64)] {
            let mut rec = [0u8; 16];
            rec[..8].copy_from_slice(&pos.to_le_bytes());
            rec[8..].copy_from_slice(&len.to_le_bytes());
            lane.publish(0, K_BIG, &[&rec]);
            let r = lane.peek(0).unwrap().unwrap();
            let mut out = Vec::new();
            assert!(
                matches!(lane.read_big(0, &r, &mut out), Err(Error::Codec(_))),
                "pos {pos} len {len}"
            );
            lane.advance(0, &r);
        }
        // Garbage in the area's own words heals once the ring is empty.
        lane.w64(0, D_BHEAD).store(u64::MAX / 2, SeqCst);
        let body = vec![3u8; lane.max_inline() + 1];
        lane.send_big(0, &body, || true).unwrap();
        let r = lane.peek(0).unwrap().unwrap();
        let mut out = Vec::new();
        assert!(lane.read_big(0, &r, &mut out).unwrap());
        assert_eq!(out, body);
    }
}
