//! Cross-process building blocks on words in shared memory, used by the queues' ring and
//! the pipes' lanes: the crate's robust mutex ([`crate::ipc::mutex`]) as a guard, and a
//! bounded spin-then-futex wait with a "sleeping" flag so that the busy path makes no
//! system call.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::*};
use std::time::{Duration, Instant};

use crate::ipc::mutex::{Acquired, RobustMutex};
use crate::sys::futex;

/// Longest single futex sleep of [`wait_while`]: how soon a dead peer (that could not wake
/// us) is noticed by a wait for data.
pub(crate) const SLICE: Duration = Duration::from_millis(100);
/// How long a waiter looks again without sleeping before it sleeps.
pub(crate) const SPIN: Duration = Duration::from_micros(20);

/// Whether a waiter that looks again and again yields the processor between looks, instead
/// of only pausing the core: in the processes of an MPI job (started by `mpirun`/`srun`,
/// whose rank variables their workers inherit). There the ranks often outnumber the cores
/// (`--oversubscribe`), and MPI keeps every rank busy looking for messages: a waiter that
/// holds its core for its whole look keeps the very peer it waits for from running.
pub(crate) fn yield_between_looks() -> bool {
    static YIELD: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *YIELD.get_or_init(crate::identity::mpi_launched)
}

/// The next sleep towards `deadline` (`None`: none), at most `slice` long; `None` if the
/// deadline has passed.
pub(crate) fn next_slice(deadline: Option<Instant>, slice: Duration) -> Option<Duration> {
    match deadline {
        None => Some(slice),
        Some(d) => {
            let now = Instant::now();
            (now < d).then(|| (d - now).min(slice))
        }
    }
}

/// How a lock was obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Got {
    Clean,
    /// The previous holder died holding it.
    OwnerDied,
}

/// Holds a lock until dropped.
pub(crate) struct Guard<'a> {
    m: RobustMutex<'a>,
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        self.m.unlock();
    }
}

/// Takes the robust mutex made of the lock `word`, the parking word `park` and the owner
/// record `owner` (see
/// [`crate::ipc::mutex`]), waiting until `deadline` (`None`: for ever). `None` if the
/// deadline passed. A past deadline still takes a free lock or one whose holder died.
pub(crate) fn lock<'a>(
    word: &'a AtomicU32,
    park: &'a AtomicU32,
    owner: &'a AtomicU64,
    deadline: Option<Instant>,
) -> Option<(Guard<'a>, Got)> {
    let m = RobustMutex::new(word, park, owner);
    let got = match m.lock(deadline) {
        Acquired::Clean => Got::Clean,
        Acquired::OwnerDied => Got::OwnerDied,
        Acquired::No => return None,
    };
    Some((Guard { m }, got))
}

/// Whether the lock `word` is free, or held by a process that is gone.
pub(crate) fn lock_idle(word: &AtomicU32, park: &AtomicU32, owner: &AtomicU64) -> bool {
    RobustMutex::new(word, park, owner).idle()
}

/// Outcome of one bounded wait.
pub(crate) enum Waited {
    /// The condition may have changed: look again.
    Again,
    /// The deadline passed.
    TimedOut,
}

/// Waits while `blocked()` holds: a spin of [`SPIN`], then one futex sleep of at most a
/// [`SLICE`] on the sequence word `seq`, after raising the flag `sleeping` (which tells the
/// other side to bump `seq` and wake us: see [`wake`]).
pub(crate) fn wait_while(
    seq: &AtomicU32,
    sleeping: &AtomicU32,
    blocked: impl Fn() -> bool,
    deadline: Option<Instant>,
) -> Waited {
    let t0 = Instant::now();
    let mut i = 0u32;
    while blocked() {
        i += 1;
        if i.is_multiple_of(16) {
            let e = t0.elapsed();
            if e > SPIN {
                break;
            }
            if deadline.is_some_and(|d| t0 + e >= d) {
                return Waited::TimedOut;
            }
        }
        std::hint::spin_loop();
    }
    if !blocked() {
        return Waited::Again;
    }
    let s = seq.load(SeqCst);
    sleeping.store(1, SeqCst);
    if !blocked() {
        sleeping.store(0, Relaxed);
        return Waited::Again;
    }
    let Some(slice) = next_slice(deadline, SLICE) else {
        sleeping.store(0, Relaxed);
        return Waited::TimedOut;
    };
    futex::wait(seq, s, Some(slice));
    sleeping.store(0, Relaxed);
    Waited::Again
}

/// Wakes a waiter of [`wait_while`] on `seq`, if its `sleeping` flag is up. The flag is
/// lowered here, by the one waker that found it up: until the woken waiter runs (and
/// raises it again if it must sleep again), later calls make no system call.
#[inline]
pub(crate) fn wake(seq: &AtomicU32, sleeping: &AtomicU32) {
    if sleeping.load(SeqCst) != 0 && sleeping.swap(0, SeqCst) != 0 {
        seq.fetch_add(1, SeqCst);
        futex::wake(seq, 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_wake_per_sleep_then_none_until_the_waiter_sleeps_again() {
        let (seq, sleeping) = (AtomicU32::new(0), AtomicU32::new(1));
        wake(&seq, &sleeping);
        wake(&seq, &sleeping);
        wake(&seq, &sleeping);
        assert_eq!(seq.load(SeqCst), 1, "one wake-up for one sleep");
        assert_eq!(sleeping.load(SeqCst), 0, "the waker lowered the flag");
        // Asleep again (the flag raised again): the next call wakes it.
        sleeping.store(1, SeqCst);
        wake(&seq, &sleeping);
        assert_eq!(seq.load(SeqCst), 2);
    }
}
