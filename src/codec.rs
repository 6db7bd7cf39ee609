//! Serialization of values that cross a process boundary.
//!
//! Values are encoded with serde in the crate's own compact binary format, the same for
//! every channel (queues, pipes, pool tasks and results, manager calls). Bytes that do not
//! decode as the expected type give [`Error::Codec`], never a panic or
//! an allocation larger than the input justifies; trailing bytes after a value are an error
//! too, so a torn or shifted message is noticed.
//!
//! # The format
//! Fixed width and little-endian, like bincode's "fixint" encoding: integers and floats
//! take their size (`u8` one byte, `f64` eight), `bool` one byte, `char` four, lengths of
//! strings, byte strings, sequences and maps eight, enum variants four (their index),
//! `Option` a one-byte tag. Structs and tuples are their fields in order, with no names.
//! Fixed widths make small values fast to encode and decode, and they make a contiguous run
//! of numbers one block of bytes: a `Vec<f64>`, `Vec<u8>`, `&[u32]`, `Box<[i64]>` (any
//! of `u8`…`u64`, `i8`…`i64`, `f32`, `f64`), a `String` or a byte string is copied with one
//! `memcpy` each way, wherever it sits inside the value (a struct field, a tuple, an enum
//! variant), with no wrapper type to choose. With the `ndarray` feature, so is an owned
//! ndarray array of those numbers (`Array`, `ArcArray`, of any dimension): it travels as
//! ndarray's own serde form (format version, shape, elements in logical order), its
//! elements copied as one block — an array in another memory order (column-major,
//! transposed, sliced with steps) is first made row-major, and arrives row-major.
//!
//! # Limits
//! The format is not self-describing: the bytes do not say what type they hold, so the
//! receiving side must know it. Types that decode by asking the input what comes next —
//! `#[serde(untagged)]` and internally tagged (`#[serde(tag = "...")]`) enums,
//! `#[serde(flatten)]`, `serde_json::Value`, `serde::de::IgnoredAny` — cannot be decoded:
//! they give an [`Error::Codec`] that says so (encoding them works,
//! decoding does not; convert such a value to a string or to plain types first).
//! Sequences of zero-sized elements (`Vec<()>`) may hold at most 2^20 of them, and values
//! may nest at most 256 deep (for `Option<Box<...>>` chains, say): both keep garbage input
//! from running for ever or exhausting the stack.
//!
//! Handles (connections, queues, locks, shared memory, …) travel *inside* values: while a
//! value is encoded for a multiproc channel, each handle it contains hands its file
//! descriptor to an out-of-band list, which is sent next to the bytes (`SCM_RIGHTS`), and
//! the handle itself encodes as an index into that list. Encoding a handle anywhere else
//! (say with `serde_json`) fails with a clear error. A handle that cannot be rebuilt in the
//! receiver (a shared memory block unlinked meanwhile, for example) fails the decoding with
//! its own typed error, which names it, not with a generic [`Error::Codec`].
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

use std::any::TypeId;
use std::cell::{Cell, RefCell};
use std::fmt;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, Visitor};
use serde::ser::{self, SerializeSeq as _};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::sys::heap;
use crate::sys::memfd::MessageFile;
use crate::sys::plain::{self, Plain};
use crate::{Error, Result};

/// Encodes `value` into a new byte vector.
///
/// ```
/// let b = multiproc::codec::encode(&7u8).unwrap();
/// assert_eq!(b, vec![7]);
/// let b = multiproc::codec::encode(&vec![1.0f64, 2.0]).unwrap();
/// assert_eq!(b.len(), 8 + 2 * 8); // a length, then the numbers
/// ```
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    encode_into(value, &mut out)?;
    Ok(out)
}

/// Appends the encoding of `value` to `out`. On failure `out` is left as it was.
///
/// ```
/// let mut buf = vec![9u8];
/// multiproc::codec::encode_into(&1u16, &mut buf).unwrap();
/// assert_eq!(buf, vec![9, 1, 0]);
/// ```
pub fn encode_into<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<()> {
    let len = out.len();
    match put(value, &mut Enc::new(&mut *out)) {
        Ok(()) => Ok(()),
        Err(e) => {
            out.truncate(len);
            Err(Error::codec_from("cannot encode value", e))
        }
    }
}

/// Decodes one value that must fill `bytes` exactly.
///
/// ```
/// let v: Vec<u32> = multiproc::codec::decode(&multiproc::codec::encode(&vec![1u32, 2]).unwrap()).unwrap();
/// assert_eq!(v, vec![1, 2]);
/// // A trailing byte is an error:
/// assert!(multiproc::codec::decode::<u8>(&[1, 2]).is_err());
/// // So is a type that needs a self-describing format:
/// #[derive(serde::Deserialize, Debug)]
/// #[serde(untagged)]
/// enum Either { N(u32), S(String) }
/// let e = multiproc::codec::decode::<Either>(&[1, 0, 0, 0]).unwrap_err();
/// assert!(e.to_string().contains("not self-describing"));
/// ```
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    let mut d = Dec::new(bytes);
    let r = T::deserialize(&mut d);
    let cause = take_cause();
    let v = r.map_err(|e| decode_failed(cause, e))?;
    if d.input.is_empty() {
        Ok(v)
    } else {
        Err(Error::codec(format!(
            "{} unexpected trailing byte(s) after the value",
            d.input.len()
        )))
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
    CAUSE_SET.set(true);
    E::custom(msg)
}

/// What is said of a value whose `Serialize` impl panicked (with the panic's payload `p`):
/// it fails that value only, like an impl that errs.
fn serialize_panicked(p: &(dyn std::any::Any + Send)) -> String {
    format!(
        "its Serialize impl panicked: {}",
        crate::error::panic_message(p)
    )
}

/// The cause recorded by [`handle_error`] during the last decoding (cleared). Called after
/// every value decoded, so the common case (no handle failed) reads one flag only.
#[inline]
fn take_cause() -> Option<Error> {
    if !CAUSE_SET.get() {
        return None;
    }
    CAUSE_SET.set(false);
    CAUSE.with(|c| c.borrow_mut().take())
}

/// A failed decoding's error: the handle's own error if one failed, else the codec's.
fn decode_failed(cause: Option<Error>, e: CodecError) -> Error {
    cause.unwrap_or_else(|| {
        if e.0 == NOT_SELF_DESCRIBING {
            // The message itself says what to do.
            Error::codec(format!("cannot decode value: {}", e.0))
        } else {
            Error::codec_from("cannot decode value", e)
        }
    })
}

// --- the format ---------------------------------------------------------------------------

/// The codec's error inside serde: a message.
#[derive(Debug)]
pub(crate) struct CodecError(String);

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CodecError {}

impl ser::Error for CodecError {
    fn custom<M: fmt::Display>(msg: M) -> Self {
        CodecError(msg.to_string())
    }
}

impl de::Error for CodecError {
    fn custom<M: fmt::Display>(msg: M) -> Self {
        CodecError(msg.to_string())
    }
}

type R<T> = std::result::Result<T, CodecError>;

/// At most this many elements of a sequence that takes no bytes (`Vec<()>`).
const MAX_EMPTY_ELEMENTS: usize = 1 << 20;
/// How deep values may nest when decoding.
const MAX_DEPTH: u32 = 256;

/// The bit of a length word that says its run was handed over as a memory file (see
/// [`Enc::counted_run`]). No real length has it: no run of 2^63 bytes or elements exists.
const HANDED_OVER: u64 = 1 << 63;

/// Whether this process's channels may hand large runs over as memory files (see
/// [`Enc::counted_run`]); off in the workers of a cluster agent, whose results travel to
/// another MPI rank, where no descriptor can follow.
static HAND_OVER: AtomicBool = AtomicBool::new(true);

/// How many descriptors a message may already carry for a run to be handed over.
const MAX_HANDED_OVER: usize = 64;

/// Stops this process from handing large runs over as memory files (see [`HAND_OVER`]).
pub(crate) fn never_hand_over() {
    HAND_OVER.store(false, Ordering::Relaxed);
}

/// Hands `b` over (`sys::heap::hand_over`) and records its descriptor with the message's
/// others: its index, or `None` (copy the bytes) if it is not such a run or no descriptor
/// list is being gathered.
#[cold]
fn hand_over_run(b: &[u8]) -> Option<u32> {
    // A message carries at most `MAX_HANDED_OVER` memory files (the kernel passes at most
    // 253 descriptors per message, handles included): past that, runs are copied.
    let sent = OUT_FDS.with(|c| c.borrow().as_ref().map(Vec::len))?;
    if sent >= MAX_HANDED_OVER {
        return None;
    }
    let fd = heap::hand_over(b)?;
    // Without a list the file is dropped: the bytes, still readable, are then copied.
    push_out_fd(fd).and_then(|i| u32::try_from(i).ok())
}

