//! Descriptors registered with tokio's reactor (the `tokio` feature).

use std::io;
use std::os::fd::OwnedFd;

use tokio::io::{unix::AsyncFd, Interest};

/// Registers `fd` with the current tokio runtime's reactor for readability. Must be called
/// inside a tokio runtime with I/O enabled.
pub(crate) fn register_readable(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: an `OwnedFd` owns an open descriptor, closes it only when dropped (so not
    // before the `AsyncFd` that owns it is), and its `as_raw_fd` always returns that one
    // descriptor: what `register_with_interest` asks of its argument.
    unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.map_err(io::Error::from)
}
