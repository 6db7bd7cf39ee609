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

#[derive(Default)]
struct State {
    owner: Option<Owner>,
    count: u32,
    /// Released because its holder's process went away: the next acquirer is told.
    abandoned: bool,
}

pub(crate) struct RLockObj {
    state: Mutex<State>,
    cv: Condvar,
}

#[derive(Serialize, Deserialize)]
enum Req {
    Acquire(u64, Wait),
    Release(u64),
    IsOwned(u64),
    Count,
}

/// A reply to `Acquire`.
#[derive(Serialize, Deserialize)]
enum Got {
    Yes,
    No,
    OwnerDied,
}

impl RLockObj {
    pub(crate) fn create(_init: &[u8]) -> std::result::Result<Arc<dyn Object>, RemoteErr> {
        Ok(Arc::new(RLockObj {
            state: Mutex::new(State::default()),
            cv: Condvar::new(),
        }))
    }
}

impl Object for RLockObj {
    fn call(&self, request: &[u8], cx: &Cx<'_>) -> std::result::Result<Vec<u8>, RemoteErr> {
        match decode::<Req>(request)? {
            Req::Acquire(thread, wait) => {
                let me = (cx.session, thread);
                let (mut g, ok) = wait_on(&self.state, &self.cv, cx.conn, wait, |s| {
                    s.owner.is_none() || s.owner == Some(me)
                });
                if !ok {
                    return encode(&Got::No);
                }
                g.owner = Some(me);
                g.count += 1;
                encode(&if std::mem::take(&mut g.abandoned) {
                    Got::OwnerDied
                } else {
                    Got::Yes
                })
            }
            Req::Release(thread) => {
                let mut g = lock(&self.state);
                if g.owner != Some((cx.session, thread)) {
                    return Err((
                        RemoteErrorKind::ValueError,
                        "release of an RLock not held by this thread".into(),
                    ));
                }
                g.count -= 1;
                if g.count == 0 {
                    g.owner = None;
                    self.cv.notify_all();
                }
                encode(&())
            }
            Req::IsOwned(thread) => {
                encode(&(lock(&self.state).owner == Some((cx.session, thread))))
            }
            Req::Count => encode(&lock(&self.state).count),
        }
    }

    fn session_ended(&self, session: u64) {
        let mut g = lock(&self.state);
        if g.owner.is_some_and(|(s, _)| s == session) {
            g.owner = None;
            g.count = 0;
            g.abandoned = true;
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
        match call(&self.obj, &Req::Acquire(thread_token(), wait))? {
            Got::Yes => Ok(true),
            Got::No => Ok(false),
            Got::OwnerDied => Err(Error::OwnerDied),
        }
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
