//! Synchronization between processes: [`Lock`], [`RLock`], [`Semaphore`],
//! [`BoundedSemaphore`], [`Event`], [`Condition`], [`Barrier`], like Python's
//! `multiprocessing` ones.
//!
//! Each primitive lives in an anonymous shared-memory segment (a `memfd`: nothing to leak
//! in /dev/shm). A primitive is a handle: `Clone` shares it within a process, and it can be
//! put in a [`Process`](crate::Process)'s arguments or sent through a pipe, arriving as the
//! *same* primitive in the other process. Blocking waits sleep on futexes in the segment.
//!
//! Beyond Python: when a process dies holding a [`Lock`] or [`RLock`], the next process to
//! acquire it gets it, with [`Error::OwnerDied`] to say so, at once (a waiter already
//! blocked on it finds out within a millisecond), instead of deadlocking for ever; a
//! [`Barrier`] one of whose
//! parties died is broken rather than hung; a [`Semaphore`] waiter that is killed leaves
//! the count intact.
//!
//! ```
//! multiproc::init();
//! use multiproc::Lock;
//!
//! fn child(lock: Lock) -> u32 {
//!     let _held = lock.lock().unwrap();
//!     7
//! }
//! let lock = Lock::new().unwrap();
//! let h = multiproc::spawn(child, lock.clone()).unwrap();
//! assert_eq!(h.join().unwrap(), 7);
//! assert!(lock.try_acquire().unwrap()); // the child released it
//! lock.release().unwrap();
//! ```

mod barrier;
mod condition;
mod event;
pub(crate) mod raw;
mod semaphore;

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use barrier::{Barrier, BarrierBuilder};
pub use condition::{CondLock, Condition};
pub use event::Event;
pub use semaphore::{BoundedSemaphore, Semaphore};

use crate::ipc::segment::{Kind, SegRef, Segment};
use crate::sys::futex;
use crate::{codec, Error, Result};
use raw::{Acquired, RawMutex, MUTEX_SIZE};

/// Segment kinds of this crate's synchronization and shared-value types.
pub(crate) mod kinds {
    use crate::ipc::segment::Kind;
    pub(crate) const LOCK: Kind = Kind(0x10);
    pub(crate) const RLOCK: Kind = Kind(0x11);
    pub(crate) const SEMAPHORE: Kind = Kind(0x12);
    pub(crate) const EVENT: Kind = Kind(0x13);
    pub(crate) const CONDITION: Kind = Kind(0x14);
    pub(crate) const BARRIER: Kind = Kind(0x15);
    pub(crate) const VALUE: Kind = Kind(0x20);
    pub(crate) const ARRAY: Kind = Kind(0x21);
    pub(crate) const RAW_VALUE: Kind = Kind(0x22);
    pub(crate) const RAW_ARRAY: Kind = Kind(0x23);
    /// A pool worker's count of jobs begun.
    pub(crate) const POOL_PROGRESS: Kind = Kind(0x30);
}

/// Kinds of segment that may hold a [`Lock`] at some offset.
fn lock_kind_ok(k: u32) -> bool {
    [kinds::LOCK, kinds::VALUE, kinds::ARRAY]
        .iter()
        .any(|x| x.0 == k)
}

/// What the recovering guard calls ([`Lock::lock_recoverable`],
/// [`RLock::lock_recoverable`], [`Value::lock_recoverable`](crate::Value::lock_recoverable),
/// [`Array::lock_recoverable`](crate::Array::lock_recoverable)) return: the guard, or the
/// guard inside an [`OwnerDiedError`] when the previous holder died holding the lock
/// (std's `LockResult` and `PoisonError`). Their plain forms (`lock`) return a
/// [`Result`] as every fallible call does, with [`Error::OwnerDied`] in that case.
///
/// ```
/// let lock = multiproc::Lock::new().unwrap();
/// let r: multiproc::sync::LockResult<multiproc::LockGuard<'_>> = lock.lock_recoverable();
/// assert!(r.is_ok());
/// ```
pub type LockResult<G> = std::result::Result<G, OwnerDiedError<G>>;

