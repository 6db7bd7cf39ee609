//! The shared-memory ring under every queue: a byte ring of length-prefixed records in a
//! memfd segment, two robust locks (one for producers, one for consumers) and futex
//! wake-ups. No serde here: records are bytes.
//!
//! # Layout
//! A 4 KiB header of atomics, then `cap` bytes of ring (`cap` a power of two): a record
//! ring of [`record`], whose `tail` and `head` words ([`Idx`]) pack an item count (for
//! `qsize`, `maxsize` and the overflow's limit), the `DIVERTED` flag (below) and a byte
//! position, so that a record and its count are published (or consumed) by a single
//! atomic store: a process killed at any instant leaves them consistent.
//!
//! # Records
//! As every record of [`record`] (an 8-byte header with a check marker, `len` bytes,
//! padded to 8). Kinds: `MSG` (a whole message), or `FIRST`, `MORE`…, `LAST`
//! for a message streamed in chunks because it is larger than half the ring. A record with
//! `HAS_FDS` starts with the 8-byte tag of the datagram that carries its descriptors on the
//! side socket; a `FIRST` record then carries the message's total length (8 bytes).
//!
//! # Overflow (queues without an item limit)
//! A queue without `maxsize` never makes `put` wait: what does not fit the ring goes to a
//! second ring, the *overflow*, in a sparse memfd of 64 GiB whose pages exist only while
//! they hold data (consumers give them back with `FALLOCATE_PUNCH_HOLE` as they read).
//! When the main ring is full, a producer writes a `DIVERT` record in it (room for one is
//! always kept) and raises the `DIVERTED` bit of the main ring's `tail`, in the same store;
//! later items go to the overflow. Once the main ring is at least half free again, a
//! producer writes a `RETURN` record in the overflow and clears the bit. A consumer that
//! reads `DIVERT` raises the same bit in the main ring's `head` (again in the store that
//! consumes the record) and reads the overflow until its `RETURN`: items come out in the
//! order they were put. The two steps of a return (publish `RETURN`, clear the bit) are
//! two stores; the process doing it first records where both rings will stand after it,
//! so that the next holder of the lock, if it died in between, finishes the return.
//!
//! # Protocol
//! * A producer holds the producer lock while it writes, and makes a record visible only by
//!   advancing `tail` after every byte is written: one killed mid-write leaves nothing.
//! * A consumer holds the consumer lock while it reads, and advances `head` only after it
//!   has copied the record out: one killed mid-read leaves the record to the next consumer.
//!   (A streamed message is consumed chunk by chunk; a consumer killed in the middle of one
//!   loses that one message, whose remaining chunks the next consumer skips.)
//! * One producer and one consumer never wait for each other's lock: they meet only at
//!   `head` and `tail`. Producers keep a copy of `tail` on their own cache line and never
//!   load the shared word (see [`Records::tail_copy`]); a producer that takes the lock over from
//!   a dead holder copies `tail` again.
//! * The lock holder that must wait (for data, for space) sleeps on a futex after raising a
//!   "sleeping" flag; the other side wakes it only if that flag is up, so the busy path
//!   makes no system call. Sleeps are cut into slices so that a peer that died before
//!   waking us, or while holding a lock, is noticed.
//! * A lock's word holds its holder's pid; a waiter that finds the holder dead takes the
//!   lock over. A consumer waiting for the next chunk of a stream whose producer died (or
//!   gave up) drops the partial message and goes on.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::*};
use std::time::Instant;

use crate::ipc::record::{self, Bytes, Front, Idx, Records, COUNT_MASK};
use crate::ipc::wait::{self, Got, Guard, Waited, SLICE};
use crate::sys;
use crate::sys::futex;
use crate::sys::memfd::{self, Mapping, MessageBytes};
use crate::{Error, Result};

const MAGIC: u32 = 0x5551_504d; // "MPQU"
const VERSION: u32 = 4;
/// Bytes of header before the ring.
const HDR: usize = 4096;

// Header offsets. `tail` and `head` each have a 128-byte pair of cache lines to themselves
// (the pair a core's adjacent-line prefetcher fetches together). A consumer that has caught
// up with the producers reads `tail` after every item, which moves its line to the
// consumer's core; with the producers' lock and owner words on that line, a put's lock and
// unlock (two atomic read-modify-writes, two stores of the owner record) had to take the
// line back too, not just its store of `tail` (BENCHMARKS.md, "Why `queue_8b_1p1c` is
// bimodal"). Each side's lock words sit far from both.
const O_MAGIC: usize = 0;
const O_VERSION: usize = 4;
const O_CAP: usize = 8;
const O_MAXSIZE: usize = 16;
const O_FLAGS: usize = 24;
const O_TAIL: usize = 128;
const O_HEAD: usize = 256;
const O_DATASEQ: usize = 384;
const O_SPACESEQ: usize = 512;
const O_DONE: usize = 640;
const O_JOINSEQ: usize = 648;
const O_JOINWAIT: usize = 652;
const O_SHUTDOWN: usize = 656;
const O_PSLEEP: usize = 768;
const O_CSLEEP: usize = 896;
/// Raised by an async waiter (see [`crate::ipc::bell`]); on the line of `O_CSLEEP`, which
/// producers read already.
const O_ARMED: usize = 900;
/// The producers' words, after the consumers' slots. Their mutex: lock word, parking word
/// (+4), owner record (`O_POWNER`).
const O_PLOCK: usize = 3072;
const O_POWNER: usize = 3080;
const O_FDTAG: usize = 3088;
/// Where the rings stand after a producer's return from the overflow (overflow tail, then
/// main tail): see the module docs.
const O_PMARK_OVF: usize = 3096;
const O_PMARK_MAIN: usize = 3104;
/// The producers' copy of `tail` (see [`Records::tail_copy`]).
const O_PTAIL: usize = 3112;
/// The consumers' words, 256 bytes further. Their mutex: lock word, parking word (+4),
/// owner record (`O_COWNER`).
const O_CLOCK: usize = 3328;
const O_COWNER: usize = 3336;
/// As `O_PMARK_*`, for a consumer's return (overflow head, then main head).
const O_CMARK_OVF: usize = 3344;
const O_CMARK_MAIN: usize = 3352;
/// Overflow only: the position below which its pages were given back.
const O_PUNCHED: usize = 3360;
/// A joinable queue's consumers: `SLOTS` slots of 64 bytes, each `[ident u64][held u64]`:
/// a process's identity and the items it took and has not marked done.
const O_CONSUMERS: usize = 1024;
const SLOTS: usize = 32;
const SLOT: usize = 64;
/// A slot being written off by a joiner.
const SLOT_BUSY: u64 = u64::MAX;
// The consumers' slots end where the producers' words begin, and everything fits the header.
const _: () = assert!(O_CONSUMERS + SLOTS * SLOT <= O_PLOCK && O_PUNCHED + 8 <= HDR);

/// Smallest and largest ring sizes. The largest keeps the number of records in the ring
/// (at least 8 bytes each) below the 24-bit item count.
pub(crate) const MIN_CAP: usize = 4096;
pub(crate) const MAX_CAP: usize = 64 << 20;
/// Default ring size.
pub(crate) const DEFAULT_CAP: usize = 4 << 20;

/// Values of the shutdown word: puts refused, gets drain what is left; or everything that
/// is left thrown away too.
const SHUT: u32 = 1;
const SHUT_NOW: u32 = 2;

