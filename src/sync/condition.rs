//! Condition variables shared between processes.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{kinds, raw, Lock, RLock};
use crate::ipc::segment::{SegRef, Segment};
use crate::sys::futex;
use crate::{codec, Error, Result};

// Layout, all changed only by a holder of the condition's lock (except the futex word's
// readers): seq (futex word, bumped by each notify), waiters, pending wake-ups.
const SEQ: usize = 0;
const WAITERS: usize = 4;
const SIGNALS: usize = 8;
const SIZE: usize = 12;

/// The lock under a [`Condition`]: a [`Lock`] or an [`RLock`] (Python's default).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum CondLock {
    /// A plain lock.
    Lock(Lock),
    /// A re-entrant lock.
    RLock(RLock),
}

impl From<Lock> for CondLock {
    fn from(l: Lock) -> CondLock {
        CondLock::Lock(l)
    }
}

impl From<RLock> for CondLock {
    fn from(l: RLock) -> CondLock {
        CondLock::RLock(l)
    }
}

impl CondLock {
    fn owned(&self) -> bool {
        match self {
            CondLock::Lock(l) => l.held_here(),
            CondLock::RLock(r) => r.is_owned(),
        }
    }

    fn release_save(&self) -> Result<u32> {
        match self {
            CondLock::Lock(l) => l.release().map(|()| 1),
            CondLock::RLock(r) => r.release_all(),
        }
    }

    fn acquire_restore(&self, saved: u32) -> Result<()> {
        match self {
            CondLock::Lock(l) => l.acquire(),
            CondLock::RLock(r) => r.acquire_restore(saved),
        }
    }
}

/// A condition variable shared between processes, like Python's
/// `multiprocessing.Condition`: waiters release the lock and sleep until notified.
///
/// [`wait`](Condition::wait) (and friends) and [`notify`](Condition::notify) must be called
/// with the lock held (by this thread for an `RLock`, by this process for a `Lock`);
/// otherwise they return [`Error::InvalidOperation`].
///
/// ```
/// multiproc::init();
/// use multiproc::{Condition, RawValue};
///
/// fn producer((c, v): (Condition, RawValue<i32>)) {
///     c.acquire().unwrap();
///     v.set(1);
///     c.notify_all().unwrap();
///     c.release().unwrap();
/// }
/// let c = Condition::new().unwrap();
/// let v = RawValue::new(0).unwrap();
/// c.acquire().unwrap();
/// let h = multiproc::spawn(producer, (c.clone(), v.clone())).unwrap();
/// assert!(c.wait_for(|| v.get() == 1, None).unwrap());
/// c.release().unwrap();
/// h.join().unwrap();
/// ```
#[derive(Clone)]
pub struct Condition {
    lock: CondLock,
    seg: Arc<Segment>,
}

impl Condition {
    /// A condition with a new [`RLock`], like Python's `Condition()`.
    ///
    /// ```
    /// let c = multiproc::Condition::new().unwrap();
    /// assert!(c.notify().is_err()); // lock not held
    /// ```
    pub fn new() -> Result<Condition> {
        Condition::with_lock(RLock::new()?)
    }

    /// A condition over an existing [`Lock`] or [`RLock`].
    ///
    /// ```
    /// let lock = multiproc::Lock::new().unwrap();
    /// let c = multiproc::Condition::with_lock(lock.clone()).unwrap();
    /// let _g = lock.lock().unwrap();
    /// c.notify_all().unwrap();
    /// ```
    pub fn with_lock(lock: impl Into<CondLock>) -> Result<Condition> {
        Ok(Condition {
            lock: lock.into(),
            seg: Segment::new(kinds::CONDITION, SIZE)?,
        })
    }

    /// The underlying lock.
    ///
    /// ```
    /// let c = multiproc::Condition::new().unwrap();
    /// assert!(matches!(c.lock(), multiproc::CondLock::RLock(_)));
    /// ```
    pub fn lock(&self) -> &CondLock {
        &self.lock
    }

