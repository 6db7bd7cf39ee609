//! A barrier kept by the server (Python's `manager.Barrier(parties)`).

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{call, decode, encode, object_proxy, wait_on, Cx, Object, RemoteErr};
use crate::manager::protocol::{Create, Wait};
use crate::manager::server::lock;
use crate::manager::{proxy::enc, Manager};
use crate::{Error, Result};

pub(crate) const KIND: &str = "Barrier";

struct State {
    parties: u64,
    /// Parties waiting in the current round.
    count: u64,
    /// Rounds completed.
    generation: u64,
    /// Resets done: those waiting through one are told the barrier broke.
    resets: u64,
    broken: bool,
}

pub(crate) struct BarrierObj {
    state: Mutex<State>,
    cv: Condvar,
}

#[derive(Serialize, Deserialize)]
enum Req {
    Wait(Wait),
    Abort,
    Reset,
    /// (parties, waiting, broken)
    Info,
}

impl BarrierObj {
    pub(crate) fn create(init: &[u8]) -> std::result::Result<Arc<dyn Object>, RemoteErr> {
        let parties: u64 = decode(init)?;
        Ok(Arc::new(BarrierObj {
            state: Mutex::new(State {
                parties,
                count: 0,
                generation: 0,
                resets: 0,
                broken: false,
            }),
            cv: Condvar::new(),
        }))
    }
}

impl Object for BarrierObj {
    fn call(&self, request: &[u8], cx: &Cx<'_>) -> std::result::Result<Vec<u8>, RemoteErr> {
        // A wait's reply: the arrival index, or `None` when the barrier is (or broke) broken.
        match decode::<Req>(request)? {
            Req::Wait(wait) => {
                let (generation, resets, index) = {
                    let mut g = lock(&self.state);
                    if g.broken {
                        return encode(&None::<u64>);
                    }
                    let index = g.count;
                    g.count += 1;
                    if g.count == g.parties {
                        g.count = 0;
                        g.generation += 1;
                        self.cv.notify_all();
                        return encode(&Some(index));
                    }
                    (g.generation, g.resets, index)
                };
                let (mut g, _) = wait_on(&self.state, &self.cv, cx.conn, wait, |s| {
                    s.generation != generation || s.broken || s.resets != resets
                });
                if g.generation != generation {
                    return encode(&Some(index));
                }
                if g.resets == resets && !g.broken {
                    // Out of time (or the client left): that breaks it for everyone.
                    g.broken = true;
                    self.cv.notify_all();
                }
                if g.resets == resets {
                    g.count = g.count.saturating_sub(1);
                }
                encode(&None::<u64>)
            }
            Req::Abort => {
                let mut g = lock(&self.state);
                g.broken = true;
                self.cv.notify_all();
                encode(&())
            }
            Req::Reset => {
                let mut g = lock(&self.state);
                g.resets += 1;
                g.count = 0;
                g.broken = false;
                self.cv.notify_all();
                encode(&())
            }
            Req::Info => {
                let g = lock(&self.state);
                encode(&(g.parties, g.count, g.broken))
            }
        }
    }
}

object_proxy!(
    /// A barrier kept by a manager (Python's `manager.Barrier(parties)`): each
    /// [`wait`](BarrierProxy::wait) blocks until `parties` waits are under way, then all
    /// return. A wait that runs out of time, an [`abort`](BarrierProxy::abort) or a
    /// [`reset`](BarrierProxy::reset) during a wait breaks it: the waits fail with
    /// [`Error::BrokenBarrier`], as with [`Barrier`](crate::Barrier).
    ///
    /// ```
    /// multiproc::init();
    /// use multiproc::manager::BarrierProxy;
    /// fn meet(b: BarrierProxy) -> usize { b.wait().unwrap() }
    /// let m = multiproc::Manager::start().unwrap();
    /// let b = m.barrier(2).unwrap();
    /// let p = multiproc::spawn(meet, b.clone()).unwrap();
    /// let mine = b.wait().unwrap();
    /// let theirs = p.join().unwrap();
    /// assert_eq!(mine + theirs, 1); // one got 0, the other 1
    /// ```
    #[doc(alias = "Barrier")]
    BarrierProxy,
    KIND
);

