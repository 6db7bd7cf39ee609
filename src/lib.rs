//! # multiproc
//!
//! Python's `multiprocessing` for Rust: processes, pipes, queues, locks and the other
//! synchronization primitives, shared values and arrays, named shared memory, pools and
//! managers, with the same model and names, in Rust's idioms. Linux only for now.
//!
//! | Python | multiproc |
//! |---|---|
//! | `Process`, `current_process`, `active_children`, start methods | [`Process`], [`spawn`] (with the return value), [`current_process`], [`active_children`], [`StartMethod`] ([`start`] module: what runs again in a child) |
//! | `Pipe()`, `connection.Listener`/`Client`, `connection.wait` | [`pipe`], [`pipe_simplex`], [`Connection`], the [`connection`] module |
//! | `Queue`, `SimpleQueue`, `JoinableQueue` | [`Queue`], [`SimpleQueue`], [`JoinableQueue`] ([`queue`] module) |
//! | `Lock`, `RLock`, `Semaphore`, `BoundedSemaphore`, `Event`, `Condition`, `Barrier` | the same names ([`sync`] module); a lock whose holder died gives [`Error::OwnerDied`] |
//! | `Value`, `Array`, `RawValue`, `RawArray` | the same names ([`value`] module) |
//! | `shared_memory.SharedMemory`, `ShareableList`, `SharedMemoryManager` | the [`shared_memory`] module |
//! | `Pool` | [`Pool`], [`PoolBuilder`], [`AsyncResult`] ([`pool`] module) |
//! | `Manager()`, `BaseManager` | [`Manager`] and its proxies ([`manager`] module) |
//! | `get_context` | [`get_context`], [`Context`] |
//! | `log_to_stderr` | [`log_to_stderr`], or `MULTIPROC_LOG=debug` ([`log`] module) |
//! | exceptions | variants of one [`Error`] enum |
//!
//! ```
//! fn main() {
//!     multiproc::init(); // first line of main: in a child, runs the child's work
//!
//!     fn print_square(n: i64) {
//!         println!("Square: {}", n * n);
//!     }
//!     let mut p = multiproc::Process::new(print_square, 4);
//!     p.start().unwrap();
//!     p.join().unwrap();
//!
//!     let (parent, child) = multiproc::pipe::<String>().unwrap();
//!     fn sender(conn: multiproc::Connection<String>) {
//!         for m in ["hello", "end"] {
//!             conn.send(&m.to_string()).unwrap();
//!         }
//!     }
//!     let mut p = multiproc::Process::new(sender, child);
//!     p.start().unwrap();
//!     assert_eq!(parent.recv().unwrap(), "hello");
//!     assert_eq!(parent.recv().unwrap(), "end");
//!     p.join().unwrap();
//!
//!     // A pool of worker processes (see the `pool` module).
//!     fn square(x: u64) -> u64 {
//!         x * x
//!     }
//!     let pool = multiproc::Pool::new(4).unwrap();
//!     assert_eq!(pool.map(square, 1..=6).unwrap(), vec![1, 4, 9, 16, 25, 36]);
//!     let cube = pool.apply_async(|x: u64| x * x * x, 3);
//!     assert_eq!(cube.get().unwrap(), 27);
//! }
//! ```
//!
//! ## Using it in tests
//!
//! A `#[test]` that starts processes calls `multiproc::init()` as its first line, like
//! `main`. Children of a test binary re-run that one test (`<name> --exact`), whose
//! `init()` takes over. Doctests work the same way.
//!
//! Coming from Python? [`docs::differences`] lists every place where multiproc
//! deliberately behaves differently from Python's `multiprocessing`, and why.
//!
//! ## Values and functions
//!
//! Functions run in other processes are plain `fn` items or closures that capture nothing,
//! taken as `fn(A) -> R`; arguments travel explicitly in `A` (a tuple for several). Values
//! that cross a process boundary implement serde's `Serialize` and `DeserializeOwned`
//! (encoded by the crate's own format: see [`codec`] for what it cannot carry). Handles —
//! queues, connections, locks, shared values, proxies — are such values too: pass them in
//! `A` and they arrive working in the child.
//!
//! A closure that captures a variable of the caller does not compile: the child, another
//! process, cannot see the caller's variables. Pass the value in the arguments instead:
//!
//! ```
//! multiproc::init();
//! let factor = 3u64;
//! let pool = multiproc::Pool::new(2).unwrap();
//! let v = pool.map(|(x, f): (u64, u64)| x * f, (0..4).map(|x| (x, factor))).unwrap();
//! assert_eq!(v, vec![0, 3, 6, 9]);
//! ```
//!
//! Large data need not be copied: with [`ShmAllocator`] as the program's global
//! allocator, a large `Vec`, `String` or ndarray array sent through a queue, a pipe or as a
//! pool result travels as the shared-memory file it already lives in, whatever its size.
//!
//! What `R` is depends on who gets it: a [`Process`]'s target returns what a Rust `main`
//! may return (`()`, `Result<(), E>`, an [`ExitCode`](std::process::ExitCode)), which
//! decides its exit code; [`spawn`], the pool and the manager send a serde `R` back to the
//! caller.
//!
//! ## Errors
//!
//! Every fallible call returns [`Result`]`<T>`, whose error is the one [`Error`] enum.
//! Nothing panics or hangs because of what another process did or sent: a child's panic
//! is [`Error::TaskPanicked`], a killed worker [`Error::WorkerDied`], a closed peer
//! [`Error::Eof`], bytes that do not decode [`Error::Codec`].
//!
//! ## The first errors a new user meets
//!
//! - **`NotInitialized`** (``called `Result::unwrap()` on an `Err` value: NotInitialized``,
//!   or `Error: NotInitialized` from a `main` that returns a [`Result`]): a process, pool
//!   or manager was started before [`init()`](init). Make `multiproc::init();` the first
//!   line of `main`, and of each `#[test]` that starts processes.
//! - **`expected fn pointer, found closure`** with *"closures can only be coerced to `fn`
//!   types if they do not capture any variables"* and *"`x` captured here"*: the closure
//!   given to [`spawn`], [`Process::new`] or a [`Pool`] method uses a variable of the
//!   caller. Pass that value in the arguments (above):
//!
//!   ```compile_fail,E0308
//!   multiproc::init();
//!   let factor = 3u64;
//!   let pool = multiproc::Pool::new(2).unwrap();
//!   let v = pool.map(|x: u64| x * factor, 0..4); // `factor` captured here: refused
//!   ```
//! - **``The default runtime flavor is `multi_thread`, but the `rt-multi-thread` feature is
//!   disabled``** (tokio): see [`docs::asynchronous`] for where `#[tokio::main]` goes and
//!   which tokio features it needs.

