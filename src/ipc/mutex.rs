//! The crate's one robust, process-shared mutex.
//!
//! A mutex is three words in shared memory ([`MUTEX_SIZE`] bytes, 8-aligned), anywhere in a
//! mapping several processes see:
//!
//! - a `u32` **lock word** in the kernel's priority-inheritance futex format: 0 when free,
//!   else the holder's kernel *thread* id, plus the kernel's "waiters" and "owner died" bits;
//! - a `u32` **parking word**: how many acquirers are parked (low 15 bits), whether one was
//!   woken and has not run yet, and a release sequence (high half);
//! - a `u64` **owner record**: the holder's process identity (pid and start time) while it
//!   holds the lock, 0 once it has left its critical section, or [`RELEASED`].
//!
//! Taking a free lock is one compare-and-swap and one store; releasing an uncontended one
//! is one store, one compare-and-swap and one load: no system call.
//!
//! ## Contention
//!
//! An acquirer that finds the lock taken goes through four phases, each only if the
//! previous one did not get the lock:
//! 1. it spins for [`SPIN`] (a holder on another core lets go within microseconds);
//! 2. it yields its CPU, for up to [`YIELD_SPIN`] (with more runnable threads than cores,
//!    the holder is often waiting for one; where nothing else waits to run this is a spin,
//!    bounded by that time);
//! 3. it **parks**: sleeps on the parking word, and a release that sees a parked
//!    acquirer wakes one, unless one woken earlier has not run yet ([`WOKEN`]). The lock stays free for whoever comes first, as with a plain
//!    futex mutex, so a busy lock keeps its throughput. A parked acquirer asks the kernel
//!    about the holder (`FUTEX_TRYLOCK_PI`) after every [`PARK_SLICE`] without a wake-up,
//!    so a holder's death is seen within that slice;
//! 4. after [`PARK`] in all, it queues in the kernel (`FUTEX_LOCK_PI`). From then on every
//!    release hands the lock to a queued thread, which is slow when it happens often (the
//!    new owner must be scheduled first), but is reached only by locks held for long.
//!    An acquirer that sees threads queued in the kernel does not join them before its own
//!    [`PARK`] has passed: it parks (every release wakes it too). Were it to queue at once,
//!    the kernel's queue would never empty under steady contention, and every release would
//!    stay a hand-over to a sleeping thread long after the long hold that started it.
//!
//! ## A holder that dies
//!
//! The kernel knows which thread owns a PI futex, so a holder's death is seen through the
//! kernel, at once, by everyone:
//! - threads queued in the kernel: when the holder exits, the kernel hands the lock to one
//!   of them immediately; parked ones find out within one [`PARK_SLICE`];
//! - later and non-blocking acquirers (`try_lock`, zero timeouts): the kernel answers
//!   `ESRCH` ("no such owner") on their first attempt, and they take the lock over.
//!
//! Whether the previous holder died *inside* its critical section is told by the owner
//! record: the holder fills it in right after taking the word and clears it right before
//! releasing it, so an acquirer that finds it filled in reports [`Acquired::OwnerDied`]. A
//! holder killed between taking the word and filling in the record (or between clearing it
//! and releasing the word) had no critical section under way, and the next acquirer
//! rightly reports [`Acquired::Clean`].
//!
//! ## Ownership
//!
//! Ownership is per thread, as for Python's `RLock` and a `Value`'s lock: [`held_by_me`]
//! is true only in the thread that took the lock. A plain `Lock` may, as in Python, be
//! released by another thread or process ([`RobustMutex::unlock`] accepts that): when
//! nobody is queued this is immediate; when threads are queued in the kernel on the old
//! holder, the release is recorded as [`RELEASED`] and they take the lock within one
//! [`SLICE`] (the kernel will only hand a PI futex on for its owner).
//!
//! ## Limits
//!
//! Thread ids are those of the caller's pid namespace: processes sharing a lock must share
//! a pid namespace (every process multiproc starts does). If a dead holder's thread id is
//! reused by a new thread before anyone looks at the lock, queued threads find out from
//! the owner record's process identity after one [`SLICE`].
//!
//! [`held_by_me`]: RobustMutex::held_by_me

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::*};
use std::time::{Duration, Instant};