/// The lock was taken over from a holder that died holding it: like std's `PoisonError`,
/// it carries the guard, so the caller holds the lock (the data it protects may be
/// inconsistent) and releases it by dropping the guard.
///
/// Take the guard with [`into_inner`](OwnerDiedError::into_inner) to go on, or let `?`
/// turn it into [`Error::OwnerDied`]: the guard is then dropped, which releases the lock,
/// so `?` never leaves a lock held. The lock's raw calls ([`Lock::acquire`] and friends)
/// report the same event as [`Error::OwnerDied`] *with the lock held*, since they have no
/// guard to hand over.
///
/// ```
/// multiproc::init();
/// use multiproc::Lock;
/// fn die_holding(lock: Lock) {
///     std::mem::forget(lock.lock().unwrap());
///     std::process::exit(0);
/// }
/// let lock = Lock::new().unwrap();
/// let mut p = multiproc::Process::new(die_holding, lock.clone());
/// p.start().unwrap();
/// p.join().unwrap();
/// let guard = match lock.lock_recoverable() {
///     Err(died) => died.into_inner(), // we hold the lock now
///     Ok(_) => panic!("the holder died: lock() must say so"),
/// };
/// assert!(lock.is_locked());
/// drop(guard);
/// assert!(!lock.is_locked());
/// ```
pub struct OwnerDiedError<G> {
    guard: G,
}

impl<G> OwnerDiedError<G> {
    pub(crate) fn new(guard: G) -> OwnerDiedError<G> {
        OwnerDiedError { guard }
    }

    /// The guard: the caller holds the lock.
    ///
    /// ```
    /// # multiproc::init();
    /// # fn die_holding(lock: multiproc::Lock) { std::mem::forget(lock.lock().unwrap()); std::process::exit(0) }
    /// # let lock = multiproc::Lock::new().unwrap();
    /// # let mut p = multiproc::Process::new(die_holding, lock.clone());
    /// # p.start().unwrap();
    /// # p.join().unwrap();
    /// let g = lock.lock_recoverable().unwrap_or_else(|died| died.into_inner());
    /// assert!(lock.is_locked());
    /// drop(g);
    /// ```
    pub fn into_inner(self) -> G {
        self.guard
    }

    /// A reference to the guard.
    ///
    /// ```
    /// # multiproc::init();
    /// # fn die_holding(v: multiproc::Value<i32>) { std::mem::forget(v.lock().unwrap()); std::process::exit(0) }
    /// let v = multiproc::Value::new(5i32).unwrap();
    /// # let mut p = multiproc::Process::new(die_holding, v.clone());
    /// # p.start().unwrap();
    /// # p.join().unwrap();
    /// // ... a process died holding v's lock ...
    /// let e = v.lock_recoverable().unwrap_err();
    /// assert_eq!(**e.get_ref(), 5);
    /// ```
    pub fn get_ref(&self) -> &G {
        &self.guard
    }

    /// A mutable reference to the guard.
    ///
    /// ```
    /// # multiproc::init();
    /// # fn die_holding(v: multiproc::Value<i32>) { std::mem::forget(v.lock().unwrap()); std::process::exit(0) }
    /// let v = multiproc::Value::new(5i32).unwrap();
    /// # let mut p = multiproc::Process::new(die_holding, v.clone());
    /// # p.start().unwrap();
    /// # p.join().unwrap();
    /// let mut e = v.lock_recoverable().unwrap_err();
    /// **e.get_mut() = 0; // repair the value
    /// drop(e);
    /// assert_eq!(v.get(), 0);
    /// ```
    pub fn get_mut(&mut self) -> &mut G {
        &mut self.guard
    }
}

impl<G> fmt::Debug for OwnerDiedError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnerDiedError").finish_non_exhaustive()
    }
}

impl<G> fmt::Display for OwnerDiedError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&Error::OwnerDied, f)
    }
}

impl<G> std::error::Error for OwnerDiedError<G> {}

impl<G> From<OwnerDiedError<G>> for Error {
    /// [`Error::OwnerDied`]; the guard is dropped, which releases the lock.
    fn from(_: OwnerDiedError<G>) -> Error {
        Error::OwnerDied
    }
}

fn owner_died_or(r: Acquired) -> Result<bool> {
    match r {
        Acquired::Clean => Ok(true),
        Acquired::OwnerDied => Err(Error::OwnerDied),
        Acquired::No => Ok(false),
    }
}

// --- Lock ---------------------------------------------------------------------------------

