//! A start-method context: [`get_context`] and [`Context`], Python's
//! `multiprocessing.get_context(method)`.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::manager::ManagerBuilder;
use crate::process::{Builder, JoinHandle, Process};
use crate::{
    Array, Barrier, BoundedSemaphore, Condition, Connection, Event, JoinableQueue, Lock, Manager,
    Number, Pool, PoolBuilder, Queue, RLock, Result, Semaphore, SimpleQueue, StartMethod, Value,
};

/// A context bound to one start method (Python's `multiprocessing.get_context(method)`):
/// the processes, pools and managers it makes start with that method, whatever the
/// process-wide default ([`set_start_method`](crate::set_start_method)) says, so that a
/// library can pick its method without changing its caller's.
///
/// It also makes queues, pipes, locks and shared values, under Python's names, so that
/// code written against a context ports as is. Those are the same objects whatever the
/// method: they live in shared memory or sockets, which every start method hands to
/// children alike.
///
/// ```
/// multiproc::init();
/// use multiproc::StartMethod;
/// fn cube(x: u64) -> u64 { x * x * x }
/// let ctx = multiproc::get_context(StartMethod::Spawn);
/// assert_eq!(ctx.get_start_method(), StartMethod::Spawn);
/// let q = ctx.queue::<u64>().unwrap();
/// fn put_cube((q, x): (multiproc::Queue<u64>, u64)) { q.put(cube(x)).unwrap(); }
/// let mut p = ctx.process(put_cube, (q.clone(), 3)); // a spawned child
/// p.start().unwrap();
/// assert_eq!(q.get().unwrap(), 27);
/// p.join().unwrap();
/// let pool = ctx.pool(2).unwrap(); // spawned workers
/// assert_eq!(pool.map(cube, 1..=3).unwrap(), vec![1, 8, 27]);
/// ```
#[doc(alias = "BaseContext")]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Context {
    /// `None`: the default context, which follows the process-wide start method.
    method: Option<StartMethod>,
}

/// The context of start method `method` (Python's `get_context(method)`); see [`Context`].
/// [`Context::default()`] is Python's `get_context()`: it follows the process-wide default.
///
/// ```
/// use multiproc::{get_context, Context, StartMethod};
/// assert_eq!(get_context(StartMethod::Fork).get_start_method(), StartMethod::Fork);
/// assert_eq!(Context::default().get_start_method(), multiproc::get_start_method());
/// ```
pub fn get_context(method: StartMethod) -> Context {
    Context {
        method: Some(method),
    }
}

impl Context {
    /// The start method of the processes this context makes.
    ///
    /// ```
    /// let ctx = multiproc::get_context(multiproc::StartMethod::ForkServer);
    /// assert_eq!(ctx.get_start_method(), multiproc::StartMethod::ForkServer);
    /// ```
    pub fn get_start_method(&self) -> StartMethod {
        self.method.unwrap_or_else(crate::get_start_method)
    }

    /// A [`Process`] that will start with this context's method (Python's `ctx.Process`).
    ///
    /// ```
    /// multiproc::init();
    /// let ctx = multiproc::get_context(multiproc::StartMethod::Spawn);
    /// let mut p = ctx.process(|code: i32| std::process::exit(code), 3);
    /// p.start().unwrap();
    /// p.join().unwrap();
    /// assert_eq!(p.exitcode(), Some(3));
    /// ```
    #[doc(alias = "Process")]
    pub fn process<A, R>(&self, target: fn(A) -> R, args: A) -> Process
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: std::process::Termination + 'static,
    {
        let p = Process::new(target, args);
        match self.method {
            Some(m) => p.with_start_method(m),
            None => p,
        }
    }

    /// A process [`Builder`] with this context's method.
    ///
    /// ```
    /// multiproc::init();
    /// let ctx = multiproc::get_context(multiproc::StartMethod::Spawn);
    /// let h = ctx.builder().name("adder").spawn(|(a, b): (i32, i32)| a + b, (2, 3)).unwrap();
    /// assert_eq!(h.join().unwrap(), 5);
    /// ```
    pub fn builder(&self) -> Builder {
        let b = Builder::new();
        match self.method {
            Some(m) => b.start_method(m),
            None => b,
        }
    }

