//! Pool semantics and faults.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use multiproc::{Error, Pool};

fn square(x: u64) -> u64 {
    x * x
}

#[test]
fn map_apply_basics() {
    multiproc::init();
    let pool = Pool::new(2).unwrap();
    assert_eq!(pool.map(square, 1..=6).unwrap(), vec![1, 4, 9, 16, 25, 36]);
    assert_eq!(pool.apply(square, 9).unwrap(), 81);
    let v = pool.map(square, 0..10_000).unwrap();
    assert_eq!(v, (0..10_000).map(|x| x * x).collect::<Vec<_>>());
}
