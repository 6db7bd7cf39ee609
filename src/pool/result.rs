//! Where results land: [`AsyncResult`] and the sinks that fill it (or an iterator).

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

use super::fail::TaskFail;
use super::sched::Sink;
use crate::sys::plain::PlainType;
use crate::{codec, Error, Result};

type Outcome<T> = std::result::Result<T, TaskFail>;
type Callback<T> = Box<dyn FnOnce(&Outcome<T>) + Send>;

struct Slot<T> {
    outcome: Option<Outcome<T>>,
    done: bool,
    /// The outcome is lent to callbacks right now.
    busy: bool,
    callbacks: Vec<Callback<T>>,
    /// Async waiters (the `tokio` feature): each future's number and its waker, woken
    /// (and taken off) when the outcome is there and not lent out.
    #[cfg(feature = "tokio")]
    wakers: Vec<(u64, std::task::Waker)>,
    #[cfg(feature = "tokio")]
    last_waiter: u64,
}

impl<T> Slot<T> {
    /// Whether the outcome can be read now.
    fn settled(&self) -> bool {
        self.done && !self.busy
    }

    /// The async waiters to wake, once the outcome has become readable.
    #[cfg(feature = "tokio")]
    fn take_wakers(&mut self) -> Vec<(u64, std::task::Waker)> {
        std::mem::take(&mut self.wakers)
    }

    #[cfg(not(feature = "tokio"))]
    fn take_wakers(&mut self) -> [(); 0] {
        []
    }
}

/// Wakes the async waiters taken by [`Slot::take_wakers`].
#[cfg(feature = "tokio")]
fn wake_all(wakers: Vec<(u64, std::task::Waker)>) {
    for (_, w) in wakers {
        w.wake();
    }
}

#[cfg(not(feature = "tokio"))]
fn wake_all(_: [(); 0]) {}

/// The shared state of an [`AsyncResult`].
pub(crate) struct Cell<T> {
    slot: Mutex<Slot<T>>,
    cv: Condvar,
}

