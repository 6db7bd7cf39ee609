//! Synchronization workloads of the side-by-side benchmark (issue 3): Lock, Value, Event.
//! Their CPython counterparts are the functions of the same names in `benches/compare.py`.

use std::time::{Duration, Instant};

use multiproc::{Event, Lock, Process, RawValue, Value};

// --- parameters shared with benches/compare.py (keep them equal) --------------------------
const UNCONTENDED_ITERS: u32 = 2_000_000;
const CONTENDED_ITERS: u32 = 200_000; // per process
const VALUE_ITERS: u32 = 1_000_000;
const PINGPONG_ROUNDS: u32 = 5_000;

/// Uncontended `acquire(); release()` pairs in one process: ns per pair (best of 5).
pub fn lock_uncontended() -> f64 {
    let lock = Lock::new().expect("lock");
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..UNCONTENDED_ITERS {
            lock.acquire().expect("acquire");
            lock.release().expect("release");
        }
        best = best.min(t.elapsed().as_nanos() as f64 / UNCONTENDED_ITERS as f64);
    }
    best
}

fn locked_adder((x, lock, n): (RawValue<u64>, Lock, u32)) -> multiproc::Result<()> {
    for _ in 0..n {
        lock.acquire()?;
        x.set(x.get() + 1);
        lock.release()?;
    }
    Ok(())
}

/// Two processes each add 1 to a shared counter `CONTENDED_ITERS` times under one Lock:
/// wall time per increment, start-up excluded as far as possible (children wait on an
/// Event).
pub fn lock_two_process_increment() -> f64 {
    let x = RawValue::new(0u64).expect("value");
    let lock = Lock::new().expect("lock");
    // Hold the lock while the children start, so both begin together.
    lock.acquire().expect("acquire");
    let mut ps: Vec<Process> = (0..2)
        .map(|_| Process::new(locked_adder, (x.clone(), lock.clone(), CONTENDED_ITERS)))
        .collect();
    for p in &mut ps {
        p.start().expect("start");
    }
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    lock.release().expect("release");
    for p in &ps {
        p.join().expect("join");
    }
    let el = t.elapsed();
    assert_eq!(x.get(), 2 * CONTENDED_ITERS as u64);
    el.as_nanos() as f64 / (2 * CONTENDED_ITERS) as f64
}

/// `*value.lock() += 1` in one process (Python: `with v.get_lock(): v.value += 1`).
pub fn value_increment() -> f64 {
    let v = Value::new(0i64).expect("value");
    let t = Instant::now();
    for _ in 0..VALUE_ITERS {
        *v.lock().expect("lock") += 1;
    }
    let el = t.elapsed();
    assert_eq!(v.get(), VALUE_ITERS as i64);
    el.as_nanos() as f64 / VALUE_ITERS as f64
}

fn ponger((ping, pong, n): (Event, Event, u32)) -> multiproc::Result<()> {
    for _ in 0..n {
        ping.wait().unwrap();
        ping.clear();
        pong.set();
    }
    Ok(())
}

/// Ping-pong between two processes through two Events: the time to wake a process blocked
/// on an Event (half a round trip), in µs.
pub fn event_wake_latency() -> f64 {
    let ping = Event::new().expect("event");
    let pong = Event::new().expect("event");
    let mut p = Process::new(ponger, (ping.clone(), pong.clone(), PINGPONG_ROUNDS));
    p.start().expect("start");
    let t = Instant::now();
    for _ in 0..PINGPONG_ROUNDS {
        ping.set();
        pong.wait().unwrap();
        pong.clear();
    }
    let el = t.elapsed();
    p.join().expect("join");
    el.as_secs_f64() * 1e6 / (2 * PINGPONG_ROUNDS) as f64
}
