//! Barriers shared between processes.

use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::kinds;
use super::raw::{self, Acquired, RawMutex, CHECK_INTERVAL, MUTEX_SIZE};
use crate::ipc::segment::Segment;
use crate::sys::{futex, AnyFnRef, FnRef};
use crate::{Error, Result};

// Layout: an internal mutex guarding everything below, then
const SEQ: usize = MUTEX_SIZE; // futex word: bumped on every completion, break or reset
const COUNT: usize = SEQ + 4; // parties waiting in this round
const BROKEN: usize = SEQ + 8; // 1 once broken, until reset
const EPOCH: usize = SEQ + 12; // bumped by reset: fails the waiters of the aborted round
const ROUND: usize = SEQ + 16; // bumped by each completed round
const PARTIES: usize = SEQ + 20;
const SLOTS: usize = 64; // registry of processes holding the barrier: (identity, refs)
const NSLOTS: usize = 64;
const SLOT_SIZE: usize = 16;
// The action run by the last party to arrive (a typed function reference: offset from the
// anchor, build identity, type signature; all 0: none), and the default timeout.
const ACTION: usize = SLOTS + NSLOTS * SLOT_SIZE;
const ACTION_BUILD: usize = ACTION + 8;
const ACTION_SIG: usize = ACTION + 16;
const TIMEOUT_NS: usize = ACTION + 24; // u64::MAX: none
const SIZE: usize = ACTION + 32;

/// What a barrier's action is: a plain function, run in whichever process arrives last.
type Action = fn();

struct Inner {
    seg: Arc<Segment>,
}

/// A barrier for a fixed number of parties, shared between processes, like Python's
/// `multiprocessing.Barrier`: each [`wait`](Barrier::wait) blocks until `parties` callers
/// are waiting, then all go on; each gets a distinct index in `0..parties`.
///
/// A timeout, [`abort`](Barrier::abort), or the death of a process that holds the barrier
/// breaks it: waiters (present and future, until [`reset`](Barrier::reset)) get
/// [`Error::BrokenBarrier`]. Processes that hold the barrier (it was created there, or
/// arrived in their arguments) are recorded in the barrier (up to 64 of them); one that
/// dies without dropping its handle, e.g. killed, breaks the barrier within about 0.1 s,
/// instead of leaving the others waiting for ever.
///
/// ```
/// multiproc::init();
/// fn party(b: multiproc::Barrier) -> usize {
///     b.wait().unwrap()
/// }
/// let b = multiproc::Barrier::new(2).unwrap();
/// let h = multiproc::spawn(party, b.clone()).unwrap();
/// let mine = b.wait().unwrap();
/// let theirs = h.join().unwrap();
/// assert_eq!(mine + theirs, 1); // indices 0 and 1
/// ```
#[derive(Clone)]
pub struct Barrier {
    inner: Arc<Inner>,
}

impl Barrier {
    /// A barrier for `parties` parties (at least 1).
    ///
    /// ```
    /// let b = multiproc::Barrier::new(1).unwrap();
    /// assert_eq!(b.wait().unwrap(), 0);
    /// ```
    pub fn new(parties: usize) -> Result<Barrier> {
        Barrier::builder(parties).build()
    }

    /// A builder for a barrier of `parties` parties with an action or a default timeout
    /// (Python's `Barrier(parties, action, timeout)`).
    ///
    /// ```
    /// multiproc::init();
    /// use std::time::Duration;
    /// let b = multiproc::Barrier::builder(1)
    ///     .action(|| println!("everyone is here"))
    ///     .timeout(Duration::from_secs(10))
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(b.wait().unwrap(), 0);
    /// ```
    pub fn builder(parties: usize) -> BarrierBuilder {
        BarrierBuilder {
            parties,
            action: None,
            timeout: None,
        }
    }

    fn attach(seg: Arc<Segment>) -> Barrier {
        let b = Barrier {
            inner: Arc::new(Inner { seg }),
        };
        b.inner.with_lock(|i| i.register());
        b
    }

