//! Process pools: [`Pool`] (Python's `multiprocessing.Pool`), [`AsyncResult`] and the lazy
//! [`IMap`] iterator.
//!
//! # The model
//!
//! A pool starts `n` worker processes once and hands them tasks: calls of a plain
//! `fn(A) -> R` (or a closure that captures nothing) on arguments that travel encoded, as
//! for [`Process`]. Tasks go out in chunks — `map` cuts its input into
//! `ceil(len / (4 × workers))`-sized chunks like CPython, and many small waiting tasks
//! (thousands of `apply_async`) travel to a worker together — so the cost of a round trip
//! is shared by many tasks.
//!
//! ```
//! fn main() {
//!     multiproc::init();
//!     fn square(x: u64) -> u64 { x * x }
//!     let pool = multiproc::Pool::new(4).unwrap();
//!     assert_eq!(pool.map(square, 1..=6).unwrap(), vec![1, 4, 9, 16, 25, 36]);
//!     assert_eq!(pool.apply(square, 7).unwrap(), 49);
//! }
//! ```
//!
//! # Faults
//!
//! Nothing a task or a worker does can hang the pool or panic the caller:
//! - a task that panics gives [`Error::TaskPanicked`] (message and location) for that task
//!   only; the worker carries on;
//! - a worker that dies (killed, `abort`, segfault, `exit`) gives [`Error::WorkerDied`]
//!   (pid, signal or exit code) for the job it was running — one `apply`/`apply_async`
//!   task, or the chunk of a map — and a new worker takes its place. One rule for every
//!   kind of job: that job runs at most once (it is not run again, unless
//!   [`PoolBuilder::retries`] asks for it), and the jobs that were waiting behind it on the
//!   dead worker never began, so other workers run them. The jobs it finished before are
//!   not lost: a worker hands each job's results over before it starts the next. Every
//!   other task completes;
//! - with [`PoolBuilder::task_timeout`], a task that runs longer gives [`Error::Timeout`];
//!   its worker is killed and replaced;
//! - a result that cannot be encoded gives [`Error::Codec`] for that task;
//! - an initializer that fails (panics, or returns an `Err`: it counts as a Rust `main`'s
//!   return value does) in any worker, the first ones or a replacement, breaks the pool:
//!   [`build`](PoolBuilder::build) and every pending and later task give
//!   [`Error::BrokenPool`], whose cause is the initializer's panic
//!   ([`Error::TaskPanicked`]) or its `Err` ([`Error::InvalidOperation`]). A worker that dies
//!   otherwise while it starts (exits, crashes in the initializer, or cannot be started)
//!   is tried again; after three such failures in a row a worker slot is given up, and
//!   once every slot has, the pool is broken the same way. A worker SIGKILLed while it
//!   starts counts apart: it was killed from outside, and it is replaced, as in CPython,
//!   up to twenty times in a row (twenty in a row is no accident: the slot gives up);
//! - [`Pool::terminate`] (and dropping the pool) fails every pending task with
//!   [`Error::Closed`] and returns promptly, however much work is queued.
//!
//! (CPython's `Pool` hangs for ever when a worker is killed: bpo-22393.)
//!
//! # Lazy iteration
//!
//! [`Pool::imap`] and [`Pool::imap_unordered`] read their input only as results are
//! consumed, with a bounded number of tasks in flight: an endless input works in constant
//! memory.
//!
//! ```
//! multiproc::init();
//! let pool = multiproc::Pool::new(2).unwrap();
//! let first: Vec<u64> = pool
//!     .imap(|x: u64| x * 10, 0..) // endless input
//!     .take(3)
//!     .collect::<multiproc::Result<_>>()
//!     .unwrap();
//! assert_eq!(first, vec![0, 10, 20]);
//! ```

use std::fmt;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

pub mod cluster;
mod fail;
mod result;
mod sched;
mod wire;
mod worker;

pub use result::AsyncResult;
pub(crate) use worker::InitSpec;

use fail::TaskFail;
use result::{Cell, IterSink, OneSink, Progress, VecSink};
use sched::{Config, Factory, Job, Shared, Sink, StartFail};
use wire::SockHandle;
use worker::{worker_main, TaskCode, WorkerArgs};

use crate::{cpu_count, Error, Process, Result, StartMethod};

type MakeProcess = Arc<dyn Fn(SockHandle) -> Process + Send + Sync>;

/// Options for a [`Pool`]: number of processes, initializer, tasks per worker, task
/// timeout, start method. Made by [`Pool::builder`].
///
/// ```
/// multiproc::init();
/// fn init(greeting: String) { println!("{greeting} from {}", std::process::id()); }
/// let pool = multiproc::Pool::builder()
///     .processes(2)
///     .initializer(init, "hello".to_string())
///     .maxtasksperchild(100)
///     .build()
///     .unwrap();
/// assert_eq!(pool.processes(), 2);
/// ```
#[derive(Clone)]
pub struct PoolBuilder {
    processes: usize,
    make: MakeProcess,
    max_tasks: Option<usize>,
    task_timeout: Option<Duration>,
    method: Option<StartMethod>,
    retries: u32,
    /// The first invalid setting: [`build`](PoolBuilder::build) refuses it.
    invalid: Option<String>,
    /// Spread over the ranks of an MPI job (see [`cluster`]).
    cluster: bool,
    /// Workers on rank 0 of a cluster pool, if not the same as on the other ranks.
    root_processes: Option<usize>,
    /// How another rank rebuilds the initializer.
    #[cfg(feature = "mpi")]
    remote_init: Option<cluster::RemoteInitFn>,
    /// Whether workers may hand large results over as memory files (see
    /// `sys::heap`); not when the results go on to another MPI rank.
    hand_over: bool,
}

