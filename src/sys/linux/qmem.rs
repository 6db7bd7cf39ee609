//! Shared memory for queues: an anonymous `memfd` segment mapped in every process that holds
//! the queue, with a safe byte/atomic API over it, and the datagram side channel that carries
//! file descriptors (handles inside queue items) next to the ring.
//!
//! The segment has no name (nothing can be left in /dev/shm) and is sealed against resizing
//! once created, so no process can shrink it under another's mapping (which would turn
//! accesses into `SIGBUS`). Every access is bounds-checked against the mapping; the bytes
//! themselves are only ever touched through raw-pointer copies and atomics, never through
//! Rust references that assume nobody else writes.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64};

use rustix::fs::{MemfdFlags, SealFlags};
use rustix::io::Errno;
use rustix::mm::{MapFlags, ProtFlags};
use rustix::net::{
    recvmsg, sendmsg, socketpair, AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage,
    RecvFlags, SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketFlags, SocketType,
};

use super::socket::MAX_FDS_PER_MESSAGE;

/// A shared, fixed-size, read-write mapping of an anonymous memory file.
pub(crate) struct SharedBytes {
    fd: OwnedFd,
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is shared memory that any thread (or process) may access; every access
// goes through atomics or raw-pointer copies, so sharing the handle between threads is fine.
unsafe impl Send for SharedBytes {}
// SAFETY: see `Send`; `&SharedBytes` gives no access that is not already cross-process safe.
unsafe impl Sync for SharedBytes {}

const SEALS: SealFlags = SealFlags::SHRINK
    .union(SealFlags::GROW)
    .union(SealFlags::SEAL);

impl SharedBytes {
    /// Creates a zero-filled segment of `len` bytes (pages are allocated on first touch).
    pub(crate) fn create(len: usize) -> io::Result<SharedBytes> {
        if len == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty segment"));
        }
        let fd = rustix::fs::memfd_create(
            "multiproc-queue",
            MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
        )?;
        rustix::fs::ftruncate(&fd, len as u64)?;
        rustix::fs::fcntl_add_seals(&fd, SEALS)?;
        Self::map(fd, len)
    }

