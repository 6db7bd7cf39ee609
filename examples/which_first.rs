//! Reproduces the worksheet's first question (seed 004, worksheet "Process Pools"):
//!
//! ```python
//! p = multiprocessing.Process(F, <args for p>)
//! q = multiprocessing.Process(F, <args for q>)
//! p.start()
//! q.start()
//! ```
//!
//! "Which process will finish first? A) p B) q C) can't tell D) It depends on the args"
//!
//! Answer: C) can't tell. Here `F` does the same amount of work for both; the program runs
//! the experiment ten times and shows that the winner changes from run to run (how often
//! depends on the machine and on what else it is doing).
//!
//! ```text
//! $ cargo run --release --example which_first
//! round 1: q finished first
//! round 2: p finished first
//! ...
//! p first 6 times, q first 4 times: you can't tell in advance
//! ```

use std::time::{SystemTime, UNIX_EPOCH};

/// Does some work; returns the moment it finished (ns since the epoch, one clock for all
/// processes on the machine).
fn f(n: u64) -> u128 {
    let mut x = n;
    for i in 0..n {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(i);
    }
    std::hint::black_box(x);
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

fn main() -> multiproc::Result<()> {
    multiproc::init();
    let (mut p_first, mut q_first) = (0, 0);
    for round in 1..=10 {
        // multiproc::spawn is Process + start, with the function's return value on join.
        let p = multiproc::spawn(f, 2_000_000)?;
        let q = multiproc::spawn(f, 2_000_000)?;
        let (p_done, q_done) = (p.join()?, q.join()?);
        let first = if p_done <= q_done { "p" } else { "q" };
        println!("round {round}: {first} finished first");
        if first == "p" {
            p_first += 1;
        } else {
            q_first += 1;
        }
    }
    println!("p first {p_first} times, q first {q_first} times: you can't tell in advance");
    Ok(())
}
