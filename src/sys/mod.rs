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
pub(crate) use linux::*;

#[cfg(feature = "mpi")]
pub(crate) mod mpi;
#[cfg(feature = "ndarray")]
pub(crate) mod ndarray;

#[cfg(not(target_os = "linux"))]
compile_error!("multiproc supports Linux only for now (see README's platform table)");
