//! Shared memory mappings — the crate's one mapping type, [`Mapping`], with one rule for
//! memory that other processes write too, and one seal policy — and [`SealedBytes`], a
//! read-only mapping of memory nobody can write any more.
//!
//! # The rule for memory other processes write
//!
//! Rust code never holds a reference (`&[u8]`, `&T`) into a [`Mapping`]'s bytes: another
//! process may change them at any moment, which such a reference forbids. It reaches them in
//! two ways only:
//!
//! - **Words that processes use concurrently** (ring positions, lock words, counters, a
//!   `Value`'s number) through atomics: [`Mapping::atomic`] (and `u32_at`/`u64_at`).
//! - **Runs of bytes** with plain copies (`memcpy`: [`read`](Mapping::read),
//!   [`write`](Mapping::write), the ring copies), but only in a range that the protocol of
//!   its owner hands over to the copying process: a ring's producer writes only bytes past
//!   the published tail while it holds the producer lock, a consumer reads only bytes
//!   before a tail it loaded with `Acquire` (published by a `Release`/`SeqCst` store after
//!   they were written), and so on. Between processes that follow the protocol, no byte is
//!   copied while another process writes it.
//!
//! A process that breaks the protocol (a bug, a hostile peer with the same memory) can only
//! make the bytes another process copies arbitrary: they are copied into private buffers of
//! plain bytes (every bit pattern valid), and every reader validates the *copy* (record
//! markers, lengths, the codec's checks), never the shared bytes in place, so nothing it
//! decides can change under it. This is the faster of the two rules the crate had (the other
//! copied byte by byte with relaxed atomic loads and stores, several times slower for large
//! items, and no safer against a peer that breaks the protocol).
//!
//! Views that hand out `&[T]` over shared memory exist only as `unsafe fn`s whose contract
//! is that hand-over (`sys::ndarray`), and over sealed read-only memory ([`SealedBytes`]).
//!
//! # The seal policy
//!
//! Every anonymous segment (a `memfd`) is sealed against shrinking and growing when it is
//! made ([`anonymous`](Mapping::anonymous)), so that no process can cut it short under
//! another's mapping (a load past the end of the file raises `SIGBUS`). One received from
//! another process must carry both seals ([`from_memfd`](Mapping::from_memfd)), or it is
//! refused. A message frozen for travel ([`MessageFile::seal`]) is sealed against writing as
//! well, and a [`SealedBytes`] must carry that seal too. A large message may instead travel
//! in a file its sender reuses ([`lent`]): the receiver checks the size seals and copies the
//! message out under the rule above, as from a ring. Named POSIX blocks
//! (`SharedMemory`) cannot be sealed: they are reached through `pread`/`pwrite` on their
//! descriptor instead ([`pread_exact`](Mapping::pread_exact)), which report truncation as an
//! error.

use std::ffi::c_void;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{
    AtomicI16, AtomicI32, AtomicI64, AtomicI8, AtomicU16, AtomicU32, AtomicU64, AtomicU8,
};

use rustix::fs::{MemfdFlags, SealFlags};
use rustix::mm::{MapFlags, ProtFlags};

mod lent;

mod sealed {
    pub trait Sealed {}
}

/// An atomic type that may be placed over shared bytes: an atomic integer, or a `repr(C)`
/// group of them without padding ([`MutexWords`]), so every bit pattern is a valid value
/// (not `AtomicBool`).
pub(crate) trait AtomicCell: sealed::Sealed + Sync {}

/// The three words of a robust mutex in shared memory (`ipc::mutex`'s layout): the lock
/// word, the parking word and the owner record, 16 bytes, 8-aligned, no padding. Reached as
/// one cell, so that a mutex at a fixed place costs one bounds check, not three.
#[repr(C)]
pub(crate) struct MutexWords {
    pub(crate) word: AtomicU32,
    pub(crate) park: AtomicU32,
    pub(crate) owner: AtomicU64,
}

impl sealed::Sealed for MutexWords {}
impl AtomicCell for MutexWords {}

macro_rules! cells {
    ($($t:ty),*) => {$(
        impl sealed::Sealed for $t {}
        impl AtomicCell for $t {}
    )*};
}
cells!(AtomicU8, AtomicU16, AtomicU32, AtomicU64, AtomicI8, AtomicI16, AtomicI32, AtomicI64);

/// A shared, read-write mapping of a file (a memfd or a /dev/shm object), unmapped on drop.
/// See the [module docs](self) for how its bytes may be reached.
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
    fd: OwnedFd,
}

// SAFETY: the mapping is plain memory shared with other processes; Rust code only reaches
// it through atomics or copies under the module's rule, which are thread-safe.
unsafe impl Send for Mapping {}
// SAFETY: as above: no method hands out references into the mapping's bytes.
unsafe impl Sync for Mapping {}