/// The encoder: appends to a vector, or, for a value that grows past a size given up front
/// (see [`encode_spilling`]), to a memory file: then `out` only gathers small writes
/// between large runs, which go from the value's own memory to the file in one `pwrite`.
struct Enc<'a> {
    out: &'a mut Vec<u8>,
    /// When `out` holds more than this, [`spill`](Enc::spill) moves its bytes to the file
    /// (`usize::MAX`: never). Checked after each part of the value and before each run of
    /// bytes: a branch on a length, nothing more, on the common path.
    limit: usize,
    /// The file, once the value went past its first limit.
    file: Option<Box<Spill>>,
    /// Whether a large run that is a [`ShmAllocator`](crate::ShmAllocator) allocation may
    /// travel as its memory file (see [`Enc::counted_run`]): only for channels that carry
    /// memory files between processes of one machine.
    hand_over: bool,
}

/// Where a large value being encoded goes (see [`Enc`]).
struct Spill {
    file: MessageFile,
    /// Bytes of the value already in the file; `out` continues from there.
    written: usize,
    /// Why writing to the file failed, if it did (the encoding then fails with it).
    err: Option<std::io::Error>,
}

/// Once a value is in a file: small writes gathered in `out` go to the file in batches of
/// about this many bytes, and runs of at least this many bytes go there directly.
const SPILL_BATCH: usize = 256 << 10;

impl<'a> Enc<'a> {
    #[inline]
    fn new(out: &'a mut Vec<u8>) -> Self {
        Enc {
            out,
            limit: usize::MAX,
            file: None,
            hand_over: false,
        }
    }

    #[inline]
    fn len(&mut self, n: usize) {
        self.out.extend_from_slice(&(n as u64).to_le_bytes());
    }

    #[inline]
    fn bytes(&mut self, b: &[u8]) -> R<()> {
        self.counted_run(b.len(), b)
    }

    /// A length (`n` elements) and the run of bytes that holds them. A large run that is
    /// the start of a [`ShmAllocator`](crate::ShmAllocator) allocation never sent before
    /// travels as that allocation's memory file instead (`sys::heap::hand_over`): then the
    /// length word carries [`HANDED_OVER`] and the file's index among the message's
    /// descriptors follows, in place of the bytes.
    #[inline]
    fn counted_run(&mut self, n: usize, b: &[u8]) -> R<()> {
        if self.hand_over && b.len() >= heap::MIN_SIZE {
            if let Some(idx) = hand_over_run(b) {
                self.out
                    .extend_from_slice(&(n as u64 | HANDED_OVER).to_le_bytes());
                self.out.extend_from_slice(&idx.to_le_bytes());
                return Ok(());
            }
        }
        self.len(n);
        self.run(b)
    }

    /// Appends a run of bytes (a string, a byte string, the memory of plain numbers).
    #[inline]
    fn run(&mut self, b: &[u8]) -> R<()> {
        if b.len() > self.limit.saturating_sub(self.out.len()) || b.len() >= plain::HUGE_RUN {
            return self.large_run(b);
        }
        self.out.extend_from_slice(b);
        Ok(())
    }

    /// The position of the next byte in the whole encoding.
    #[inline]
    fn pos(&self) -> usize {
        self.file.as_ref().map_or(0, |f| f.written) + self.out.len()
    }

    /// `out` has grown past `limit`: moves it to the file (made now, the first time, for
    /// an encoding of at least `hint` bytes).
    #[cold]
    fn spill(&mut self, hint: usize) -> R<()> {
        if self.file.is_none() {
            match MessageFile::for_message(hint) {
                Ok(file) => {
                    self.file = Some(Box::new(Spill {
                        file,
                        written: 0,
                        err: None,
                    }));
                }
                Err(_) => {
                    // No file to be had: the value stays in memory (and travels as
                    // before, copied to a segment, or streamed).
                    self.limit = usize::MAX;
                    return Ok(());
                }
            }
        }
        self.limit = SPILL_BATCH;
        let out = &mut *self.out;
        let Some(f) = self.file.as_deref_mut() else {
            return Ok(());
        };
        f.write(out)?;
        out.clear();
        Ok(())
    }

    /// A run that would take `out` past `limit`, or a large one (which, if it stays in
    /// memory, goes into room advised to use huge pages).
    #[cold]
    fn large_run(&mut self, b: &[u8]) -> R<()> {
        if b.len() > self.limit.saturating_sub(self.out.len()) {
            self.spill(self.pos() + b.len())?;
        }
        match self.file.as_deref_mut() {
            Some(f) if b.len() >= SPILL_BATCH => f.write(b),
            _ => {
                if self.out.spare_capacity_mut().len() < b.len() {
                    heap::private_scope(|| self.out.reserve(b.len()));
                    crate::sys::memfd::prepare_fill(&mut self.out.spare_capacity_mut()[..b.len()]);
                }
                self.out.extend_from_slice(b);
                Ok(())
            }
        }
    }

    /// Writes the 8 bytes of a length at `at`, a position of the whole encoding where a
    /// placeholder was written (in the file, or still in `out`).
    fn patch(&mut self, at: usize, n: u64) -> R<()> {
        let b = n.to_le_bytes();
        match self.file.as_deref_mut() {
            Some(f) if at < f.written => {
                let r = f.file.write_at(at as u64, &b);
                f.check(r)
            }
            Some(f) => {
                let at = at - f.written;
                self.out[at..at + 8].copy_from_slice(&b);
                Ok(())
            }
            None => {
                self.out[at..at + 8].copy_from_slice(&b);
                Ok(())
            }
        }
    }
}

impl Spill {
    /// Appends `b` to the file.
    fn write(&mut self, b: &[u8]) -> R<()> {
        let r = self.file.write_at(self.written as u64, b);
        self.written += b.len();
        self.check(r)
    }

    fn check(&mut self, r: std::io::Result<()>) -> R<()> {
        r.map_err(|e| {
            let msg = format!("cannot write a large value to shared memory: {e}");
            self.err = Some(e);
            CodecError(msg)
        })
    }
}

/// The one-`memcpy` path for a contiguous run of plain numbers (little-endian hosts, where
/// their memory is their encoding): the element count and bytes, if `it` is one.
#[inline]
fn plain_run<I>(it: &I) -> Option<(usize, &[u8])> {
    if cfg!(target_endian = "big") {
        return None;
    }
    plain::slice_iter_bytes::<u8, I>(it)
        .or_else(|| plain::slice_iter_bytes::<f64, I>(it))
        .or_else(|| plain::slice_iter_bytes::<f32, I>(it))
        .or_else(|| plain::slice_iter_bytes::<u64, I>(it))
        .or_else(|| plain::slice_iter_bytes::<i64, I>(it))
        .or_else(|| plain::slice_iter_bytes::<u32, I>(it))
        .or_else(|| plain::slice_iter_bytes::<i32, I>(it))
        .or_else(|| plain::slice_iter_bytes::<u16, I>(it))
        .or_else(|| plain::slice_iter_bytes::<i16, I>(it))
        .or_else(|| plain::slice_iter_bytes::<i8, I>(it))
}

/// Encodes `v`, a value or a part of one (every part goes through here). With the `ndarray`
/// feature, an owned ndarray array of plain numbers is recognised by its type and its
/// elements copied with one `memcpy` (ndarray's own `Serialize` hands them over one by one).
#[inline]
fn put<T: Serialize + ?Sized>(v: &T, enc: &mut Enc<'_>) -> R<()> {
    #[cfg(feature = "ndarray")]
    let r = match nd::encode_array(v, enc) {
        Some(r) => r,
        None => v.serialize(&mut *enc),
    };
    #[cfg(not(feature = "ndarray"))]
    let r = v.serialize(&mut *enc);
    r?;
    if enc.out.len() > enc.limit {
        enc.spill(enc.pos())?;
    }
    Ok(())
}

/// ndarray arrays: the same bytes as ndarray's `Serialize` writes through this codec (a
/// struct of the format version, the shape and the elements in logical order, which
/// ndarray's `Deserialize` reads back, its elements through the `Vec<P>` fast path), with
/// the elements as one block.
#[cfg(feature = "ndarray")]
mod nd {
    use ndarray::{ArrayBase, Data, Dimension, Ix0, Ix1, Ix2, Ix3, Ix4, Ix5, Ix6, IxDyn};
    use serde::ser::SerializeStruct;
    use serde::{Serialize, Serializer};

    use super::{Enc, R};
    use crate::sys::ndarray::{as_arc_array, as_array};
    use crate::sys::plain::Plain;

    /// ndarray's `ARRAY_FORMAT_VERSION` (a test checks the bytes against ndarray's own).
    const FORMAT_VERSION: u8 = 1;

