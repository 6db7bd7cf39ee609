//! Queues between processes: [`Queue`], [`SimpleQueue`] and [`JoinableQueue`], like
//! Python's `multiprocessing.Queue`, `SimpleQueue` and `JoinableQueue`.
//!
//! # The model
//! A queue is a ring buffer in an anonymous shared-memory segment (a `memfd`, so nothing is
//! ever left in /dev/shm), mapped by every process that holds the queue. `put` encodes the
//! item (serde, with the crate's [codec]) straight into the ring and returns once it is there; `get`
//! copies it out. Waiting uses futexes: a blocked `get` sleeps in the kernel, uses no CPU,
//! and wakes as soon as an item arrives. Any number of processes may put and get; items
//! from one producer come out in the order it put them; no item is lost or duplicated.
//!
//! A queue is a handle: clone it, put it in a [`Process`](crate::Process)'s arguments, or
//! send it through a [`Connection`](crate::Connection) or another queue, and it arrives
//! working in the other process. Handles *inside* items (connections, other queues, …) work
//! too: their file descriptors travel on a side socket next to the ring.
//!
//! ```
//! multiproc::init();
//! use multiproc::Queue;
//!
//! fn worker((q, n): (Queue<u64>, u64)) {
//!     for i in 0..n {
//!         q.put(i * i).unwrap();
//!     }
//! }
//! let q = Queue::new().unwrap();
//! let mut p = multiproc::Process::new(worker, (q.clone(), 4));
//! p.start().unwrap();
//! // No feeder thread: the child's items are in shared memory when `put` returns, so
//! // joining the child before draining the queue cannot deadlock.
//! p.join().unwrap();
//! let got: Vec<u64> = (0..4).map(|_| q.get().unwrap()).collect();
//! assert_eq!(got, vec![0, 1, 4, 9]);
//! ```
//!
//! # Differences from CPython, and guarantees
//! * **No feeder thread.** `put` returns when the item is in shared memory. A child may
//!   put and exit at once; nothing is lost and `join` cannot deadlock on an unflushed pipe.
//! * **Capacity.** [`Queue::new`] has no limit, as in Python: `put` never waits for a
//!   consumer. The ring holds 4 MiB (unless [`Queue::with_capacity`] says otherwise);
//!   what does not fit waits in an overflow area of shared memory that grows as needed
//!   and is given back to the system as consumers read it (up to 64 GiB or 8 million
//!   items beyond the ring; past that, `put` waits). Items keep their order. An item larger than
//!   half the ring (up to 64 GiB) goes to a shared-memory segment of its own, whose
//!   descriptor travels next to the ring; its `put` never waits for a consumer. `put`
//!   encodes such an item straight into its segment (its large runs — strings, byte
//!   strings, vectors of numbers — written from the item's own memory, with no
//!   intermediate buffer). Up to 128 MiB the segment is one the producing process keeps
//!   and lends: the consumer copies the item out and gives the segment back, and the next
//!   large item is written into pages that already exist (several times faster than new
//!   ones). For that, a process keeps at most 4 such segments (260 MiB in all) and one
//!   copy buffer of up to 128 MiB for the items it receives, for as long as it lives.
//!   A larger item goes to a segment made for it and sealed read-only, which `get` decodes
//!   in place. Either way `get` copies each large run once more into the decoded value,
//!   whose fresh memory is prepared for that copy (advised to use huge pages from 4 MiB;
//!   from 128 MiB on, all its pages made at once before the copy).
//!   To skip those copies, send the bytes as a
//!   [`SharedBytes`](crate::shared_memory::SharedBytes), which travels by handle and is
//!   read where it lies. ([`Queue::streaming`] streams large items through the ring in
//!   chunks instead, using no extra memory.)
//!   [`Queue::bounded`]`(maxsize)` also limits the number of items, as Python's
//!   `Queue(maxsize)` does. The descriptors of spilled items and of handles inside items
//!   wait in a socket buffer, which holds a few hundred of them (about 270 with Linux's
//!   default `net.core.wmem_max`): beyond that, such a `put` also waits for a consumer.
//! * **Robustness.** A producer killed at any moment, even in the middle of an item,
//!   leaves no partial item behind (or, for a streamed item, a partial one that consumers
//!   drop); a consumer killed while taking an item leaves it for the next consumer (except
//!   a streamed item, which is lost with it). A lock held by a dead process is taken over
//!   by the next process that wants it, at once (a robust mutex sees that its holder
//!   died), so nothing wedges. Garbage in the shared memory gives
//!   [`Error::Codec`], never a panic.
//! * **`close`** is, as in Python, about this process's handle: afterwards `put` and `get`
//!   on it (and on its clones in this process) fail with [`Error::Closed`]. Other
//!   processes are not affected, and items already in the queue stay there for them.
//! * `qsize`, `empty` and `full` are snapshots, exact at the instant they look.
//!
//! # Async
//! With the `tokio` feature, `Queue::get_async` and `Queue::put_async` (and the same on
//! [`SimpleQueue`], and on [`JoinableQueue`] through `Deref`) wait without blocking the
//! runtime's thread, and a dropped `get_async` has taken nothing. See
//! [`docs::asynchronous`](crate::docs::asynchronous).

use std::cell::RefCell;
use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ipc::bell::Bell;
use crate::ipc::ring::Ring;
use crate::{codec, sys, Error, Result};