    fn seg(&self) -> &Segment {
        &self.inner.seg
    }

    /// The number of parties.
    ///
    /// ```
    /// assert_eq!(multiproc::Barrier::new(3).unwrap().parties(), 3);
    /// ```
    pub fn parties(&self) -> usize {
        self.seg().u32(PARTIES).load(Ordering::Relaxed) as usize
    }

    /// The number of parties waiting now: 0 while the barrier is broken (as in Python,
    /// whose waiters leave a broken barrier and never count as waiting there).
    ///
    /// ```
    /// let b = multiproc::Barrier::new(3).unwrap();
    /// assert_eq!(b.n_waiting(), 0);
    /// let _ = b.wait_timeout(std::time::Duration::ZERO); // times out: breaks it
    /// assert_eq!(b.n_waiting(), 0);
    /// ```
    pub fn n_waiting(&self) -> usize {
        if self.broken() {
            return 0;
        }
        self.seg().u32(COUNT).load(Ordering::Relaxed) as usize
    }

    /// Is the barrier broken?
    ///
    /// ```
    /// let b = multiproc::Barrier::new(2).unwrap();
    /// b.abort();
    /// assert!(b.broken());
    /// ```
    pub fn broken(&self) -> bool {
        self.seg().u32(BROKEN).load(Ordering::Relaxed) != 0
    }

    /// Waits for all parties; returns this caller's index (`0..parties`, distinct).
    /// [`Error::BrokenBarrier`] if the barrier is or gets broken, or if the barrier's
    /// default [`timeout`](BarrierBuilder::timeout) passes (which breaks it for everyone).
    ///
    /// ```
    /// let b = multiproc::Barrier::new(1).unwrap();
    /// assert_eq!(b.wait().unwrap(), 0);
    /// ```
    pub fn wait(&self) -> Result<usize> {
        match self.seg().u64(TIMEOUT_NS).load(Ordering::Relaxed) {
            u64::MAX => self.wait_deadline(None),
            ns => self.wait_timeout(Duration::from_nanos(ns)),
        }
    }

    /// As [`wait`](Barrier::wait), for at most `timeout`; running out of time breaks the
    /// barrier for everyone.
    ///
    /// The timeout holds even when another process holds the barrier's internal lock and
    /// does not let go (it was stopped with SIGSTOP, or its action never returns): the
    /// wait ends with [`Error::BrokenBarrier`] about `timeout` after the call, and the
    /// barrier is broken. A holder killed inside it breaks the barrier at once. (Python's
    /// `wait(timeout)` would block on its lock for as long as the holder keeps it.)
    ///
    /// ```
    /// let b = multiproc::Barrier::new(2).unwrap();
    /// let r = b.wait_timeout(std::time::Duration::from_millis(5));
    /// assert!(matches!(r, Err(multiproc::Error::BrokenBarrier)));
    /// assert!(b.broken());
    /// ```
    pub fn wait_timeout(&self, timeout: Duration) -> Result<usize> {
        match raw::deadline(timeout) {
            Some(d) => self.wait_deadline(Some(d)),
            None => self.wait_deadline(None),
        }
    }