impl fmt::Debug for PoolBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolBuilder")
            .field("processes", &self.processes)
            .field("maxtasksperchild", &self.max_tasks)
            .field("task_timeout", &self.task_timeout)
            .field("start_method", &self.method)
            .field("retries", &self.retries)
            .field("cluster", &self.cluster)
            .finish()
    }
}

impl Default for PoolBuilder {
    fn default() -> Self {
        PoolBuilder {
            processes: 0,
            make: Arc::new(|sock| {
                Process::new(worker_main::<(), ()>, WorkerArgs { sock, init: None })
            }),
            max_tasks: None,
            task_timeout: None,
            method: None,
            retries: 0,
            hand_over: true,
            invalid: None,
            cluster: false,
            root_processes: None,
            #[cfg(feature = "mpi")]
            remote_init: None,
        }
    }
}

impl PoolBuilder {
    /// Default options: [`cpu_count()`] processes, no initializer, workers never replaced,
    /// no task timeout, the default start method.
    ///
    /// ```
    /// let b = multiproc::PoolBuilder::new().processes(3);
    /// # let _ = b;
    /// ```
    pub fn new() -> PoolBuilder {
        PoolBuilder::default()
    }

    /// The number of worker processes; `0` means [`cpu_count()`].
    ///
    /// ```
    /// multiproc::init();
    /// let pool = multiproc::Pool::builder().processes(2).build().unwrap();
    /// assert_eq!(pool.processes(), 2);
    /// ```
    pub fn processes(mut self, n: usize) -> PoolBuilder {
        self.processes = n;
        self
    }

    /// A function each worker runs once when it starts, with `args` (Python's
    /// `initializer=`, `initargs=`). Its return value counts as a Rust `main`'s does (see
    /// [`Process::new`](crate::Process::new)): if it returns an `Err` (printed on the
    /// worker's standard error) or panics, [`build`](PoolBuilder::build) returns
    /// [`Error::BrokenPool`] with the failure as its cause ([`Error::InvalidOperation`],
    /// or the panic's [`Error::TaskPanicked`]); if it fails later, in a worker that
    /// replaces a dead one, every task gets that error.
    ///
    /// ```
    /// multiproc::init();
    /// fn setup(level: u8) { assert!(level < 10); }
    /// let pool = multiproc::Pool::builder().processes(1).initializer(setup, 3).build().unwrap();
    /// # drop(pool);
    /// let bad = multiproc::Pool::builder().processes(1).initializer(setup, 30).build();
    /// let Err(multiproc::Error::BrokenPool { cause, .. }) = bad else { panic!() };
    /// assert!(matches!(*cause, multiproc::Error::TaskPanicked { .. }));
    ///
    /// fn connect(url: String) -> Result<(), String> {
    ///     if url.is_empty() { Err("no url".into()) } else { Ok(()) }
    /// }
    /// let bad = multiproc::Pool::builder().processes(1).initializer(connect, String::new()).build();
    /// let Err(multiproc::Error::BrokenPool { cause, .. }) = bad else { panic!() };
    /// assert!(matches!(*cause, multiproc::Error::InvalidOperation(_)));
    /// ```
    pub fn initializer<I, IR>(mut self, f: fn(I) -> IR, args: I) -> PoolBuilder
    where
        I: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
        IR: std::process::Termination + 'static,
    {
        #[cfg(feature = "mpi")]
        {
            self.remote_init = Some(cluster::remote_init(f, args.clone()));
        }
        let spec = InitSpec {
            target: crate::sys::FnRef::of(f).erase(),
            args,
        };
        if spec.target.is_foreign() && self.invalid.is_none() {
            self.invalid = Some(crate::start::foreign_fn_error().to_string());
        }
        self.make = Arc::new(move |sock| {
            Process::new(
                worker_main::<I, IR>,
                WorkerArgs {
                    sock,
                    init: Some(spec.clone()),
                },
            )
        });
        self
    }

    /// Replaces a worker by a fresh process once it has run `k` tasks (Python's
    /// `maxtasksperchild`). A chunk of a map is never split, so a worker may run a few more
    /// than `k` tasks before it is replaced. `k` = 0 is refused: [`build`](PoolBuilder::build)
    /// then returns [`Error::InvalidOperation`] (Python raises `ValueError`).
    ///
    /// ```
    /// multiproc::init();
    /// let pool = multiproc::Pool::builder().processes(1).maxtasksperchild(2).build().unwrap();
    /// let pids: std::collections::HashSet<u32> = (0..4)
    ///     .map(|_| pool.apply(|_: ()| std::process::id(), ()).unwrap())
    ///     .collect();
    /// assert_eq!(pids.len(), 2);
    /// assert!(multiproc::Pool::builder().maxtasksperchild(0).build().is_err());
    /// ```
    pub fn maxtasksperchild(mut self, k: usize) -> PoolBuilder {
        if k == 0 {
            self.refuse("maxtasksperchild must be at least 1");
        }
        self.max_tasks = Some(k);
        self
    }

    fn refuse(&mut self, why: &str) {
        self.invalid.get_or_insert_with(|| why.to_string());
    }

    /// A task running longer than `timeout` fails with [`Error::Timeout`]; its worker is
    /// killed and replaced (mpire's `task_timeout`). The deadline is per task, not per map.
    ///
    /// ```
    /// multiproc::init();
    /// use std::time::Duration;
    /// fn nap(ms: u64) -> u64 { std::thread::sleep(Duration::from_millis(ms)); ms }
    /// let pool = multiproc::Pool::builder()
    ///     .processes(1)
    ///     .task_timeout(Duration::from_millis(300))
    ///     .build()
    ///     .unwrap();
    /// assert!(matches!(pool.apply(nap, 5000), Err(multiproc::Error::Timeout)));
    /// assert_eq!(pool.apply(nap, 1).unwrap(), 1);
    /// // A zero timeout would fail every task: it is refused.
    /// assert!(multiproc::Pool::builder().task_timeout(Duration::ZERO).build().is_err());
    /// ```
    pub fn task_timeout(mut self, timeout: Duration) -> PoolBuilder {
        if timeout.is_zero() {
            self.refuse("task_timeout must be longer than zero");
        }
        self.task_timeout = Some(timeout);
        self
    }