thread_local! {
    /// Reused encoding / decoding buffers (one pair per thread).
    static ENC: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    static DEC: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Buffers bigger than this are not kept for reuse after a call.
const KEEP_BUF: usize = 32 << 20;

fn with_buf<R>(
    key: &'static std::thread::LocalKey<RefCell<Vec<u8>>>,
    f: impl FnOnce(&mut Vec<u8>) -> R,
) -> R {
    key.with(|c| match c.try_borrow_mut() {
        Ok(mut b) => {
            let r = f(&mut b);
            if b.capacity() > KEEP_BUF {
                *b = Vec::new();
            }
            r
        }
        // Re-entered (an item's serde code used a queue): use a fresh buffer.
        Err(_) => f(&mut Vec::new()),
    })
}

/// Why a [`Queue::try_put_giving_back`] or [`Queue::put_timeout_giving_back`] did not put
/// its value, with the value handed back (crossbeam's `TrySendError` in `multiproc`'s
/// terms). Nothing was put. ([`Queue::try_put`] and [`Queue::put_timeout`], the contract's
/// forms, return the plain [`Error`] and drop the value.)
///
/// `?` in a function returning [`multiproc::Result`](crate::Result) converts it to
/// [`Error::Full`], [`Error::Closed`] or the underlying error, dropping the value.
///
/// ```
/// use multiproc::queue::TryPutError;
/// let q = multiproc::Queue::<Vec<u8>>::bounded(1).unwrap();
/// q.put(vec![1]).unwrap();
/// let e = q.try_put_giving_back(vec![2, 3]).unwrap_err();
/// assert!(e.is_full());
/// assert_eq!(e.to_string(), "full");
/// assert_eq!(e.into_inner(), vec![2, 3]);
///
/// fn put_now(q: &multiproc::Queue<u8>) -> multiproc::Result<()> {
///     q.try_put_giving_back(1)?; // the error becomes multiproc::Error::Full
///     Ok(())
/// }
/// let q = multiproc::Queue::<u8>::bounded(1).unwrap();
/// put_now(&q).unwrap();
/// assert!(matches!(put_now(&q), Err(multiproc::Error::Full)));
/// ```
#[non_exhaustive]
pub enum TryPutError<T> {
    /// The queue was full (for the whole timeout, for `put_timeout`).
    Full(T),
    /// This handle was [`close`](Queue::close)d.
    Closed(T),
    /// Another failure: the value could not be encoded ([`Error::Codec`]), or an
    /// operating-system call failed.
    Failed(T, Error),
}

impl<T> TryPutError<T> {
    pub(crate) fn new(value: T, e: Error) -> TryPutError<T> {
        match e {
            Error::Full => TryPutError::Full(value),
            Error::Closed => TryPutError::Closed(value),
            e => TryPutError::Failed(value, e),
        }
    }

    /// The value that was not put.
    ///
    /// ```
    /// let q = multiproc::Queue::<u8>::bounded(1).unwrap();
    /// q.put(1).unwrap();
    /// assert_eq!(q.try_put_giving_back(7).unwrap_err().into_inner(), 7);
    /// ```
    pub fn into_inner(self) -> T {
        match self {
            TryPutError::Full(v) | TryPutError::Closed(v) | TryPutError::Failed(v, _) => v,
        }
    }

    /// Whether the queue was full.
    ///
    /// ```
    /// let q = multiproc::Queue::<u8>::bounded(1).unwrap();
    /// q.put(1).unwrap();
    /// assert!(q.try_put_giving_back(2).unwrap_err().is_full());
    /// ```
    pub fn is_full(&self) -> bool {
        matches!(self, TryPutError::Full(_))
    }

    /// Whether the handle was closed.
    ///
    /// ```
    /// let q = multiproc::Queue::<u8>::new().unwrap();
    /// q.close();
    /// assert!(q.try_put_giving_back(2).unwrap_err().is_closed());
    /// ```
    pub fn is_closed(&self) -> bool {
        matches!(self, TryPutError::Closed(_))
    }
}

impl<T> fmt::Debug for TryPutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TryPutError::Full(_) => f.write_str("Full(..)"),
            TryPutError::Closed(_) => f.write_str("Closed(..)"),
            TryPutError::Failed(_, e) => f.debug_tuple("Failed").field(&"..").field(e).finish(),
        }
    }
}

impl<T> fmt::Display for TryPutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TryPutError::Full(_) => fmt::Display::fmt(&Error::Full, f),
            TryPutError::Closed(_) => fmt::Display::fmt(&Error::Closed, f),
            TryPutError::Failed(_, e) => fmt::Display::fmt(e, f),
        }
    }
}

impl<T> std::error::Error for TryPutError<T> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TryPutError::Failed(_, e) => e.source(),
            _ => None,
        }
    }
}

impl<T> From<TryPutError<T>> for Error {
    fn from(e: TryPutError<T>) -> Error {
        match e {
            TryPutError::Full(_) => Error::Full,
            TryPutError::Closed(_) => Error::Closed,
            TryPutError::Failed(_, e) => e,
        }
    }
}

struct Shared {
    ring: Ring,
    /// Side socket pair for descriptors: producers send on `tx`, consumers read `rx`.
    tx: OwnedFd,
    rx: OwnedFd,
    closed: AtomicBool,
    /// Rung for async waiters (the `tokio` feature) by every put, get and shutdown.
    bell: Bell,
}

/// A multi-producer, multi-consumer queue between processes (Python's
/// `multiprocessing.Queue`). See the [module docs](self) for the model.
///
/// ```
/// multiproc::init();
/// let q = multiproc::Queue::<String>::new().unwrap();
/// q.put("hello".to_string()).unwrap();
/// assert_eq!(q.qsize(), 1);
/// assert_eq!(q.get().unwrap(), "hello");
/// assert!(matches!(q.try_get(), Err(multiproc::Error::Empty)));
/// ```
pub struct Queue<T> {
    shared: Arc<Shared>,
    _t: PhantomData<fn(T) -> T>,
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Queue {
            shared: Arc::clone(&self.shared),
            _t: PhantomData,
        }
    }
}

impl<T> fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("qsize", &self.qsize())
            .field("maxsize", &self.maxsize())
            .field("closed", &self.shared.closed.load(Ordering::Relaxed))
            .finish()
    }
}

fn deadline_after(d: Duration) -> Option<Instant> {
    // A timeout too large to represent waits for ever.
    Some(crate::sys::deadline(d).unwrap_or_else(far_future))
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(100 * 365 * 86400)
}

impl<T> Queue<T> {
    /// A new queue with no item limit (Python's `Queue()`).
    ///
    /// ```
    /// let q = multiproc::Queue::<u8>::new().unwrap();
    /// assert!(q.empty());
    /// assert!(!q.full());
    /// ```
    pub fn new() -> Result<Self> {
        Self::with_capacity(0, crate::ipc::ring::DEFAULT_CAP)
    }

    /// A queue holding at most `maxsize` items (Python's `Queue(maxsize)`): `put` waits
    /// while it is full. `maxsize == 0` means no limit, as in Python.
    ///
    /// ```
    /// let q = multiproc::Queue::<u8>::bounded(1).unwrap();
    /// q.put(1).unwrap();
    /// assert!(q.full());
    /// assert!(matches!(q.try_put(2), Err(multiproc::Error::Full)));
    /// ```
    pub fn bounded(maxsize: usize) -> Result<Self> {
        Self::with_capacity(maxsize, crate::ipc::ring::DEFAULT_CAP)
    }

    /// A queue of at most `maxsize` items (0: no limit) whose ring holds `ring_bytes` bytes
    /// (rounded up to a power of two, between 4 KiB and 64 MiB). Items larger than half the
    /// ring each go to a shared-memory segment of their own (see also
    /// [`streaming`](Queue::streaming)).
    ///
    /// ```
    /// let q = multiproc::Queue::<u32>::with_capacity(10, 64 * 1024).unwrap();
    /// assert_eq!(q.maxsize(), 10);
    /// q.put(1).unwrap();
    /// assert_eq!(q.get().unwrap(), 1);
    /// ```
    pub fn with_capacity(maxsize: usize, ring_bytes: usize) -> Result<Self> {
        Self::make(maxsize, ring_bytes, false)
    }

    /// Like [`with_capacity`](Queue::with_capacity), but items larger than half the ring
    /// are streamed through the ring in chunks instead of being put in a shared-memory
    /// segment of their own: no extra memory, but such a `put` then waits for a consumer
    /// to read the item as it is written (as a pipe would). A consumer that dies in the
    /// middle of a streamed item loses that item; a producer that dies in the middle leaves
    /// a partial item that consumers drop.
    ///
    /// ```
    /// let q = multiproc::Queue::<Vec<u8>>::streaming(0, 4096).unwrap();
    /// let q2 = q.clone();
    /// let t = std::thread::spawn(move || q2.put(vec![1; 100_000]));
    /// assert_eq!(q.get().unwrap().len(), 100_000);
    /// t.join().unwrap().unwrap();
    /// ```
    pub fn streaming(maxsize: usize, ring_bytes: usize) -> Result<Self> {
        Self::make(maxsize, ring_bytes, true)
    }

