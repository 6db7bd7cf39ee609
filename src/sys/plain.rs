//! Plain numbers seen as bytes: what the codec's fast paths need to copy a contiguous run of
//! numbers (`Vec<f64>`, `&[u32]`, …) with one `memcpy` instead of one call per element.
//!
//! Not OS-specific, but it reinterprets memory, so it lives with the crate's other `unsafe`
//! code. Every function checks the types it is given (by type id) before it relies on them.

use bytemuck::Pod;

/// The plain number types: fixed-width integers and floats, every bit pattern valid, no
/// padding. The codec's fast paths serve exactly these.
///
/// `pub` in a private module: the public `value::Plain` names it as a supertrait (which
/// seals that trait: no other crate can implement this one).
pub trait Plain: Pod {}

macro_rules! plain {
    ($($t:ty),*) => { $(impl Plain for $t {})* };
}
plain!(u8, u16, u32, u64, i8, i16, i32, i64, f32, f64);

/// If `it` is a `std::slice::Iter` over `P` (what serde's `Serialize` for `Vec<P>`, `[P]` and
/// `Box<[P]>` hands to `Serializer::collect_seq`), the number of elements left in it and their
/// bytes in memory order.
#[inline]
pub(crate) fn slice_iter_bytes<P: Plain, I>(it: &I) -> Option<(usize, &[u8])> {
    if typeid::of::<I>() != typeid::of::<std::slice::Iter<'static, P>>() {
        return None;
    }
    // SAFETY: `I` and `slice::Iter<'_, P>` have the same type id once lifetimes are erased,
    // so `I` is `slice::Iter<'a, P>` for some lifetime `'a`: the pointer cast reads the very
    // object `it` points to at its own type. The reference we make lives no longer than the
    // borrow of `it` (shorter than `'a`, the iterator's lifetime is covariant).
    let it = unsafe { &*(it as *const I).cast::<std::slice::Iter<'_, P>>() };
    let s = it.as_slice();
    Some((s.len(), bytemuck::cast_slice(s)))
}

/// Runs of at least this many bytes are copied into memory prepared for the copy
/// ([`prepare_fill`](super::memfd::prepare_fill): huge pages, or for the largest all its
/// pages made at once): a fresh large vector fills several times faster with a fault per
/// 2 MiB than with one per 4 KiB.
pub(crate) const HUGE_RUN: usize = super::memfd::HUGE_PAGES_FROM;

/// A vector of `bytes.len() / size_of::<P>()` numbers copied from `bytes` (in memory order),
/// with one `memcpy` and no zero-filling first. `None` if the length is not a multiple of
/// the element size or the allocation is refused.
pub(crate) fn vec_from_bytes<P: Plain>(bytes: &[u8]) -> Option<Vec<P>> {
    // SAFETY: `P` is `Plain` (`Pod`): any bytes of its size are a valid `P`.
    unsafe { copy_into_vec(bytes) }
}

/// [`vec_from_bytes`] for a `T` known to be plain by other means.
///
/// # Safety
/// Any `size_of::<T>()` bytes must be a valid `T` (a plain number type).
unsafe fn copy_into_vec<T>(bytes: &[u8]) -> Option<Vec<T>> {
    let size = std::mem::size_of::<T>();
    if size == 0 || !bytes.len().is_multiple_of(size) {
        return None;
    }
    let n = bytes.len() / size;
    let mut v: Vec<T> = Vec::new();
    // Private memory, not a `ShmAllocator` file: it fills several times faster.
    super::heap::private_scope(|| v.try_reserve_exact(n)).ok()?;
    super::memfd::prepare_fill(v.spare_capacity_mut());
    // SAFETY: `try_reserve_exact` made room for `n` elements, that is `bytes.len()` bytes, in
    // the vector's own allocation, which cannot overlap `bytes`; any bytes are a valid `T`
    // (the caller's promise), so after the copy the first `n` elements are initialised.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), v.as_mut_ptr().cast::<u8>(), bytes.len());
        v.set_len(n);
    }
    Some(v)
}

/// Proof that `T`, a type met as a generic parameter (a pool task's argument or result),
/// is one of the plain number types (checked by type id, once), on a little-endian host:
/// there a value's memory is its encoding in the codec, so values are read and written by
/// copying their memory, with no serde call per value. Made by [`PlainType::of`].
pub(crate) struct PlainType<T>(std::marker::PhantomData<fn() -> T>);