    /// Runs a job again, up to `n` times, when its worker dies while running it (by
    /// default, 0: it fails with [`Error::WorkerDied`] and runs at most once). A job is one
    /// `apply`/`apply_async` task, or one chunk of a map. Only for work that is safe to run
    /// twice: the dead worker may have done part of it (or all of it, and died before its
    /// result was sent). Jobs that were waiting behind it on the dead worker never began:
    /// other workers run them, whatever this setting.
    ///
    /// ```
    /// multiproc::init();
    /// use multiproc::{Pool, Value};
    /// // Dies on its first run, succeeds on the second (the counter is shared memory).
    /// fn flaky(runs: Value<u32>) -> u32 {
    ///     let n = { let mut g = runs.lock().unwrap(); *g += 1; *g };
    ///     if n == 1 { std::process::abort(); }
    ///     n
    /// }
    /// let runs = Value::new(0u32).unwrap();
    /// let pool = Pool::builder().processes(1).retries(1).build().unwrap();
    /// assert_eq!(pool.apply(flaky, runs.clone()).unwrap(), 2);
    /// let pool = Pool::builder().processes(1).build().unwrap(); // no retries
    /// runs.set(0);
    /// assert!(matches!(pool.apply(flaky, runs), Err(multiproc::Error::WorkerDied { .. })));
    /// ```
    pub fn retries(mut self, n: u32) -> PoolBuilder {
        self.retries = n;
        self
    }

    /// Starts the workers with `method` instead of the default start method.
    ///
    /// ```
    /// multiproc::init();
    /// let pool = multiproc::Pool::builder()
    ///     .processes(1)
    ///     .start_method(multiproc::StartMethod::Spawn)
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(pool.apply(|x: i32| -x, 5).unwrap(), -5);
    /// ```
    pub fn start_method(mut self, method: StartMethod) -> PoolBuilder {
        self.method = Some(method);
        self
    }

    /// Spreads the pool over every rank of the MPI job this program was launched in
    /// (`mpirun`, `srun`): see [`cluster`] for the model. [`processes`](Self::processes)
    /// then counts the workers of each rank (`0`: the cores of its node, shared among the
    /// node's ranks). Without the `mpi` cargo feature, or when the program was not launched
    /// by an MPI launcher, the pool is an ordinary local pool.
    ///
    /// ```
    /// multiproc::init();
    /// let pool = multiproc::Pool::builder().cluster().processes(2).build().unwrap();
    /// assert_eq!(pool.processes(), 2 * multiproc::pool::cluster::size());
    /// assert_eq!(pool.map(|x: u64| x * x, 0..4).unwrap(), vec![0, 1, 4, 9]);
    /// ```
    pub fn cluster(mut self) -> PoolBuilder {
        self.cluster = true;
        self
    }

    /// In a [cluster](Self::cluster) pool, the number of workers on rank 0 (the rank that
    /// runs `main`), if it should differ from the other ranks': `0` leaves rank 0 to
    /// `main` and to sending the work out, like mpi4py.futures' master. A job of one rank
    /// (or a local pool) ignores it.
    ///
    /// ```
    /// multiproc::init();
    /// let pool = multiproc::Pool::builder().cluster().root_processes(0).processes(1).build().unwrap();
    /// assert_eq!(pool.apply(|x: i32| x + 1, 1).unwrap(), 2);
    /// ```
    pub fn root_processes(mut self, n: usize) -> PoolBuilder {
        self.root_processes = Some(n);
        self
    }

    /// Starts the workers and waits until each has run the initializer. An invalid setting
    /// given earlier (`maxtasksperchild(0)`, a zero `task_timeout`) →
    /// [`Error::InvalidOperation`], and nothing is started.
    ///
    /// # Errors
    ///
    /// - [`Error::InvalidOperation`]: an invalid setting, as above.
    /// - [`Error::BrokenPool`]: the initializer panicked or returned an `Err` in a worker
    ///   (its cause).
    /// - A worker could not be started: that start's error, as from
    ///   [`Process::start`](crate::Process::start) ([`Error::NotInitialized`] when
    ///   [`init()`](crate::init) was not called first, an [`Error::Io`] from the system, …),
    ///   or [`Error::WorkerDied`] for one that died before it was ready.
    ///
    /// Either way the workers already started are stopped.
    ///
    /// ```
    /// multiproc::init();
    /// let pool = multiproc::Pool::builder().processes(2).build().unwrap();
    /// assert_eq!(pool.map(|x: i32| x + 1, vec![1, 2]).unwrap(), vec![2, 3]);
    /// ```
    pub fn build(self) -> Result<Pool> {
        if let Some(why) = &self.invalid {
            return Err(Error::InvalidOperation(why.clone()));
        }
        #[cfg(feature = "mpi")]
        if self.cluster {
            return cluster::build(self);
        }
        let n = if self.processes == 0 {
            cpu_count()
        } else {
            self.processes
        };
        self.build_local(n, 0)
    }

    /// The workers' results go on to another MPI rank (a cluster agent's pool): they must
    /// carry their bytes, never a memory file handed over (`sys::heap`).
    #[cfg(feature = "mpi")]
    pub(crate) fn results_leave_node(mut self) -> Self {
        self.hand_over = false;
        self
    }