    fn make(maxsize: usize, ring_bytes: usize, stream_large: bool) -> Result<Self> {
        let ring = Ring::create(ring_bytes, maxsize, stream_large)?;
        let (tx, rx) = sys::dgram_pair()?;
        Ok(Queue {
            shared: Arc::new(Shared {
                ring,
                tx,
                rx,
                closed: AtomicBool::new(false),
                bell: Bell::new()?,
            }),
            _t: PhantomData,
        })
    }

    /// The item limit given to [`bounded`](Queue::bounded) (0: none).
    ///
    /// ```
    /// assert_eq!(multiproc::Queue::<u8>::bounded(3).unwrap().maxsize(), 3);
    /// ```
    pub fn maxsize(&self) -> usize {
        self.shared.ring.maxsize()
    }

    /// Number of items in the queue now.
    ///
    /// It still answers after [`close`](Queue::close), for the queue as a whole (as
    /// Python's `qsize()` does): closing stops this handle's `put` and `get`, not other
    /// processes', and the items stay.
    ///
    /// ```
    /// let q = multiproc::Queue::<u8>::new().unwrap();
    /// q.put(1).unwrap();
    /// q.put(2).unwrap();
    /// assert_eq!(q.qsize(), 2);
    /// q.close();
    /// assert_eq!(q.qsize(), 2);
    /// ```
    pub fn qsize(&self) -> usize {
        self.shared.ring.len()
    }

    /// Number of items in the queue now: Rust's name for [`qsize`](Queue::qsize).
    ///
    /// ```
    /// let q = multiproc::Queue::<u8>::new().unwrap();
    /// q.put(1).unwrap();
    /// assert_eq!(q.len(), 1);
    /// ```
    #[doc(alias = "qsize")]
    pub fn len(&self) -> usize {
        self.shared.ring.len()
    }

    /// Whether the queue is empty now.
    ///
    /// After [`close`](Queue::close) it still tells whether the queue holds items (other
    /// processes may still put and get): closing is about this handle's `put` and `get`,
    /// which give [`Error::Closed`]; [`is_closed`](Queue::is_closed) tells whether it was
    /// closed. (Python 3.11's `empty()` raises `OSError: handle is closed` then, only
    /// because `close()` closed its reader pipe, while its `qsize()` and `full()` go on
    /// answering; here the three agree, and none can fail.)
    ///
    /// ```
    /// let q = multiproc::Queue::<u8>::new().unwrap();
    /// assert!(q.empty());
    /// q.put(1).unwrap();
    /// q.close();
    /// assert!(!q.empty()); // the item is still there, for other processes to take
    /// assert!(matches!(q.get(), Err(multiproc::Error::Closed)));
    /// ```
    pub fn empty(&self) -> bool {
        self.is_empty()
    }

    /// Whether the queue is empty now: Rust's name for [`empty`](Queue::empty).
    ///
    /// ```
    /// let q = multiproc::Queue::<u8>::new().unwrap();
    /// assert!(q.is_empty());
    /// q.put(1).unwrap();
    /// assert!(!q.is_empty());
    /// ```
    #[doc(alias = "empty")]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether a bounded queue is full now: Rust's name for [`full`](Queue::full).
    ///
    /// ```
    /// let q = multiproc::Queue::<u8>::bounded(1).unwrap();
    /// q.put(1).unwrap();
    /// assert!(q.is_full());
    /// ```
    #[doc(alias = "full")]
    pub fn is_full(&self) -> bool {
        self.shared.ring.is_full()
    }

    /// Whether a bounded queue holds `maxsize` items now (always false without a limit).
    /// It still answers after [`close`](Queue::close), as [`empty`](Queue::empty) does.
    ///
    /// ```
    /// let q = multiproc::Queue::<u8>::bounded(1).unwrap();
    /// assert!(!q.full());
    /// q.put(0).unwrap();
    /// assert!(q.full());
    /// q.close();
    /// assert!(q.full());
    /// ```
    pub fn full(&self) -> bool {
        self.shared.ring.is_full()
    }

    /// Closes this process's handle (and its clones in this process): later `put` and
    /// `get` through it fail with [`Error::Closed`]. Other processes are not affected and
    /// items already in the queue stay there, as with Python's `Queue.close()`.
    ///
    /// Every form of `put` and `get` (blocking, with a timeout, `try_`, async) then fails
    /// with [`Error::Closed`] at once, as Python 3.11's raise `ValueError: Queue … is
    /// closed`; one waiting in another thread of this process wakes with it. The state
    /// queries go on answering for the queue as a whole: [`empty`](Queue::empty),
    /// [`qsize`](Queue::qsize), [`full`](Queue::full) (see `empty` for how this differs
    /// from Python's `empty()`). Closing twice is harmless.
    ///
    /// ```
    /// let q = multiproc::Queue::<u8>::new().unwrap();
    /// q.close();
    /// assert!(matches!(q.put(1), Err(multiproc::Error::Closed)));
    /// assert!(matches!(q.get(), Err(multiproc::Error::Closed)));
    /// ```
    pub fn close(&self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        self.shared.ring.close_here();
        self.shared.bell.ring();
    }

    /// Whether [`close`](Queue::close) was called on this handle.
    ///
    /// ```
    /// let q = multiproc::Queue::<u8>::new().unwrap();
    /// assert!(!q.is_closed());
    /// ```
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Relaxed)
    }

    /// Shuts the queue down for every process that holds it (Python 3.13's
    /// `Queue.shutdown()`): from now on `put` fails with [`Error::ShutDown`]; `get` still
    /// takes the items left, then fails with [`Error::ShutDown`] instead of waiting. Every
    /// put and get waiting now, in any process, wakes at once. It cannot be undone.
    ///
    /// ```
    /// multiproc::init();
    /// use multiproc::{Error, Queue};
    /// fn consume(q: Queue<u32>) -> u32 {
    ///     let mut sum = 0;
    ///     loop {
    ///         match q.get() {
    ///             Ok(x) => sum += x,
    ///             Err(Error::ShutDown) => return sum, // drained and shut down
    ///             Err(e) => panic!("{e}"),
    ///         }
    ///     }
    /// }
    /// let q = Queue::new().unwrap();
    /// let h = multiproc::spawn(consume, q.clone()).unwrap();
    /// for x in 1..=4 {
    ///     q.put(x).unwrap();
    /// }
    /// q.shutdown();
    /// assert!(matches!(q.put(5), Err(Error::ShutDown)));
    /// assert_eq!(h.join().unwrap(), 10);
    /// ```
    pub fn shutdown(&self) {
        self.shared.ring.shutdown(false);
        self.shared.bell.ring();
    }

    /// Shuts the queue down and throws away the items left in it (Python 3.13's
    /// `Queue.shutdown(immediate=True)`): every `put` and `get`, in any process, fails with
    /// [`Error::ShutDown`] from now on, and the items thrown away count as done for
    /// [`JoinableQueue::join`].
    ///
    /// ```
    /// let q = multiproc::Queue::<u8>::new().unwrap();
    /// q.put(1).unwrap();
    /// q.shutdown_immediate();
    /// assert!(q.empty());
    /// assert!(matches!(q.get(), Err(multiproc::Error::ShutDown)));
    /// ```
    #[doc(alias = "shutdown")]
    pub fn shutdown_immediate(&self) {
        self.shared.ring.shutdown(true);
        self.shared.bell.ring();
    }

    /// Whether the queue was shut down, by any process (Python's `is_shutdown`).
    ///
    /// ```
    /// let q = multiproc::Queue::<u8>::new().unwrap();
    /// assert!(!q.is_shutdown());
    /// q.shutdown();
    /// assert!(q.is_shutdown());
    /// ```
    pub fn is_shutdown(&self) -> bool {
        self.shared.ring.is_shut_down()
    }

    fn check_open(&self) -> Result<()> {
        if self.shared.closed.load(Ordering::Relaxed) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }
}