    /// Maps a segment received from another process. Its size must be at least `min_len`,
    /// and it must be sealed against resizing.
    pub(crate) fn from_fd(fd: OwnedFd, min_len: usize) -> io::Result<SharedBytes> {
        let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, m.to_string());
        let seals = rustix::fs::fcntl_get_seals(&fd).map_err(|_| bad("not a queue segment"))?;
        if !seals.contains(SealFlags::SHRINK | SealFlags::GROW) {
            return Err(bad("queue segment is not sealed against resizing"));
        }
        let st = rustix::fs::fstat(&fd)?;
        let len = usize::try_from(st.st_size).map_err(|_| bad("bad segment size"))?;
        if len < min_len || len == 0 {
            return Err(bad("queue segment is too small"));
        }
        Self::map(fd, len)
    }

    fn map(fd: OwnedFd, len: usize) -> io::Result<SharedBytes> {
        // SAFETY: a fresh mapping (null hint, no MAP_FIXED) cannot alias any Rust object; the
        // file is sealed at `len` bytes, so every byte of the mapping stays backed and no
        // access can fault with SIGBUS. We only access it through atomics and raw copies.
        let p = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                &fd,
                0,
            )?
        };
        let ptr = NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap gave null"))?;
        Ok(SharedBytes { fd, ptr, len })
    }

    /// The memory file, to be sent to another process.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Size of the mapping in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Gives the memory of bytes `off..off + n` back to the system (`FALLOCATE_PUNCH_HOLE`):
    /// they read as zeros afterwards, and a later write allocates a fresh page. Whole pages
    /// inside the range are freed; the ends of a range that is not page-aligned are zeroed.
    pub(crate) fn punch_hole(&self, off: usize, n: usize) -> io::Result<()> {
        self.check(off, n, 1);
        if n == 0 {
            return Ok(());
        }
        rustix::fs::fallocate(
            &self.fd,
            rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE,
            off as u64,
            n as u64,
        )?;
        Ok(())
    }

    /// Bytes of memory the segment's file holds now (pages written and not given back).
    #[cfg(test)]
    pub(crate) fn resident_bytes(&self) -> u64 {
        rustix::fs::fstat(&self.fd).map_or(0, |st| st.st_blocks as u64 * 512)
    }

    #[inline]
    fn check(&self, off: usize, n: usize, align: usize) {
        assert!(
            off.checked_add(n).is_some_and(|e| e <= self.len) && off.is_multiple_of(align),
            "shared segment access out of bounds or misaligned: {off}+{n} of {}",
            self.len
        );
    }

    /// The 32-bit atomic word at byte offset `off` (4-aligned).
    #[inline]
    pub(crate) fn u32_at(&self, off: usize) -> &AtomicU32 {
        self.check(off, 4, 4);
        // SAFETY: in bounds and aligned (checked; the mapping is page-aligned); the memory
        // lives as long as `self`; AtomicU32 has the layout of u32 and every bit pattern is
        // valid; all accesses to header words are atomic in every process.
        unsafe { AtomicU32::from_ptr(self.ptr.as_ptr().add(off).cast::<u32>()) }
    }

    /// The 64-bit atomic word at byte offset `off` (8-aligned).
    #[inline]
    pub(crate) fn u64_at(&self, off: usize) -> &AtomicU64 {
        self.check(off, 8, 8);
        // SAFETY: as for `u32_at`.
        unsafe { AtomicU64::from_ptr(self.ptr.as_ptr().add(off).cast::<u64>()) }
    }

    /// Copies `src` into the segment at `off`.
    #[inline]
    pub(crate) fn write(&self, off: usize, src: &[u8]) {
        self.check(off, src.len(), 1);
        // SAFETY: the destination range is inside the mapping (checked) and cannot overlap
        // `src`, which is ordinary process memory. Concurrent writers are excluded by the
        // queue's protocol (the range is owned by the producer holding the producer lock); a
        // misbehaving process can only make the bytes garbage, which readers validate.
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), self.ptr.as_ptr().add(off), src.len())
        }
    }

    /// Copies `dst.len()` bytes at `off` out of the segment.
    #[inline]
    pub(crate) fn read(&self, off: usize, dst: &mut [u8]) {
        self.check(off, dst.len(), 1);
        // SAFETY: the source range is inside the mapping (checked) and does not overlap `dst`.
        // Raw copies of plain bytes: whatever another process wrote, the result is some bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(self.ptr.as_ptr().add(off), dst.as_mut_ptr(), dst.len())
        }
    }

    /// Appends `n` bytes at `off` to `dst` (without zero-filling `dst` first).
    #[inline]
    pub(crate) fn read_append(&self, off: usize, n: usize, dst: &mut Vec<u8>) {
        self.check(off, n, 1);
        dst.reserve(n);
        // SAFETY: `reserve` made room for `n` more bytes; the source is inside the mapping
        // (checked) and cannot overlap the vector's heap buffer; after the copy the first
        // `len + n` bytes of the vector are initialised.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.ptr.as_ptr().add(off),
                dst.as_mut_ptr().add(dst.len()),
                n,
            );
            dst.set_len(dst.len() + n);
        }
    }
}

/// Byte rings inside a segment: `mask + 1` bytes (a power of two) from offset `base`, indexed
/// by an ever-growing position taken modulo the ring's size, so that a run of bytes may wrap
/// around its end.
impl SharedBytes {
    /// Copies `bytes` into the ring at `pos`.
    pub(crate) fn ring_write(&self, base: usize, mask: u64, pos: u64, bytes: &[u8]) {
        let idx = (pos & mask) as usize;
        let first = bytes.len().min(mask as usize + 1 - idx);
        self.write(base + idx, &bytes[..first]);
        if first < bytes.len() {
            self.write(base, &bytes[first..]);
        }
    }

    /// Appends the `n` bytes of the ring at `pos` to `out`.
    pub(crate) fn ring_read_append(
        &self,
        base: usize,
        mask: u64,
        pos: u64,
        n: usize,
        out: &mut Vec<u8>,
    ) {
        let idx = (pos & mask) as usize;
        let first = n.min(mask as usize + 1 - idx);
        self.read_append(base + idx, first, out);
        if first < n {
            self.read_append(base, n - first, out);
        }
    }