    fn wait_deadline(&self, deadline: Option<Instant>) -> Result<usize> {
        let i = &*self.inner;
        let s = i.seg();
        let m = i.mutex();
        if !i.lock_until(deadline) {
            // The internal lock is held past the deadline (its holder is stopped, or
            // hostile): the timeout still ends the wait, and breaks the barrier.
            i.break_unlocked();
            return Err(Error::BrokenBarrier);
        }
        if s.u32(BROKEN).load(Ordering::Relaxed) != 0 {
            m.unlock();
            return Err(Error::BrokenBarrier);
        }
        let idx = s.u32(COUNT).load(Ordering::Relaxed);
        let parties = s.u32(PARTIES).load(Ordering::Relaxed);
        if idx.saturating_add(1) >= parties {
            // The last to arrive runs the action before anyone goes on (under the mutex,
            // as Python runs it under the barrier's lock); a panic breaks the barrier.
            if let Some(action) = i.action()? {
                if let Err(p) = std::panic::catch_unwind(action) {
                    i.break_locked();
                    m.unlock();
                    futex::wake_all(s.u32(SEQ));
                    return Err(Error::TaskPanicked {
                        message: crate::error::panic_message(&*p),
                        location: None,
                        backtrace: None,
                    });
                }
            }
            s.u32(COUNT).store(0, Ordering::Relaxed);
            s.u32(ROUND).fetch_add(1, Ordering::Relaxed);
            s.u32(SEQ).fetch_add(1, Ordering::Release);
            m.unlock();
            futex::wake_all(s.u32(SEQ));
            return Ok(idx as usize);
        }
        s.u32(COUNT).store(idx + 1, Ordering::Relaxed);
        let round = s.u32(ROUND).load(Ordering::Relaxed);
        let epoch = s.u32(EPOCH).load(Ordering::Relaxed);
        loop {
            let seq = s.u32(SEQ).load(Ordering::Relaxed);
            m.unlock();
            let slice = match deadline {
                None => CHECK_INTERVAL,
                Some(d) => d
                    .saturating_duration_since(Instant::now())
                    .min(CHECK_INTERVAL),
            };
            let r = futex::wait(s.u32(SEQ), seq, Some(slice));
            if !i.lock_until(deadline) {
                i.break_unlocked();
                return Err(Error::BrokenBarrier);
            }
            if s.u32(EPOCH).load(Ordering::Relaxed) != epoch {
                m.unlock();
                return Err(Error::BrokenBarrier);
            }
            if s.u32(ROUND).load(Ordering::Relaxed) != round {
                m.unlock();
                return Ok(idx as usize);
            }
            if s.u32(BROKEN).load(Ordering::Relaxed) != 0 {
                m.unlock();
                return Err(Error::BrokenBarrier);
            }
            let late = deadline.is_some_and(|d| Instant::now() >= d);
            if late || (r == futex::Wake::TimedOut && i.reap_dead_parties()) {
                i.break_locked();
                m.unlock();
                futex::wake_all(s.u32(SEQ));
                return Err(Error::BrokenBarrier);
            }
        }
    }

    /// Breaks the barrier: every waiter, and every later caller until
    /// [`reset`](Barrier::reset), gets [`Error::BrokenBarrier`].
    ///
    /// ```
    /// let b = multiproc::Barrier::new(2).unwrap();
    /// b.abort();
    /// assert!(b.wait().is_err());
    /// ```
    pub fn abort(&self) {
        let i = &*self.inner;
        i.lock();
        i.break_locked();
        i.mutex().unlock();
        futex::wake_all(i.seg().u32(SEQ));
    }

    /// Returns the barrier to its initial state; parties waiting now get
    /// [`Error::BrokenBarrier`].
    ///
    /// ```
    /// let b = multiproc::Barrier::new(1).unwrap();
    /// b.abort();
    /// b.reset();
    /// assert_eq!(b.wait().unwrap(), 0);
    /// ```
    pub fn reset(&self) {
        let i = &*self.inner;
        let s = i.seg();
        i.lock();
        if s.u32(COUNT).load(Ordering::Relaxed) > 0 {
            s.u32(EPOCH).fetch_add(1, Ordering::Relaxed);
        }
        s.u32(COUNT).store(0, Ordering::Relaxed);
        s.u32(BROKEN).store(0, Ordering::Relaxed);
        s.u32(SEQ).fetch_add(1, Ordering::Release);
        i.mutex().unlock();
        futex::wake_all(s.u32(SEQ));
    }
}

impl Inner {
    fn seg(&self) -> &Segment {
        &self.seg
    }

