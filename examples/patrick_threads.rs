//! Reproduces the slides' "Using threads" program (seed 002, "USING THREADS" and
//! "THREADS, CONCURRENCY AND SYNCHRONIZATION"):
//!
//! ```python
//! def worker(val):
//!     global num
//!     num+=val
//!     print ("No! This is Patrick!",val,
//!            threading.currentThread().getName())
//!     print(num)
//!     return
//!
//! threadl = [ ]
//! for i in range(2000):
//!     t = threading.Thread(target = worker, args=(i,))
//!     threadl.append(t)
//!     t.start()
//!     t.join()
//! ```
//!
//! Started and joined one at a time, the threads add 0 + 1 + … + 1999 = 1999000. The slides
//! then warn that threads let run out of order race on the global: two read it, both add,
//! and one update is lost. Rust has no data races in safe code, so the shared `num` here is
//! an atomic read and written in two separate steps (load, then store) — exactly the
//! read-modify-write the slides describe — and the second run, with every thread started
//! before any is joined, can lose updates. The third run takes a lock around the update and
//! always gets 1999000; the last shows the same sum computed by processes, where there is
//! no shared global at all unless you make one (see `rawvalue_race`).
//!
//! Run: `cargo run --release --example patrick_threads` (`-- --quiet` prints only totals).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::thread;

static NUM: AtomicU64 = AtomicU64::new(0);
static LOCK: Mutex<()> = Mutex::new(());

const THREADS: u64 = 2000;
const EXPECTED: u64 = THREADS * (THREADS - 1) / 2;

/// `num += val` as two steps, like Python's bytecode: read, then write back.
fn add_unlocked(val: u64) {
    let n = NUM.load(Ordering::Relaxed);
    thread::yield_now(); // widen the window between the read and the write
    NUM.store(n + val, Ordering::Relaxed);
}

fn worker(val: u64, quiet: bool) {
    add_unlocked(val);
    if !quiet {
        println!(
            "No! This is Patrick! {val} {}",
            thread::current().name().unwrap_or("?")
        );
        println!("{}", NUM.load(Ordering::Relaxed));
    }
}

fn sum_range((from, to): (u64, u64)) -> u64 {
    (from..to).sum()
}

fn main() -> multiproc::Result<()> {
    multiproc::init();
    let quiet = std::env::args().any(|a| a == "--quiet");

    // 1. As in the slides: start, then join, one thread at a time.
    NUM.store(0, Ordering::SeqCst);
    for i in 0..THREADS {
        let t = thread::Builder::new()
            .name(format!("Thread-{}", i + 1))
            .spawn(move || worker(i, quiet))?;
        t.join().expect("worker thread panicked");
    }
    println!(
        "joined one by one: num = {} (expected {EXPECTED})",
        NUM.load(Ordering::SeqCst)
    );

    // 2. Out of order: all started before any is joined. Updates may be lost.
    NUM.store(0, Ordering::SeqCst);
    let handles: Vec<_> = (0..THREADS)
        .map(|i| thread::spawn(move || add_unlocked(i)))
        .collect();
    for h in handles {
        h.join().expect("worker thread panicked");
    }
    let racy = NUM.load(Ordering::SeqCst);
    println!(
        "all at once, no lock: num = {racy} ({} lost)",
        EXPECTED.saturating_sub(racy)
    );

    // 3. The fix the slides point to: a lock around the read-modify-write.
    NUM.store(0, Ordering::SeqCst);
    let handles: Vec<_> = (0..THREADS)
        .map(|i| {
            thread::spawn(move || {
                let _held = LOCK.lock().unwrap_or_else(|p| p.into_inner());
                add_unlocked(i);
            })
        })
        .collect();
    for h in handles {
        h.join().expect("worker thread panicked");
    }
    println!(
        "all at once, with a lock: num = {} (expected {EXPECTED})",
        NUM.load(Ordering::SeqCst)
    );

    // 4. Processes share no global: each returns its part, the parent adds them up.
    let halves = [(0, THREADS / 2), (THREADS / 2, THREADS)];
    let mut total = 0;
    for h in halves
        .into_iter()
        .map(|r| multiproc::spawn(sum_range, r))
        .collect::<multiproc::Result<Vec<_>>>()?
    {
        total += h.join()?;
    }
    println!("two processes, results returned: num = {total} (expected {EXPECTED})");
    Ok(())
}