impl BarrierProxy {
    fn wait_in(&self, wait: Wait) -> Result<usize> {
        match call::<_, Option<u64>>(&self.obj, &Req::Wait(wait))? {
            Some(i) => Ok(i as usize),
            None => Err(Error::BrokenBarrier),
        }
    }

    /// Waits for the other parties; returns this party's arrival index, from 0 to
    /// `parties - 1`.
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// assert_eq!(m.barrier(1).unwrap().wait().unwrap(), 0);
    /// ```
    pub fn wait(&self) -> Result<usize> {
        self.wait_in(Wait::Forever)
    }

    /// As [`wait`](BarrierProxy::wait), for at most `timeout`; running out of time breaks
    /// the barrier for everyone.
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let b = m.barrier(2).unwrap();
    /// let r = b.wait_timeout(std::time::Duration::from_millis(10));
    /// assert!(matches!(r, Err(multiproc::Error::BrokenBarrier)));
    /// assert!(b.broken().unwrap());
    /// ```
    #[doc(alias = "wait")]
    pub fn wait_timeout(&self, timeout: Duration) -> Result<usize> {
        self.wait_in(Wait::For(timeout))
    }

    /// Breaks the barrier: current and later waits fail until a
    /// [`reset`](BarrierProxy::reset).
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let b = m.barrier(1).unwrap();
    /// b.abort().unwrap();
    /// assert!(matches!(b.wait(), Err(multiproc::Error::BrokenBarrier)));
    /// ```
    pub fn abort(&self) -> Result<()> {
        call(&self.obj, &Req::Abort)
    }

    /// Back to its first state; parties waiting now fail with [`Error::BrokenBarrier`].
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let b = m.barrier(1).unwrap();
    /// b.abort().unwrap();
    /// b.reset().unwrap();
    /// assert_eq!(b.wait().unwrap(), 0);
    /// ```
    pub fn reset(&self) -> Result<()> {
        call(&self.obj, &Req::Reset)
    }

    fn info(&self) -> Result<(u64, u64, bool)> {
        call(&self.obj, &Req::Info)
    }

    /// The number of parties.
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// assert_eq!(m.barrier(3).unwrap().parties().unwrap(), 3);
    /// ```
    pub fn parties(&self) -> Result<usize> {
        Ok(self.info()?.0 as usize)
    }

    /// How many parties wait now.
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// assert_eq!(m.barrier(3).unwrap().n_waiting().unwrap(), 0);
    /// ```
    pub fn n_waiting(&self) -> Result<usize> {
        // As Python's (and `Barrier::n_waiting`): nobody waits at a broken barrier.
        let (_, count, broken) = self.info()?;
        Ok(if broken { 0 } else { count as usize })
    }

    /// Whether it is broken.
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// assert!(!m.barrier(3).unwrap().broken().unwrap());
    /// ```
    pub fn broken(&self) -> Result<bool> {
        Ok(self.info()?.2)
    }
}

impl Manager {
    /// A new barrier for `parties` parties (Python's `manager.Barrier(parties)`); 0 →
    /// [`Error::InvalidOperation`], as for [`Barrier::new`](crate::Barrier::new).
    ///
    /// ```
    /// multiproc::init();
    /// let m = multiproc::Manager::start().unwrap();
    /// assert_eq!(m.barrier(1).unwrap().wait().unwrap(), 0);
    /// assert!(m.barrier(0).is_err());
    /// ```
    #[doc(alias = "Barrier")]
    pub fn barrier(&self, parties: usize) -> Result<BarrierProxy> {
        if parties == 0 {
            return Err(Error::invalid("a Barrier needs at least one party"));
        }
        Ok(BarrierProxy {
            obj: self.make(Create::Object(KIND.into(), enc(&(parties as u64))?))?,
        })
    }
}