/// A lock shared between processes, like Python's `multiprocessing.Lock`.
///
/// Not re-entrant: acquiring it twice from the same thread blocks (use [`RLock`] for
/// that). Any thread of any process may release it, as in Python. Releasing an unlocked
/// lock is an error.
///
/// If the holder dies while holding it, the kernel tells at once (the lock is a
/// priority-inheritance futex, whose owner the kernel knows): a waiter blocked in
/// [`acquire`](Lock::acquire) is handed the lock the moment the holder exits, and the next
/// caller — non-blocking ones such as [`try_acquire`](Lock::try_acquire) and zero timeouts
/// included — takes it over on its first attempt. Either way it is told so:
/// [`acquire`](Lock::acquire) and friends return
/// [`Error::OwnerDied`] *with the lock held* (release it when done),
/// [`lock`](Lock::lock) returns [`Error::OwnerDied`] with the lock released again, and
/// [`lock_recoverable`](Lock::lock_recoverable) returns an [`OwnerDiedError`] holding the
/// guard (dropping it, or `?`, releases the lock).
///
/// Uncontended, acquire + release is two atomic instructions (no system call).
///
/// ```
/// let lock = multiproc::Lock::new().unwrap();
/// lock.acquire().unwrap();
/// assert!(!lock.try_acquire().unwrap());
/// lock.release().unwrap();
/// assert!(lock.release().is_err()); // not held
/// {
///     let _g = lock.lock().unwrap(); // released when `_g` drops
/// }
/// assert!(lock.acquire_timeout(std::time::Duration::from_millis(10)).unwrap());
/// lock.release().unwrap();
/// ```
#[derive(Clone)]
pub struct Lock {
    seg: Arc<Segment>,
    off: usize,
}

impl Lock {
    /// A new, unlocked lock.
    ///
    /// ```
    /// let lock = multiproc::Lock::new().unwrap();
    /// assert!(!lock.is_locked());
    /// ```
    pub fn new() -> Result<Lock> {
        Ok(Lock {
            seg: Segment::new(kinds::LOCK, MUTEX_SIZE)?,
            off: 0,
        })
    }

    /// The lock at data offset `off` of `seg` (the lock of a `Value`, say).
    pub(crate) fn in_segment(seg: Arc<Segment>, off: usize) -> Lock {
        Lock { seg, off }
    }

