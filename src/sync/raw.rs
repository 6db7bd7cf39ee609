//! The robust mutex under [`Lock`](super::Lock), [`RLock`](super::RLock), `Value`, the
//! barrier, and whatever else needs a lock in a [`Segment`]: the crate's one robust mutex
//! ([`crate::ipc::mutex`]) at a fixed place in a segment.
//!
//! Layout ([`MUTEX_SIZE`] bytes, 8-aligned): the `u32` lock word, the `u32` parking word,
//! the `u64` owner record.

use std::time::{Duration, Instant};

use crate::ipc::mutex::RobustMutex;
use crate::ipc::segment::Segment;
use crate::sys::memfd::MutexWords;

pub(crate) use crate::ipc::mutex::Acquired;

pub(crate) use crate::ipc::mutex::MUTEX_SIZE;
const _: () = assert!(std::mem::size_of::<MutexWords>() == MUTEX_SIZE);
/// How often a blocked waiter of something other than the mutex (the barrier) checks that
/// the processes it waits for are alive.
pub(crate) const CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// The robust mutex at a fixed place in a segment (see the module docs).
pub(crate) struct RawMutex<'a>(RobustMutex<'a>);

impl<'a> RawMutex<'a> {
    /// The mutex at data offset `off` (8-aligned) of `seg`.
    #[inline]
    pub(crate) fn at(seg: &'a Segment, off: usize) -> RawMutex<'a> {
        let w = seg.atomic::<MutexWords>(off);
        RawMutex(RobustMutex::new(&w.word, &w.park, &w.owner))
    }

    /// Takes the lock if it is free, without waiting. A lock whose holder died is taken
    /// over ([`Acquired::OwnerDied`]).
    #[inline]
    pub(crate) fn try_lock(&self) -> Acquired {
        self.0.try_lock()
    }

    /// Takes the lock, waiting until `deadline` (for ever if `None`).
    #[inline]
    pub(crate) fn lock(&self, deadline: Option<Instant>) -> Acquired {
        self.0.lock(deadline)
    }

    /// Releases the lock, whoever holds it. Returns false if it was not locked.
    #[inline]
    pub(crate) fn unlock(&self) -> bool {
        self.0.unlock()
    }

    /// The kernel thread id of the lock's holder, 0 if free.
    #[inline]
    pub(crate) fn holder_tid(&self) -> u32 {
        self.0.holder_tid()
    }

    /// Is the lock held by the calling thread?
    #[inline]
    pub(crate) fn held_here(&self) -> bool {
        self.0.held_by_me()
    }
}

pub(crate) use crate::sys::deadline;
