//! Counting semaphores kept by the server (Python's `manager.Semaphore()` and
//! `manager.BoundedSemaphore()`).

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{call, decode, encode, misuse, object_proxy, wait_on, Cx, Object, RemoteErr};
use crate::manager::protocol::{Create, Wait};
use crate::manager::server::lock;
use crate::manager::{proxy::enc, Manager};
use crate::{Error, RemoteErrorKind, Result};

pub(crate) const KIND: &str = "Semaphore";

/// The initial state: the value, and the bound a release may not pass (bounded ones).
#[derive(Serialize, Deserialize)]
struct Init {
    value: u32,
    bound: Option<u32>,
}

pub(crate) struct SemaphoreObj {
    value: Mutex<u32>,
    bound: Option<u32>,
    cv: Condvar,
}

#[derive(Serialize, Deserialize)]
enum Req {
    Acquire(Wait),
    Release,
    Value,
}

impl SemaphoreObj {
    pub(crate) fn create(init: &[u8]) -> std::result::Result<Arc<dyn Object>, RemoteErr> {
        let Init { value, bound } = decode(init)?;
        Ok(Arc::new(SemaphoreObj {
            value: Mutex::new(value),
            bound,
            cv: Condvar::new(),
        }))
    }
}

impl Object for SemaphoreObj {
    fn call(&self, request: &[u8], cx: &Cx<'_>) -> std::result::Result<Vec<u8>, RemoteErr> {
        match decode::<Req>(request)? {
            Req::Acquire(wait) => {
                let (mut g, ok) = wait_on(&self.value, &self.cv, cx.conn, wait, |v| *v > 0);
                if ok {
                    *g -= 1;
                }
                encode(&ok)
            }
            Req::Release => {
                let mut g = lock(&self.value);
                if self.bound.is_some_and(|b| *g >= b) || *g == u32::MAX {
                    return Err((
                        RemoteErrorKind::ValueError,
                        "Semaphore released too many times".into(),
                    ));
                }
                *g += 1;
                self.cv.notify_one();
                encode(&())
            }
            Req::Value => encode(&*lock(&self.value)),
        }
    }
}

macro_rules! semaphore_methods {
    ($t:ident, $ctor:ident) => {
        impl $t {
            fn acquire_wait(&self, wait: Wait) -> Result<bool> {
                call(&self.obj, &Req::Acquire(wait))
            }

            /// Takes a unit, waiting as long as it takes.
            ///
            /// ```
            /// # multiproc::init();
            /// # let m = multiproc::Manager::start().unwrap();
            #[doc = concat!("let s = m.", stringify!($ctor), "(1).unwrap();")]
            /// s.acquire().unwrap();
            /// assert_eq!(s.get_value().unwrap(), 0);
            /// ```
            pub fn acquire(&self) -> Result<()> {
                if self.acquire_wait(Wait::Forever)? {
                    Ok(())
                } else {
                    Err(Error::Closed)
                }
            }

            /// Takes a unit, waiting at most `timeout`; returns whether it got one.
            ///
            /// ```
            /// # multiproc::init();
            /// # let m = multiproc::Manager::start().unwrap();
            #[doc = concat!("let s = m.", stringify!($ctor), "(0).unwrap();")]
            /// assert!(!s.acquire_timeout(std::time::Duration::from_millis(10)).unwrap());
            /// ```
            #[doc(alias = "acquire")]
            pub fn acquire_timeout(&self, timeout: Duration) -> Result<bool> {
                self.acquire_wait(Wait::For(timeout))
            }

            /// Takes a unit if one is free now; returns whether it got one.
            ///
            /// ```
            /// # multiproc::init();
            /// # let m = multiproc::Manager::start().unwrap();
            #[doc = concat!("let s = m.", stringify!($ctor), "(1).unwrap();")]
            /// assert!(s.try_acquire().unwrap());
            /// assert!(!s.try_acquire().unwrap());
            /// ```
            pub fn try_acquire(&self) -> Result<bool> {
                self.acquire_wait(Wait::No)
            }

            /// Units free now.
            ///
            /// ```
            /// # multiproc::init();
            /// # let m = multiproc::Manager::start().unwrap();
            #[doc = concat!("assert_eq!(m.", stringify!($ctor), "(3).unwrap().get_value().unwrap(), 3);")]
            /// ```
            pub fn get_value(&self) -> Result<u32> {
                call(&self.obj, &Req::Value)
            }
        }
    };
}

