//! The robust mutex under [`Lock`](super::Lock), [`RLock`](super::RLock), `Value`, the
//! barrier, and whatever else needs a lock in shared memory.
//!
//! Layout (16 bytes, 8-aligned, anywhere in a [`Segment`]):
//! - a `u32` futex word: 0 = free, else the holder's pid, with the top bit set when
//!   someone may be sleeping on it;
//! - a `u64` holding the holder's identity (pid and process start time), written just after
//!   taking the lock, so that a waiter can tell a dead holder from a live one even if the
//!   pid has been reused.
//!
//! Taking a free lock is one compare-and-swap plus one store; releasing an uncontended one
//! is one swap: no system call. Waiters sleep on the futex in slices of
//! [`CHECK_INTERVAL`]; after each slice they check that the holder's process still exists,
//! and if it died they take the lock over and learn it through [`Acquired::OwnerDied`].

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::shm::Segment;
use crate::sys::futex;

/// Bytes a [`RawMutex`] takes in a segment.
pub(crate) const MUTEX_SIZE: usize = 16;
const WAITERS: u32 = 1 << 31;
const PID_MASK: u32 = !WAITERS;
/// How often a blocked waiter checks that the lock's holder is still alive.
pub(crate) const CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// What an attempt to take the lock gave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Acquired {
    /// The caller holds the lock.
    Clean,
    /// The caller holds the lock, taken over from a holder that died holding it.
    OwnerDied,
    /// Not taken: busy (try) or the deadline passed.
    No,
}

/// A robust process-shared mutex at a fixed place in a segment (see the module docs).
pub(crate) struct RawMutex<'a> {
    word: &'a AtomicU32,
    owner: &'a AtomicU64,
}

impl<'a> RawMutex<'a> {
    /// The mutex at data offset `off` (8-aligned) of `seg`.
    #[inline]
    pub(crate) fn at(seg: &'a Segment, off: usize) -> RawMutex<'a> {
        RawMutex {
            word: seg.u32(off),
            owner: seg.u64(off + 8),
        }
    }

    /// Takes the lock if it is free, without waiting. A lock held by a dead process is
    /// taken over ([`Acquired::OwnerDied`]).
    #[inline]
    pub(crate) fn try_lock(&self) -> Acquired {
        let ident = futex::current_ident();
        let me = futex::ident_pid(ident);
        if self
            .word
            .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            self.owner.store(ident, Ordering::Relaxed);
            return Acquired::Clean;
        }
        self.try_take_over(ident)
    }

    /// Takes the lock, waiting until `deadline` (for ever if `None`).
    #[inline]
    pub(crate) fn lock(&self, deadline: Option<Instant>) -> Acquired {
        let ident = futex::current_ident();
        let me = futex::ident_pid(ident);
        if self
            .word
            .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            self.owner.store(ident, Ordering::Relaxed);
            return Acquired::Clean;
        }
        self.lock_slow(ident, deadline)
    }

    #[cold]
    fn lock_slow(&self, ident: u64, deadline: Option<Instant>) -> Acquired {
        let me = futex::ident_pid(ident);
        // Spin briefly: a holder on another core often releases within a few hundred ns.
        for _ in 0..64 {
            std::hint::spin_loop();
            let v = self.word.load(Ordering::Relaxed);
            if v == 0
                && self
                    .word
                    .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                self.owner.store(ident, Ordering::Relaxed);
                return Acquired::Clean;
            }
        }
        loop {
            let v = self.word.load(Ordering::Relaxed);
            if v == 0 {
                // Others may be asleep: keep the waiters bit so that our release wakes one.
                if self
                    .word
                    .compare_exchange(0, me | WAITERS, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    self.owner.store(ident, Ordering::Relaxed);
                    return Acquired::Clean;
                }
                continue;
            }
            if v & WAITERS == 0
                && self
                    .word
                    .compare_exchange(v, v | WAITERS, Ordering::Relaxed, Ordering::Relaxed)
                    .is_err()
            {
                continue;
            }
            let Some(slice) = crate::shmsync::next_slice(deadline, CHECK_INTERVAL) else {
                return Acquired::No;
            };
            if futex::wait(self.word, v | WAITERS, Some(slice)) == futex::Wake::TimedOut {
                match self.try_take_over(ident) {
                    Acquired::No => {}
                    got => return got,
                }
            }
        }
    }

    /// If the lock's holder is dead, takes the lock over.
    fn try_take_over(&self, ident: u64) -> Acquired {
        let me = futex::ident_pid(ident);
        let v = self.word.load(Ordering::Relaxed);
        let pid = v & PID_MASK;
        if v == 0 || pid == me {
            return Acquired::No;
        }
        let rec = self.owner.load(Ordering::Relaxed);
        let rec = (futex::ident_pid(rec) == pid).then_some(rec);
        if !futex::process_gone(pid, rec) {
            return Acquired::No;
        }
        // Keep the waiters bit: others may be asleep.
        if self
            .word
            .compare_exchange(v, me | WAITERS, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            self.owner.store(ident, Ordering::Relaxed);
            Acquired::OwnerDied
        } else {
            Acquired::No
        }
    }

    /// Releases the lock, whoever holds it. Returns false if it was not locked.
    #[inline]
    pub(crate) fn unlock(&self) -> bool {
        let prev = self.word.swap(0, Ordering::Release);
        if prev & WAITERS != 0 {
            futex::wake(self.word, 1);
        }
        prev != 0
    }

    /// The pid of the process holding the lock, 0 if free.
    #[inline]
    pub(crate) fn holder_pid(&self) -> u32 {
        self.word.load(Ordering::Relaxed) & PID_MASK
    }

    /// Is the lock held by this process?
    #[inline]
    pub(crate) fn held_here(&self) -> bool {
        self.holder_pid() == futex::ident_pid(futex::current_ident())
    }
}

/// The deadline `timeout` from now (`None` if it is too far to represent).
pub(crate) fn deadline(timeout: Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
}