    #[inline]
    pub(crate) fn raw(&self) -> RawMutex<'_> {
        RawMutex::at(&self.seg, self.off)
    }

    /// Whether this lock lives in `seg` (a `Value`'s own lock, not one it shares).
    pub(crate) fn lives_in(&self, seg: &Arc<Segment>) -> bool {
        Arc::ptr_eq(&self.seg, seg)
    }

    /// Blocks until the lock is acquired.
    ///
    /// [`Error::OwnerDied`]: the previous holder died holding it; the caller now holds it.
    ///
    /// ```
    /// let lock = multiproc::Lock::new().unwrap();
    /// lock.acquire().unwrap();
    /// lock.release().unwrap();
    /// ```
    #[inline]
    pub fn acquire(&self) -> Result<()> {
        owner_died_or(self.raw().lock(None)).map(|_| ())
    }

    /// Waits at most `timeout` for the lock: `true` if acquired.
    /// [`Error::OwnerDied`] as from [`acquire`](Lock::acquire): the lock is then held.
    ///
    /// ```
    /// use std::time::Duration;
    /// let lock = multiproc::Lock::new().unwrap();
    /// assert!(lock.acquire_timeout(Duration::from_millis(5)).unwrap());
    /// assert!(!lock.acquire_timeout(Duration::from_millis(5)).unwrap());
    /// lock.release().unwrap();
    /// ```
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<bool> {
        owner_died_or(self.raw().lock(raw::deadline(timeout)))
    }

    /// Acquires the lock if it is free: `true` if acquired. [`Error::OwnerDied`] as from
    /// [`acquire`](Lock::acquire) (the lock is then held).
    ///
    /// ```
    /// let lock = multiproc::Lock::new().unwrap();
    /// assert!(lock.try_acquire().unwrap());
    /// assert!(!lock.try_acquire().unwrap());
    /// ```
    #[inline]
    pub fn try_acquire(&self) -> Result<bool> {
        owner_died_or(self.raw().try_lock())
    }

    /// Releases the lock (from any thread or process). [`Error::InvalidOperation`] if it
    /// is not locked (Python's `ValueError`).
    ///
    /// A release by a thread other than the holder is immediate when nobody waits; when
    /// others are already queued in the kernel behind the holder, the next of them takes
    /// the lock within 0.1 s (the kernel only hands a lock on for its holder).
    ///
    /// ```
    /// let lock = multiproc::Lock::new().unwrap();
    /// assert!(lock.release().is_err());
    /// ```
    #[inline]
    pub fn release(&self) -> Result<()> {
        if self.raw().unlock() {
            Ok(())
        } else {
            Err(Error::invalid("release of an unlocked Lock"))
        }
    }

    /// Acquires the lock and returns a guard that releases it when dropped.
    ///
    /// # Errors
    ///
    /// [`Error::OwnerDied`] if the previous holder died holding it. The lock is then
    /// released again (the next caller takes it cleanly); the data it protects may be
    /// inconsistent. To take the lock over with its guard instead, use
    /// [`lock_recoverable`](Lock::lock_recoverable).
    ///
    /// ```
    /// let lock = multiproc::Lock::new().unwrap();
    /// let g = lock.lock().unwrap();
    /// assert!(lock.is_locked());
    /// drop(g);
    /// assert!(!lock.is_locked());
    /// ```
    #[inline]
    pub fn lock(&self) -> Result<LockGuard<'_>> {
        Ok(self.lock_recoverable()?)
    }

    /// Acquires the lock and returns a guard, as [`lock`](Lock::lock) does; if the previous
    /// holder died holding it, an [`OwnerDiedError`] that holds the guard (like std's
    /// `PoisonError`): the lock is held, as after [`acquire`](Lock::acquire)'s
    /// [`Error::OwnerDied`]; take the guard with
    /// [`into_inner`](OwnerDiedError::into_inner), or let `?` turn it into
    /// [`Error::OwnerDied`], which releases the lock.
    ///
    /// ```
    /// let lock = multiproc::Lock::new().unwrap();
    /// let g = lock.lock_recoverable().unwrap_or_else(|died| died.into_inner());
    /// assert!(lock.is_locked());
    /// drop(g);
    /// ```
    #[inline]
    pub fn lock_recoverable(&self) -> LockResult<LockGuard<'_>> {
        let died = self.raw().lock(None) == Acquired::OwnerDied;
        let guard = LockGuard { lock: self };
        if died {
            Err(OwnerDiedError::new(guard))
        } else {
            Ok(guard)
        }
    }

    /// Is the lock held (by anyone)?
    ///
    /// ```
    /// let lock = multiproc::Lock::new().unwrap();
    /// assert!(!lock.is_locked());
    /// ```
    #[doc(alias = "locked")]
    pub fn is_locked(&self) -> bool {
        self.raw().holder_tid() != 0
    }

    /// Is the lock held by a thread of this process?
    pub(crate) fn held_here(&self) -> bool {
        self.raw().held_here()
    }
}

impl fmt::Debug for Lock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lock")
            .field("holder_tid", &self.raw().holder_tid())
            .finish()
    }
}

impl Serialize for Lock {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        // The kind of the segment it lives in (a Lock's own, or a Value's), its offset, and
        // the segment itself.
        let kind = self.seg.kind().0;
        (kind, self.off as u32, SegRef(&self.seg)).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Lock {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let (kind, off, fd, len) = <(u32, u32, codec::FdOwned, u64)>::deserialize(d)?;
        if !lock_kind_ok(kind) {
            return Err(serde::de::Error::custom("not a Lock handle"));
        }
        let len = usize::try_from(len).map_err(serde::de::Error::custom)?;
        let off = off as usize;
        if !off.is_multiple_of(8) || off.saturating_add(MUTEX_SIZE) > len {
            return Err(serde::de::Error::custom("Lock handle out of its segment"));
        }
        let seg = Segment::from_fd(fd.0, Kind(kind), len).map_err(crate::codec::handle_error)?;
        Ok(Lock { seg, off })
    }
}

/// Holds a [`Lock`] until dropped. Made by [`Lock::lock`].
///
/// ```
/// let lock = multiproc::Lock::new().unwrap();
/// let g = lock.lock().unwrap();
/// drop(g);
/// assert!(lock.try_acquire().unwrap());
/// ```
#[must_use = "the lock is released at once if the guard is not kept"]
pub struct LockGuard<'a> {
    lock: &'a Lock,
}

impl Drop for LockGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        self.lock.raw().unlock();
    }
}

impl fmt::Debug for LockGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LockGuard")
    }
}

// --- RLock --------------------------------------------------------------------------------

const RLOCK_TID: usize = MUTEX_SIZE;
const RLOCK_COUNT: usize = MUTEX_SIZE + 4;
const RLOCK_SIZE: usize = MUTEX_SIZE + 8;

