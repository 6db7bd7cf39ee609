//! Cross-process building blocks on words in shared memory, used by the queues' ring and
//! the pipes' lanes: a lock that survives its holder's death, and a bounded
//! spin-then-futex wait with a "sleeping" flag so that the busy path makes no system call.
//!
//! A lock word holds its holder's pid (plus a "someone waits" bit); the holder also records
//! its full identity (pid + start time) in an `owner` word, so that a waiter that finds the
//! holder gone — even if its pid was reused since — takes the lock over.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::*};
use std::time::{Duration, Instant};

use crate::sys::futex;

/// The "someone waits" bit of a lock word; the rest is the holder's pid.
const CONTENDED: u32 = 1 << 31;
/// Longest single futex sleep: how soon a dead peer (that could not wake us) is noticed.
pub(crate) const SLICE: Duration = Duration::from_millis(100);
/// How long a waiter looks again without sleeping before it sleeps.
pub(crate) const SPIN: Duration = Duration::from_micros(20);

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

/// Holds a lock word until dropped.
pub(crate) struct Guard<'a> {
    word: &'a AtomicU32,
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        if self.word.swap(0, Release) & CONTENDED != 0 {
            futex::wake(self.word, 1);
        }
    }
}

fn my_pid() -> u32 {
    futex::ident_pid(futex::current_ident())
}

/// Takes the lock `word` (holder identity recorded in `owner`), waiting until `deadline`
/// (`None`: for ever). `None` if the deadline passed.
pub(crate) fn lock<'a>(
    word: &'a AtomicU32,
    owner: &AtomicU64,
    deadline: Option<Instant>,
) -> Option<(Guard<'a>, Got)> {
    let me = my_pid();
    let take = |got: Got| {
        owner.store(futex::current_ident(), Relaxed);
        Some((Guard { word }, got))
    };
    if word.compare_exchange(0, me, Acquire, Relaxed).is_ok() {
        return take(Got::Clean);
    }
    // Brief spin: the holder usually lets go within a microsecond or two.
    let t0 = Instant::now();
    let mut i = 0u32;
    loop {
        let w = word.load(Relaxed);
        if w == 0 && word.compare_exchange(0, me, Acquire, Relaxed).is_ok() {
            return take(Got::Clean);
        }
        i += 1;
        if i.is_multiple_of(32) && t0.elapsed() > SPIN {
            break;
        }
        std::hint::spin_loop();
    }
    // The holder's liveness is checked after every slice that passed without a wake-up.
    let mut check_owner = false;
    loop {
        let w = word.load(Relaxed);
        if w == 0 {
            // Others may be asleep on the word: keep the contended bit so that our release
            // wakes one.
            if word
                .compare_exchange(0, me | CONTENDED, Acquire, Relaxed)
                .is_ok()
            {
                return take(Got::Clean);
            }
            continue;
        }
        if w & CONTENDED == 0
            && word
                .compare_exchange(w, w | CONTENDED, Relaxed, Relaxed)
                .is_err()
        {
            continue;
        }
        let w = w | CONTENDED;
        if check_owner {
            let pid = w & !CONTENDED;
            if pid != me && holder_gone(pid, owner) {
                if word
                    .compare_exchange(w, me | CONTENDED, Acquire, Relaxed)
                    .is_ok()
                {
                    return take(Got::OwnerDied);
                }
                continue;
            }
        }
        let slice = next_slice(deadline, SLICE)?;
        check_owner = futex::wait(word, w, Some(slice)) == futex::Wake::TimedOut;
    }
}

fn holder_gone(pid: u32, owner: &AtomicU64) -> bool {
    let ident = owner.load(Relaxed);
    let ident = (futex::ident_pid(ident) == pid).then_some(ident);
    futex::process_gone(pid, ident)
}

/// Whether the lock `word` is free, or held by a process that is gone.
pub(crate) fn lock_idle(word: &AtomicU32, owner: &AtomicU64) -> bool {
    let w = word.load(SeqCst);
    w == 0 || holder_gone(w & !CONTENDED, owner)
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

/// Wakes a waiter of [`wait_while`] on `seq`, if its `sleeping` flag is up.
#[inline]
pub(crate) fn wake(seq: &AtomicU32, sleeping: &AtomicU32) {
    if sleeping.load(SeqCst) != 0 {
        seq.fetch_add(1, SeqCst);
        futex::wake(seq, 1);
    }
}
