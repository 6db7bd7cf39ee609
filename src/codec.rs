//! Serialization of values that cross a process boundary.
//!
//! Values are encoded with serde and the compact binary codec [postcard]. Bytes that do not
//! decode as the expected type give [`Error::Codec`](crate::Error::Codec), never a panic;
//! trailing bytes after a value are an error too, so a torn or shifted message is noticed.
//!
//! Handles (connections, queues, locks, shared memory, …) travel *inside* values: while a
//! value is encoded for a multiproc channel, each handle it contains hands its file
//! descriptor to an out-of-band list, which is sent next to the bytes (`SCM_RIGHTS`), and
//! the handle itself encodes as an index into that list. Encoding a handle anywhere else
//! (say with `serde_json`) fails with a clear error. A handle that cannot be rebuilt in the
//! receiver (a shared memory block unlinked meanwhile, for example) fails the decoding with
//! its own typed error, which names it, not with a generic [`Error::Codec`](crate::Error::Codec).
//!
//! ```
//! let bytes = multiproc::codec::encode(&(1u32, "two".to_string())).unwrap();
//! let back: (u32, String) = multiproc::codec::decode(&bytes).unwrap();
//! assert_eq!(back, (1, "two".to_string()));
//! assert!(matches!(
//!     multiproc::codec::decode::<(u32, String)>(&[0xff, 0xff, 0xff]),
//!     Err(multiproc::Error::Codec(_))
//! ));
//! ```

use std::cell::RefCell;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{Error, Result};

/// Encodes `value` into a new byte vector.
///
/// ```
/// let b = multiproc::codec::encode(&7u8).unwrap();
/// assert_eq!(b, vec![7]);
/// ```
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    encode_into(value, &mut out)?;
    Ok(out)
}

/// Appends the encoding of `value` to `out`.
///
/// ```
/// let mut buf = vec![9u8];
/// multiproc::codec::encode_into(&1u16, &mut buf).unwrap();
/// assert_eq!(buf, vec![9, 1]);
/// ```
pub fn encode_into<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<()> {
    let taken = std::mem::take(out);
    match postcard::serialize_with_flavor(value, VecFlavor(taken)) {
        Ok(v) => {
            *out = v;
            Ok(())
        }
        Err(e) => Err(Error::codec_from("cannot encode value", e)),
    }
}

/// A postcard output that appends to a vector with `extend_from_slice` (a `memcpy` for
/// byte strings even in debug builds, where postcard's `to_extend` copies byte by byte).
struct VecFlavor(Vec<u8>);

impl postcard::ser_flavors::Flavor for VecFlavor {
    type Output = Vec<u8>;

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<Vec<u8>> {
        Ok(self.0)
    }
}

/// Decodes one value that must fill `bytes` exactly.
///
/// ```
/// let v: Vec<u32> = multiproc::codec::decode(&multiproc::codec::encode(&vec![1u32, 2]).unwrap()).unwrap();
/// assert_eq!(v, vec![1, 2]);
/// // A trailing byte is an error:
/// assert!(multiproc::codec::decode::<u8>(&[1, 2]).is_err());
/// ```
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    let r = postcard::take_from_bytes::<T>(bytes);
    let cause = take_cause();
    match r {
        Ok((v, [])) => Ok(v),
        Ok((_, rest)) => Err(Error::codec(format!(
            "{} unexpected trailing byte(s) after the value",
            rest.len()
        ))),
        Err(e) => Err(decode_failed(cause, e)),
    }
}

/// For a handle's `Deserialize` impl: the typed reason the handle cannot be rebuilt in
/// this process (a shared memory block unlinked meanwhile, a segment that is not what it
/// should be). The decoding under way returns `e` itself, not a generic codec error.
pub(crate) fn handle_error<E: serde::de::Error>(e: Error) -> E {
    let msg = e.to_string();
    CAUSE.with(|c| {
        let mut c = c.borrow_mut();
        if c.is_none() {
            *c = Some(e);
        }
    });
    E::custom(msg)
}