/// A re-entrant lock shared between processes, like Python's `multiprocessing.RLock`.
///
/// The thread holding it may acquire it again; it is free once released as many times as
/// acquired. Only the holding thread may release it (anything else is an error). A holder
/// that dies is handled as for [`Lock`]: the next acquirer gets [`Error::OwnerDied`] with
/// the lock held (a count of one).
///
/// ```
/// let r = multiproc::RLock::new().unwrap();
/// r.acquire().unwrap();
/// r.acquire().unwrap();
/// r.release().unwrap();
/// r.release().unwrap();
/// assert!(r.release().is_err());
/// ```
#[derive(Clone)]
pub struct RLock {
    seg: Arc<Segment>,
}

impl RLock {
    /// A new, unlocked re-entrant lock.
    ///
    /// ```
    /// let r = multiproc::RLock::new().unwrap();
    /// let _g = r.lock().unwrap();
    /// ```
    pub fn new() -> Result<RLock> {
        Ok(RLock {
            seg: Segment::new(kinds::RLOCK, RLOCK_SIZE)?,
        })
    }

    #[inline]
    fn raw(&self) -> RawMutex<'_> {
        RawMutex::at(&self.seg, 0)
    }

    #[inline]
    fn owner_tid(&self) -> &AtomicU32 {
        self.seg.u32(RLOCK_TID)
    }

    #[inline]
    fn count(&self) -> &AtomicU32 {
        self.seg.u32(RLOCK_COUNT)
    }

    /// Does the calling thread hold it?
    #[inline]
    fn is_mine(&self) -> bool {
        self.owner_tid().load(Ordering::Relaxed) == futex::current_tid() && self.raw().held_here()
    }

    fn acquire_inner(&self, r: impl FnOnce(&RawMutex<'_>) -> Acquired) -> Result<bool> {
        if self.is_mine() {
            let c = self.count().load(Ordering::Relaxed);
            if c == u32::MAX {
                return Err(Error::invalid("RLock acquired too many times"));
            }
            self.count().store(c + 1, Ordering::Relaxed);
            return Ok(true);
        }
        let got = r(&self.raw());
        if got != Acquired::No {
            self.owner_tid()
                .store(futex::current_tid(), Ordering::Relaxed);
            self.count().store(1, Ordering::Relaxed);
        }
        owner_died_or(got)
    }

    /// Blocks until acquired (at once if this thread holds it already).
    ///
    /// [`Error::OwnerDied`]: the previous holder died holding it; the caller now holds it.
    ///
    /// ```
    /// let r = multiproc::RLock::new().unwrap();
    /// r.acquire().unwrap();
    /// r.release().unwrap();
    /// ```
    pub fn acquire(&self) -> Result<()> {
        self.acquire_inner(|m| m.lock(None)).map(|_| ())
    }

    /// Waits at most `timeout`: `true` if acquired.
    ///
    /// ```
    /// let r = multiproc::RLock::new().unwrap();
    /// assert!(r.acquire_timeout(std::time::Duration::from_millis(1)).unwrap());
    /// ```
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<bool> {
        self.acquire_inner(|m| m.lock(raw::deadline(timeout)))
    }

    /// Acquires it if free or already held by this thread: `true` if acquired.
    ///
    /// ```
    /// let r = multiproc::RLock::new().unwrap();
    /// assert!(r.try_acquire().unwrap());
    /// assert!(r.try_acquire().unwrap()); // re-entrant
    /// ```
    pub fn try_acquire(&self) -> Result<bool> {
        self.acquire_inner(|m| m.try_lock())
    }

    /// Releases one level. Error if the calling thread does not hold it.
    ///
    /// ```
    /// let r = multiproc::RLock::new().unwrap();
    /// assert!(r.release().is_err());
    /// ```
    pub fn release(&self) -> Result<()> {
        if !self.is_mine() {
            return Err(Error::invalid(
                "release of an RLock not held by this thread",
            ));
        }
        let c = self.count().load(Ordering::Relaxed);
        if c <= 1 {
            self.count().store(0, Ordering::Relaxed);
            self.owner_tid().store(0, Ordering::Relaxed);
            self.raw().unlock();
        } else {
            self.count().store(c - 1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Acquires it and returns a guard that releases one level when dropped.
    ///
    /// # Errors
    ///
    /// As [`Lock::lock`]: [`Error::OwnerDied`] if the previous holder died holding it,
    /// with the lock released again ([`lock_recoverable`](RLock::lock_recoverable) keeps
    /// it, with its guard).
    ///
    /// ```
    /// let r = multiproc::RLock::new().unwrap();
    /// let a = r.lock().unwrap();
    /// let b = r.lock().unwrap();
    /// drop((b, a));
    /// ```
    pub fn lock(&self) -> Result<RLockGuard<'_>> {
        Ok(self.lock_recoverable()?)
    }

    /// As [`lock`](RLock::lock), but a dead previous holder gives an [`OwnerDiedError`]
    /// holding the guard, as [`Lock::lock_recoverable`] does.
    ///
    /// ```
    /// let r = multiproc::RLock::new().unwrap();
    /// let g = r.lock_recoverable().unwrap_or_else(|died| died.into_inner());
    /// assert!(r.is_owned());
    /// drop(g);
    /// ```
    pub fn lock_recoverable(&self) -> LockResult<RLockGuard<'_>> {
        match self.acquire() {
            Err(Error::OwnerDied) => Err(OwnerDiedError::new(RLockGuard { lock: self })),
            // `acquire` fails only when the holder died.
            _ => Ok(RLockGuard { lock: self }),
        }
    }

    /// Releases it completely; returns the count to restore (for `Condition::wait`).
    pub(crate) fn release_all(&self) -> Result<u32> {
        if !self.is_mine() {
            return Err(Error::invalid("the RLock is not held by this thread"));
        }
        let c = self.count().load(Ordering::Relaxed);
        self.count().store(0, Ordering::Relaxed);
        self.owner_tid().store(0, Ordering::Relaxed);
        self.raw().unlock();
        Ok(c)
    }

    /// Re-acquires it `count` times (after [`RLock::release_all`]).
    pub(crate) fn acquire_restore(&self, count: u32) -> Result<()> {
        let r = self.acquire();
        if matches!(r, Ok(()) | Err(Error::OwnerDied)) {
            self.count().store(count.max(1), Ordering::Relaxed);
        }
        r
    }

    /// Does the calling thread hold it? (Python's `RLock._is_owned()`, which
    /// `Condition` uses.) Another thread of this process, or another process, holding it
    /// gives `false`.
    ///
    /// ```
    /// multiproc::init();
    /// fn held_in_child(r: multiproc::RLock) -> (bool, bool) {
    ///     (r.is_owned(), r.is_locked())
    /// }
    /// let r = multiproc::RLock::new().unwrap();
    /// assert!(!r.is_owned());
    /// let _g = r.lock().unwrap();
    /// assert!(r.is_owned());
    /// // Held, but not by the child.
    /// let h = multiproc::spawn(held_in_child, r.clone()).unwrap();
    /// assert_eq!(h.join().unwrap(), (false, true));
    /// ```
    #[doc(alias = "_is_owned")]
    pub fn is_owned(&self) -> bool {
        self.is_mine()
    }

    /// Is it held, by anyone?
    ///
    /// ```
    /// let r = multiproc::RLock::new().unwrap();
    /// assert!(!r.is_locked());
    /// r.acquire().unwrap();
    /// assert!(r.is_locked());
    /// r.release().unwrap();
    /// assert!(!r.is_locked());
    /// ```
    #[doc(alias = "locked")]
    pub fn is_locked(&self) -> bool {
        self.raw().holder_tid() != 0
    }
}

impl fmt::Debug for RLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RLock")
            .field("holder_tid", &self.raw().holder_tid())
            .field("count", &self.count().load(Ordering::Relaxed))
            .finish()
    }
}

impl Serialize for RLock {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.seg.serialize_handle(s)
    }
}

impl<'de> Deserialize<'de> for RLock {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let seg = Segment::deserialize_handle(d, kinds::RLOCK)?;
        if seg.data_len() < RLOCK_SIZE {
            return Err(serde::de::Error::custom("RLock segment too small"));
        }
        Ok(RLock { seg })
    }
}

/// Holds one level of an [`RLock`] until dropped. Made by [`RLock::lock`].
///
/// ```
/// let r = multiproc::RLock::new().unwrap();
/// drop(r.lock().unwrap());
/// assert!(r.release().is_err());
/// ```
#[must_use = "the lock is released at once if the guard is not kept"]
pub struct RLockGuard<'a> {
    lock: &'a RLock,
}

impl Drop for RLockGuard<'_> {
    fn drop(&mut self) {
        let _ = self.lock.release();
    }
}

impl fmt::Debug for RLockGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RLockGuard")
    }
}
