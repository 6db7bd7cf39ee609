//! The OS layer: every system call and every `unsafe` block of the crate lives below here.
//!
//! One module per operating system (ipc-channel's `platform/os` layout); the rest of the
//! crate calls only the functions re-exported from here. Linux is the first platform.

// Every `unsafe` block says why it is sound.
#![deny(clippy::undocumented_unsafe_blocks)]

#[cfg(target_os = "linux")]
mod linux;
pub(crate) mod plain;
#[cfg(target_os = "linux")]
pub(crate) mod spare;
#[cfg(target_os = "linux")]
pub(crate) use linux::*;

#[cfg(feature = "mpi")]
pub(crate) mod mpi;
#[cfg(feature = "ndarray")]
pub(crate) mod ndarray;

/// The deadline `timeout` from now; `None` if it is too far to represent, which every
/// caller takes as "no deadline" (a timeout of `Duration::MAX` waits for ever rather than
/// overflowing).
pub(crate) fn deadline(timeout: std::time::Duration) -> Option<std::time::Instant> {
    std::time::Instant::now().checked_add(timeout)
}

#[cfg(not(target_os = "linux"))]
compile_error!("multiproc supports Linux only for now (see README's platform table)");