/// Header flag: stream items larger than half the ring through it instead of spilling them.
const FLAG_STREAM_LARGE: u32 = 1;
/// Header flag: a joinable queue, whose consumers' unfinished items are counted per process.
const FLAG_JOINABLE: u32 = 2;
/// Header flag: this ring has an overflow ring (a queue without an item limit).
const FLAG_HAS_OVERFLOW: u32 = 4;
/// Header flag: this ring *is* an overflow ring.
const FLAG_IS_OVERFLOW: u32 = 8;

/// Size of an overflow ring: address space and a sparse file, not memory.
pub(crate) const OVERFLOW_CAP: usize = 64 << 30;
/// At most this many items wait in the overflow (item counts must stay below 2^24).
const OVERFLOW_ITEMS: u64 = 1 << 23;
/// The overflow gives its pages back in batches of this many bytes.
const PUNCH_BATCH: u64 = 1 << 20;
/// Bytes of the overflow a producer leaves unused behind its consumers, so that it never
/// writes where a consumer is still giving pages back.
const PUNCH_MARGIN: u64 = PUNCH_BATCH + 2 * 4096;

/// A message claiming more than this is refused as corrupt before anything is allocated.
const MAX_MESSAGE: u64 = 1 << 36;

const K_MSG: u32 = 1;
const K_FIRST: u32 = 2;
const K_MORE: u32 = 3;
const K_LAST: u32 = 4;
const K_SPILL: u32 = 5;
/// Main ring: the items after this one are in the overflow until its `RETURN`.
const K_DIVERT: u32 = 6;
/// Overflow: the items after this one are in the main ring again.
const K_RETURN: u32 = 7;
const K_MASK: u32 = 0xf;
const F_FDS: u32 = 0x100;
/// The queues' check marker in a record's kind word (see [`record`]).
const K_CHECK: u32 = 0xa5c3_0000;

/// What the receiving side hands back.
pub(crate) struct Received {
    /// Descriptors that travelled with the message (for handles inside it).
    pub(crate) fds: Vec<OwnedFd>,
    /// For an item that was spilled to a segment of its own: its bytes, read in place
    /// (the output vector is then left empty).
    pub(crate) spilled: Option<MessageBytes>,
}

/// What one look at a ring's records gave a consumer.
enum Step {
    Item(Received),
    /// The consumer moved to the other ring (main → overflow or back).
    Switch,
}

/// A queue's overflow ring: its memory file, mapped in this process on first use.
struct Overflow {
    fd: OwnedFd,
    ring: std::sync::OnceLock<Box<Ring>>,
}

/// The ring in one process's mapping.
pub(crate) struct Ring {
    mem: Mapping,
    cap: u64,
    /// The ring's bytes (its [`Records`] with the index words: [`records`](Self::records)).
    bytes: Bytes,
    maxsize: u64,
    stream_large: bool,
    /// The overflow ring of a queue without an item limit.
    overflow: Option<Overflow>,
    /// Whether this ring is an overflow ring (gives pages back, leaves `PUNCH_MARGIN`).
    is_overflow: bool,
    /// This process's last look at `head` (used under the producer lock) and at `tail`
    /// (under the consumer lock). Both only move forward, so a stale copy only
    /// underestimates the free space or the data ready; each side reads the other's word
    /// (a cache line the other side writes) only when its copy says it must wait.
    head_seen: AtomicU64,
    tail_seen: AtomicU64,
    /// This process's handle was closed ([`close_here`](Self::close_here)): its waiting
    /// gets and puts end with [`Error::Closed`]. Not in shared memory: other processes'
    /// handles stay open.
    closed_here: std::sync::atomic::AtomicBool,
}

/// The bytes a message of `len` bytes takes in the ring (header, descriptor tag, body).
fn record_len(len: u64, fds: &[BorrowedFd<'_>]) -> u64 {
    record::size(if fds.is_empty() { 0 } else { 8 } + len)
}

/// What a `put` sends: bytes to copy into the ring, or a sealed segment (its descriptor,
/// and its length) of which only a reference goes in the ring.
enum Body<'m> {
    Bytes(&'m [u8]),
    Sealed(OwnedFd, u64),
}

impl Body<'_> {
    fn len(&self) -> u64 {
        match self {
            Body::Bytes(b) => b.len() as u64,
            Body::Sealed(_, n) => *n,
        }
    }
}

impl Ring {
    /// A new ring of `cap` bytes (rounded up to a power of two); `maxsize` items at most
    /// (0: no item limit).
    /// (0: no item limit). A ring without an item limit that does not stream gets an
    /// overflow ring (see the module docs).
    pub(crate) fn create(cap: usize, maxsize: usize, stream_large: bool) -> Result<Ring> {
        let cap = cap.clamp(MIN_CAP, MAX_CAP).next_power_of_two();
        let overflow = if maxsize == 0 && !stream_large {
            let o = Ring::init(
                Mapping::anonymous(HDR + OVERFLOW_CAP)?,
                OVERFLOW_CAP,
                0,
                FLAG_IS_OVERFLOW,
            );
            Some(o.fd().try_clone_to_owned()?)
        } else {
            None
        };
        let mut flags = if stream_large { FLAG_STREAM_LARGE } else { 0 };
        if overflow.is_some() {
            flags |= FLAG_HAS_OVERFLOW;
        }
        let mem = Ring::init(Mapping::anonymous(HDR + cap)?, cap, maxsize, flags);
        Ring::open(mem, overflow)
    }

    fn init(mem: Mapping, cap: usize, maxsize: usize, flags: u32) -> Mapping {
        mem.u64_at(O_CAP).store(cap as u64, Relaxed);
        mem.u64_at(O_MAXSIZE).store(maxsize as u64, Relaxed);
        mem.u32_at(O_FLAGS).store(flags, Relaxed);
        mem.u32_at(O_VERSION).store(VERSION, Relaxed);
        mem.u32_at(O_MAGIC).store(MAGIC, Release);
        mem
    }

    /// Maps a ring received from another process (with its overflow ring's memory file, if
    /// it has one), checking its header.
    pub(crate) fn from_fd(fd: OwnedFd, overflow: Option<OwnedFd>) -> Result<Ring> {
        let mem = Mapping::from_memfd(fd, HDR + MIN_CAP)
            .map_err(|e| Error::codec_from("not a queue", e))?;
        Ring::open(mem, overflow)
    }

