//! The bell: how an async task waits for a change in shared memory (an item in a queue's
//! ring, an event's flag) without a thread, and without looking again and again.
//!
//! Shared words change without anything the kernel could report on a descriptor, and a
//! futex cannot be waited on by an async runtime. So each object that async code may wait
//! on (with the `tokio` feature) carries a *bell*: an event counter (`eventfd(2)`) made with
//! the object and carried with its handle to every process, and an *armed* word in the
//! object's shared memory.
//!
//! * A waiting task raises the armed word, then tries the non-blocking operation (`try_get`,
//!   `is_set`, ...), and only if that finds nothing waits for the bell's descriptor to become
//!   readable, through tokio's reactor (`tokio::io::unix::AsyncFd`).
//! * Whoever changes the object (a `put`, a `get`, a `set`), in any process, looks at the
//!   armed word after its change is visible and, if it is raised, lowers it and rings the
//!   bell (adds 1 to the counter): one system call, only while someone waits. Both sides
//!   use sequentially consistent operations (the waiter: raise, then look; the changer:
//!   publish, then look at the word), so either the waiter sees the change or the changer
//!   sees the raised word: no wake-up is lost.
//! * The counter is never read back. An edge-triggered `epoll` (tokio's) is woken by every
//!   ring, readable or not before, so every task that waits on any copy of the bell, in any
//!   process, wakes, tries again, and raises the word again if it must go on waiting.
//!   Nobody can "take" a wake-up meant for another.
//! * The waiting itself is cut into slices of [`SLICE`](crate::ipc::wait::SLICE) (100 ms),
//!   like every other wait of the crate: a changer killed between its change and its ring,
//!   or a lock holder that died (whose lock the next non-blocking try takes over), delays a
//!   waiter by at most a slice, never for ever.
//!
//! Cancel safety comes from the shape: the only step that changes anything is the
//! non-blocking operation, which runs whole inside one poll of the future; a future
//! dropped while it waits has taken nothing and leaves nothing behind but its
//! registration, which the drop removes.
//!
//! Without the `tokio` feature a bell is empty: no descriptor, and [`Bell::ring_if_armed`]
//! compiles to nothing, so the queues' fast paths do not pay for it.

#[cfg(feature = "tokio")]
use std::os::fd::AsFd;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::atomic::AtomicU32;
#[cfg(feature = "tokio")]
use std::sync::atomic::Ordering::SeqCst;

use crate::Result;
#[cfg(feature = "tokio")]
use crate::{sys, Error};

/// An event counter rung when an object waited on by async code changes (see the module
/// docs). Empty without the `tokio` feature.
pub(crate) struct Bell {
    #[cfg(feature = "tokio")]
    fd: OwnedFd,
}

#[cfg(feature = "tokio")]
impl Bell {
    /// A new bell for a new object.
    pub(crate) fn new() -> Result<Bell> {
        Ok(Bell {
            fd: sys::eventfd().map_err(Error::Io)?,
        })
    }

    /// The descriptor that travels with the object's handle.
    pub(crate) fn fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.fd.as_fd())
    }

    /// The bell of a handle received from another process (`fd`: what [`fd`](Self::fd)
    /// gave there; the same executable, so the same features, sent it).
    pub(crate) fn from_fd(fd: Option<OwnedFd>) -> Result<Bell> {
        match fd {
            Some(fd) => Ok(Bell { fd }),
            None => Err(Error::codec("a handle arrived without its bell descriptor")),
        }
    }

    /// Rings the bell if a waiter raised `armed` (lowering it). Call it after the change
    /// is published with a sequentially consistent store (or a lock release after one).
    #[inline]
    pub(crate) fn ring_if_armed(&self, armed: &AtomicU32) {
        if armed.load(SeqCst) != 0 && armed.swap(0, SeqCst) != 0 {
            sys::eventfd_add(self.fd.as_fd());
        }
    }

    /// Rings the bell whether or not anyone waits (for rare changes: shutdown, close).
    pub(crate) fn ring(&self) {
        sys::eventfd_add(self.fd.as_fd());
    }
}

/// Without the `tokio` feature: nothing to carry, nothing to ring.
#[cfg(not(feature = "tokio"))]
impl Bell {
    pub(crate) fn new() -> Result<Bell> {
        Ok(Bell {})
    }