/// The seals of an anonymous segment: its size fixed, and no seal added later.
const SEALS: SealFlags = SealFlags::SHRINK
    .union(SealFlags::GROW)
    .union(SealFlags::SEAL);
/// The seals every received segment must carry.
const SIZE_SEALS: SealFlags = SealFlags::SHRINK.union(SealFlags::GROW);

impl Mapping {
    /// A new anonymous segment of `len` zeroed bytes (`len` > 0; pages are allocated on
    /// first touch), sealed against resizing.
    pub(crate) fn anonymous(len: usize) -> io::Result<Mapping> {
        if len == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "cannot map 0 bytes",
            ));
        }
        let fd =
            rustix::fs::memfd_create("multiproc", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)?;
        rustix::fs::ftruncate(&fd, len as u64)?;
        rustix::fs::fcntl_add_seals(&fd, SEALS)?;
        Mapping::map(fd, len)
    }

    /// Maps, whole, a memfd received from another process, which must be sealed against
    /// shrinking and growing and hold at least `min_len` bytes (and at least one).
    pub(crate) fn from_memfd(fd: OwnedFd, min_len: usize) -> io::Result<Mapping> {
        Mapping::from_memfd_with(fd, min_len, false)
    }

    /// Like [`from_memfd`](Self::from_memfd), but maps only the first `len` bytes, with
    /// their page tables filled at once (for bytes about to be read whole).
    pub(crate) fn from_memfd_prefix(fd: OwnedFd, len: usize) -> io::Result<Mapping> {
        Mapping::from_memfd_with(fd, len, true)
    }

    /// `prefix`: map `min_len` bytes, populated; otherwise the whole file, lazily.
    fn from_memfd_with(fd: OwnedFd, min_len: usize, prefix: bool) -> io::Result<Mapping> {
        let bad = |m: String| io::Error::new(io::ErrorKind::InvalidData, m);
        let seals = rustix::fs::fcntl_get_seals(&fd)
            .map_err(|_| bad("not a shared segment (no seals)".into()))?;
        if !seals.contains(SIZE_SEALS) {
            return Err(bad("shared segment is not sealed against resizing".into()));
        }
        let size = rustix::fs::fstat(&fd)?.st_size;
        match usize::try_from(size) {
            Ok(n) if n >= min_len && n > 0 => {
                Mapping::map_with(fd, if prefix { min_len } else { n }, prefix)
            }
            _ => Err(bad(format!(
                "shared segment has {size} bytes, at least {} expected",
                min_len.max(1)
            ))),
        }
    }

    /// Creates the named block `name` ("/..." form) of `len` bytes; fails if it exists.
    pub(crate) fn create_named(name: &str, len: usize) -> io::Result<Mapping> {
        use rustix::shm::OFlags;
        let fd = rustix::shm::open(
            name,
            OFlags::CREATE | OFlags::EXCL | OFlags::RDWR,
            rustix::fs::Mode::from_raw_mode(0o600),
        )?;
        let r = rustix::fs::ftruncate(&fd, len as u64)
            .map_err(io::Error::from)
            .and_then(|()| Mapping::map(fd, len));
        if r.is_err() {
            let _ = rustix::shm::unlink(name);
        }
        r
    }

    /// Opens the existing named block `name` ("/..." form), whole.
    pub(crate) fn open_named(name: &str) -> io::Result<Mapping> {
        use rustix::shm::OFlags;
        let fd = rustix::shm::open(name, OFlags::RDWR, rustix::fs::Mode::empty())?;
        let size = rustix::fs::fstat(&fd)?.st_size;
        if size <= 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "shared memory block is empty",
            ));
        }
        Mapping::map(fd, size as usize)
    }

    fn map(fd: OwnedFd, len: usize) -> io::Result<Mapping> {
        Mapping::map_with(fd, len, false)
    }

    fn map_with(fd: OwnedFd, len: usize, populate: bool) -> io::Result<Mapping> {
        if len == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "cannot map 0 bytes",
            ));
        }
        // SAFETY: a fresh shared mapping chosen by the kernel (null hint, no MAP_FIXED), over
        // a file we hold open; it aliases no Rust object. It is unmapped exactly once, in Drop.
        let p = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                if populate {
                    MapFlags::SHARED | MapFlags::POPULATE
                } else {
                    MapFlags::SHARED
                },
                &fd,
                0,
            )?
        };
        let ptr = NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap gave null"))?;
        Ok(Mapping { ptr, len, fd })
    }

    /// The mapped length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The backing file, to send to another process.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The first mapped byte.
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    #[inline]
    fn check(&self, off: usize, n: usize) {
        if off.checked_add(n).is_none_or(|e| e > self.len) {
            out_of_bounds(off, n, self.len);
        }
    }

    /// The atomic of type `A` at byte offset `off`.
    ///
    /// Panics if it does not lie inside the mapping or is misaligned: offsets are chosen
    /// by this crate's layouts, never by another process.
    #[inline]
    pub(crate) fn atomic<A: AtomicCell>(&self, off: usize) -> &A {
        let size = std::mem::size_of::<A>();
        let align = std::mem::align_of::<A>();
        if !(off.is_multiple_of(align) && off.checked_add(size).is_some_and(|e| e <= self.len)) {
            // Out of line, so that the check inlined into every lock and ring operation is
            // a few instructions (the formatting made callers too big to inline).
            bad_atomic(off, size, self.len);
        }
        // SAFETY: in bounds and aligned (checked above; the mapping is page-aligned); the
        // memory stays mapped while `self` is borrowed; atomic integers have the layout
        // of the integer, every bit pattern is valid (also for `MutexWords`, atomics
        // without padding), and words that processes share are only ever accessed
        // atomically (the module's rule).
        unsafe { &*self.ptr.as_ptr().add(off).cast::<A>() }
    }

    /// The 32-bit atomic word at byte offset `off` (4-aligned).
    #[inline]
    pub(crate) fn u32_at(&self, off: usize) -> &AtomicU32 {
        self.atomic::<AtomicU32>(off)
    }

    /// The 64-bit atomic word at byte offset `off` (8-aligned).
    #[inline]
    pub(crate) fn u64_at(&self, off: usize) -> &AtomicU64 {
        self.atomic::<AtomicU64>(off)
    }

    /// Copies `data` to bytes `off..off + data.len()`, which the caller's protocol hands
    /// over to it (see the module docs). Panics if out of range.
    #[inline]
    pub(crate) fn write(&self, off: usize, data: &[u8]) {
        self.check(off, data.len());
        // SAFETY: the destination range is inside the mapping (checked) and cannot overlap
        // `data`, which is ordinary process memory. No other process writes or reads the
        // range meanwhile under the protocol (the module's rule); one that breaks it can
        // only make the bytes garbage, which readers validate after copying them out.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.as_ptr().add(off), data.len())
        }
    }

    /// Copies bytes `off..off + out.len()` into `out` (a range handed over by the caller's
    /// protocol). Panics if out of range.
    #[inline]
    pub(crate) fn read(&self, off: usize, out: &mut [u8]) {
        self.check(off, out.len());
        // SAFETY: the source range is inside the mapping (checked) and does not overlap
        // `out`. Plain bytes are copied into plain bytes: whatever a process that breaks the
        // protocol wrote, the result is some bytes, validated by the caller afterwards.
        unsafe {
            std::ptr::copy_nonoverlapping(self.ptr.as_ptr().add(off), out.as_mut_ptr(), out.len())
        }
    }

    /// Appends the `n` bytes at `off` to `out` (without zero-filling `out` first).
    #[inline]
    pub(crate) fn read_append(&self, off: usize, n: usize, out: &mut Vec<u8>) {
        self.check(off, n);
        out.reserve(n);
        // SAFETY: `reserve` made room for `n` more bytes; the source is inside the mapping
        // (checked) and cannot overlap the vector's heap buffer; after the copy the first
        // `len + n` bytes of the vector are initialised (as for `read`: some bytes).
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.ptr.as_ptr().add(off),
                out.as_mut_ptr().add(out.len()),
                n,
            );
            out.set_len(out.len() + n);
        }
    }

    /// Gives the memory of bytes `off..off + n` back to the system (`FALLOCATE_PUNCH_HOLE`):
    /// they read as zeros afterwards, and a later write allocates a fresh page. Whole pages
    /// inside the range are freed; the ends of a range that is not page-aligned are zeroed.
    pub(crate) fn punch_hole(&self, off: usize, n: usize) -> io::Result<()> {
        self.check(off, n);
        if n == 0 {
            return Ok(());
        }
        loop {
            match rustix::fs::fallocate(
                &self.fd,
                rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE,
                off as u64,
                n as u64,
            ) {
                // Interrupted by a signal (SIGCHLD): do it again; it changes nothing twice.
                Err(rustix::io::Errno::INTR) => continue,
                r => return Ok(r?),
            }
        }
    }

    /// Bytes of memory the segment's file holds now (pages written and not given back).
    #[cfg(test)]
    pub(crate) fn resident_bytes(&self) -> u64 {
        rustix::fs::fstat(&self.fd).map_or(0, |st| st.st_blocks as u64 * 512)
    }
}