    /// `Some` if `v` is an owned (`Array`) or shared (`ArcArray`) ndarray array of plain
    /// numbers of dimension 0 to 6 or dynamic: then it has been encoded.
    #[inline]
    pub(super) fn encode_array<T: ?Sized>(v: &T, enc: &mut Enc<'_>) -> Option<R<()>> {
        if cfg!(target_endian = "big") {
            return None;
        }
        // The size test is free in optimised builds (constants) and keeps unoptimised ones
        // from comparing every value's type with all 160 array types.
        let size = std::mem::size_of_val(v);
        macro_rules! dims {
            ($($d:ty),*) => {$(
                if size == std::mem::size_of::<ndarray::Array<u8, $d>>() {
                    if let Some(r) = elems::<T, $d>(v, enc, false) {
                        return Some(r);
                    }
                }
                if size == std::mem::size_of::<ndarray::ArcArray<u8, $d>>() {
                    if let Some(r) = elems::<T, $d>(v, enc, true) {
                        return Some(r);
                    }
                }
            )*};
        }
        dims!(Ix1, Ix2, IxDyn, Ix3, Ix0, Ix4, Ix5, Ix6);
        None
    }

    #[inline]
    fn elems<T: ?Sized, D: Dimension + Serialize>(
        v: &T,
        enc: &mut Enc<'_>,
        arc: bool,
    ) -> Option<R<()>> {
        macro_rules! elem {
            ($($p:ty),*) => {$(
                if arc {
                    if let Some(a) = as_arc_array::<T, $p, D>(v) {
                        return Some(encode(a, enc));
                    }
                } else if let Some(a) = as_array::<T, $p, D>(v) {
                    return Some(encode(a, enc));
                }
            )*};
        }
        elem!(f64, f32, u8, i64, u64, i32, u32, i16, u16, i8);
        None
    }

    fn encode<P, S, D>(a: &ArrayBase<S, D>, enc: &mut Enc<'_>) -> R<()>
    where
        P: Plain + Serialize,
        S: Data<Elem = P>,
        D: Dimension + Serialize,
    {
        // A standard-layout array is borrowed as it is; any other (column-major, transposed,
        // sliced with steps) is first copied into row-major order, the order ndarray
        // serializes in.
        let standard = a.as_standard_layout();
        let Some(data) = standard.as_slice() else {
            return a.serialize(enc);
        };
        let mut st = enc.serialize_struct("Array", 3)?;
        st.serialize_field("v", &FORMAT_VERSION)?;
        st.serialize_field("dim", &a.raw_dim())?;
        // `[P]` goes to `collect_seq` as a slice iterator: one `memcpy`.
        st.serialize_field("data", data)?;
        st.end()
    }
}

/// Serializer methods that write a number's little-endian bytes.
macro_rules! ser_le {
    ($($name:ident $t:ty;)*) => {$(
        #[inline]
        fn $name(self, v: $t) -> R<()> {
            self.out.extend_from_slice(&v.to_le_bytes());
            Ok(())
        }
    )*};
}

impl<'a, 'b> Serializer for &'b mut Enc<'a> {
    type Ok = ();
    type Error = CodecError;
    type SerializeSeq = Compound<'a, 'b>;
    type SerializeTuple = Compound<'a, 'b>;
    type SerializeTupleStruct = Compound<'a, 'b>;
    type SerializeTupleVariant = Compound<'a, 'b>;
    type SerializeMap = Compound<'a, 'b>;
    type SerializeStruct = Compound<'a, 'b>;
    type SerializeStructVariant = Compound<'a, 'b>;

    #[inline]
    fn serialize_bool(self, v: bool) -> R<()> {
        self.out.push(u8::from(v));
        Ok(())
    }
    #[inline]
    fn serialize_i8(self, v: i8) -> R<()> {
        self.out.push(v as u8);
        Ok(())
    }
    ser_le! {
        serialize_i16 i16; serialize_i32 i32; serialize_i64 i64; serialize_i128 i128;
        serialize_u16 u16; serialize_u32 u32; serialize_u64 u64; serialize_u128 u128;
        serialize_f32 f32; serialize_f64 f64;
    }
    #[inline]
    fn serialize_u8(self, v: u8) -> R<()> {
        self.out.push(v);
        Ok(())
    }
    #[inline]
    fn serialize_char(self, v: char) -> R<()> {
        self.out.extend_from_slice(&u32::from(v).to_le_bytes());
        Ok(())
    }
    #[inline]
    fn serialize_str(self, v: &str) -> R<()> {
        self.bytes(v.as_bytes())
    }
    #[inline]
    fn serialize_bytes(self, v: &[u8]) -> R<()> {
        self.bytes(v)
    }
    #[inline]
    fn serialize_none(self) -> R<()> {
        self.out.push(0);
        Ok(())
    }
    #[inline]
    fn serialize_some<T: Serialize + ?Sized>(self, v: &T) -> R<()> {
        self.out.push(1);
        put(v, self)
    }
    #[inline]
    fn serialize_unit(self) -> R<()> {
        Ok(())
    }
    #[inline]
    fn serialize_unit_struct(self, _: &'static str) -> R<()> {
        Ok(())
    }
    #[inline]
    fn serialize_unit_variant(self, _: &'static str, idx: u32, _: &'static str) -> R<()> {
        self.serialize_u32(idx)
    }
    #[inline]
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, v: &T) -> R<()> {
        put(v, self)
    }
    #[inline]
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        idx: u32,
        _: &'static str,
        v: &T,
    ) -> R<()> {
        self.out.extend_from_slice(&idx.to_le_bytes());
        put(v, self)
    }
    #[inline]
    fn serialize_seq(self, len: Option<usize>) -> R<Compound<'a, 'b>> {
        Ok(Compound::counted(self, len))
    }
    #[inline]
    fn serialize_tuple(self, _: usize) -> R<Compound<'a, 'b>> {
        Ok(Compound::fixed(self))
    }
    #[inline]
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> R<Compound<'a, 'b>> {
        Ok(Compound::fixed(self))
    }
    #[inline]
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        idx: u32,
        _: &'static str,
        _: usize,
    ) -> R<Compound<'a, 'b>> {
        self.out.extend_from_slice(&idx.to_le_bytes());
        Ok(Compound::fixed(self))
    }
    #[inline]
    fn serialize_map(self, len: Option<usize>) -> R<Compound<'a, 'b>> {
        Ok(Compound::counted(self, len))
    }
    #[inline]
    fn serialize_struct(self, _: &'static str, _: usize) -> R<Compound<'a, 'b>> {
        Ok(Compound::fixed(self))
    }
    #[inline]
    fn serialize_struct_variant(
        self,
        _: &'static str,
        idx: u32,
        _: &'static str,
        _: usize,
    ) -> R<Compound<'a, 'b>> {
        self.out.extend_from_slice(&idx.to_le_bytes());
        Ok(Compound::fixed(self))
    }

    /// `Vec<P>`, `[P]` and `Box<[P]>` of plain numbers come here: one `memcpy`.
    #[inline]
    fn collect_seq<I>(self, iter: I) -> R<()>
    where
        I: IntoIterator,
        I::Item: Serialize,
    {
        let iter = iter.into_iter();
        if let Some((n, bytes)) = plain_run(&iter) {
            return self.counted_run(n, bytes);
        }
        let (lo, hi) = iter.size_hint();
        let mut seq = self.serialize_seq((hi == Some(lo)).then_some(lo))?;
        for item in iter {
            seq.serialize_element(&item)?;
        }
        ser::SerializeSeq::end(seq)
    }

    fn is_human_readable(&self) -> bool {
        false
    }
}

/// A sequence, map, tuple or struct being encoded. A sequence or map whose length was not
/// given up front gets it written once it is known.
struct Compound<'a, 'b> {
    enc: &'b mut Enc<'a>,
    /// For a sequence or map of unknown length: where its length goes, and the count so far.
    patch: Option<(usize, u64)>,
}

impl<'a, 'b> Compound<'a, 'b> {
    #[inline]
    fn fixed(enc: &'b mut Enc<'a>) -> Self {
        Compound { enc, patch: None }
    }

    #[inline]
    fn counted(enc: &'b mut Enc<'a>, len: Option<usize>) -> Self {
        match len {
            Some(n) => {
                enc.len(n);
                Compound { enc, patch: None }
            }
            None => {
                let at = enc.pos();
                enc.len(0);
                Compound {
                    enc,
                    patch: Some((at, 0)),
                }
            }
        }
    }

    #[inline]
    fn element<T: Serialize + ?Sized>(&mut self, v: &T) -> R<()> {
        if let Some((_, n)) = &mut self.patch {
            *n += 1;
        }
        put(v, self.enc)
    }

    #[inline]
    fn finish(self) -> R<()> {
        if let Some((at, n)) = self.patch {
            return self.enc.patch(at, n);
        }
        Ok(())
    }
}

impl ser::SerializeSeq for Compound<'_, '_> {
    type Ok = ();
    type Error = CodecError;
    #[inline]
    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> R<()> {
        self.element(v)
    }
    #[inline]
    fn end(self) -> R<()> {
        self.finish()
    }
}