impl<T: Serialize> Queue<T> {
    fn put_inner(&self, value: &T, deadline: Option<Instant>) -> Result<()> {
        self.check_open()?;
        let ring = &self.shared.ring;
        with_buf(&ENC, |buf| {
            buf.clear();
            // An item that will not fit the ring is encoded straight into the sealed
            // segment that carries it (no copy of the whole item in between).
            let spill_at = ring.spill_threshold().unwrap_or(usize::MAX);
            let (fds, file) = codec::encode_spilling(value, buf, spill_at)?;
            let fds = crate::ipc::conn::borrowed(&fds);
            match file {
                Some((seg, len)) => {
                    ring.put_sealed(seg, len, &fds, self.shared.tx.as_fd(), deadline)
                }
                None => ring.put(buf, &fds, self.shared.tx.as_fd(), deadline),
            }
        })?;
        self.shared.bell.ring_if_armed(self.shared.ring.armed());
        Ok(())
    }

    /// Puts `value` in the queue, waiting while a bounded queue is full (or the ring has
    /// no room). Returns once the item is in shared memory.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] after [`close`](Queue::close) on this handle (or a clone of it in
    /// this process); [`Error::ShutDown`] after [`shutdown`](Queue::shutdown);
    /// [`Error::Codec`] when `value` cannot be encoded (nothing is put); [`Error::Io`] when
    /// the system refuses the memory a large item needs.
    ///
    /// ```
    /// let q = multiproc::Queue::<(String, u32)>::new().unwrap();
    /// q.put(("bob".into(), 12)).unwrap();
    /// assert_eq!(q.get().unwrap(), ("bob".to_string(), 12));
    /// ```
    pub fn put(&self, value: T) -> Result<()> {
        self.put_inner(&value, None)
    }

    /// Puts a copy of `*value` in the queue, leaving `value` with the caller, as Python's
    /// `q.put(obj)` leaves `obj` to its owner; otherwise as [`put`](Queue::put). The item
    /// is encoded straight from `value`'s memory: no clone is made first, which matters
    /// for a large array or vector put again and again.
    ///
    /// ```
    /// let q = multiproc::Queue::<Vec<f64>>::new().unwrap();
    /// let data = vec![1.5; 1000];
    /// q.put_ref(&data).unwrap();
    /// q.put_ref(&data).unwrap(); // `data` is still ours
    /// assert_eq!(q.get().unwrap(), data);
    /// assert_eq!(q.get().unwrap(), data);
    /// ```
    pub fn put_ref(&self, value: &T) -> Result<()> {
        self.put_inner(value, None)
    }

    /// Like [`put`](Queue::put), but gives up after `timeout`.
    ///
    /// # Errors
    ///
    /// [`Error::Full`] if a bounded queue stayed full (or the ring had no room) for the
    /// whole timeout, like Python's `queue.Full`; the value is dropped
    /// ([`put_timeout_giving_back`](Queue::put_timeout_giving_back) hands it back). Otherwise
    /// as [`put`](Queue::put).
    ///
    /// ```
    /// use std::time::Duration;
    /// let q = multiproc::Queue::<u8>::bounded(1).unwrap();
    /// q.put_timeout(1, Duration::from_millis(10)).unwrap();
    /// let r = q.put_timeout(2, Duration::from_millis(10));
    /// assert!(matches!(r, Err(multiproc::Error::Full)));
    /// ```
    pub fn put_timeout(&self, value: T, timeout: Duration) -> Result<()> {
        self.put_inner(&value, deadline_after(timeout))
    }

    /// Puts `value` only if that needs no waiting (Python's `put_nowait`).
    ///
    /// # Errors
    ///
    /// [`Error::Full`] on a full queue, like Python's `queue.Full`; the value is dropped
    /// ([`try_put_giving_back`](Queue::try_put_giving_back) hands it back). Otherwise as
    /// [`put`](Queue::put).
    ///
    /// ```
    /// let q = multiproc::Queue::<String>::bounded(1).unwrap();
    /// q.try_put("first".to_string()).unwrap();
    /// assert!(matches!(q.try_put("second".to_string()), Err(multiproc::Error::Full)));
    /// ```
    #[doc(alias = "put_nowait")]
    pub fn try_put(&self, value: T) -> Result<()> {
        self.put_inner(&value, Some(Instant::now()))
    }

    /// [`put_timeout`](Queue::put_timeout) that hands `value` back when it was not put:
    /// [`TryPutError::Full`] after the timeout. `?` turns the error into [`Error::Full`]
    /// (dropping the value).
    ///
    /// ```
    /// use std::time::Duration;
    /// use multiproc::queue::TryPutError;
    /// let q = multiproc::Queue::<u8>::bounded(1).unwrap();
    /// q.put(1).unwrap();
    /// let r = q.put_timeout_giving_back(2, Duration::from_millis(10));
    /// assert!(matches!(r, Err(TryPutError::Full(2))));
    /// ```
    pub fn put_timeout_giving_back(
        &self,
        value: T,
        timeout: Duration,
    ) -> Result<(), TryPutError<T>> {
        self.put_giving_back(value, deadline_after(timeout))
    }

    /// [`try_put`](Queue::try_put) that hands `value` back when it was not put: on a full
    /// queue [`TryPutError::Full`] with `value`, like crossbeam's `TrySendError::Full`.
    /// `?` turns the error into [`Error::Full`].
    ///
    /// ```
    /// use multiproc::queue::TryPutError;
    /// let q = multiproc::Queue::<String>::bounded(1).unwrap();
    /// q.try_put("first".to_string()).unwrap();
    /// match q.try_put_giving_back("second".to_string()) {
    ///     Err(TryPutError::Full(back)) => assert_eq!(back, "second"),
    ///     other => panic!("{other:?}"),
    /// }
    /// ```
    pub fn try_put_giving_back(&self, value: T) -> Result<(), TryPutError<T>> {
        self.put_giving_back(value, Some(Instant::now()))
    }

    fn put_giving_back(&self, value: T, deadline: Option<Instant>) -> Result<(), TryPutError<T>> {
        match self.put_inner(&value, deadline) {
            Ok(()) => Ok(()),
            Err(e) => Err(TryPutError::new(value, e)),
        }
    }
}