    /// The action, if the barrier has one. One that does not belong to this executable
    /// (another build) breaks the barrier: the mutex is held, and let go here on error.
    fn action(&self) -> Result<Option<Action>> {
        let off = self.seg.u64(ACTION).load(Ordering::Relaxed);
        let build = self.seg.u64(ACTION_BUILD).load(Ordering::Relaxed);
        let sig = self.seg.u64(ACTION_SIG).load(Ordering::Relaxed);
        if build == 0 {
            return Ok(None);
        }
        match AnyFnRef::from_words([off, build, sig])
            .typed::<Action>()
            .get()
        {
            Some(f) => Ok(Some(f)),
            None => {
                self.break_locked();
                self.mutex().unlock();
                futex::wake_all(self.seg.u32(SEQ));
                Err(Error::BuildMismatch(
                    "the barrier's action belongs to another build of the program".into(),
                ))
            }
        }
    }

    fn mutex(&self) -> RawMutex<'_> {
        RawMutex::at(&self.seg, 0)
    }

    /// Takes the internal mutex; if a process died inside it, the state may be half
    /// updated: the barrier is broken.
    fn lock(&self) {
        self.lock_until(None);
    }

    /// [`lock`](Self::lock) that gives up at `deadline` (`None`: never): false if the
    /// mutex was not taken, because a live process holds it past the deadline (stopped,
    /// or not letting go). A holder that died is noticed within the wait, as in `lock`.
    fn lock_until(&self, deadline: Option<Instant>) -> bool {
        match self.mutex().lock(deadline) {
            Acquired::Clean => true,
            Acquired::OwnerDied => {
                self.break_locked();
                true
            }
            Acquired::No => false,
        }
    }

    /// Breaks the barrier without its mutex, for a waiter whose deadline passed while
    /// another process held the mutex and would not let go. The words are atomic, so the
    /// worst a holder that goes on later can see is the barrier broken under it (a round
    /// it completes still lets its waiters go: they look at the round first).
    fn break_unlocked(&self) {
        self.seg.u32(BROKEN).store(1, Ordering::SeqCst);
        self.seg.u32(SEQ).fetch_add(1, Ordering::SeqCst);
        futex::wake_all(self.seg.u32(SEQ));
    }

    fn with_lock<R>(&self, f: impl FnOnce(&Inner) -> R) -> R {
        self.lock();
        let r = f(self);
        self.mutex().unlock();
        r
    }

    fn break_locked(&self) {
        self.seg.u32(BROKEN).store(1, Ordering::Relaxed);
        self.seg.u32(SEQ).fetch_add(1, Ordering::Release);
    }

    fn slot(&self, i: usize) -> (&AtomicU64, &AtomicU32) {
        let off = SLOTS + i * SLOT_SIZE;
        (self.seg.u64(off), self.seg.u32(off + 8))
    }

    /// Records one more handle in this process (under the mutex).
    fn register(&self) {
        let me = futex::current_ident();
        let mut free = None;
        for i in 0..NSLOTS {
            let (id, refs) = self.slot(i);
            let v = id.load(Ordering::Relaxed);
            if v == me {
                refs.fetch_add(1, Ordering::Relaxed);
                return;
            }
            if v == 0 && free.is_none() {
                free = Some(i);
            }
        }
        if let Some(i) = free {
            let (id, refs) = self.slot(i);
            id.store(me, Ordering::Relaxed);
            refs.store(1, Ordering::Relaxed);
        }
    }

    /// Forgets one handle of this process (under the mutex).
    fn unregister(&self) {
        let me = futex::current_ident();
        for i in 0..NSLOTS {
            let (id, refs) = self.slot(i);
            if id.load(Ordering::Relaxed) == me {
                let r = refs.load(Ordering::Relaxed).saturating_sub(1);
                refs.store(r, Ordering::Relaxed);
                if r == 0 {
                    id.store(0, Ordering::Relaxed);
                }
                return;
            }
        }
    }

    /// Drops the registrations of processes that are gone; true if there were any.
    fn reap_dead_parties(&self) -> bool {
        let mut any = false;
        for i in 0..NSLOTS {
            let (id, refs) = self.slot(i);
            let v = id.load(Ordering::Relaxed);
            if v != 0 && futex::ident_gone(v) {
                id.store(0, Ordering::Relaxed);
                refs.store(0, Ordering::Relaxed);
                any = true;
            }
        }
        any
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.with_lock(|i| i.unregister());
    }
}