/// The panic of [`Mapping::atomic`]: a layout bug of this crate.
#[cold]
#[inline(never)]
#[track_caller]
fn bad_atomic(off: usize, size: usize, len: usize) -> ! {
    panic!(
        "multiproc: shared-memory access out of bounds or misaligned (offset {off}, size \
         {size}, len {len})"
    )
}

/// The panic of a byte range past a mapping's end: a bug of this crate.
#[cold]
#[inline(never)]
#[track_caller]
fn out_of_bounds(off: usize, n: usize, len: usize) -> ! {
    panic!("multiproc: shared-memory access out of bounds: {off}+{n} of {len}")
}

/// Copies through the file, not the mapping: for memory whose size another process may
/// change ([`SharedMemory`](crate::shared_memory::SharedMemory): a named block cannot be
/// sealed). Touching a mapped page past the file's end raises SIGBUS; `pread`/`pwrite` on
/// the descriptor give an error instead, and see the same bytes as the mapping.
impl Mapping {
    /// The backing file's current size (another process may have truncated it).
    pub(crate) fn file_len(&self) -> io::Result<u64> {
        Ok(rustix::fs::fstat(&self.fd)?.st_size.max(0) as u64)
    }

    /// Reads bytes `off..off + out.len()` of the file into `out`: an `UnexpectedEof`
    /// error if the file no longer holds them all.
    pub(crate) fn pread_exact(&self, off: usize, out: &mut [u8]) -> io::Result<()> {
        if !read_exact_at(self.fd.as_fd(), off as u64, out)? {
            return Err(truncated(off + out.len(), self.file_len()?));
        }
        Ok(())
    }