use crate::sys::futex::{self, Pi, PI_OWNER_DIED, PI_TID, PI_WAITERS};

/// Owner record of a lock released by a thread other than its holder while others were
/// queued in the kernel: whoever takes the word next takes it cleanly.
pub(crate) const RELEASED: u64 = u64::MAX;
/// Owner record while a thread takes over a [`RELEASED`] lock.
const CLAIMING: u64 = u64::MAX - 1;
/// Longest single sleep in the kernel: how soon the rare cases that the kernel cannot
/// report (a release by another thread while others were queued, a dead holder's thread
/// id reused) are noticed. A holder's death is not among them.
pub(crate) const SLICE: Duration = Duration::from_millis(100);
/// How long an acquirer spins before it queues in the kernel.
pub(crate) const SPIN: Duration = Duration::from_micros(20);
/// How long an acquirer then yields its CPU (to a holder that may be waiting for one)
/// before it parks.
const YIELD_SPIN: Duration = Duration::from_millis(2);
/// How long an acquirer stays parked (from its first attempt) before it queues in the
/// kernel.
const PARK: Duration = Duration::from_millis(20);
/// Longest single sleep while parked: how soon a parked acquirer sees its holder's death.
const PARK_SLICE: Duration = Duration::from_millis(1);
/// The parking word: the number of parked acquirers in its low 15 bits, [`WOKEN`] above
/// them, a release sequence in its high half.
const PARK_COUNT: u32 = 0x7fff;
/// Set in the parking word by a release that woke a parked acquirer, cleared by that
/// acquirer once it runs: while it is set, releases wake nobody else (the woken one will
/// look at the lock anyway), so a busy lock with parked acquirers costs one wake-up per
/// scheduling of a parked one, not one system call per release.
const WOKEN: u32 = 0x8000;
const PARK_SEQ: u32 = 1 << 16;
/// Bytes a mutex takes in shared memory: the lock word, the parking word, the owner record.
pub(crate) const MUTEX_SIZE: usize = 16;

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

/// The robust mutex made of a lock word and an owner record (see the module docs).
#[derive(Clone, Copy)]
pub(crate) struct RobustMutex<'a> {
    word: &'a AtomicU32,
    park: &'a AtomicU32,
    owner: &'a AtomicU64,
}