    fn open(mem: Mapping, overflow: Option<OwnedFd>) -> Result<Ring> {
        if mem.u32_at(O_MAGIC).load(Acquire) != MAGIC
            || mem.u32_at(O_VERSION).load(Relaxed) != VERSION
        {
            return Err(Error::codec("not a queue segment (bad magic)"));
        }
        let flags = mem.u32_at(O_FLAGS).load(Relaxed);
        let is_overflow = flags & FLAG_IS_OVERFLOW != 0;
        let cap = mem.u64_at(O_CAP).load(Relaxed);
        let cap_ok = if is_overflow {
            cap == OVERFLOW_CAP as u64
        } else {
            cap.is_power_of_two() && cap >= MIN_CAP as u64 && cap <= MAX_CAP as u64
        };
        if !cap_ok || HDR as u64 + cap != mem.len() as u64 {
            return Err(Error::codec("queue segment has a bad capacity"));
        }
        if (flags & FLAG_HAS_OVERFLOW != 0) != overflow.is_some() {
            return Err(Error::codec(
                "a queue's overflow memory is missing or unexpected",
            ));
        }
        let maxsize = mem.u64_at(O_MAXSIZE).load(Relaxed);
        let stream_large = flags & FLAG_STREAM_LARGE != 0;
        let bytes = Bytes::new(HDR, cap);
        let head_seen = AtomicU64::new(mem.u64_at(O_HEAD).load(Acquire));
        let tail_seen = AtomicU64::new(mem.u64_at(O_TAIL).load(Acquire));
        Ok(Ring {
            mem,
            cap,
            bytes,
            maxsize,
            stream_large,
            overflow: overflow.map(|fd| Overflow {
                fd,
                ring: std::sync::OnceLock::new(),
            }),
            is_overflow,
            head_seen,
            tail_seen,
            closed_here: std::sync::atomic::AtomicBool::new(false),
        })
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.mem.fd()
    }