impl ser::SerializeMap for Compound<'_, '_> {
    type Ok = ();
    type Error = CodecError;
    #[inline]
    fn serialize_key<T: Serialize + ?Sized>(&mut self, k: &T) -> R<()> {
        self.element(k)
    }
    #[inline]
    fn serialize_value<T: Serialize + ?Sized>(&mut self, v: &T) -> R<()> {
        put(v, self.enc)
    }
    #[inline]
    fn end(self) -> R<()> {
        self.finish()
    }
}

/// Tuples, structs and their variants: the fields one after another, nothing else.
macro_rules! fields_in_order {
    ($($tr:ident $method:ident ($($name:ty)?);)*) => {$(
        impl ser::$tr for Compound<'_, '_> {
            type Ok = ();
            type Error = CodecError;
            #[inline]
            fn $method<T: Serialize + ?Sized>(&mut self, $(_: $name,)? v: &T) -> R<()> {
                put(v, self.enc)
            }
            #[inline]
            fn end(self) -> R<()> {
                Ok(())
            }
        }
    )*};
}

fields_in_order! {
    SerializeTuple serialize_element();
    SerializeTupleStruct serialize_field();
    SerializeTupleVariant serialize_field();
    SerializeStruct serialize_field(&'static str);
    SerializeStructVariant serialize_field(&'static str);
}

/// The decoder: reads from a byte slice, front to back.
pub(crate) struct Dec<'de> {
    input: &'de [u8],
    depth: u32,
}

const NOT_SELF_DESCRIBING: &str = "the multiproc codec is not self-describing: a type that \
     asks the input what comes next (`#[serde(untagged)]` or internally tagged enums, \
     `#[serde(flatten)]`, `serde_json::Value`, `IgnoredAny`) cannot be decoded; send plain \
     types (or a string) instead";

impl<'de> Dec<'de> {
    pub(crate) fn new(input: &'de [u8]) -> Self {
        Dec { input, depth: 0 }
    }

    #[inline]
    fn take(&mut self, n: usize) -> R<&'de [u8]> {
        if n > self.input.len() {
            return Err(CodecError(format!(
                "unexpected end of input: {n} byte(s) needed, {} left",
                self.input.len()
            )));
        }
        let (a, b) = self.input.split_at(n);
        self.input = b;
        Ok(a)
    }

    #[inline]
    fn array<const N: usize>(&mut self) -> R<[u8; N]> {
        match self.input.split_first_chunk::<N>() {
            Some((a, rest)) => {
                self.input = rest;
                Ok(*a)
            }
            None => Err(CodecError(format!(
                "unexpected end of input: {N} byte(s) needed, {} left",
                self.input.len()
            ))),
        }
    }

    #[inline]
    fn u8(&mut self) -> R<u8> {
        Ok(self.array::<1>()?[0])
    }

    #[inline]
    fn u32(&mut self) -> R<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    /// A length (of a string, sequence, map).
    #[inline]
    fn len(&mut self) -> R<usize> {
        match self.run_len()? {
            Run::Inline(n) => Ok(n),
            Run::HandedOver(..) => Err(CodecError(
                "a large vector or string was handed over in shared memory (see \
                 ShmAllocator) where the receiving type reads its bytes in place or \
                 element by element; receive it as a Vec of numbers, a String or a byte \
                 buffer"
                    .into(),
            )),
        }
    }

    /// A length word: of a run that follows inline, or of one handed over as a memory
    /// file (with the file's index among the message's descriptors).
    #[inline]
    fn run_len(&mut self) -> R<Run> {
        let n = u64::from_le_bytes(self.array()?);
        if n & HANDED_OVER != 0 {
            return self.handed_over(n & !HANDED_OVER);
        }
        usize::try_from(n)
            .map(Run::Inline)
            .map_err(|_| CodecError(format!("length {n} is too large")))
    }

    #[cold]
    fn handed_over(&mut self, n: u64) -> R<Run> {
        let idx = self.u32()?;
        let n = usize::try_from(n).map_err(|_| CodecError(format!("length {n} is too large")))?;
        Ok(Run::HandedOver(n, idx))
    }

    /// The vector of `n` numbers handed over as the message's descriptor `idx`.
    #[cold]
    fn received_vec<P: Plain>(&mut self, n: usize, idx: u32) -> R<Vec<P>> {
        let fd = take_in_fd(idx as usize).map_err(CodecError)?;
        heap::received_vec::<P>(fd, n).map_err(|e| CodecError(e.to_string()))
    }

    /// A string's or byte string's bytes: `Ok` owned, for a handed-over run or a large one
    /// (copied into memory made for it, see `owned_run`); `Err` with the bytes of a small
    /// inline one, which the caller borrows from the input.
    #[inline]
    fn owned_bytes(&mut self) -> R<std::result::Result<Vec<u8>, &'de [u8]>> {
        match self.run_len()? {
            Run::HandedOver(n, idx) => self.received_vec::<u8>(n, idx).map(Ok),
            Run::Inline(n) => {
                let b = self.take(n)?;
                if b.len() >= plain::HUGE_RUN {
                    owned_run(b).map(Ok)
                } else {
                    Ok(Err(b))
                }
            }
        }
    }

    /// The length of a sequence or map: a count of elements that each take at least one
    /// byte, or a few that take none.
    #[inline]
    fn count(&mut self) -> R<usize> {
        let n = self.len()?;
        if n > self.input.len() && n > MAX_EMPTY_ELEMENTS {
            return Err(CodecError(format!(
                "a sequence claims {n} elements with {} byte(s) left",
                self.input.len()
            )));
        }
        Ok(n)
    }

    #[inline]
    fn nest<T>(&mut self, f: impl FnOnce(&mut Self) -> R<T>) -> R<T> {
        if self.depth >= MAX_DEPTH {
            return Err(CodecError(format!(
                "value nests more than {MAX_DEPTH} levels deep"
            )));
        }
        self.depth += 1;
        let r = f(self);
        self.depth -= 1;
        r
    }

    /// The one-`memcpy` path for `Vec<P>` of plain numbers: `Some` if `V` is serde's own
    /// visitor for `Vec<P>` (so that skipping it changes nothing), for one of them.
    #[inline]
    fn plain_vec<V: Visitor<'de>>(&mut self) -> Option<R<V::Value>> {
        if cfg!(target_endian = "big") {
            return None;
        }
        let ids = plain_vec_visitors();
        let id = typeid::of::<V>();
        let k = ids.iter().position(|x| *x == Some(id))?;
        Some(match k {
            0 => self.read_plain_vec::<u8, V>(),
            1 => self.read_plain_vec::<u16, V>(),
            2 => self.read_plain_vec::<u32, V>(),
            3 => self.read_plain_vec::<u64, V>(),
            4 => self.read_plain_vec::<i8, V>(),
            5 => self.read_plain_vec::<i16, V>(),
            6 => self.read_plain_vec::<i32, V>(),
            7 => self.read_plain_vec::<i64, V>(),
            8 => self.read_plain_vec::<f32, V>(),
            _ => self.read_plain_vec::<f64, V>(),
        })
    }

    fn read_plain_vec<P: Plain, V: Visitor<'de>>(&mut self) -> R<V::Value> {
        let n = match self.run_len()? {
            Run::Inline(n) => n,
            Run::HandedOver(n, idx) => {
                let v = self.received_vec::<P>(n, idx)?;
                return plain::vec_as::<P, V::Value>(v)
                    .map_err(|_| CodecError("internal: the visitor of Vec is not a Vec".into()));
            }
        };
        let size = std::mem::size_of::<P>();
        let nbytes = n
            .checked_mul(size)
            .ok_or_else(|| CodecError(format!("a sequence of {n} numbers is too large")))?;
        let bytes = self.take(nbytes)?;
        let v = plain::vec_from_bytes::<P>(bytes)
            .ok_or_else(|| CodecError(format!("cannot allocate {nbytes} bytes")))?;
        plain::vec_as::<P, V::Value>(v)
            .map_err(|_| CodecError("internal: the visitor of Vec is not a Vec".into()))
    }
}

/// A length word read by [`Dec::run_len`].
enum Run {
    Inline(usize),
    /// `n` elements in the message's descriptor `idx`, a memory file.
    HandedOver(usize, u32),
}

/// A large run of bytes copied into a vector of its own, whose fresh memory is prepared
/// for the copy (huge pages, or all pages made at once: `memfd::prepare_fill`; the copy
/// then runs at memory speed rather than at the speed of a page fault per 4 KiB).
fn owned_run(b: &[u8]) -> R<Vec<u8>> {
    plain::vec_from_bytes::<u8>(b)
        .ok_or_else(|| CodecError(format!("cannot allocate {} bytes", b.len())))
}

/// The string whose UTF-8 bytes are `b` (checked).
fn owned_string(b: Vec<u8>) -> R<String> {
    plain::string_from_utf8(b).map_err(|e| CodecError(format!("bad UTF-8: {e}")))
}

