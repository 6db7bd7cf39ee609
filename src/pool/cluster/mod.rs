//! The same [`Pool`](crate::Pool) across a cluster, on MPI.
//!
//! # The model
//!
//! Launch the program with an MPI launcher — `mpirun -n 4 ./app`, or Slurm's `srun` — and
//! build it with the `mpi` cargo feature. Every rank starts `main`, and
//! [`multiproc::init()`](crate::init), the first line of `main`, sorts them out:
//!
//! - **rank 0** returns from `init()` and runs the rest of `main`, as in a plain run;
//! - **every other rank** becomes a *node agent*: `init()` never returns there. The agent
//!   waits for work from rank 0 and runs it in **local worker processes** — the ordinary
//!   pool's workers, on its own node — and exits when rank 0's `main` ends.
//!
//! [`Pool::cluster()`](crate::Pool::cluster) (or [`PoolBuilder::cluster`] for the other
//! settings) on rank 0 then gives a [`Pool`](crate::Pool) — the same type, the same methods
//! and semantics (`map`, `imap`, `imap_unordered`, `starmap`, `apply`, `apply_async`,
//! `map_async`, chunk sizes, task timeouts, `close`/`join`/`terminate`, progress bars) —
//! whose workers are on every rank: rank 0's own workers (see
//! [`PoolBuilder::root_processes`]) and each agent's. [`Pool::processes`] counts them all.
//!
//! ```
//! fn main() {
//!     multiproc::init(); // under mpirun: ranks other than 0 never return from here
//!     fn square(x: u64) -> u64 { x * x }
//!     let pool = multiproc::Pool::cluster().unwrap();
//!     let v = pool.map(square, 0..1000).unwrap();
//!     assert_eq!(v[999], 998_001);
//!     println!("{} workers on {} ranks", pool.processes(), multiproc::pool::cluster::size());
//! }
//! ```
//!
//! Without `mpirun` (a *singleton* run), or without the `mpi` feature, a cluster pool is
//! an ordinary pool on this machine: the same program and its tests run everywhere.
//!
//! # What travels, and how often
//!
//! Rank 0 cuts the work into the same chunks as the local pool and sends each chunk to a
//! rank as one MPI message (while a rank's tasks are short, a second chunk per worker
//! travels while the first runs); results come back as the workers send them. Functions travel as checked
//! references into the binary, so every rank must run the same build (a mismatch is
//! [`Error::BuildMismatch`](crate::Error::BuildMismatch)). Data every task needs (a model,
//! a table) travels **once per rank**: give it to [`PoolBuilder::initializer`] — its
//! arguments go to each rank once, and the agent hands them to its local workers, whose
//! initializer can keep them in a `static` for the tasks:
//!
//! ```
//! use std::sync::OnceLock;
//! static TABLE: OnceLock<Vec<u64>> = OnceLock::new();
//! fn load(table: Vec<u64>) { let _ = TABLE.set(table); }
//! fn lookup(i: usize) -> u64 { TABLE.get().map_or(0, |t| t[i]) }
//! fn main() {
//!     multiproc::init();
//!     let pool = multiproc::Pool::builder()
//!         .cluster()
//!         .initializer(load, (0..100u64).map(|x| x * 3).collect::<Vec<u64>>())
//!         .build()
//!         .unwrap();
//!     assert_eq!(pool.map(lookup, vec![1, 10, 99]).unwrap(), vec![3, 30, 297]);
//! }
//! ```
//!
//! The first large message of each kind costs several times the next (MPI's first large
//! transfer between two ranks, the first large frame through a worker's pipe, each
//! process's allocator growing its heap): building a cluster pool pays that once, with a
//! `map` of one large task per worker (2 MiB of bytes there and back; 16 MiB in all at
//! most), so that the user's first `map` runs as fast as the next. A pool with a task
//! limit per worker ([`PoolBuilder::maxtasksperchild`]) skips it.
//!
//! Handles (queues, locks, connections: file descriptors) cannot leave their machine: a
//! task whose arguments hold one fails with [`Error::InvalidOperation`] when it is sent to
//! another rank, as do initializer arguments holding one.
//!
//! # Faults
//!
//! Crash isolation stays local to each node. A task that panics on any rank gives
//! [`Error::TaskPanicked`] for that task; a task that kills its worker (signal, `abort`,
//! segfault) gives [`Error::WorkerDied`] for that task only — the agent replaces the
//! worker, and the MPI job, the rank and every other task go on (mpi4py.futures loses the
//! whole job there). Task timeouts are enforced by each rank for its own workers.
//!
//! A whole rank lost is another matter, and MPI decides most of it. With Open MPI's
//! defaults (`MPI_ERRORS_ARE_FATAL`, no fault tolerance), a rank process that dies makes
//! `mpirun` abort the **whole job**, rank 0 included (Open MPI 4.1: "mpirun noticed that
//! process rank 1 … exited on signal 9", exit status 137; every worker dies with its rank):
//! nothing hangs, but nothing can be recovered either — MPI without ULFM gives a program no
//! way to go on past a dead peer. When the job survives (the launcher keeps going, or the rank hangs
//! without dying — a frozen node), each agent sends rank 0 a heartbeat every second while
//! it lives; a rank silent for longer than the rank timeout (30 s, or
//! `MULTIPROC_RANK_TIMEOUT` seconds) is declared lost: the pool ends, and its pending tasks
//! and later calls fail with [`Error::RankLost`](crate::Error::RankLost), which names the
//! rank. Never a hang.
//!
//! # Threads and MPI
//!
//! MPI is initialised with `MPI_THREAD_SERIALIZED` on one thread per rank. Any thread of
//! the pool may then call MPI, one at a time under one lock: on rank 0 the handler thread
//! of each rank sends that rank its tasks and receives its results itself, and on an agent
//! the local pool's threads send each result as it comes — no thread hands a message to
//! another for MPI's sake. A lone task (`apply`) takes the shortest way: the caller's
//! thread sends it to an idle rank and receives its result itself, and the agent's MPI
//! thread, which receives it, runs it on an idle local worker itself (a second thread of
//! the agent serves the rank meanwhile if the task runs long). MPI cannot wake a sleeping thread, so a thread that waits for a
//! message yields the processor between looks for a millisecond after the last one
//! (a quick series of `apply` calls stays quick), then sleeps longer and longer, up to a
//! millisecond. The same holds for the pipes between an agent and its local workers: in
//! every process of an MPI job (the workers too), a thread that looks again and again for
//! its next message yields the processor between looks instead of holding its core, since
//! ranks often outnumber cores (`mpirun --oversubscribe`) and a waiter that holds its core
//! keeps the very process it waits for from running. Nothing needs setting in Open MPI
//! for this. MPI is finalised when rank 0's `main` returns (or `std::process::exit` is
//! called), after telling every agent to stop its workers.
//!
//! [`PoolBuilder::cluster`]: crate::PoolBuilder::cluster
//! [`PoolBuilder::root_processes`]: crate::PoolBuilder::root_processes
//! [`PoolBuilder::initializer`]: crate::PoolBuilder::initializer
//! [`PoolBuilder::maxtasksperchild`]: crate::PoolBuilder::maxtasksperchild
//! [`Pool::processes`]: crate::Pool::processes
//! [`Error::TaskPanicked`]: crate::Error::TaskPanicked
//! [`Error::WorkerDied`]: crate::Error::WorkerDied
//! [`Error::InvalidOperation`]: crate::Error::InvalidOperation

