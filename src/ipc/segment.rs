//! Anonymous shared segments: the memory under locks, events, values, queues.
//!
//! A [`Segment`] is a `memfd` mapped shared: it has no name, so nothing can leak in
//! /dev/shm when a process is killed; the memory is freed when the last process holding
//! its descriptor or mapping is gone. A segment is a handle: it serializes as its file
//! descriptor (sent next to the message) and is mapped again where it is decoded, so a
//! type built on one can be put in a `Process`'s arguments or sent through a pipe.
//!
//! Layout: a 64-byte header (magic, kind tag, data length) and then the data area, which
//! the owning type lays out itself and reaches through atomics ([`Segment::atomic`]).
//! A decoded segment is checked: right magic, right kind, sealed size large enough.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::sys::memfd::{AtomicCell, Mapping};
use crate::{codec, Error, Result};

const MAGIC: u32 = 0x4753_504d; // "MPSG"
const HEADER: usize = 64;

/// What a segment holds; checked when one is decoded so that a handle of one type cannot
/// be decoded as another. Other modules add their own values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Kind(pub(crate) u32);

/// A shared anonymous memory segment. Clone the `Arc` to share it within a process.
pub(crate) struct Segment {
    map: Mapping,
    kind: Kind,
    data_len: usize,
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment")
            .field("kind", &self.kind)
            .field("data_len", &self.data_len)
            .finish()
    }
}

impl Segment {
    /// A new zeroed segment of `kind` with `data_len` bytes of data.
    pub(crate) fn new(kind: Kind, data_len: usize) -> Result<Arc<Segment>> {
        let total = HEADER
            .checked_add(data_len)
            .ok_or_else(|| Error::invalid("shared segment too large"))?;
        let map = Mapping::anonymous(total)?;
        map.atomic::<AtomicU32>(4).store(kind.0, Ordering::Relaxed);
        map.atomic::<AtomicU64>(8)
            .store(data_len as u64, Ordering::Relaxed);
        map.atomic::<AtomicU32>(0).store(MAGIC, Ordering::Release);
        Ok(Arc::new(Segment {
            map,
            kind,
            data_len,
        }))
    }

    /// Maps a segment received from another process and checks it is a `kind` segment of
    /// `data_len` bytes.
    pub(crate) fn from_fd(
        fd: std::os::fd::OwnedFd,
        kind: Kind,
        data_len: usize,
    ) -> Result<Arc<Segment>> {
        let bad = |what: &str| Error::codec(format!("received shared segment: {what}"));
        let total = HEADER
            .checked_add(data_len)
            .ok_or_else(|| bad("length overflows"))?;
        let map = Mapping::from_memfd(fd, total).map_err(|e| bad(&e.to_string()))?;
        if map.atomic::<AtomicU32>(0).load(Ordering::Acquire) != MAGIC {
            return Err(bad("not a multiproc segment"));
        }
        let k = map.atomic::<AtomicU32>(4).load(Ordering::Relaxed);
        if k != kind.0 {
            return Err(bad(&format!("kind {k:#x}, expected {:#x}", kind.0)));
        }
        if map.atomic::<AtomicU64>(8).load(Ordering::Relaxed) != data_len as u64 {
            return Err(bad("length does not match its handle"));
        }
        Ok(Arc::new(Segment {
            map,
            kind,
            data_len,
        }))
    }

    /// What the segment holds.
    pub(crate) fn kind(&self) -> Kind {
        self.kind
    }

    /// Bytes of data (after the header).
    pub(crate) fn data_len(&self) -> usize {
        self.data_len
    }

    /// The atomic of type `A` at data offset `off`. Panics outside the data area (offsets
    /// come from this crate's layouts).
    #[inline]
    pub(crate) fn atomic<A: AtomicCell>(&self, off: usize) -> &A {
        debug_assert!(off + std::mem::size_of::<A>() <= self.data_len);
        self.map.atomic::<A>(HEADER + off)
    }

    /// The address of data byte `off` in this process, for the in-place views of
    /// `sys::ndarray` (which say when reading through it is sound). Panics past the data.
    #[cfg(feature = "ndarray")]
    pub(crate) fn data_ptr(&self, off: usize) -> *mut u8 {
        assert!(off <= self.data_len);
        self.map.as_ptr().wrapping_add(HEADER + off)
    }

    /// The `u32` at data offset `off` (a futex word, a counter).
    #[inline]
    pub(crate) fn u32(&self, off: usize) -> &AtomicU32 {
        self.atomic::<AtomicU32>(off)
    }

    /// The `u64` at data offset `off`.
    #[inline]
    pub(crate) fn u64(&self, off: usize) -> &AtomicU64 {
        self.atomic::<AtomicU64>(off)
    }

    /// Copies data bytes `off..` into `out`.
    #[allow(dead_code)] // for the queues built on segments
    pub(crate) fn read(&self, off: usize, out: &mut [u8]) {
        assert!(off + out.len() <= self.data_len);
        self.map.read(HEADER + off, out)
    }

    /// Copies `data` to data bytes `off..`.
    #[allow(dead_code)] // for the queues built on segments
    pub(crate) fn write(&self, off: usize, data: &[u8]) {
        assert!(off + data.len() <= self.data_len);
        self.map.write(HEADER + off, data)
    }

    /// Serializes the segment as a handle (its descriptor and length).
    pub(crate) fn serialize_handle<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (codec::FdRef(self.map.fd()), self.data_len as u64).serialize(s)
    }

    /// Deserializes a handle written by [`Segment::serialize_handle`].
    pub(crate) fn deserialize_handle<'de, D: Deserializer<'de>>(
        d: D,
        kind: Kind,
    ) -> Result<Arc<Segment>, D::Error> {
        let (fd, len) = <(codec::FdOwned, u64)>::deserialize(d)?;
        let len = usize::try_from(len).map_err(serde::de::Error::custom)?;
        Segment::from_fd(fd.0, kind, len).map_err(serde::de::Error::custom)
    }
}

/// A segment handle as a serde field: `SegmentHandle` encodes as the descriptor + length.
pub(crate) struct SegRef<'a>(pub(crate) &'a Segment);

impl Serialize for SegRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize_handle(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_through_a_channel() {
        let seg = Segment::new(Kind(7), 100).unwrap();
        seg.u32(4).store(42, Ordering::Relaxed);
        seg.write(10, b"abc");
        let mut buf = Vec::new();
        let fds = codec::encode_with_fds(&SegRef(&seg), &mut buf).unwrap();
        let owned: Vec<_> = fds.iter().map(|f| f.try_clone().unwrap()).collect();
        struct K7(Arc<Segment>);
        impl<'de> Deserialize<'de> for K7 {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                Segment::deserialize_handle(d, Kind(7)).map(K7)
            }
        }
        let back: K7 = codec::decode_with_fds(&buf, owned).unwrap();
        assert_eq!(back.0.u32(4).load(Ordering::Relaxed), 42);
        let mut out = [0u8; 3];
        back.0.read(10, &mut out);
        assert_eq!(&out, b"abc");

        struct K8(#[allow(dead_code)] Arc<Segment>);
        impl<'de> Deserialize<'de> for K8 {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                Segment::deserialize_handle(d, Kind(8)).map(K8)
            }
        }
        let owned = fds;
        assert!(matches!(
            codec::decode_with_fds::<K8>(&buf, owned),
            Err(Error::Codec(_))
        ));
    }
}
