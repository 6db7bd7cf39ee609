//! The cluster pool side by side with mpi4py.futures' `MPIPoolExecutor` (run by
//! `benches/cluster/run.sh`, under `mpirun`, with the same ranks), and the CPU-bound
//! speed-up of the cluster pool against the local `Pool` and rayon on the same work.
//!
//! Rank 0 keeps no workers (`root_processes(0)`), like mpi4py.futures' master: every task
//! runs on another rank. Prints one line per figure: `name value unit`.

use std::time::Instant;

use multiproc::pool::cluster;
use multiproc::Pool;

fn square(x: u64) -> u64 {
    x.wrapping_mul(x)
}

/// A CPU-bound task: `n` rounds of an integer hash.
fn burn(n: u64) -> u64 {
    let mut h = n;
    for i in 0..n {
        h = (h ^ i).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(17);
    }
    h
}

fn arg(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    multiproc::init();
    let ranks = cluster::size();
    let pool = Pool::builder()
        .cluster()
        .root_processes(0)
        .processes(1)
        .build()
        .expect("cluster pool");
    let workers = pool.processes();
    println!("ranks {ranks} workers {workers}");

    // 1. Tiny tasks: map of a square over 1,000,000 integers (the pool's default chunks).
    let n = arg("TINY_N", 1_000_000);
    for _ in 0..3 {
        let t = Instant::now();
        let v = pool.map(square, 0..n).unwrap();
        let s = t.elapsed().as_secs_f64();
        assert_eq!(v[n as usize - 1], square(n - 1));
        println!("tiny_map_tasks_per_s {:.0} tasks/s", n as f64 / s);
    }

    // 2. apply round trip to a remote rank.
    for i in 0..500 {
        pool.apply(square, i).unwrap();
    }
    let reps = arg("APPLY_N", 5000);
    for _ in 0..3 {
        let mut each = Vec::with_capacity(reps as usize);
        let t = Instant::now();
        for i in 0..reps {
            let t1 = Instant::now();
            pool.apply(square, i).unwrap();
            each.push(t1.elapsed().as_secs_f64() * 1e6);
        }
        println!(
            "apply_round_trip_us {:.1} us",
            t.elapsed().as_secs_f64() * 1e6 / reps as f64
        );
        // The spread of the same calls: the median, and the 99th percentile (the calls
        // whose waiting thread was not run at once).
        each.sort_by(f64::total_cmp);
        let at = |q: f64| each[((each.len() - 1) as f64 * q) as usize];
        println!("apply_round_trip_p50_us {:.1} us", at(0.5));
        println!("apply_round_trip_p99_us {:.1} us", at(0.99));
    }

    // 3. CPU-bound: 64 tasks of `burn` (chunk size 1), on the cluster pool, then a local
    //    pool and rayon with as many workers, on rank 0.
    let work = arg("BURN_N", 20_000_000);
    let tasks: Vec<u64> = vec![work; 64];
    let single = {
        let t = Instant::now();
        for &w in &tasks[..4] {
            std::hint::black_box(burn(w));
        }
        t.elapsed().as_secs_f64() * 16.0
    };
    println!("cpu_serial_s {single:.3} s");
    let t = Instant::now();
    pool.map_chunked(burn, tasks.clone(), 1).unwrap();
    let c = t.elapsed().as_secs_f64();
    println!("cpu_cluster_s {c:.3} s (speed-up {:.2})", single / c);
    drop(pool);
    let local = Pool::new(workers).unwrap();
    let t = Instant::now();
    local.map_chunked(burn, tasks.clone(), 1).unwrap();
    let l = t.elapsed().as_secs_f64();
    println!("cpu_local_pool_s {l:.3} s (speed-up {:.2})", single / l);
    drop(local);
    let rp = rayon::ThreadPoolBuilder::new()
        .num_threads(workers)
        .build()
        .unwrap();
    let t = Instant::now();
    rp.install(|| {
        use rayon::prelude::*;
        tasks.par_iter().map(|&w| burn(w)).sum::<u64>()
    });
    let r = t.elapsed().as_secs_f64();
    println!("cpu_rayon_s {r:.3} s (speed-up {:.2})", single / r);
}