#[cfg(feature = "mpi")]
mod agent;
#[cfg(feature = "mpi")]
mod net;
#[cfg(feature = "mpi")]
mod remote;

#[cfg(feature = "mpi")]
pub(crate) use net::on_init;
#[cfg(feature = "mpi")]
pub(crate) use remote::{build, remote_init, Remote, RemoteInitFn};

/// Whether this process was started by an MPI launcher (and the `mpi` feature is on): its
/// `init()` then joins the MPI job.
#[cfg_attr(not(feature = "mpi"), allow(dead_code))]
pub(crate) fn launched() -> bool {
    crate::identity::mpi_launched()
}

/// This process's rank in the MPI job: `0` on the rank that runs `main`, and in a plain
/// (non-MPI) run. In a worker process of a cluster pool, the rank of the agent that
/// started it — so a task can tell where it runs.
///
/// ```
/// multiproc::init();
/// let pool = multiproc::Pool::cluster().unwrap();
/// let rank = pool.apply(|_: ()| multiproc::pool::cluster::rank(), ()).unwrap();
/// assert!(rank < multiproc::pool::cluster::size());
/// ```
pub fn rank() -> usize {
    if !launched() {
        return 0;
    }
    crate::identity::mpi_env_rank().unwrap_or(0)
}

/// The number of ranks in the MPI job (`1` in a plain run).
///
/// ```
/// multiproc::init();
/// assert!(multiproc::pool::cluster::size() >= 1);
/// ```
pub fn size() -> usize {
    #[cfg(feature = "mpi")]
    if let Some(w) = net::world() {
        return w.size;
    }
    if !launched() {
        return 1;
    }
    crate::identity::mpi_env_size().unwrap_or(1).max(1)
}
