//! Waiting on several objects at once: [`wait()`], Python's `multiprocessing.connection.wait`.

use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use crate::ipc::wait;
use crate::{sys, Error, Result};

/// Something [`wait()`] can wait on: a [`Connection`](crate::Connection) (a message or the
/// end of file waits), a queue (an item waits), a process's
/// [`sentinel`](crate::Process::sentinel) or the process itself (it has ended), or any
/// descriptor as a [`BorrowedFd`] (it is readable).
///
/// Implement it for a type of your own by giving the descriptor the kernel reports readable
/// when the object may be ready (if it has one) and an exact look at whether it is ready.
///
/// ```
/// use std::os::fd::{AsFd, BorrowedFd};
/// use multiproc::connection::{wait, Waitable};
///
/// // A wrapper that is ready when its socket is readable.
/// struct Inbox(std::os::unix::net::UnixStream);
/// impl Waitable for Inbox {
///     fn wait_fd(&self) -> Option<BorrowedFd<'_>> {
///         Some(self.0.as_fd())
///     }
///     fn is_ready(&self) -> multiproc::Result<bool> {
///         self.0.as_fd().is_ready()
///     }
/// }
/// let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
/// std::io::Write::write_all(&mut &a, b"x").unwrap();
/// assert_eq!(wait(&[&Inbox(b)], None).unwrap(), vec![0]);
/// ```
pub trait Waitable {
    /// A descriptor that becomes readable when this object may have become ready, or `None`
    /// if it has none ([`wait()`] then looks at it again every few milliseconds).
    fn wait_fd(&self) -> Option<BorrowedFd<'_>>;

    /// Whether the object is ready now: the next receive, get or join would not block.
    fn is_ready(&self) -> Result<bool>;
}

impl Waitable for BorrowedFd<'_> {
    fn wait_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(*self)
    }

    fn is_ready(&self) -> Result<bool> {
        Ok(!sys::readable_of(&[*self], Some(Duration::ZERO))?.is_empty())
    }
}

/// The longest pause between two looks at objects that have no descriptor (queues).
const MAX_PAUSE: Duration = Duration::from_millis(2);

/// Waits until at least one of `objects` is ready, or `timeout` passes (`None`: no limit),
/// and returns the indices of the ready ones in order — empty if the timeout passed
/// (Python's `multiprocessing.connection.wait`, which returns the objects themselves).
///
/// A connection is ready when a message or the end of file waits (as with
/// [`Connection::poll`](crate::Connection::poll)); a queue when an item waits or its
/// handle is closed or shut down (its `get` would not block); a process, or its
/// [`sentinel`](crate::Process::sentinel), when it has ended; a descriptor when it is
/// readable. Connections and sentinels are waited on in the kernel; queues, which live in
/// shared memory with no descriptor, are looked at again every few milliseconds while they
/// are among the objects. Waiting on a connection hands out its descriptor (see
/// [`Connection`](crate::Connection)'s `AsFd`).
///
/// Errors: an object that cannot be waited on (a process never started:
/// [`Error::NotStarted`]; the sending end of a one-way pipe: [`Error::InvalidOperation`]),
/// and an empty list without a timeout, which could never return.
///
/// ```
/// multiproc::init();
/// use std::time::Duration;
/// use multiproc::connection::wait;
///
/// fn reply(conn: multiproc::Connection<u32>) {
///     let x = conn.recv().unwrap();
///     conn.send(&(x + 1)).unwrap();
/// }
/// let (a, child_end) = multiproc::pipe::<u32>().unwrap();
/// let (b, _b_peer) = multiproc::pipe::<u32>().unwrap();
/// let mut p = multiproc::Process::new(reply, child_end);
/// p.start().unwrap();
/// let sentinel = p.sentinel().unwrap();
///
/// // Nothing is ready yet.
/// assert!(wait(&[&a, &b, &sentinel], Some(Duration::ZERO)).unwrap().is_empty());
/// a.send(&41).unwrap();
/// // The child answers on `a`, then ends.
/// assert!(wait(&[&a, &b, &sentinel], None).unwrap().contains(&0));
/// assert_eq!(a.recv().unwrap(), 42);
/// assert_eq!(wait(&[&b, &sentinel], None).unwrap(), vec![1]);
/// p.join().unwrap();
/// ```
#[doc(alias = "multiprocessing.connection.wait")]
pub fn wait(objects: &[&dyn Waitable], timeout: Option<Duration>) -> Result<Vec<usize>> {
    if objects.is_empty() && timeout.is_none() {
        return Err(Error::invalid(
            "wait over no objects and without a timeout would never return",
        ));
    }
    let deadline = timeout.and_then(crate::sys::deadline);
    let mut pause = Duration::from_micros(50);
    loop {
        let mut ready = Vec::new();
        for (i, o) in objects.iter().enumerate() {
            if o.is_ready()? {
                ready.push(i);
            }
        }
        if !ready.is_empty() {
            // One more look at the others. The look above is one object after another, so
            // an object that became ready before one found ready (a message sent just before
            // its sender exited) may have been looked at too early; a kernel's `select` sees
            // both, and so must we.
            let mut all = Vec::with_capacity(objects.len());
            for (i, o) in objects.iter().enumerate() {
                if ready.contains(&i) || o.is_ready()? {
                    all.push(i);
                }
            }
            return Ok(all);
        }
        let fds: Vec<BorrowedFd<'_>> = objects.iter().filter_map(|o| o.wait_fd()).collect();
        let kernel_only = fds.len() == objects.len();
        let slice = if kernel_only {
            match deadline {
                None => None,
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => return Ok(Vec::new()),
                },
            }
        } else {
            let Some(slice) = wait::next_slice(deadline, pause) else {
                return Ok(Vec::new());
            };
            pause = (pause * 2).min(MAX_PAUSE);
            Some(slice)
        };
        // Which descriptors woke does not matter: the exact look above decides (another
        // process may have taken the message first; then the loop waits again).
        sys::readable_of(&fds, slice)?;
    }
}