/// The cause recorded by [`handle_error`] during the last decoding (cleared).
fn take_cause() -> Option<Error> {
    CAUSE.with(|c| c.borrow_mut().take())
}

/// A failed decoding's error: the handle's own error if one failed, else the codec's.
fn decode_failed(cause: Option<Error>, e: impl std::error::Error + Send + Sync + 'static) -> Error {
    cause.unwrap_or_else(|| Error::codec_from("cannot decode value", e))
}

thread_local! {
    /// Why a handle could not be rebuilt during the decoding under way: the decoding
    /// returns this typed error instead of the codec's generic message.
    static CAUSE: RefCell<Option<Error>> = const { RefCell::new(None) };
    /// Descriptors collected while encoding for a channel. `None` outside such an encoding.
    static OUT_FDS: RefCell<Option<Vec<RawFd>>> = const { RefCell::new(None) };
    /// Descriptors received with the bytes being decoded. `None` outside such a decoding.
    static IN_FDS: RefCell<Option<Vec<Option<OwnedFd>>>> = const { RefCell::new(None) };
}

/// Encodes `value` for a multiproc channel: returns the raw descriptors of the handles it
/// contains. They are borrowed from `value`, which must stay alive until they are sent.
pub(crate) fn encode_with_fds<T: Serialize + ?Sized>(
    value: &T,
    out: &mut Vec<u8>,
) -> Result<Vec<RawFd>> {
    let prev = OUT_FDS.with(|c| c.borrow_mut().replace(Vec::new()));
    let r = encode_into(value, out);
    let fds = OUT_FDS.with(|c| std::mem::replace(&mut *c.borrow_mut(), prev));
    r.map(|()| fds.unwrap_or_default())
}

/// Appends the encoding of `value` to `out` for a multiproc channel, like
/// [`encode_with_fds`]; on failure `out` is left as it was (earlier values in it survive).
pub(crate) fn append_with_fds<T: Serialize + ?Sized>(
    value: &T,
    out: &mut Vec<u8>,
) -> Result<Vec<RawFd>> {
    let len = out.len();
    let prev = OUT_FDS.with(|c| c.borrow_mut().replace(Vec::new()));
    let r = postcard::serialize_with_flavor(value, Append(out));
    let fds = OUT_FDS.with(|c| std::mem::replace(&mut *c.borrow_mut(), prev));
    match r {
        Ok(()) => Ok(fds.unwrap_or_default()),
        Err(e) => {
            out.truncate(len);
            Err(Error::codec_from("cannot encode value", e))
        }
    }
}

/// The encoding of pool task arguments and results: bincode with fixed-width integers.
///
/// A map sends hundreds of thousands of small values; fixed-width fields encode and decode
/// several times faster than postcard's varints. Like postcard it reads only what the bytes
/// hold (lengths are checked against the input, never trusted for an allocation), and a
/// value must fill its bytes exactly.
fn task_format() -> impl bincode::Options + Copy {
    use bincode::Options;
    bincode::DefaultOptions::new().with_fixint_encoding()
}

/// Encodes many values (pool task arguments or results) one after another in the pool's
/// task format, paying the set-up of the handle context once rather than per value. The
/// handles' descriptors collected so far come with [`take_fds`](FdSession::take_fds); they
/// are borrowed from the values encoded, which must stay alive until they are sent.
pub(crate) struct FdSession {
    prev: Option<Vec<RawFd>>,
    /// Descriptors in the list after the last value encoded.
    known: usize,
}

impl FdSession {
    pub(crate) fn begin() -> FdSession {
        FdSession {
            prev: OUT_FDS.with(|c| c.borrow_mut().replace(Vec::new())),
            known: 0,
        }
    }

    /// The descriptors collected so far; the list starts again empty (the next value's
    /// handles are numbered from 0).
    pub(crate) fn take_fds(&mut self) -> Vec<RawFd> {
        self.known = 0;
        OUT_FDS.with(|c| {
            c.borrow_mut()
                .as_mut()
                .map(std::mem::take)
                .unwrap_or_default()
        })
    }