impl<T> Clone for PlainType<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for PlainType<T> {}

impl<T> PlainType<T> {
    /// `Some` if `T` is a plain number type and the host little-endian.
    #[inline]
    pub(crate) fn of() -> Option<PlainType<T>> {
        fn is<P: Plain, T>() -> bool {
            typeid::of::<T>() == typeid::of::<P>()
        }
        let plain = cfg!(target_endian = "little")
            && (is::<u8, T>()
                || is::<u16, T>()
                || is::<u32, T>()
                || is::<u64, T>()
                || is::<i8, T>()
                || is::<i16, T>()
                || is::<i32, T>()
                || is::<i64, T>()
                || is::<f32, T>()
                || is::<f64, T>());
        plain.then_some(PlainType(std::marker::PhantomData))
    }

    /// The size of one value (and of its encoding).
    #[inline]
    pub(crate) fn size(self) -> usize {
        std::mem::size_of::<T>()
    }

    /// The value whose memory is `bytes`; `None` unless `bytes` has exactly its size.
    #[inline]
    pub(crate) fn read(self, bytes: &[u8]) -> Option<T> {
        if bytes.len() != std::mem::size_of::<T>() {
            return None;
        }
        // SAFETY: `T` is a plain number type (`of` checked its type id), so any bytes of
        // its size, which `bytes` has, are a valid `T`; `read_unaligned` needs no alignment.
        Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
    }

    /// The memory of the values of `s`, in order.
    #[inline]
    pub(crate) fn bytes(self, s: &[T]) -> &[u8] {
        // SAFETY: `T` is a plain number type (`of` checked its type id): no padding, every
        // byte of `s` is initialised; the byte slice covers exactly `s`'s memory and borrows
        // `s` for its lifetime.
        unsafe { std::slice::from_raw_parts(s.as_ptr().cast::<u8>(), std::mem::size_of_val(s)) }
    }

    /// A vector of the values whose memory is `bytes` (one `memcpy`, as
    /// [`vec_from_bytes`]); `None` if `bytes` is not a whole number of values or the
    /// allocation is refused.
    #[inline]
    pub(crate) fn vec(self, bytes: &[u8]) -> Option<Vec<T>> {
        // SAFETY: `T` is a plain number type (`of` checked its type id): any bytes of its
        // size are a valid `T`.
        unsafe { copy_into_vec(bytes) }
    }
}

/// `v` as a `B`, if `B` is `Vec<P>` (the `Value` of serde's own visitor for `Vec<P>`, known
/// only as a generic type where the codec meets it); `Err(v)` otherwise.
pub(crate) fn vec_as<P: Plain, B>(v: Vec<P>) -> Result<B, Vec<P>> {
    if typeid::of::<B>() != typeid::of::<Vec<P>>() {
        return Err(v);
    }
    let v = std::mem::ManuallyDrop::new(v);
    // SAFETY: `Vec<P>` has no lifetime parameters, so a type with the same type id up to
    // lifetimes is `Vec<P>` itself: this moves the vector out at its own type (it is not
    // dropped here: ManuallyDrop).
    Ok(unsafe { std::ptr::read((&*v as *const Vec<P>).cast::<B>()) })
}

/// Checks `bytes` for UTF-8 like [`std::str::from_utf8`], with the same result and error, but
/// faster on ASCII: a pure-ASCII prefix is found block by block with `<[u8]>::is_ascii`
/// (two to three times the speed of the full check, which then runs only from the first
/// block holding another byte).
#[inline]
pub(crate) fn utf8(bytes: &[u8]) -> Result<&str, std::str::Utf8Error> {
    const BLOCK: usize = 4096;
    let ascii = bytes
        .chunks(BLOCK)
        .take_while(|c| c.is_ascii())
        .map(<[u8]>::len)
        .sum::<usize>();
    if let Err(e) = std::str::from_utf8(&bytes[ascii..]) {
        // The error as the full check gives it (its offset counted from the start).
        return Err(std::str::from_utf8(bytes).err().unwrap_or(e));
    }
    // SAFETY: `bytes[..ascii]` is ASCII (checked block by block), so valid UTF-8 ending on
    // a character boundary, and `bytes[ascii..]` is valid UTF-8 (checked just above): the
    // two together are valid UTF-8.
    Ok(unsafe { std::str::from_utf8_unchecked(bytes) })
}

