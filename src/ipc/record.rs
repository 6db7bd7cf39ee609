//! The one record format of the crate's byte rings in shared memory: the queues' rings
//! ([`ring`](super::ring)) and the pipes' lanes ([`lane`](super::lane)) both store their
//! messages as records written and read through [`Records`], and reach their ring's bytes
//! only through it; each adds only its own index words (where `head` and `tail` live,
//! what else they pack), its own record kinds, and its own protocol.
//!
//! # A record
//! An 8-byte header — `len: u32` (body bytes), then a kind word: the ring's kind and flags
//! in the lower 16 bits, the ring's check marker in the upper 16 — then `len` bytes of
//! body, padded to 8. A record is written whole before its ring's `tail` moves past it
//! (the writer's protocol), so a reader that finds a header whose marker is wrong, or
//! whose length runs past what was published, is looking at garbage and says so.
//!
//! # Positions
//! Positions are byte offsets that only grow; a position is taken modulo the ring's
//! capacity (a power of two) to index its memory, and a record that crosses the end wraps
//! around to the start.

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

/// A record's header, as read.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Header {
    /// Body bytes.
    pub(crate) len: u64,
    /// The kind word's lower 16 bits: the ring's kind and flags.
    pub(crate) kind: u32,
}

/// A ring of records: `cap` bytes (a power of two) at offset `base` of a mapping, whose
/// headers carry the marker `check` (upper 16 bits of the kind word).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Records {
    base: usize,
    mask: u64,
    check: u32,
}

impl Records {
    pub(crate) const fn new(base: usize, cap: u64, check: u32) -> Records {
        assert!(cap.is_power_of_two() && check & !CHECK_MASK == 0);
        Records {
            base,
            mask: cap - 1,
            check,
        }
    }

    /// Writes a record of `kind` (lower 16 bits) whose body is the concatenation of `parts`
    /// at `pos`, and returns the position after it (room must have been waited for; the
    /// record becomes visible when the caller's `tail` moves there).
    pub(crate) fn write(&self, mem: &Mapping, pos: u64, kind: u32, parts: &[&[u8]]) -> u64 {
        debug_assert_eq!(kind & CHECK_MASK, 0);
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let mut h = [0u8; 8];
        h[..4].copy_from_slice(&(len as u32).to_le_bytes());
        h[4..].copy_from_slice(&(kind | self.check).to_le_bytes());
        self.write_bytes(mem, pos, &h);
        let mut at = pos + HEADER;
        for p in parts {
            self.write_bytes(mem, at, p);
            at += p.len() as u64;
        }
        pos + size(len as u64)
    }

    /// The header at `pos`, or `None` if its check marker is not this ring's (garbage).
    pub(crate) fn header(&self, mem: &Mapping, pos: u64) -> Option<Header> {
        let w = self.read_u64(mem, pos);
        let kind_word = (w >> 32) as u32;
        (kind_word & CHECK_MASK == self.check).then_some(Header {
            len: w as u32 as u64,
            kind: kind_word & !CHECK_MASK,
        })
    }

    /// The little-endian `u64` at byte `off` of the body of the record at `pos`.
    pub(crate) fn body_u64(&self, mem: &Mapping, pos: u64, off: u64) -> u64 {
        self.read_u64(mem, pos + HEADER + off)
    }

    /// Appends `n` bytes of the body of the record at `pos`, from byte `off`, to `out`.
    pub(crate) fn body_append(
        &self,
        mem: &Mapping,
        pos: u64,
        off: u64,
        n: usize,
        out: &mut Vec<u8>,
    ) {
        self.read_bytes(mem, pos + HEADER + off, n, out);
    }

    /// Writes raw bytes at `pos`, wrapping around the end: for byte areas that hold no
    /// records (the pipes' large-message area) and for test hooks that forge garbage.
    pub(crate) fn write_bytes(&self, mem: &Mapping, pos: u64, bytes: &[u8]) {
        let (idx, first) = self.split(pos, bytes.len());
        mem.write(self.base + idx, &bytes[..first]);
        if first < bytes.len() {
            mem.write(self.base, &bytes[first..]);
        }
    }

    /// Where `pos` falls in the ring's memory, and how many of `n` bytes from there fit
    /// before its end (the rest wraps around to the start).
    #[inline]
    fn split(&self, pos: u64, n: usize) -> (usize, usize) {
        let idx = (pos & self.mask) as usize;
        (idx, n.min(self.mask as usize + 1 - idx))
    }

    /// The little-endian `u64` at `pos` (wrapping).
    pub(crate) fn read_u64(&self, mem: &Mapping, pos: u64) -> u64 {
        let mut b = [0u8; 8];
        let (idx, first) = self.split(pos, 8);
        mem.read(self.base + idx, &mut b[..first]);
        if first < 8 {
            mem.read(self.base, &mut b[first..]);
        }
        u64::from_le_bytes(b)
    }

    /// Gives the memory of the `n` bytes at `pos` (wrapping) back to the system: they read
    /// as zeros afterwards (see [`Mapping::punch_hole`]).
    pub(crate) fn punch(&self, mem: &Mapping, pos: u64, n: usize) -> std::io::Result<()> {
        let (idx, first) = self.split(pos, n);
        mem.punch_hole(self.base + idx, first)?;
        if first < n {
            mem.punch_hole(self.base, n - first)?;
        }
        Ok(())
    }

    /// Appends the `n` raw bytes at `pos` (wrapping) to `out`.
    pub(crate) fn read_bytes(&self, mem: &Mapping, pos: u64, n: usize, out: &mut Vec<u8>) {
        let (idx, first) = self.split(pos, n);
        mem.read_append(self.base + idx, first, out);
        if first < n {
            mem.read_append(self.base, n - first, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_wrap_around_and_keep_their_kind_and_length() {
        let mem = Mapping::anonymous(4096 + 256).unwrap();
        let r = Records::new(4096, 256, 0x5a3c_0000);
        let mut pos = 200; // the next record crosses the end
        for len in [0usize, 1, 7, 8, 9, 100, 240] {
            let body: Vec<u8> = (0..len).map(|i| i as u8 ^ len as u8).collect();
            let end = r.write(&mem, pos, 0x103, &[&body[..len / 2], &body[len / 2..]]);
            assert_eq!(end, pos + size(len as u64));
            let h = r.header(&mem, pos).unwrap();
            assert_eq!((h.len, h.kind), (len as u64, 0x103));
            let mut out = Vec::new();
            r.body_append(&mem, pos, 0, len, &mut out);
            assert_eq!(out, body);
            pos = end;
        }
    }

    #[test]
    fn a_header_with_another_rings_marker_is_garbage() {
        let mem = Mapping::anonymous(8192).unwrap();
        let lane = Records::new(4096, 4096, 0x5a3c_0000);
        let queue = Records::new(4096, 4096, 0xa5c3_0000);
        lane.write(&mem, 0, 1, &[b"x"]);
        assert!(lane.header(&mem, 0).is_some());
        assert!(queue.header(&mem, 0).is_none());
        lane.write_bytes(&mem, 8, &[0xff; 8]);
        assert!(lane.header(&mem, 8).is_none());
    }
}