    /// Appends the encoding of `value` to `out`: returns how many handle descriptors it
    /// added to the list. On failure `out` and the list are left as they were.
    #[inline]
    pub(crate) fn append<T: Serialize + ?Sized>(
        &mut self,
        value: &T,
        out: &mut Vec<u8>,
    ) -> Result<usize> {
        use bincode::Options;
        let len = out.len();
        // A `Serialize` impl that panics fails this value only, like one that errs.
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            task_format()
                .serialize_into(&mut *out, value)
                .map_err(|e| e.to_string())
        }))
        .unwrap_or_else(|p| {
            Err(format!(
                "its Serialize impl panicked: {}",
                crate::error::panic_message(&*p)
            ))
        });
        let known = self.known;
        let now = OUT_FDS.with(|c| {
            let mut c = c.borrow_mut();
            match c.as_mut() {
                Some(v) if r.is_err() => {
                    v.truncate(known);
                    known
                }
                Some(v) => v.len(),
                None => known,
            }
        });
        match r {
            Ok(()) => {
                self.known = now;
                Ok(now - known)
            }
            Err(e) => {
                out.truncate(len);
                Err(Error::codec(format!("cannot encode value: {e}")))
            }
        }
    }
}

impl Drop for FdSession {
    fn drop(&mut self) {
        let prev = self.prev.take();
        OUT_FDS.with(|c| *c.borrow_mut() = prev);
    }
}

/// Decodes values written by [`FdSession::append`] one at a time (a worker's task
/// arguments), setting up the handle context once.
pub(crate) struct TaskDecoder {
    prev: Option<Vec<Option<OwnedFd>>>,
}

impl TaskDecoder {
    pub(crate) fn begin() -> TaskDecoder {
        TaskDecoder {
            prev: IN_FDS.with(|c| c.borrow_mut().replace(Vec::new())),
        }
    }

    /// Decodes one value that must fill `bytes` exactly, received with `fds` (the value's
    /// own descriptors). Descriptors no handle claimed are closed.
    #[inline]
    pub(crate) fn decode<T: DeserializeOwned>(
        &mut self,
        bytes: &[u8],
        fds: Vec<OwnedFd>,
    ) -> Result<T> {
        use bincode::Options;
        if fds.is_empty() {
            // A handle without descriptors (a shared memory block, by name) may fail too.
            return task_format()
                .deserialize(bytes)
                .map_err(|e| decode_failed(take_cause(), e));
        }
        IN_FDS.with(|c| *c.borrow_mut() = Some(fds.into_iter().map(Some).collect()));
        let r = task_format().deserialize(bytes);
        let cause = take_cause();
        let r = r.map_err(|e| decode_failed(cause, e));
        // Unclaimed descriptors are closed here; the next value starts with none.
        IN_FDS.with(|c| *c.borrow_mut() = Some(Vec::new()));
        r
    }
}

impl Drop for TaskDecoder {
    fn drop(&mut self) {
        let prev = self.prev.take();
        IN_FDS.with(|c| *c.borrow_mut() = prev);
    }
}

/// Decodes `count` values written by [`FdSession::append`] laid end to end in `bytes`,
/// received with `fds` (one shared list of descriptors for all of them), handing each to
/// `each` in order. After a value fails to decode, the rest cannot be located: each of them
/// gets the same error.
pub(crate) fn decode_tasks<T: DeserializeOwned>(
    bytes: &[u8],
    fds: Vec<OwnedFd>,
    count: usize,
    mut each: impl FnMut(usize, Result<T>),
) {
    let prev = IN_FDS.with(|c| c.borrow_mut().replace(fds.into_iter().map(Some).collect()));
    let mut de = bincode::Deserializer::from_slice(bytes, task_format());
    for i in 0..count {
        let r = T::deserialize(&mut de);
        let cause = take_cause();
        match r {
            Ok(v) => each(i, Ok(v)),
            Err(e) => {
                // The failed value gets its handle's own error; the rest cannot be located.
                let msg = format!("cannot decode value: {e}");
                each(i, Err(decode_failed(cause, e)));
                for j in i + 1..count {
                    each(j, Err(Error::codec(msg.clone())));
                }
                break;
            }
        }
    }
    IN_FDS.with(|c| *c.borrow_mut() = prev);
}

