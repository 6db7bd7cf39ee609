//! The one record ring of the crate: the byte rings in shared memory under the queues
//! ([`ring`](super::ring)) and the pipes' lanes ([`lane`](super::lane)). Both store their
//! messages as records and move their `head` and `tail` only through [`Records`]: the
//! record format, the byte access with wrap-around and the index words (their encoding,
//! free space, publishing, taking and skipping records) exist here once; each user adds
//! only its own record kinds and its protocol (the queues' overflow and streams, the lanes'
//! packets and large-message area).
//!
//! # A record
//! An 8-byte header — `len: u32` (body bytes), then a kind word: the ring's kind and flags
//! in the lower 16 bits, the ring's check marker in the upper 16 — then `len` bytes of
//! body, padded to 8. A record is written whole before the ring's `tail` moves past it
//! ([`Records::publish`]), so a writer killed mid-write leaves nothing visible, and a
//! reader that finds a header whose marker is wrong, or whose length runs past what was
//! published, is looking at garbage and says so ([`Records::front`]).
//!
//! # Index words
//! `head` (the next record to take) and `tail` (the end of the last one published) are
//! 64-bit words ([`Idx`]) that pack an item count (upper 24 bits, wrapping at 2^24), a
//! flag (bit 39, the user's: the queues' "diverted to the overflow") and a byte position
//! (lower 39 bits, wrapping at 2^39). Packing them means a record and its count are
//! published (or taken) by a single atomic store: a process killed at any instant leaves
//! them consistent. Producers write `tail` (under their lock), consumers `head` (under
//! theirs); each side only reads the other's word.
//!
//! # Positions
//! A position is taken modulo the ring's capacity (a power of two) to index its memory,
//! and a record that crosses the end wraps around to the start ([`Bytes`], which also
//! serves byte areas that hold no records, such as the pipes' large-message area).

use std::sync::atomic::{AtomicU64, Ordering::*};

use crate::sys::memfd::Mapping;

/// Bytes of a record's header.
pub(crate) const HEADER: u64 = 8;

/// The upper half of a kind word: the ring's check marker.
const CHECK_MASK: u32 = 0xffff_0000;

/// `n` rounded up to a multiple of 8.
#[inline]
pub(crate) fn round8(n: u64) -> u64 {
    (n + 7) & !7
}

/// Bytes a record with a body of `len` bytes takes in its ring.
#[inline]
pub(crate) fn size(len: u64) -> u64 {
    HEADER + round8(len)
}

// --- index words ------------------------------------------------------------------------

/// Bits of an index word's position: positions wrap at 2^39.
const POS_BITS: u32 = 39;
const POS_MASK: u64 = (1 << POS_BITS) - 1;
/// Bit 39 of an index word: the user's flag.
const FLAG: u64 = 1 << POS_BITS;
/// Where the item count starts.
const COUNT_SHIFT: u32 = 40;
/// Item counts wrap at 2^24.
pub(crate) const COUNT_MASK: u64 = (1 << 24) - 1;

/// Bytes from position `from` to position `to` of an index word (positions wrap at 2^39).
#[inline]
pub(crate) const fn span(from: u64, to: u64) -> u64 {
    to.wrapping_sub(from) & POS_MASK
}

/// An index word (`head` or `tail`) of a record ring: item count, flag and byte position
/// (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Idx(u64);

