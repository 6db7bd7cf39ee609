//! Counting semaphores shared between processes.

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{kinds, raw};
use crate::ipc::segment::Segment;
use crate::sys::futex;
use crate::{Error, Result};

// Layout: value (futex word), sleepers, bound (u32::MAX: none).
const VALUE: usize = 0;
const SLEEPERS: usize = 4;
const BOUND: usize = 8;
const SIZE: usize = 12;

/// The shared machinery of [`Semaphore`] and [`BoundedSemaphore`].
#[derive(Clone)]
struct Sem {
    seg: Arc<Segment>,
}

impl Sem {
    fn new(value: u32, bound: u32) -> Result<Sem> {
        let seg = Segment::new(kinds::SEMAPHORE, SIZE)?;
        seg.u32(VALUE).store(value, Ordering::Relaxed);
        seg.u32(BOUND).store(bound, Ordering::Relaxed);
        Ok(Sem { seg })
    }

    fn value(&self) -> &AtomicU32 {
        self.seg.u32(VALUE)
    }

    fn sleepers(&self) -> &AtomicU32 {
        self.seg.u32(SLEEPERS)
    }

    fn try_take(&self) -> bool {
        let v = self.value();
        let mut cur = v.load(Ordering::Relaxed);
        while cur > 0 {
            match v.compare_exchange_weak(cur, cur - 1, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(now) => cur = now,
            }
        }
        false
    }

    fn acquire(&self, deadline: Option<Instant>) -> bool {
        loop {
            if self.try_take() {
                return true;
            }
            // Announce ourselves before sleeping; a killed sleeper only leaves this count
            // too high, which costs a spurious wake-up call, never a lost unit.
            self.sleepers().fetch_add(1, Ordering::SeqCst);
            let r = futex::wait_until(self.value(), 0, deadline);
            self.sleepers().fetch_sub(1, Ordering::SeqCst);
            if r == futex::Wake::TimedOut {
                return self.try_take();
            }
        }
    }

    fn release(&self, n: u32) -> Result<()> {
        let bound = self.seg.u32(BOUND).load(Ordering::Relaxed);
        let v = self.value();
        let mut cur = v.load(Ordering::Relaxed);
        loop {
            let new = match cur.checked_add(n) {
                Some(x) if x <= bound => x,
                _ if bound == u32::MAX => {
                    return Err(Error::invalid("semaphore value overflow"));
                }
                _ => {
                    return Err(Error::invalid("BoundedSemaphore released too many times"));
                }
            };
            match v.compare_exchange_weak(cur, new, Ordering::SeqCst, Ordering::Relaxed) {
                Ok(_) => break,
                Err(now) => cur = now,
            }
        }
        if self.sleepers().load(Ordering::SeqCst) > 0 {
            futex::wake(v, n);
        }
        Ok(())
    }
}

macro_rules! semaphore_serde {
    ($t:ident) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                self.0.seg.serialize_handle(s)
            }
        }

        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                let seg = Segment::deserialize_handle(d, kinds::SEMAPHORE)?;
                if seg.data_len() < SIZE {
                    return Err(serde::de::Error::custom("semaphore segment too small"));
                }
                Ok($t(Sem { seg }))
            }
        }

        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($t))
                    .field("value", &self.get_value())
                    .finish()
            }
        }
    };
}

/// A counting semaphore shared between processes, like Python's
/// `multiprocessing.Semaphore`: `acquire` takes one unit (waiting while there is none),
/// `release` gives one back.
///
/// `acquire`, `acquire_timeout` and `try_acquire` return a [`Result`] like
/// [`Lock`](crate::Lock)'s (the API contract writes the same calls for both), although
/// none of them fails today: a semaphore has no owner, so a process that dies holding
/// units only leaves them taken (as in Python), and the wait is a futex on shared memory,
/// which reports no error.
///
/// ```
/// let s = multiproc::Semaphore::new(2).unwrap();
/// s.acquire().unwrap();
/// assert!(s.try_acquire().unwrap());
/// assert!(!s.try_acquire().unwrap());
/// s.release().unwrap();
/// assert_eq!(s.get_value(), 1);
/// ```
#[derive(Clone)]
pub struct Semaphore(Sem);

impl Semaphore {
    /// A semaphore holding `value` units.
    ///
    /// ```
    /// assert_eq!(multiproc::Semaphore::new(3).unwrap().get_value(), 3);
    /// ```
    pub fn new(value: u32) -> Result<Semaphore> {
        Ok(Semaphore(Sem::new(value, u32::MAX)?))
    }

