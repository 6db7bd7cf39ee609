//! Pool workloads of the side-by-side benchmark (issue 5): `Pool::map` of tiny tasks, an
//! `apply` round trip, many `apply_async`, and the speed-up of a CPU-bound job. Their
//! CPython counterparts are the functions of the same names in `benches/compare.py`.
//! `pool_speedup_rayon` (rayon's speed-up on the same job) is Rust only: the bar to compare
//! `pool_speedup` with. `peer_workloads.rs` runs the same tasks on procspawn's pool.

use std::time::{Duration, Instant};

use multiproc::Pool;

// --- parameters shared with benches/compare.py (keep them equal) --------------------------
const MAP_TASKS: u64 = 200_000;
const MAP_ROUNDS: usize = 5;
pub const APPLY_BUDGET: Duration = Duration::from_secs(1);
pub const ASYNC_TASKS: u64 = 20_000;
const ASYNC_ROUNDS: usize = 5;
pub const PRIME_TASKS: u64 = 48;
const PRIME_SPAN: u64 = 40_000;

pub fn square(x: u64) -> u64 {
    x * x
}

/// `map(square, 0..200_000)` on a pool of cpu_count workers (already started): µs per task,
/// best of 5 rounds.
pub fn map_tiny() -> f64 {
    let pool = Pool::new(multiproc::cpu_count()).expect("pool");
    pool.map(square, 0..1000).expect("warm-up");
    let mut best = f64::MAX;
    for _ in 0..MAP_ROUNDS {
        let t = Instant::now();
        let v = pool.map(square, 0..MAP_TASKS).expect("map");
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(v.len() as u64, MAP_TASKS);
        best = best.min(secs);
    }
    best / MAP_TASKS as f64 * 1e6
}

/// `apply(square, n)` one after another on a pool of 1 worker, for 1 s: µs per call.
pub fn apply_roundtrip() -> f64 {
    apply_roundtrip_on(1)
}

/// The same on a pool of 8 workers (one of them answers each call; the others idle).
pub fn apply_roundtrip_8w() -> f64 {
    apply_roundtrip_on(8)
}

fn apply_roundtrip_on(workers: usize) -> f64 {
    let pool = Pool::new(workers).expect("pool");
    pool.apply(square, 1).expect("warm-up");
    let t = Instant::now();
    let mut n = 0u64;
    while t.elapsed() < APPLY_BUDGET {
        assert_eq!(pool.apply(square, n).expect("apply"), n * n);
        n += 1;
    }
    t.elapsed().as_secs_f64() / n as f64 * 1e6
}

/// 20,000 `apply_async(square, i)` queued on cpu_count workers, then every `get`: µs per
/// task, best of 5 rounds.
pub fn apply_async_20k() -> f64 {
    let pool = Pool::new(multiproc::cpu_count()).expect("pool");
    pool.apply(square, 1).expect("warm-up");
    let mut best = f64::MAX;
    for _ in 0..ASYNC_ROUNDS {
        let t = Instant::now();
        let rs: Vec<_> = (0..ASYNC_TASKS)
            .map(|i| pool.apply_async(square, i))
            .collect();
        let mut sum = 0u64;
        for r in &rs {
            sum = sum.wrapping_add(r.get().expect("get"));
        }
        let secs = t.elapsed().as_secs_f64();
        assert!(sum > 0);
        best = best.min(secs);
    }
    best / ASYNC_TASKS as f64 * 1e6
}

pub fn count_primes((start, len): (u64, u64)) -> u64 {
    (start..start + len)
        .filter(|&n| n >= 2 && (2..).take_while(|d| d * d <= n).all(|d| n % d != 0))
        .count() as u64
}

pub fn prime_tasks() -> Vec<(u64, u64)> {
    (0..PRIME_TASKS)
        .map(|i| (1_000_000 + i * PRIME_SPAN, PRIME_SPAN))
        .collect()
}

/// Seconds for the prime-counting job (48 tasks, one per message) on `workers` workers,
/// the pool started beforehand.
fn timed_pool(workers: usize) -> f64 {
    let pool = Pool::new(workers).expect("pool");
    pool.map(square, 0..10).expect("warm-up");
    let t = Instant::now();
    let total: u64 = pool
        .map_chunked(count_primes, prime_tasks(), 1)
        .expect("map")
        .iter()
        .sum();
    assert!(total > 0);
    t.elapsed().as_secs_f64()
}

/// The job's time on 1 worker over its time on cpu_count workers.
pub fn speedup() -> f64 {
    let one = timed_pool(1);
    let many = timed_pool(multiproc::cpu_count());
    one / many
}

fn timed_rayon(threads: usize) -> f64 {
    use rayon::prelude::*;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("rayon");
    let tasks = prime_tasks();
    let t = Instant::now();
    let total: u64 = pool.install(|| {
        tasks
            .par_iter()
            .with_max_len(1)
            .map(|&t| count_primes(t))
            .sum()
    });
    assert!(total > 0);
    t.elapsed().as_secs_f64()
}

/// The same job and the same speed-up with rayon's threads instead of processes.
pub fn speedup_rayon() -> f64 {
    let one = timed_rayon(1);
    let many = timed_rayon(multiproc::cpu_count());
    one / many
}
