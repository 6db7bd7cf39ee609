//! A condition variable kept by the server, with its own recursive lock (Python's
//! `manager.Condition()`).

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::rlock::{acquire, Got, HasRecursive, Recursive};
use super::{
    call, decode, encode, misuse, object_proxy, thread_token, wait_on, Cx, Object, RemoteErr,
};
use crate::manager::protocol::{Create, Wait};
use crate::manager::server::lock;
use crate::manager::Manager;
use crate::{Error, RemoteErrorKind, Result};

pub(crate) const KIND: &str = "Condition";

#[derive(Default)]
struct State {
    /// The condition's recursive lock.
    lock: Recursive,
    /// Waiters in arrival order, by ticket; notified ones move to `notified`.
    waiting: VecDeque<u64>,
    notified: HashSet<u64>,
    next_ticket: u64,
}

impl HasRecursive for State {
    fn recursive(&self) -> &Recursive {
        &self.lock
    }
    fn recursive_mut(&mut self) -> &mut Recursive {
        &mut self.lock
    }
}

pub(crate) struct ConditionObj {
    state: Mutex<State>,
    cv: Condvar,
}

#[derive(Serialize, Deserialize)]
enum Req {
    Acquire(u64, Wait),
    Release(u64),
    Wait(u64, Wait),
    Notify(u64, u64),
}

fn not_owner(what: &str) -> RemoteErr {
    (
        RemoteErrorKind::ValueError,
        format!("{what} of a Condition whose lock this thread does not hold"),
    )
}

impl ConditionObj {
    pub(crate) fn create(_init: &[u8]) -> std::result::Result<Arc<dyn Object>, RemoteErr> {
        Ok(Arc::new(ConditionObj {
            state: Mutex::new(State::default()),
            cv: Condvar::new(),
        }))
    }
}

impl Object for ConditionObj {
    fn call(&self, request: &[u8], cx: &Cx<'_>) -> std::result::Result<Vec<u8>, RemoteErr> {
        match decode::<Req>(request)? {
            Req::Acquire(thread, wait) => encode(&acquire(&self.state, &self.cv, cx, thread, wait)),
            Req::Release(thread) => {
                if lock(&self.state)
                    .lock
                    .give((cx.session, thread), "release")?
                {
                    self.cv.notify_all();
                }
                encode(&())
            }
            Req::Wait(thread, wait) => {
                let me = (cx.session, thread);
                let (ticket, depth) = {
                    let mut g = lock(&self.state);
                    if !g.lock.owned_by(me) {
                        return Err(not_owner("wait"));
                    }
                    // Release the lock entirely and queue up, in one step.
                    let depth = g.lock.give_all();
                    let ticket = g.next_ticket;
                    g.next_ticket += 1;
                    g.waiting.push_back(ticket);
                    self.cv.notify_all();
                    (ticket, depth)
                };
                let (mut g, notified) = wait_on(&self.state, &self.cv, cx.conn, wait, |s| {
                    s.notified.contains(&ticket)
                });
                g.notified.remove(&ticket);
                g.waiting.retain(|t| *t != ticket);
                drop(g);
                // Take the lock back (as Python does, without a time limit).
                let (mut g, ok) = wait_on(&self.state, &self.cv, cx.conn, Wait::Forever, |s| {
                    s.lock.is_free()
                });
                if !ok {
                    return Err((
                        RemoteErrorKind::ProtocolError,
                        "the client left while waiting".into(),
                    ));
                }
                encode(&match g.lock.take(me, depth) {
                    Got::OwnerDied => Got::OwnerDied,
                    _ if notified => Got::Yes,
                    _ => Got::No,
                })
            }
            Req::Notify(thread, n) => {
                let mut g = lock(&self.state);
                if !g.lock.owned_by((cx.session, thread)) {
                    return Err(not_owner("notify"));
                }
                for _ in 0..n {
                    let Some(t) = g.waiting.pop_front() else {
                        break;
                    };
                    g.notified.insert(t);
                }
                self.cv.notify_all();
                encode(&())
            }
        }
    }

    fn session_ended(&self, session: u64) {
        if lock(&self.state).lock.session_ended(session) {
            self.cv.notify_all();
        }
    }
}

object_proxy!(
    /// A condition variable kept by a manager, with its own recursive lock (Python's
    /// `manager.Condition()`). As with [`Condition`](crate::Condition), hold the lock to
    /// [`wait`](ConditionProxy::wait) and to [`notify`](ConditionProxy::notify); the lock
    /// is held per thread.
    ///
    /// ```
    /// multiproc::init();
    /// use multiproc::manager::{ConditionProxy, ValueProxy};
    /// fn producer((c, ready): (ConditionProxy, ValueProxy<bool>)) {
    ///     c.acquire().unwrap();
    ///     ready.set(true).unwrap();
    ///     c.notify_all().unwrap();
    ///     c.release().unwrap();
    /// }
    /// let m = multiproc::Manager::start().unwrap();
    /// let (c, ready) = (m.condition().unwrap(), m.value(false).unwrap());
    /// c.acquire().unwrap();
    /// let p = multiproc::spawn(producer, (c.clone(), ready.clone())).unwrap();
    /// assert!(c.wait_for(|| ready.get().unwrap(), None).unwrap());
    /// c.release().unwrap();
    /// p.join().unwrap();
    /// ```
    #[doc(alias = "Condition")]
    ConditionProxy,
    KIND
);

