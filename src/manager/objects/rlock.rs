//! A recursive lock kept by the server (Python's `manager.RLock()`).

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{
    call, decode, encode, misuse, object_proxy, thread_token, wait_on, Cx, Object, Owner, RemoteErr,
};
use crate::manager::protocol::{Create, Wait};
use crate::manager::server::lock;
use crate::manager::Manager;
use crate::{Error, RemoteErrorKind, Result};

pub(crate) const KIND: &str = "RLock";

/// A recursive lock's state: its holder and depth. The manager's RLock is one; a
/// Condition holds one too.
#[derive(Default)]
pub(crate) struct Recursive {
    owner: Option<Owner>,
    count: u32,
    /// Released because its holder's process went away: the next acquirer is told.
    abandoned: bool,
}

impl Recursive {
    pub(crate) fn owned_by(&self, me: Owner) -> bool {
        self.owner == Some(me)
    }

    pub(crate) fn is_free(&self) -> bool {
        self.owner.is_none()
    }

    /// Takes it (free, or already `me`'s) `depth` more times.
    pub(crate) fn take(&mut self, me: Owner, depth: u32) -> Got {
        self.owner = Some(me);
        self.count += depth;
        if std::mem::take(&mut self.abandoned) {
            Got::OwnerDied
        } else {
            Got::Yes
        }
    }

    /// Gives one level back; true if it is free now. Not `me`'s → a misuse error.
    pub(crate) fn give(&mut self, me: Owner, what: &str) -> std::result::Result<bool, RemoteErr> {
        if self.owner != Some(me) {
            return Err((
                RemoteErrorKind::ValueError,
                format!("{what} of an RLock not held by this thread"),
            ));
        }
        self.count -= 1;
        if self.count == 0 {
            self.owner = None;
        }
        Ok(self.count == 0)
    }

    /// Gives every level back at once (a Condition's wait): the depth it had.
    pub(crate) fn give_all(&mut self) -> u32 {
        self.owner = None;
        std::mem::take(&mut self.count)
    }

    /// Its holder's process is gone: free it, and tell the next acquirer. True if it was
    /// held by that process.
    pub(crate) fn session_ended(&mut self, session: u64) -> bool {
        if self.owner.is_some_and(|(s, _)| s == session) {
            self.owner = None;
            self.count = 0;
            self.abandoned = true;
            return true;
        }
        false
    }
}

/// A server-side state that holds a [`Recursive`] lock.
pub(crate) trait HasRecursive {
    fn recursive(&self) -> &Recursive;
    fn recursive_mut(&mut self) -> &mut Recursive;
}

impl HasRecursive for Recursive {
    fn recursive(&self) -> &Recursive {
        self
    }
    fn recursive_mut(&mut self) -> &mut Recursive {
        self
    }
}

/// Acquires the recursive lock in the state behind `m` for the caller's `thread`, waiting
/// as `wait` allows.
pub(crate) fn acquire<S: HasRecursive>(
    m: &Mutex<S>,
    cv: &Condvar,
    cx: &Cx<'_>,
    thread: u64,
    wait: Wait,
) -> Got {
    let me = (cx.session, thread);
    let (mut g, ok) = wait_on(m, cv, cx.conn, wait, |s| {
        let r = s.recursive();
        r.is_free() || r.owned_by(me)
    });
    if !ok {
        return Got::No;
    }
    g.recursive_mut().take(me, 1)
}

/// A reply to an acquire.
#[derive(Serialize, Deserialize)]
pub(crate) enum Got {
    Yes,
    No,
    OwnerDied,
}

impl Got {
    /// Whether it was acquired; [`Error::OwnerDied`] if so, after its holder died.
    pub(crate) fn acquired(self) -> Result<bool> {
        match self {
            Got::Yes => Ok(true),
            Got::No => Ok(false),
            Got::OwnerDied => Err(Error::OwnerDied),
        }
    }
}

pub(crate) struct RLockObj {
    state: Mutex<Recursive>,
    cv: Condvar,
}

#[derive(Serialize, Deserialize)]
enum Req {
    Acquire(u64, Wait),
    Release(u64),
    IsOwned(u64),
    Count,
}

impl RLockObj {
    pub(crate) fn create(_init: &[u8]) -> std::result::Result<Arc<dyn Object>, RemoteErr> {
        Ok(Arc::new(RLockObj {
            state: Mutex::new(Recursive::default()),
            cv: Condvar::new(),
        }))
    }
}

impl Object for RLockObj {
    fn call(&self, request: &[u8], cx: &Cx<'_>) -> std::result::Result<Vec<u8>, RemoteErr> {
        match decode::<Req>(request)? {
            Req::Acquire(thread, wait) => encode(&acquire(&self.state, &self.cv, cx, thread, wait)),
            Req::Release(thread) => {
                if lock(&self.state).give((cx.session, thread), "release")? {
                    self.cv.notify_all();
                }
                encode(&())
            }
            Req::IsOwned(thread) => encode(&lock(&self.state).owned_by((cx.session, thread))),
            Req::Count => encode(&lock(&self.state).count),
        }
    }