    /// The overflow ring's memory file, to send the queue to another process.
    pub(crate) fn overflow_fd(&self) -> Option<BorrowedFd<'_>> {
        self.overflow.as_ref().map(|o| o.fd.as_fd())
    }

    /// The overflow ring, mapped on first use. `None` for a ring without one.
    fn overflow(&self) -> Result<Option<&Ring>> {
        let Some(o) = &self.overflow else {
            return Ok(None);
        };
        if let Some(r) = o.ring.get() {
            return Ok(Some(r));
        }
        let fd = o.fd.try_clone()?;
        let mem = Mapping::from_memfd(fd, HDR + OVERFLOW_CAP)
            .map_err(|e| Error::codec_from("not a queue's overflow", e))?;
        let r = Ring::open(mem, None)?;
        if !r.is_overflow {
            return Err(Error::codec("not a queue's overflow (bad flags)"));
        }
        Ok(Some(o.ring.get_or_init(|| Box::new(r))))
    }

    pub(crate) fn maxsize(&self) -> usize {
        self.maxsize as usize
    }

    /// The record ring, its index words at the constant offsets `O_TAIL` and `O_HEAD`
    /// (known when inlined, which keeps their bounds check to one comparison).
    #[inline]
    fn records(&self) -> Records {
        Records::new(self.bytes, K_CHECK, O_TAIL, O_HEAD, O_PTAIL)
    }

    #[inline]
    fn w32(&self, off: usize) -> &AtomicU32 {
        self.mem.u32_at(off)
    }
    #[inline]
    fn w64(&self, off: usize) -> &AtomicU64 {
        self.mem.u64_at(off)
    }

    /// Items in the ring (complete messages put and not yet taken), its overflow included.
    pub(crate) fn len(&self) -> usize {
        let own = |r: &Ring| {
            let t = r.records().tail(&r.mem, Acquire);
            let h = r.records().head(&r.mem, Acquire);
            t.items_since(h) as usize
        };
        own(self) + self.overflow().ok().flatten().map_or(0, own)
    }

    /// The sum of a counter word's item counts over this ring and its overflow.
    fn total_count(&self, off: usize) -> u64 {
        let count = |r: &Ring| Idx::from_raw(r.w64(off).load(SeqCst)).count();
        let c = count(self);
        let o = self.overflow().ok().flatten().map_or(0, count);
        c.wrapping_add(o) & COUNT_MASK
    }

    /// Whether a bounded ring holds `maxsize` items.
    pub(crate) fn is_full(&self) -> bool {
        self.maxsize > 0 && self.len() as u64 >= self.maxsize
    }

    /// How far the ring is shut down: 0, [`SHUT`] or [`SHUT_NOW`]. The word is set with
    /// `fetch_max`, so any larger value (garbage another process wrote) counts as
    /// [`SHUT_NOW`]: every reader then agrees the queue is shut down, and none waits for a
    /// level that never comes.
    fn shut(&self) -> u32 {
        self.w32(O_SHUTDOWN).load(SeqCst).min(SHUT_NOW)
    }

    /// Whether [`shutdown`](Self::shutdown) was called, by any process.
    pub(crate) fn is_shut_down(&self) -> bool {
        self.shut() != 0
    }

    /// Closes this process's handle (`Queue::close`): a get or put of this process that
    /// waits (for an item, for room) wakes and gives [`Error::Closed`], and so does one
    /// that takes the lock after it. Other processes see a spurious wake-up at most.
    pub(crate) fn close_here(&self) {
        self.closed_here.store(true, SeqCst);
        for seq in [O_DATASEQ, O_SPACESEQ] {
            let w = self.w32(seq);
            w.fetch_add(1, SeqCst);
            futex::wake_all(w);
        }
    }

    /// Whether [`close_here`](Self::close_here) was called.
    fn is_closed_here(&self) -> bool {
        self.closed_here.load(Relaxed)
    }

    /// Shuts the ring down for every process: puts fail from now on; gets take what is left
    /// and then fail (`immediate`: what is left is thrown away, counted as done). Every
    /// waiting put and get wakes.
    pub(crate) fn shutdown(&self, immediate: bool) {
        let level = if immediate { SHUT_NOW } else { SHUT };
        // The overflow carries the same word, for the consumers and producers there; it is
        // set first, so that the main ring's word says the whole queue is shut down.
        let overflow = self.overflow().ok().flatten();
        for r in overflow.into_iter().chain([self]) {
            r.w32(O_SHUTDOWN).fetch_max(level, SeqCst);
            for seq in [O_DATASEQ, O_SPACESEQ] {
                let w = r.w32(seq);
                w.fetch_add(1, SeqCst);
                futex::wake_all(w);
            }
        }
        if immediate {
            // A consumer holding the lock wakes and lets go of it at once.
            if let Some(_g) = self.lock_consumer(None) {
                self.drop_everything();
            }
        }
    }

    /// Throws away what is in the ring and its overflow (the consumer lock is held).
    fn drop_everything(&self) {
        if let Ok(Some(o)) = self.overflow() {
            o.drop_all(self, o.records().head(&o.mem, SeqCst));
        }
        self.drop_all(self, self.records().head(&self.mem, SeqCst));
    }

    // --- locks ---------------------------------------------------------------------------

    #[inline(always)]
    fn lock(
        &self,
        word_off: usize,
        owner_off: usize,
        deadline: Option<Instant>,
    ) -> Option<(Guard<'_>, Got)> {
        wait::lock(
            self.w32(word_off),
            self.w32(word_off + 4),
            self.w64(owner_off),
            deadline,
        )
    }

    fn lock_producer(&self, deadline: Option<Instant>) -> Option<Guard<'_>> {
        let (g, got) = self.lock(O_PLOCK, O_POWNER, deadline)?;
        if got == Got::OwnerDied {
            // The dead holder may have left its "sleeping" flag up, or a return from the
            // overflow half done.
            self.w32(O_PSLEEP).store(0, Relaxed);
            self.finish_return(O_TAIL, O_PMARK_OVF, O_PMARK_MAIN);
            // Its copies of the tails may be behind what it published.
            for r in [Some(self), self.overflow().ok().flatten()]
                .into_iter()
                .flatten()
            {
                r.records().recopy_tail(&r.mem);
            }
        }
        Some(g)
    }

    /// `tail` as the producers know it (see [`Records::tail_copy`]).
    #[inline]
    fn ptail(&self) -> Idx {
        self.records().tail_copy(&self.mem)
    }

    /// The shared `tail`, copied again into the producers' copy (the lock held). Done on
    /// the paths that read the consumers' `head` because the copy says there is no room.
    fn reload_tail(&self) -> Idx {
        self.records().recopy_tail(&self.mem)
    }

    /// Publishes `t` as the tail (the producer lock held), in the shared word and the
    /// producers' copy.
    fn set_tail(&self, t: Idx) {
        self.records().set_tail(&self.mem, t);
    }

    fn lock_consumer(&self, deadline: Option<Instant>) -> Option<Guard<'_>> {
        let (g, got) = self.lock(O_CLOCK, O_COWNER, deadline)?;
        if got == Got::OwnerDied {
            self.w32(O_CSLEEP).store(0, Relaxed);
            self.finish_return(O_HEAD, O_CMARK_OVF, O_CMARK_MAIN);
        }
        Some(g)
    }

    /// After a lock holder died: if it had published its return from the overflow (the
    /// overflow's word `word` stands where it recorded) but not yet cleared the
    /// `DIVERTED` bit of the main ring's `word`, clear it.
    fn finish_return(&self, word: usize, mark_ovf: usize, mark_main: usize) {
        let w = Idx::from_raw(self.w64(word).load(SeqCst));
        if !w.flagged() {
            return;
        }
        if let Ok(Some(o)) = self.overflow() {
            if o.w64(word).load(SeqCst) == self.w64(mark_ovf).load(SeqCst)
                && w.raw() == self.w64(mark_main).load(SeqCst)
            {
                self.w64(word).store(w.with_flag(false).raw(), SeqCst);
            }
        }
    }

    /// Whether no producer is in the middle of a message: the producer lock is free, or its
    /// holder is dead.
    fn producer_idle(&self) -> bool {
        wait::lock_idle(self.w32(O_PLOCK), self.w32(O_PLOCK + 4), self.w64(O_POWNER))
    }

    // --- waiting ---------------------------------------------------------------------------

    /// The word an async waiter raises to have the queue's bell rung at the next change
    /// (see [`crate::ipc::bell`]).
    pub(crate) fn armed(&self) -> &AtomicU32 {
        self.w32(O_ARMED)
    }

    /// Waits while `blocked()` holds, on the sequence word `seq_off` with sleeping flag
    /// `sleep_off` (see [`wait::wait_while`]).
    fn wait_while(
        &self,
        seq_off: usize,
        sleep_off: usize,
        blocked: impl Fn() -> bool,
        deadline: Option<Instant>,
    ) -> Waited {
        wait::wait_while(self.w32(seq_off), self.w32(sleep_off), blocked, deadline)
    }

    #[inline]
    fn wake(&self, seq_off: usize, sleep_off: usize) {
        wait::wake(self.w32(seq_off), self.w32(sleep_off));
    }

    // --- byte access with wrap-around ---------------------------------------------------

    fn read_append(&self, pos: u64, n: usize, out: &mut Vec<u8>) {
        self.records().bytes().read(&self.mem, pos, n, out);
    }

    fn read_u64(&self, pos: u64) -> u64 {
        self.records().bytes().read_u64(&self.mem, pos)
    }

    // --- producing ------------------------------------------------------------------------

    /// Waits until `need` bytes are free in the ring (the producer lock is held).
    fn wait_free(&self, need: u64, deadline: Option<Instant>) -> Result<()> {
        // The overflow keeps a margin free behind its consumers (see `PUNCH_MARGIN`) and
        // holds a bounded number of items.
        let (need, items) = if self.is_overflow {
            (need + PUNCH_MARGIN, OVERFLOW_ITEMS)
        } else {
            (need, COUNT_MASK)
        };
        // A copy of `head` older than another process's last put looks more than `cap`
        // behind the tail: it says "no room", and the real head is read.
        let free_after = |t: Idx, h: Idx| {
            if t.items_since(h) >= items {
                return 0;
            }
            self.records().free(t, h)
        };
        let seen = Idx::from_raw(self.head_seen.load(Relaxed));
        if free_after(self.ptail(), seen) >= need {
            return Ok(());
        }
        let free = || {
            let t = self.reload_tail();
            let h = self.records().head(&self.mem, SeqCst);
            self.head_seen.store(h.raw(), Relaxed);
            free_after(t, h)
        };
        while free() < need {
            if self.is_shut_down() {
                return Err(Error::ShutDown);
            }
            if self.is_closed_here() {
                return Err(Error::Closed);
            }
            let blocked = || free() < need && !self.is_shut_down() && !self.is_closed_here();
            if let Waited::TimedOut = self.wait_while(O_SPACESEQ, O_PSLEEP, blocked, deadline) {
                return Err(Error::Full);
            }
        }
        Ok(())
    }

    /// Writes one record (header, optional prefix words, body) at the tail and publishes it.
    fn publish(&self, kind: u32, prefix: &[u64], body: &[u8], items: u64) {
        self.publish_flagged(kind, prefix, body, items, false)
    }

    /// [`publish`](Self::publish), raising the tail's `DIVERTED` flag (`diverted`) or
    /// lowering it.
    fn publish_flagged(&self, kind: u32, prefix: &[u64], body: &[u8], items: u64, diverted: bool) {
        debug_assert!(prefix.len() <= 2);
        let mut words = [0u8; 16];
        for (w, b) in prefix.iter().zip(words.chunks_exact_mut(8)) {
            b.copy_from_slice(&w.to_le_bytes());
        }
        let parts: &[&[u8]] = &[&words[..prefix.len() * 8], body];
        self.records()
            .publish(&self.mem, kind, parts, items, diverted);
        self.wake(O_DATASEQ, O_CSLEEP);
    }

    /// Puts one message. `fds` travel on the side
    /// socket `side_tx`. `deadline`: `None` waits for ever; a passed deadline gives
    /// [`Error::Full`] if the message cannot go in at once.
    pub(crate) fn put(
        &self,
        msg: &[u8],
        fds: &[BorrowedFd<'_>],
        side_tx: BorrowedFd<'_>,
        deadline: Option<Instant>,
    ) -> Result<()> {
        let whole = record_len(msg.len() as u64, fds);
        // An item larger than half the ring goes to a segment of its own, whose descriptor
        // travels on the side socket: `put` then needs no consumer to make progress. (If
        // no segment can be made, or the queue was made to stream, it is streamed.)
        let body = match (whole > self.cap / 2 && !self.stream_large && !self.is_shut_down())
            .then(|| memfd::message_copy(msg).ok())
            .flatten()
        {
            Some(seg) => Body::Sealed(seg, msg.len() as u64),
            None => Body::Bytes(msg),
        };
        self.put_message(body, fds, side_tx, deadline)
    }

    /// Encoded items longer than this go to a segment of their own (the codec writes them
    /// straight into one, then [`put_sealed`](Self::put_sealed)); `None` if this queue
    /// streams large items through the ring instead. Any shorter item, with descriptors or
    /// not, fits a record of at most half the ring.
    pub(crate) fn spill_threshold(&self) -> Option<usize> {
        (!self.stream_large).then_some((self.cap / 2 - 16) as usize)
    }

    /// Puts one message already written to a sealed memory file `seg` of `len` bytes
    /// (not empty; see [`memfd::MessageFile`]): only its reference goes in the ring.
    pub(crate) fn put_sealed(
        &self,
        seg: OwnedFd,
        len: usize,
        fds: &[BorrowedFd<'_>],
        side_tx: BorrowedFd<'_>,
        deadline: Option<Instant>,
    ) -> Result<()> {
        self.put_message(Body::Sealed(seg, len as u64), fds, side_tx, deadline)
    }

    /// [`put`](Self::put) once its spill decision is made.
    fn put_message(
        &self,
        body: Body<'_>,
        fds: &[BorrowedFd<'_>],
        side_tx: BorrowedFd<'_>,
        deadline: Option<Instant>,
    ) -> Result<()> {
        if self.is_shut_down() {
            return Err(Error::ShutDown);
        }
        let whole = record_len(body.len(), fds);
        let _g = self.lock_producer(deadline).ok_or(Error::Full)?;
        if self.is_shut_down() {
            return Err(Error::ShutDown);
        }
        if self.is_closed_here() {
            return Err(Error::Closed);
        }
        if self.maxsize > 0 {
            let full = || {
                let h = self.records().head(&self.mem, SeqCst);
                self.ptail().items_since(h) >= self.maxsize
                    && self.reload_tail().items_since(h) >= self.maxsize
            };
            let blocked = || full() && !self.is_shut_down() && !self.is_closed_here();
            while full() {
                if self.is_shut_down() {
                    return Err(Error::ShutDown);
                }
                if self.is_closed_here() {
                    return Err(Error::Closed);
                }
                if let Waited::TimedOut = self.wait_while(O_SPACESEQ, O_PSLEEP, blocked, deadline) {
                    return Err(Error::Full);
                }
            }
        }
        let to = if self.overflow.is_some() {
            self.route(whole, matches!(body, Body::Sealed(..)), deadline)?
        } else {
            self
        };
        to.write_msg(self, body, fds, side_tx, deadline)
    }

    /// Whether `need` bytes are free in the ring now (the producer lock is held).
    fn has_room(&self, need: u64) -> bool {
        let t = self.ptail();
        if self
            .records()
            .free(t, Idx::from_raw(self.head_seen.load(Relaxed)))
            >= need
        {
            return true;
        }
        let t = self.reload_tail();
        let h = self.records().head(&self.mem, SeqCst);
        self.head_seen.store(h.raw(), Relaxed);
        self.records().free(t, h) >= need
    }

    /// Before a producer diverts to the overflow, whose pages are fresh (a page fault and
    /// zeroing per 4 KiB written, given back as they are read): waits for a consumer to free
    /// `need` bytes, for as long as one reading at 1 GB/s takes to free them (about 1 ms for
    /// 1 MiB, nothing to speak of for small items), never past `deadline`. A live consumer
    /// thus keeps a faster producer in the warm ring, as a bounded queue would (at no less
    /// than 1 GB/s); a missing or stalled one costs that wait once, and the items after it go
    /// to the overflow until the ring is half free again. `Ok(true)`: there is room now.
    fn wait_for_consumer(&self, need: u64, deadline: Option<Instant>) -> Result<bool> {
        let patience = Instant::now() + std::time::Duration::from_nanos(need);
        let until = deadline.map_or(patience, |d| d.min(patience));
        match self.wait_free(need, Some(until)) {
            Ok(()) => Ok(true),
            Err(Error::Full) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// For a ring with an overflow (producer lock held): the ring the next message of
    /// `whole` record bytes goes to (`spill`: only its 24-byte reference), moving producers
    /// to the overflow when this ring is full and back when it is half free.
    fn route(&self, whole: u64, spill: bool, deadline: Option<Instant>) -> Result<&Ring> {
        let mut t = self.ptail();
        if t.flagged() {
            // Diverted (rare): confirmed by the shared word, which a return from the
            // overflow below publishes again; garbage in the copy must not be published.
            t = self.reload_tail();
        }
        let (need, fits) = if spill {
            (8 + 16, true)
        } else {
            (whole, whole <= self.cap / 2)
        };
        if !t.flagged() {
            // Room for a `DIVERT` record (8 bytes) is always kept.
            if fits && self.has_room(need + 8) {
                return Ok(self);
            }
            let Some(o) = self.overflow()? else {
                return Ok(self);
            };
            if fits && self.wait_for_consumer(need + 8, deadline)? {
                return Ok(self);
            }
            self.wait_free(8, deadline)?;
            self.publish_flagged(K_DIVERT, &[], &[], 0, true);
            return Ok(o);
        }
        let Some(o) = self.overflow()? else {
            return Ok(self);
        };
        if fits && self.has_room((need + 8).max(self.cap / 2)) {
            // Back to this ring: record where both rings will stand (for a successor if we
            // die in between), publish `RETURN` in the overflow, clear the bit.
            o.wait_free(8, deadline)?;
            let ot = o.ptail();
            self.w64(O_PMARK_OVF).store(ot.after(8, 0).raw(), SeqCst);
            self.w64(O_PMARK_MAIN).store(t.raw(), SeqCst);
            o.publish(K_RETURN, &[], &[], 0);
            self.set_tail(t.with_flag(false));
            return Ok(self);
        }
        Ok(o)
    }

    /// Writes one message in this ring (the producer lock of `ctl`, the queue's main ring,
    /// is held; descriptors are tagged with `ctl`'s counter).
    fn write_msg(
        &self,
        ctl: &Ring,
        body: Body<'_>,
        fds: &[BorrowedFd<'_>],
        side_tx: BorrowedFd<'_>,
        deadline: Option<Instant>,
    ) -> Result<()> {
        let fdpre = if fds.is_empty() { 0 } else { 8 };
        let whole = record_len(body.len(), fds);
        let has_fds = !fds.is_empty();
        let flag = if has_fds { F_FDS } else { 0 };
        let msg = match body {
            Body::Bytes(msg) => msg,
            Body::Sealed(seg, total) => {
                self.wait_free(8 + 16, deadline)?;
                let mut all = fds.to_vec();
                all.push(seg.as_fd());
                let tag = ctl.send_fds(&all, side_tx)?;
                self.publish(K_SPILL | F_FDS, &[tag, total], &[], 1);
                return Ok(());
            }
        };
        if whole <= self.cap / 2 {
            self.wait_free(whole, deadline)?;
            if has_fds {
                let tag = ctl.send_fds(fds, side_tx)?;
                self.publish(K_MSG | flag, &[tag], msg, 1);
            } else {
                self.publish(K_MSG, &[], msg, 1);
            }
            return Ok(());
        }
        // Stream it in chunks of a quarter of the ring.
        let chunk = (self.cap / 4 - 8) as usize;
        let total = msg.len() as u64;
        let first_len = chunk - fdpre as usize - 8;
        self.wait_free(record::size(fdpre + 8 + first_len as u64), deadline)?;
        if has_fds {
            let tag = ctl.send_fds(fds, side_tx)?;
            self.publish(K_FIRST | flag, &[tag, total], &msg[..first_len], 0);
        } else {
            self.publish(K_FIRST, &[total], &msg[..first_len], 0);
        }
        let mut off = first_len;
        while off < msg.len() {
            let n = chunk.min(msg.len() - off);
            let last = off + n == msg.len();
            // Giving up here (deadline) abandons the message: consumers drop its chunks.
            self.wait_free(record::size(n as u64), deadline)?;
            let (kind, items) = if last { (K_LAST, 1) } else { (K_MORE, 0) };
            self.publish(kind, &[], &msg[off..off + n], items);
            off += n;
        }
        Ok(())
    }

    fn send_fds(&self, fds: &[BorrowedFd<'_>], side_tx: BorrowedFd<'_>) -> Result<u64> {
        let tag = self.w64(O_FDTAG).fetch_add(1, SeqCst);
        sys::send_tagged(side_tx, tag, fds)?;
        Ok(tag)
    }

    // --- consuming ------------------------------------------------------------------------

    /// Advances the head past a record of `rec` bytes, counting `items` taken.
    fn advance(&self, h: Idx, rec: u64, items: u64) {
        if self.is_overflow {
            self.give_back(h, rec);
        }
        self.records().advance(&self.mem, h, rec, items);
        self.wake(O_SPACESEQ, O_PSLEEP);
    }

    /// Overflow (consumer lock held, about to move the head from `h` past a record of
    /// `rec` bytes): gives back the pages wholly below `h`, in batches of `PUNCH_BATCH`
    /// bytes, or all of them when the ring is about to be empty. Producers never write
    /// there: they keep `PUNCH_MARGIN` bytes free behind the head.
    fn give_back(&self, h: Idx, rec: u64) {
        let punched = self.w64(O_PUNCHED);
        let last = punched.load(Relaxed);
        let target = h.pos() & !4095;
        let behind = record::span(last, target);
        if behind == 0 {
            return;
        }
        if behind > self.cap {
            // Garbage in the word: start again from here.
            punched.store(target, Relaxed);
            return;
        }
        let empty_after = self.records().tail(&self.mem, SeqCst).pos() == h.after(rec, 0).pos();
        if behind < PUNCH_BATCH && !empty_after {
            return;
        }
        // A failure only means the memory is kept until the queue is dropped.
        let _ = self
            .records()
            .bytes()
            .punch(&self.mem, last, behind as usize);
        punched.store(target, Relaxed);
    }

    /// Counts `n` items as finished without a consumer (dropped or skipped messages), so
    /// that `JoinableQueue::join` does not wait for them.
    fn mark_done(&self, n: u64) {
        if n == 0 {
            return;
        }
        let _ = self
            .w64(O_DONE)
            .fetch_update(SeqCst, SeqCst, |d| Some(d.wrapping_add(n) & COUNT_MASK));
        self.wake_joiners();
    }

    /// Throws away everything in the ring after garbage was found at the head (`ctl`: the
    /// queue's main ring).
    fn discard_all(&self, ctl: &Ring, h: Idx) -> Error {
        self.drop_all(ctl, h);
        Error::codec("garbage in the queue's shared memory: its contents were discarded")
    }

    /// Throws away everything from head `h` to the tail, counting the items as done (the
    /// consumer lock of `ctl`, the queue's main ring, is held). Descriptors sent with them
    /// are closed by the next `get`'s look at the side socket, or with the queue. Consumers
    /// then follow the producers: into the overflow if they are there (a `DIVERT` record
    /// may have been thrown away), out of it if they left.
    fn drop_all(&self, ctl: &Ring, h: Idx) {
        let producers_diverted = ctl.records().tail(&ctl.mem, SeqCst).flagged();
        let t = self.records().tail(&self.mem, Acquire);
        let n = t.items_since(h);
        self.records().skip_to(
            &self.mem,
            t.with_flag(!self.is_overflow && producers_diverted),
        );
        if self.is_overflow && !producers_diverted {
            let ch = ctl.records().head(&ctl.mem, SeqCst);
            ctl.records()
                .head_word(&ctl.mem)
                .store(ch.with_flag(false).raw(), SeqCst);
        }
        self.wake(O_SPACESEQ, O_PSLEEP);
        ctl.mark_done(n);
    }

    /// The descriptors sent with tag `tag`, looked at without taking them off the socket
    /// (they are taken once the record is consumed). Stale datagrams (of producers that
    /// died before publishing) are thrown away. `None`: they were lost.
    fn peek_fds(&self, tag: u64, side_rx: BorrowedFd<'_>) -> Result<Option<Vec<OwnedFd>>> {
        loop {
            match sys::recv_tagged(side_rx, true)? {
                Some((t, _)) if t < tag => {
                    sys::recv_tagged(side_rx, false)?;
                }
                Some((t, fds)) if t == tag => return Ok(Some(fds)),
                _ => return Ok(None),
            }
        }
    }

    /// Takes the datagram `tag` off the side socket (its duplicates are closed).
    fn pop_fds(&self, tag: u64, side_rx: BorrowedFd<'_>) -> Result<()> {
        if let Some((t, _)) = sys::recv_tagged(side_rx, true)? {
            if t <= tag {
                sys::recv_tagged(side_rx, false)?;
            }
        }
        Ok(())
    }

    /// Takes one message: its bytes are appended to `out` (cleared first). `deadline`:
    /// `None` waits for ever; a passed one gives [`Error::Empty`] unless a message is ready.
    pub(crate) fn get(
        &self,
        out: &mut Vec<u8>,
        side_rx: BorrowedFd<'_>,
        deadline: Option<Instant>,
    ) -> Result<Received> {
        let r = self.get_locked(out, side_rx, deadline);
        if r.is_ok() && self.joinable() {
            self.note_taken();
        }
        r
    }

    fn get_locked(
        &self,
        out: &mut Vec<u8>,
        side_rx: BorrowedFd<'_>,
        deadline: Option<Instant>,
    ) -> Result<Received> {
        let _g = self.lock_consumer(deadline).ok_or(Error::Empty)?;
        if self.shut() == SHUT_NOW {
            self.drop_everything();
            return Err(Error::ShutDown);
        }
        if self.is_closed_here() {
            return Err(Error::Closed);
        }
        loop {
            let from = if self.records().head(&self.mem, Relaxed).flagged() {
                self.overflow()?.unwrap_or(self)
            } else {
                self
            };
            match from.take(self, out, side_rx, deadline)? {
                Step::Item(r) => return Ok(r),
                Step::Switch => {}
            }
        }
    }

    /// Takes one message from this ring (the consumer lock of `ctl`, the queue's main ring,
    /// is held), or follows a `DIVERT` / `RETURN` record.
    fn take(
        &self,
        ctl: &Ring,
        out: &mut Vec<u8>,
        side_rx: BorrowedFd<'_>,
        deadline: Option<Instant>,
    ) -> Result<Step> {
        out.clear();
        let tail_is = |h: Idx| self.records().tail(&self.mem, SeqCst).pos() == h.pos();
        // A streamed message being assembled: (total length, its descriptors).
        let mut stream: Option<(u64, Vec<OwnedFd>)> = None;
        loop {
            let h = self.records().head(&self.mem, Relaxed);
            let mut t = Idx::from_raw(self.tail_seen.load(Relaxed));
            let ahead = t.bytes_since(h);
            // Nothing more known to be ready (or a copy older than another process's last
            // get, which looks more than `cap` ahead): read the real tail.
            if ahead == 0 || ahead > self.cap {
                t = self.records().tail(&self.mem, Acquire);
                self.tail_seen.store(t.raw(), Relaxed);
            }
            let header = match self.records().front(&self.mem, h, t) {
                Front::Record(r) => r,
                Front::Garbage => return Err(self.discard_all(ctl, h)),
                Front::Empty => {
                    let shut = self.shut();
                    if shut == SHUT_NOW || (shut == SHUT && stream.is_none()) {
                        return Err(Error::ShutDown);
                    }
                    if stream.is_some() {
                        // Mid-stream: only a producer's death or surrender ends the wait.
                        if self.producer_idle() && tail_is(h) {
                            stream = None;
                            out.clear();
                            continue;
                        }
                        let _ = self.wait_while(
                            O_DATASEQ,
                            O_CSLEEP,
                            || tail_is(h) && self.shut() != SHUT_NOW,
                            Some(Instant::now() + SLICE),
                        );
                    } else if ctl.is_closed_here() {
                        return Err(Error::Closed);
                    } else if let Waited::TimedOut = self.wait_while(
                        O_DATASEQ,
                        O_CSLEEP,
                        || tail_is(h) && !self.is_shut_down() && !ctl.is_closed_here(),
                        deadline,
                    ) {
                        if tail_is(h) {
                            return Err(Error::Empty);
                        }
                    }
                    continue;
                }
            };
            let (len, kind_word) = (header.len, header.kind);
            let kind = kind_word & K_MASK;
            let rec = header.size();
            let has_fds = kind_word & F_FDS != 0;
            if !(K_MSG..=K_RETURN).contains(&kind)
                || (kind == K_DIVERT && (self.is_overflow || self.overflow.is_none()))
                || (kind == K_RETURN && !self.is_overflow)
                || (kind >= K_DIVERT && (len != 0 || has_fds))
                || (has_fds && !(kind == K_MSG || kind == K_FIRST || kind == K_SPILL))
                || (kind == K_SPILL && (!has_fds || len != 16))
            {
                return Err(self.discard_all(ctl, h));
            }
            let mut body = h.pos() + record::HEADER;
            let mut body_len = len;
            match kind {
                K_SPILL => {
                    if stream.take().is_some() {
                        out.clear();
                    }
                    let tag = self.read_u64(body);
                    let total = self.read_u64(body + 8);
                    if total > MAX_MESSAGE {
                        return Err(self.discard_all(ctl, h));
                    }
                    let Some(mut fds) = self.peek_fds(tag, side_rx)? else {
                        self.advance(h, rec, 1);
                        ctl.mark_done(1);
                        return Err(Error::codec(
                            "the shared memory holding a large queue item was lost (a \
                             consumer died while receiving it); the item was dropped",
                        ));
                    };
                    let seg = fds
                        .pop()
                        .map(|fd| MessageBytes::receive(fd, total as usize));
                    let mut r = match seg {
                        Some(Ok(seg)) => Ok(Received {
                            fds,
                            spilled: Some(seg),
                        }),
                        _ => Err(Error::codec(
                            "a large queue item's shared memory does not match its record",
                        )),
                    };
                    self.advance(h, rec, 1);
                    if r.is_err() {
                        ctl.mark_done(1);
                    }
                    self.pop_fds(tag, side_rx)?;
                    // The record is consumed: no other consumer can read it again, so a
                    // lent file goes back to its sender now, before the item is decoded.
                    if let Ok(Received {
                        spilled: Some(seg), ..
                    }) = &mut r
                    {
                        seg.give_back();
                    }
                    return r.map(Step::Item);
                }
                K_DIVERT => {
                    // The next items are in the overflow: move there in the store that
                    // consumes this record.
                    self.records()
                        .head_word(&self.mem)
                        .store(h.after(8, 0).with_flag(true).raw(), SeqCst);
                    self.wake(O_SPACESEQ, O_PSLEEP);
                    return Ok(Step::Switch);
                }
                K_RETURN => {
                    // Back to the main ring: record where both rings will stand (for a
                    // successor if we die in between), consume, clear the bit.
                    let ch = ctl.records().head(&ctl.mem, SeqCst);
                    ctl.w64(O_CMARK_OVF).store(h.after(8, 0).raw(), SeqCst);
                    ctl.w64(O_CMARK_MAIN).store(ch.raw(), SeqCst);
                    self.advance(h, 8, 0);
                    ctl.records()
                        .head_word(&ctl.mem)
                        .store(ch.with_flag(false).raw(), SeqCst);
                    return Ok(Step::Switch);
                }
                K_MSG | K_FIRST => {
                    if stream.take().is_some() {
                        // The previous stream's producer died or gave up: drop it.
                        out.clear();
                    }
                    let need = if has_fds { 8 } else { 0 } + if kind == K_FIRST { 8 } else { 0 };
                    if body_len < need {
                        return Err(self.discard_all(ctl, h));
                    }
                    let mut fds = Vec::new();
                    let mut tag = None;
                    if has_fds {
                        let tg = self.read_u64(body);
                        body += 8;
                        body_len -= 8;
                        match self.peek_fds(tg, side_rx)? {
                            Some(f) => fds = f,
                            None => {
                                // A consumer died holding them: the message cannot be
                                // rebuilt. Skip it (and, for a stream, its chunks).
                                self.advance(h, rec, u64::from(kind == K_MSG));
                                ctl.mark_done(u64::from(kind == K_MSG));
                                return Err(Error::codec(
                                    "the handles sent with a queue item were lost (a consumer \
                                     died while receiving it); the item was dropped",
                                ));
                            }
                        }
                        tag = Some(tg);
                    }
                    if kind == K_MSG {
                        self.read_append(body, body_len as usize, out);
                        self.advance(h, rec, 1);
                        if let Some(tg) = tag {
                            self.pop_fds(tg, side_rx)?;
                        }
                        return Ok(Step::Item(Received { fds, spilled: None }));
                    }
                    let total = self.read_u64(body);
                    body += 8;
                    body_len -= 8;
                    if total > MAX_MESSAGE || body_len > total {
                        return Err(self.discard_all(ctl, h));
                    }
                    // Room for the whole item at once if the allocator agrees (a lying
                    // length cannot make us fail: the vector then grows as chunks come).
                    if out.try_reserve_exact(total as usize).is_err() {
                        out.reserve(total.min(64 << 20) as usize);
                    }
                    self.read_append(body, body_len as usize, out);
                    self.advance(h, rec, 0);
                    if let Some(tg) = tag {
                        self.pop_fds(tg, side_rx)?;
                    }
                    stream = Some((total, fds));
                }
                _ => {
                    let last = kind == K_LAST;
                    match &stream {
                        Some((total, _)) => {
                            if out.len() as u64 + body_len > *total
                                || (last && out.len() as u64 + body_len != *total)
                            {
                                out.clear();
                                self.advance(h, rec, u64::from(last));
                                ctl.mark_done(u64::from(last));
                                return Err(Error::codec(
                                    "a streamed queue item's chunks do not add up to its length",
                                ));
                            }
                            self.read_append(body, body_len as usize, out);
                            self.advance(h, rec, u64::from(last));
                            if last {
                                let (_, fds) = stream.take().unwrap_or_default();
                                return Ok(Step::Item(Received { fds, spilled: None }));
                            }
                        }
                        None => {
                            // The rest of a message whose consumer died mid-way: skip.
                            self.advance(h, rec, u64::from(last));
                            ctl.mark_done(u64::from(last));
                        }
                    }
                }
            }
        }
    }

    // --- joinable -----------------------------------------------------------------------------

    /// Items put and not yet marked done.
    pub(crate) fn unfinished(&self) -> u64 {
        let t = self.total_count(O_TAIL);
        let d = self.w64(O_DONE).load(SeqCst);
        t.wrapping_sub(d) & COUNT_MASK
    }

    /// Marks one taken item done. Error if every taken item was already marked.
    pub(crate) fn task_done(&self) -> Result<()> {
        let done = self.w64(O_DONE);
        let r = done.fetch_update(SeqCst, SeqCst, |d| {
            let got = self.total_count(O_HEAD);
            if d == got {
                None
            } else {
                Some(d.wrapping_add(1) & COUNT_MASK)
            }
        });
        if r.is_err() {
            return Err(Error::invalid(
                "task_done() called more times than items were taken from the queue",
            ));
        }
        self.note_done();
        self.wake_joiners();
        Ok(())
    }

    /// Makes this a joinable queue's ring (before it is shared).
    pub(crate) fn set_joinable(&self) {
        self.w32(O_FLAGS).fetch_or(FLAG_JOINABLE, SeqCst);
    }

    fn joinable(&self) -> bool {
        self.w32(O_FLAGS).load(Relaxed) & FLAG_JOINABLE != 0
    }

    /// Consumer slot `i`: (identity, items held).
    fn slot(&self, i: usize) -> (&AtomicU64, &AtomicU64) {
        let at = O_CONSUMERS + i * SLOT;
        (self.w64(at), self.w64(at + 8))
    }

    /// This process took an item: count it in its slot (claiming a free one, or one of a
    /// process that ended holding nothing). With every slot taken, it goes uncounted.
    fn note_taken(&self) {
        let me = futex::current_ident();
        let mut free = None;
        for i in 0..SLOTS {
            let (ident, held) = self.slot(i);
            let who = ident.load(SeqCst);
            if who == me {
                held.fetch_add(1, SeqCst);
                return;
            }
            if free.is_none()
                && (who == 0
                    || (who != SLOT_BUSY && held.load(SeqCst) == 0 && futex::ident_gone(who)))
            {
                free = Some((i, who));
            }
        }
        if let Some((i, who)) = free {
            let (ident, held) = self.slot(i);
            if ident.compare_exchange(who, me, SeqCst, SeqCst).is_ok() {
                held.fetch_add(1, SeqCst);
            }
        }
    }

    /// This process marked an item done: take it off its own count, or, if it holds none
    /// (another process took the item), off the first process that holds some.
    fn note_done(&self) {
        if !self.joinable() {
            return;
        }
        let me = futex::current_ident();
        let dec = |held: &AtomicU64| {
            held.fetch_update(SeqCst, SeqCst, |h| h.checked_sub(1))
                .is_ok()
        };
        for i in 0..SLOTS {
            let (ident, held) = self.slot(i);
            if ident.load(SeqCst) == me && dec(held) {
                return;
            }
        }
        for i in 0..SLOTS {
            let (ident, held) = self.slot(i);
            let who = ident.load(SeqCst);
            if who != 0 && who != SLOT_BUSY && dec(held) {
                return;
            }
        }
    }

    /// A consumer that ended holding items not marked done: its items are counted done
    /// (nobody can mark them any more) and it is reported, once, to the joiner that finds
    /// it first.
    fn write_off_dead_consumer(&self) -> Option<(u32, u64)> {
        for i in 0..SLOTS {
            let (ident, held) = self.slot(i);
            let who = ident.load(SeqCst);
            if who == 0 || who == SLOT_BUSY || held.load(SeqCst) == 0 || !futex::ident_gone(who) {
                continue;
            }
            if ident
                .compare_exchange(who, SLOT_BUSY, SeqCst, SeqCst)
                .is_err()
            {
                continue;
            }
            let n = held.swap(0, SeqCst);
            ident.store(0, SeqCst);
            if n > 0 {
                self.mark_done(n);
                return Some((futex::ident_pid(who), n));
            }
        }
        None
    }

    fn wake_joiners(&self) {
        if self.w32(O_JOINWAIT).load(SeqCst) != 0 {
            let w = self.w32(O_JOINSEQ);
            w.fetch_add(1, SeqCst);
            futex::wake_all(w);
        }
    }

    /// Waits until every item put has been marked done, or `deadline` passes (false), or
    /// a consumer is found to have ended holding items not marked done
    /// ([`Error::ConsumerDied`]).
    pub(crate) fn join(&self, deadline: Option<Instant>) -> Result<bool> {
        let seqw = self.w32(O_JOINSEQ);
        let waiters = self.w32(O_JOINWAIT);
        loop {
            if self.unfinished() == 0 {
                return Ok(true);
            }
            if let Some((pid, items)) = self.write_off_dead_consumer() {
                return Err(Error::ConsumerDied { pid, items });
            }
            let seq = seqw.load(SeqCst);
            waiters.fetch_add(1, SeqCst);
            if self.unfinished() == 0 {
                waiters.fetch_sub(1, SeqCst);
                return Ok(true);
            }
            let Some(slice) = wait::next_slice(deadline, SLICE) else {
                waiters.fetch_sub(1, SeqCst);
                return Ok(false);
            };
            futex::wait(seqw, seq, Some(slice));
            waiters.fetch_sub(1, SeqCst);
        }
    }

    /// Test hook: bytes of memory the overflow ring holds now (0 without one).
    #[cfg(test)]
    pub(crate) fn overflow_resident(&self) -> u64 {
        self.overflow()
            .ok()
            .flatten()
            .map_or(0, |o| o.mem.resident_bytes())
    }

    /// Test hook: stores `v` in the shutdown word, as a hostile or broken process that
    /// maps the queue could.
    #[cfg(test)]
    pub(crate) fn scribble_shutdown_word(&self, v: u32) {
        self.w32(O_SHUTDOWN).store(v, SeqCst);
    }

    /// Test hook: what a producer killed between its two stores of the tail leaves: `msg`
    /// published as a whole message in the shared `tail`, the producers' copy not moved,
    /// and the producer lock still held (by the calling thread, which is to exit).
    #[cfg(test)]
    pub(crate) fn publish_and_die_holding_the_lock(&self, msg: &[u8]) {
        let g = self.lock_producer(None).expect("the producer lock");
        self.records()
            .publish_shared_only(&self.mem, K_MSG, &[msg], 1);
        self.wake(O_DATASEQ, O_CSLEEP);
        std::mem::forget(g);
    }

    /// Test hook: stores `v` in the producers' copy of the tail, as a hostile or broken
    /// process that maps the queue could.
    #[cfg(test)]
    pub(crate) fn scribble_producers_tail(&self, v: u64) {
        self.w64(O_PTAIL).store(v, SeqCst);
    }

    /// Test hook: writes raw bytes at the tail and publishes them as if they were records.
    #[cfg(test)]
    pub(crate) fn inject_garbage(&self, bytes: &[u8]) {
        let _g = self.lock_producer(None);
        let t = self.ptail();
        self.records().bytes().write(&self.mem, t.pos(), bytes);
        self.set_tail(t.after(record::round8(bytes.len() as u64), 1));
        self.wake(O_DATASEQ, O_CSLEEP);
    }
}