impl<T: DeserializeOwned> Queue<T> {
    fn get_inner(&self, deadline: Option<Instant>) -> Result<T> {
        self.check_open()?;
        with_buf(&DEC, |buf| {
            let r = self
                .shared
                .ring
                .get(buf, self.shared.rx.as_fd(), deadline)?;
            // Room was made and the consumers' lock let go: tell async waiters.
            self.shared.bell.ring_if_armed(self.shared.ring.armed());
            match &r.spilled {
                Some(seg) => codec::decode_with_fds(seg.as_slice(), r.fds),
                None => codec::decode_with_fds(buf, r.fds),
            }
        })
    }

    /// Takes the next item, waiting for one as long as needed.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] after [`close`](Queue::close) on this handle; [`Error::ShutDown`]
    /// once the queue is shut down and nothing is left; [`Error::Codec`] when the item's
    /// bytes do not decode as a `T` (another program's queue, or garbage in the shared
    /// memory): never a panic.
    ///
    /// ```
    /// let q = multiproc::Queue::<Vec<u32>>::new().unwrap();
    /// q.put(vec![1, 2]).unwrap();
    /// assert_eq!(q.get().unwrap(), vec![1, 2]);
    /// ```
    pub fn get(&self) -> Result<T> {
        self.get_inner(None)
    }

    /// Like [`get`](Queue::get), but gives up with [`Error::Empty`] after `timeout`.
    ///
    /// ```
    /// use std::time::Duration;
    /// let q = multiproc::Queue::<u8>::new().unwrap();
    /// assert!(matches!(q.get_timeout(Duration::from_millis(10)), Err(multiproc::Error::Empty)));
    /// ```
    pub fn get_timeout(&self, timeout: Duration) -> Result<T> {
        self.get_inner(deadline_after(timeout))
    }

    /// Takes an item only if one is ready; [`Error::Empty`] otherwise (Python's
    /// `get_nowait`).
    ///
    /// ```
    /// let q = multiproc::Queue::<u8>::new().unwrap();
    /// assert!(matches!(q.try_get(), Err(multiproc::Error::Empty)));
    /// q.put(3).unwrap();
    /// assert_eq!(q.try_get().unwrap(), 3);
    /// ```
    #[doc(alias = "get_nowait")]
    pub fn try_get(&self) -> Result<T> {
        self.get_inner(Some(Instant::now()))
    }
}

/// Async forms (the `tokio` feature): they wait without blocking the runtime's thread. See
/// [`docs::asynchronous`](crate::docs::asynchronous) for how, and what runtime they need.
#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
impl<T: DeserializeOwned> Queue<T> {
    /// Takes the next item, waiting for one without blocking the async runtime: the async
    /// form of [`get`](Queue::get), with the same errors.
    ///
    /// # Cancel safety
    /// Cancel-safe: an item is taken only inside the poll that returns it, so a future
    /// dropped before it completed (in a `tokio::select!` branch that lost, under
    /// `tokio::time::timeout`, ...) has taken nothing, and the item stays in the queue for
    /// the next `get`, in this process or another.
    ///
    /// ```
    /// multiproc::init();
    /// fn produce(q: multiproc::Queue<u32>) {
    ///     q.put(42).unwrap();
    /// }
    /// let q = multiproc::Queue::new().unwrap();
    /// let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    /// rt.block_on(async {
    ///     let mut p = multiproc::Process::new(produce, q.clone());
    ///     p.start().unwrap();
    ///     assert_eq!(q.get_async().await.unwrap(), 42);
    ///     p.join().unwrap();
    /// });
    /// ```
    pub async fn get_async(&self) -> Result<T> {
        let armed = self.shared.ring.armed();
        self.shared
            .bell
            .wait(armed, || match self.try_get() {
                Err(Error::Empty) => None,
                r => Some(r),
            })
            .await
    }
}

/// Async forms (the `tokio` feature).
#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
impl<T: Serialize> Queue<T> {
    /// Puts `value`, waiting while a bounded queue is full without blocking the async
    /// runtime: the async form of [`put`](Queue::put).
    ///
    /// # Cancel safety
    /// The item goes in whole or not at all, inside one poll. A future dropped before it
    /// completed has put nothing, and `value`, which it owns, is dropped with it (as with
    /// tokio's `Sender::send`): to keep the value, wait with
    /// [`try_put_giving_back`](Queue::try_put_giving_back), which hands it back.
    ///
    /// On a [`streaming`](Queue::streaming) queue, an item larger than half the ring needs
    /// its consumer at the same time: put it with the blocking [`put`](Queue::put) (from
    /// `tokio::task::spawn_blocking`), not with `put_async`, whose attempts would each
    /// leave a partial item for consumers to skip.
    ///
    /// ```
    /// let q = multiproc::Queue::<u8>::bounded(1).unwrap();
    /// let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    /// rt.block_on(async {
    ///     q.put_async(1).await.unwrap();
    ///     // Full: the second put waits until the get below makes room.
    ///     let (put, got) = tokio::join!(q.put_async(2), q.get_async());
    ///     put.unwrap();
    ///     assert_eq!(got.unwrap(), 1);
    ///     assert_eq!(q.get_async().await.unwrap(), 2);
    /// });
    /// ```
    pub async fn put_async(&self, value: T) -> Result<()> {
        let armed = self.shared.ring.armed();
        self.shared
            .bell
            .wait(armed, || {
                match self.put_inner(&value, Some(Instant::now())) {
                    Err(Error::Full) => None,
                    r => Some(r),
                }
            })
            .await
    }
}

/// Ready when an item waits, or when this handle is closed or the queue shut down (a `get`
/// would not block);
/// see [`wait`](crate::connection::wait). A queue has no descriptor: `wait` looks at it
/// every few milliseconds.
///
/// ```
/// multiproc::init();
/// use multiproc::connection::Waitable;
/// let q = multiproc::Queue::<u8>::new().unwrap();
/// assert!(!q.is_ready().unwrap());
/// q.put(1).unwrap();
/// assert!(q.is_ready().unwrap());
/// ```
impl<T> crate::connection::Waitable for Queue<T> {
    fn wait_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        None
    }

    fn is_ready(&self) -> Result<bool> {
        Ok(!self.empty() || self.is_closed() || self.is_shutdown())
    }
}

impl<T> Serialize for Queue<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Queue", 5)?;
        st.serialize_field("mem", &codec::FdRef(self.shared.ring.fd()))?;
        st.serialize_field("tx", &codec::FdRef(self.shared.tx.as_fd()))?;
        st.serialize_field("rx", &codec::FdRef(self.shared.rx.as_fd()))?;
        st.serialize_field("ovf", &self.shared.ring.overflow_fd().map(codec::FdRef))?;
        st.serialize_field("bell", &self.shared.bell.fd().map(codec::FdRef))?;
        st.end()
    }
}