/// A postcard output that appends to a vector (small pieces byte by byte).
struct Append<'a>(&'a mut Vec<u8>);

impl postcard::ser_flavors::Flavor for Append<'_> {
    type Output = ();
    #[inline]
    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }
    #[inline]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        if data.len() <= 16 {
            // Varints and small fields: byte by byte beats a call to memcpy.
            self.0.reserve(data.len());
            for &b in data {
                self.0.push(b);
            }
        } else {
            self.0.extend_from_slice(data);
        }
        Ok(())
    }
    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// Decodes `bytes` received from a multiproc channel together with `fds`. Descriptors that
/// no handle claimed are closed.
pub(crate) fn decode_with_fds<T: DeserializeOwned>(bytes: &[u8], fds: Vec<OwnedFd>) -> Result<T> {
    if fds.is_empty() {
        // Fast path: nothing out of band; still mark the context so handles fail clearly.
        let prev = IN_FDS.with(|c| c.borrow_mut().replace(Vec::new()));
        let r = decode(bytes);
        IN_FDS.with(|c| *c.borrow_mut() = prev);
        return r;
    }
    let prev = IN_FDS.with(|c| c.borrow_mut().replace(fds.into_iter().map(Some).collect()));
    let r = decode(bytes);
    IN_FDS.with(|c| *c.borrow_mut() = prev);
    r
}

/// Serializes a handle's descriptor: valid only while encoding for a multiproc channel.
///
/// Handle types call this from their `Serialize` impl; it records `fd` to be sent out of
/// band and writes its index.
pub(crate) fn serialize_fd<S: Serializer>(fd: BorrowedFd<'_>, s: S) -> Result<S::Ok, S::Error> {
    let idx = OUT_FDS.with(|c| {
        c.borrow_mut().as_mut().map(|v| {
            v.push(fd.as_raw_fd());
            v.len() - 1
        })
    });
    match idx {
        Some(i) => (i as u32).serialize(s),
        None => Err(serde::ser::Error::custom(
            "a multiproc handle can only be encoded to be sent through a multiproc \
             Process argument, Pipe, Queue or pool task",
        )),
    }
}

/// Deserializes a handle's descriptor sent by [`serialize_fd`].
pub(crate) fn deserialize_fd<'de, D: Deserializer<'de>>(d: D) -> Result<OwnedFd, D::Error> {
    let idx = u32::deserialize(d)? as usize;
    IN_FDS.with(|c| {
        let mut c = c.borrow_mut();
        let Some(list) = c.as_mut() else {
            return Err(serde::de::Error::custom(
                "a multiproc handle can only be decoded from a multiproc channel",
            ));
        };
        match list.get_mut(idx).and_then(Option::take) {
            Some(fd) => Ok(fd),
            None => Err(serde::de::Error::custom(format!(
                "handle refers to file descriptor #{idx}, which was not received"
            ))),
        }
    })
}

/// A borrowed descriptor that serializes as a handle (see [`serialize_fd`]). Handle types
/// use it as a field of their wire form.
pub(crate) struct FdRef<'a>(pub(crate) BorrowedFd<'a>);

impl Serialize for FdRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize_fd(self.0, s)
    }
}

/// A received descriptor: the decoding side of [`FdRef`].
pub(crate) struct FdOwned(pub(crate) OwnedFd);