impl<T> Cell<T> {
    pub(crate) fn new() -> Arc<Cell<T>> {
        Arc::new(Cell {
            slot: Mutex::new(Slot {
                outcome: None,
                done: false,
                busy: false,
                callbacks: Vec::new(),
                #[cfg(feature = "tokio")]
                wakers: Vec::new(),
                #[cfg(feature = "tokio")]
                last_waiter: 0,
            }),
            cv: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Slot<T>> {
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records the outcome (the first one wins) and runs the callbacks, on this thread.
    pub(crate) fn set(&self, outcome: Outcome<T>) {
        let mut s = self.lock();
        if s.done || s.busy {
            return;
        }
        s.busy = true;
        loop {
            let cbs = std::mem::take(&mut s.callbacks);
            if cbs.is_empty() {
                s.outcome = Some(outcome);
                s.done = true;
                s.busy = false;
                let wakers = s.take_wakers();
                drop(s);
                self.cv.notify_all();
                wake_all(wakers);
                return;
            }
            drop(s);
            for cb in cbs {
                run_callback(cb, &outcome);
            }
            s = self.lock();
        }
    }

    fn add_callback(&self, cb: Callback<T>) {
        let mut s = self.lock();
        if !s.done {
            s.callbacks.push(cb);
            return;
        }
        // Already done: lend the outcome to the callback outside the lock.
        while s.busy {
            s = self.cv.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        let Some(o) = s.outcome.take() else { return };
        s.busy = true;
        drop(s);
        run_callback(cb, &o);
        let mut s = self.lock();
        s.outcome = Some(o);
        s.busy = false;
        let wakers = s.take_wakers();
        drop(s);
        self.cv.notify_all();
        wake_all(wakers);
    }

    /// Waits until the outcome is there and not lent out; `false` on timeout.
    fn wait_until(&self, deadline: Option<Instant>) -> (MutexGuard<'_, Slot<T>>, bool) {
        let mut s = self.lock();
        while !s.settled() {
            match wait_on(&self.cv, s, deadline) {
                Ok(g) => s = g,
                Err(g) => return (g, false),
            }
        }
        (s, true)
    }

    /// Waits for the outcome and takes it (for callers that own the only handle).
    pub(crate) fn take(&self) -> Result<T> {
        // A blocking `apply` often gets its answer within tens of microseconds: look for it
        // for a moment (giving the CPU away) before sleeping.
        let t = Instant::now();
        while t.elapsed() < Duration::from_micros(100) {
            if self.lock().done {
                break;
            }
            std::thread::yield_now();
        }
        let (mut s, _) = self.wait_until(None);
        match s.outcome.take() {
            Some(Ok(v)) => Ok(v),
            Some(Err(f)) => Err(f.to_error()),
            None => Err(Error::invalid("the result was already taken")),
        }
    }
}

/// Runs a user's callback; a panic in it is reported and goes no further (it must not kill
/// the pool thread that delivers results).
fn run_callback<T>(cb: Callback<T>, outcome: &Outcome<T>) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cb(outcome))).is_err() {
        crate::log::log_event!(
            Error,
            "a pool result callback panicked; the panic was ignored"
        );
    }
}

/// The result of [`Pool::apply_async`](super::Pool::apply_async) or
/// [`Pool::map_async`](super::Pool::map_async): a value that will be there once the
/// task(s) ran (Python's `AsyncResult`).
///
/// All methods take `&self`; [`get`](AsyncResult::get) may be called any number of times
/// (from any thread: `AsyncResult` is `Clone`) and returns the same outcome each time.
/// Completion callbacks ([`on_done`](AsyncResult::on_done),
/// [`on_error`](AsyncResult::on_error), [`on_complete`](AsyncResult::on_complete)) run on
/// the pool's thread that received the result, or at once if it is already there; a
/// callback must not wait on the result it is attached to.
///
/// ```
/// multiproc::init();
/// fn cube(x: i64) -> i64 { x * x * x }
/// let pool = multiproc::Pool::new(2).unwrap();
/// let results: Vec<_> = (1..=6).map(|x| pool.apply_async(cube, x)).collect();
/// let output: Vec<i64> = results.iter().map(|r| r.get().unwrap()).collect();
/// assert_eq!(output, vec![1, 8, 27, 64, 125, 216]);
/// ```
pub struct AsyncResult<R> {
    cell: Arc<Cell<R>>,
}

impl<R> Clone for AsyncResult<R> {
    fn clone(&self) -> Self {
        AsyncResult {
            cell: self.cell.clone(),
        }
    }
}

impl<R> fmt::Debug for AsyncResult<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncResult")
            .field("ready", &self.ready())
            .finish()
    }
}

impl<R> AsyncResult<R> {
    pub(crate) fn from_cell(cell: Arc<Cell<R>>) -> AsyncResult<R> {
        AsyncResult { cell }
    }

    pub(crate) fn failed(why: TaskFail) -> AsyncResult<R> {
        let cell = Cell::new();
        cell.set(Err(why));
        AsyncResult { cell }
    }

    /// Takes the value out (for the pool's blocking calls, which own the only handle).
    pub(crate) fn take(self) -> Result<R> {
        self.cell.take()
    }

    /// Whether the outcome is there (Python's `ready()`).
    ///
    /// ```
    /// multiproc::init();
    /// let pool = multiproc::Pool::new(1).unwrap();
    /// let r = pool.apply_async(|x: u8| x, 1);
    /// r.wait();
    /// assert!(r.ready());
    /// ```
    pub fn ready(&self) -> bool {
        self.cell.lock().done
    }

    /// Waits until the outcome is there (Python's `wait()`).
    ///
    /// ```
    /// multiproc::init();
    /// let pool = multiproc::Pool::new(1).unwrap();
    /// let r = pool.apply_async(|x: u8| x + 1, 1);
    /// r.wait();
    /// assert_eq!(r.get().unwrap(), 2);
    /// ```
    pub fn wait(&self) {
        let _ = self.cell.wait_until(None);
    }

