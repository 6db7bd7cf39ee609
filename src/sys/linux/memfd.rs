//! Shared memory mappings: anonymous ones backed by a `memfd` (nothing to leak: the memory
//! goes when the last descriptor and mapping are gone), and named POSIX blocks in /dev/shm.
//!
//! All access to the mapped bytes goes through atomics (see [`Mapping::atomic`]) or
//! [`Mapping::read`]/[`Mapping::write`], which copy with relaxed atomic loads and stores:
//! other processes write the same memory concurrently, and atomics are the only way for
//! Rust code to see such writes without undefined behaviour.

use std::ffi::c_void;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{
    AtomicI16, AtomicI32, AtomicI64, AtomicI8, AtomicU16, AtomicU32, AtomicU64, AtomicU8, Ordering,
};

use rustix::fs::{MemfdFlags, SealFlags};
use rustix::mm::{MapFlags, ProtFlags};

mod sealed {
    pub trait Sealed {}
}

/// An atomic integer type that may be placed over shared bytes: every bit pattern is a
/// valid value (so not `AtomicBool`), and its size equals its alignment.
pub(crate) trait AtomicCell: sealed::Sealed + Sync {}

macro_rules! cells {
    ($($t:ty),*) => {$(
        impl sealed::Sealed for $t {}
        impl AtomicCell for $t {}
    )*};
}
cells!(AtomicU8, AtomicU16, AtomicU32, AtomicU64, AtomicI8, AtomicI16, AtomicI32, AtomicI64);

/// A shared, read-write mapping of a file (a memfd or a /dev/shm object), unmapped on drop.
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
    fd: OwnedFd,
}

// SAFETY: the mapping is plain memory shared with other processes; Rust code only reaches
// it through atomics (`atomic`) or atomic copies (`read`/`write`), which are thread-safe.
unsafe impl Send for Mapping {}
// SAFETY: as above: no method hands out non-atomic references into the mapping.
unsafe impl Sync for Mapping {}

const SEALS: SealFlags = SealFlags::SHRINK
    .union(SealFlags::GROW)
    .union(SealFlags::SEAL);

impl Mapping {
    /// A new anonymous segment of `len` zeroed bytes (`len` > 0), its size sealed so that no
    /// process can shrink it under another's mapping (which would make accesses fault).
    pub(crate) fn anonymous(len: usize) -> io::Result<Mapping> {
        let fd =
            rustix::fs::memfd_create("multiproc", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)?;
        rustix::fs::ftruncate(&fd, len as u64)?;
        rustix::fs::fcntl_add_seals(&fd, SEALS)?;
        Mapping::map(fd, len)
    }

    /// Maps a memfd received from another process, which must be sealed against shrinking
    /// and hold at least `len` bytes.
    pub(crate) fn from_memfd(fd: OwnedFd, len: usize) -> io::Result<Mapping> {
        let seals = rustix::fs::fcntl_get_seals(&fd)?;
        if !seals.contains(SealFlags::SHRINK) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "shared segment is not sealed against shrinking",
            ));
        }
        let size = rustix::fs::fstat(&fd)?.st_size;
        if size < 0 || (size as u64) < len as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("shared segment has {size} bytes, {len} expected"),
            ));
        }
        Mapping::map(fd, len)
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
        if len == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "cannot map 0 bytes",
            ));
        }
        // SAFETY: a fresh shared mapping chosen by the kernel (null hint), over a file we
        // hold open; it aliases no Rust object. It is unmapped exactly once, in Drop.
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

    /// The atomic of type `A` at byte offset `off`.
    ///
    /// Panics if it does not lie inside the mapping or is misaligned: offsets are chosen
    /// by this crate's layouts, never by another process.
    #[inline]
    pub(crate) fn atomic<A: AtomicCell>(&self, off: usize) -> &A {
        let size = std::mem::size_of::<A>();
        assert!(
            off.is_multiple_of(size) && off.checked_add(size).is_some_and(|e| e <= self.len),
            "multiproc: shared-memory access out of layout (offset {off}, size {size}, len {})",
            self.len
        );
        // SAFETY: in bounds and aligned (checked above; the mapping is page-aligned); the
        // memory stays mapped while `self` is borrowed; atomic integers have the layout
        // of the integer, every bit pattern is valid, and all Rust accesses to shared
        // bytes are atomic, so concurrent writes by others are not data races.
        unsafe { &*self.ptr.as_ptr().add(off).cast::<A>() }
    }

    /// Copies bytes `off..off + out.len()` into `out`. Panics if out of range.
    pub(crate) fn read(&self, off: usize, out: &mut [u8]) {
        assert!(off.checked_add(out.len()).is_some_and(|e| e <= self.len));
        let mut i = 0;
        while i < out.len() {
            let at = off + i;
            if at.is_multiple_of(8) && out.len() - i >= 8 {
                let v = self.atomic::<AtomicU64>(at).load(Ordering::Relaxed);
                out[i..i + 8].copy_from_slice(&v.to_ne_bytes());
                i += 8;
            } else {
                out[i] = self.atomic::<AtomicU8>(at).load(Ordering::Relaxed);
                i += 1;
            }
        }
    }

    /// Copies `data` to bytes `off..off + data.len()`. Panics if out of range.
    pub(crate) fn write(&self, off: usize, data: &[u8]) {
        assert!(off.checked_add(data.len()).is_some_and(|e| e <= self.len));
        let mut i = 0;
        while i < data.len() {
            let at = off + i;
            if at.is_multiple_of(8) && data.len() - i >= 8 {
                let mut b = [0u8; 8];
                b.copy_from_slice(&data[i..i + 8]);
                self.atomic::<AtomicU64>(at)
                    .store(u64::from_ne_bytes(b), Ordering::Relaxed);
                i += 8;
            } else {
                self.atomic::<AtomicU8>(at)
                    .store(data[i], Ordering::Relaxed);
                i += 1;
            }
        }
    }
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
        let mut done = 0;
        while done < out.len() {
            match rustix::io::pread(&self.fd, &mut out[done..], (off + done) as u64) {
                Ok(0) => return Err(truncated(off + out.len(), self.file_len()?)),
                Ok(n) => done += n,
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
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

    #[test]
    fn anonymous_roundtrip() {
        let m = Mapping::anonymous(4096).unwrap();
        m.atomic::<AtomicU32>(8).store(7, Ordering::Relaxed);
        let d = super::super::socket::dup_fd(m.fd()).unwrap();
        let m2 = Mapping::from_memfd(d, 4096).unwrap();
        assert_eq!(m2.atomic::<AtomicU32>(8).load(Ordering::Relaxed), 7);
        m2.write(3, b"hello, shared world");
        let mut out = [0u8; 19];
        m.read(3, &mut out);
        assert_eq!(&out, b"hello, shared world");
        let d = super::super::socket::dup_fd(m.fd()).unwrap();
        assert!(Mapping::from_memfd(d, 8192).is_err());
    }
}