impl<'de, T> Deserialize<'de> for Queue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(rename = "Queue")]
        struct W {
            mem: codec::FdOwned,
            tx: codec::FdOwned,
            rx: codec::FdOwned,
            ovf: Option<codec::FdOwned>,
            bell: Option<codec::FdOwned>,
        }
        let w = W::deserialize(d)?;
        let ring =
            Ring::from_fd(w.mem.0, w.ovf.map(|f| f.0)).map_err(crate::codec::handle_error)?;
        Ok(Queue {
            shared: Arc::new(Shared {
                ring,
                tx: w.tx.0,
                rx: w.rx.0,
                closed: AtomicBool::new(false),
                bell: Bell::from_fd(w.bell.map(|f| f.0)).map_err(crate::codec::handle_error)?,
            }),
            _t: PhantomData,
        })
    }
}

/// A simpler queue with only `put`, `get`, `empty` and `close` (Python's
/// `multiprocessing.SimpleQueue`). The same shared-memory ring as [`Queue`], without an item
/// limit.
///
/// ```
/// multiproc::init();
/// let q = multiproc::SimpleQueue::<i32>::new().unwrap();
/// q.put(5).unwrap();
/// assert!(!q.empty());
/// assert_eq!(q.get().unwrap(), 5);
/// assert!(q.empty());
/// ```
pub struct SimpleQueue<T> {
    q: Queue<T>,
}

impl<T> Clone for SimpleQueue<T> {
    fn clone(&self) -> Self {
        SimpleQueue { q: self.q.clone() }
    }
}

impl<T> fmt::Debug for SimpleQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimpleQueue")
            .field("empty", &self.empty())
            .finish()
    }
}

impl<T> SimpleQueue<T> {
    /// A new, empty queue.
    ///
    /// ```
    /// let q = multiproc::SimpleQueue::<u8>::new().unwrap();
    /// assert!(q.empty());
    /// ```
    pub fn new() -> Result<Self> {
        Ok(SimpleQueue { q: Queue::new()? })
    }

    /// Whether the queue is empty now.
    ///
    /// ```
    /// let q = multiproc::SimpleQueue::<u8>::new().unwrap();
    /// q.put(1).unwrap();
    /// assert!(!q.empty());
    /// ```
    pub fn empty(&self) -> bool {
        self.q.empty()
    }

    /// Whether the queue is empty now: Rust's name for [`empty`](SimpleQueue::empty).
    ///
    /// ```
    /// let q = multiproc::SimpleQueue::<u8>::new().unwrap();
    /// assert!(q.is_empty());
    /// ```
    #[doc(alias = "empty")]
    pub fn is_empty(&self) -> bool {
        self.q.is_empty()
    }

    /// Closes this process's handle: later `put`/`get` through it give [`Error::Closed`]
    /// (one waiting in another thread wakes with it), while [`empty`](SimpleQueue::empty)
    /// goes on answering for the queue as a whole (see [`Queue::close`]).
    ///
    /// ```
    /// let q = multiproc::SimpleQueue::<u8>::new().unwrap();
    /// q.put(1).unwrap();
    /// q.close();
    /// assert!(matches!(q.put(1), Err(multiproc::Error::Closed)));
    /// assert!(!q.empty());
    /// ```
    pub fn close(&self) {
        self.q.close()
    }
}

impl<T: Serialize> SimpleQueue<T> {
    /// Puts `value` in the queue (see [`Queue::put`]).
    ///
    /// ```
    /// let q = multiproc::SimpleQueue::<String>::new().unwrap();
    /// q.put("x".into()).unwrap();
    /// ```
    pub fn put(&self, value: T) -> Result<()> {
        self.q.put(value)
    }

    /// Puts a copy of `*value`, leaving `value` with the caller (see [`Queue::put_ref`]).
    ///
    /// ```
    /// let q = multiproc::SimpleQueue::<String>::new().unwrap();
    /// let s = "kept".to_string();
    /// q.put_ref(&s).unwrap();
    /// assert_eq!(q.get().unwrap(), s);
    /// ```
    pub fn put_ref(&self, value: &T) -> Result<()> {
        self.q.put_ref(value)
    }

    /// Puts `value` without blocking the async runtime (the `tokio` feature); see
    /// [`Queue::put_async`], cancel safety included.
    ///
    /// ```
    /// let q = multiproc::SimpleQueue::<u8>::new().unwrap();
    /// let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    /// rt.block_on(async { q.put_async(3).await.unwrap() });
    /// assert_eq!(q.get().unwrap(), 3);
    /// ```
    #[cfg(feature = "tokio")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
    pub async fn put_async(&self, value: T) -> Result<()> {
        self.q.put_async(value).await
    }
}

impl<T: DeserializeOwned> SimpleQueue<T> {
    /// Takes the next item, waiting for one (see [`Queue::get`]).
    ///
    /// ```
    /// let q = multiproc::SimpleQueue::<String>::new().unwrap();
    /// q.put("x".into()).unwrap();
    /// assert_eq!(q.get().unwrap(), "x");
    /// ```
    pub fn get(&self) -> Result<T> {
        self.q.get()
    }

    /// Takes the next item without blocking the async runtime (the `tokio` feature); see
    /// [`Queue::get_async`], cancel safety included.
    ///
    /// ```
    /// let q = multiproc::SimpleQueue::<String>::new().unwrap();
    /// let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    /// rt.block_on(async {
    ///     q.put_async("x".into()).await.unwrap();
    ///     assert_eq!(q.get_async().await.unwrap(), "x");
    /// });
    /// ```
    #[cfg(feature = "tokio")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
    pub async fn get_async(&self) -> Result<T> {
        self.q.get_async().await
    }
}

/// Ready as a [`Queue`] is.
///
/// ```
/// use multiproc::connection::Waitable;
/// let q = multiproc::SimpleQueue::<u8>::new().unwrap();
/// q.put(1).unwrap();
/// assert!(q.is_ready().unwrap());
/// ```
impl<T> crate::connection::Waitable for SimpleQueue<T> {
    fn wait_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        None
    }

    fn is_ready(&self) -> Result<bool> {
        self.q.is_ready()
    }
}

impl<T> Serialize for SimpleQueue<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.q.serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for SimpleQueue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(SimpleQueue {
            q: Queue::deserialize(d)?,
        })
    }
}

/// A [`Queue`] that also counts unfinished tasks (Python's
/// `multiprocessing.JoinableQueue`): every `put` adds one, every [`task_done`] removes
/// one, and [`join`] waits until none is left. It dereferences to [`Queue`] for `put`,
/// `get` and the rest.
///
/// [`task_done`]: JoinableQueue::task_done
/// [`join`]: JoinableQueue::join
///
/// ```
/// multiproc::init();
/// use multiproc::JoinableQueue;
///
/// fn worker(q: JoinableQueue<u32>) {
///     loop {
///         let n = q.get().unwrap();
///         q.task_done().unwrap();
///         if n == 0 { break; }
///     }
/// }
/// let q = JoinableQueue::new().unwrap();
/// let mut p = multiproc::Process::new(worker, q.clone());
/// p.start().unwrap();
/// for n in [3, 2, 1, 0] {
///     q.put(n).unwrap();
/// }
/// q.join().unwrap(); // every item was taken and marked done
/// p.join().unwrap();
/// ```
pub struct JoinableQueue<T> {
    q: Queue<T>,
}

impl<T> Clone for JoinableQueue<T> {
    fn clone(&self) -> Self {
        JoinableQueue { q: self.q.clone() }
    }
}

