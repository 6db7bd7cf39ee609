//! Counts the primes below a bound on every core of an MPI job (or of this machine).
//!
//! ```text
//! cargo build --release --features mpi --example cluster_primes
//! mpirun -n 4 --oversubscribe target/release/examples/cluster_primes 2000000
//! mpirun --hostfile hosts -n 16 target/release/examples/cluster_primes   # several machines
//! srun -N 4 --ntasks-per-node=1 target/release/examples/cluster_primes    # under Slurm
//! target/release/examples/cluster_primes                                 # no MPI: this machine
//! ```
//!
//! Rank 0 runs `main`; the other ranks become node agents inside `multiproc::init()` and
//! run the tasks in their own worker processes.

use std::collections::BTreeMap;

/// Primes in `[lo, hi)`, with the rank and host that counted them.
fn count_primes((lo, hi): (u64, u64)) -> (u64, usize, String) {
    let is_prime = |n: u64| {
        if n < 2 {
            return false;
        }
        let mut d = 2;
        while d * d <= n {
            if n.is_multiple_of(d) {
                return false;
            }
            d += 1;
        }
        true
    };
    let count = (lo..hi).filter(|&n| is_prime(n)).count() as u64;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    (count, multiproc::pool::cluster::rank(), host)
}

fn main() {
    multiproc::init(); // ranks other than 0 serve the pool from here and never return

    let bound: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let step = 10_000;
    let ranges: Vec<(u64, u64)> = (0..bound)
        .step_by(step as usize)
        .map(|lo| (lo, (lo + step).min(bound)))
        .collect();

    let pool = multiproc::Pool::cluster().expect("cannot start the cluster pool");
    let started = std::time::Instant::now();
    let counted = pool.map(count_primes, ranges).expect("a task failed");
    let elapsed = started.elapsed();

    let total: u64 = counted.iter().map(|(c, _, _)| c).sum();
    let mut per_rank: BTreeMap<(usize, String), usize> = BTreeMap::new();
    for (_, rank, host) in &counted {
        *per_rank.entry((*rank, host.clone())).or_default() += 1;
    }
    println!("primes below {bound}: {total}");
    println!(
        "{} workers on {} ranks, {:.3} s",
        pool.processes(),
        multiproc::pool::cluster::size(),
        elapsed.as_secs_f64()
    );
    for ((rank, host), chunks) in per_rank {
        println!("rank {rank} ({host}): {chunks} ranges");
    }
}