    /// The little-endian `u64` of the ring at `pos`.
    pub(crate) fn ring_read_u64(&self, base: usize, mask: u64, pos: u64) -> u64 {
        let mut b = [0u8; 8];
        let idx = (pos & mask) as usize;
        let first = 8.min(mask as usize + 1 - idx);
        self.read(base + idx, &mut b[..first]);
        if first < 8 {
            self.read(base, &mut b[first..]);
        }
        u64::from_le_bytes(b)
    }
}

/// A new memory file holding a copy of `bytes` (not empty), sealed read-only: how a large
/// message travels by descriptor (a queue's spilled item, a pipe's large message), to be
/// mapped by the receiver as [`SealedBytes`]. It has no name: nothing is left behind when
/// the last descriptor is closed, whoever holds it is killed.
///
/// It is written through the file, not through a mapping: each page is filled as it is
/// allocated (not zeroed first), no page tables are built and torn down, and no writable
/// mapping stands in the way of `F_SEAL_WRITE`.
pub(crate) fn sealed_copy(bytes: &[u8]) -> io::Result<OwnedFd> {
    if bytes.is_empty() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty segment"));
    }
    let fd = rustix::fs::memfd_create(
        "multiproc-message",
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )?;
    let mut done = 0;
    while done < bytes.len() {
        match rustix::io::pwrite(&fd, &bytes[done..], done as u64) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => done += n,
            Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    rustix::fs::fcntl_add_seals(&fd, SEALS | SealFlags::WRITE)?;
    Ok(fd)
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
    /// Maps `fd`, which must be sealed against writes and resizing and be `len` bytes long.
    pub(crate) fn from_fd(fd: OwnedFd, len: usize) -> io::Result<SealedBytes> {
        let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, m.to_string());
        let seals = rustix::fs::fcntl_get_seals(&fd).map_err(|_| bad("not a sealed segment"))?;
        if !seals.contains(SealFlags::WRITE | SealFlags::SHRINK | SealFlags::GROW) {
            return Err(bad("segment is not sealed read-only"));
        }
        let st = rustix::fs::fstat(&fd)?;
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
                MapFlags::SHARED | MapFlags::POPULATE,
                &fd,
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
        // SAFETY: exactly the mapping made in `from_fd`; borrows of it end with `self`.
        unsafe {
            let _ = rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

impl Drop for SharedBytes {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly the mapping made in `map`, which nothing else
        // unmaps; references handed out borrow `self`, so none outlives this.
        unsafe {
            let _ = rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

// --- side channel for file descriptors ----------------------------------------------------

/// A connected pair of Unix datagram sockets (close-on-exec): what is sent on the first
/// arrives on the second.
pub(crate) fn dgram_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let (a, b) = socketpair(
        AddressFamily::UNIX,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC,
        None,
    )?;
    // Each waiting datagram takes about 768 bytes of the sender's buffer: the default
    // (~208 KiB) holds about 270. Ask for more; the kernel caps it at `wmem_max`.
    let _ = rustix::net::sockopt::set_socket_send_buffer_size(&a, 4 << 20);
    Ok((a, b))
}

/// Sends one datagram holding `tag` with the descriptors `fds` attached (blocking).
pub(crate) fn send_tagged(sock: BorrowedFd<'_>, tag: u64, fds: &[RawFd]) -> io::Result<()> {
    let borrowed = super::socket::borrow_fds(fds)?;
    let mut space =
        vec![MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(borrowed.len()))];
    let bytes = tag.to_le_bytes();
    loop {
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !borrowed.is_empty() {
            control.push(SendAncillaryMessage::ScmRights(&borrowed));
        }
        match sendmsg(
            sock,
            &[IoSlice::new(&bytes)],
            &mut control,
            SendFlags::NOSIGNAL,
        ) {
            Ok(_) => return Ok(()),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Looks at (`peek`) or takes the next datagram without blocking: its tag and the
/// descriptors that came with it (when peeking, duplicates of them). `None` if none is
/// waiting. A datagram that is not 8 bytes long gives tag `u64::MAX`.
pub(crate) fn recv_tagged(
    sock: BorrowedFd<'_>,
    peek: bool,
) -> io::Result<Option<(u64, Vec<OwnedFd>)>> {
    let mut space =
        [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS_PER_MESSAGE))];
    let mut buf = [0u8; 16];
    let mut flags = RecvFlags::DONTWAIT | RecvFlags::CMSG_CLOEXEC;
    if peek {
        flags |= RecvFlags::PEEK;
    }
    loop {
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let mut iov = [IoSliceMut::new(&mut buf)];
        match recvmsg(sock, &mut iov, &mut control, flags) {
            Ok(r) => {
                let mut fds = Vec::new();
                for msg in control.drain() {
                    if let RecvAncillaryMessage::ScmRights(it) = msg {
                        fds.extend(it);
                    }
                }
                let tag = if r.bytes == 8 {
                    let mut t = [0u8; 8];
                    t.copy_from_slice(&buf[..8]);
                    u64::from_le_bytes(t)
                } else {
                    u64::MAX
                };
                return Ok(Some((tag, fds)));
            }
            Err(Errno::AGAIN) => return Ok(None),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::sync::atomic::Ordering;

    #[test]
    fn segment_roundtrip_and_remap() {
        let s = SharedBytes::create(8192).unwrap();
        s.write(100, b"hello");
        s.u64_at(8).store(7, Ordering::SeqCst);
        let fd = super::super::socket::dup_fd(s.fd()).unwrap();
        let t = SharedBytes::from_fd(fd, 4096).unwrap();
        let mut b = [0u8; 5];
        t.read(100, &mut b);
        assert_eq!(&b, b"hello");
        assert_eq!(t.u64_at(8).load(Ordering::SeqCst), 7);
        let mut v = vec![1u8];
        t.read_append(100, 2, &mut v);
        assert_eq!(v, vec![1, b'h', b'e']);
        assert!(rustix::fs::ftruncate(t.fd(), 100).is_err(), "sealed");
        // A file that is not a sealed memfd is refused.
        let f = std::fs::File::open("/dev/null").unwrap();
        assert!(SharedBytes::from_fd(f.into(), 1).is_err());
    }

    #[test]
    fn sealed_read_only_segments() {
        let mut bytes = vec![0u8; 10_000];
        bytes[5..8].copy_from_slice(b"abc");
        let fd = sealed_copy(&bytes).unwrap();
        let dup = super::super::socket::dup_fd(&fd).unwrap();
        let r = SealedBytes::from_fd(fd, 10_000).unwrap();
        assert_eq!(r.as_slice(), &bytes[..]);
        assert!(
            rustix::io::write(&dup, b"x").is_err(),
            "sealed against writes"
        );
        // Wrong length, or a segment that can still be written: refused.
        assert!(SealedBytes::from_fd(dup, 9_999).is_err());
        let w = SharedBytes::create(4096).unwrap();
        let wfd = super::super::socket::dup_fd(w.fd()).unwrap();
        assert!(SealedBytes::from_fd(wfd, 4096).is_err());
    }

    #[test]
    #[should_panic(expected = "out of bounds")]
    fn out_of_bounds_is_caught() {
        let s = SharedBytes::create(4096).unwrap();
        s.write(4095, b"ab");
    }

    #[test]
    fn tagged_datagrams() {
        let (a, b) = dgram_pair().unwrap();
        assert!(recv_tagged(b.as_fd(), true).unwrap().is_none());
        let f = std::fs::File::open("/dev/null").unwrap();
        send_tagged(a.as_fd(), 42, &[f.as_raw_fd()]).unwrap();
        let (t, fds) = recv_tagged(b.as_fd(), true).unwrap().unwrap();
        assert_eq!((t, fds.len()), (42, 1));
        let (t, fds) = recv_tagged(b.as_fd(), false).unwrap().unwrap();
        assert_eq!((t, fds.len()), (42, 1));
        assert!(recv_tagged(b.as_fd(), false).unwrap().is_none());
    }
}
