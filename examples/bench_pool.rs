//! Pool benchmark workloads, written to move into the side-by-side harness
//! (`benches/compare.rs`): each is a `fn() -> f64` with a name and a unit, and
//! `benches/py/pool.py` has the CPython workload of the same name.
//!
//! ```text
//! cargo run --release --example bench_pool            # every workload
//! cargo run --release --example bench_pool -- apply   # those whose name contains "apply"
//! python3 benches/py/pool.py                          # CPython's figures
//! ```
//!
//! - `pool_map_tiny`: `map(square, 0..200_000)` on a pool of cpu_count workers, µs per task
//!   (best of 5 rounds, pool already started).
//! - `pool_apply_roundtrip`: `apply(square, x)` one after another, µs per call.
//! - `pool_apply_async_20k`: 20,000 `apply_async` queued, then every `get`, µs per task.
//! - `pool_speedup`: the same CPU-bound job (48 prime-counting tasks) with 1 and with
//!   cpu_count workers; the speed-up. `pool_speedup_rayon` is rayon's on the same job.

use std::time::{Duration, Instant};

use multiproc::Pool;

struct Workload {
    name: &'static str,
    unit: &'static str,
    higher_is_better: bool,
    run: fn() -> f64,
}

const WORKLOADS: &[Workload] = &[
    Workload {
        name: "pool_map_tiny",
        unit: "us/task",
        higher_is_better: false,
        run: map_tiny,
    },
    Workload {
        name: "pool_apply_roundtrip",
        unit: "us",
        higher_is_better: false,
        run: apply_roundtrip,
    },
    Workload {
        name: "pool_apply_async_20k",
        unit: "us/task",
        higher_is_better: false,
        run: apply_async_20k,
    },
    Workload {
        name: "pool_speedup",
        unit: "x",
        higher_is_better: true,
        run: speedup,
    },
    Workload {
        name: "pool_speedup_rayon",
        unit: "x",
        higher_is_better: true,
        run: speedup_rayon,
    },
];

// --- parameters shared with benches/py/pool.py (keep them equal) ---------------------------
const MAP_TASKS: u64 = 200_000;
const MAP_ROUNDS: usize = 5;
const APPLY_BUDGET: Duration = Duration::from_secs(1);
const ASYNC_TASKS: u64 = 20_000;
const ASYNC_ROUNDS: usize = 5;
const PRIME_TASKS: u64 = 48;
const PRIME_SPAN: u64 = 40_000;

fn square(x: u64) -> u64 {
    x * x
}

fn map_tiny() -> f64 {
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

fn apply_roundtrip() -> f64 {
    let pool = Pool::new(1).expect("pool");
    pool.apply(square, 1).expect("warm-up");
    let t = Instant::now();
    let mut n = 0u64;
    while t.elapsed() < APPLY_BUDGET {
        assert_eq!(pool.apply(square, n).expect("apply"), n * n);
        n += 1;
    }
    t.elapsed().as_secs_f64() / n as f64 * 1e6
}

fn apply_async_20k() -> f64 {
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

fn count_primes((start, len): (u64, u64)) -> u64 {
    (start..start + len)
        .filter(|&n| n >= 2 && (2..).take_while(|d| d * d <= n).all(|d| n % d != 0))
        .count() as u64
}

fn prime_tasks() -> Vec<(u64, u64)> {
    (0..PRIME_TASKS)
        .map(|i| (1_000_000 + i * PRIME_SPAN, PRIME_SPAN))
        .collect()
}

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

fn speedup() -> f64 {
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

fn speedup_rayon() -> f64 {
    let one = timed_rayon(1);
    let many = timed_rayon(multiproc::cpu_count());
    one / many
}

fn main() {
    multiproc::init();
    let filter: Vec<String> = std::env::args().skip(1).collect();
    println!(
        "# {} CPUs, load average {}",
        multiproc::cpu_count(),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    for w in WORKLOADS {
        if !filter.is_empty() && !filter.iter().any(|f| w.name.contains(f.as_str())) {
            continue;
        }
        let v = (w.run)();
        let better = if w.higher_is_better {
            "higher"
        } else {
            "lower"
        };
        println!(
            "{:<24} {:>12.4} {:<8} ({better} is better)",
            w.name, v, w.unit
        );
    }
}
