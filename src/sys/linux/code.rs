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

/// Turns an offset received from the parent back into a function pointer of type `F`.
///
/// Returns `None` unless `build` is this executable's [`build_id`] and `sig` is
/// [`type_sig::<F>()`](type_sig): only then is `offset` known to name a function of type `F`
/// in this very binary.
pub(crate) fn fn_at<F: Copy>(offset: i64, build: u64, sig: u64) -> Option<F> {
    if build != build_id() || sig != type_sig::<F>() {
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
