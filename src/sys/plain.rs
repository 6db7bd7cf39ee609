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

/// Runs of at least this many bytes are copied into memory advised to use huge pages
/// ([`advise_huge_pages`](super::memfd::advise_huge_pages)): a fresh large vector fills
/// several times faster with a fault per 2 MiB than with one per 4 KiB.
pub(crate) const HUGE_RUN: usize = super::memfd::HUGE_PAGES_FROM;

/// A vector of `bytes.len() / size_of::<P>()` numbers copied from `bytes` (in memory order),
/// with one `memcpy` and no zero-filling first. `None` if the length is not a multiple of
/// the element size or the allocation is refused.
pub(crate) fn vec_from_bytes<P: Plain>(bytes: &[u8]) -> Option<Vec<P>> {
    let size = std::mem::size_of::<P>();
    if !bytes.len().is_multiple_of(size) {
        return None;
    }
    let n = bytes.len() / size;
    let mut v: Vec<P> = Vec::new();
    v.try_reserve_exact(n).ok()?;
    super::memfd::advise_huge_pages(v.spare_capacity_mut());
    // SAFETY: `try_reserve_exact` made room for `n` elements, that is `bytes.len()` bytes, in
    // the vector's own allocation, which cannot overlap `bytes`; any bytes are a valid `P`
    // (`Pod`), so after the copy the first `n` elements are initialised.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), v.as_mut_ptr().cast::<u8>(), bytes.len());
        v.set_len(n);
    }
    Some(v)
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