    /// Waits up to `timeout`; returns whether the outcome is there.
    ///
    /// ```
    /// multiproc::init();
    /// use std::time::Duration;
    /// let pool = multiproc::Pool::new(1).unwrap();
    /// let r = pool.apply_async(|ms: u64| std::thread::sleep(Duration::from_millis(ms)), 3000);
    /// assert!(!r.wait_timeout(Duration::from_millis(10)));
    /// ```
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.cell.wait_until(crate::sys::deadline(timeout)).1
    }

    /// Whether the task(s) succeeded (Python's `successful()`); an
    /// [`Error::InvalidOperation`] if the outcome is not there yet.
    ///
    /// ```
    /// multiproc::init();
    /// let pool = multiproc::Pool::new(1).unwrap();
    /// let r = pool.apply_async(|x: i32| -> i32 { if x < 0 { panic!("negative") } x }, -1);
    /// r.wait();
    /// assert!(!r.successful().unwrap());
    /// ```
    pub fn successful(&self) -> Result<bool> {
        if !self.cell.lock().done {
            return Err(Error::invalid("the result is not ready"));
        }
        // Done: wait only while a callback borrows the outcome.
        let (s, _) = self.cell.wait_until(None);
        match &s.outcome {
            Some(o) => Ok(o.is_ok()),
            None => Err(Error::invalid("the result is not ready")),
        }
    }

    /// Runs `f` with the outcome once it is there (at once if it already is).
    ///
    /// ```
    /// multiproc::init();
    /// let pool = multiproc::Pool::new(1).unwrap();
    /// let (tx, rx) = std::sync::mpsc::channel();
    /// pool.apply_async(|x: u32| x * 2, 21).on_complete(move |r| {
    ///     tx.send(r.ok().copied()).unwrap();
    /// });
    /// assert_eq!(rx.recv().unwrap(), Some(42));
    /// ```
    pub fn on_complete(
        &self,
        f: impl FnOnce(std::result::Result<&R, Error>) + Send + 'static,
    ) -> &Self {
        self.cell
            .add_callback(Box::new(move |o: &Outcome<R>| match o {
                Ok(v) => f(Ok(v)),
                Err(e) => f(Err(e.to_error())),
            }));
        self
    }

    /// Runs `f` with the value if the task succeeds (Python's `callback=`).
    ///
    /// ```
    /// multiproc::init();
    /// let pool = multiproc::Pool::new(1).unwrap();
    /// let (tx, rx) = std::sync::mpsc::channel();
    /// pool.apply_async(|x: u32| x + 1, 1).on_done(move |v| tx.send(*v).unwrap());
    /// assert_eq!(rx.recv().unwrap(), 2);
    /// ```
    pub fn on_done(&self, f: impl FnOnce(&R) + Send + 'static) -> &Self {
        self.cell.add_callback(Box::new(move |o: &Outcome<R>| {
            if let Ok(v) = o {
                f(v)
            }
        }));
        self
    }

    /// Runs `f` with the error if the task fails (Python's `error_callback=`).
    ///
    /// ```
    /// multiproc::init();
    /// let pool = multiproc::Pool::new(1).unwrap();
    /// let (tx, rx) = std::sync::mpsc::channel();
    /// pool.apply_async(|_: ()| -> u8 { panic!("nope") }, ())
    ///     .on_error(move |e| tx.send(e.to_string()).unwrap());
    /// assert!(rx.recv().unwrap().contains("nope"));
    /// ```
    pub fn on_error(&self, f: impl FnOnce(&Error) + Send + 'static) -> &Self {
        self.cell.add_callback(Box::new(move |o: &Outcome<R>| {
            if let Err(e) = o {
                f(&e.to_error())
            }
        }));
        self
    }
}

impl<R: Clone> AsyncResult<R> {
    /// Waits for the outcome and returns it: the value, or the task's error
    /// ([`Error::TaskPanicked`], [`Error::WorkerDied`], [`Error::Timeout`] for a task over
    /// the pool's task timeout, [`Error::Codec`], [`Error::Closed`] if the pool was
    /// terminated first). Returns the same outcome every time it is called.
    ///
    /// ```
    /// multiproc::init();
    /// let pool = multiproc::Pool::new(1).unwrap();
    /// let r = pool.apply_async(|s: String| s.to_uppercase(), "hi".to_string());
    /// assert_eq!(r.get().unwrap(), "HI");
    /// assert_eq!(r.get().unwrap(), "HI");
    /// ```
    pub fn get(&self) -> Result<R> {
        let (s, _) = self.cell.wait_until(None);
        outcome_of(&s)
    }