    pub(crate) fn fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }

    pub(crate) fn from_fd(fd: Option<OwnedFd>) -> Result<Bell> {
        drop(fd);
        Ok(Bell {})
    }

    #[inline(always)]
    pub(crate) fn ring_if_armed(&self, _armed: &AtomicU32) {}

    pub(crate) fn ring(&self) {}
}

#[cfg(feature = "tokio")]
impl Bell {
    /// Waits, inside a tokio runtime, until `attempt` (the non-blocking operation on the
    /// object whose armed word is `armed`) gives an outcome: [`wait_until`] on this bell.
    pub(crate) async fn wait<T>(
        &self,
        armed: &AtomicU32,
        attempt: impl FnMut() -> Option<Result<T>>,
    ) -> Result<T> {
        wait_until(self.fd.as_fd(), || arm(armed), attempt).await
    }
}

/// Raises `armed` before a waiter looks (see the module docs).
#[cfg(feature = "tokio")]
pub(crate) fn arm(armed: &AtomicU32) {
    armed.store(1, SeqCst);
}

/// Waits, inside a tokio runtime, until `attempt` gives an outcome: `attempt` is the
/// non-blocking operation (`None`: nothing yet), tried at once, and again each time `fd`
/// becomes readable or a [`SLICE`](crate::ipc::wait::SLICE) passes; `arm` runs before each
/// try after the first (for a bell, [`arm`] on its armed word). `fd` is duplicated and
/// registered with the runtime while the future waits; dropping the future removes it.
#[cfg(feature = "tokio")]
pub(crate) async fn wait_until<T>(
    fd: BorrowedFd<'_>,
    arm: impl Fn(),
    attempt: impl FnMut() -> Option<Result<T>>,
) -> Result<T> {
    wait_sliced(fd, arm, attempt, crate::ipc::wait::SLICE).await
}

/// [`wait_until`] with slices of `slice`.
#[cfg(feature = "tokio")]
async fn wait_sliced<T>(
    fd: BorrowedFd<'_>,
    arm: impl Fn(),
    mut attempt: impl FnMut() -> Option<Result<T>>,
    slice: std::time::Duration,
) -> Result<T> {
    if let Some(r) = attempt() {
        return r;
    }
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(Error::invalid(
            "multiproc's async methods must be awaited inside a tokio runtime",
        ));
    }
    // A duplicate: the same descriptor may be registered by several waiting futures.
    let fd = sys::dup_fd(fd).map_err(Error::Io)?;
    let fd = sys::aio::register_readable(fd).map_err(Error::Io)?;
    loop {
        arm();
        if let Some(r) = attempt() {
            return r;
        }
        match tokio::time::timeout(slice, fd.readable()).await {
            Ok(Ok(mut ready)) => ready.clear_ready(),
            Ok(Err(e)) => return Err(Error::Io(e)),
            Err(_) => {} // a slice passed: look again
        }
    }
}

#[cfg(all(test, feature = "tokio"))]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering::Relaxed;

    #[test]
    fn a_ring_reaches_every_waiter_and_only_armed_bells_ring() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let bell = Bell::new().unwrap();
        let armed = AtomicU32::new(0);
        let flag = AtomicU32::new(0);
        // Slices far longer than the test's limit: only the bell can wake the waiters.
        let slice = std::time::Duration::from_secs(3600);
        rt.block_on(async {
            let look = || (flag.load(SeqCst) != 0).then_some(Ok(()));
            let a = wait_sliced(bell.fd().unwrap(), || arm(&armed), look, slice);
            let b = wait_sliced(bell.fd().unwrap(), || arm(&armed), look, slice);
            let set = async {
                // Both waiters are registered and armed once this runs (one thread).
                tokio::task::yield_now().await;
                assert_eq!(armed.load(Relaxed), 1);
                flag.store(1, SeqCst);
                bell.ring_if_armed(&armed);
                assert_eq!(armed.load(Relaxed), 0);
            };
            let all = async { tokio::join!(a, b, set) };
            let (ra, rb, ()) = tokio::time::timeout(std::time::Duration::from_secs(60), all)
                .await
                .expect("a waiter missed the bell");
            ra.unwrap();
            rb.unwrap();
        });
        // Each waiter raised the word once more before it found the flag set: the next
        // change rings once, for nobody, and lowers it.
        assert_eq!(armed.load(Relaxed), 1);
        bell.ring_if_armed(&armed);
        assert_eq!(armed.load(Relaxed), 0);
    }
}
