//! [`SharedBytes`]: immutable bytes in sealed shared memory, handed between processes by
//! descriptor, never copied.

use std::fmt;
use std::ops::Deref;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::codec::{FdOwned, FdRef};
use crate::sys::memfd::{MessageFile, SealedBytes};
use crate::{Error, Result};

/// Immutable bytes in shared memory that travel between processes without being copied,
/// like ipc-channel's `IpcSharedMemory` or a pickle protocol 5 out-of-band buffer.
///
/// The bytes live in an anonymous memory file (a `memfd`, never in /dev/shm) sealed
/// read-only once filled: no process can change or shorten them any more, so every holder
/// reads them as a plain `&[u8]` (`Deref<Target = [u8]>`). Put a `SharedBytes` anywhere
/// inside a value sent through a [`Queue`](crate::Queue), a
/// [`Connection`](crate::Connection), a [`Process`](crate::Process)'s arguments or a pool
/// task: only its descriptor travels (a few bytes in the item), and the receiver maps the
/// same memory, whatever its size. Clones share one mapping. The memory is given back when
/// the last holder in every process has dropped it, however the processes end (killed
/// ones included): nothing is left behind.
///
/// Make one by filling it in place ([`SharedBytes::build`], no copy at all) or by copying
/// a slice once ([`SharedBytes::from_slice`]). Like every handle, it can only be encoded
/// for a multiproc channel (not with another serde format).
///
/// A plain `Vec<u8>` item needs no wrapper either: past half a queue's ring it is written
/// once into such a file by `put` and copied once out of it by `get`. `SharedBytes` saves
/// those two copies.
///
/// ```
/// multiproc::init();
/// use multiproc::shared_memory::SharedBytes;
/// use multiproc::Queue;
///
/// fn sum(q: Queue<(String, SharedBytes)>) -> u64 {
///     let (name, data) = q.get().unwrap();
///     assert_eq!(name, "frame");
///     data.iter().map(|&b| u64::from(b)).sum()
/// }
///
/// let q = Queue::new().unwrap();
/// let child = multiproc::spawn(sum, q.clone()).unwrap();
/// // 8 MiB filled in shared memory, sent by handle.
/// let frame = SharedBytes::build(8 << 20, |b| b.fill(1)).unwrap();
/// q.put(("frame".to_string(), frame.clone())).unwrap();
/// assert_eq!(child.join().unwrap(), 8 << 20);
/// assert_eq!(frame[..3], [1, 1, 1]);
/// ```
#[derive(Clone)]
pub struct SharedBytes {
    /// `None` for no bytes (a memory file cannot be mapped empty).
    mem: Option<Arc<Sealed>>,
}

/// The mapping, and the sealed file to send on.
struct Sealed {
    bytes: SealedBytes,
    fd: OwnedFd,
}

impl Sealed {
    fn map(fd: OwnedFd, len: usize) -> std::io::Result<Option<Arc<Sealed>>> {
        let bytes = SealedBytes::from_fd_lazy(fd.as_fd(), len)?;
        Ok(Some(Arc::new(Sealed { bytes, fd })))
    }
}

impl SharedBytes {
    /// `len` bytes of new shared memory, zeroed, which `fill` writes before they are sealed
    /// read-only: the bytes are made where they will be read, with no copy.
    ///
    /// ```
    /// use multiproc::shared_memory::SharedBytes;
    /// let b = SharedBytes::build(5, |b| b.copy_from_slice(b"hello")).unwrap();
    /// assert_eq!(&*b, b"hello");
    /// let z = SharedBytes::build(3, |_| {}).unwrap();
    /// assert_eq!(&*z, &[0, 0, 0]);
    /// ```
    pub fn build(len: usize, fill: impl FnOnce(&mut [u8])) -> Result<SharedBytes> {
        let mut file = MessageFile::new()?;
        file.fill(len, fill)?;
        SharedBytes::sealed(file, len)
    }

    /// A copy of `bytes` in new shared memory (written once, through the file).
    ///
    /// ```
    /// use multiproc::shared_memory::SharedBytes;
    /// let b = SharedBytes::from_slice(&[1, 2, 3]).unwrap();
    /// assert_eq!(b.len(), 3);
    /// assert_eq!(b.to_vec(), vec![1, 2, 3]);
    /// assert!(SharedBytes::from_slice(&[]).unwrap().is_empty());
    /// ```
    pub fn from_slice(bytes: &[u8]) -> Result<SharedBytes> {
        let mut file = MessageFile::new()?;
        file.write_at(0, bytes)?;
        SharedBytes::sealed(file, bytes.len())
    }

    fn sealed(file: MessageFile, len: usize) -> Result<SharedBytes> {
        if len == 0 {
            return Ok(SharedBytes { mem: None });
        }
        Ok(SharedBytes {
            mem: Sealed::map(file.seal()?, len)?,
        })
    }

    /// The bytes (also reachable through `Deref`).
    ///
    /// ```
    /// let b = multiproc::shared_memory::SharedBytes::from_slice(b"abc").unwrap();
    /// assert_eq!(b.as_slice(), b"abc");
    /// ```
    pub fn as_slice(&self) -> &[u8] {
        self.mem.as_deref().map_or(&[], |m| m.bytes.as_slice())
    }
}

impl Deref for SharedBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl AsRef<[u8]> for SharedBytes {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl fmt::Debug for SharedBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedBytes")
            .field("len", &self.len())
            .finish()
    }
}

impl PartialEq for SharedBytes {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for SharedBytes {}

/// The wire form: the length, and the sealed file as a handle (none for no bytes).
impl Serialize for SharedBytes {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let fd = self.mem.as_deref().map(|m| FdRef(m.fd.as_fd()));
        (self.len() as u64, fd).serialize(s)
    }
}

impl<'de> Deserialize<'de> for SharedBytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let (len, fd) = <(u64, Option<FdOwned>)>::deserialize(d)?;
        let bad = |m: String| {
            crate::codec::handle_error(Error::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("the SharedBytes received cannot be mapped: {m}"),
            )))
        };
        match (usize::try_from(len), fd) {
            (Ok(0), None) => Ok(SharedBytes { mem: None }),
            (Ok(len), Some(FdOwned(fd))) if len > 0 => Sealed::map(fd, len)
                .map(|mem| SharedBytes { mem })
                .map_err(|e| bad(e.to_string())),
            _ => Err(bad(format!("{len} bytes do not match the handle sent"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_fill_panics_leave_nothing_and_empty_bytes_work() {
        let r = std::panic::catch_unwind(|| SharedBytes::build(1 << 20, |_| panic!("no")));
        assert!(r.is_err());
        let b = SharedBytes::build(0, |b| assert!(b.is_empty())).unwrap();
        assert!(b.is_empty());
        assert_eq!(b, SharedBytes::from_slice(&[]).unwrap());
        let c = SharedBytes::build(10_000, |b| b[9_999] = 7).unwrap();
        assert_eq!(c.len(), 10_000);
        assert_eq!(c[9_999], 7);
        assert_eq!(c.clone(), c);
        assert_eq!(format!("{c:?}"), "SharedBytes { len: 10000 }");
    }
}
