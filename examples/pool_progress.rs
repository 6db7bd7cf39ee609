//! A long `map` with a progress bar (the `progress` feature, drawn with indicatif on
//! standard error).
//!
//! Run with `cargo run --release --features progress --example pool_progress`.

use std::time::Duration;

use multiproc::Pool;

/// A task that takes a little while.
fn slow_square(x: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(5));
    x * x
}

fn main() -> multiproc::Result<()> {
    multiproc::init();
    let pool = Pool::new(0)?;
    let squares = pool.map_with_progress(slow_square, 0..2000)?;
    println!("sum of squares: {}", squares.iter().sum::<u64>());
    Ok(())
}
