//! Events shared between processes.

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{kinds, raw};
use crate::codec;
use crate::ipc::bell::Bell;
use crate::ipc::segment::{SegRef, Segment};
use crate::sys::futex;
use crate::Result;

const FLAG: usize = 0;
const SLEEPERS: usize = 4;
/// Raised by an async waiter (see [`crate::ipc::bell`]).
const ARMED: usize = 8;
const SIZE: usize = 12;

/// A flag that processes can wait for, like Python's `multiprocessing.Event`.
///
/// ```
/// multiproc::init();
/// fn waiter(e: multiproc::Event) -> multiproc::Result<()> {
///     e.wait()?; // returns once the parent has set it
///     assert!(e.is_set());
///     Ok(())
/// }
/// let e = multiproc::Event::new().unwrap();
/// let mut p = multiproc::Process::new(waiter, e.clone());
/// p.start().unwrap();
/// e.set();
/// p.join().unwrap();
/// assert_eq!(p.exitcode(), Some(0));
/// ```
#[derive(Clone)]
pub struct Event {
    seg: Arc<Segment>,
    /// Rung by `set` for async waiters (the `tokio` feature).
    bell: Arc<Bell>,
}

impl Event {
    /// A new event, not set.
    ///
    /// ```
    /// assert!(!multiproc::Event::new().unwrap().is_set());
    /// ```
    pub fn new() -> Result<Event> {
        Ok(Event {
            seg: Segment::new(kinds::EVENT, SIZE)?,
            bell: Arc::new(Bell::new()?),
        })
    }

    fn flag(&self) -> &AtomicU32 {
        self.seg.u32(FLAG)
    }

    /// Is the flag set?
    ///
    /// ```
    /// let e = multiproc::Event::new().unwrap();
    /// e.set();
    /// assert!(e.is_set());
    /// ```
    pub fn is_set(&self) -> bool {
        self.flag().load(Ordering::Acquire) != 0
    }

    /// Sets the flag and wakes every waiter.
    ///
    /// ```
    /// let e = multiproc::Event::new().unwrap();
    /// e.set();
    /// assert!(e.wait_timeout(std::time::Duration::ZERO).unwrap());
    /// ```
    pub fn set(&self) {
        self.flag().store(1, Ordering::SeqCst);
        if self.seg.u32(SLEEPERS).load(Ordering::SeqCst) > 0 {
            futex::wake_all(self.flag());
        }
        self.bell.ring_if_armed(self.seg.u32(ARMED));
    }

    /// Clears the flag.
    ///
    /// ```
    /// let e = multiproc::Event::new().unwrap();
    /// e.set();
    /// e.clear();
    /// assert!(!e.is_set());
    /// ```
    pub fn clear(&self) {
        self.flag().store(0, Ordering::SeqCst);
    }

    fn wait_until(&self, deadline: Option<Instant>) -> bool {
        loop {
            if self.is_set() {
                return true;
            }
            let sleepers = self.seg.u32(SLEEPERS);
            sleepers.fetch_add(1, Ordering::SeqCst);
            let r = futex::wait_until(self.flag(), 0, deadline);
            sleepers.fetch_sub(1, Ordering::SeqCst);
            if r == futex::Wake::TimedOut {
                return self.is_set();
            }
        }
    }

    /// Waits until the flag is set.
    ///
    /// # Errors
    ///
    /// None today: the wait is a futex on the event's shared memory, which reports no
    /// error, and a process that dies can neither hold nor break an event. It returns a
    /// [`Result`] because the API contract writes `wait()?`, like
    /// [`Condition::wait`](crate::Condition::wait) and [`Barrier::wait`](crate::Barrier::wait)
    /// (which can fail), so that code waiting on any of them reads the same and a future
    /// cause of failure would not change the signature.
    ///
    /// ```
    /// multiproc::init();
    /// fn setter(e: multiproc::Event) {
    ///     e.set();
    /// }
    /// let e = multiproc::Event::new().unwrap();
    /// let mut p = multiproc::Process::new(setter, e.clone());
    /// p.start().unwrap();
    /// e.wait().unwrap(); // returns once the child has set it
    /// assert!(e.is_set());
    /// p.join().unwrap();
    /// ```
    pub fn wait(&self) -> Result<()> {
        self.wait_until(None);
        Ok(())
    }

    /// Waits at most `timeout` for the flag: its value at the end (`false`: timed out).
    ///
    /// # Errors
    ///
    /// None today, as for [`wait`](Event::wait); a timeout is `Ok(false)`, not an error.
    ///
    /// ```
    /// let e = multiproc::Event::new().unwrap();
    /// assert!(!e.wait_timeout(std::time::Duration::from_millis(5)).unwrap());
    /// ```
    pub fn wait_timeout(&self, timeout: Duration) -> Result<bool> {
        Ok(self.wait_until(raw::deadline(timeout)))
    }

    /// Waits until the flag is set without blocking the async runtime (the `tokio`
    /// feature): the async form of [`wait`](Event::wait). An error only if the wait
    /// cannot be registered with the runtime (outside a tokio runtime, or out of
    /// descriptors). See [`docs::asynchronous`](crate::docs::asynchronous).
    ///
    /// # Cancel safety
    /// Cancel-safe: waiting changes nothing, so dropping the future loses nothing.
    ///
    /// ```
    /// multiproc::init();
    /// fn setter(e: multiproc::Event) {
    ///     e.set();
    /// }
    /// let e = multiproc::Event::new().unwrap();
    /// let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    /// rt.block_on(async {
    ///     let h = multiproc::spawn(setter, e.clone()).unwrap();
    ///     e.wait_async().await.unwrap();
    ///     assert!(e.is_set());
    ///     h.join().unwrap();
    /// });
    /// ```
    #[cfg(feature = "tokio")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
    pub async fn wait_async(&self) -> Result<()> {
        let set = self.flag();
        // A sequentially consistent look, paired with `set`'s store (see `ipc::bell`).
        let look = || (set.load(Ordering::SeqCst) != 0).then_some(Ok(()));
        self.bell.wait(self.seg.u32(ARMED), look).await
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("is_set", &self.is_set())
            .finish()
    }
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        (SegRef(&self.seg), self.bell.fd().map(codec::FdRef)).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct EventSegment(Arc<Segment>);
        impl<'de> Deserialize<'de> for EventSegment {
            fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                Segment::deserialize_handle(d, kinds::EVENT).map(EventSegment)
            }
        }
        let (EventSegment(seg), bell) = <(EventSegment, Option<codec::FdOwned>)>::deserialize(d)?;
        if seg.data_len() < SIZE {
            return Err(serde::de::Error::custom("Event segment too small"));
        }
        let bell = Bell::from_fd(bell.map(|f| f.0)).map_err(codec::handle_error)?;
        Ok(Event {
            seg,
            bell: Arc::new(bell),
        })
    }
}