    /// Starts `n` local workers, each with its handler thread, in a pool whose queue is
    /// also served by `remote_slots` handlers that the caller adds (a cluster pool's ranks).
    fn build_local(self, n: usize, remote_slots: usize) -> Result<Pool> {
        let make = self.make;
        let method = self.method;
        let factory: Factory = Arc::new(move |sock| {
            let p = make(sock);
            // Python's name for a pool worker: its process name with "Process" replaced
            // ("PoolWorker-3", or "PoolWorker-1:2" in a child), unique in this process.
            let name = p.name().replacen("Process", "PoolWorker", 1);
            let mut p = p.with_name(name).with_daemon(true);
            if let Some(m) = method {
                p = p.with_start_method(m);
            }
            p.start()?;
            Ok(p)
        });
        let shared = Shared::new(Config {
            workers: n + remote_slots,
            task_timeout: self.task_timeout,
            max_tasks: self.max_tasks,
            factory,
            retries: self.retries,
            hand_over: self.hand_over,
        });
        let pool = Pool {
            shared: shared.clone(),
            handlers: Mutex::new(Vec::new()),
            processes: n,
            #[cfg(feature = "mpi")]
            remote: None,
        };
        let mut workers = Vec::with_capacity(n);
        for slot in 0..n {
            match shared.start_worker(slot) {
                Ok(w) => workers.push(w),
                Err(e) => {
                    for (slot, w) in workers.into_iter().enumerate() {
                        shared.discard_worker(slot, w);
                    }
                    // Remote slots never start: their handlers do not exist.
                    for _ in 0..remote_slots {
                        shared.handler_exited();
                    }
                    shared.terminate();
                    return Err(match e {
                        StartFail::Init(f) | StartFail::Start(f) => f.to_error(),
                        StartFail::Terminating => Error::Closed,
                    });
                }
            }
        }
        let mut handles = Vec::with_capacity(n);
        for (slot, w) in workers.into_iter().enumerate() {
            let s = shared.clone();
            match std::thread::Builder::new()
                .name(format!("multiproc-pool-{slot}"))
                .spawn(move || sched::handler(s, slot, w))
            {
                Ok(h) => handles.push(h),
                Err(e) => {
                    *pool.handlers.lock().unwrap_or_else(|p| p.into_inner()) = handles;
                    // Dropping `pool` terminates what was started.
                    return Err(e.into());
                }
            }
        }
        *pool.handlers.lock().unwrap_or_else(|p| p.into_inner()) = handles;
        Ok(pool)
    }
}

/// A pool of worker processes (Python's `multiprocessing.Pool`). See the
/// [module docs](self) for the model and the fault guarantees.
///
/// Methods take `&self`: a pool can be shared between threads. [`close`](Pool::close) stops
/// new work, [`join`](Pool::join) then waits for the queued work and the workers;
/// [`terminate`](Pool::terminate) — and dropping the pool, like leaving Python's
/// `with Pool() as p:` — stops at once, failing what is pending with [`Error::Closed`].
///
/// ```
/// multiproc::init();
/// fn square(x: i32) -> i32 { x * x }
/// let pool = multiproc::Pool::new(4).unwrap();
/// let results: Vec<i32> = (1..7).map(|x| pool.apply(square, x).unwrap()).collect();
/// assert_eq!(results, vec![1, 4, 9, 16, 25, 36]);
/// pool.close();
/// pool.join().unwrap();
/// ```
pub struct Pool {
    shared: Arc<Shared>,
    handlers: Mutex<Vec<JoinHandle<()>>>,
    processes: usize,
    /// The other ranks of a cluster pool.
    #[cfg(feature = "mpi")]
    remote: Option<cluster::Remote>,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("processes", &self.processes)
            .finish()
    }
}

impl Default for Pool {
    /// A pool of [`cpu_count()`] workers.
    ///
    /// # Panics
    ///
    /// If the workers cannot be started (for example `multiproc::init()` was not called);
    /// use [`Pool::new(0)`](Pool::new) to get the error instead.
    fn default() -> Self {
        match Pool::new(0) {
            Ok(p) => p,
            Err(e) => panic!("cannot start the pool's workers: {e}"),
        }
    }
}

/// CPython's default chunk size for `map`: `ceil(n / (4 × workers))`.
fn default_chunksize(n: usize, workers: usize) -> usize {
    n.div_ceil(4 * workers.max(1)).max(1)
}

/// A chunk size of 0 is refused, as Python refuses it (`ValueError`).
fn check_chunksize(chunksize: usize) -> Result<()> {
    if chunksize == 0 {
        return Err(Error::invalid("the chunk size must be at least 1"));
    }
    Ok(())
}

impl Pool {
    /// A pool of `n` worker processes; `0` means [`cpu_count()`] (Python's
    /// `Pool(processes=n)`).
    ///
    /// # Errors
    ///
    /// Those of [`PoolBuilder::build`].
    ///
    /// ```
    /// multiproc::init();
    /// let pool = multiproc::Pool::new(0).unwrap();
    /// assert_eq!(pool.processes(), multiproc::cpu_count());
    /// ```
    pub fn new(n: usize) -> Result<Pool> {
        PoolBuilder::new().processes(n).build()
    }

    /// A pool with workers on every rank of the MPI job this program runs in (every core
    /// of a cluster), or on this machine when it was not launched by `mpirun`/`srun`; the
    /// same [`Pool`] with the same methods. See [`cluster`].
    ///
    /// ```
    /// multiproc::init();
    /// let pool = multiproc::Pool::cluster().unwrap();
    /// assert_eq!(pool.map(|x: u32| x + 1, vec![1, 2]).unwrap(), vec![2, 3]);
    /// ```
    pub fn cluster() -> Result<Pool> {
        PoolBuilder::new().cluster().build()
    }

