//! Naming a function of this binary to another process: as an offset from a fixed anchor,
//! checked against a build identity and the function's type before it is called.
//!
//! Position-independent executables are loaded at a random base, but the distance between
//! two functions of the same binary is fixed. The parent sends that distance; the child adds
//! its own anchor's address. The child is always the same file (`/proc/self/exe` of the
//! parent, or a fork of it), and [`build_id`] checks that, so the address it computes is the
//! same function the parent named.

use std::hash::{Hash, Hasher};
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
pub(crate) fn type_sig<T: ?Sized>() -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::any::type_name::<T>().hash(&mut h);
    h.finish()
}

/// The position of function pointer `addr` relative to the anchor.
pub(crate) fn offset_of(addr: usize) -> i64 {
    addr.wrapping_sub(anchor_addr()) as i64
}

/// The offset that names no function: what [`user_offset_of`] gives for a function that is
/// not in the main executable. Launches and pool jobs refuse it before any child runs.
pub(crate) const FOREIGN_FN: i64 = i64::MIN;

/// [`offset_of`] for a function the user handed us, or [`FOREIGN_FN`] if `addr` is not in
/// the main executable's mapped file: a function of a dynamic library or a plugin lives at
/// an address that only this process's loader chose, so a child cannot find it from the
/// anchor of the executable.
pub(crate) fn user_offset_of(addr: usize) -> i64 {
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

/// Turns an offset received from the parent back into a function pointer of type `F`.
///
/// Returns `None` unless `build` is this executable's [`build_id`] and `sig` is
/// [`type_sig::<F>()`](type_sig): only then is `offset` known to name a function of type `F`
/// in this very binary.
pub(crate) fn fn_at<F: Copy>(offset: i64, build: u64, sig: u64) -> Option<F> {
    if offset == FOREIGN_FN || build != build_id() || sig != type_sig::<F>() {
        return None;
    }
    if std::mem::size_of::<F>() != std::mem::size_of::<usize>() {
        return None;
    }
    let addr = anchor_addr().wrapping_add(offset as usize);
    // SAFETY: the parent computed `offset` with `offset_of` from a function pointer whose
    // type has the same name as `F` (checked through `sig`), in an executable with the same
    // identity (checked through `build`): the same file, so the same code at the same
    // distance from the anchor. `F` is pointer-sized (checked above) and is a fn pointer type
    // by the callers' construction.
    Some(unsafe { std::mem::transmute_copy::<usize, F>(&addr) })
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
        assert!(
            fn_at::<fn() -> usize>(FOREIGN_FN, build_id(), type_sig::<fn() -> usize>()).is_none()
        );
    }
}