    /// Acquires the underlying lock (see [`Lock::acquire`]).
    ///
    /// ```
    /// let c = multiproc::Condition::new().unwrap();
    /// c.acquire().unwrap();
    /// c.release().unwrap();
    /// ```
    pub fn acquire(&self) -> Result<()> {
        match &self.lock {
            CondLock::Lock(l) => l.acquire(),
            CondLock::RLock(r) => r.acquire(),
        }
    }

    /// Releases the underlying lock.
    ///
    /// ```
    /// let c = multiproc::Condition::new().unwrap();
    /// assert!(c.release().is_err());
    /// ```
    pub fn release(&self) -> Result<()> {
        match &self.lock {
            CondLock::Lock(l) => l.release(),
            CondLock::RLock(r) => r.release(),
        }
    }

    fn wait_deadline(&self, deadline: Option<Instant>) -> Result<bool> {
        if !self.lock.owned() {
            return Err(Error::invalid("Condition::wait without holding its lock"));
        }
        let seq = self.seg.u32(SEQ);
        let waiters = self.seg.u32(WAITERS);
        let signals = self.seg.u32(SIGNALS);
        let registered_at = seq.load(Ordering::Relaxed);
        waiters.fetch_add(1, Ordering::Relaxed);
        let mut died = false;
        loop {
            let s = seq.load(Ordering::Relaxed);
            let saved = self.lock.release_save()?;
            let r = futex::wait_until(seq, s, deadline);
            match self.lock.acquire_restore(saved) {
                Ok(()) => {}
                Err(Error::OwnerDied) => died = true,
                Err(e) => return Err(e),
            }
            // Under the lock again: take a pending wake-up if one was posted since we
            // registered (wake-ups posted before belong to earlier waiters).
            let sig = signals.load(Ordering::Relaxed);
            if seq.load(Ordering::Relaxed) != registered_at && sig > 0 {
                signals.store(sig - 1, Ordering::Relaxed);
                waiters.fetch_sub(1, Ordering::Relaxed);
                return if died {
                    Err(Error::OwnerDied)
                } else {
                    Ok(true)
                };
            }
            let timed_out =
                r == futex::Wake::TimedOut || deadline.is_some_and(|d| Instant::now() >= d);
            if timed_out {
                let w = waiters.load(Ordering::Relaxed).saturating_sub(1);
                waiters.store(w, Ordering::Relaxed);
                if signals.load(Ordering::Relaxed) > w {
                    signals.store(w, Ordering::Relaxed);
                }
                return if died {
                    Err(Error::OwnerDied)
                } else {
                    Ok(false)
                };
            }
        }
    }

    /// Releases the lock, sleeps until notified, re-acquires the lock.
    ///
    /// ```
    /// let c = multiproc::Condition::new().unwrap();
    /// assert!(c.wait().is_err()); // lock not held
    /// ```
    pub fn wait(&self) -> Result<()> {
        self.wait_deadline(None).map(|_| ())
    }

    /// As [`wait`](Condition::wait), for at most `timeout`: `false` if it timed out.
    ///
    /// ```
    /// let c = multiproc::Condition::new().unwrap();
    /// c.acquire().unwrap();
    /// assert!(!c.wait_timeout(std::time::Duration::from_millis(5)).unwrap());
    /// c.release().unwrap();
    /// ```
    pub fn wait_timeout(&self, timeout: Duration) -> Result<bool> {
        self.wait_deadline(raw::deadline(timeout))
    }