    /// A [`PoolBuilder`] for more options.
    ///
    /// ```
    /// multiproc::init();
    /// let pool = multiproc::Pool::builder().processes(1).build().unwrap();
    /// assert_eq!(pool.processes(), 1);
    /// ```
    pub fn builder() -> PoolBuilder {
        PoolBuilder::new()
    }

    /// The number of worker processes.
    ///
    /// ```
    /// multiproc::init();
    /// assert_eq!(multiproc::Pool::new(3).unwrap().processes(), 3);
    /// ```
    pub fn processes(&self) -> usize {
        self.processes
    }

    /// Cuts `items` into jobs of `chunksize` tasks, submitting each as it is cut. The
    /// arguments are encoded by the pool's handler threads, in parallel.
    fn submit_items<A, R>(
        &self,
        f: fn(A) -> R,
        items: Vec<A>,
        chunksize: usize,
        sink: Arc<dyn Sink>,
    ) where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize,
    {
        let code = TaskCode::of(f);
        let chunksize = chunksize.max(1);
        let mut first = 0;
        let mut items = items.into_iter();
        let mut jobs = Vec::new();
        loop {
            let chunk: Vec<A> = items.by_ref().take(chunksize).collect();
            if chunk.is_empty() {
                break;
            }
            let n = chunk.len();
            jobs.push(Job::lazy(code, first, chunk, sink.clone()));
            first += n;
            // Submit in groups so that workers start while the rest is cut (the first job
            // at once: a handler encodes it while the next ones are cut).
            if jobs.len() >= 4 || first == n {
                let _ = self.shared.submit(std::mem::take(&mut jobs), false);
            }
        }
        if !jobs.is_empty() {
            let _ = self.shared.submit(jobs, false);
        }
    }