#![warn(missing_docs)]
// On docs.rs, feature-gated items say which feature they need.
#![cfg_attr(docsrs, feature(doc_cfg))]
// `unsafe` lives in the OS layer (`sys`) only; everything else is safe code.
#![deny(unsafe_code)]
// Examples show `fn main` on purpose: `multiproc::init()` must be its first line.
#![allow(clippy::needless_doctest_main)]

pub mod codec;
pub mod connection;
pub mod context;
pub mod docs;
mod error;
mod identity;
pub(crate) mod ipc;
pub mod log;
pub mod manager;
pub mod pool;
pub mod process;
pub mod queue;
pub mod shared_memory;

pub mod start;
pub mod sync;
#[allow(unsafe_code)]
mod sys;
pub mod value;

pub use connection::{pipe, pipe_simplex, Connection};
pub use context::{get_context, Context};
pub use error::{CodecError, Error, RemoteErrorKind, Result};
pub use log::log_to_stderr;
pub use manager::Manager;
pub use pool::{AsyncResult, Pool, PoolBuilder};
pub use process::{
    active_children, cpu_count, current_process, parent_process, spawn, Builder, JoinHandle,
    Process, ProcessInfo,
};
pub use queue::{JoinableQueue, Queue, SimpleQueue};
pub use start::{
    allow_fork_with_threads, get_all_start_methods, get_start_method, set_start_method, StartMethod,
};
pub use sync::{
    Barrier, BoundedSemaphore, CondLock, Condition, Event, Lock, LockGuard, RLock, RLockGuard,
    Semaphore,
};
pub use sys::heap::ShmAllocator;
pub use value::{Array, ArrayGuard, Number, RawArray, RawValue, Value, ValueGuard};

/// Must be the first statement of `main` (and of every `#[test]` that starts processes).
///
/// In the parent it only records that the program is ready to start children. In a child
/// started by multiproc, or in the fork server, it runs that process's work and never
/// returns. See the [module docs](crate::start) for what runs again in a child.
///
/// ```
/// fn main() {
///     multiproc::init();
///     let p = multiproc::spawn(|x: u32| x * 2, 21).unwrap();
///     assert_eq!(p.join().unwrap(), 42);
/// }
/// ```
pub fn init() {
    // The one place that sees every layer: it hands `start` what the modules above it run
    // after a fork, at exit and in the main process's `init()` (see `start/hooks.rs`), so
    // that `start` never names them.
    static HOOKS: start::Hooks = start::Hooks {
        after_fork: &[process::forget_after_fork],
        at_exit: &[process::exit_handler_body],
        on_main_init: &[
            #[cfg(feature = "mpi")]
            pool::cluster::on_init,
        ],
    };
    start::init(&HOOKS)
}

/// The `ndarray` crate, re-exported so that its version is the one multiproc was built
/// with (the `ndarray` feature).
///
/// ```
/// let a = multiproc::ndarray::Array2::<f64>::zeros((2, 3));
/// assert_eq!(a.shape(), &[2, 3]);
/// ```
#[cfg(feature = "ndarray")]
#[cfg_attr(docsrs, doc(cfg(feature = "ndarray")))]
pub use ndarray;
