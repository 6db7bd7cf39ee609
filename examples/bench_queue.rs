//! Queue throughput, for quick measurements outside the side-by-side harness
//! (`cargo bench --bench compare -- queue` runs the same workloads next to CPython).
//!
//! ```text
//! cargo run --release --example bench_queue            # every workload
//! cargo run --release --example bench_queue -- big     # the ones whose name contains "big"
//! ```

use std::time::Instant;

use multiproc::{Process, Queue};
use serde_bytes::ByteBuf;

fn producer_small((q, n): (Queue<u64>, u64)) {
    for i in 0..n {
        q.put(i).unwrap();
    }
}

fn consumer_small((q, n): (Queue<u64>, u64)) {
    for _ in 0..n {
        q.get().unwrap();
    }
}

fn producer_big((q, size, n): (Queue<ByteBuf>, usize, usize)) {
    let msg = ByteBuf::from(vec![b'x'; size]);
    for _ in 0..n {
        q.put(msg.clone()).unwrap();
    }
}

/// Messages per second, 8-byte items, `np` producer and `nc` consumer processes.
fn small(np: u64, nc: u64, per_producer: u64) -> f64 {
    let q = Queue::<u64>::new().unwrap();
    let total = np * per_producer;
    let mut cs: Vec<Process> = (0..nc)
        .map(|i| {
            let share = total / nc + u64::from(i < total % nc);
            Process::new(consumer_small, (q.clone(), share))
        })
        .collect();
    for c in &mut cs {
        c.start().unwrap();
    }
    let t0 = Instant::now();
    let mut ps: Vec<Process> = (0..np)
        .map(|_| Process::new(producer_small, (q.clone(), per_producer)))
        .collect();
    for p in &mut ps {
        p.start().unwrap();
    }
    for p in ps.iter().chain(cs.iter()) {
        p.join().unwrap();
    }
    total as f64 / t0.elapsed().as_secs_f64()
}

/// GB/s for `n` items of `size` bytes from a child to the parent.
fn big(size: usize, n: usize) -> f64 {
    let ring: usize = std::env::var("RING")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4 << 20);
    let q = Queue::<ByteBuf>::with_capacity(0, ring).unwrap();
    let mut p = Process::new(producer_big, (q.clone(), size, n));
    p.start().unwrap();
    let first = q.get().unwrap();
    assert_eq!(first.len(), size);
    let t0 = Instant::now();
    for _ in 1..n {
        let b = q.get().unwrap();
        assert_eq!(b.len(), size);
    }
    let secs = t0.elapsed().as_secs_f64();
    p.join().unwrap();
    (size * (n - 1)) as f64 / secs / 1e9
}

fn main() {
    multiproc::init();
    let filter = std::env::args().nth(1).unwrap_or_default();
    let run = |name: &str| name.contains(filter.as_str());
    if run("small_1p1c") {
        println!("small_1p1c: {:.0} msg/s", small(1, 1, 2_000_000));
    }
    if run("big_1mib") {
        println!("big_1mib: {:.2} GB/s", big(1 << 20, 2000));
    }
    if run("big_1gib") {
        println!("big_1gib: {:.2} GB/s", big(1 << 30, 3));
    }
    if run("small_4p4c") {
        println!("small_4p4c: {:.0} msg/s", small(4, 4, 250_000));
    }
}
