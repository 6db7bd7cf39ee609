//! Naming a function of this binary to another process: as an offset from a fixed anchor,
//! checked against a build identity and the function's type before it is called.
//!
//! Position-independent executables are loaded at a random base, but the distance between
//! two functions of the same binary is fixed. The parent sends that distance; the child adds
//! its own anchor's address. The child is always the same file (`/proc/self/exe` of the
//! parent, or a fork of it), and [`build_id`] checks that, so the address it computes is the
//! same function the parent named.

use std::hash::{Hash, Hasher};
use std::marker::PhantomData;
use std::os::unix::fs::MetadataExt;
use std::sync::OnceLock;

#[inline(never)]
fn anchor() -> usize {
    std::hint::black_box(0x5eed)
}

#[inline(never)]
fn anchor_b() -> usize {
    std::hint::black_box(0xb0a7)
}

fn anchor_addr() -> usize {
    anchor as fn() -> usize as usize
}

/// A 64-bit identity of the running executable: which file it is (device, inode, size,
/// modification time) and a layout fingerprint (the distance between two anchors).
pub(crate) fn build_id() -> u64 {
    static ID: OnceLock<u64> = OnceLock::new();
    *ID.get_or_init(|| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        if let Ok(m) = std::fs::metadata("/proc/self/exe") {
            (m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec()).hash(&mut h);
        }
        (anchor_b as fn() -> usize as usize)
            .wrapping_sub(anchor_addr())
            .hash(&mut h);
        h.finish()
    })
}

/// A fingerprint of a type's name, to check that the child calls the function with the
/// type the parent meant.
fn type_sig<T: ?Sized>() -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::any::type_name::<T>().hash(&mut h);
    h.finish()
}

/// The position of function pointer `addr` relative to the anchor.
fn offset_of(addr: usize) -> i64 {
    addr.wrapping_sub(anchor_addr()) as i64
}

/// The offset that names no function: what [`user_offset_of`] gives for a function that is
/// not in the main executable. Launches and pool jobs refuse it before any child runs.
const FOREIGN_FN: i64 = i64::MIN;

/// [`offset_of`] for a function the user handed us, or [`FOREIGN_FN`] if `addr` is not in
/// the main executable's mapped file: a function of a dynamic library or a plugin lives at
/// an address that only this process's loader chose, so a child cannot find it from the
/// anchor of the executable.
fn user_offset_of(addr: usize) -> i64 {
    if in_executable(addr) {
        offset_of(addr)
    } else {
        FOREIGN_FN
    }
}

/// Whether `addr` lies in a mapping of the main executable's file (device and inode of
/// `/proc/self/exe`), as `/proc/self/maps` lists them. If that cannot be read, everything
/// counts as inside (the build identity still guards the child).
pub(crate) fn in_executable(addr: usize) -> bool {
    static RANGES: OnceLock<Option<Vec<(usize, usize)>>> = OnceLock::new();
    match RANGES.get_or_init(executable_ranges) {
        Some(r) => r.iter().any(|&(lo, hi)| (lo..hi).contains(&addr)),
        None => true,
    }
}

fn executable_ranges() -> Option<Vec<(usize, usize)>> {
    let m = std::fs::metadata("/proc/self/exe").ok()?;
    let (dev, ino) = (m.dev(), m.ino());
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let mut out = Vec::new();
    for line in maps.lines() {
        // start-end perms offset major:minor inode path
        let mut f = line.split_ascii_whitespace();
        let (Some(range), Some(_perms), Some(_off), Some(mm), Some(inode)) =
            (f.next(), f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        if inode.parse::<u64>().ok() != Some(ino) {
            continue;
        }
        let (Some((maj, min)), Some((lo, hi))) = (mm.split_once(':'), range.split_once('-')) else {
            continue;
        };
        let (Ok(maj), Ok(min)) = (u64::from_str_radix(maj, 16), u64::from_str_radix(min, 16))
        else {
            continue;
        };
        if rustix::fs::makedev(maj as u32, min as u32) != dev {
            continue;
        }
        if let (Ok(lo), Ok(hi)) = (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16)) {
            out.push((lo, hi));
        }
    }
    (!out.is_empty()).then_some(out)
}

mod sealed {
    /// Implemented only in this module, for function pointer types.
    pub trait Sealed {}
}

/// A function pointer type that can be named to another process. Implemented, here only,
/// for the shapes of function pointer the crate sends (the user's `fn(A) -> R` and the
/// crate's trampolines): a [`FnRef`] can therefore only ever be turned back into a function
/// pointer, never into another pointer-sized type.
pub(crate) trait FnPtr: Copy + sealed::Sealed {
    /// The function's address.
    fn addr(self) -> usize;
}

macro_rules! fn_ptr {
    ($( [$($g:tt)*] $t:ty; )*) => {$(
        impl<$($g)*> sealed::Sealed for $t {}
        impl<$($g)*> FnPtr for $t {
            #[inline]
            fn addr(self) -> usize {
                self as usize
            }
        }
    )*};
}

fn_ptr! {
    [R] fn() -> R;
    [A, R] fn(A) -> R;
    [T: ?Sized, U: ?Sized, R] fn(&mut T, &U) -> R;
    [A, T: ?Sized, D, E, R] fn(A, &T, D, E) -> R;
    [A, B, T: ?Sized, R] fn(A, B, &T) -> R;
}

/// A function of this executable named to another process, its type erased: an offset from
/// the anchor, the build identity it is valid in, and a fingerprint of its type. Turned back
/// into a function only through [`typed`](Self::typed) and [`FnRef::get`], which check both.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct AnyFnRef {
    offset: i64,
    build: u64,
    sig: u64,
}