    fn map_inner<A, R>(
        &self,
        f: fn(A) -> R,
        items: Vec<A>,
        chunksize: usize,
        progress: Option<Progress>,
    ) -> AsyncResult<Vec<R>>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        if let Err(e) = self.shared.check_open().and(check_chunksize(chunksize)) {
            return AsyncResult::failed(TaskFail::from_error(&e));
        }
        let cell = Cell::new();
        if items.is_empty() {
            cell.set(Ok(Vec::new()));
            return AsyncResult::from_cell(cell);
        }
        let sink = Arc::new(VecSink::new(items.len(), cell.clone(), progress));
        self.submit_items(f, items, chunksize, sink);
        AsyncResult::from_cell(cell)
    }

    /// Applies `f` to every item, in parallel, and returns the results in input order
    /// (Python's `map`). The input is cut into chunks of `ceil(n / (4 × workers))` items.
    /// If tasks fail, the error of the first failed one in input order is returned.
    ///
    /// ```
    /// multiproc::init();
    /// fn square(x: u64) -> u64 { x * x }
    /// let pool = multiproc::Pool::new(4).unwrap();
    /// assert_eq!(pool.map(square, 1..=6).unwrap(), vec![1, 4, 9, 16, 25, 36]);
    /// assert_eq!(pool.map(square, Vec::new()).unwrap(), Vec::<u64>::new());
    /// ```
    pub fn map<A, R>(&self, f: fn(A) -> R, items: impl IntoIterator<Item = A>) -> Result<Vec<R>>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let items: Vec<A> = items.into_iter().collect();
        let cs = default_chunksize(items.len(), self.processes);
        self.map_inner(f, items, cs, None).take()
    }

    /// [`map`](Pool::map) with chunks of `chunksize` items (Python's `chunksize=`). A chunk
    /// size of 0 → [`Error::InvalidOperation`].
    ///
    /// ```
    /// multiproc::init();
    /// let pool = multiproc::Pool::new(2).unwrap();
    /// let v = pool.map_chunked(|x: i32| x * 2, 0..100, 7).unwrap();
    /// assert_eq!(v, (0..100).map(|x| x * 2).collect::<Vec<_>>());
    /// ```
    pub fn map_chunked<A, R>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A>,
        chunksize: usize,
    ) -> Result<Vec<R>>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.map_inner(f, items.into_iter().collect(), chunksize, None)
            .take()
    }

    /// [`map`](Pool::map) for a function of several arguments, taken as a tuple (Python's
    /// `starmap`; in Rust it is the same as `map`, kept for the name).
    ///
    /// ```
    /// multiproc::init();
    /// fn add((a, b): (i32, i32)) -> i32 { a + b }
    /// let pool = multiproc::Pool::new(2).unwrap();
    /// assert_eq!(pool.starmap(add, vec![(1, 2), (3, 4)]).unwrap(), vec![3, 7]);
    /// ```
    pub fn starmap<A, R>(&self, f: fn(A) -> R, items: impl IntoIterator<Item = A>) -> Result<Vec<R>>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.map(f, items)
    }

    /// Starts a [`map`](Pool::map) and returns at once (Python's `map_async`).
    ///
    /// ```
    /// multiproc::init();
    /// let pool = multiproc::Pool::new(2).unwrap();
    /// let r = pool.map_async(|x: u32| x + 1, vec![1, 2, 3]);
    /// assert_eq!(r.get().unwrap(), vec![2, 3, 4]);
    /// ```
    pub fn map_async<A, R>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A>,
    ) -> AsyncResult<Vec<R>>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let items: Vec<A> = items.into_iter().collect();
        let cs = default_chunksize(items.len(), self.processes);
        self.map_inner(f, items, cs, None)
    }

    /// [`map_async`](Pool::map_async) with chunks of `chunksize` items (Python's
    /// `map_async(func, iterable, chunksize)`): each chunk runs whole in one worker.
    ///
    /// ```
    /// multiproc::init();
    /// let pool = multiproc::Pool::new(2).unwrap();
    /// let r = pool.map_async_chunked(|x: u32| x * 10, 0..9, 3);
    /// assert_eq!(r.get().unwrap(), (0..9).map(|x| x * 10).collect::<Vec<_>>());
    /// ```
    #[doc(alias = "map_async")]
    pub fn map_async_chunked<A, R>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A>,
        chunksize: usize,
    ) -> AsyncResult<Vec<R>>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.map_inner(f, items.into_iter().collect(), chunksize, None)
    }

    /// Starts a [`starmap`](Pool::starmap) and returns at once (Python's `starmap_async`):
    /// `f` takes its arguments as one tuple, so this is [`map_async`](Pool::map_async)
    /// under the name Python programs look for.
    ///
    /// ```
    /// multiproc::init();
    /// fn add((a, b): (i32, i32)) -> i32 { a + b }
    /// let pool = multiproc::Pool::new(2).unwrap();
    /// let r = pool.starmap_async(add, vec![(1, 2), (3, 4)]);
    /// assert_eq!(r.get().unwrap(), vec![3, 7]);
    /// ```
    pub fn starmap_async<A, R>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A>,
    ) -> AsyncResult<Vec<R>>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.map_async(f, items)
    }

    /// [`starmap_async`](Pool::starmap_async) with chunks of `chunksize` items (Python's
    /// `starmap_async(func, iterable, chunksize)`).
    ///
    /// ```
    /// multiproc::init();
    /// fn mul((a, b): (u64, u64)) -> u64 { a * b }
    /// let pool = multiproc::Pool::new(2).unwrap();
    /// let r = pool.starmap_async_chunked(mul, (0..6).map(|i| (i, i)), 4);
    /// assert_eq!(r.get().unwrap(), vec![0, 1, 4, 9, 16, 25]);
    /// ```
    #[doc(alias = "starmap_async")]
    pub fn starmap_async_chunked<A, R>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A>,
        chunksize: usize,
    ) -> AsyncResult<Vec<R>>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.map_async_chunked(f, items, chunksize)
    }

    /// Runs `f(args)` in a worker and waits for the result (Python's `apply`).
    ///
    /// ```
    /// multiproc::init();
    /// let pool = multiproc::Pool::new(1).unwrap();
    /// assert_eq!(pool.apply(|(a, b): (u8, u8)| a + b, (2, 3)).unwrap(), 5);
    /// ```
    pub fn apply<A, R>(&self, f: fn(A) -> R, args: A) -> Result<R>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.one_task(f, args, true).take()
    }

    /// Starts `f(args)` in a worker and returns at once (Python's `apply_async`). Queued
    /// tasks cost memory only: no descriptor or thread each.
    ///
    /// ```
    /// multiproc::init();
    /// fn cube(x: i64) -> i64 { x * x * x }
    /// let pool = multiproc::Pool::new(4).unwrap();
    /// let results: Vec<_> = (1..7).map(|x| pool.apply_async(cube, x)).collect();
    /// let output: Vec<i64> = results.iter().map(|r| r.get().unwrap()).collect();
    /// assert_eq!(output, vec![1, 8, 27, 64, 125, 216]);
    /// ```
    pub fn apply_async<A, R>(&self, f: fn(A) -> R, args: A) -> AsyncResult<R>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.one_task(f, args, false)
    }

    /// Starts one task. `direct`: the caller is about to wait for it, so an idle worker may
    /// run it straight from this thread (see `Shared::run_direct`); otherwise it queues.
    fn one_task<A, R>(&self, f: fn(A) -> R, args: A, direct: bool) -> AsyncResult<R>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let cell = Cell::new();
        let sink: Arc<dyn Sink> = Arc::new(OneSink { cell: cell.clone() });
        let mut job = Job::new(TaskCode::of(f), 0, sink);
        match job.push(&args) {
            Ok(()) => {
                let queued = if direct {
                    self.shared.run_direct(job)
                } else {
                    Some(job)
                };
                if let Some(job) = queued {
                    let _ = self.shared.submit(vec![job], false);
                }
            }
            Err(e) => cell.set(Err(TaskFail::from_error(&e))),
        }
        AsyncResult::from_cell(cell)
    }

    fn imap_inner<A, R, I>(
        &self,
        f: fn(A) -> R,
        items: I,
        chunksize: usize,
        ordered: bool,
    ) -> IMap<A, R, I::IntoIter>
    where
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let refused = self
            .shared
            .check_open()
            .and(check_chunksize(chunksize))
            .err();
        let chunksize = chunksize.max(1);
        let registered = refused.is_none();
        if registered {
            self.shared.iter_started();
        }
        let sink = Arc::new(IterSink::new(ordered));
        IMap {
            shared: self.shared.clone(),
            code: TaskCode::of(f),
            input: items.into_iter(),
            input_done: !registered,
            refused,
            registered,
            chunksize,
            max_outstanding: (chunksize * 4 * self.processes).max(64 * self.processes),
            dyn_sink: sink.clone(),
            sink,
            submitted: 0,
            yielded: 0,
            _f: std::marker::PhantomData,
        }
    }

    /// A lazy [`map`](Pool::map): an iterator over the results, in input order (Python's
    /// `imap`). The input is read only as results are consumed, with a bounded number of
    /// tasks in flight, so an endless input works in constant memory. Each task is sent
    /// on its own; see [`imap_chunked`](Pool::imap_chunked) for chunks. If the input
    /// iterator panics, the results before it come first, then the panic as an
    /// [`Error::TaskPanicked`], then the end (as Python's `imap` over a raising generator).
    ///
    /// ```
    /// multiproc::init();
    /// let pool = multiproc::Pool::new(2).unwrap();
    /// let mut it = pool.imap(|x: u32| x * x, 1..=3);
    /// assert_eq!(it.next().unwrap().unwrap(), 1);
    /// assert_eq!(it.map(|r| r.unwrap()).collect::<Vec<_>>(), vec![4, 9]);
    /// ```
    pub fn imap<A, R, I>(&self, f: fn(A) -> R, items: I) -> IMap<A, R, I::IntoIter>
    where
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.imap_inner(f, items, 1, true)
    }

    /// [`imap`](Pool::imap) sending `chunksize` items per task message.
    ///
    /// ```
    /// multiproc::init();
    /// let pool = multiproc::Pool::new(2).unwrap();
    /// let total: u64 = pool.imap_chunked(|x: u64| x, 0..1000, 50).map(|r| r.unwrap()).sum();
    /// assert_eq!(total, 499_500);
    /// ```
    pub fn imap_chunked<A, R, I>(
        &self,
        f: fn(A) -> R,
        items: I,
        chunksize: usize,
    ) -> IMap<A, R, I::IntoIter>
    where
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.imap_inner(f, items, chunksize, true)
    }

    /// Like [`imap`](Pool::imap), but yields results as they complete (Python's
    /// `imap_unordered`).
    ///
    /// ```
    /// multiproc::init();
    /// let pool = multiproc::Pool::new(2).unwrap();
    /// let mut v: Vec<u32> = pool.imap_unordered(|x: u32| x + 1, 0..5).map(|r| r.unwrap()).collect();
    /// v.sort();
    /// assert_eq!(v, vec![1, 2, 3, 4, 5]);
    /// ```
    pub fn imap_unordered<A, R, I>(&self, f: fn(A) -> R, items: I) -> IMap<A, R, I::IntoIter>
    where
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.imap_inner(f, items, 1, false)
    }

    /// [`imap_unordered`](Pool::imap_unordered) sending `chunksize` items per task message.
    ///
    /// ```
    /// multiproc::init();
    /// let pool = multiproc::Pool::new(2).unwrap();
    /// assert_eq!(pool.imap_unordered_chunked(|x: u8| x, 0..10, 3).count(), 10);
    /// ```
    pub fn imap_unordered_chunked<A, R, I>(
        &self,
        f: fn(A) -> R,
        items: I,
        chunksize: usize,
    ) -> IMap<A, R, I::IntoIter>
    where
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.imap_inner(f, items, chunksize, false)
    }

    /// [`map`](Pool::map) showing a progress bar on standard error (indicatif), advanced
    /// as chunks complete. Needs the `progress` cargo feature.
    ///
    /// ```
    /// multiproc::init();
    /// let pool = multiproc::Pool::new(2).unwrap();
    /// let v = pool.map_with_progress(|x: u32| x * 3, 0..100).unwrap();
    /// assert_eq!(v[99], 297);
    /// ```
    #[cfg(feature = "progress")]
    #[cfg_attr(docsrs, doc(cfg(feature = "progress")))]
    pub fn map_with_progress<A, R>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A>,
    ) -> Result<Vec<R>>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let items: Vec<A> = items.into_iter().collect();
        let bar = indicatif::ProgressBar::new(items.len() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} tasks [{elapsed_precise} < {eta_precise}]",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        let b = bar.clone();
        let progress: Progress = Box::new(move |n| b.inc(n));
        let cs = default_chunksize(items.len(), self.processes);
        let r = self.map_inner(f, items, cs, Some(progress)).take();
        bar.finish();
        r
    }

    /// Stops accepting work (Python's `close`): calls that submit tasks then give
    /// [`Error::Closed`]. Queued tasks still run; [`join`](Pool::join) waits for them.
    ///
    /// ```
    /// multiproc::init();
    /// let pool = multiproc::Pool::new(1).unwrap();
    /// let r = pool.apply_async(|x: i32| x, 1);
    /// pool.close();
    /// assert!(matches!(pool.apply(|x: i32| x, 2), Err(multiproc::Error::Closed)));
    /// pool.join().unwrap();
    /// assert_eq!(r.get().unwrap(), 1);
    /// ```
    pub fn close(&self) {
        self.shared.close();
    }

    /// Waits until the queued work is done and the workers have exited (Python's
    /// `join`). Calling it before [`close`](Pool::close) or
    /// [`terminate`](Pool::terminate) is an [`Error::InvalidOperation`]. An [`IMap`] made
    /// before `close` may still submit its tasks: `join` waits until it is exhausted or
    /// dropped.
    ///
    /// ```
    /// multiproc::init();
    /// let pool = multiproc::Pool::new(1).unwrap();
    /// assert!(matches!(pool.join(), Err(multiproc::Error::InvalidOperation(_))));
    /// pool.close();
    /// pool.join().unwrap();
    /// ```
    pub fn join(&self) -> Result<()> {
        if !self.shared.lock().closed {
            return Err(Error::invalid(
                "Pool::join() before close() or terminate(): the pool is still running",
            ));
        }
        self.join_handlers();
        Ok(())
    }

    fn join_handlers(&self) {
        let handles: Vec<JoinHandle<()>> =
            std::mem::take(&mut *self.handlers.lock().unwrap_or_else(|p| p.into_inner()));
        for h in handles {
            let _ = h.join();
        }
    }

    /// Stops at once (Python's `terminate`): pending tasks fail with [`Error::Closed`], the
    /// workers are killed and reaped. Returns promptly however much work is queued.
    ///
    /// ```
    /// multiproc::init();
    /// use std::time::Duration;
    /// let pool = multiproc::Pool::new(2).unwrap();
    /// let pending: Vec<_> = (0..1000)
    ///     .map(|_| pool.apply_async(|ms: u64| std::thread::sleep(Duration::from_millis(ms)), 100))
    ///     .collect();
    /// pool.terminate().unwrap();
    /// assert!(matches!(pending[999].get(), Err(multiproc::Error::Closed)));
    /// ```
    pub fn terminate(&self) -> Result<()> {
        self.shared.terminate();
        #[cfg(feature = "mpi")]
        if let Some(r) = &self.remote {
            r.terminate();
        }
        self.join_handlers();
        Ok(())
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let _ = self.terminate();
    }
}