    fn session_ended(&self, session: u64) {
        if lock(&self.state).session_ended(session) {
            self.cv.notify_all();
        }
    }
}

object_proxy!(
    /// A recursive lock kept by a manager (Python's `manager.RLock()`): the thread that holds
    /// it may acquire it again, and must release it as many times. Held per thread of a
    /// process, like Python's.
    ///
    /// If the process holding it dies (all its connections to the server are gone), the
    /// server releases it, and the next acquirer gets [`Error::OwnerDied`] (it then holds
    /// the lock once).
    ///
    /// ```
    /// multiproc::init();
    /// use multiproc::manager::RLockProxy;
    /// fn try_it(l: RLockProxy) -> bool { l.try_acquire().unwrap() }
    /// let m = multiproc::Manager::start().unwrap();
    /// let l = m.rlock().unwrap();
    /// l.acquire().unwrap();
    /// l.acquire().unwrap(); // again, by the same thread
    /// assert!(!multiproc::spawn(try_it, l.clone()).unwrap().join().unwrap());
    /// l.release().unwrap();
    /// l.release().unwrap();
    /// assert!(multiproc::spawn(try_it, l.clone()).unwrap().join().unwrap());
    /// ```
    #[doc(alias = "RLock")]
    RLockProxy,
    KIND
);

impl RLockProxy {
    fn acquire_wait(&self, wait: Wait) -> Result<bool> {
        call::<_, Got>(&self.obj, &Req::Acquire(thread_token(), wait))?.acquired()
    }

    /// Acquires it, waiting as long as it takes ([`Error::OwnerDied`]: acquired, but the
    /// previous holder died holding it).
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let l = m.rlock().unwrap();
    /// l.acquire().unwrap();
    /// assert!(l.is_owned().unwrap());
    /// # l.release().unwrap();
    /// ```
    pub fn acquire(&self) -> Result<()> {
        if self.acquire_wait(Wait::Forever)? {
            Ok(())
        } else {
            Err(Error::Closed)
        }
    }

    /// Acquires it, waiting at most `timeout`; returns whether it got it.
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let l = m.rlock().unwrap();
    /// assert!(l.acquire_timeout(std::time::Duration::from_millis(10)).unwrap());
    /// # l.release().unwrap();
    /// ```
    #[doc(alias = "acquire")]
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<bool> {
        self.acquire_wait(Wait::For(timeout))
    }

    /// Acquires it if that needs no waiting; returns whether it got it.
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let l = m.rlock().unwrap();
    /// assert!(l.try_acquire().unwrap());
    /// assert!(l.try_acquire().unwrap()); // recursive
    /// # l.release().unwrap(); l.release().unwrap();
    /// ```
    pub fn try_acquire(&self) -> Result<bool> {
        self.acquire_wait(Wait::No)
    }

    /// Releases one level; by a thread that does not hold it →
    /// [`Error::InvalidOperation`], as with [`RLock`](crate::RLock).
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let l = m.rlock().unwrap();
    /// assert!(matches!(l.release(), Err(multiproc::Error::InvalidOperation(_))));
    /// ```
    pub fn release(&self) -> Result<()> {
        call(&self.obj, &Req::Release(thread_token())).map_err(misuse)
    }

    /// Whether the calling thread holds it.
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// assert!(!m.rlock().unwrap().is_owned().unwrap());
    /// ```
    #[doc(alias = "_is_owned")]
    pub fn is_owned(&self) -> Result<bool> {
        call(&self.obj, &Req::IsOwned(thread_token()))
    }

    /// How many times its holder has acquired it (0: free).
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let l = m.rlock().unwrap();
    /// l.acquire().unwrap();
    /// l.acquire().unwrap();
    /// assert_eq!(l.count().unwrap(), 2);
    /// # l.release().unwrap(); l.release().unwrap();
    /// ```
    pub fn count(&self) -> Result<u32> {
        call(&self.obj, &Req::Count)
    }

    /// Whether any thread of any process holds it (Python 3.14's `RLock.locked()`; as
    /// [`LockProxy::locked`](crate::manager::LockProxy::locked)).
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let l = m.rlock().unwrap();
    /// assert!(!l.locked().unwrap());
    /// l.acquire().unwrap();
    /// assert!(l.locked().unwrap());
    /// # l.release().unwrap();
    /// ```
    #[doc(alias = "is_locked")]
    pub fn locked(&self) -> Result<bool> {
        Ok(self.count()? > 0)
    }
}

impl Manager {
    /// A new recursive lock (Python's `manager.RLock()`).
    ///
    /// ```
    /// multiproc::init();
    /// let m = multiproc::Manager::start().unwrap();
    /// let l = m.rlock().unwrap();
    /// l.acquire().unwrap();
    /// l.release().unwrap();
    /// ```
    #[doc(alias = "RLock")]
    pub fn rlock(&self) -> Result<RLockProxy> {
        Ok(RLockProxy {
            obj: self.make(Create::Object(KIND.into(), Default::default()))?,
        })
    }
}