impl<T> fmt::Debug for JoinableQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinableQueue")
            .field("qsize", &self.q.qsize())
            .field("unfinished", &self.unfinished_tasks())
            .finish()
    }
}

impl<T> Deref for JoinableQueue<T> {
    type Target = Queue<T>;
    fn deref(&self) -> &Queue<T> {
        &self.q
    }
}

impl<T> JoinableQueue<T> {
    /// A new joinable queue with no item limit.
    ///
    /// ```
    /// let q = multiproc::JoinableQueue::<u8>::new().unwrap();
    /// assert_eq!(q.unfinished_tasks(), 0);
    /// ```
    pub fn new() -> Result<Self> {
        Ok(JoinableQueue::over(Queue::new()?))
    }

    fn over(q: Queue<T>) -> Self {
        q.shared.ring.set_joinable();
        JoinableQueue { q }
    }

    /// A new joinable queue holding at most `maxsize` items (0: no limit).
    ///
    /// ```
    /// let q = multiproc::JoinableQueue::<u8>::bounded(2).unwrap();
    /// assert_eq!(q.maxsize(), 2);
    /// ```
    pub fn bounded(maxsize: usize) -> Result<Self> {
        Ok(JoinableQueue::over(Queue::bounded(maxsize)?))
    }

    /// Marks one item taken with `get` as processed. Calling it more times than items
    /// were taken is an [`Error::InvalidOperation`] (Python raises `ValueError`).
    ///
    /// ```
    /// let q = multiproc::JoinableQueue::<u8>::new().unwrap();
    /// q.put(1).unwrap();
    /// q.get().unwrap();
    /// q.task_done().unwrap();
    /// assert!(matches!(q.task_done(), Err(multiproc::Error::InvalidOperation(_))));
    /// ```
    pub fn task_done(&self) -> Result<()> {
        self.q.shared.ring.task_done()
    }

    /// Waits until every item ever put has been marked done with
    /// [`task_done`](JoinableQueue::task_done).
    ///
    /// A consumer process that ends (killed, or exited) holding items it took with `get`
    /// and had not marked done would make this wait for ever (it does in CPython): instead,
    /// `join` gives [`Error::ConsumerDied`] with its pid and the number of items, and counts
    /// those items done, so that the next `join` waits only for the rest. Consumers are
    /// told apart by process; the first 32 processes that take items at the same time are
    /// watched (a slot is reused once its process has ended holding nothing). An item
    /// taken by one process and marked done by another is taken off the taker's count.
    ///
    /// ```
    /// let q = multiproc::JoinableQueue::<u8>::new().unwrap();
    /// q.join().unwrap(); // nothing put: returns at once
    /// ```
    pub fn join(&self) -> Result<()> {
        self.q.shared.ring.join(None).map(|_| ())
    }

    /// Like [`join`](JoinableQueue::join), for at most `timeout`: true if every task is
    /// done, false if time ran out first; [`Error::ConsumerDied`] as for `join`.
    ///
    /// ```
    /// use std::time::Duration;
    /// let q = multiproc::JoinableQueue::<u8>::new().unwrap();
    /// q.put(1).unwrap();
    /// assert!(!q.join_timeout(Duration::from_millis(10)).unwrap());
    /// ```
    pub fn join_timeout(&self, timeout: Duration) -> Result<bool> {
        self.q.shared.ring.join(deadline_after(timeout))
    }

    /// Items put and not yet marked done.
    ///
    /// ```
    /// let q = multiproc::JoinableQueue::<u8>::new().unwrap();
    /// q.put(1).unwrap();
    /// assert_eq!(q.unfinished_tasks(), 1);
    /// ```
    pub fn unfinished_tasks(&self) -> usize {
        self.q.shared.ring.unfinished() as usize
    }
}

/// Ready as a [`Queue`] is.
///
/// ```
/// use multiproc::connection::Waitable;
/// let q = multiproc::JoinableQueue::<u8>::new().unwrap();
/// q.put(1).unwrap();
/// assert!(q.is_ready().unwrap());
/// ```
impl<T> crate::connection::Waitable for JoinableQueue<T> {
    fn wait_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        None
    }

    fn is_ready(&self) -> Result<bool> {
        self.q.is_ready()
    }
}