/// The iterator returned by [`Pool::imap`], [`Pool::imap_unordered`] and their `_chunked`
/// forms: yields each task's `Result<R>`.
///
/// It reads its input lazily and keeps a bounded number of tasks in flight. Dropping it
/// early withdraws its queued tasks (tasks already running finish and are discarded).
///
/// ```
/// multiproc::init();
/// let pool = multiproc::Pool::new(2).unwrap();
/// let it: multiproc::pool::IMap<u32, u32, _> = pool.imap(|x: u32| x, 0..3);
/// assert_eq!(it.count(), 3);
/// ```
pub struct IMap<A, R, I> {
    shared: Arc<Shared>,
    code: TaskCode,
    input: I,
    input_done: bool,
    refused: Option<Error>,
    registered: bool,
    chunksize: usize,
    max_outstanding: usize,
    sink: Arc<IterSink<R>>,
    dyn_sink: Arc<dyn Sink>,
    submitted: usize,
    yielded: usize,
    _f: std::marker::PhantomData<fn(A)>,
}

impl<A, R, I> fmt::Debug for IMap<A, R, I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IMap")
            .field("submitted", &self.submitted)
            .field("yielded", &self.yielded)
            .finish()
    }
}

impl<A: Serialize, R, I: Iterator<Item = A>> IMap<A, R, I> {
    fn top_up(&mut self) {
        while !self.input_done
            && self.submitted - self.yielded + self.chunksize <= self.max_outstanding
        {
            let mut job = Job::new(self.code, self.submitted, self.dyn_sink.clone());
            let mut taken = 0;
            while taken < self.chunksize && !job.is_full() {
                // An input that panics ends the input: the results before it come
                // first, then the panic as this position's error (as Python's imap
                // does with a raising generator).
                let next =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.input.next()));
                let idx = self.submitted + taken;
                let a = match next {
                    Ok(Some(a)) => a,
                    Ok(None) => {
                        self.input_done = true;
                        break;
                    }
                    Err(p) => {
                        self.input_done = true;
                        taken += 1;
                        let f = TaskFail::Panicked {
                            message: format!(
                                "the input iterator panicked: {}",
                                crate::error::panic_message(&*p)
                            ),
                            location: None,
                            backtrace: None,
                        };
                        self.dyn_sink.fail(idx, 1, &f);
                        break;
                    }
                };
                taken += 1;
                if let Err(e) = job.push(&a) {
                    let next = Job::new(self.code, idx + 1, self.dyn_sink.clone());
                    let full = std::mem::replace(&mut job, next);
                    if !full.is_empty() && !self.shared.submit(vec![full], true) {
                        // The pool was terminated: read no further.
                        self.input_done = true;
                    }
                    self.dyn_sink.fail(idx, 1, &TaskFail::from_error(&e));
                }
            }
            if !job.is_empty() && !self.shared.submit(vec![job], true) {
                // The pool was terminated: what was taken fails, nothing more is read.
                self.input_done = true;
            }
            self.submitted += taken;
        }
        if self.input_done && self.registered {
            self.registered = false;
            self.shared.iter_finished();
        }
    }
}

