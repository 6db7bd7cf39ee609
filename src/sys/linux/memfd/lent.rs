//! Reusable message files: a large message's memory file that the sender keeps and lends
//! to its receiver, who gives it back once it has copied the message out, so that the next
//! large message is written into pages that already exist (this VM writes fresh pages of a
//! memory file at about 1 GB/s, existing ones at 4–6 GB/s).
//!
//! # The protocol
//!
//! A lent file is an anonymous memory file made by [`Mapping::anonymous`] (sealed against
//! shrinking and growing, like every segment of the crate), whose first page is a header
//! and whose payload follows it:
//!
//! | offset | word | meaning |
//! |---|---|---|
//! | 0 | `u64` | [`MAGIC`]: this is a lent message file |
//! | 8 | `u32` | the state: [`LENT`] (the receiver's) or [`RETURNED`] (the sender's) |
//! | 16 | `u64` | the message's length |
//!
//! - The sender writes the payload while it holds the file (new, or seen [`RETURNED`]
//!   with `Acquire`), stores the length, then [`LENT`] with `Release`, and sends a duplicate
//!   of the descriptor (the descriptor in a queue record or a pipe packet, as for a sealed
//!   file). It writes nothing more into the file until it sees [`RETURNED`] again.
//! - The receiver ([`Borrowed::receive`]) requires the size seals (so the file cannot be
//!   cut short under its mapping: no `SIGBUS`), a size that holds the header and the
//!   announced length, the magic, [`LENT`] (`Acquire`) and the same length in the header;
//!   otherwise it refuses the file with an error. It copies the payload out, under the
//!   crate's rule for memory others write (plain copies, validated afterwards: the codec
//!   decodes the private copy, never the shared bytes), and, once no other receiver can
//!   take the same message ([`Borrowed::give_back`]: a queue's record consumed, a pipe's
//!   packet taken), stores [`RETURNED`] with `Release` and closes the file. Giving it back
//!   only then means that a consumer killed in between, whose record another consumer
//!   reads again, leaves the file lent and its bytes as they were.
//!
//! The sender keeps at most [`SPARE_FILES`] files of at most [`SPARE_BYTES`] in all, each
//! at most [`MAX_LENT`] bytes (larger messages travel in sealed files as before). A file
//! whose receiver never gives it back (killed, or an item nobody reads) is dropped from
//! the cache when room is needed: the sender closes its descriptor and the receiver's is
//! the last; nothing is named, so nothing is left in /dev/shm. A child made by `fork`
//! starts with an empty cache (it must not write into its parent's files).
//!
//! Trust: a receiver can write into the file it was lent (it holds a descriptor of it),
//! even later, and so make a later message of the same sender garbage; the next receiver
//! validates what it decodes, as it validates what it reads from a queue's ring, which
//! every process of the queue can write too. A sender can likewise write the file while it
//! is lent: the receiver's copy is then garbage, refused or decoded as some value, never a
//! memory error.

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;

use super::Mapping;
use crate::sys::spare::SpareBuffers;

/// Bytes before the payload.
pub(super) const HEADER: usize = 4096;
const O_MAGIC: usize = 0;
const O_STATE: usize = 8;
const O_LEN: usize = 16;
/// "mpLENT01", little-endian.
const MAGIC: u64 = u64::from_le_bytes(*b"mpLENT01");
/// The state word: the receiver holds the file.
const LENT: u32 = 1;
/// The state word: the sender may fill the file again.
const RETURNED: u32 = 2;

/// Messages longer than this are not lent (they travel in a sealed file made for them).
pub(crate) const MAX_LENT: usize = 128 << 20;
/// At most this many bytes of payload in the sender's spare files, lent or not: about a
/// quarter of a GiB (four 64 MiB messages, with their rounding).
const SPARE_BYTES: usize = (256 + 4) << 20;
/// At most this many spare files (descriptors this process keeps open).
const SPARE_FILES: usize = 4;
/// A new file's payload capacity is the message's length rounded up to this.
const ROUND: usize = 1 << 20;

/// The sender's files, lent or returned (not those being filled).
struct Spares {
    /// The fork generation they belong to: a child made by `fork` must not use its
    /// parent's.
    generation: u64,
    files: Vec<Mapping>,
}

static SPARES: Mutex<Spares> = Mutex::new(Spares {
    generation: 0,
    files: Vec::new(),
});

/// How many times a file was filled again after it was given back (counted in tests).
static REUSED: AtomicU64 = AtomicU64::new(0);

/// The receiving side's copy buffer, kept between messages (warm pages).
static RX_SPARE: Mutex<SpareBuffers> = Mutex::new(SpareBuffers::new(1, 1, MAX_LENT));

