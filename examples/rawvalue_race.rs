//! Reproduces the class slides' RawValue demo (seed 000, "RawValue Demo", "Everything is
//! NOT okay"): two processes each add 1 to a shared `RawValue` many times with
//! `r.value = r.value + 1`. Reading and writing are separate steps, so when the processes
//! interleave, one overwrites the other's update and the total comes out short:
//!
//! ```text
//! Proc1: x = r.value
//! Proc2: x = r.value
//! Proc1: y = x+1
//! Proc1: r.value = y
//! Proc2: y = x+1
//! Proc2: r.value = y      <- Proc1's update is lost
//! ```
//!
//! "Just making it one line is not enough." The fix is a lock around the read-modify-write.
//! This program runs the race three times without a lock (updates are lost on every run:
//! the totals vary and stay below 400000) and three times with one (always 400000). In
//! Rust the race is safe: each `get` and `set` is an atomic load or store, so updates are
//! lost but nothing is undefined.
//!
//! The two adders wait on a [`Barrier`] before they start counting, so that their loops
//! really run at the same time: started one after the other, the first would be done
//! before the second began, and nothing would be lost.

use multiproc::{Barrier, Lock, Process, RawValue};

const N: u32 = 200_000;

fn add_unlocked((r, start): (RawValue<i64>, Barrier)) -> multiproc::Result<()> {
    start.wait()?;
    for _ in 0..N {
        r.set(r.get() + 1);
    }
    Ok(())
}

fn add_locked((r, lock, start): (RawValue<i64>, Lock, Barrier)) -> multiproc::Result<()> {
    start.wait()?;
    for _ in 0..N {
        let _held = lock.lock()?;
        r.set(r.get() + 1);
    }
    Ok(())
}

fn main() -> multiproc::Result<()> {
    multiproc::init();
    let expected = 2 * N as i64;
    for run in 1..=3 {
        let r = RawValue::new(0i64)?;
        let start = Barrier::new(2)?;
        let mut p1 = Process::new(add_unlocked, (r.clone(), start.clone()));
        let mut p2 = Process::new(add_unlocked, (r.clone(), start));
        p1.start()?;
        p2.start()?;
        p1.join()?;
        p2.join()?;
        let total = r.get();
        println!(
            "without lock, run {run}: {total} (expected {expected}, lost {})",
            expected - total
        );
    }
    for run in 1..=3 {
        let r = RawValue::new(0i64)?;
        let lock = Lock::new()?;
        let start = Barrier::new(2)?;
        let mut p1 = Process::new(add_locked, (r.clone(), lock.clone(), start.clone()));
        let mut p2 = Process::new(add_locked, (r.clone(), lock.clone(), start));
        p1.start()?;
        p2.start()?;
        p1.join()?;
        p2.join()?;
        println!("with lock,    run {run}: {} (expected {expected})", r.get());
    }
    Ok(())
}
