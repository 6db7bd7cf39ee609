//! The class slides' exercise: "Write code to create a pool of 4 processes, and use them to
//! compute the sum of the numbers 1 … n".
//!
//! `Pool.map` gives each call one argument — but that argument can be a list or a tuple:
//! here each of the 4 processes gets one quarter of the numbers (as a range) and returns its
//! partial sum; the main process adds the 4 partial sums.
//!
//! Run with `cargo run --example pool_sum [n]` (default n = 100,000,000).

use multiproc::Pool;

/// The sum of one part of the numbers.
fn partial_sum((start, end): (u64, u64)) -> u64 {
    (start..end).sum()
}

fn main() -> multiproc::Result<()> {
    multiproc::init();
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000_000);
    let processes = 4;
    let pool = Pool::new(processes)?;

    // Split 1..=n into 4 parts: (start, end) with end exclusive.
    let step = n.div_ceil(processes as u64);
    let parts: Vec<(u64, u64)> = (0..processes as u64)
        .map(|i| (1 + i * step, (1 + (i + 1) * step).min(n + 1)))
        .collect();
    println!("parts: {parts:?}");

    let t = std::time::Instant::now();
    let sums = pool.map(partial_sum, parts)?;
    let total: u64 = sums.iter().sum();
    println!("partial sums: {sums:?}");
    println!("sum of 1..={n} = {total} ({:?})", t.elapsed());
    assert_eq!(total, n * (n + 1) / 2);
    Ok(())
}