fn rx_spare() -> std::sync::MutexGuard<'static, SpareBuffers> {
    RX_SPARE.lock().unwrap_or_else(|p| p.into_inner())
}

fn spares() -> std::sync::MutexGuard<'static, Spares> {
    let mut s = SPARES.lock().unwrap_or_else(|p| p.into_inner());
    let generation = super::super::process::fork_generation();
    if s.generation != generation {
        // Inherited through `fork` from the process that fills them: forget them
        // (unmapping our copies of the mappings and closing our descriptors touches
        // nothing of theirs).
        s.files.clear();
        s.generation = generation;
    }
    s
}

fn state(m: &Mapping) -> &AtomicU32 {
    m.u32_at(O_STATE)
}

fn capacity(m: &Mapping) -> usize {
    m.len() - HEADER
}

/// How many times a spare file was filled again (test hook: reuse is observed by this
/// count, not by timing).
#[cfg(test)]
fn reuse_count() -> u64 {
    REUSED.load(Ordering::Relaxed)
}

/// A file the sender is filling with one message. Dropped unsent (its message went
/// another way, or its encoding failed), it goes back among the spare files.
pub(super) struct LentFile {
    /// `None` only once lent.
    map: Option<Mapping>,
    /// One past the last payload byte written.
    end: usize,
    /// A new file, whose pages do not exist yet: written through the file (each page
    /// filled as it is allocated), not through the mapping.
    fresh: bool,
}

impl LentFile {
    /// A file for a message of at least `need` bytes: a returned one that holds it, or a
    /// new one. `None` for a message too large to lend, or if no file can be made.
    pub(super) fn take(need: usize) -> Option<LentFile> {
        if need == 0 || need > MAX_LENT {
            return None;
        }
        {
            let mut s = spares();
            let best = s
                .files
                .iter()
                .enumerate()
                .filter(|(_, m)| {
                    // Not a much larger file: a small message must not tie up a file that
                    // a large one could use.
                    (need..=2 * need + ROUND).contains(&capacity(m))
                        && state(m).load(Ordering::Acquire) == RETURNED
                })
                .min_by_key(|(_, m)| capacity(m))
                .map(|(i, _)| i);
            if let Some(i) = best {
                let map = s.files.remove(i);
                if cfg!(test) {
                    REUSED.fetch_add(1, Ordering::Relaxed);
                }
                return Some(LentFile {
                    map: Some(map),
                    end: 0,
                    fresh: false,
                });
            }
        }
        let cap = need.next_multiple_of(ROUND).min(MAX_LENT);
        let map = Mapping::anonymous(HEADER + cap).ok()?;
        map.u64_at(O_MAGIC).store(MAGIC, Ordering::Relaxed);
        state(&map).store(RETURNED, Ordering::Relaxed);
        Some(LentFile {
            map: Some(map),
            end: 0,
            fresh: true,
        })
    }

    fn map(&self) -> &Mapping {
        match &self.map {
            Some(m) => m,
            None => unreachable!("a lent file is not used again"),
        }
    }

    /// Writes `bytes` at payload byte `off`; `false` (nothing written) if they do not fit.
    pub(super) fn write(&mut self, off: usize, bytes: &[u8]) -> io::Result<bool> {
        let Some(end) = off.checked_add(bytes.len()) else {
            return Ok(false);
        };
        let map = self.map();
        if end > capacity(map) {
            return Ok(false);
        }
        if self.fresh {
            super::pwrite_all(map.fd(), (HEADER + off) as u64, bytes)?;
        } else {
            // The file is ours: the receiver gave it back (seen with `Acquire` in `take`).
            map.write(HEADER + off, bytes);
        }
        self.end = self.end.max(end);
        Ok(true)
    }

    /// Reads payload bytes `off..off + out.len()`; `false` if past what was written.
    pub(super) fn read(&self, off: usize, out: &mut [u8]) -> bool {
        if off.checked_add(out.len()).is_none_or(|e| e > self.end) {
            return false;
        }
        self.map().read(HEADER + off, out);
        true
    }

    /// The payload written so far, written to the start of `fd` (a file that replaces
    /// this one).
    pub(super) fn copy_to(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        let mut buf = vec![0u8; (1 << 20).min(self.end)];
        let mut off = 0;
        while off < self.end {
            let n = buf.len().min(self.end - off);
            self.map().read(HEADER + off, &mut buf[..n]);
            super::pwrite_all(fd, off as u64, &buf[..n])?;
            off += n;
        }
        Ok(())
    }

    /// The message is complete: marks the file lent, keeps it among the spare files, and
    /// returns a descriptor of it to send.
    pub(super) fn lend(mut self) -> io::Result<OwnedFd> {
        let map = self.map();
        let fd = map.fd().try_clone_to_owned()?;
        map.u64_at(O_LEN).store(self.end as u64, Ordering::Relaxed);
        // Publishes the payload and the length to the receiver (its `Acquire` load).
        state(map).store(LENT, Ordering::Release);
        if let Some(map) = self.map.take() {
            keep(map);
        }
        Ok(fd)
    }
}