    /// Takes a unit, waiting until one is there.
    ///
    /// ```
    /// let s = multiproc::Semaphore::new(1).unwrap();
    /// s.acquire().unwrap();
    /// ```
    pub fn acquire(&self) -> Result<()> {
        self.0.acquire(None);
        Ok(())
    }

    /// Takes a unit, waiting at most `timeout`: `true` if taken.
    ///
    /// ```
    /// let s = multiproc::Semaphore::new(0).unwrap();
    /// assert!(!s.acquire_timeout(std::time::Duration::from_millis(5)).unwrap());
    /// ```
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<bool> {
        Ok(self.0.acquire(raw::deadline(timeout)))
    }

    /// Takes a unit if one is there: `true` if taken.
    ///
    /// ```
    /// let s = multiproc::Semaphore::new(0).unwrap();
    /// assert!(!s.try_acquire().unwrap());
    /// ```
    pub fn try_acquire(&self) -> Result<bool> {
        Ok(self.0.try_take())
    }

    /// Gives a unit back, waking a waiter.
    ///
    /// ```
    /// let s = multiproc::Semaphore::new(0).unwrap();
    /// s.release().unwrap();
    /// assert_eq!(s.get_value(), 1);
    /// ```
    pub fn release(&self) -> Result<()> {
        self.0.release(1)
    }

    /// Units available now.
    ///
    /// ```
    /// assert_eq!(multiproc::Semaphore::new(0).unwrap().get_value(), 0);
    /// ```
    pub fn get_value(&self) -> u32 {
        self.0.value().load(Ordering::Relaxed)
    }
}

semaphore_serde!(Semaphore);

/// A semaphore that refuses to be released above its initial value, like Python's
/// `multiprocessing.BoundedSemaphore`: the extra release is an
/// [`Error::InvalidOperation`]. Its `acquire` calls return a [`Result`] that never fails
/// today, as [`Semaphore`]'s do.
///
/// ```
/// let s = multiproc::BoundedSemaphore::new(1).unwrap();
/// s.acquire().unwrap();
/// s.release().unwrap();
/// assert!(s.release().is_err());
/// ```
#[derive(Clone)]
pub struct BoundedSemaphore(Sem);

impl BoundedSemaphore {
    /// A bounded semaphore holding (and bounded by) `value` units.
    ///
    /// ```
    /// assert_eq!(multiproc::BoundedSemaphore::new(2).unwrap().get_value(), 2);
    /// ```
    pub fn new(value: u32) -> Result<BoundedSemaphore> {
        Ok(BoundedSemaphore(Sem::new(value, value)?))
    }

    /// Takes a unit, waiting until one is there.
    ///
    /// ```
    /// let s = multiproc::BoundedSemaphore::new(1).unwrap();
    /// s.acquire().unwrap();
    /// ```
    pub fn acquire(&self) -> Result<()> {
        self.0.acquire(None);
        Ok(())
    }

    /// Takes a unit, waiting at most `timeout`: `true` if taken.
    ///
    /// ```
    /// let s = multiproc::BoundedSemaphore::new(1).unwrap();
    /// assert!(s.acquire_timeout(std::time::Duration::from_millis(5)).unwrap());
    /// ```
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<bool> {
        Ok(self.0.acquire(raw::deadline(timeout)))
    }

    /// Takes a unit if one is there: `true` if taken.
    ///
    /// ```
    /// let s = multiproc::BoundedSemaphore::new(1).unwrap();
    /// assert!(s.try_acquire().unwrap());
    /// ```
    pub fn try_acquire(&self) -> Result<bool> {
        Ok(self.0.try_take())
    }

    /// Gives a unit back; an error if that would exceed the initial value.
    ///
    /// ```
    /// let s = multiproc::BoundedSemaphore::new(1).unwrap();
    /// assert!(s.release().is_err());
    /// ```
    pub fn release(&self) -> Result<()> {
        self.0.release(1)
    }

    /// Units available now.
    ///
    /// ```
    /// assert_eq!(multiproc::BoundedSemaphore::new(1).unwrap().get_value(), 1);
    /// ```
    pub fn get_value(&self) -> u32 {
        self.0.value().load(Ordering::Relaxed)
    }
}

semaphore_serde!(BoundedSemaphore);
