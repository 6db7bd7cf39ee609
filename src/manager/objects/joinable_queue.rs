//! A queue whose consumers say when each item is processed (Python's
//! `manager.JoinableQueue()`). Every manager queue counts its unfinished items, as
//! Python's `queue.Queue` in the server does; this proxy is the view that uses the count.

use std::ops::Deref;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::view_proxy;
use crate::manager::protocol::{Create, Op, Reply, Wait};
use crate::manager::{Manager, QueueProxy};
use crate::{Error, RemoteErrorKind, Result};

view_proxy! {
    /// A queue kept by a manager, with [`task_done`](JoinableQueueProxy::task_done) and
    /// [`join`](JoinableQueueProxy::join) (Python's `manager.JoinableQueue()`). It has every
    /// method of [`QueueProxy`] (through `Deref`).
    ///
    /// ```
    /// multiproc::init();
    /// use multiproc::manager::JoinableQueueProxy;
    /// fn worker(q: JoinableQueueProxy<u32>) {
    ///     for _ in 0..3 {
    ///         q.get().unwrap();
    ///         q.task_done().unwrap();
    ///     }
    /// }
    /// let m = multiproc::Manager::start().unwrap();
    /// let q = m.joinable_queue::<u32>().unwrap();
    /// for i in 0..3 { q.put(i).unwrap(); }
    /// let p = multiproc::spawn(worker, q.clone()).unwrap();
    /// q.join().unwrap(); // returns once the worker has marked all three done
    /// assert_eq!(q.unfinished_tasks().unwrap(), 0);
    /// p.join().unwrap();
    /// ```
    #[doc(alias = "JoinableQueue")]
    JoinableQueueProxy<T> { queue: QueueProxy<T> },
    Queue
}

impl<T> Deref for JoinableQueueProxy<T> {
    type Target = QueueProxy<T>;
    fn deref(&self) -> &QueueProxy<T> {
        &self.queue
    }
}

impl<T: Serialize + DeserializeOwned> JoinableQueueProxy<T> {
    /// Marks one item taken with `get` as processed. More calls than items put →
    /// [`Error::InvalidOperation`], as with [`JoinableQueue`](crate::JoinableQueue).
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let q = m.joinable_queue::<u8>().unwrap();
    /// q.put(1).unwrap();
    /// q.get().unwrap();
    /// q.task_done().unwrap();
    /// assert!(matches!(q.task_done(), Err(multiproc::Error::InvalidOperation(_))));
    /// ```
    pub fn task_done(&self) -> Result<()> {
        match self.queue.obj().call(Op::QueueTaskDone) {
            Ok(Reply::Unit) => Ok(()),
            Ok(r) => Err(Error::codec(format!(
                "unexpected reply from the manager: {r:?}"
            ))),
            Err(Error::Remote {
                kind: RemoteErrorKind::ValueError,
                message,
            }) => Err(Error::InvalidOperation(message)),
            Err(e) => Err(e),
        }
    }

    fn join_wait(&self, wait: Wait) -> Result<bool> {
        match self.queue.obj().call(Op::QueueJoin(wait))? {
            Reply::Bool(b) => Ok(b),
            r => Err(Error::codec(format!(
                "unexpected reply from the manager: {r:?}"
            ))),
        }
    }

    /// Waits until every item put has been marked done.
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// m.joinable_queue::<u8>().unwrap().join().unwrap(); // nothing put: at once
    /// ```
    pub fn join(&self) -> Result<()> {
        if self.join_wait(Wait::Forever)? {
            Ok(())
        } else {
            Err(Error::Closed)
        }
    }

    /// As [`join`](JoinableQueueProxy::join), for at most `timeout`: returns whether
    /// every item is done.
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let q = m.joinable_queue::<u8>().unwrap();
    /// q.put(1).unwrap();
    /// assert!(!q.join_timeout(std::time::Duration::from_millis(10)).unwrap());
    /// ```
    #[doc(alias = "join")]
    pub fn join_timeout(&self, timeout: Duration) -> Result<bool> {
        self.join_wait(Wait::For(timeout))
    }

    /// Items put and not yet marked done.
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let q = m.joinable_queue::<u8>().unwrap();
    /// q.put(1).unwrap();
    /// assert_eq!(q.unfinished_tasks().unwrap(), 1);
    /// ```
    pub fn unfinished_tasks(&self) -> Result<usize> {
        match self.queue.obj().call(Op::QueueUnfinished)? {
            Reply::Len(n) => Ok(n as usize),
            r => Err(Error::codec(format!(
                "unexpected reply from the manager: {r:?}"
            ))),
        }
    }
}

impl Manager {
    /// A new unbounded joinable queue (Python's `manager.JoinableQueue()`).
    ///
    /// ```
    /// multiproc::init();
    /// let m = multiproc::Manager::start().unwrap();
    /// let q = m.joinable_queue::<u8>().unwrap();
    /// q.put(1).unwrap();
    /// assert_eq!(q.get().unwrap(), 1);
    /// q.task_done().unwrap();
    /// q.join().unwrap();
    /// ```
    #[doc(alias = "JoinableQueue")]
    pub fn joinable_queue<T: Serialize + DeserializeOwned>(&self) -> Result<JoinableQueueProxy<T>> {
        Ok(JoinableQueueProxy {
            queue: QueueProxy::from_obj(self.make(Create::Queue(None))?),
        })
    }

    /// A new joinable queue holding at most `maxsize` items (Python's
    /// `manager.JoinableQueue(maxsize)`); 0 means unbounded.
    ///
    /// ```
    /// multiproc::init();
    /// let m = multiproc::Manager::start().unwrap();
    /// let q = m.bounded_joinable_queue::<u8>(1).unwrap();
    /// q.put(1).unwrap();
    /// assert!(q.full().unwrap());
    /// assert!(q.try_put(2).is_err());
    /// assert_eq!(q.get().unwrap(), 1);
    /// q.task_done().unwrap();
    /// q.join().unwrap();
    /// ```
    pub fn bounded_joinable_queue<T: Serialize + DeserializeOwned>(
        &self,
        maxsize: usize,
    ) -> Result<JoinableQueueProxy<T>> {
        Ok(JoinableQueueProxy {
            queue: QueueProxy::from_obj(self.make(Create::Queue(Some(maxsize as u64)))?),
        })
    }
}