impl Drop for LentFile {
    fn drop(&mut self) {
        if let Some(map) = self.map.take() {
            keep(map);
        }
    }
}

/// Keeps `map` among the spare files, making room by dropping the oldest lent ones first
/// (a receiver that was killed, or an item nobody took), then the oldest returned ones.
fn keep(map: Mapping) {
    let mut s = spares();
    s.files.push(map);
    loop {
        let bytes: usize = s.files.iter().map(capacity).sum();
        if s.files.len() <= SPARE_FILES && bytes <= SPARE_BYTES {
            break;
        }
        let victim = s
            .files
            .iter()
            .position(|m| state(m).load(Ordering::Relaxed) == LENT)
            .unwrap_or(0);
        s.files.remove(victim);
    }
}

/// A lent message received: its bytes copied out, the file given back by
/// [`give_back`](Borrowed::give_back) or on drop.
pub(super) struct Borrowed {
    copy: Vec<u8>,
    /// `None` once given back.
    map: Option<Mapping>,
}

impl Borrowed {
    /// Receives the lent file `fd` announced as a message of `len` bytes (see the module
    /// docs for what is checked).
    pub(super) fn receive(fd: OwnedFd, len: usize) -> io::Result<Borrowed> {
        let bad = |m: String| io::Error::new(io::ErrorKind::InvalidData, m);
        let whole = len
            .checked_add(HEADER)
            .filter(|_| len > 0 && len <= MAX_LENT)
            .ok_or_else(|| bad(format!("a lent message file cannot hold {len} bytes")))?;
        let map = Mapping::from_memfd_prefix(fd, whole)?;
        if map.u64_at(O_MAGIC).load(Ordering::Relaxed) != MAGIC {
            return Err(bad(
                "memory file is neither sealed read-only nor a lent message file".into(),
            ));
        }
        if state(&map).load(Ordering::Acquire) != LENT {
            return Err(bad("the lent message file was already given back".into()));
        }
        let said = map.u64_at(O_LEN).load(Ordering::Relaxed);
        if said != len as u64 {
            return Err(bad(format!(
                "the lent message file holds {said} bytes, {len} announced"
            )));
        }
        let mut copy = rx_spare().take(len);
        map.read_append(HEADER, len, &mut copy);
        Ok(Borrowed {
            copy,
            map: Some(map),
        })
    }

    /// Stores [`RETURNED`] and closes the file (once).
    pub(super) fn give_back(&mut self) {
        if let Some(map) = self.map.take() {
            // Our reads of the payload happen before the sender's next writes (its
            // `Acquire`).
            state(&map).store(RETURNED, Ordering::Release);
        }
    }

    /// The message's bytes (the private copy).
    pub(super) fn as_slice(&self) -> &[u8] {
        &self.copy
    }
}

impl Drop for Borrowed {
    fn drop(&mut self) {
        self.give_back();
        rx_spare().give(std::mem::take(&mut self.copy));
    }
}