/// The type ids of serde's visitors for `Vec<u8>`, `Vec<u16>`, … `Vec<f64>` (in the order
/// of [`Dec::plain_vec`]), learnt once by asking each `Vec<P>` how it deserializes.
fn plain_vec_visitors() -> &'static [Option<TypeId>; 10] {
    static IDS: OnceLock<[Option<TypeId>; 10]> = OnceLock::new();
    IDS.get_or_init(|| {
        [
            probe::<u8>(),
            probe::<u16>(),
            probe::<u32>(),
            probe::<u64>(),
            probe::<i8>(),
            probe::<i16>(),
            probe::<i32>(),
            probe::<i64>(),
            probe::<f32>(),
            probe::<f64>(),
        ]
    })
}

fn probe<P: Plain + DeserializeOwned>() -> Option<TypeId> {
    let mut seen = None;
    let _ = Vec::<P>::deserialize(Probe(&mut seen));
    seen
}

/// A deserializer that records the type of the visitor handed to `deserialize_seq`.
struct Probe<'a>(&'a mut Option<TypeId>);

impl<'de> Deserializer<'de> for Probe<'_> {
    type Error = CodecError;
    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> R<V::Value> {
        Err(CodecError("probe".into()))
    }
    fn deserialize_seq<V: Visitor<'de>>(self, _: V) -> R<V::Value> {
        *self.0 = Some(typeid::of::<V>());
        Err(CodecError("probe".into()))
    }
    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct tuple tuple_struct map struct enum identifier
        ignored_any
    }
}

macro_rules! de_num {
    ($($name:ident $visit:ident $t:ty;)*) => {$(
        #[inline]
        fn $name<V: Visitor<'de>>(self, v: V) -> R<V::Value> {
            v.$visit(<$t>::from_le_bytes(self.array()?))
        }
    )*};
}

impl<'de> Deserializer<'de> for &mut Dec<'de> {
    type Error = CodecError;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> R<V::Value> {
        Err(CodecError(NOT_SELF_DESCRIBING.into()))
    }
    fn deserialize_ignored_any<V: Visitor<'de>>(self, _: V) -> R<V::Value> {
        Err(CodecError(NOT_SELF_DESCRIBING.into()))
    }

    #[inline]
    fn deserialize_bool<V: Visitor<'de>>(self, v: V) -> R<V::Value> {
        match self.u8()? {
            0 => v.visit_bool(false),
            1 => v.visit_bool(true),
            b => Err(CodecError(format!("bad bool byte {b}"))),
        }
    }

    de_num! {
        deserialize_i8 visit_i8 i8;
        deserialize_i16 visit_i16 i16;
        deserialize_i32 visit_i32 i32;
        deserialize_i64 visit_i64 i64;
        deserialize_i128 visit_i128 i128;
        deserialize_u8 visit_u8 u8;
        deserialize_u16 visit_u16 u16;
        deserialize_u32 visit_u32 u32;
        deserialize_u64 visit_u64 u64;
        deserialize_u128 visit_u128 u128;
        deserialize_f32 visit_f32 f32;
        deserialize_f64 visit_f64 f64;
    }

    #[inline]
    fn deserialize_char<V: Visitor<'de>>(self, v: V) -> R<V::Value> {
        let c = self.u32()?;
        match char::from_u32(c) {
            Some(c) => v.visit_char(c),
            None => Err(CodecError(format!("bad char {c:#x}"))),
        }
    }
    #[inline]
    fn deserialize_str<V: Visitor<'de>>(self, v: V) -> R<V::Value> {
        match self.run_len()? {
            Run::Inline(n) => {
                let b = self.take(n)?;
                v.visit_borrowed_str(
                    plain::utf8(b).map_err(|e| CodecError(format!("bad UTF-8: {e}")))?,
                )
            }
            Run::HandedOver(n, idx) => v.visit_string(owned_string(self.received_vec(n, idx)?)?),
        }
    }
    #[inline]
    fn deserialize_string<V: Visitor<'de>>(self, v: V) -> R<V::Value> {
        match self.owned_bytes()? {
            // A large string is owned: copied into memory made for it, or handed over.
            Ok(b) => v.visit_string(owned_string(b)?),
            Err(b) => v.visit_borrowed_str(
                plain::utf8(b).map_err(|e| CodecError(format!("bad UTF-8: {e}")))?,
            ),
        }
    }
    #[inline]
    fn deserialize_bytes<V: Visitor<'de>>(self, v: V) -> R<V::Value> {
        match self.run_len()? {
            Run::Inline(n) => v.visit_borrowed_bytes(self.take(n)?),
            Run::HandedOver(n, idx) => v.visit_byte_buf(self.received_vec(n, idx)?),
        }
    }
    #[inline]
    fn deserialize_byte_buf<V: Visitor<'de>>(self, v: V) -> R<V::Value> {
        match self.owned_bytes()? {
            Ok(b) => v.visit_byte_buf(b),
            Err(b) => v.visit_borrowed_bytes(b),
        }
    }
    #[inline]
    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> R<V::Value> {
        match self.u8()? {
            0 => v.visit_none(),
            1 => self.nest(|d| v.visit_some(d)),
            b => Err(CodecError(format!("bad Option tag {b}"))),
        }
    }
    #[inline]
    fn deserialize_unit<V: Visitor<'de>>(self, v: V) -> R<V::Value> {
        v.visit_unit()
    }
    #[inline]
    fn deserialize_unit_struct<V: Visitor<'de>>(self, _: &'static str, v: V) -> R<V::Value> {
        v.visit_unit()
    }
    #[inline]
    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _: &'static str, v: V) -> R<V::Value> {
        self.nest(|d| v.visit_newtype_struct(d))
    }
    #[inline]
    fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> R<V::Value> {
        if let Some(r) = self.plain_vec::<V>() {
            return r;
        }
        let n = self.count()?;
        self.nest(|d| v.visit_seq(Access { de: d, left: n }))
    }
    #[inline]
    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, v: V) -> R<V::Value> {
        self.nest(|d| v.visit_seq(Access { de: d, left: len }))
    }
    #[inline]
    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        len: usize,
        v: V,
    ) -> R<V::Value> {
        self.deserialize_tuple(len, v)
    }
    #[inline]
    fn deserialize_map<V: Visitor<'de>>(self, v: V) -> R<V::Value> {
        let n = self.count()?;
        self.nest(|d| v.visit_map(Access { de: d, left: n }))
    }
    #[inline]
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        v: V,
    ) -> R<V::Value> {
        self.deserialize_tuple(fields.len(), v)
    }
    #[inline]
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        v: V,
    ) -> R<V::Value> {
        self.nest(|d| v.visit_enum(d))
    }
    #[inline]
    fn deserialize_identifier<V: Visitor<'de>>(self, v: V) -> R<V::Value> {
        v.visit_u32(self.u32()?)
    }

    fn is_human_readable(&self) -> bool {
        false
    }
}

/// The elements of a sequence, tuple, struct or map being decoded.
struct Access<'a, 'de> {
    de: &'a mut Dec<'de>,
    left: usize,
}

impl<'de> de::SeqAccess<'de> for Access<'_, 'de> {
    type Error = CodecError;
    #[inline]
    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> R<Option<T::Value>> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(&mut *self.de).map(Some)
    }
    #[inline]
    fn size_hint(&self) -> Option<usize> {
        Some(self.left)
    }
}

impl<'de> de::MapAccess<'de> for Access<'_, 'de> {
    type Error = CodecError;
    #[inline]
    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> R<Option<K::Value>> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(&mut *self.de).map(Some)
    }
    #[inline]
    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> R<T::Value> {
        seed.deserialize(&mut *self.de)
    }
    #[inline]
    fn size_hint(&self) -> Option<usize> {
        Some(self.left)
    }
}

impl<'de> de::EnumAccess<'de> for &mut Dec<'de> {
    type Error = CodecError;
    type Variant = Self;
    #[inline]
    fn variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> R<(T::Value, Self)> {
        let idx = self.u32()?;
        let v = seed.deserialize(IntoDeserializer::<CodecError>::into_deserializer(idx))?;
        Ok((v, self))
    }
}

impl<'de> de::VariantAccess<'de> for &mut Dec<'de> {
    type Error = CodecError;
    #[inline]
    fn unit_variant(self) -> R<()> {
        Ok(())
    }
    #[inline]
    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> R<T::Value> {
        seed.deserialize(self)
    }
    #[inline]
    fn tuple_variant<V: Visitor<'de>>(self, len: usize, v: V) -> R<V::Value> {
        de::Deserializer::deserialize_tuple(self, len, v)
    }
    #[inline]
    fn struct_variant<V: Visitor<'de>>(self, fields: &'static [&'static str], v: V) -> R<V::Value> {
        de::Deserializer::deserialize_tuple(self, fields.len(), v)
    }
}