object_proxy!(
    /// A counting semaphore kept by a manager (Python's `manager.Semaphore(value)`).
    ///
    /// ```
    /// multiproc::init();
    /// use multiproc::manager::SemaphoreProxy;
    /// fn take(s: SemaphoreProxy) -> bool { s.try_acquire().unwrap() }
    /// let m = multiproc::Manager::start().unwrap();
    /// let s = m.semaphore(1).unwrap();
    /// assert!(multiproc::spawn(take, s.clone()).unwrap().join().unwrap());
    /// assert!(!s.try_acquire().unwrap());
    /// s.release().unwrap();
    /// assert!(s.try_acquire().unwrap());
    /// ```
    #[doc(alias = "Semaphore")]
    SemaphoreProxy,
    KIND
);
semaphore_methods!(SemaphoreProxy, semaphore);

impl SemaphoreProxy {
    /// Gives a unit back (any process may).
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let s = m.semaphore(0).unwrap();
    /// s.release().unwrap();
    /// assert_eq!(s.get_value().unwrap(), 1);
    /// ```
    pub fn release(&self) -> Result<()> {
        call(&self.obj, &Req::Release).map_err(misuse)
    }
}

object_proxy!(
    /// A semaphore kept by a manager that may not be released past its initial value
    /// (Python's `manager.BoundedSemaphore(value)`).
    ///
    /// ```
    /// multiproc::init();
    /// use multiproc::manager::BoundedSemaphoreProxy;
    /// fn give_back(s: BoundedSemaphoreProxy) -> bool { s.release().is_ok() }
    /// let m = multiproc::Manager::start().unwrap();
    /// let s = m.bounded_semaphore(1).unwrap();
    /// assert!(!multiproc::spawn(give_back, s.clone()).unwrap().join().unwrap());
    /// s.acquire().unwrap();
    /// assert!(multiproc::spawn(give_back, s.clone()).unwrap().join().unwrap());
    /// ```
    #[doc(alias = "BoundedSemaphore")]
    BoundedSemaphoreProxy,
    KIND
);
semaphore_methods!(BoundedSemaphoreProxy, bounded_semaphore);

impl BoundedSemaphoreProxy {
    /// Gives a unit back; past the initial value → [`Error::InvalidOperation`], as with
    /// [`BoundedSemaphore`](crate::BoundedSemaphore).
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let s = m.bounded_semaphore(1).unwrap();
    /// assert!(matches!(s.release(), Err(multiproc::Error::InvalidOperation(_))));
    /// ```
    pub fn release(&self) -> Result<()> {
        call(&self.obj, &Req::Release).map_err(misuse)
    }
}

impl Manager {
    fn make_semaphore(
        &self,
        value: u32,
        bound: Option<u32>,
    ) -> Result<crate::manager::client::ObjRef> {
        self.make(Create::Object(KIND.into(), enc(&Init { value, bound })?))
    }

    /// A new semaphore with `value` units (Python's `manager.Semaphore(value)`).
    ///
    /// ```
    /// multiproc::init();
    /// let m = multiproc::Manager::start().unwrap();
    /// assert_eq!(m.semaphore(2).unwrap().get_value().unwrap(), 2);
    /// ```
    #[doc(alias = "Semaphore")]
    pub fn semaphore(&self, value: u32) -> Result<SemaphoreProxy> {
        Ok(SemaphoreProxy {
            obj: self.make_semaphore(value, None)?,
        })
    }

    /// A new bounded semaphore with `value` units (Python's
    /// `manager.BoundedSemaphore(value)`).
    ///
    /// ```
    /// multiproc::init();
    /// let m = multiproc::Manager::start().unwrap();
    /// assert!(m.bounded_semaphore(1).unwrap().release().is_err());
    /// ```
    #[doc(alias = "BoundedSemaphore")]
    pub fn bounded_semaphore(&self, value: u32) -> Result<BoundedSemaphoreProxy> {
        Ok(BoundedSemaphoreProxy {
            obj: self.make_semaphore(value, Some(value))?,
        })
    }
}