#[cfg(test)]
mod tests {
    use super::super::{message_copy, MessageBytes, MessageFile};
    use super::*;
    use rustix::fs::{MemfdFlags, SealFlags};
    use std::os::fd::AsFd;

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect()
    }

    fn cached(fd: BorrowedFd<'_>) -> bool {
        let ino = rustix::fs::fstat(fd).unwrap().st_ino;
        spares()
            .files
            .iter()
            .any(|m| rustix::fs::fstat(m.fd()).unwrap().st_ino == ino)
    }

    #[test]
    fn a_file_given_back_is_filled_again_and_one_still_lent_is_not() {
        // A size of its own, so that other tests of this process take other files.
        let len = (5 << 20) + 12_345;
        let (a, b) = (pattern(len, 1), pattern(len, 2));
        let fa = message_copy(&a).unwrap();
        assert!(cached(fa.as_fd()), "a reusable file was lent and kept");
        let ra = MessageBytes::receive(fa, len).unwrap();
        assert!(ra.as_slice() == &a[..]);
        // Still lent (not dropped yet): the next message takes another file.
        let before = reuse_count();
        let fb = message_copy(&b).unwrap();
        let rb = MessageBytes::receive(fb, len).unwrap();
        assert!(rb.as_slice() == &b[..]);
        drop(ra);
        drop(rb);
        // Both given back: the next messages are written into them, bit-exact.
        for seed in 3..8 {
            let c = pattern(len - usize::from(seed), seed);
            let fc = message_copy(&c).unwrap();
            let rc = MessageBytes::receive(fc, c.len()).unwrap();
            assert!(rc.as_slice() == &c[..], "seed {seed}");
        }
        assert!(reuse_count() >= before + 5, "{} {before}", reuse_count());
        // Given back before it is dropped: the next message reuses the file while the
        // copy received stays readable.
        let d = pattern(len, 11);
        let mut rd = MessageBytes::receive(message_copy(&d).unwrap(), len).unwrap();
        rd.give_back();
        let before = reuse_count();
        let e = pattern(len, 12);
        let re = MessageBytes::receive(message_copy(&e).unwrap(), len).unwrap();
        assert!(reuse_count() > before, "filled again once given back");
        assert!(rd.as_slice() == &d[..] && re.as_slice() == &e[..]);
        // A message larger than what is lent travels in a sealed file.
        let big = MessageFile::for_message(MAX_LENT + 1).unwrap();
        assert!(matches!(big.kind, super::super::FileKind::New(_)));
    }

    #[test]
    fn a_message_that_outgrows_its_file_moves_to_a_new_one() {
        let mut f = MessageFile::for_message(10).unwrap();
        let a = pattern(3 << 20, 9);
        f.write_at(0, &a[..100]).unwrap();
        f.write_at(100, &a[100..]).unwrap();
        let mut head = [0u8; 100];
        f.read_at(0, &mut head).unwrap();
        assert_eq!(&head[..], &a[..100]);
        let fd = f.finish().unwrap();
        let seals = rustix::fs::fcntl_get_seals(&fd).unwrap();
        assert!(seals.contains(SealFlags::WRITE), "sealed, not lent");
        let r = MessageBytes::receive(fd, a.len()).unwrap();
        assert!(r.as_slice() == &a[..]);
    }

    /// A file laid out as a lent one: `size` bytes, the size seals, the header words.
    fn forged(size: usize, magic: u64, st: u32, len: u64) -> OwnedFd {
        let m = Mapping::anonymous(size).unwrap();
        m.u64_at(O_MAGIC).store(magic, Ordering::Relaxed);
        state(&m).store(st, Ordering::Relaxed);
        m.u64_at(O_LEN).store(len, Ordering::Relaxed);
        m.fd().try_clone_to_owned().unwrap()
    }

    #[test]
    fn hostile_or_wrong_files_are_refused_with_an_error() {
        let refused = |fd: OwnedFd, len: usize| {
            let e = MessageBytes::receive(fd, len).err().expect("refused");
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
        };
        let n = 10_000;
        let whole = HEADER + n;
        // Well-formed: accepted (then given back).
        let ok = forged(whole, MAGIC, LENT, n as u64);
        assert_eq!(MessageBytes::receive(ok, n).unwrap().as_slice().len(), n);
        // Shorter than the header and the announced length: refused before it is read
        // (no SIGBUS past the end).
        refused(forged(whole, MAGIC, LENT, n as u64), n + 1);
        refused(forged(whole, MAGIC, LENT, n as u64), usize::MAX - 10);
        // Not a lent file, given back already, a length that differs from the record's.
        refused(forged(whole, 0, LENT, n as u64), n);
        refused(forged(whole, MAGIC, RETURNED, n as u64), n);
        refused(forged(whole, MAGIC, LENT, n as u64 + 1), n);
        refused(forged(whole, MAGIC, LENT, 0), 0);
        // A file without the size seals: another process could cut it short under the
        // mapping; refused whatever it holds.
        let fd = rustix::fs::memfd_create("t", MemfdFlags::ALLOW_SEALING).unwrap();
        rustix::fs::ftruncate(&fd, whole as u64).unwrap();
        refused(fd, n);
        let fd = rustix::fs::memfd_create("t", MemfdFlags::ALLOW_SEALING).unwrap();
        rustix::fs::ftruncate(&fd, whole as u64).unwrap();
        rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK).unwrap();
        refused(fd, n);
        // Not a memory file at all.
        refused(std::fs::File::open("/dev/null").unwrap().into(), n);
    }

    #[test]
    fn files_never_given_back_are_dropped_and_descriptors_do_not_grow() {
        let fds = || std::fs::read_dir("/proc/self/fd").unwrap().count();
        // Receivers that never give their file back (killed, or the item never read).
        let mut at_start = None;
        for i in 0..1_000 {
            let fd = message_copy(&pattern(1000 + i % 7, i as u8)).unwrap();
            drop(fd);
            if i == 2 * SPARE_FILES {
                at_start = Some(fds());
            }
            assert!(spares().files.len() <= SPARE_FILES);
        }
        assert_eq!(Some(fds()), at_start, "descriptors grow per message");
        let s = spares();
        assert!(s.files.iter().map(capacity).sum::<usize>() <= SPARE_BYTES);
    }
}