impl<'de> Deserialize<'de> for FdOwned {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_fd(d).map(FdOwned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_errors() {
        let v = (1u64, vec!["a".to_string()], Some(2.5f64));
        let b = encode(&v).unwrap();
        assert_eq!(decode::<(u64, Vec<String>, Option<f64>)>(&b).unwrap(), v);
        assert!(matches!(decode::<u64>(&[]), Err(Error::Codec(_))));
        let mut extra = b.clone();
        extra.push(0);
        assert!(matches!(
            decode::<(u64, Vec<String>, Option<f64>)>(&extra),
            Err(Error::Codec(_))
        ));
    }

    #[test]
    fn huge_length_prefix_does_not_allocate() {
        // A Vec length of u64::MAX-ish in varint form, followed by nothing.
        let bytes = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert!(matches!(decode::<Vec<u64>>(&bytes), Err(Error::Codec(_))));
        assert!(matches!(decode::<String>(&bytes), Err(Error::Codec(_))));
    }

    #[test]
    fn handle_outside_channel_is_an_error() {
        let f = std::fs::File::open("/dev/null").unwrap();
        struct H<'a>(BorrowedFd<'a>);
        impl Serialize for H<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                serialize_fd(self.0, s)
            }
        }
        use std::os::fd::AsFd;
        assert!(matches!(encode(&H(f.as_fd())), Err(Error::Codec(_))));
        let mut out = Vec::new();
        let fds = encode_with_fds(&H(f.as_fd()), &mut out).unwrap();
        assert_eq!(fds, vec![f.as_raw_fd()]);
    }

    #[test]
    fn task_format_roundtrip_and_errors() {
        let mut out = Vec::new();
        let mut s = FdSession::begin();
        let mut ends = Vec::new();
        for v in [(1u64, "a".to_string()), (u64::MAX, String::new())] {
            assert_eq!(s.append(&v, &mut out).unwrap(), 0);
            ends.push(out.len());
        }
        drop(s);
        let mut d = TaskDecoder::begin();
        let first: (u64, String) = d.decode(&out[..ends[0]], Vec::new()).unwrap();
        assert_eq!(first, (1, "a".to_string()));
        // A trailing byte, a truncated value: codec errors, not panics.
        assert!(matches!(
            d.decode::<u64>(&out[..ends[0]], Vec::new()),
            Err(Error::Codec(_))
        ));
        assert!(matches!(
            d.decode::<(u64, String)>(&out[..ends[0] - 1], Vec::new()),
            Err(Error::Codec(_))
        ));
        // A huge length prefix allocates nothing and fails.
        let huge = u64::MAX.to_le_bytes();
        assert!(matches!(
            d.decode::<Vec<u64>>(&huge, Vec::new()),
            Err(Error::Codec(_))
        ));
        assert!(matches!(
            d.decode::<String>(&huge, Vec::new()),
            Err(Error::Codec(_))
        ));
        drop(d);
        let mut got = Vec::new();
        decode_tasks::<(u64, String)>(&out, Vec::new(), 3, |i, r| got.push((i, r.ok())));
        assert_eq!(got[0], (0, Some((1, "a".to_string()))));
        assert_eq!(got[1], (1, Some((u64::MAX, String::new()))));
        assert_eq!(got[2], (2, None));
    }

    #[test]
    fn task_session_numbers_each_values_handles_from_zero() {
        use std::os::fd::AsFd;
        let f = std::fs::File::open("/dev/null").unwrap();
        struct H<'a>(BorrowedFd<'a>);
        impl Serialize for H<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                serialize_fd(self.0, s)
            }
        }
        struct Bad;
        impl Serialize for Bad {
            fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
                Err(serde::ser::Error::custom("no"))
            }
        }
        let mut out = Vec::new();
        let mut s = FdSession::begin();
        assert_eq!(
            s.append(&(H(f.as_fd()), H(f.as_fd())), &mut out).unwrap(),
            2
        );
        assert_eq!(s.take_fds().len(), 2);
        let len = out.len();
        // A failed value leaves nothing behind, bytes or descriptors.
        assert!(s.append(&(H(f.as_fd()), Bad), &mut out).is_err());
        assert_eq!(out.len(), len);
        assert_eq!(s.append(&H(f.as_fd()), &mut out).unwrap(), 1);
        // The third value's handle is number 0 again.
        assert_eq!(&out[len..], &0u32.to_le_bytes());
        drop(s);
        // Outside a session, handles cannot be encoded.
        assert!(encode(&H(f.as_fd())).is_err());
    }
}