    /// Waits until `predicate` is true, for at most `timeout` if given. Returns the last
    /// value of the predicate. The lock must be held; `predicate` runs with it held.
    ///
    /// ```
    /// let c = multiproc::Condition::new().unwrap();
    /// c.acquire().unwrap();
    /// assert!(c.wait_for(|| true, None).unwrap());
    /// assert!(!c.wait_for(|| false, Some(std::time::Duration::from_millis(5))).unwrap());
    /// c.release().unwrap();
    /// ```
    pub fn wait_for(
        &self,
        mut predicate: impl FnMut() -> bool,
        timeout: Option<Duration>,
    ) -> Result<bool> {
        let deadline = timeout.and_then(raw::deadline);
        let mut result = predicate();
        while !result {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            if timeout.is_some() && deadline.is_none() {
                // A timeout too large to represent: wait without one.
                self.wait_deadline(None)?;
            } else {
                self.wait_deadline(deadline)?;
            }
            result = predicate();
        }
        Ok(result)
    }

    /// Wakes one of the processes or threads waiting, if any (Python's `notify()`). The
    /// lock must be held.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOperation`] if the lock is not held.
    ///
    /// ```
    /// multiproc::init();
    /// use multiproc::{Condition, RawValue};
    ///
    /// fn ready((c, v): (Condition, RawValue<i32>)) -> multiproc::Result<()> {
    ///     c.acquire()?;
    ///     v.set(1);
    ///     c.notify()?;
    ///     c.release()
    /// }
    /// let c = Condition::new().unwrap();
    /// let v = RawValue::new(0).unwrap();
    /// c.acquire().unwrap();
    /// let mut p = multiproc::Process::new(ready, (c.clone(), v.clone()));
    /// p.start().unwrap();
    /// while v.get() == 0 {
    ///     c.wait().unwrap();
    /// }
    /// c.release().unwrap();
    /// p.join().unwrap();
    /// ```
    pub fn notify(&self) -> Result<()> {
        self.notify_n(1)
    }

    /// Wakes up to `n` of the processes or threads waiting (Python's `notify(n)`). The
    /// lock must be held.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOperation`] if the lock is not held.
    ///
    /// ```
    /// let c = multiproc::Condition::new().unwrap();
    /// c.acquire().unwrap();
    /// c.notify_n(2).unwrap(); // nobody waits: nothing happens
    /// c.release().unwrap();
    /// assert!(c.notify_n(2).is_err()); // lock not held
    /// ```
    pub fn notify_n(&self, n: usize) -> Result<()> {
        if !self.lock.owned() {
            return Err(Error::invalid("Condition::notify without holding its lock"));
        }
        let waiters = self.seg.u32(WAITERS).load(Ordering::Relaxed);
        let signals = self.seg.u32(SIGNALS);
        let pending = signals.load(Ordering::Relaxed);
        let k = (waiters.saturating_sub(pending) as usize).min(n) as u32;
        if k > 0 {
            signals.store(pending + k, Ordering::Relaxed);
            let seq = self.seg.u32(SEQ);
            seq.fetch_add(1, Ordering::Release);
            // Wake them all: which sleepers may take the new wake-ups is decided under the
            // lock (only those registered before this call), so none is lost.
            futex::wake_all(seq);
        }
        Ok(())
    }

    /// Wakes every waiter. The lock must be held.
    ///
    /// ```
    /// let c = multiproc::Condition::new().unwrap();
    /// c.acquire().unwrap();
    /// c.notify_all().unwrap();
    /// c.release().unwrap();
    /// ```
    pub fn notify_all(&self) -> Result<()> {
        self.notify_n(usize::MAX)
    }
}

impl fmt::Debug for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Condition")
            .field("lock", &self.lock)
            .field("waiters", &self.seg.u32(WAITERS).load(Ordering::Relaxed))
            .finish()
    }
}

impl Serialize for Condition {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        (&self.lock, SegRef(&self.seg)).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Condition {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let (lock, (fd, len)) = <(CondLock, (codec::FdOwned, u64))>::deserialize(d)?;
        let len = usize::try_from(len).map_err(serde::de::Error::custom)?;
        if len < SIZE {
            return Err(serde::de::Error::custom("Condition segment too small"));
        }
        let seg =
            Segment::from_fd(fd.0, kinds::CONDITION, len).map_err(crate::codec::handle_error)?;
        Ok(Condition { lock, seg })
    }
}