impl AnyFnRef {
    /// Whether the function lies outside the main executable (a dynamic library, a
    /// plugin): no other process can find it, so starts refuse it before any child runs.
    pub(crate) fn is_foreign(&self) -> bool {
        self.offset == FOREIGN_FN
    }

    /// The same reference, typed as `F` (checked by [`FnRef::get`]).
    pub(crate) fn typed<F: FnPtr>(self) -> FnRef<F> {
        FnRef {
            any: self,
            _f: PhantomData,
        }
    }

    /// The offset and type fingerprint, for frames of a channel whose peer is known to run
    /// this very executable (a pool worker: its bootstrap checked the build identity).
    pub(crate) fn to_wire(self) -> (i64, u64) {
        (self.offset, self.sig)
    }

    /// Rebuilds a reference sent with [`to_wire`](Self::to_wire).
    pub(crate) fn from_wire(offset: i64, sig: u64) -> AnyFnRef {
        AnyFnRef {
            offset,
            build: build_id(),
            sig,
        }
    }

    /// All three words (to keep in shared memory).
    pub(crate) fn to_words(self) -> [u64; 3] {
        [self.offset as u64, self.build, self.sig]
    }

    /// Rebuilds a reference from [`to_words`](Self::to_words).
    pub(crate) fn from_words(w: [u64; 3]) -> AnyFnRef {
        AnyFnRef {
            offset: w[0] as i64,
            build: w[1],
            sig: w[2],
        }
    }
}

/// A function of type `F` of this executable, named to another process (see the module
/// docs). Made from a function pointer with [`of`](Self::of); turned back into one with
/// [`get`](Self::get), which checks that the receiving process runs the same executable and
/// that the type is the same.
pub(crate) struct FnRef<F> {
    any: AnyFnRef,
    _f: PhantomData<fn() -> F>,
}

impl<F> Clone for FnRef<F> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<F> Copy for FnRef<F> {}

impl<F> std::fmt::Debug for FnRef<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.any.fmt(f)
    }
}

impl<F: FnPtr> FnRef<F> {
    /// Names `f`. A function outside the main executable gives a reference that
    /// [`is_foreign`](Self::is_foreign) and never resolves.
    pub(crate) fn of(f: F) -> FnRef<F> {
        FnRef {
            any: AnyFnRef {
                offset: user_offset_of(f.addr()),
                build: build_id(),
                sig: type_sig::<F>(),
            },
            _f: PhantomData,
        }
    }

    /// The function, if this process runs the executable the reference was made in and
    /// the reference was made for type `F`.
    pub(crate) fn get(&self) -> Option<F> {
        let AnyFnRef { offset, build, sig } = self.any;
        if offset == FOREIGN_FN || build != build_id() || sig != type_sig::<F>() {
            return None;
        }
        if std::mem::size_of::<F>() != std::mem::size_of::<usize>() {
            return None;
        }
        let addr = anchor_addr().wrapping_add(offset as usize);
        // SAFETY: `F` is a function pointer type (`FnPtr` is sealed and implemented in this
        // module for function pointer types only) of pointer size (checked above). The
        // reference was made by `of` from a function of type `F` (same type fingerprint) in
        // an executable with the same identity (same file, same layout), where that
        // function lay `offset` bytes from the anchor; so does it here, in this process.
        Some(unsafe { std::mem::transmute_copy::<usize, F>(&addr) })
    }
}

impl<F> FnRef<F> {
    /// Whether the function lies outside the main executable (see [`AnyFnRef::is_foreign`]).
    pub(crate) fn is_foreign(&self) -> bool {
        self.any.is_foreign()
    }

    /// The same reference with its type erased (for a channel that does not know it).
    pub(crate) fn erase(self) -> AnyFnRef {
        self.any
    }
}

impl<F> serde::Serialize for FnRef<F> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.any.serialize(s)
    }
}

impl<'de, F> serde::Deserialize<'de> for FnRef<F> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(FnRef {
            any: AnyFnRef::deserialize(d)?,
            _f: PhantomData,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn functions_of_the_executable_are_inside_and_libc_is_not() {
        assert!(in_executable(anchor_addr()));
        assert_ne!(
            user_offset_of(anchor_b as fn() -> usize as usize),
            FOREIGN_FN
        );
        // A function of the C library (a shared object) is refused.
        let strlen = libc::strlen as unsafe extern "C" fn(*const libc::c_char) -> usize as usize;
        assert!(!in_executable(strlen));
        assert_eq!(user_offset_of(strlen), FOREIGN_FN);
        assert!(!in_executable(libc::abs as *const () as usize));
    }

    fn double(x: u32) -> u32 {
        x * 2
    }

    #[test]
    fn a_reference_resolves_to_its_function_and_checks_type_and_build() {
        let r = FnRef::of(double as fn(u32) -> u32);
        assert!(!r.is_foreign());
        assert_eq!(r.get().map(|f| f(21)), Some(42));
        // Through its wire and shared-memory forms.
        let (o, s) = r.erase().to_wire();
        assert_eq!(
            AnyFnRef::from_wire(o, s)
                .typed::<fn(u32) -> u32>()
                .get()
                .map(|f| f(2)),
            Some(4)
        );
        let w = r.erase().to_words();
        assert_eq!(
            AnyFnRef::from_words(w)
                .typed::<fn(u32) -> u32>()
                .get()
                .map(|f| f(3)),
            Some(6)
        );
        // Another type: refused.
        assert!(r.erase().typed::<fn(u64) -> u64>().get().is_none());
        // Another build: refused.
        let mut w = r.erase().to_words();
        w[1] ^= 1;
        assert!(AnyFnRef::from_words(w)
            .typed::<fn(u32) -> u32>()
            .get()
            .is_none());
    }
}