    /// Like [`get`](AsyncResult::get), waiting at most `timeout`: [`Error::Timeout`] if the
    /// outcome is not there by then (the task goes on; ask again later).
    ///
    /// ```
    /// multiproc::init();
    /// use std::time::Duration;
    /// let pool = multiproc::Pool::new(1).unwrap();
    /// let r = pool.apply_async(|ms: u64| std::thread::sleep(Duration::from_millis(ms)), 3000);
    /// assert!(matches!(r.get_timeout(Duration::from_millis(10)), Err(multiproc::Error::Timeout)));
    /// ```
    pub fn get_timeout(&self, timeout: Duration) -> Result<R> {
        let (s, ok) = self.cell.wait_until(crate::sys::deadline(timeout));
        if !ok {
            return Err(Error::Timeout);
        }
        outcome_of(&s)
    }
}

/// Async forms (the `tokio` feature). These futures need no particular runtime: the pool's
/// thread that receives the outcome wakes them.
#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
impl<R: Clone> AsyncResult<R> {
    /// Waits for the outcome without blocking the async runtime and returns it: the async
    /// form of [`get`](AsyncResult::get), the same outcome every time.
    ///
    /// # Cancel safety
    /// Cancel-safe: the outcome is only read, never taken, so a dropped future loses
    /// nothing (and takes its waker off the result).
    ///
    /// ```
    /// multiproc::init();
    /// let pool = multiproc::Pool::new(1).unwrap();
    /// let r = pool.apply_async(|x: u64| x * 2, 21);
    /// let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    /// assert_eq!(rt.block_on(r.get_async()).unwrap(), 42);
    /// ```
    pub async fn get_async(&self) -> Result<R> {
        Settled {
            cell: &self.cell,
            id: None,
            read: outcome_of::<R>,
        }
        .await
    }
}

#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
impl<R> AsyncResult<R> {
    /// Waits until the outcome is there without blocking the async runtime: the async form
    /// of [`wait`](AsyncResult::wait).
    ///
    /// # Cancel safety
    /// Cancel-safe: waiting changes nothing.
    ///
    /// ```
    /// multiproc::init();
    /// let pool = multiproc::Pool::new(1).unwrap();
    /// let r = pool.apply_async(|x: u8| x, 1);
    /// let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    /// rt.block_on(r.wait_async());
    /// assert!(r.ready());
    /// ```
    pub async fn wait_async(&self) {
        Settled {
            cell: &self.cell,
            id: None,
            read: |_: &Slot<R>| (),
        }
        .await
    }
}

/// A future ready once a result's outcome is there and not lent out: then `read` looks at
/// it, under the lock.
#[cfg(feature = "tokio")]
struct Settled<'a, T, F> {
    cell: &'a Cell<T>,
    /// This future's number among the result's waiters, once it has waited.
    id: Option<u64>,
    read: F,
}

#[cfg(feature = "tokio")]
impl<T, O, F: Fn(&Slot<T>) -> O + Unpin> std::future::Future for Settled<'_, T, F> {
    type Output = O;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<O> {
        let this = self.get_mut();
        let mut s = this.cell.lock();
        if s.settled() {
            if let Some(id) = this.id.take() {
                s.wakers.retain(|(i, _)| *i != id);
            }
            return std::task::Poll::Ready((this.read)(&s));
        }
        let id = match this.id {
            Some(id) => id,
            None => {
                s.last_waiter += 1;
                *this.id.insert(s.last_waiter)
            }
        };
        match s.wakers.iter_mut().find(|(i, _)| *i == id) {
            Some((_, w)) => w.clone_from(cx.waker()),
            None => s.wakers.push((id, cx.waker().clone())),
        }
        std::task::Poll::Pending
    }
}