thread_local! {
    /// Why a handle could not be rebuilt during the decoding under way: the decoding
    /// returns this typed error instead of the codec's generic message.
    static CAUSE: RefCell<Option<Error>> = const { RefCell::new(None) };
    /// Whether [`CAUSE`] may hold an error. A flag with no destructor costs one load to
    /// read, where [`CAUSE`] (which has one) costs a check of its state and a borrow: the
    /// flag spares every value decoded the latter.
    static CAUSE_SET: Cell<bool> = const { Cell::new(false) };
    /// Descriptors collected while encoding for a channel. `None` outside such an encoding.
    static OUT_FDS: RefCell<Option<Vec<OwnedFd>>> = const { RefCell::new(None) };
    /// How many descriptors [`serialize_fd`] ever added to an [`OUT_FDS`] list in this
    /// thread (wrapping): a session tells at a glance (one load, as for [`CAUSE_SET`])
    /// that a value added none, without looking at the list.
    static FDS_ADDED: Cell<usize> = const { Cell::new(0) };
    /// Descriptors received with the bytes being decoded. `None` outside such a decoding.
    static IN_FDS: RefCell<Option<Vec<Option<OwnedFd>>>> = const { RefCell::new(None) };
}

/// Encodes `value` for a multiproc channel: returns duplicates of the descriptors of the
/// handles it contains, to send beside the bytes (and close once sent).
pub(crate) fn encode_with_fds<T: Serialize + ?Sized>(
    value: &T,
    out: &mut Vec<u8>,
) -> Result<Vec<OwnedFd>> {
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
) -> Result<Vec<OwnedFd>> {
    let prev = OUT_FDS.with(|c| c.borrow_mut().replace(Vec::new()));
    let r = encode_into(value, out);
    let fds = OUT_FDS.with(|c| std::mem::replace(&mut *c.borrow_mut(), prev));
    r.map(|()| fds.unwrap_or_default())
}

/// A message written to a sealed memory file: its descriptor and length.
pub(crate) type SealedMessage = (OwnedFd, usize);

/// Encodes `value` for a multiproc channel like [`encode_with_fds`] (`out` empty), but an
/// encoding that grows past `spill_at` bytes is written to a memory file instead, sealed
/// read-only (`Some((file, length))`; `out` is then left empty): a large value is written
/// once, from its own memory to the shared memory that carries it.
pub(crate) fn encode_spilling<T: Serialize + ?Sized>(
    value: &T,
    out: &mut Vec<u8>,
    spill_at: usize,
) -> Result<(Vec<OwnedFd>, Option<SealedMessage>)> {
    debug_assert!(out.is_empty());
    let prev = OUT_FDS.with(|c| c.borrow_mut().replace(Vec::new()));
    let mut enc = Enc {
        out: &mut *out,
        limit: spill_at,
        file: None,
        hand_over: HAND_OVER.load(Ordering::Relaxed),
    };
    let r = put(value, &mut enc);
    let fds = OUT_FDS.with(|c| std::mem::replace(&mut *c.borrow_mut(), prev));
    let file = enc.file.take();
    let r = match (r, file) {
        (Ok(()), None) => Ok(None),
        (Ok(()), Some(mut f)) => match f.write(enc.out) {
            Ok(()) => {
                let len = f.written;
                f.file
                    .finish()
                    .map(|fd| Some((fd, len)))
                    .map_err(Error::from)
            }
            Err(e) => Err(f
                .err
                .take()
                .map_or_else(|| Error::codec_from("cannot encode value", e), Error::from)),
        },
        (Err(e), f) => Err(match f.and_then(|f| f.err) {
            Some(io) => Error::from(io),
            None => Error::codec_from("cannot encode value", e),
        }),
    };
    match r {
        Ok(file) => Ok((fds.unwrap_or_default(), file)),
        Err(e) => {
            out.clear();
            Err(e)
        }
    }
}

/// Encodes many values (pool task arguments or results) one after another, paying the set-up of the handle context once rather than per value. The
/// handles' descriptors collected so far (duplicates) come with
/// [`take_fds`](FdSession::take_fds).
pub(crate) struct FdSession {
    prev: Option<Vec<OwnedFd>>,
    /// Descriptors in the list after the last value encoded.
    known: usize,
    /// [`FDS_ADDED`] when the list was last looked at.
    added: usize,
}

impl FdSession {
    pub(crate) fn begin() -> FdSession {
        FdSession {
            prev: OUT_FDS.with(|c| c.borrow_mut().replace(Vec::new())),
            known: 0,
            added: FDS_ADDED.get(),
        }
    }

    /// The descriptors collected so far; the list starts again empty (the next value's
    /// handles are numbered from 0).
    pub(crate) fn take_fds(&mut self) -> Vec<OwnedFd> {
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
        let len = out.len();
        // A `Serialize` impl that panics fails this value only, like one that errs.
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| encode_into(value, out)))
            .unwrap_or_else(|p| {
                out.truncate(len);
                Err(Error::codec(format!(
                    "cannot encode value: {}",
                    serialize_panicked(&*p)
                )))
            });
        let added = self.settle(r.is_ok());
        r.map(|()| added)
    }

    /// After a value was encoded (`ok`) or not: how many descriptors it added to the list
    /// (a failed value's are taken off it).
    #[inline]
    fn settle(&mut self, ok: bool) -> usize {
        let added = FDS_ADDED.get();
        if added == self.added {
            // No descriptor was added anywhere in this thread: the list is as it was.
            return 0;
        }
        self.added = added;
        let known = self.known;
        let now = OUT_FDS.with(|c| {
            let mut c = c.borrow_mut();
            match c.as_mut() {
                Some(v) if !ok => {
                    v.truncate(known);
                    known
                }
                Some(v) => v.len(),
                None => known,
            }
        });
        self.known = now;
        now - known
    }
}

impl FdSession {
    /// Like [`append`](FdSession::append), but once `out` (what it held before, then
    /// `value`'s encoding) grows past `spill_at` bytes, everything goes to a memory file
    /// instead and the rest of `value` is encoded straight into it (as in
    /// [`encode_spilling`]): then `out` is left empty and the file, not yet sealed (its
    /// caller may still patch bytes in it), comes back with its length. On failure `out`
    /// and the list of descriptors are left as they were.
    pub(crate) fn append_spilling<T: Serialize + ?Sized>(
        &mut self,
        value: &T,
        out: &mut Vec<u8>,
        spill_at: usize,
    ) -> Result<(usize, Option<(MessageFile, usize)>)> {
        let len = out.len();
        let mut enc = Enc {
            out: &mut *out,
            limit: spill_at,
            file: None,
            hand_over: HAND_OVER.load(Ordering::Relaxed),
        };
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| put(value, &mut enc)))
            .unwrap_or_else(|p| Err(CodecError(serialize_panicked(&*p))));
        let file = enc.file.take();
        let r = match (r, file) {
            (Ok(()), None) => Ok(None),
            (Ok(()), Some(mut f)) => match f.write(out) {
                Ok(()) => {
                    out.clear();
                    Ok(Some((f.file, f.written)))
                }
                Err(e) => Err((Some(f), e)),
            },
            (Err(e), f) => Err((f, e)),
        };
        let r = match r {
            Ok(file) => Ok(file),
            Err((f, e)) => {
                // Put back what `out` held before: if it went to the file, it is the
                // file's first `len` bytes.
                let restored = match &f {
                    Some(f) if f.written > 0 => {
                        out.resize(len, 0);
                        f.file.read_at(0, out)
                    }
                    _ => Ok(()),
                };
                out.truncate(len);
                Err(match (restored, f.and_then(|f| f.err)) {
                    (Err(io), _) | (Ok(()), Some(io)) => Error::from(io),
                    (Ok(()), None) => Error::codec_from("cannot encode value", e),
                })
            }
        };
        let added = self.settle(r.is_ok());
        r.map(|file| (added, file))
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
        if fds.is_empty() {
            return decode(bytes);
        }
        IN_FDS.with(|c| *c.borrow_mut() = Some(fds.into_iter().map(Some).collect()));
        let r = decode(bytes);
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
    let mut de = Dec::new(bytes);
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
/// Handle types call this from their `Serialize` impl; it records a duplicate of `fd` to be
/// sent out of band (so the value may go away before the send) and writes its index.
pub(crate) fn serialize_fd<S: Serializer>(fd: BorrowedFd<'_>, s: S) -> Result<S::Ok, S::Error> {
    let dup = match fd.try_clone_to_owned() {
        Ok(d) => d,
        Err(e) => {
            return Err(serde::ser::Error::custom(format!(
                "cannot duplicate a handle's descriptor to send it: {e}"
            )))
        }
    };
    match push_out_fd(dup) {
        Some(i) => (i as u32).serialize(s),
        None => Err(serde::ser::Error::custom(
            "a multiproc handle can only be encoded to be sent through a multiproc \
             Process argument, Pipe, Queue or pool task",
        )),
    }
}

/// Adds `fd` to the descriptors sent with the message being encoded: its index, or `None`
/// (and `fd` closed) outside such an encoding.
fn push_out_fd(fd: OwnedFd) -> Option<usize> {
    OUT_FDS.with(|c| {
        c.borrow_mut().as_mut().map(|v| {
            v.push(fd);
            FDS_ADDED.set(FDS_ADDED.get().wrapping_add(1));
            v.len() - 1
        })
    })
}