impl Idx {
    /// The word at `pos` after `count` items, flag lowered.
    #[cfg(test)]
    pub(crate) const fn new(count: u64, pos: u64) -> Idx {
        Idx(((count & COUNT_MASK) << COUNT_SHIFT) | (pos & POS_MASK))
    }
    /// A word as stored.
    #[inline]
    pub(crate) const fn from_raw(w: u64) -> Idx {
        Idx(w)
    }
    /// The word to store.
    #[inline]
    pub(crate) const fn raw(self) -> u64 {
        self.0
    }
    /// The byte position.
    #[inline]
    pub(crate) const fn pos(self) -> u64 {
        self.0 & POS_MASK
    }
    /// The item count.
    #[inline]
    pub(crate) const fn count(self) -> u64 {
        self.0 >> COUNT_SHIFT
    }
    /// Whether the flag is raised.
    #[inline]
    pub(crate) const fn flagged(self) -> bool {
        self.0 & FLAG != 0
    }
    /// This word with the flag raised (`on`) or lowered.
    #[inline]
    pub(crate) const fn with_flag(self, on: bool) -> Idx {
        Idx(if on { self.0 | FLAG } else { self.0 & !FLAG })
    }
    /// The word past `bytes` more bytes (less than 2^39) and `items` more items, flag
    /// lowered. (With the flag bit clear, a position that wraps carries into it and no
    /// further, and the count wraps with the word: one mask after the additions.)
    #[inline]
    pub(crate) const fn after(self, bytes: u64, items: u64) -> Idx {
        debug_assert!(bytes <= POS_MASK);
        Idx(((self.0 & !FLAG)
            .wrapping_add(bytes)
            .wrapping_add(items << COUNT_SHIFT))
            & !FLAG)
    }
    /// Bytes from `head` to this word (a tail): what is published and not taken. More
    /// than the ring's capacity only for a stale copy of `head` (or garbage).
    #[inline]
    pub(crate) const fn bytes_since(self, head: Idx) -> u64 {
        span(head.pos(), self.pos())
    }
    /// Items counted from `head` to this word (a tail).
    #[inline]
    pub(crate) const fn items_since(self, head: Idx) -> u64 {
        self.count().wrapping_sub(head.count()) & COUNT_MASK
    }
}

// --- bytes -------------------------------------------------------------------------------

/// `cap` bytes (a power of two) at offset `base` of a mapping, addressed by positions that
/// wrap around its end.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bytes {
    base: usize,
    mask: u64,
}

impl Bytes {
    pub(crate) const fn new(base: usize, cap: u64) -> Bytes {
        assert!(cap.is_power_of_two());
        Bytes {
            base,
            mask: cap - 1,
        }
    }

    /// The capacity in bytes.
    #[inline]
    pub(crate) const fn cap(self) -> u64 {
        self.mask + 1
    }

    /// Where `pos` falls in the memory, and how many of `n` bytes from there fit before
    /// its end (the rest wraps around to the start).
    #[inline]
    fn split(self, pos: u64, n: usize) -> (usize, usize) {
        let idx = (pos & self.mask) as usize;
        (idx, n.min(self.mask as usize + 1 - idx))
    }

    /// Writes `bytes` at `pos` (wrapping).
    pub(crate) fn write(self, mem: &Mapping, pos: u64, bytes: &[u8]) {
        let (idx, first) = self.split(pos, bytes.len());
        mem.write(self.base + idx, &bytes[..first]);
        if first < bytes.len() {
            mem.write(self.base, &bytes[first..]);
        }
    }

    /// The little-endian `u64` at `pos` (wrapping).
    pub(crate) fn read_u64(self, mem: &Mapping, pos: u64) -> u64 {
        let mut b = [0u8; 8];
        let (idx, first) = self.split(pos, 8);
        mem.read(self.base + idx, &mut b[..first]);
        if first < 8 {
            mem.read(self.base, &mut b[first..]);
        }
        u64::from_le_bytes(b)
    }

    /// Appends the `n` bytes at `pos` (wrapping) to `out`.
    pub(crate) fn read(self, mem: &Mapping, pos: u64, n: usize, out: &mut Vec<u8>) {
        let (idx, first) = self.split(pos, n);
        mem.read_append(self.base + idx, first, out);
        if first < n {
            mem.read_append(self.base, n - first, out);
        }
    }

    /// Gives the memory of the `n` bytes at `pos` (wrapping) back to the system: they read
    /// as zeros afterwards (see [`Mapping::punch_hole`]).
    pub(crate) fn punch(self, mem: &Mapping, pos: u64, n: usize) -> std::io::Result<()> {
        let (idx, first) = self.split(pos, n);
        mem.punch_hole(self.base + idx, first)?;
        if first < n {
            mem.punch_hole(self.base, n - first)?;
        }
        Ok(())
    }
}

// --- records -------------------------------------------------------------------------------