/// [`String::from_utf8`], with the check of [`utf8`].
pub(crate) fn string_from_utf8(v: Vec<u8>) -> Result<String, std::str::Utf8Error> {
    utf8(&v)?;
    // SAFETY: `v` was just checked to be valid UTF-8.
    Ok(unsafe { String::from_utf8_unchecked(v) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_of_plain_numbers_are_seen_as_bytes() {
        let v = vec![1.5f64, -2.0];
        let it = v.iter();
        let (n, b) = slice_iter_bytes::<f64, _>(&it).unwrap();
        assert_eq!(n, 2);
        assert_eq!(b.len(), 16);
        assert!(slice_iter_bytes::<f32, _>(&it).is_none());
        let words = [1u32, 2, 3];
        let mut it = words.iter();
        it.next();
        assert_eq!(slice_iter_bytes::<u32, _>(&it).map(|x| x.0), Some(2));
        // Not a slice iterator: no fast path.
        let o = Some(1u8);
        assert!(slice_iter_bytes::<u8, _>(&o.iter()).is_none());

        let back: Vec<f64> = vec_from_bytes(b).unwrap();
        assert_eq!(back, v);
        assert!(vec_from_bytes::<u32>(&[1, 2, 3]).is_none());
        let same: Vec<f64> = vec_as::<f64, Vec<f64>>(back).unwrap();
        assert_eq!(same, v);
        assert!(vec_as::<f64, Vec<f32>>(same).is_err());
    }

    #[test]
    fn plain_types_are_known_by_type_and_copied_as_their_memory() {
        assert!(PlainType::<[u32; 2]>::of().is_none());
        assert!(PlainType::<usize>::of().is_none());
        assert!(PlainType::<bool>::of().is_none());
        assert!(PlainType::<(u64,)>::of().is_none());
        assert!(PlainType::<String>::of().is_none());
        fn round_trip<T: Copy + PartialEq + std::fmt::Debug>(vals: &[T]) {
            let p = PlainType::<T>::of().expect("a plain type");
            assert_eq!(p.size(), std::mem::size_of::<T>());
            let b = p.bytes(vals);
            assert_eq!(b.len(), vals.len() * p.size());
            assert_eq!(p.vec(b).unwrap(), vals);
            for (i, v) in vals.iter().enumerate() {
                assert_eq!(p.read(&b[i * p.size()..(i + 1) * p.size()]), Some(*v));
            }
            // A wrong length is refused, not read.
            assert_eq!(p.read(&b[..p.size() - 1]), None);
            assert_eq!(p.read(&[b, &[0]].concat()[..p.size() + 1]), None);
            if p.size() > 1 {
                assert!(p.vec(&b[1..]).is_none());
            }
        }
        round_trip(&[1u8, 255]);
        round_trip(&[1u16, 65535]);
        round_trip(&[7u32, u32::MAX]);
        round_trip(&[3u64, u64::MAX]);
        round_trip(&[-1i8, 5]);
        round_trip(&[-1i16, 5]);
        round_trip(&[-1i32, i32::MIN]);
        round_trip(&[-1i64, i64::MIN]);
        round_trip(&[1.5f32, -0.0]);
        round_trip(&[1.5f64, f64::MAX]);
    }

    #[test]
    fn utf8_agrees_with_the_standard_check() {
        // ASCII blocks before, around and after other bytes, valid and not, errors at
        // every kind of place: the same answer and error as `std::str::from_utf8`.
        let mut cases: Vec<Vec<u8>> = vec![Vec::new(), b"plain".to_vec()];
        for len in [4095usize, 4096, 4097, 3 * 4096 + 5] {
            for tail in [&b""[..], "é€🦀".as_bytes(), b"\xff", b"\xe2\x82", b"ok\xc3"] {
                for at in [0, len / 2, len.saturating_sub(1), len] {
                    let mut v = vec![b'a'; len];
                    v.splice(at..at, tail.iter().copied());
                    cases.push(v);
                }
            }
        }
        for v in &cases {
            assert_eq!(utf8(v), std::str::from_utf8(v), "{} bytes", v.len());
            let owned = string_from_utf8(v.clone()).map_err(|e| e.valid_up_to());
            let std = String::from_utf8(v.clone()).map_err(|e| e.utf8_error().valid_up_to());
            assert_eq!(owned, std);
        }
    }
}