impl<A: Serialize, R, I: Iterator<Item = A>> IMap<A, R, I> {
    /// The next result, waiting at most `timeout` for it (Python's `next(timeout)`):
    /// `Some(Err(Error::Timeout))` when it has not come by then, and the iterator stays
    /// where it is, so that a later call returns that result; `None` at the end.
    ///
    /// ```
    /// # multiproc::init();
    /// use std::time::Duration;
    /// fn when_told(go: multiproc::Event) -> u32 {
    ///     go.wait();
    ///     7
    /// }
    /// let pool = multiproc::Pool::new(1).unwrap();
    /// let go = multiproc::Event::new().unwrap();
    /// let mut it = pool.imap(when_told, [go.clone()]);
    /// let early = it.next_timeout(Duration::from_millis(10));
    /// assert!(matches!(early, Some(Err(multiproc::Error::Timeout))));
    /// go.set();
    /// assert_eq!(it.next_timeout(Duration::from_secs(60)).unwrap().unwrap(), 7);
    /// assert!(it.next_timeout(Duration::ZERO).is_none());
    /// ```
    #[doc(alias = "next")]
    pub fn next_timeout(&mut self, timeout: Duration) -> Option<Result<R>> {
        self.next_until(crate::sys::deadline(timeout))
    }

    fn next_until(&mut self, deadline: Option<Instant>) -> Option<Result<R>> {
        if let Some(e) = self.refused.take() {
            return Some(Err(e));
        }
        self.top_up();
        if self.yielded == self.submitted {
            return None;
        }
        let Some(r) = self.sink.next(self.yielded, deadline) else {
            return Some(Err(Error::Timeout));
        };
        self.yielded += 1;
        Some(r)
    }
}

impl<A: Serialize, R, I: Iterator<Item = A>> Iterator for IMap<A, R, I> {
    type Item = Result<R>;

    fn next(&mut self) -> Option<Result<R>> {
        self.next_until(None)
    }
}

impl<A, R, I> Drop for IMap<A, R, I> {
    fn drop(&mut self) {
        self.shared.withdraw(&self.dyn_sink);
        if self.registered {
            self.shared.iter_finished();
        }
    }
}