/// A record's header, as read.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Header {
    /// Body bytes.
    pub(crate) len: u64,
    /// The kind word's lower 16 bits: the ring's kind and flags.
    pub(crate) kind: u32,
}

impl Header {
    /// Bytes the record takes in its ring.
    #[inline]
    pub(crate) fn size(&self) -> u64 {
        size(self.len)
    }
}

/// What is at a ring's head (see [`Records::front`]).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Front {
    /// Nothing published.
    Empty,
    /// A record, whole.
    Record(Header),
    /// Not a record of this ring, or one that runs past what was published.
    Garbage,
}

/// A record ring: its bytes ([`Bytes`]), whose record headers carry the marker `check`
/// (upper 16 bits of the kind word), and its `tail` and `head` index words ([`Idx`]) at
/// their offsets in the same mapping.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Records {
    bytes: Bytes,
    check: u32,
    tail: usize,
    head: usize,
    /// The producers' own copy of `tail`, on a cache line of theirs (see
    /// [`tail_copy`](Self::tail_copy)).
    ptail: usize,
}

impl Records {
    pub(crate) const fn new(
        bytes: Bytes,
        check: u32,
        tail: usize,
        head: usize,
        ptail: usize,
    ) -> Records {
        assert!(check & !CHECK_MASK == 0);
        Records {
            bytes,
            check,
            tail,
            head,
            ptail,
        }
    }

    /// The ring's bytes (for reads inside a record's body, and test hooks that forge
    /// garbage).
    #[inline]
    pub(crate) const fn bytes(&self) -> Bytes {
        self.bytes
    }

    /// The capacity in bytes.
    #[inline]
    pub(crate) const fn cap(&self) -> u64 {
        self.bytes.cap()
    }

    // --- index words ---