/// Options for a [`Barrier`]: an action and a default timeout (see [`Barrier::builder`]).
///
/// ```
/// let b = multiproc::Barrier::builder(2).timeout(std::time::Duration::from_millis(1)).build().unwrap();
/// assert!(matches!(b.wait(), Err(multiproc::Error::BrokenBarrier)));
/// ```
#[derive(Clone, Debug)]
pub struct BarrierBuilder {
    parties: usize,
    action: Option<Action>,
    timeout: Option<Duration>,
}

impl BarrierBuilder {
    /// A function that the last party to arrive runs, once per round, before any party
    /// goes on (Python's `action=`). It runs in whichever process arrives last, so it is a
    /// plain `fn()` (or a closure that captures nothing); it talks to the others through
    /// shared objects. If it panics, the barrier breaks: the party that ran it gets
    /// [`Error::TaskPanicked`], the others [`Error::BrokenBarrier`].
    ///
    /// ```
    /// multiproc::init();
    /// fn announce() { println!("round complete"); }
    /// let b = multiproc::Barrier::builder(1).action(announce).build().unwrap();
    /// b.wait().unwrap();
    /// ```
    pub fn action(mut self, action: fn()) -> BarrierBuilder {
        self.action = Some(action);
        self
    }

    /// The timeout of [`wait`](Barrier::wait) (Python's `timeout=`); running out of time
    /// breaks the barrier. [`wait_timeout`](Barrier::wait_timeout) sets its own.
    ///
    /// ```
    /// use std::time::Duration;
    /// let b = multiproc::Barrier::builder(2).timeout(Duration::from_millis(5)).build().unwrap();
    /// assert!(b.wait().is_err());
    /// assert!(b.broken());
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> BarrierBuilder {
        self.timeout = Some(timeout);
        self
    }

    /// Makes the barrier. No parties, or more than `u32::MAX` →
    /// [`Error::InvalidOperation`].
    ///
    /// ```
    /// assert!(multiproc::Barrier::builder(0).build().is_err());
    /// ```
    pub fn build(self) -> Result<Barrier> {
        let parties = self.parties;
        if parties == 0 || parties > u32::MAX as usize {
            return Err(Error::invalid("a Barrier needs at least one party"));
        }
        let seg = Segment::new(kinds::BARRIER, SIZE)?;
        seg.u32(PARTIES).store(parties as u32, Ordering::Relaxed);
        if let Some(f) = self.action {
            let action = FnRef::of(f);
            if action.is_foreign() {
                return Err(crate::start::foreign_fn_error());
            }
            let [off, build, sig] = action.erase().to_words();
            seg.u64(ACTION).store(off, Ordering::Relaxed);
            seg.u64(ACTION_SIG).store(sig, Ordering::Relaxed);
            seg.u64(ACTION_BUILD).store(build, Ordering::Relaxed);
        }
        let ns = self.timeout.map_or(u64::MAX, |t| {
            t.as_nanos().min(u128::from(u64::MAX - 1)) as u64
        });
        seg.u64(TIMEOUT_NS).store(ns, Ordering::Relaxed);
        Ok(Barrier::attach(seg))
    }
}

impl fmt::Debug for Barrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Barrier")
            .field("parties", &self.parties())
            .field("n_waiting", &self.n_waiting())
            .field("broken", &self.broken())
            .finish()
    }
}

impl Serialize for Barrier {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.inner.seg.serialize_handle(s)
    }
}

impl<'de> Deserialize<'de> for Barrier {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let seg = Segment::deserialize_handle(d, kinds::BARRIER)?;
        if seg.data_len() < SIZE {
            return Err(serde::de::Error::custom("Barrier segment too small"));
        }
        Ok(Barrier::attach(seg))
    }
}