    /// Writes `data` to bytes `off..` of the file, if the file still holds them all: it is
    /// never grown back (an `UnexpectedEof` error instead).
    pub(crate) fn pwrite_exact(&self, off: usize, data: &[u8]) -> io::Result<()> {
        let end = off + data.len();
        let size = self.file_len()?;
        if (size as u128) < end as u128 {
            return Err(truncated(end, size));
        }
        let mut done = 0;
        while done < data.len() {
            match rustix::io::pwrite(&self.fd, &data[done..], (off + done) as u64) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(n) => done += n,
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

fn truncated(end: usize, size: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!(
            "the shared memory block was truncated to {size} bytes by another process; \
             bytes up to {end} are gone"
        ),
    )
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what mmap returned; no reference into the
        // mapping outlives `self` (they all borrow it).
        let _ = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast::<c_void>(), self.len) };
    }
}

/// Fills `out` from byte `off` of `fd`: `Ok(false)` if the file ends first.
fn read_exact_at(fd: BorrowedFd<'_>, off: u64, out: &mut [u8]) -> io::Result<bool> {
    let mut done = 0;
    while done < out.len() {
        match rustix::io::pread(fd, &mut out[done..], off + done as u64) {
            Ok(0) => return Ok(false),
            Ok(n) => done += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(true)
}

/// The memory file that carries the message `bytes` (not empty) by descriptor (a queue's
/// spilled item, a pipe's large message): a reusable file lent to the receiver if the
/// message is small enough ([`MAX_LENT`](lent::MAX_LENT)), a new sealed one otherwise (see
/// [`MessageFile::for_message`]); the receiver reads it with [`MessageBytes::receive`].
pub(crate) fn message_copy(bytes: &[u8]) -> io::Result<OwnedFd> {
    message_copy_parts(&[bytes])
}

/// [`message_copy`] of the message made of `parts` one after another (not empty in all),
/// each copied once, from its own memory into the file, with no copy of the whole message
/// in between (a pool's batch: frame headers between large runs of arguments). Parts
/// smaller than [`GATHER`] are gathered into one write.
pub(crate) fn message_copy_parts(parts: &[&[u8]]) -> io::Result<OwnedFd> {
    let total = parts.iter().map(|p| p.len()).sum::<usize>();
    if total == 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty segment"));
    }
    let mut f = MessageFile::for_message(total)?;
    let mut small = Vec::new();
    let mut off = 0u64;
    for p in parts {
        if p.len() >= GATHER {
            if !small.is_empty() {
                f.write_at(off, &small)?;
                off += small.len() as u64;
                small.clear();
            }
            f.write_at(off, p)?;
            off += p.len() as u64;
        } else {
            small.extend_from_slice(p);
        }
    }
    if !small.is_empty() {
        f.write_at(off, &small)?;
    }
    f.finish()
}

/// Parts of a message smaller than this are gathered before they are written
/// ([`message_copy_parts`]): one system call each would cost more than the copy.
const GATHER: usize = 64 << 10;

/// Writes all of `bytes` at byte `off` of the file `fd` (growing it as needed).
fn pwrite_all(fd: BorrowedFd<'_>, off: u64, bytes: &[u8]) -> io::Result<()> {
    let mut done = 0;
    while done < bytes.len() {
        match rustix::io::pwrite(fd, &bytes[done..], off + done as u64) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => done += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// A memory file being filled with one message, to travel by descriptor: a new file,
/// sealed read-only when complete ([`seal`](MessageFile::seal)), or a reusable one, lent
/// to the receiver ([`finish`](MessageFile::finish); see [`lent`]). [`message_copy`] fills
/// one in one go; the codec writes a large value straight into one,
/// piece by piece, with no copy of the whole value in between.
///
/// A new file is written through the file, not through a mapping: each page is filled as
/// it is allocated (not zeroed first), no page tables are built and torn down, and no
/// writable mapping stands in the way of `F_SEAL_WRITE`.
pub(crate) struct MessageFile {
    kind: FileKind,
}

enum FileKind {
    New(OwnedFd),
    Lent(lent::LentFile),
}

impl MessageFile {
    /// A new, empty memory file (no name: nothing to clean up), to be sealed.
    pub(crate) fn new() -> io::Result<MessageFile> {
        let fd = rustix::fs::memfd_create(
            "multiproc-message",
            MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
        )?;
        Ok(MessageFile {
            kind: FileKind::New(fd),
        })
    }

    /// A file for a message of about `hint` bytes (at least; more may be written): a
    /// reusable file if one can be had for that size ([`MAX_LENT`](lent::MAX_LENT) at most), a new one
    /// otherwise. A message that outgrows a reusable file moves to a new one.
    pub(crate) fn for_message(hint: usize) -> io::Result<MessageFile> {
        match lent::LentFile::take(hint) {
            Some(f) => Ok(MessageFile {
                kind: FileKind::Lent(f),
            }),
            None => MessageFile::new(),
        }
    }

    /// Writes `bytes` at byte `off` of the file (growing it as needed).
    pub(crate) fn write_at(&mut self, off: u64, bytes: &[u8]) -> io::Result<()> {
        if let FileKind::Lent(f) = &mut self.kind {
            match usize::try_from(off) {
                Ok(at) if f.write(at, bytes)? => return Ok(()),
                _ => self.unlend()?,
            }
        }
        match &self.kind {
            FileKind::New(fd) => pwrite_all(fd.as_fd(), off, bytes),
            FileKind::Lent(_) => unreachable!("moved to a new file"),
        }
    }

    /// Moves the message written so far from a reusable file (kept for another message)
    /// to a new one.
    fn unlend(&mut self) -> io::Result<()> {
        let new = MessageFile::new()?;
        let FileKind::New(fd) = &new.kind else {
            unreachable!("a new file")
        };
        if let FileKind::Lent(f) = &self.kind {
            f.copy_to(fd.as_fd())?;
        }
        // The reusable file goes back among the spare ones (dropped).
        self.kind = new.kind;
        Ok(())
    }

    /// Reads `out.len()` bytes from byte `off` of the file.
    pub(crate) fn read_at(&self, off: u64, out: &mut [u8]) -> io::Result<()> {
        let ok = match &self.kind {
            FileKind::New(fd) => read_exact_at(fd.as_fd(), off, out)?,
            FileKind::Lent(f) => usize::try_from(off).is_ok_and(|off| f.read(off, out)),
        };
        if !ok {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(())
    }

    /// Makes the file `len` zero bytes long and lends them to `fill` to write, through a
    /// mapping that is gone when `fill` returns (or panics), before the file is sealed.
    pub(crate) fn fill<R>(
        &mut self,
        len: usize,
        fill: impl FnOnce(&mut [u8]) -> R,
    ) -> io::Result<R> {
        if let FileKind::Lent(_) = self.kind {
            // Not for a reusable file (dropped: it goes back among the spare ones).
            self.kind = MessageFile::new()?.kind;
        }
        let FileKind::New(fd) = &self.kind else {
            unreachable!("a new file")
        };
        rustix::fs::ftruncate(fd, len as u64)?;
        if len == 0 {
            return Ok(fill(&mut []));
        }
        // The crate's one mapping type, over a second descriptor of the file: unmapped (and
        // closed) when `map` goes, at the end of this call, before any seal.
        let map = Mapping::map(fd.try_clone()?, len)?;
        // SAFETY: `len` bytes, mapped readable and writable just above, zero-filled by the
        // kernel (initialised), and reached by nothing else while `fill` holds them: the
        // file is new, its descriptors have not left this object (which `&mut self` borrows
        // exclusively, so no `write_at` meanwhile) and this call, and `map` is its only
        // mapping. The file has no seals yet but nothing can shrink it meanwhile (no
        // SIGBUS). The slice's borrow ends before `map` is dropped.
        let bytes = unsafe { std::slice::from_raw_parts_mut(map.as_ptr(), len) };
        Ok(fill(bytes))
    }

    /// Seals the file read-only at its current size: the descriptor to send, which the
    /// receiver maps as [`SealedBytes`]. (A reusable file's message moves to a new file
    /// first.)
    pub(crate) fn seal(mut self) -> io::Result<OwnedFd> {
        if let FileKind::Lent(_) = self.kind {
            self.unlend()?;
        }
        match self.kind {
            FileKind::New(fd) => {
                rustix::fs::fcntl_add_seals(&fd, SEALS | SealFlags::WRITE)?;
                Ok(fd)
            }
            FileKind::Lent(_) => unreachable!("moved to a new file"),
        }
    }

    /// The message is complete: the descriptor to send, which the receiver reads with
    /// [`MessageBytes::receive`]. A new file is sealed read-only; a reusable one is lent.
    pub(crate) fn finish(self) -> io::Result<OwnedFd> {
        match self.kind {
            FileKind::New(_) => self.seal(),
            FileKind::Lent(f) => f.lend(),
        }
    }
}

/// A large message received by descriptor, from [`MessageFile::finish`]: a sealed file,
/// read in place, or a lent one, copied out and given back to its sender when this is
/// dropped.
pub(crate) struct MessageBytes(Received);

enum Received {
    Sealed(SealedBytes),
    Lent(lent::Borrowed),
}

impl MessageBytes {
    /// Maps the file `fd`, announced as a message of `len` bytes: one sealed read-only
    /// ([`SealedBytes::from_fd`]'s checks) or a lent file (see [`lent`]); any other is
    /// refused with an error.
    pub(crate) fn receive(fd: OwnedFd, len: usize) -> io::Result<MessageBytes> {
        let seals = rustix::fs::fcntl_get_seals(&fd).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "not a sealed segment".to_string(),
            )
        })?;
        if seals.contains(SealFlags::WRITE) {
            SealedBytes::from_fd(fd, len).map(|s| MessageBytes(Received::Sealed(s)))
        } else {
            lent::Borrowed::receive(fd, len).map(|b| MessageBytes(Received::Lent(b)))
        }
    }

    /// Gives a lent file back to its sender now (its bytes stay readable here): once no
    /// other receiver can take the same message (a queue's record consumed, a packet
    /// taken). Otherwise it is given back when this is dropped.
    pub(crate) fn give_back(&mut self) {
        if let Received::Lent(b) = &mut self.0 {
            b.give_back();
        }
    }

    /// The message's bytes.
    pub(crate) fn as_slice(&self) -> &[u8] {
        match &self.0 {
            Received::Sealed(s) => s.as_slice(),
            Received::Lent(b) => b.as_slice(),
        }
    }
}

/// A read-only mapping of a memory file that is sealed against writing and resizing: no
/// process can change its bytes any more, so they can be lent out as a plain `&[u8]`.
pub(crate) struct SealedBytes {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: immutable memory, readable from any thread.
unsafe impl Send for SealedBytes {}
// SAFETY: as for Send.
unsafe impl Sync for SealedBytes {}

impl SealedBytes {
    /// Maps `fd`, which must be sealed against writes and resizing and be `len` bytes long,
    /// with its page tables filled at once (for bytes about to be read whole).
    /// The descriptor is closed once mapped.
    pub(crate) fn from_fd(fd: OwnedFd, len: usize) -> io::Result<SealedBytes> {
        SealedBytes::map(fd.as_fd(), len, true)
    }

    /// Like [`from_fd`](Self::from_fd), but pages are mapped as they are first read (the
    /// mapping is made at once whatever its size), and the descriptor stays the caller's.
    pub(crate) fn from_fd_lazy(fd: BorrowedFd<'_>, len: usize) -> io::Result<SealedBytes> {
        SealedBytes::map(fd, len, false)
    }

    fn map(fd: BorrowedFd<'_>, len: usize, populate: bool) -> io::Result<SealedBytes> {
        let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, m.to_string());
        let seals = rustix::fs::fcntl_get_seals(fd).map_err(|_| bad("not a sealed segment"))?;
        if !seals.contains(SIZE_SEALS | SealFlags::WRITE) {
            return Err(bad("segment is not sealed read-only"));
        }
        let st = rustix::fs::fstat(fd)?;
        if usize::try_from(st.st_size).ok() != Some(len) || len == 0 {
            return Err(bad("segment has the wrong size"));
        }
        // SAFETY: a fresh read-only mapping (no MAP_FIXED) aliases nothing; the file is
        // sealed at `len` bytes, so every page stays backed (no SIGBUS).
        let p = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ,
                if populate {
                    MapFlags::SHARED | MapFlags::POPULATE
                } else {
                    MapFlags::SHARED
                },
                fd,
                0,
            )?
        };
        let ptr = NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap gave null"))?;
        Ok(SealedBytes { ptr, len })
    }

    /// The bytes.
    pub(crate) fn as_slice(&self) -> &[u8] {
        // SAFETY: the mapping is `len` readable bytes that live as long as `self`; the file
        // is sealed against writes (F_SEAL_WRITE, checked in `from_fd`) and against
        // shrinking, so no process can modify or remove them while we lend them out.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for SealedBytes {
    fn drop(&mut self) {
        // SAFETY: exactly the mapping made in `map`; borrows of it end with `self`.
        unsafe {
            let _ = rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

/// A fresh name for a named block (`mp_` and 16 hex digits): unique in practice across
/// processes and calls (pid, a counter and the time, hashed with a random key).
pub(crate) fn unique_name() -> String {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(super::process::getpid());
    h.write_u64(COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(t.as_nanos());
    }
    format!("mp_{:016x}", h.finish())
}

/// Buffers of at least this many bytes are worth [`prepare_fill`]: a fresh large
/// vector fills several times faster with a page fault per 2 MiB than with one per 4 KiB.
pub(crate) const HUGE_PAGES_FROM: usize = 4 << 20;

/// Buffers of at least this many bytes are prefaulted by [`prepare_fill`] rather than
/// advised to use huge pages: on the 2-core VM, a fresh vector of 256 MiB or 1 GiB
/// advised huge pages filled at about half the speed of one whose pages were all made at
/// once (`MADV_POPULATE_WRITE`) before the copy (the kernel compacts memory to find each
/// huge page), while up to 64 MiB huge pages did as well or better.
pub(crate) const PREFAULT_FROM: usize = 128 << 20;

/// Prepares `buf` — memory a caller owns and is about to fill whole, such as a vector's
/// spare capacity — for the fill: up to [`PREFAULT_FROM`] bytes, asks the kernel to back
/// it with huge pages (`MADV_HUGEPAGE` on the whole pages inside it), so that filling it
/// takes one page fault per 2 MiB instead of one per 4 KiB; from there on, makes all its
/// pages at once (`MADV_POPULATE_WRITE`), so that the fill takes no page fault. Does
/// nothing for a buffer smaller than [`HUGE_PAGES_FROM`]. Only a hint, which never fails:
/// nothing happens if transparent huge pages are off or the kernel is older than 5.14,
/// or for memory that is not anonymous (the small blocks of the heap); the bytes are
/// unaffected either way. The crate's one place for this advice: every large buffer it
/// allocates and then fills (a decoded vector, a received frame, an encoding) goes
/// through here.
pub(crate) fn prepare_fill<T>(buf: &mut [T]) {
    let len = std::mem::size_of_val(buf);
    if len < HUGE_PAGES_FROM {
        return;
    }
    const PAGE: usize = 4096;
    let start = buf.as_mut_ptr() as usize;
    let end = start + len;
    let (first, last) = (start.next_multiple_of(PAGE), end & !(PAGE - 1));
    if last <= first {
        return;
    }
    let advice = if len >= PREFAULT_FROM {
        rustix::mm::Advice::LinuxPopulateWrite
    } else {
        rustix::mm::Advice::LinuxHugepage
    };
    // SAFETY: the range is whole pages inside `buf`, memory the caller owns exclusively
    // (the `&mut` borrow). MADV_HUGEPAGE changes how the kernel backs the pages, never
    // their contents or the mapping itself; MADV_POPULATE_WRITE faults the pages in as a
    // write would, without writing (a fresh page reads as zeros, an existing one keeps its
    // bytes), and the caller is about to overwrite them anyway: no Rust object can observe
    // either. A failure (THP not built in, an older kernel, memory of another kind, no
    // memory left, which the fill itself then meets as before) leaves everything as it
    // was.
    let _ = unsafe { rustix::mm::madvise(first as *mut c_void, last - first, advice) };
}

/// Removes the named block `name` ("/..." form).
pub(crate) fn unlink_named(name: &str) -> io::Result<()> {
    Ok(rustix::shm::unlink(name)?)
}

/// Makes this process ignore SIGINT and SIGTERM (the shared-memory tracker: a Ctrl-C aimed
/// at the program must not kill it before it has cleaned up), survive its parent, and
/// leave its parent's session and process group (`setsid`): a signal sent to the whole
/// group (`kill -9 -PGID`, job control) must not take it along with its clients.
///
/// Its standard output and error go to /dev/null: it must not keep its creator's output
/// pipes open after the creator is gone.
pub(crate) fn become_tracker() {
    let _ = rustix::process::set_parent_process_death_signal(None);
    let _ = rustix::process::setsid();
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        let _ = rustix::stdio::dup2_stdout(&null);
        let _ = rustix::stdio::dup2_stderr(&null);
    }
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: installing SIG_IGN runs no code of ours in signal context.
        unsafe {
            libc::signal(sig, libc::SIG_IGN);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn anonymous_roundtrip_and_remap() {
        let m = Mapping::anonymous(8192).unwrap();
        m.atomic::<AtomicU32>(8).store(7, Ordering::Relaxed);
        m.u64_at(16).store(9, Ordering::SeqCst);
        let d = super::super::socket::dup_fd(m.fd()).unwrap();
        let m2 = Mapping::from_memfd(d, 4096).unwrap();
        assert_eq!(m2.len(), 8192, "mapped whole");
        assert_eq!(m2.atomic::<AtomicU32>(8).load(Ordering::Relaxed), 7);
        assert_eq!(m2.u64_at(16).load(Ordering::SeqCst), 9);
        m2.write(3, b"hello, shared world");
        let mut out = [0u8; 19];
        m.read(3, &mut out);
        assert_eq!(&out, b"hello, shared world");
        let mut v = vec![1u8];
        m.read_append(3, 2, &mut v);
        assert_eq!(v, vec![1, b'h', b'e']);
        assert!(rustix::fs::ftruncate(m.fd(), 100).is_err(), "sealed");
        let d = super::super::socket::dup_fd(m.fd()).unwrap();
        assert!(Mapping::from_memfd(d, 8193).is_err(), "too small");
        // A file that is not a sealed memfd is refused.
        let f = std::fs::File::open("/dev/null").unwrap();
        assert!(Mapping::from_memfd(f.into(), 1).is_err());
        // A memfd sealed against shrinking only is refused too (the one seal policy).
        let fd = rustix::fs::memfd_create("t", MemfdFlags::ALLOW_SEALING).unwrap();
        rustix::fs::ftruncate(&fd, 4096).unwrap();
        rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK).unwrap();
        assert!(Mapping::from_memfd(fd, 4096).is_err());
    }

    #[test]
    fn sealed_read_only_segments() {
        let mut bytes = vec![0u8; 10_000];
        bytes[5..8].copy_from_slice(b"abc");
        let mut f = MessageFile::new().unwrap();
        f.write_at(0, &bytes).unwrap();
        let fd = f.seal().unwrap();
        let dup = super::super::socket::dup_fd(&fd).unwrap();
        let r = SealedBytes::from_fd(fd, 10_000).unwrap();
        assert_eq!(r.as_slice(), &bytes[..]);
        assert!(
            rustix::io::write(&dup, b"x").is_err(),
            "sealed against writes"
        );
        // Wrong length, or a segment that can still be written: refused.
        assert!(SealedBytes::from_fd(dup, 9_999).is_err());
        let w = Mapping::anonymous(4096).unwrap();
        let wfd = super::super::socket::dup_fd(w.fd()).unwrap();
        assert!(SealedBytes::from_fd(wfd, 4096).is_err());
        assert!(message_copy(&[]).is_err());
    }

    #[test]
    fn a_message_copied_from_parts_arrives_whole_lent_or_sealed() {
        const PAGE: usize = 4096;
        // A pattern that repeats every 65,537 bytes (a prime: no shift by whole pages
        // compares equal).
        let unit: Vec<u8> = (0..65_537usize)
            .map(|i| (i.wrapping_mul(131) ^ (i >> 8)) as u8)
            .collect();
        // Around the largest lent message: lent below and at it, sealed above.
        for total in [lent::MAX_LENT - PAGE, lent::MAX_LENT, lent::MAX_LENT + PAGE] {
            let mut whole = Vec::with_capacity(total);
            while whole.len() < total {
                whole.extend_from_slice(&unit[..unit.len().min(total - whole.len())]);
            }
            // Small parts gathered between large ones, an empty one, a large one last.
            let cuts = [0, 3, 3, 70_000, 70_010, 70_011, total / 2, total - 5, total];
            let parts: Vec<&[u8]> = cuts.windows(2).map(|c| &whole[c[0]..c[1]]).collect();
            let fd = message_copy_parts(&parts).unwrap();
            let sealed = rustix::fs::fcntl_get_seals(&fd)
                .unwrap()
                .contains(SealFlags::WRITE);
            assert_eq!(sealed, total > lent::MAX_LENT, "{total}");
            let got = MessageBytes::receive(fd, total).unwrap();
            assert!(got.as_slice() == &whole[..], "{total} bytes differ");
        }
        assert!(message_copy_parts(&[&[], &[]]).is_err(), "empty");
    }

    #[test]
    #[should_panic(expected = "out of bounds")]
    fn out_of_bounds_is_caught() {
        let s = Mapping::anonymous(4096).unwrap();
        s.write(4095, b"ab");
    }
}