    /// The `tail` word.
    #[inline]
    pub(crate) fn tail_word<'m>(&self, mem: &'m Mapping) -> &'m AtomicU64 {
        mem.u64_at(self.tail)
    }

    /// The `head` word.
    #[inline]
    pub(crate) fn head_word<'m>(&self, mem: &'m Mapping) -> &'m AtomicU64 {
        mem.u64_at(self.head)
    }

    /// `tail`, loaded with `order`.
    #[inline]
    pub(crate) fn tail(&self, mem: &Mapping, order: std::sync::atomic::Ordering) -> Idx {
        Idx(self.tail_word(mem).load(order))
    }

    /// `head`, loaded with `order`.
    #[inline]
    pub(crate) fn head(&self, mem: &Mapping, order: std::sync::atomic::Ordering) -> Idx {
        Idx(self.head_word(mem).load(order))
    }

    /// Bytes free for a record when the tail is `t` and the head `h` (0 for a stale copy
    /// of the head, which looks more than the capacity behind the tail).
    #[inline]
    pub(crate) fn free(&self, t: Idx, h: Idx) -> u64 {
        self.cap().saturating_sub(t.bytes_since(h))
    }

    /// Whether no record is published and not taken.
    #[inline]
    pub(crate) fn is_empty(&self, mem: &Mapping) -> bool {
        self.tail(mem, SeqCst).pos() == self.head(mem, Relaxed).pos()
    }

    // --- producing (the producers' lock held) ---

    /// `tail` as the producers know it (their lock held): their own copy, on a cache line
    /// of theirs. A consumer that has caught up reads the shared word after every record,
    /// which moves its line to the consumer's core; loading it would fetch the line back,
    /// where the copy leaves a publish one store there. Every store of `tail` goes to both
    /// ([`publish`](Self::publish), [`set_tail`](Self::set_tail)); a producer that takes
    /// the lock over from a dead holder (who may have died between the two stores), or
    /// that finds no room by the copy (garbage another process wrote in it must not make
    /// it wait for ever), copies the shared word again ([`recopy_tail`](Self::recopy_tail)).
    #[inline]
    pub(crate) fn tail_copy(&self, mem: &Mapping) -> Idx {
        Idx(mem.u64_at(self.ptail).load(Relaxed))
    }

    /// Copies the shared `tail` into the producers' copy again, and returns it.
    pub(crate) fn recopy_tail(&self, mem: &Mapping) -> Idx {
        let t = self.tail(mem, SeqCst);
        mem.u64_at(self.ptail).store(t.0, Relaxed);
        t
    }

    /// Publishes `t` as the tail (the producers' lock held): the shared word, then the
    /// producers' copy.
    #[inline]
    pub(crate) fn set_tail(&self, mem: &Mapping, t: Idx) {
        self.tail_word(mem).store(t.0, SeqCst);
        mem.u64_at(self.ptail).store(t.0, Relaxed);
    }

    /// Writes a record of `kind` (lower 16 bits) whose body is the concatenation of `parts`
    /// at the tail (room must have been waited for) and publishes it: the tail moves past
    /// it counting `items` more items, with its flag raised (`flag`) or lowered, in one
    /// store. Returns the new tail.
    #[inline]
    pub(crate) fn publish(
        &self,
        mem: &Mapping,
        kind: u32,
        parts: &[&[u8]],
        items: u64,
        flag: bool,
    ) -> Idx {
        let t = self.tail_copy(mem);
        let end = self.write(mem, t.pos(), kind, parts);
        let new = Idx(t.after(end - t.pos(), items).0 | (u64::from(flag) << POS_BITS));
        self.set_tail(mem, new);
        new
    }

    /// Test hook: what a producer killed between its two stores of `tail` leaves: a record
    /// published in the shared word (at the shared tail), the producers' copy not moved.
    #[cfg(test)]
    pub(crate) fn publish_shared_only(
        &self,
        mem: &Mapping,
        kind: u32,
        parts: &[&[u8]],
        items: u64,
    ) {
        let t = self.tail(mem, Relaxed);
        let end = self.write(mem, t.pos(), kind, parts);
        self.tail_word(mem)
            .store(t.after(end - t.pos(), items).0, SeqCst);
    }

    /// Writes a record at `pos` and returns the position after it (not published).
    #[inline]
    fn write(&self, mem: &Mapping, pos: u64, kind: u32, parts: &[&[u8]]) -> u64 {
        debug_assert_eq!(kind & CHECK_MASK, 0);
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let mut h = [0u8; 8];
        h[..4].copy_from_slice(&(len as u32).to_le_bytes());
        h[4..].copy_from_slice(&(kind | self.check).to_le_bytes());
        self.bytes.write(mem, pos, &h);
        let mut at = pos + HEADER;
        for p in parts {
            self.bytes.write(mem, at, p);
            at += p.len() as u64;
        }
        pos + size(len as u64)
    }

    // --- consuming (the consumers' lock held) ---

    /// What is at head `h` when the tail is `t`: nothing, a whole record, or garbage.
    #[inline]
    pub(crate) fn front(&self, mem: &Mapping, h: Idx, t: Idx) -> Front {
        if t.pos() == h.pos() {
            return Front::Empty;
        }
        let used = t.bytes_since(h);
        match self.header(mem, h.pos()) {
            Some(r) if used <= self.cap() && r.size() <= used => Front::Record(r),
            _ => Front::Garbage,
        }
    }

    /// Moves the head from `h` past `bytes` (a record's size), counting `items` taken.
    #[inline]
    pub(crate) fn advance(&self, mem: &Mapping, h: Idx, bytes: u64, items: u64) {
        self.head_word(mem).store(h.after(bytes, items).0, SeqCst);
    }

    /// Moves the head to `to` (a tail seen), throwing away every record before it.
    #[inline]
    pub(crate) fn skip_to(&self, mem: &Mapping, to: Idx) {
        self.head_word(mem).store(to.0, SeqCst);
    }

    /// The header at `pos`, or `None` if its check marker is not this ring's (garbage).
    fn header(&self, mem: &Mapping, pos: u64) -> Option<Header> {
        let w = self.bytes.read_u64(mem, pos);
        let kind_word = (w >> 32) as u32;
        (kind_word & CHECK_MASK == self.check).then_some(Header {
            len: w as u32 as u64,
            kind: kind_word & !CHECK_MASK,
        })
    }

    /// The little-endian `u64` at byte `off` of the body of the record at `pos`.
    #[inline]
    pub(crate) fn body_u64(&self, mem: &Mapping, pos: u64, off: u64) -> u64 {
        self.bytes.read_u64(mem, pos + HEADER + off)
    }

    /// Appends `n` bytes of the body of the record at `pos`, from byte `off`, to `out`.
    #[inline]
    pub(crate) fn body_append(
        &self,
        mem: &Mapping,
        pos: u64,
        off: u64,
        n: usize,
        out: &mut Vec<u8>,
    ) {
        self.bytes.read(mem, pos + HEADER + off, n, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(mem_len: usize, base: usize, cap: u64, check: u32) -> (Mapping, Records) {
        let mem = Mapping::anonymous(mem_len).unwrap();
        (mem, Records::new(Bytes::new(base, cap), check, 0, 8, 16))
    }

    #[test]
    fn records_wrap_around_and_keep_their_kind_length_and_count() {
        let (mem, r) = ring(4096 + 256, 4096, 256, 0x5a3c_0000);
        // The next record crosses the end.
        r.set_tail(&mem, Idx::new(0, 200));
        r.skip_to(&mem, Idx::new(0, 200));
        for (i, len) in [0usize, 1, 7, 8, 9, 100, 240].into_iter().enumerate() {
            let body: Vec<u8> = (0..len).map(|i| i as u8 ^ len as u8).collect();
            let h = r.head(&mem, Relaxed);
            let t = r.publish(&mem, 0x103, &[&body[..len / 2], &body[len / 2..]], 1, false);
            assert_eq!(t.bytes_since(h), size(len as u64));
            assert_eq!(t.items_since(h), 1);
            let Front::Record(rec) = r.front(&mem, h, t) else {
                panic!("record {i} not found whole");
            };
            assert_eq!((rec.len, rec.kind), (len as u64, 0x103));
            let mut out = Vec::new();
            r.body_append(&mem, h.pos(), 0, len, &mut out);
            assert_eq!(out, body);
            r.advance(&mem, h, rec.size(), 1);
            assert!(r.is_empty(&mem));
            assert_eq!(r.head(&mem, Relaxed), t);
        }
    }

    #[test]
    fn a_header_with_another_rings_marker_is_garbage() {
        let (mem, lane) = ring(8192, 4096, 4096, 0x5a3c_0000);
        let queue = Records::new(Bytes::new(4096, 4096), 0xa5c3_0000, 0, 8, 16);
        let h = lane.head(&mem, Relaxed);
        let t = lane.publish(&mem, 1, &[b"x"], 0, false);
        assert!(matches!(lane.front(&mem, h, t), Front::Record(_)));
        assert!(matches!(queue.front(&mem, h, t), Front::Garbage));
        lane.bytes().write(&mem, 16, &[0xff; 8]);
        assert!(matches!(lane.front(&mem, t, t.after(8, 0)), Front::Garbage));
    }

    #[test]
    fn a_record_running_past_the_tail_or_a_stale_head_is_garbage() {
        let (mem, r) = ring(8192, 4096, 4096, 0x5a3c_0000);
        let h = r.head(&mem, Relaxed);
        let t = r.publish(&mem, 1, &[&[7u8; 20]], 0, false);
        // The tail seen is before the record's end.
        assert!(matches!(r.front(&mem, h, h.after(16, 0)), Front::Garbage));
        // More than the capacity published: not a head of this tail.
        assert!(matches!(r.front(&mem, h, t.after(4096, 0)), Front::Garbage));
        assert_eq!(r.free(t.after(4096, 0), h), 0);
        assert_eq!(r.free(t, h), 4096 - size(20));
    }

    #[test]
    fn index_words_wrap_and_keep_their_flag_apart() {
        let top = Idx::new(COUNT_MASK, POS_MASK - 7).with_flag(true);
        assert!(top.flagged());
        let next = top.after(16, 2);
        assert!(!next.flagged(), "moving drops the flag");
        assert_eq!((next.count(), next.pos()), (1, 8));
        assert_eq!(next.bytes_since(top), 16);
        assert_eq!(next.items_since(top), 2);
        assert_eq!(next.with_flag(true).with_flag(false), next);
    }
}