    /// Starts `f(args)` in a child with this context's method and returns its handle (see
    /// [`spawn`](crate::spawn)).
    ///
    /// ```
    /// multiproc::init();
    /// let ctx = multiproc::get_context(multiproc::StartMethod::ForkServer);
    /// assert_eq!(ctx.spawn(|x: u8| x + 1, 1).unwrap().join().unwrap(), 2);
    /// ```
    pub fn spawn<A, R>(&self, f: fn(A) -> R, args: A) -> Result<JoinHandle<R>>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + 'static,
    {
        self.builder().spawn(f, args)
    }

    /// A [`Pool`] of `processes` workers started with this context's method (Python's
    /// `ctx.Pool(processes)`; 0: [`cpu_count()`](crate::cpu_count)).
    ///
    /// ```
    /// multiproc::init();
    /// let pool = multiproc::get_context(multiproc::StartMethod::Spawn).pool(1).unwrap();
    /// assert_eq!(pool.apply(|x: u32| x * 2, 4).unwrap(), 8);
    /// ```
    #[doc(alias = "Pool")]
    pub fn pool(&self, processes: usize) -> Result<Pool> {
        self.pool_builder().processes(processes).build()
    }

    /// A [`PoolBuilder`] with this context's method.
    ///
    /// ```
    /// multiproc::init();
    /// let ctx = multiproc::get_context(multiproc::StartMethod::ForkServer);
    /// let pool = ctx.pool_builder().processes(1).build().unwrap();
    /// assert_eq!(pool.apply(|x: u32| x + 1, 1).unwrap(), 2);
    /// ```
    pub fn pool_builder(&self) -> PoolBuilder {
        let b = Pool::builder();
        match self.method {
            Some(m) => b.start_method(m),
            None => b,
        }
    }

    /// Starts a [`Manager`] whose server process starts with this context's method
    /// (Python's `ctx.Manager()`).
    ///
    /// ```
    /// multiproc::init();
    /// let m = multiproc::get_context(multiproc::StartMethod::Spawn).manager().unwrap();
    /// assert_eq!(m.value(5).unwrap().get().unwrap(), 5);
    /// ```
    #[doc(alias = "Manager")]
    pub fn manager(&self) -> Result<Manager> {
        self.manager_builder().start()
    }

    /// A [`ManagerBuilder`] with this context's method.
    ///
    /// ```
    /// multiproc::init();
    /// let ctx = multiproc::get_context(multiproc::StartMethod::ForkServer);
    /// let m = ctx.manager_builder().authkey(b"k").start().unwrap();
    /// assert_eq!(m.authkey(), b"k");
    /// ```
    pub fn manager_builder(&self) -> ManagerBuilder {
        let b = Manager::builder();
        match self.method {
            Some(m) => b.start_method(m),
            None => b,
        }
    }

    /// A new [`Queue`] (Python's `ctx.Queue()`; `ctx.Queue(maxsize)` is
    /// [`Queue::bounded`]).
    ///
    /// ```
    /// let q = multiproc::Context::default().queue::<u8>().unwrap();
    /// q.put(1).unwrap();
    /// assert_eq!(q.get().unwrap(), 1);
    /// ```
    #[doc(alias = "Queue")]
    pub fn queue<T>(&self) -> Result<Queue<T>> {
        Queue::new()
    }

    /// A new [`JoinableQueue`] (Python's `ctx.JoinableQueue()`).
    ///
    /// ```
    /// let q = multiproc::Context::default().joinable_queue::<u8>().unwrap();
    /// q.put(1).unwrap();
    /// q.get().unwrap();
    /// q.task_done().unwrap();
    /// q.join().unwrap();
    /// ```
    #[doc(alias = "JoinableQueue")]
    pub fn joinable_queue<T>(&self) -> Result<JoinableQueue<T>> {
        JoinableQueue::new()
    }

    /// A new [`SimpleQueue`] (Python's `ctx.SimpleQueue()`).
    ///
    /// ```
    /// let q = multiproc::Context::default().simple_queue::<u8>().unwrap();
    /// assert!(q.empty());
    /// ```
    #[doc(alias = "SimpleQueue")]
    pub fn simple_queue<T>(&self) -> Result<SimpleQueue<T>> {
        SimpleQueue::new()
    }