impl<T> Serialize for JoinableQueue<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.q.serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for JoinableQueue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(JoinableQueue {
            q: Queue::deserialize(d)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_in_the_ring_is_a_codec_error() {
        let q = Queue::<String>::new().unwrap();
        q.put("before".into()).unwrap();
        assert_eq!(q.get().unwrap(), "before");
        // A record header with a bad check marker.
        q.shared.ring.inject_garbage(&[0xff; 16]);
        assert!(matches!(q.get(), Err(Error::Codec(_))));
        // A well-formed record whose bytes do not decode as a String.
        q.shared
            .ring
            .inject_garbage(&[2, 0, 0, 0, 1, 0, 0xc3, 0xa5, 0xff, 0xff, 0, 0, 0, 0, 0, 0]);
        assert!(matches!(q.get(), Err(Error::Codec(_))));
        // A length larger than what was published.
        q.shared
            .ring
            .inject_garbage(&[0xf0, 0xff, 0, 0, 1, 0, 0xc3, 0xa5]);
        assert!(matches!(q.get(), Err(Error::Codec(_))));
        // The queue still works afterwards.
        q.put("after".into()).unwrap();
        assert_eq!(q.get().unwrap(), "after");
        assert!(q.empty());
    }

    /// Producers keep their own copy of the ring's tail; one that dies after publishing an
    /// item but before moving its copy must not make the next producer write over that
    /// item (or move the tail back): the next holder of the lock copies the tail again.
    #[test]
    fn a_producer_dead_between_its_two_tail_stores_loses_nothing() {
        let q = Queue::<u32>::new().unwrap();
        q.put(1).unwrap();
        let two = codec::encode(&2u32).unwrap();
        let q2 = q.clone();
        std::thread::spawn(move || q2.shared.ring.publish_and_die_holding_the_lock(&two))
            .join()
            .unwrap();
        q.put(3).unwrap();
        q.put(4).unwrap();
        let got: Vec<u32> = (0..4)
            .map(|_| q.get_timeout(Duration::from_secs(10)).expect("an item"))
            .collect();
        assert_eq!(got, [1, 2, 3, 4]);
        assert!(q.empty());
    }

    /// A queue without an item limit (it has an overflow ring) and one with a limit of 10.
    fn unbounded_and_bounded() -> [Queue<u32>; 2] {
        [Queue::new().unwrap(), Queue::bounded(10).unwrap()]
    }

    /// Garbage in the producers' copy of the tail that says "no room" must not make `put`
    /// wait for ever: the producer copies the shared tail again when it finds no room.
    #[test]
    fn garbage_in_the_producers_copy_of_the_tail_is_corrected() {
        for q in unbounded_and_bounded() {
            q.put(1).unwrap();
            q.shared.ring.scribble_producers_tail(u64::MAX);
            q.put_timeout(2, Duration::from_secs(10)).unwrap();
            assert_eq!(q.get_timeout(Duration::from_secs(10)).unwrap(), 1);
            assert_eq!(q.get_timeout(Duration::from_secs(10)).unwrap(), 2);
        }
    }

    /// Any value in the shared shutdown word means "shut down": garbage there (another
    /// process can write it) made `get` spin for ever between "not shut down" (the value
    /// is neither level) and "shut down" (it is not zero).
    #[test]
    fn garbage_in_the_shutdown_word_is_a_shut_down_queue() {
        for q in unbounded_and_bounded() {
            q.put(1).unwrap();
            q.shared.ring.scribble_shutdown_word(390_696);
            assert!(q.is_shutdown());
            assert!(matches!(q.try_get(), Err(Error::ShutDown)));
            assert!(matches!(
                q.get_timeout(Duration::from_millis(1)),
                Err(Error::ShutDown)
            ));
            assert!(matches!(q.get(), Err(Error::ShutDown)));
            assert!(q.put(2).is_err());
        }
    }

    #[test]
    fn overflow_keeps_order_and_gives_memory_back() {
        // A 4 KiB ring and no consumer: 3 MB of items go to the overflow, `put` never waits.
        let q = Queue::<Vec<u8>>::with_capacity(0, 4096).unwrap();
        let item = |i: u32| vec![i as u8; 1000 + (i % 7) as usize];
        for i in 0..3000 {
            q.try_put(item(i)).unwrap();
        }
        assert_eq!(q.qsize(), 3000);
        assert!(q.shared.ring.overflow_resident() > 2 << 20);
        // Interleaved puts and gets cross between the ring and the overflow many times.
        let mut next_put = 3000;
        for i in 0..6000 {
            assert_eq!(q.get().unwrap(), item(i));
            if i % 3 != 0 && next_put < 6000 {
                q.try_put(item(next_put)).unwrap();
                next_put += 1;
            }
            if next_put < 6000 && i % 500 == 0 {
                for _ in 0..200 {
                    q.try_put(item(next_put)).unwrap();
                    next_put += 1;
                }
            }
        }
        assert!(q.empty());
        // The memory was given back as it was read.
        assert!(q.shared.ring.overflow_resident() <= 16 << 10);
    }

    #[test]
    fn joinable_counts_span_the_overflow() {
        let q = JoinableQueue::<u32>::new().unwrap();
        for i in 0..200_000 {
            q.try_put(i).unwrap();
        }
        assert_eq!(q.qsize(), 200_000);
        assert_eq!(q.unfinished_tasks(), 200_000);
        for i in 0..200_000 {
            assert_eq!(q.get().unwrap(), i);
            q.task_done().unwrap();
        }
        assert!(matches!(q.task_done(), Err(Error::InvalidOperation(_))));
        assert_eq!(q.unfinished_tasks(), 0);
        assert!(q.join_timeout(Duration::ZERO).unwrap());
    }

    #[test]
    fn bounded_and_streaming_queues_have_no_overflow() {
        assert!(Queue::<u8>::bounded(3)
            .unwrap()
            .shared
            .ring
            .overflow_fd()
            .is_none());
        assert!(Queue::<u8>::streaming(0, 4096)
            .unwrap()
            .shared
            .ring
            .overflow_fd()
            .is_none());
        assert!(Queue::<u8>::new()
            .unwrap()
            .shared
            .ring
            .overflow_fd()
            .is_some());
    }

    #[test]
    fn streamed_items_in_one_process() {
        // A 4 KiB ring and items far larger: put and get must run concurrently.
        let q = Queue::<Vec<u8>>::streaming(0, 4096).unwrap();
        let q2 = q.clone();
        let t = std::thread::spawn(move || {
            for n in [10_000usize, 3000, 100_000] {
                q2.put((0..n).map(|i| i as u8).collect()).unwrap();
            }
        });
        for n in [10_000usize, 3000, 100_000] {
            let v = q.get().unwrap();
            assert_eq!(v.len(), n);
            assert!(v.iter().enumerate().all(|(i, &b)| b == i as u8));
        }
        t.join().unwrap();
        assert!(q.empty());
    }

    #[test]
    fn handles_in_streamed_items_and_stale_datagrams() {
        crate::init();
        let q = Queue::<(Vec<u8>, crate::Connection<u8>)>::streaming(0, 4096).unwrap();
        // A handle inside an item far larger than the ring.
        let q2 = q.clone();
        let (a, b) = crate::pipe::<u8>().unwrap();
        let t = std::thread::spawn(move || q2.put((vec![9; 50_000], b)).unwrap());
        let (v, b) = q.get().unwrap();
        t.join().unwrap();
        assert_eq!(v, vec![9; 50_000]);
        a.send(&1).unwrap();
        assert_eq!(b.recv().unwrap(), 1);
        // A datagram left by a producer that died before publishing its record (its tag is
        // older than the next record's): thrown away, its descriptor closed.
        let f = std::fs::File::open("/dev/null").unwrap();
        sys::send_tagged(q.shared.tx.as_fd(), 0, &[f.as_fd()]).unwrap();
        drop(f);
        let (c, d) = crate::pipe::<u8>().unwrap();
        q.put((vec![1], d)).unwrap();
        let (v, d) = q.get().unwrap();
        assert_eq!(v, vec![1]);
        c.send(&2).unwrap();
        assert_eq!(d.recv().unwrap(), 2);
        // Both datagrams were taken off the side socket.
        assert!(sys::recv_tagged(q.shared.rx.as_fd(), true)
            .unwrap()
            .is_none());
    }

    #[test]
    fn large_items_spill_without_a_consumer() {
        crate::init();
        // Put and get in one thread: a large item must not need a concurrent consumer.
        let q = Queue::<(Vec<u8>, crate::Connection<u8>)>::with_capacity(0, 4096).unwrap();
        let (a, b) = crate::pipe::<u8>().unwrap();
        q.put((vec![5; 100_000], b)).unwrap();
        q.put((vec![6; 10], crate::pipe::<u8>().unwrap().1))
            .unwrap();
        q.put((vec![7; 3_000_000], crate::pipe::<u8>().unwrap().1))
            .unwrap();
        assert_eq!(q.qsize(), 3);
        let (v, b) = q.get().unwrap();
        assert_eq!(v, vec![5; 100_000]);
        a.send(&1).unwrap();
        assert_eq!(b.recv().unwrap(), 1);
        assert_eq!(q.get().unwrap().0, vec![6; 10]);
        assert_eq!(q.get().unwrap().0, vec![7; 3_000_000]);
        assert!(q.empty());
        assert!(sys::recv_tagged(q.shared.rx.as_fd(), true)
            .unwrap()
            .is_none());
    }

    #[test]
    fn producer_giving_up_mid_stream_does_not_wedge() {
        let q = Queue::<Vec<u8>>::streaming(0, 4096).unwrap();
        // No consumer: the first chunk goes in, then the producer times out.
        assert!(matches!(
            q.put_timeout(vec![1; 20_000], Duration::from_millis(20)),
            Err(Error::Full)
        ));
        // The abandoned chunks fill the ring until a consumer skips them.
        let q2 = q.clone();
        let t = std::thread::spawn(move || q2.get());
        q.put(vec![2; 10]).unwrap();
        assert_eq!(t.join().unwrap().unwrap(), vec![2; 10]);
        assert!(q.empty());
    }
}
