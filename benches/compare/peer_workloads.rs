//! The Rust peers on the workloads they can do, each printed under multiproc's row of the
//! same workload (see `PEERS` in `compare.rs`):
//!
//! - **procspawn**: process start + join (`procspawn::spawn(..).join()`), and its pool
//!   (`procspawn::Pool`: one task per `spawn`, a round trip, many queued tasks, the
//!   CPU-bound speed-up).
//! - **ipc-channel**: messages between two processes (`ipc::bytes_channel` for bytes,
//!   `ipc::channel::<u64>` for values), the sending process started with procspawn, which
//!   carries ipc-channel's senders in its arguments.
//!
//! The parameters are multiproc's (the constants of `compare.rs` and `pool_workloads.rs`),
//! so that each pair of rows measures the same work. `procspawn::init()` runs in `main`,
//! right after `multiproc::init()`: each returns at once in a process the other started.

use std::time::Instant;

use ipc_channel::ipc::{self, IpcBytesSender, IpcSender};
use procspawn::Pool;

use crate::pool_workloads::{prime_tasks, square, ASYNC_TASKS, PRIME_TASKS};
use crate::{median, PIPE_ROUNDS};

/// In a process procspawn started, runs its work and exits; elsewhere returns at once.
pub fn init() {
    procspawn::init();
}

// --- procspawn: process start + join --------------------------------------------------------

/// Milliseconds per `procspawn::spawn((), noop).join()`, after one warm-up start.
pub fn start_join_procspawn() -> f64 {
    crate::time_starts(|| {
        procspawn::spawn((), |()| ())
            .join()
            .expect("procspawn join")
    })
}

// --- ipc-channel: one-way messages ----------------------------------------------------------

fn bytes_sender((tx, size, count): (IpcBytesSender, usize, usize)) {
    crate::send_byte_messages(size, count, |m| tx.send(m).is_ok());
}

/// Seconds to receive `count` messages of `size` bytes sent by a child, through an
/// ipc-channel bytes channel.
fn bytes_round(size: usize, count: usize) -> f64 {
    let (tx, rx) = ipc::bytes_channel().expect("ipc-channel");
    let child = procspawn::spawn((tx, size, count), bytes_sender);
    rx.recv().expect("ready");
    let t0 = Instant::now();
    for _ in 0..count {
        let b = rx.recv().expect("recv");
        assert_eq!(b.len(), size, "a message changed size");
    }
    let secs = t0.elapsed().as_secs_f64();
    child.join().expect("join");
    secs
}

/// Messages of 8 bytes a second (multiproc's `pipe_8b_one_way`).
pub fn pipe_8b_ipc_channel() -> f64 {
    let (size, count) = (crate::SMALL_MSG, crate::SMALL_COUNT);
    count as f64 / median((0..PIPE_ROUNDS).map(|_| bytes_round(size, count)).collect())
}

/// GB/s of 1 MiB messages (multiproc's `pipe_1mib_one_way`).
pub fn pipe_1mib_ipc_channel() -> f64 {
    let (size, count) = (crate::BIG_MSG, crate::BIG_COUNT);
    let secs = median((0..PIPE_ROUNDS).map(|_| bytes_round(size, count)).collect());
    (size * count) as f64 / secs / 1e9
}

fn value_sender((tx, count): (IpcSender<u64>, u64)) {
    crate::send_values(count, |i| tx.send(i).is_ok());
}

/// `u64` values a second through an `ipc::channel::<u64>` (multiproc's
/// `pipe_u64_send_recv`).
pub fn pipe_u64_ipc_channel() -> f64 {
    let count = crate::SMALL_COUNT as u64;
    let round = || {
        let (tx, rx) = ipc::channel::<u64>().expect("ipc-channel");
        let child = procspawn::spawn((tx, count), value_sender);
        rx.recv().expect("ready");
        let t0 = Instant::now();
        for i in 0..count {
            assert_eq!(rx.recv().expect("recv"), i, "a message was lost");
        }
        let secs = t0.elapsed().as_secs_f64();
        child.join().expect("join");
        secs
    };
    count as f64 / median((0..PIPE_ROUNDS).map(|_| round()).collect())
}

// --- procspawn's pool -----------------------------------------------------------------------

/// `pool.spawn(n, square).join()` one after another on a pool of 1 worker, for the time
/// multiproc's `pool_apply_roundtrip` takes: µs per call.
pub fn apply_roundtrip_procspawn() -> f64 {
    let pool = Pool::new(1).expect("procspawn pool");
    pool.spawn(1, square).join().expect("warm-up");
    let t = Instant::now();
    let mut n = 0u64;
    while t.elapsed() < crate::pool_workloads::APPLY_BUDGET {
        assert_eq!(pool.spawn(n, square).join().expect("join"), n * n);
        n += 1;
    }
    let us = t.elapsed().as_secs_f64() / n as f64 * 1e6;
    pool.shutdown();
    us
}

/// 20,000 `pool.spawn(i, square)` queued on cpu_count workers, then every `join`: µs per
/// task, one round (procspawn holds descriptors per queued task; see BENCHMARKS.md).
pub fn apply_async_20k_procspawn() -> f64 {
    let pool = Pool::new(multiproc::cpu_count()).expect("procspawn pool");
    pool.spawn(1, square).join().expect("warm-up");
    let t = Instant::now();
    let handles: Vec<_> = (0..ASYNC_TASKS).map(|i| pool.spawn(i, square)).collect();
    let mut sum = 0u64;
    for h in handles {
        sum = sum.wrapping_add(h.join().expect("join"));
    }
    let secs = t.elapsed().as_secs_f64();
    assert!(sum > 0);
    pool.shutdown();
    secs / ASYNC_TASKS as f64 * 1e6
}

/// Seconds for multiproc's prime-counting job on a procspawn pool of `workers`.
fn timed_procspawn(workers: usize) -> f64 {
    let pool = Pool::new(workers).expect("procspawn pool");
    pool.spawn(1, square).join().expect("warm-up");
    let t = Instant::now();
    let handles: Vec<_> = prime_tasks()
        .into_iter()
        .map(|task| pool.spawn(task, crate::pool_workloads::count_primes))
        .collect();
    let total: u64 = handles.into_iter().map(|h| h.join().expect("join")).sum();
    assert!(total > 0);
    let secs = t.elapsed().as_secs_f64();
    pool.shutdown();
    secs
}

/// The job's time on 1 worker over its time on cpu_count workers (multiproc's
/// `pool_speedup`), with procspawn's pool.
pub fn speedup_procspawn() -> f64 {
    debug_assert_eq!(prime_tasks().len() as u64, PRIME_TASKS);
    let one = timed_procspawn(1);
    let many = timed_procspawn(multiproc::cpu_count());
    one / many
}