    /// A duplex [`pipe`](crate::pipe) (Python's `ctx.Pipe()`).
    ///
    /// ```
    /// let (a, b) = multiproc::Context::default().pipe::<u8>().unwrap();
    /// a.send(&1).unwrap();
    /// assert_eq!(b.recv().unwrap(), 1);
    /// ```
    #[doc(alias = "Pipe")]
    pub fn pipe<T>(&self) -> Result<(Connection<T>, Connection<T>)> {
        crate::pipe()
    }

    /// A new [`Lock`] (Python's `ctx.Lock()`).
    ///
    /// ```
    /// let lock = multiproc::Context::default().lock().unwrap();
    /// assert!(lock.try_acquire().unwrap());
    /// ```
    #[doc(alias = "Lock")]
    pub fn lock(&self) -> Result<Lock> {
        Lock::new()
    }

    /// A new [`RLock`] (Python's `ctx.RLock()`).
    ///
    /// ```
    /// let r = multiproc::Context::default().rlock().unwrap();
    /// r.acquire().unwrap();
    /// r.acquire().unwrap();
    /// ```
    #[doc(alias = "RLock")]
    pub fn rlock(&self) -> Result<RLock> {
        RLock::new()
    }

    /// A new [`Semaphore`] holding `value` (Python's `ctx.Semaphore(value)`).
    ///
    /// ```
    /// let s = multiproc::Context::default().semaphore(2).unwrap();
    /// assert_eq!(s.get_value(), 2);
    /// ```
    #[doc(alias = "Semaphore")]
    pub fn semaphore(&self, value: u32) -> Result<Semaphore> {
        Semaphore::new(value)
    }

    /// A new [`BoundedSemaphore`] (Python's `ctx.BoundedSemaphore(value)`).
    ///
    /// ```
    /// let s = multiproc::Context::default().bounded_semaphore(1).unwrap();
    /// assert!(s.release().is_err());
    /// ```
    #[doc(alias = "BoundedSemaphore")]
    pub fn bounded_semaphore(&self, value: u32) -> Result<BoundedSemaphore> {
        BoundedSemaphore::new(value)
    }

    /// A new [`Event`] (Python's `ctx.Event()`).
    ///
    /// ```
    /// let e = multiproc::Context::default().event().unwrap();
    /// assert!(!e.is_set());
    /// ```
    #[doc(alias = "Event")]
    pub fn event(&self) -> Result<Event> {
        Event::new()
    }

    /// A new [`Condition`] with its own lock (Python's `ctx.Condition()`).
    ///
    /// ```
    /// let c = multiproc::Context::default().condition().unwrap();
    /// c.acquire().unwrap();
    /// c.notify_all().unwrap();
    /// c.release().unwrap();
    /// ```
    #[doc(alias = "Condition")]
    pub fn condition(&self) -> Result<Condition> {
        Condition::new()
    }

    /// A new [`Barrier`] for `parties` (Python's `ctx.Barrier(parties)`).
    ///
    /// ```
    /// let b = multiproc::Context::default().barrier(1).unwrap();
    /// assert_eq!(b.wait().unwrap(), 0);
    /// ```
    #[doc(alias = "Barrier")]
    pub fn barrier(&self, parties: usize) -> Result<Barrier> {
        Barrier::new(parties)
    }

    /// A new shared [`Value`] with its own lock (Python's `ctx.Value(typecode, v)`).
    ///
    /// ```
    /// let v = multiproc::Context::default().value(3i64).unwrap();
    /// assert_eq!(v.get(), 3);
    /// ```
    #[doc(alias = "Value")]
    pub fn value<T: Number>(&self, v: T) -> Result<Value<T>> {
        Value::new(v)
    }

    /// A new shared [`Array`] holding `items` (Python's `ctx.Array(typecode, items)`).
    ///
    /// ```
    /// let a = multiproc::Context::default().array(&[1u8, 2]).unwrap();
    /// assert_eq!(a.to_vec(), vec![1, 2]);
    /// ```
    #[doc(alias = "Array")]
    pub fn array<T: Number>(&self, items: &[T]) -> Result<Array<T>> {
        Array::from_slice(items)
    }
}