#[cfg(feature = "tokio")]
impl<T, F> Drop for Settled<'_, T, F> {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            self.cell.lock().wakers.retain(|(i, _)| *i != id);
        }
    }
}

fn outcome_of<T: Clone>(s: &Slot<T>) -> Result<T> {
    match &s.outcome {
        Some(Ok(v)) => Ok(v.clone()),
        Some(Err(f)) => Err(f.to_error()),
        None => Err(Error::invalid("the result was already taken")),
    }
}

/// Decodes `count` results.
fn decode_replies<R: DeserializeOwned>(
    payload: &[u8],
    fds: Vec<OwnedFd>,
    count: usize,
    mut each: impl FnMut(usize, Outcome<R>),
) {
    codec::decode_tasks::<R>(payload, fds, count, |i, r| {
        each(i, r.map_err(|e| TaskFail::from_error(&e)))
    });
}

/// One task's result goes to an [`AsyncResult`].
pub(crate) struct OneSink<R> {
    pub(crate) cell: Arc<Cell<R>>,
}

impl<R: DeserializeOwned + Send> Sink for OneSink<R> {
    fn deliver(&self, _first: usize, count: usize, payload: &[u8], fds: Vec<OwnedFd>) {
        decode_replies::<R>(payload, fds, count.min(1), |_, o| self.cell.set(o));
    }

    fn fail(&self, _first: usize, _count: usize, why: &TaskFail) {
        self.cell.set(Err(why.clone()));
    }
}

/// A run of consecutive tasks of a map: their values, or one failure for them all.
enum Run<R> {
    Values(Vec<R>),
    Failed(usize, TaskFail),
}

impl<R> Run<R> {
    fn len(&self) -> usize {
        match self {
            Run::Values(v) => v.len(),
            Run::Failed(n, _) => *n,
        }
    }
}

struct VecState<R> {
    /// Outcomes by the index of their run's first task; runs never overlap.
    runs: BTreeMap<usize, Run<R>>,
    n: usize,
    remaining: usize,
}

impl<R> VecState<R> {
    /// Whether tasks `first..first + count` are all unknown yet.
    fn is_free(&self, first: usize, count: usize) -> bool {
        let end = first + count;
        if count == 0 || end > self.n {
            return false;
        }
        let before_ok = self
            .runs
            .range(..=first)
            .next_back()
            .is_none_or(|(s, r)| s + r.len() <= first);
        let after_ok = self.runs.range(first..end).next().is_none();
        before_ok && after_ok
    }

    /// Records the outcomes of tasks `first..`; returns how many were new (a task already
    /// known keeps its first outcome).
    fn put(&mut self, first: usize, run: Run<R>) -> usize {
        let count = run.len();
        if self.is_free(first, count) {
            self.runs.insert(first, run);
            return count;
        }
        // Some are known (never expected): keep only the new ones, one by one.
        let mut n = 0;
        match run {
            Run::Values(v) => {
                for (i, x) in v.into_iter().enumerate() {
                    if self.is_free(first + i, 1) {
                        self.runs.insert(first + i, Run::Values(vec![x]));
                        n += 1;
                    }
                }
            }
            Run::Failed(c, f) => {
                for i in first..first + c {
                    if self.is_free(i, 1) {
                        self.runs.insert(i, Run::Failed(1, f.clone()));
                        n += 1;
                    }
                }
            }
        }
        n
    }

    /// The map's outcome once every task is known: the first error in input order, or
    /// every value in order.
    fn finish(&mut self) -> Outcome<Vec<R>> {
        let runs = std::mem::take(&mut self.runs);
        if let Some(f) = runs.values().find_map(|r| match r {
            Run::Failed(_, f) => Some(f.clone()),
            Run::Values(_) => None,
        }) {
            return Err(f);
        }
        let mut out: Vec<R> = Vec::new();
        for (first, run) in runs {
            if first != out.len() {
                break;
            }
            if let Run::Values(v) = run {
                if out.is_empty() {
                    out = v;
                    out.reserve(self.n - out.len());
                } else {
                    out.extend(v);
                }
            }
        }
        if out.len() == self.n {
            Ok(out)
        } else {
            Err(TaskFail::Invalid("a task's result was lost".into()))
        }
    }
}