impl<'a> RobustMutex<'a> {
    /// The mutex whose lock word is `word`, parking word `park` and owner record `owner`
    /// (laid out as [`MUTEX_SIZE`] bytes: see the module docs).
    #[inline]
    pub(crate) fn new(
        word: &'a AtomicU32,
        park: &'a AtomicU32,
        owner: &'a AtomicU64,
    ) -> RobustMutex<'a> {
        RobustMutex { word, park, owner }
    }

    /// Takes the lock if that needs no waiting. A lock whose holder died is taken over
    /// ([`Acquired::OwnerDied`]); the kernel tells, so this is seen at once.
    #[inline]
    pub(crate) fn try_lock(&self) -> Acquired {
        let (tid, ident) = futex::current_thread();
        if self.word.compare_exchange(0, tid, Acquire, Relaxed).is_ok() {
            return self.record(ident, 0);
        }
        self.try_lock_slow(tid)
    }

    #[cold]
    fn try_lock_slow(&self, tid: u32) -> Acquired {
        if let Some(got) = self.claim_released(tid) {
            return got;
        }
        let v = self.word.load(Relaxed);
        if v & PI_TID == tid {
            return Acquired::No; // not recursive: ours already
        }
        match futex::trylock_pi(self.word) {
            Pi::Locked => self.taken_from_kernel(),
            Pi::OwnerGone => self.take_over(tid).unwrap_or(Acquired::No),
            _ => Acquired::No,
        }
    }

    /// Takes the lock, waiting until `deadline` (for ever if `None`). A zero or past
    /// deadline still takes a free lock, or one whose holder died.
    #[inline]
    pub(crate) fn lock(&self, deadline: Option<Instant>) -> Acquired {
        let (tid, ident) = futex::current_thread();
        if self.word.compare_exchange(0, tid, Acquire, Relaxed).is_ok() {
            return self.record(ident, 0);
        }
        self.lock_slow(tid, deadline)
    }

    #[cold]
    fn lock_slow(&self, tid: u32, deadline: Option<Instant>) -> Acquired {
        // Spin briefly: a holder on another core usually lets go within microseconds.
        let t0 = Instant::now();
        let mut i = 0u32;
        loop {
            let v = self.word.load(Relaxed);
            if v == 0 && self.word.compare_exchange(0, tid, Acquire, Relaxed).is_ok() {
                return self.taken(0);
            }
            if v & PI_TID == tid || v & PI_WAITERS != 0 {
                break; // our own (a deadlock to wait out), or others already queue
            }
            i += 1;
            if i.is_multiple_of(32) {
                let spent = t0.elapsed();
                if spent > YIELD_SPIN {
                    break;
                }
                if spent > SPIN {
                    // The holder is probably not running (more runnable threads than
                    // cores): give it the CPU.
                    std::thread::yield_now();
                    continue;
                }
            }
            std::hint::spin_loop();
        }
        if let Some(got) = self.park_until(tid, t0 + PARK, deadline) {
            return got;
        }
        loop {
            if let Some(got) = self.claim_released(tid) {
                return got;
            }
            let slice_end = Instant::now() + SLICE;
            let until = match deadline {
                Some(d) if d <= slice_end => Some(d),
                _ => Some(slice_end),
            };
            match futex::lock_pi(self.word, until) {
                Pi::Locked => return self.taken_from_kernel(),
                Pi::OwnerGone => {
                    if let Some(got) = self.take_over(tid) {
                        return got;
                    }
                }
                Pi::Busy => {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Acquired::No;
                    }
                    // A slice passed: the cases the kernel cannot report.
                    if self.holder_gone_by_record() {
                        if let Some(got) = self.take_over(tid) {
                            return got;
                        }
                    }
                }
                Pi::Deadlock | Pi::Inconsistent => {
                    // Ours already (a non-recursive lock taken twice: only a release by
                    // another thread ends this), or the kernel's record is stale: look again
                    // after a short sleep.
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Acquired::No;
                    }
                    let v = self.word.load(Relaxed);
                    let nap = deadline
                        .map(|d| d.saturating_duration_since(Instant::now()))
                        .unwrap_or(Duration::MAX)
                        .min(Duration::from_millis(1));
                    futex::wait(self.word, v, Some(nap));
                }
            }
        }
    }

    /// The park phase (see the module docs): sleeps on the parking word, not in the
    /// kernel's PI queue, so that a release lets anyone take the lock (no hand-over to a
    /// sleeping thread), until `until`. Every [`PARK_SLICE`] without a wake-up it asks the
    /// kernel whether the holder still exists. `Some` when the lock was taken or the
    /// deadline passed; `None` to go on to the PI queue.
    fn park_until(&self, tid: u32, until: Instant, deadline: Option<Instant>) -> Option<Acquired> {
        self.park.fetch_add(1, SeqCst);
        let got = self.parked(tid, until, deadline);
        let p = self.park.fetch_sub(1, SeqCst);
        if p & WOKEN != 0 {
            // A wake-up may have been meant for us (we leave without having cleared it):
            // clear it, and pass it on, so that the others do not wait for their slice.
            self.park.fetch_and(!WOKEN, SeqCst);
            if p & PARK_COUNT > 1 {
                self.wake_parked();
            }
        }
        got
    }

    /// [`park_until`](Self::park_until)'s loop, while counted as parked.
    fn parked(&self, tid: u32, until: Instant, deadline: Option<Instant>) -> Option<Acquired> {
        loop {
            if let Some(got) = self.claim_released(tid) {
                return Some(got);
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Some(self.try_lock_slow(tid));
            }
            if now >= until {
                return None;
            }
            // The sequence is read before the word, and a releaser frees the word before it
            // reads the count (all sequentially consistent): either we see the word free,
            // or the releaser sees us counted and moves the sequence, so the sleep below
            // cannot miss its release.
            let seen = self.park.load(SeqCst);
            let v = self.word.load(SeqCst);
            if v == 0 {
                if self.word.compare_exchange(0, tid, Acquire, Relaxed).is_ok() {
                    return Some(self.taken(0));
                }
                continue;
            }
            if v & PI_TID == tid {
                // Ours (a deadlock to wait out): the PI queue it is.
                return None;
            }
            // Others may queue in the kernel (`PI_WAITERS`): every release then hands the
            // lock to one of them, and a release also wakes us. We do not join them: a
            // newcomer that queued too would keep the kernel's queue full, and every
            // release would stay a hand-over to a sleeping thread (a convoy that outlives
            // the contention that started it).

            let slice = deadline
                .map(|d| d.saturating_duration_since(now))
                .unwrap_or(PARK_SLICE)
                .min(PARK_SLICE)
                .min(until.saturating_duration_since(now));
            let woke = futex::wait(self.park, seen, Some(slice));
            // Whatever woke us, we look at the lock next: later releases may wake another.
            if self.park.load(Relaxed) & WOKEN != 0 {
                self.park.fetch_and(!WOKEN, SeqCst);
            }
            if woke == futex::Wake::TimedOut {
                // A holder killed cannot wake us: ask the kernel about it.
                match futex::trylock_pi(self.word) {
                    Pi::Locked => return Some(self.taken_from_kernel()),
                    Pi::OwnerGone => {
                        if let Some(got) = self.take_over(tid) {
                            return Some(got);
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// Bookkeeping once the word is ours: fill in the owner record and tell whether the
    /// previous holder left it filled in (it died in its critical section).
    #[inline]
    fn taken(&self, word_bits: u32) -> Acquired {
        self.record(futex::current_thread().1, word_bits)
    }

    /// [`taken`](Self::taken) with the caller's identity at hand. The owner record is only
    /// written by the word's holder (or by a release, which this acquisition follows), so a
    /// load and a store do: no second locked instruction on the fast path.
    #[inline]
    fn record(&self, ident: u64, word_bits: u32) -> Acquired {
        let prev = self.owner.load(Acquire);
        self.owner.store(ident, Relaxed);
        if word_bits & PI_OWNER_DIED != 0 {
            self.word.fetch_and(!PI_OWNER_DIED, Relaxed);
            return owner_died(prev);
        }
        match prev {
            0 | RELEASED | CLAIMING => Acquired::Clean,
            _ => owner_died(prev),
        }
    }

    fn taken_from_kernel(&self) -> Acquired {
        let v = self.word.load(Relaxed);
        self.taken(v)
    }

    /// The kernel said the word's owner is gone: replace its thread id with ours.
    fn take_over(&self, tid: u32) -> Option<Acquired> {
        let v = self.word.load(Relaxed);
        let holder = v & PI_TID;
        if holder == 0 || holder == tid {
            return None;
        }
        let new = tid | (v & PI_WAITERS);
        self.word
            .compare_exchange(v, new, Acquire, Relaxed)
            .ok()
            .map(|_| self.taken(v))
    }

    /// Takes over a lock whose release was recorded as [`RELEASED`].
    fn claim_released(&self, tid: u32) -> Option<Acquired> {
        if self.owner.load(Relaxed) != RELEASED
            || self
                .owner
                .compare_exchange(RELEASED, CLAIMING, Acquire, Relaxed)
                .is_err()
        {
            return None;
        }
        let _ = self
            .word
            .fetch_update(Acquire, Relaxed, |v| Some(tid | (v & PI_WAITERS)));
        self.owner.store(futex::current_ident(), Release);
        Some(Acquired::Clean)
    }

    /// Whether the owner record names a process that no longer exists (checked after a
    /// slice in the kernel; covers a dead holder's thread id reused by a new thread).
    fn holder_gone_by_record(&self) -> bool {
        let rec = self.owner.load(Relaxed);
        rec != 0 && rec != CLAIMING && rec != RELEASED && futex::ident_gone(rec)
    }

    /// Releases the lock. The holder thread releases it in user space (in the kernel when
    /// others are queued); another thread or process may release it too, as Python's
    /// `Lock` allows (see the module docs). False if it was not locked.
    #[inline]
    pub(crate) fn unlock(&self) -> bool {
        // Fast path: held, nobody queued in the kernel, not released by another thread
        // meanwhile. Whose it is does not matter here: with nobody queued, the holder's
        // release and another thread's (which Python's `Lock` allows) are the same two
        // stores, so the thread id is not even looked up.
        let v = self.word.load(Relaxed);
        if v != 0 && v & (PI_WAITERS | PI_OWNER_DIED) == 0 && self.owner.load(Relaxed) != RELEASED {
            self.owner.store(0, Relaxed);
            if self.word.compare_exchange(v, 0, SeqCst, Relaxed).is_ok() {
                self.wake_parked();
                return true;
            }
        }
        let released = self.unlock_slow(futex::current_tid());
        self.wake_parked();
        released
    }

    /// After a release: wakes one parked acquirer, if any (see [`park_until`](Self::park_until)).
    #[inline]
    fn wake_parked(&self) {
        let p = self.park.load(SeqCst);
        if p & PARK_COUNT != 0 && p & WOKEN == 0 {
            self.wake_parked_slow();
        }
    }

    #[cold]
    fn wake_parked_slow(&self) {
        // Raise `WOKEN` and move the sequence in one step; if another release raised it
        // meanwhile, its wake-up serves us too.
        let moved = self.park.fetch_update(SeqCst, SeqCst, |p| {
            (p & WOKEN == 0 && p & PARK_COUNT != 0).then(|| (p | WOKEN).wrapping_add(PARK_SEQ))
        });
        if moved.is_ok() {
            futex::wake(self.park, 1);
        }
    }

    #[cold]
    fn unlock_slow(&self, tid: u32) -> bool {
        let v = self.word.load(Relaxed);
        if v & PI_TID == 0 || self.owner.load(Relaxed) == RELEASED {
            return false;
        }
        if v & PI_TID == tid {
            self.owner.store(0, Release);
            if self.word.compare_exchange(tid, 0, Release, Relaxed).is_ok() {
                return true;
            }
            if !futex::unlock_pi(self.word) {
                // The kernel sees another owner (the word was handed over in user space
                // while others were queued): let the queued threads claim it.
                self.owner.store(RELEASED, Release);
            }
            return true;
        }
        self.unlock_foreign(v)
    }

    #[cold]
    fn unlock_foreign(&self, mut v: u32) -> bool {
        loop {
            if v & PI_TID == 0 {
                return false;
            }
            if v & PI_WAITERS != 0 {
                self.owner.store(RELEASED, Release);
                return true;
            }
            self.owner.store(0, Release);
            match self.word.compare_exchange(v, 0, Release, Relaxed) {
                Ok(_) => return true,
                Err(now) => v = now,
            }
        }
    }

    /// The kernel thread id of the lock's holder, 0 if free.
    #[inline]
    pub(crate) fn holder_tid(&self) -> u32 {
        if self.owner.load(Relaxed) == RELEASED {
            return 0;
        }
        self.word.load(Relaxed) & PI_TID
    }

    /// Whether the calling thread holds the lock.
    #[inline]
    pub(crate) fn held_by_me(&self) -> bool {
        self.holder_tid() == futex::current_tid()
    }

    /// Whether the lock is free, or held by a process that is gone.
    pub(crate) fn idle(&self) -> bool {
        self.holder_tid() == 0 || self.holder_gone_by_record()
    }
}

/// A take-over from a holder that died: reported (see [`crate::log`]).
#[cold]
fn owner_died(prev: u64) -> Acquired {
    let pid = match prev {
        0 | RELEASED | CLAIMING => None,
        p => Some(futex::ident_pid(p)),
    };
    match pid {
        Some(pid) => crate::log::log_event!(
            Warning,
            "took over a lock whose holder (pid {pid}) died holding it"
        ),
        None => crate::log::log_event!(Warning, "took over a lock whose holder died holding it"),
    }
    Acquired::OwnerDied
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words() -> (AtomicU32, AtomicU32, AtomicU64) {
        (AtomicU32::new(0), AtomicU32::new(0), AtomicU64::new(0))
    }

    #[test]
    fn lock_unlock_and_try() {
        let (w, k, o) = words();
        let m = RobustMutex::new(&w, &k, &o);
        assert_eq!(m.try_lock(), Acquired::Clean);
        assert!(m.held_by_me());
        assert_eq!(m.try_lock(), Acquired::No, "not recursive");
        assert_eq!(
            m.lock(Some(Instant::now() + Duration::from_millis(5))),
            Acquired::No,
            "a second lock by the holder waits out its deadline"
        );
        assert!(m.unlock());
        assert!(!m.unlock(), "released twice");
        assert_eq!(o.load(Relaxed), 0);
        assert_eq!(m.lock(None), Acquired::Clean);
        assert!(m.unlock());
    }

    #[test]
    fn per_thread_ownership_and_release_by_another_thread() {
        let (w, k, o) = words();
        let m = RobustMutex::new(&w, &k, &o);
        assert_eq!(m.lock(None), Acquired::Clean);
        std::thread::scope(|s| {
            s.spawn(|| {
                let m = RobustMutex::new(&w, &k, &o);
                assert!(!m.held_by_me(), "held by the other thread");
                assert_eq!(m.try_lock(), Acquired::No);
                // Python's Lock may be released by another thread.
                assert!(m.unlock());
                assert_eq!(m.try_lock(), Acquired::Clean);
                assert!(m.unlock());
            });
        });
        assert_eq!(m.try_lock(), Acquired::Clean);
        assert!(m.unlock());
    }

    #[test]
    fn a_thread_that_exits_holding_the_lock_is_seen_at_once() {
        let (w, k, o) = (
            Box::leak(Box::new(AtomicU32::new(0))),
            Box::leak(Box::new(AtomicU32::new(0))),
            Box::leak(Box::new(AtomicU64::new(0))),
        );
        let (wr, kr, or): (&'static AtomicU32, &'static AtomicU32, &'static AtomicU64) = (w, k, o);
        // `join` returns once the kernel thread is gone (its tid cleared), not just its body.
        std::thread::spawn(move || {
            let m = RobustMutex::new(wr, kr, or);
            assert_eq!(m.lock(None), Acquired::Clean);
            // exits holding it
        })
        .join()
        .unwrap();
        let m = RobustMutex::new(w, k, o);
        assert_eq!(m.try_lock(), Acquired::OwnerDied);
        assert!(m.unlock());
        assert_eq!(m.try_lock(), Acquired::Clean);
        assert!(m.unlock());
    }

    #[test]
    fn a_queued_waiter_gets_the_lock_when_its_holder_thread_exits() {
        let (w, k, o) = words();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let (wr, kr, or) = (&w, &k, &o);
        std::thread::scope(|s| {
            s.spawn(move || {
                let (w, k, o) = (wr, kr, or);
                let m = RobustMutex::new(w, k, o);
                assert_eq!(m.lock(None), Acquired::Clean);
                // Hold it until the waiter is queued in the kernel, then exit holding it.
                go_rx.recv().unwrap();
                while w.load(SeqCst) & PI_WAITERS == 0 {
                    std::thread::yield_now();
                }
            });
            while w.load(SeqCst) == 0 {
                std::thread::yield_now();
            }
            go_tx.send(()).unwrap();
            let m = RobustMutex::new(&w, &k, &o);
            // No deadline: only the kernel's hand-over on the holder's exit ends this.
            assert_eq!(m.lock(None), Acquired::OwnerDied);
            assert!(m.unlock());
        });
    }

    #[test]
    fn contended_counter_loses_nothing() {
        let (w, k, o) = words();
        // A load-then-store increment loses updates unless the mutex serialises it.
        let n = AtomicU64::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                let (w, k, o, n) = (&w, &k, &o, &n);
                s.spawn(move || {
                    let m = RobustMutex::new(w, k, o);
                    for _ in 0..20_000 {
                        assert_eq!(m.lock(None), Acquired::Clean);
                        let v = n.load(Relaxed);
                        std::hint::spin_loop();
                        n.store(v + 1, Relaxed);
                        assert!(m.unlock());
                    }
                });
            }
        });
        assert_eq!(n.load(SeqCst), 80_000);
    }

    #[test]
    fn releases_wake_a_parked_acquirer_once_until_it_runs() {
        let (w, k, o) = words();
        let m = RobustMutex::new(&w, &k, &o);
        // One acquirer counted as parked that does not run (yet): a hundred releases.
        k.store(1, SeqCst);
        for _ in 0..100 {
            assert_eq!(m.lock(None), Acquired::Clean);
            assert!(m.unlock());
        }
        assert_eq!(
            k.load(SeqCst),
            PARK_SEQ | WOKEN | 1,
            "one wake-up, then none while the woken one has not run"
        );
        // Once it has run (cleared the flag), the next release wakes again.
        k.fetch_and(!WOKEN, SeqCst);
        assert_eq!(m.lock(None), Acquired::Clean);
        assert!(m.unlock());
        assert_eq!(k.load(SeqCst), (2 * PARK_SEQ) | WOKEN | 1);
    }

    #[test]
    fn a_parked_waiter_sees_its_holder_thread_exit() {
        let (w, k, o) = words();
        let (wr, kr, or) = (&w, &k, &o);
        std::thread::scope(|s| {
            let holder = s.spawn(move || {
                let m = RobustMutex::new(wr, kr, or);
                assert_eq!(m.lock(None), Acquired::Clean);
                // Exit holding it once the waiter is parked, or queued in the kernel (its
                // park phase is time-limited: on a loaded machine it may end unseen).
                while kr.load(SeqCst) & PARK_COUNT == 0 && wr.load(SeqCst) & PI_WAITERS == 0 {
                    std::thread::yield_now();
                }
            });
            while w.load(SeqCst) == 0 {
                std::thread::yield_now();
            }
            let m = RobustMutex::new(&w, &k, &o);
            assert_eq!(m.lock(None), Acquired::OwnerDied);
            assert!(m.unlock());
            holder.join().unwrap();
        });
        assert_eq!(k.load(SeqCst) & PARK_COUNT, 0, "nobody left parked");
    }

    #[test]
    fn a_release_wakes_a_parked_waiter() {
        let (w, k, o) = words();
        let (wr, kr, or) = (&w, &k, &o);
        let m = RobustMutex::new(&w, &k, &o);
        assert_eq!(m.lock(None), Acquired::Clean);
        std::thread::scope(|s| {
            let waiter = s.spawn(move || {
                let m = RobustMutex::new(wr, kr, or);
                let got = m.lock(None);
                assert!(m.unlock());
                got
            });
            // Released once the waiter is parked, or queued in the kernel: its park phase is
            // time-limited, and on a loaded machine it may end before (or just after) we see
            // it, so waiting for "parked" alone could wait for ever.
            while k.load(SeqCst) & PARK_COUNT == 0 && w.load(SeqCst) & PI_WAITERS == 0 {
                std::thread::yield_now();
            }
            assert!(m.unlock());
            assert_eq!(waiter.join().unwrap(), Acquired::Clean);
        });
        // Still parked at the release: the release moved the sequence once; already gone
        // to the kernel's queue: it was handed the lock there and the sequence did not move.
        let k = k.load(SeqCst);
        assert!(
            k == PARK_SEQ || k == 0,
            "at most one release moved the sequence, nobody left parked: {k:#x}"
        );
    }
}