/// Deserializes a handle's descriptor sent by [`serialize_fd`].
pub(crate) fn deserialize_fd<'de, D: Deserializer<'de>>(d: D) -> Result<OwnedFd, D::Error> {
    let idx = u32::deserialize(d)? as usize;
    take_in_fd(idx).map_err(serde::de::Error::custom)
}

/// Takes descriptor `idx` of the message being decoded.
fn take_in_fd(idx: usize) -> std::result::Result<OwnedFd, String> {
    IN_FDS.with(|c| {
        let mut c = c.borrow_mut();
        let Some(list) = c.as_mut() else {
            return Err("a multiproc handle can only be decoded from a multiproc channel".into());
        };
        match list.get_mut(idx).and_then(Option::take) {
            Some(fd) => Ok(fd),
            None if list.is_empty() => {
                Err("the message carries no file descriptor where a handle was expected".into())
            }
            None => Err(format!(
                "a handle refers to file descriptor #{idx} of the message, which carried {} \
                 (or that one was taken already)",
                list.len()
            )),
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

    /// A length word marked [`HANDED_OVER`] for `n` elements in descriptor `idx`.
    fn handed(n: u64, idx: u32) -> Vec<u8> {
        let mut b = (n | HANDED_OVER).to_le_bytes().to_vec();
        b.extend_from_slice(&idx.to_le_bytes());
        b
    }

    /// A memory file holding `bytes`, sealed read-only as a handed-over allocation is.
    fn sealed(bytes: &[u8]) -> OwnedFd {
        let mut f = MessageFile::new().unwrap();
        f.write_at(0, bytes).unwrap();
        f.seal().unwrap()
    }

    fn failure<T: DeserializeOwned + std::fmt::Debug>(b: &[u8], fds: Vec<OwnedFd>) -> String {
        let e = decode_with_fds::<T>(b, fds).unwrap_err();
        assert!(matches!(e, Error::Codec(_)), "{e:?}");
        format!("{e:?}")
    }

    #[test]
    fn a_handed_over_run_is_copied_where_the_allocator_is_not_installed() {
        // This test binary's global allocator is the system's: the file's bytes are copied.
        let data: Vec<f64> = (0..100_000).map(|i| f64::from(i) * 0.5).collect();
        let fd = sealed(bytemuck::cast_slice(&data));
        let v: Vec<f64> = decode_with_fds(&handed(100_000, 0), vec![fd]).unwrap();
        assert_eq!(v, data);
        // A string, a byte buffer, and a run inside a struct, after other fields.
        let text = "é€🦀a".repeat(70_000);
        let s: String =
            decode_with_fds(&handed(text.len() as u64, 0), vec![sealed(text.as_bytes())]).unwrap();
        assert_eq!(s, text);
        let b: serde_bytes::ByteBuf =
            decode_with_fds(&handed(300_000, 0), vec![sealed(&[7u8; 300_000])]).unwrap();
        assert!(b.len() == 300_000 && b.iter().all(|&x| x == 7));
        let mut msg = 42u32.to_le_bytes().to_vec();
        msg.extend(handed(3, 1));
        let (id, v): (u32, Vec<u16>) =
            decode_with_fds(&msg, vec![sealed(b"--"), sealed(&[1, 0, 2, 0, 3, 0])]).unwrap();
        assert_eq!((id, v), (42, vec![1, 2, 3]));
        // Fewer elements than the file holds: the rest of the file is not read.
        let v: Vec<u8> = decode_with_fds(&handed(2, 0), vec![sealed(b"abcdef")]).unwrap();
        assert_eq!(v, b"ab");
    }

    #[test]
    fn bad_handed_over_runs_give_codec_errors() {
        // No descriptor with the message, or outside a channel.
        assert!(failure::<Vec<u8>>(&handed(10, 0), vec![]).contains("carries no file descriptor"));
        let e = format!("{:?}", decode::<Vec<u8>>(&handed(10, 0)).unwrap_err());
        assert!(
            e.contains("can only be decoded from a multiproc channel"),
            "{e}"
        );
        // An index past the descriptors sent.
        assert!(failure::<Vec<u8>>(&handed(1, 3), vec![sealed(b"x")]).contains("#3"));
        // A file others may still write, or resize.
        let writable = crate::sys::memfd::Mapping::anonymous(4096).unwrap();
        let fd = writable.fd().try_clone_to_owned().unwrap();
        assert!(failure::<Vec<u8>>(&handed(10, 0), vec![fd]).contains("not sealed read-only"));
        let plain = rustix::fs::memfd_create("t", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        assert!(failure::<Vec<u8>>(&handed(0, 0), vec![plain]).contains("not sealed"));
        // Not a memory file at all.
        let (sock, _peer) = crate::sys::stream_pair().unwrap();
        assert!(failure::<Vec<u8>>(&handed(1, 0), vec![sock]).contains("not a memory file"));
        // Fewer bytes than the elements claimed, and a count that overflows.
        assert!(failure::<Vec<u64>>(&handed(100, 0), vec![sealed(&[0; 8])]).contains("expected"));
        assert!(
            failure::<Vec<u64>>(&handed(1 << 62, 0), vec![sealed(&[0; 8])]).contains("too large")
        );
        // A string that is not UTF-8.
        assert!(failure::<String>(&handed(4, 0), vec![sealed(&[0xff; 4])]).contains("UTF-8"));
        // A marker cut short, and one where the type reads its elements one by one or
        // borrows its bytes.
        assert!(failure::<Vec<u8>>(&handed(1, 0)[..8], vec![]).contains("end of input"));
        let e = failure::<std::collections::VecDeque<u8>>(&handed(1, 0), vec![sealed(b"x")]);
        assert!(e.contains("handed over in shared memory"), "{e}");
    }

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

    /// A sequence that serde does not see as a slice: the element-by-element path.
    struct Slow<'a, T>(&'a [T]);
    impl<T: Serialize> Serialize for Slow<'_, T> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.collect_seq(self.0.iter().filter(|_| true))
        }
    }

    #[derive(Debug, PartialEq)]
    struct SlowVec<T>(Vec<T>);
    impl<'de, T: Deserialize<'de>> Deserialize<'de> for SlowVec<T> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V<T>(std::marker::PhantomData<T>);
            impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
                type Value = SlowVec<T>;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a sequence")
                }
                fn visit_seq<A: de::SeqAccess<'de>>(
                    self,
                    mut a: A,
                ) -> Result<Self::Value, A::Error> {
                    let mut v = Vec::new();
                    while let Some(x) = a.next_element()? {
                        v.push(x);
                    }
                    Ok(SlowVec(v))
                }
            }
            d.deserialize_seq(V(std::marker::PhantomData))
        }
    }

    #[test]
    fn fast_paths_write_and_read_what_the_element_paths_do() {
        fn check<T>(v: Vec<T>)
        where
            T: Serialize + DeserializeOwned + PartialEq + fmt::Debug + Clone,
        {
            let fast = encode(&v).unwrap();
            let slow = encode(&Slow(&v)).unwrap();
            assert_eq!(fast, slow);
            assert_eq!(fast.len(), 8 + v.len() * std::mem::size_of::<T>());
            assert_eq!(decode::<Vec<T>>(&slow).unwrap(), v);
            assert_eq!(decode::<SlowVec<T>>(&fast).unwrap(), SlowVec(v.clone()));
            // Inside a struct-like tuple, and as a boxed slice.
            let t = (7u8, v.clone(), v.clone().into_boxed_slice());
            let back: (u8, Vec<T>, Box<[T]>) = decode(&encode(&t).unwrap()).unwrap();
            assert_eq!(back, t);
            // A truncated run is an error.
            if !fast.is_empty() {
                assert!(decode::<Vec<T>>(&fast[..fast.len() - 1]).is_err());
            }
        }
        check::<u8>((0..=255).collect());
        check::<u16>(vec![1, 0xffff, 3]);
        check::<u32>(vec![0xdead_beef; 5]);
        check::<u64>(vec![u64::MAX, 0]);
        check::<i8>(vec![-1, 2]);
        check::<i16>(vec![-300]);
        check::<i32>(vec![i32::MIN]);
        check::<i64>(vec![-5, 5]);
        check::<f32>(vec![1.5, -0.0]);
        check::<f64>(vec![f64::MAX, 2.5, f64::MIN_POSITIVE]);
        check::<u8>(Vec::new());
        // The visitor ids were learnt for every plain type.
        assert!(plain_vec_visitors().iter().all(Option::is_some));
    }

    #[test]
    fn unknown_lengths_are_patched_in() {
        // A map and a sequence serialized without their length up front.
        struct Unsized;
        impl Serialize for Unsized {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeMap;
                let mut m = s.serialize_map(None)?;
                m.serialize_entry("a", &1u32)?;
                m.serialize_entry("b", &2u32)?;
                m.end()
            }
        }
        let b = encode(&Unsized).unwrap();
        let m: std::collections::BTreeMap<String, u32> = decode(&b).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m["b"], 2);
        let v: Vec<u32> = decode(&encode(&Slow(&[4u32, 5][..])).unwrap()).unwrap();
        assert_eq!(v, vec![4, 5]);
    }

    #[test]
    fn huge_length_prefix_does_not_allocate() {
        // A length of nearly u64::MAX, followed by almost nothing.
        let bytes = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0xff, 0x01];
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
        assert_eq!(fds.len(), 1);
        let same = |a: BorrowedFd<'_>, b: BorrowedFd<'_>| {
            let (sa, sb) = (rustix::fs::fstat(a).unwrap(), rustix::fs::fstat(b).unwrap());
            (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)
        };
        assert!(
            same(fds[0].as_fd(), f.as_fd()),
            "a duplicate of the handle's descriptor"
        );
    }

    #[test]
    fn large_values_are_encoded_into_a_sealed_file() {
        use crate::sys::memfd::MessageBytes;
        use std::os::fd::AsFd;
        let f = std::fs::File::open("/dev/null").unwrap();
        let big: Vec<u8> = (0..3 << 20).map(|i| (i * 7) as u8).collect();
        let strings: Vec<String> = (0..100_000).map(|i| i.to_string()).collect();
        let floats = vec![1.5f64; 300_000];
        // A handle, a run written straight to the file, many small parts gathered in
        // batches under a length patched once its placeholder is in the file, a small
        // string, a run of numbers, and a large string.
        let text = "é".repeat(3 << 20);
        let value = (
            FdRef(f.as_fd()),
            &big,
            Slow(&strings),
            "tail",
            &floats,
            &text,
        );
        let mut plain = Vec::new();
        let plain_fds = encode_with_fds(&value, &mut plain).unwrap();
        for spill_at in [0, 1000, 5 << 20, 10 << 20] {
            let mut out = Vec::new();
            let (fds, file) = encode_spilling(&value, &mut out, spill_at).unwrap();
            assert_eq!(fds.len(), plain_fds.len());
            let (fd, len) = file.expect("spilled");
            assert!(out.is_empty());
            assert_eq!(len, plain.len());
            let seg = MessageBytes::receive(fd, len).unwrap();
            assert!(
                seg.as_slice() == &plain[..],
                "the same bytes (spill at {spill_at})"
            );
            type V = (FdOwned, Vec<u8>, Vec<String>, String, Vec<f64>, String);
            let back: V = decode_with_fds(seg.as_slice(), fds).unwrap();
            assert_eq!(back.1, big);
            assert_eq!(back.2, strings);
            assert_eq!(back.3, "tail");
            assert_eq!(back.4, floats);
            assert_eq!(back.5, text);
        }
        // Below the threshold: in `out`, as `encode_with_fds` writes it.
        let mut out = Vec::new();
        let (fds, file) = encode_spilling(&value, &mut out, plain.len()).unwrap();
        assert!(file.is_none());
        assert_eq!(fds.len(), 1);
        assert!(out == plain);
        // A value that fails after it went to the file: an error, nothing left behind.
        struct Bad;
        impl Serialize for Bad {
            fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
                Err(serde::ser::Error::custom("no"))
            }
        }
        let mut out = Vec::new();
        assert!(matches!(
            encode_spilling(&(&big, Bad), &mut out, 1000),
            Err(Error::Codec(_))
        ));
        assert!(out.is_empty());
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
        // Values without handles, after one with a handle and after a failed one, add none
        // (the list keeps the third value's descriptor until it is taken).
        assert_eq!(s.append(&7u32, &mut out).unwrap(), 0);
        assert!(s.append(&(H(f.as_fd()), Bad), &mut out).is_err());
        assert_eq!(s.append(&"x", &mut out).unwrap(), 0);
        // A value that encodes a handle for a channel of its own (a nested session) adds
        // none to this session's list.
        struct Nested<'a>(BorrowedFd<'a>);
        impl Serialize for Nested<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut inner = Vec::new();
                let fds = encode_with_fds(&H(self.0), &mut inner)
                    .map_err(|e| serde::ser::Error::custom(e.to_string()))?;
                assert_eq!(fds.len(), 1);
                s.serialize_bytes(&inner)
            }
        }
        assert_eq!(s.append(&Nested(f.as_fd()), &mut out).unwrap(), 0);
        assert_eq!(s.take_fds().len(), 1, "the third value's descriptor only");
        assert_eq!(s.append(&(1u8, H(f.as_fd())), &mut out).unwrap(), 1);
        assert_eq!(s.take_fds().len(), 1);
        drop(s);
        // Outside a session, handles cannot be encoded.
        assert!(encode(&H(f.as_fd())).is_err());
    }

    /// A handle that cannot be rebuilt fails its decoding with its own error; the next
    /// decoding, failing for another reason, gets the codec's error (the cause does not
    /// linger), as does a decoding after a value that recovered from its handle's failure.
    #[test]
    fn a_handles_own_error_belongs_to_its_decoding_only() {
        struct Gone;
        impl<'de> Deserialize<'de> for Gone {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                u8::deserialize(d)?;
                Err(handle_error(Error::Io(std::io::Error::other(
                    "segment gone",
                ))))
            }
        }
        struct Recovers;
        impl<'de> Deserialize<'de> for Recovers {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                u8::deserialize(d)?;
                let _: D::Error = handle_error(Error::Io(std::io::Error::other("ignored")));
                Ok(Recovers)
            }
        }
        for _ in 0..2 {
            match decode::<Gone>(&[1]) {
                Err(Error::Io(e)) => assert_eq!(e.to_string(), "segment gone"),
                other => panic!("{:?}", other.err()),
            }
            assert!(matches!(decode::<u64>(&[1]), Err(Error::Codec(_))));
            assert!(decode::<Recovers>(&[1]).is_ok());
            assert!(matches!(decode::<u64>(&[1]), Err(Error::Codec(_))));
        }
        let mut got = Vec::new();
        decode_tasks::<u8>(&[1, 2], Vec::new(), 3, |i, r| got.push((i, r.is_ok())));
        assert_eq!(got, vec![(0, true), (1, true), (2, false)]);
        let mut got = Vec::new();
        decode_tasks::<Gone>(&[1, 2], Vec::new(), 2, |_, r| got.push(r.err()));
        assert!(matches!(&got[0], Some(Error::Io(_))));
        assert!(matches!(&got[1], Some(Error::Codec(_))));
    }

    /// The ndarray fast path writes exactly what ndarray's own `Serialize` writes through
    /// this codec (so ndarray's `Deserialize` reads it), for every layout and dimension.
    #[cfg(feature = "ndarray")]
    #[test]
    fn ndarray_arrays_encode_as_ndarray_does() {
        use ndarray::{arr2, s, Array, Array1, Array2, Array3, ArrayD, IxDyn, ShapeBuilder};
        /// Hides the array's type from the fast path: ndarray's own impl runs.
        struct Hide<'a, T>(&'a T);
        impl<T: Serialize> Serialize for Hide<'_, T> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                self.0.serialize(s)
            }
        }
        fn check<T: Serialize + DeserializeOwned + PartialEq + Clone + fmt::Debug>(a: T) {
            let fast = encode(&a).unwrap();
            assert_eq!(fast, encode(&Hide(&a)).unwrap(), "{a:?}");
            // Inside other values too.
            let nested = (7u8, Some(a.clone()), vec![a.clone()]);
            assert_eq!(
                encode(&nested).unwrap(),
                encode(&(7u8, Some(Hide(&a)), vec![Hide(&a)])).unwrap()
            );
            assert_eq!(decode::<T>(&fast).unwrap(), a);
        }
        let m = Array2::from_shape_fn((3, 5), |(i, j)| (i * 10 + j) as f64 + 0.5);
        check(m.clone());
        check(m.t().to_owned()); // column-major memory
        check(m.clone().reversed_axes());
        check(Array2::<f64>::zeros((4, 3).f()));
        check(m.slice(s![..;-1, 1..;2]).to_owned());
        check(m.clone().slice_move(s![..;2, ..;-1])); // owned with negative strides
        check(Array1::from_vec(vec![1u8, 2, 3]));
        check(Array3::from_shape_fn((2, 3, 4), |(i, j, k)| {
            (i + j * k) as i16 - 5
        }));
        check(ArrayD::from_shape_fn(IxDyn(&[2, 1, 3, 2]), |d| {
            d[0] as u64 * 1000 + d[3] as u64
        }));
        check(Array::from_elem((), 3.25f32));
        check(Array2::<i32>::zeros((0, 7)));
        check(arr2(&[[1u32, 2], [3, 4]]).into_shared());
        // Not plain numbers: ndarray's own impl, unchanged.
        check(arr2(&[[true, false]]));
        check(Array1::from_vec(vec!["a".to_string(), "bc".to_string()]));
        // Garbage shapes are errors, not panics.
        let mut bad = encode(&m).unwrap();
        bad[1..9].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(decode::<Array2<f64>>(&bad).is_err());
    }
}