/// Progress reporting: called with the number of tasks just finished.
pub(crate) type Progress = Box<dyn Fn(u64) + Send + Sync>;

/// The results of a map, collected in input order into an [`AsyncResult<Vec<R>>`].
pub(crate) struct VecSink<R> {
    st: Mutex<VecState<R>>,
    cell: Arc<Cell<Vec<R>>>,
    progress: Option<Progress>,
}

impl<R> VecSink<R> {
    pub(crate) fn new(n: usize, cell: Arc<Cell<Vec<R>>>, progress: Option<Progress>) -> Self {
        VecSink {
            st: Mutex::new(VecState {
                runs: BTreeMap::new(),
                n,
                remaining: n,
            }),
            cell,
            progress,
        }
    }

    /// Records the outcomes of a run of tasks; finishes the map when every task is in.
    fn store(&self, first: usize, run: Run<R>) {
        let mut st = self.st.lock().unwrap_or_else(|p| p.into_inner());
        let n = st.put(first, run);
        st.remaining = st.remaining.saturating_sub(n);
        let finished = (st.remaining == 0 && n > 0).then(|| st.finish());
        drop(st);
        if let Some(p) = &self.progress {
            p(n as u64);
        }
        if let Some(outcome) = finished {
            self.cell.set(outcome);
        }
    }
}

impl<R: DeserializeOwned + Send> Sink for VecSink<R> {
    fn deliver(&self, first: usize, count: usize, payload: &[u8], fds: Vec<OwnedFd>) {
        // Plain numbers: their memory is their encoding, one copy for the run.
        if let Some(p) = PlainType::<R>::of() {
            if fds.is_empty() && payload.len() == count.saturating_mul(p.size()) {
                if let Some(values) = p.vec(payload) {
                    if !values.is_empty() {
                        self.store(first, Run::Values(values));
                    }
                    return;
                }
            }
        }
        // Decoded outside the lock, straight into a vector of values.
        let mut values = Vec::with_capacity(count);
        let mut failed = None;
        codec::decode_tasks::<R>(payload, fds, count, |i, r| match r {
            Ok(v) if failed.is_none() => values.push(v),
            Ok(_) => {}
            Err(e) => {
                if failed.is_none() {
                    failed = Some((i, TaskFail::from_error(&e)));
                }
            }
        });
        let ok = values.len();
        if ok > 0 {
            self.store(first, Run::Values(values));
        }
        if let Some((i, f)) = failed {
            self.store(first + i, Run::Failed(count - i, f));
        }
    }

    fn fail(&self, first: usize, count: usize, why: &TaskFail) {
        self.store(first, Run::Failed(count, why.clone()));
    }
}

/// Waits on `cv` once (a wake-up may be spurious: the caller looks again), until
/// `deadline` if there is one; `Err` with the guard once the deadline has passed.
fn wait_on<'a, T>(
    cv: &Condvar,
    guard: MutexGuard<'a, T>,
    deadline: Option<Instant>,
) -> std::result::Result<MutexGuard<'a, T>, MutexGuard<'a, T>> {
    let Some(d) = deadline else {
        return Ok(cv.wait(guard).unwrap_or_else(|p| p.into_inner()));
    };
    match d.checked_duration_since(Instant::now()) {
        Some(left) if !left.is_zero() => Ok(cv
            .wait_timeout(guard, left)
            .unwrap_or_else(|p| p.into_inner())
            .0),
        _ => Err(guard),
    }
}

struct IterState<R> {
    /// Ordered: results by task index; unordered: keyed by arrival.
    ready: BTreeMap<usize, Outcome<R>>,
    arrivals: VecDeque<Outcome<R>>,
}

/// Results for an `imap`/`imap_unordered` iterator.
pub(crate) struct IterSink<R> {
    ordered: bool,
    st: Mutex<IterState<R>>,
    cv: Condvar,
}