impl ConditionProxy {
    /// Acquires the condition's lock, waiting as long as it takes.
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let c = m.condition().unwrap();
    /// c.acquire().unwrap();
    /// c.release().unwrap();
    /// ```
    pub fn acquire(&self) -> Result<()> {
        if call::<_, Got>(&self.obj, &Req::Acquire(thread_token(), Wait::Forever))?.acquired()? {
            Ok(())
        } else {
            Err(Error::Closed)
        }
    }

    /// Acquires the condition's lock, waiting at most `timeout`; returns whether it got
    /// it.
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let c = m.condition().unwrap();
    /// assert!(c.acquire_timeout(std::time::Duration::from_millis(10)).unwrap());
    /// # c.release().unwrap();
    /// ```
    #[doc(alias = "acquire")]
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<bool> {
        call::<_, Got>(&self.obj, &Req::Acquire(thread_token(), Wait::For(timeout)))?.acquired()
    }

    /// Releases the condition's lock once; not held by this thread →
    /// [`Error::InvalidOperation`].
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// assert!(m.condition().unwrap().release().is_err());
    /// ```
    pub fn release(&self) -> Result<()> {
        call(&self.obj, &Req::Release(thread_token())).map_err(misuse)
    }

    fn wait_in(&self, wait: Wait) -> Result<bool> {
        call::<_, Got>(&self.obj, &Req::Wait(thread_token(), wait))
            .map_err(misuse)?
            .acquired()
    }

    /// Releases the lock, waits for a notification, and takes the lock back. Without the
    /// lock → [`Error::InvalidOperation`].
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let c = m.condition().unwrap();
    /// assert!(matches!(c.wait(), Err(multiproc::Error::InvalidOperation(_))));
    /// ```
    pub fn wait(&self) -> Result<()> {
        self.wait_in(Wait::Forever).map(|_| ())
    }

    /// As [`wait`](ConditionProxy::wait), for at most `timeout`: returns whether it was
    /// notified (the lock is held again either way).
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let c = m.condition().unwrap();
    /// c.acquire().unwrap();
    /// assert!(!c.wait_timeout(std::time::Duration::from_millis(10)).unwrap());
    /// c.release().unwrap();
    /// ```
    #[doc(alias = "wait")]
    pub fn wait_timeout(&self, timeout: Duration) -> Result<bool> {
        self.wait_in(Wait::For(timeout))
    }

    /// Waits until `predicate` holds, checking it under the lock after each notification
    /// (Python's `wait_for`); `timeout` bounds the whole wait. Returns the predicate's last
    /// value.
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let c = m.condition().unwrap();
    /// c.acquire().unwrap();
    /// assert!(!c.wait_for(|| false, Some(std::time::Duration::from_millis(10))).unwrap());
    /// assert!(c.wait_for(|| true, None).unwrap());
    /// c.release().unwrap();
    /// ```
    pub fn wait_for(
        &self,
        mut predicate: impl FnMut() -> bool,
        timeout: Option<Duration>,
    ) -> Result<bool> {
        let deadline = timeout.and_then(crate::sys::deadline);
        loop {
            if predicate() {
                return Ok(true);
            }
            match deadline {
                None => self.wait()?,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(predicate());
                    }
                    self.wait_timeout(left)?;
                }
            }
        }
    }

    /// Wakes one waiter, if any (Python's `notify()`), as
    /// [`Condition::notify`](crate::Condition::notify) does. Without the lock →
    /// [`Error::InvalidOperation`].
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let c = m.condition().unwrap();
    /// c.acquire().unwrap();
    /// c.notify().unwrap(); // nobody waits: nothing happens
    /// c.release().unwrap();
    /// assert!(c.notify().is_err()); // lock not held
    /// ```
    pub fn notify(&self) -> Result<()> {
        self.notify_n(1)
    }

    /// Wakes up to `n` waiters (Python's `notify(n)`). Without the lock →
    /// [`Error::InvalidOperation`].
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let c = m.condition().unwrap();
    /// c.acquire().unwrap();
    /// c.notify_n(2).unwrap(); // nobody waits: nothing happens
    /// c.release().unwrap();
    /// ```
    pub fn notify_n(&self, n: usize) -> Result<()> {
        call(&self.obj, &Req::Notify(thread_token(), n as u64)).map_err(misuse)
    }

    /// Wakes every waiter.
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let c = m.condition().unwrap();
    /// c.acquire().unwrap();
    /// c.notify_all().unwrap();
    /// c.release().unwrap();
    /// ```
    pub fn notify_all(&self) -> Result<()> {
        call(&self.obj, &Req::Notify(thread_token(), u64::MAX)).map_err(misuse)
    }
}

impl Manager {
    /// A new condition variable with its own recursive lock (Python's
    /// `manager.Condition()`).
    ///
    /// ```
    /// multiproc::init();
    /// let m = multiproc::Manager::start().unwrap();
    /// let c = m.condition().unwrap();
    /// c.acquire().unwrap();
    /// c.notify_all().unwrap();
    /// c.release().unwrap();
    /// ```
    #[doc(alias = "Condition")]
    pub fn condition(&self) -> Result<ConditionProxy> {
        Ok(ConditionProxy {
            obj: self.make(Create::Object(KIND.into(), Default::default()))?,
        })
    }
}