impl<R> IterSink<R> {
    pub(crate) fn new(ordered: bool) -> Self {
        IterSink {
            ordered,
            st: Mutex::new(IterState {
                ready: BTreeMap::new(),
                arrivals: VecDeque::new(),
            }),
            cv: Condvar::new(),
        }
    }

    fn put(&self, items: impl IntoIterator<Item = (usize, Outcome<R>)>) {
        let mut st = self.st.lock().unwrap_or_else(|p| p.into_inner());
        for (i, o) in items {
            if self.ordered {
                st.ready.insert(i, o);
            } else {
                st.arrivals.push_back(o);
            }
        }
        drop(st);
        self.cv.notify_all();
    }

    /// Waits for the result of task `index` (ordered) or the next arrival (unordered),
    /// until `deadline` if there is one: `None` once it has passed without the result.
    pub(crate) fn next(&self, index: usize, deadline: Option<Instant>) -> Option<Result<R>> {
        let mut st = self.st.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let got = if self.ordered {
                st.ready.remove(&index)
            } else {
                st.arrivals.pop_front()
            };
            if let Some(o) = got {
                return Some(o.map_err(|f| f.to_error()));
            }
            st = wait_on(&self.cv, st, deadline).ok()?;
        }
    }
}

impl<R: DeserializeOwned + Send> Sink for IterSink<R> {
    fn deliver(&self, first: usize, count: usize, payload: &[u8], fds: Vec<OwnedFd>) {
        let mut got = Vec::with_capacity(count);
        decode_replies::<R>(payload, fds, count, |i, o| got.push((first + i, o)));
        self.put(got);
    }

    fn fail(&self, first: usize, count: usize, why: &TaskFail) {
        self.put((first..first + count).map(|i| (i, Err(why.clone()))));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(n: usize) -> VecState<u32> {
        VecState {
            runs: BTreeMap::new(),
            n,
            remaining: n,
        }
    }

    #[test]
    fn runs_out_of_order_make_the_vector_in_input_order() {
        let mut st = state(6);
        assert_eq!(st.put(3, Run::Values(vec![3, 4, 5])), 3);
        assert_eq!(st.put(0, Run::Values(vec![0, 1])), 2);
        assert_eq!(st.put(2, Run::Values(vec![2])), 1);
        assert_eq!(st.finish().unwrap(), vec![0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn the_first_failure_in_input_order_wins() {
        let mut st = state(6);
        assert_eq!(st.put(4, Run::Failed(2, TaskFail::Timeout)), 2);
        assert_eq!(st.put(0, Run::Values(vec![0, 1])), 2);
        assert_eq!(st.put(2, Run::Failed(1, TaskFail::Closed)), 1);
        assert_eq!(st.put(3, Run::Values(vec![3])), 1);
        assert!(matches!(st.finish(), Err(TaskFail::Closed)));
    }

    #[test]
    fn known_tasks_keep_their_first_outcome() {
        let mut st = state(4);
        assert_eq!(st.put(1, Run::Values(vec![10, 20])), 2);
        // Overlaps tasks 1 and 2 on both sides: only tasks 0 and 3 are new.
        assert_eq!(st.put(0, Run::Failed(4, TaskFail::Timeout)), 2);
        assert_eq!(st.put(2, Run::Values(vec![99])), 0);
        // Out of range: ignored.
        assert_eq!(st.put(4, Run::Values(vec![1])), 0);
        assert!(matches!(st.finish(), Err(TaskFail::Timeout)));
        let mut st = state(3);
        assert_eq!(st.put(0, Run::Values(vec![1, 2])), 2);
        assert_eq!(st.put(1, Run::Values(vec![7, 3])), 1);
        assert_eq!(st.finish().unwrap(), vec![1, 2, 3]);
    }

    #[test]
    fn a_missing_task_is_reported_not_invented() {
        let mut st = state(3);
        st.put(0, Run::Values(vec![1]));
        st.put(2, Run::Values(vec![3]));
        assert!(matches!(st.finish(), Err(TaskFail::Invalid(_))));
    }
}
