//! Pool semantics and faults: every point of the pool's contract.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use multiproc::{Error, Pool, StartMethod};

fn square(x: u64) -> u64 {
    x * x
}

fn pid(_: u64) -> u32 {
    std::process::id()
}

fn nap(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

/// Task 50 waits for `gate`; the others return at once.
fn wait_for_gate((gate, x): (multiproc::Event, u64)) -> u64 {
    if x == 50 {
        gate.wait().unwrap();
    }
    x
}

/// Waits at `b` for the other party (the pool's other worker), then says its pid.
fn meet_pid(b: multiproc::Barrier) -> u32 {
    b.wait_timeout(Duration::from_secs(60)).unwrap();
    std::process::id()
}

/// The pids of a two-worker pool's workers: two tasks that must run at the same time (a
/// handshake, not naps that a loaded machine may serialise onto one worker).
fn both_worker_pids(pool: &Pool) -> HashSet<u32> {
    let b = multiproc::Barrier::new(2).unwrap();
    pool.map_chunked(meet_pid, vec![b.clone(), b], 1)
        .unwrap()
        .into_iter()
        .collect()
}

fn nap_pid(ms: u64) -> u32 {
    nap(ms);
    std::process::id()
}

fn kill_self(signal: rustix::process::Signal) {
    let _ = rustix::process::kill_process(rustix::process::getpid(), signal);
    std::thread::sleep(Duration::from_secs(10));
}

/// Kills its own worker on 7; sleeps a little otherwise so that both workers get chunks.
fn die_on_seven(x: u64) -> u64 {
    if x == 7 {
        kill_self(rustix::process::Signal::KILL);
    }
    std::thread::sleep(Duration::from_millis(2));
    x
}

fn panic_on_odd(x: u64) -> u64 {
    if x % 2 == 1 {
        panic!("odd input {x}");
    }
    x
}

/// Whether `pid` is gone: not running and not a zombie left unreaped.
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => {
            // Still our child (running, or a zombie nobody reaped) unless the pid was
            // recycled by someone else's process.
            let after = s.rsplit_once(')').map(|x| x.1).unwrap_or("");
            let ppid: u32 = after
                .split_whitespace()
                .nth(1)
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            ppid != std::process::id()
        }
    }
}

fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

#[test]
fn map_keeps_order_and_chunks() {
    multiproc::init();
    let pool = Pool::new(2).unwrap();
    assert_eq!(pool.map(square, 1..=6).unwrap(), vec![1, 4, 9, 16, 25, 36]);
    assert_eq!(pool.map(square, Vec::new()).unwrap(), Vec::<u64>::new());
    let want: Vec<u64> = (0..10_000).map(|x| x * x).collect();
    assert_eq!(pool.map(square, 0..10_000).unwrap(), want);
    assert_eq!(pool.map_chunked(square, 0..10_000, 1).unwrap(), want);
    assert_eq!(pool.map_chunked(square, 0..10_000, 999).unwrap(), want);
    assert_eq!(pool.map_async(square, 0..10_000).get().unwrap(), want);
    fn printer((s, n): (String, usize)) -> usize {
        s.len() * n
    }
    let tuples = vec![
        ("She loves me.".to_string(), 10),
        ("She loves me not.".to_string(), 10),
    ];
    assert_eq!(pool.starmap(printer, tuples).unwrap(), vec![130, 170]);
    // Work is spread over the workers.
    assert_eq!(both_worker_pids(&pool).len(), 2);
}

fn neg_i8(x: i8) -> i8 {
    x.wrapping_neg()
}
fn swap_u16(x: u16) -> u16 {
    x.swap_bytes()
}
fn flip_i32(x: i32) -> i32 {
    !x
}
fn half_f32(x: f32) -> f32 {
    x / 2.0
}
fn sqrt_f64(x: f64) -> f64 {
    x.sqrt()
}
fn wide(x: u8) -> (u8, i64) {
    (x, -(x as i64) << 40)
}
fn low_byte((x, _): (u8, i64)) -> u8 {
    x
}
fn shown(x: u32) -> String {
    x.to_string()
}
fn parsed(s: String) -> u32 {
    s.parse().unwrap()
}
fn panic_on_nan(x: f64) -> f64 {
    assert!(!x.is_nan(), "NaN at {x}");
    -x
}

/// Plain numbers (their memory is their encoding: copied in and out without a serde call
/// per task) come back exactly, of every width and sign, with plain and other types on
/// either side of the function, in long chunks and short; a task that panics among them
/// fails alone.
#[test]
fn plain_numbers_of_every_width_travel_exactly() {
    multiproc::init();
    let pool = Pool::new(2).unwrap();
    let bytes: Vec<i8> = (i8::MIN..=i8::MAX).collect();
    let want: Vec<i8> = bytes.iter().map(|&x| x.wrapping_neg()).collect();
    assert_eq!(pool.map(neg_i8, bytes.clone()).unwrap(), want);
    assert_eq!(pool.map_chunked(neg_i8, bytes, 1).unwrap(), want);
    let words: Vec<u16> = (0..50_000u16).map(|x| x.wrapping_mul(40_503)).collect();
    let want: Vec<u16> = words.iter().map(|x| x.swap_bytes()).collect();
    assert_eq!(pool.map(swap_u16, words).unwrap(), want);
    let ints: Vec<i32> = (-100_000..100_000).map(|x| x * 10_007).collect();
    let want: Vec<i32> = ints.iter().map(|x| !x).collect();
    assert_eq!(pool.map(flip_i32, ints.clone()).unwrap(), want);
    assert_eq!(pool.map_chunked(flip_i32, ints, 777).unwrap(), want);
    let floats: Vec<f32> = vec![1.5, -0.0, f32::MAX, f32::MIN_POSITIVE, 3.0e-40];
    let got = pool.map(half_f32, floats.clone()).unwrap();
    let want: Vec<f32> = floats.iter().map(|x| x / 2.0).collect();
    assert_eq!(
        got.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        want.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
    );
    let doubles: Vec<f64> = (0..300_000).map(|x| x as f64 * 0.25).collect();
    let want: Vec<f64> = doubles.iter().map(|x| x.sqrt()).collect();
    assert_eq!(pool.map(sqrt_f64, doubles).unwrap(), want);
    // A plain argument with another result, and the way back; a plain value to a string.
    let pairs = pool.map(wide, 0..=255u8).unwrap();
    assert_eq!(pairs[200], (200, -200 << 40));
    assert_eq!(
        pool.map(low_byte, pairs).unwrap(),
        (0..=255u8).collect::<Vec<_>>()
    );
    let strings = pool.map(shown, vec![7u32, u32::MAX]).unwrap();
    assert_eq!(strings, vec!["7".to_string(), u32::MAX.to_string()]);
    assert_eq!(pool.map(parsed, strings).unwrap(), vec![7, u32::MAX]);
    // A panic in the middle of a plain chunk fails that task only.
    let res: Vec<_> = pool
        .imap_chunked(panic_on_nan, vec![1.0, f64::NAN, 2.0, 3.0], 4)
        .collect();
    assert_eq!(res[0].as_ref().unwrap(), &-1.0);
    assert!(matches!(&res[1], Err(Error::TaskPanicked { message, .. }) if message == "NaN at NaN"));
    assert_eq!(res[2].as_ref().unwrap(), &-2.0);
    assert_eq!(res[3].as_ref().unwrap(), &-3.0);
}

#[test]
fn map_async_chunked_runs_each_chunk_in_one_worker() {
    multiproc::init();
    let pool = Pool::new(2).unwrap();
    // Chunks of 4: the four results of a chunk come from one worker.
    let pids = pool
        .map_async_chunked(nap_pid, vec![2u64; 16], 4)
        .get()
        .unwrap();
    assert_eq!(pids.len(), 16);
    for chunk in pids.chunks(4) {
        assert!(chunk.iter().all(|p| *p == chunk[0]), "{pids:?}");
    }
    // One chunk for the whole input: one worker runs it all, although the other is idle
    // (the default chunk size would give 2 items a chunk and use both workers).
    let pids = pool
        .map_async_chunked(nap_pid, vec![5u64; 12], 12)
        .get()
        .unwrap();
    assert!(pids.iter().all(|p| *p == pids[0]), "{pids:?}");
    // A chunk size of 0 is refused, as Python refuses it.
    assert!(matches!(
        pool.map_async_chunked(nap_pid, vec![1u64], 0).get(),
        Err(Error::InvalidOperation(_))
    ));
    assert!(matches!(
        pool.starmap_async_chunked(add_pair, vec![(1, 1)], 0).get(),
        Err(Error::InvalidOperation(_))
    ));
}

fn add_pair((a, b): (u64, u64)) -> u64 {
    if a == 99 {
        panic!("bad pair");
    }
    a + b
}

#[test]
fn starmap_async_in_workers() {
    multiproc::init();
    let pool = Pool::new(2).unwrap();
    let r = pool.starmap_async(add_pair, (0..50).map(|i| (i, 2 * i)));
    assert_eq!(r.get().unwrap(), (0..50).map(|i| 3 * i).collect::<Vec<_>>());
    let r = pool.starmap_async_chunked(add_pair, (0..10).map(|i| (i, i)), 3);
    assert_eq!(r.get().unwrap(), (0..10).map(|i| 2 * i).collect::<Vec<_>>());
    // A failing task fails the call, like starmap.
    let r = pool.starmap_async(add_pair, vec![(1, 1), (99, 0)]);
    assert!(matches!(r.get(), Err(Error::TaskPanicked { .. })));
    assert!(!r.successful().unwrap());
}

#[test]
fn apply_and_async_results() {
    multiproc::init();
    let pool = Pool::new(2).unwrap();
    assert_eq!(pool.apply(square, 9).unwrap(), 81);
    fn cube(x: i64) -> i64 {
        x * x * x
    }
    let rs: Vec<_> = (1..=6).map(|x| pool.apply_async(cube, x)).collect();
    let out: Vec<i64> = rs.iter().map(|r| r.get().unwrap()).collect();
    assert_eq!(out, vec![1, 8, 27, 64, 125, 216]);
    // get() again gives the same outcome; ready/successful.
    assert_eq!(rs[2].get().unwrap(), 27);
    assert!(rs[2].ready());
    assert!(rs[2].successful().unwrap());

    let slow = pool.apply_async(nap, 400);
    assert!(!slow.ready());
    assert!(matches!(slow.successful(), Err(Error::InvalidOperation(_))));
    assert!(matches!(
        slow.get_timeout(Duration::from_millis(20)),
        Err(Error::Timeout)
    ));
    assert!(!slow.wait_timeout(Duration::from_millis(1)));
    slow.wait();
    assert_eq!(slow.get_timeout(Duration::from_millis(1)).unwrap(), 400);

    // Callbacks: success, error, and one added after completion.
    let (tx, rx) = mpsc::channel();
    let tx2 = tx.clone();
    let r = pool.apply_async(square, 5);
    r.on_done(move |v| tx.send(format!("done {v}")).unwrap());
    let e = pool.apply_async(panic_on_odd, 5);
    e.on_error(move |err| tx2.send(format!("error {err}")).unwrap());
    let mut got = [rx.recv().unwrap(), rx.recv().unwrap()];
    got.sort();
    assert_eq!(got[0], "done 25");
    assert!(got[1].starts_with("error task panicked"), "{}", got[1]);
    assert!(got[1].contains("odd input 5"), "{}", got[1]);
    let (tx, rx) = mpsc::channel();
    r.on_complete(move |res| tx.send(res.copied().ok()).unwrap());
    assert_eq!(rx.recv().unwrap(), Some(25));
}

#[test]
fn panicking_task_fails_alone_and_worker_survives() {
    multiproc::init();
    let pool = Pool::new(1).unwrap();
    let before = pool.apply(pid, 0).unwrap();
    match pool.apply(panic_on_odd, 3) {
        Err(Error::TaskPanicked {
            message, location, ..
        }) => {
            assert_eq!(message, "odd input 3");
            assert!(location.unwrap().contains("pool.rs"));
        }
        other => panic!("{other:?}"),
    }
    // map returns the first error in input order.
    match pool.map_chunked(panic_on_odd, vec![0, 2, 5, 4, 7], 2) {
        Err(Error::TaskPanicked { message, .. }) => assert_eq!(message, "odd input 5"),
        other => panic!("{other:?}"),
    }
    // Per task: only the odd ones fail.
    let res: Vec<_> = pool.imap_chunked(panic_on_odd, 0..6, 3).collect();
    for (i, r) in res.iter().enumerate() {
        assert_eq!(r.is_ok(), i % 2 == 0, "{i}: {r:?}");
    }
    assert_eq!(
        pool.apply(pid, 0).unwrap(),
        before,
        "the worker was replaced"
    );
}

#[test]
fn killed_worker_fails_only_its_tasks() {
    multiproc::init();
    let pool = Pool::new(2).unwrap();
    let t = Instant::now();
    // map returns (does not hang) with the death as its error.
    match pool.map(die_on_seven, 0..40) {
        Err(Error::WorkerDied {
            signal: Some(9),
            exitcode: None,
            pid,
        }) => assert!(pid > 0),
        other => panic!("{other:?}"),
    }
    // Per task: exactly the chunk that held task 7 fails (chunks of 5: tasks 5..10).
    let res: Vec<_> = pool.imap_chunked(die_on_seven, 0..20, 5).collect();
    for (i, r) in res.iter().enumerate() {
        if (5..10).contains(&i) {
            assert!(
                matches!(
                    r,
                    Err(Error::WorkerDied {
                        signal: Some(9),
                        ..
                    })
                ),
                "{i}: {r:?}"
            );
        } else {
            assert_eq!(*r.as_ref().unwrap(), i as u64);
        }
    }
    // With one task per chunk, only task 7 fails.
    let res: Vec<_> = pool.imap(die_on_seven, 0..20).collect();
    let failed: Vec<usize> = (0..20).filter(|&i| res[i].is_err()).collect();
    assert_eq!(failed, vec![7]);
    // Still usable, with a full set of workers.
    assert_eq!(pool.map(square, 0..100).unwrap()[99], 9801);
    assert_eq!(both_worker_pids(&pool).len(), 2);
    assert!(t.elapsed() < Duration::from_secs(20));
}

#[test]
fn abort_and_exit_are_reported() {
    multiproc::init();
    let pool = Pool::new(1).unwrap();
    match pool.apply(|_: ()| -> () { std::process::abort() }, ()) {
        Err(Error::WorkerDied {
            signal: Some(6), ..
        }) => {}
        other => panic!("{other:?}"),
    }
    match pool.apply(|c: i32| -> () { std::process::exit(c) }, 3) {
        Err(Error::WorkerDied {
            exitcode: Some(3),
            signal: None,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    fn segv(_: ()) {
        // SAFETY: none; this deliberately crashes the worker with a real segfault.
        unsafe { std::ptr::null_mut::<u8>().write_volatile(1) };
    }
    match pool.apply(segv, ()) {
        Err(Error::WorkerDied {
            signal: Some(11), ..
        }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(pool.apply(square, 4).unwrap(), 16);
}

#[test]
fn task_timeout_kills_and_replaces() {
    multiproc::init();
    let pool = Pool::builder()
        .processes(2)
        .task_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let t = Instant::now();
    let res: Vec<_> = pool
        .imap_chunked(nap, vec![1, 60_000, 2, 3, 4, 5], 3)
        .collect();
    // The 60 s task was cut short (the bound leaves room for a loaded machine).
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
    assert!(matches!(res[1], Err(Error::Timeout)), "{:?}", res[1]);
    for i in [0, 2, 3, 4, 5] {
        assert!(res[i].is_ok(), "{i}: {:?}", res[i]);
    }
    assert!(matches!(pool.apply(nap, 5_000), Err(Error::Timeout)));
    assert_eq!(pool.map(square, 0..10).unwrap()[3], 9);
}

#[derive(Clone, Debug, serde::Deserialize)]
struct Unencodable;

impl serde::Serialize for Unencodable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom(
            "this value refuses to be encoded",
        ))
    }
}

#[test]
fn result_encode_failure_is_codec_error() {
    multiproc::init();
    let pool = Pool::new(1).unwrap();
    let before = pool.apply(pid, 0).unwrap();
    match pool.apply(|_: ()| Unencodable, ()) {
        Err(Error::Codec(m)) => assert!(
            m.message().contains("cannot encode the task's result"),
            "{m}"
        ),
        other => panic!("{other:?}"),
    }
    // An argument that cannot be encoded fails in the caller's process.
    assert!(matches!(
        pool.apply(|_: Unencodable| 1u8, Unencodable),
        Err(Error::Codec(_))
    ));
    assert_eq!(pool.apply(pid, 0).unwrap(), before);
}

#[test]
fn maxtasksperchild_replaces_workers() {
    multiproc::init();
    let pool = Pool::builder()
        .processes(2)
        .maxtasksperchild(3)
        .build()
        .unwrap();
    let pids: Vec<u32> = (0..12).map(|i| pool.apply(pid, i).unwrap()).collect();
    let distinct: HashSet<u32> = pids.iter().copied().collect();
    assert!(distinct.len() >= 4, "{pids:?}");
    for p in &distinct {
        let n = pids.iter().filter(|q| *q == p).count();
        assert!(n <= 3, "{p} ran {n} tasks: {pids:?}");
    }
    pool.close();
    pool.join().unwrap();
    for p in distinct {
        assert!(gone(p), "worker {p} left behind");
    }
}

static INIT_CALLS: AtomicU32 = AtomicU32::new(0);

fn init_worker(dir: String) {
    INIT_CALLS.fetch_add(1, Ordering::SeqCst);
    std::fs::write(format!("{dir}/{}", std::process::id()), b"x").unwrap();
}

fn init_calls(_: ()) -> u32 {
    INIT_CALLS.load(Ordering::SeqCst)
}

#[test]
fn initializer_runs_once_per_worker() {
    multiproc::init();
    let dir = std::env::temp_dir().join(format!("mp-pool-init-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pool = Pool::builder()
        .processes(3)
        .initializer(init_worker, dir.to_string_lossy().into_owned())
        .build()
        .unwrap();
    let calls = pool.map_chunked(init_calls, vec![(); 30], 1).unwrap();
    assert!(calls.iter().all(|&c| c == 1), "{calls:?}");
    let files = std::fs::read_dir(&dir).unwrap().count();
    assert_eq!(files, 3);
    drop(pool);
    std::fs::remove_dir_all(&dir).unwrap();

    fn bad_init(_: ()) {
        panic!("cannot initialise");
    }
    match Pool::builder()
        .processes(2)
        .initializer(bad_init, ())
        .build()
    {
        Err(Error::BrokenPool { reason, cause }) => {
            assert!(reason.contains("initializer"), "{reason}");
            match *cause {
                Error::TaskPanicked { message, .. } => assert_eq!(message, "cannot initialise"),
                other => panic!("{other:?}"),
            }
        }
        other => panic!("{other:?}"),
    }
}

/// Counts a worker's start in `starts` and returns its number (1 for the first).
fn count_start(starts: &multiproc::Value<u32>) -> u32 {
    let mut g = starts.lock().unwrap();
    *g += 1;
    *g
}

/// Kills itself with SIGKILL while starting, in the 2nd to 6th worker the pool starts.
fn init_killed_from_outside(starts: multiproc::Value<u32>) {
    if (2..=6).contains(&count_start(&starts)) {
        kill_self(rustix::process::Signal::KILL);
    }
}

/// A worker SIGKILLed while it starts (from outside, as the OOM killer or a user would) is
/// not a broken pool: the pool replaces it as often as it takes, as CPython does. Five in a
/// row here; before, the third gave the slot up and the pool was broken.
#[test]
fn workers_sigkilled_while_starting_are_replaced_again() {
    multiproc::init();
    let starts = multiproc::Value::new(0u32).unwrap();
    let pool = Pool::builder()
        .processes(1)
        .initializer(init_killed_from_outside, starts.clone())
        .build()
        .unwrap();
    let first = pool.apply(pid, 0).unwrap();
    assert!(matches!(
        pool.apply(|_: ()| kill_self(rustix::process::Signal::KILL), ()),
        Err(Error::WorkerDied { .. })
    ));
    // Served by the 7th worker, after five were killed while starting.
    let seventh = pool.apply(pid, 0).unwrap();
    assert_ne!(seventh, first);
    assert_eq!(starts.get(), 7);
    assert_eq!(pool.apply(square, 6).unwrap(), 36);
}

/// Kills itself with SIGKILL while starting, in every worker after the first.
fn init_always_killed_after_one(starts: multiproc::Value<u32>) {
    if count_start(&starts) > 1 {
        kill_self(rustix::process::Signal::KILL);
    }
}

/// Twenty workers in a row SIGKILLed while they start are no accident: the pool gives up
/// and says so (`BrokenPool`, the last kill as its cause) instead of waiting for ever.
#[test]
fn twenty_workers_in_a_row_sigkilled_while_starting_break_the_pool() {
    multiproc::init();
    let starts = multiproc::Value::new(0u32).unwrap();
    let pool = Pool::builder()
        .processes(1)
        .initializer(init_always_killed_after_one, starts.clone())
        .build()
        .unwrap();
    assert!(matches!(
        pool.apply(|_: ()| kill_self(rustix::process::Signal::KILL), ()),
        Err(Error::WorkerDied { .. })
    ));
    match pool.apply(square, 2) {
        Err(Error::BrokenPool { reason, cause }) => {
            assert!(reason.contains("20 times in a row"), "{reason}");
            assert!(
                matches!(
                    *cause,
                    Error::WorkerDied {
                        signal: Some(9),
                        ..
                    }
                ),
                "{cause:?}"
            );
        }
        other => panic!("expected BrokenPool, got {other:?}"),
    }
    assert_eq!(starts.get(), 21);
}

/// The pool's 3rd and later workers exit with code 3 while starting.
fn init_exits_after_two(starts: multiproc::Value<u32>) {
    if count_start(&starts) > 2 {
        std::process::exit(3);
    }
}

/// Every slot gives up after three failed starts in a row: the pool is broken, and every
/// kind of call says so with `BrokenPool` (the last failure as its cause), never hangs, and
/// never answers with an unclear I/O error.
#[test]
fn a_pool_that_cannot_start_workers_is_broken_for_every_call() {
    multiproc::init();
    let starts = multiproc::Value::new(0u32).unwrap();
    let pool = Pool::builder()
        .processes(2)
        .initializer(init_exits_after_two, starts.clone())
        .build()
        .unwrap();
    for _ in 0..2 {
        assert!(matches!(
            pool.apply(|_: ()| kill_self(rustix::process::Signal::KILL), ()),
            Err(Error::WorkerDied { .. })
        ));
    }
    let broken = |e: Error| match e {
        Error::BrokenPool { reason, cause } => {
            assert!(reason.contains("no worker can be started"), "{reason}");
            assert!(
                matches!(
                    *cause,
                    Error::WorkerDied {
                        exitcode: Some(3),
                        ..
                    }
                ),
                "{cause:?}"
            );
        }
        other => panic!("expected BrokenPool, got {other:?}"),
    };
    broken(pool.map(square, 0..10u64).unwrap_err());
    broken(pool.apply_async(square, 2).get().unwrap_err());
    let results: Vec<_> = pool.imap(square, 0..5u64).collect();
    assert!(!results.is_empty());
    for r in results {
        broken(r.unwrap_err());
    }
    broken(pool.apply(square, 2).unwrap_err());
    // Two starts, then three failed ones per slot: nothing more is started.
    assert_eq!(starts.get(), 8);
}

/// Panics in every worker after the first.
fn init_panics_after_one(starts: multiproc::Value<u32>) {
    if count_start(&starts) > 1 {
        panic!("no more workers");
    }
}

/// A replacement worker whose initializer panics breaks the pool at once (CPython's pool
/// starts worker after worker and its tasks hang for ever): every task says the
/// initializer failed, with its panic as the cause, not as if the task had panicked.
#[test]
fn an_initializer_that_panics_in_a_replacement_breaks_the_pool_clearly() {
    multiproc::init();
    let starts = multiproc::Value::new(0u32).unwrap();
    let pool = Pool::builder()
        .processes(1)
        .initializer(init_panics_after_one, starts.clone())
        .build()
        .unwrap();
    assert_eq!(pool.apply(square, 3).unwrap(), 9);
    assert!(matches!(
        pool.apply(|_: ()| kill_self(rustix::process::Signal::KILL), ()),
        Err(Error::WorkerDied { .. })
    ));
    let init_failed = |e: Error| match e {
        Error::BrokenPool { reason, cause } => {
            assert!(reason.contains("initializer failed"), "{reason}");
            match *cause {
                Error::TaskPanicked { message, .. } => assert_eq!(message, "no more workers"),
                other => panic!("{other:?}"),
            }
        }
        other => panic!("expected BrokenPool, got {other:?}"),
    };
    init_failed(pool.apply(square, 2).unwrap_err());
    init_failed(pool.map(square, 0..4u64).unwrap_err());
    for r in pool.imap(square, 0..3u64) {
        init_failed(r.unwrap_err());
    }
    assert_eq!(starts.get(), 2);
    pool.close();
    pool.join().unwrap();
}

#[test]
fn imap_endless_input_is_lazy() {
    multiproc::init();
    let pool = Pool::new(2).unwrap();
    let first: Vec<u64> = pool
        .imap(square, 0..)
        .take(10)
        .collect::<multiproc::Result<_>>()
        .unwrap();
    assert_eq!(first, (0..10).map(|x| x * x).collect::<Vec<_>>());
    // The input is read only a bounded distance ahead.
    let read = std::sync::Arc::new(AtomicU32::new(0));
    let r2 = read.clone();
    let input = (0u64..).inspect(move |_| {
        r2.fetch_add(1, Ordering::SeqCst);
    });
    let mut it = pool.imap_chunked(square, input, 4);
    for i in 0..1000u64 {
        assert_eq!(it.next().unwrap().unwrap(), i * i);
    }
    let ahead = read.load(Ordering::SeqCst) as usize - 1000;
    assert!(ahead <= 512, "read {ahead} items ahead");
    drop(it);
    // Unordered yields everything once, in completion order: the first task waits for an
    // event that is set only after another task's result came out.
    let pool = Pool::new(2).unwrap();
    let gate = multiproc::Event::new().unwrap();
    let items: Vec<_> = [50u64, 1, 30, 2].map(|x| (gate.clone(), x)).into();
    let mut it = pool.imap_unordered_chunked(wait_for_gate, items, 1);
    let first = it.next().unwrap().unwrap();
    assert_ne!(first, 50, "the gated task came out before the gate opened");
    gate.set();
    let mut v: Vec<u64> = std::iter::once(first)
        .chain(it.map(|r| r.unwrap()))
        .collect();
    v.sort();
    assert_eq!(v, vec![1, 2, 30, 50]);
    assert_eq!(pool.imap(square, Vec::new()).count(), 0);
}

/// Runs in a process of its own, so that other tests' pools do not change the counts.
/// Returns (fds before, fds while queued, fds after, threads before, threads while queued,
/// sum of the results).
fn apply_async_100k(_: ()) -> (usize, usize, usize, usize, usize, u64) {
    let pool = Pool::new(2).unwrap();
    assert_eq!(pool.apply(square, 2).unwrap(), 4);
    let fds = fd_count();
    let threads = thread_count();
    let rs: Vec<_> = (0..100_000u64)
        .map(|i| pool.apply_async(square, i))
        .collect();
    let fds_queued = fd_count();
    let threads_queued = thread_count();
    let mut sum = 0u64;
    for r in &rs {
        sum = sum.wrapping_add(r.get().unwrap());
    }
    (fds, fds_queued, fd_count(), threads, threads_queued, sum)
}

#[test]
fn many_apply_async_no_fd_or_thread_growth() {
    multiproc::init();
    let t = Instant::now();
    let (fds, fds_queued, fds_after, threads, threads_queued, sum) =
        multiproc::spawn(apply_async_100k, ())
            .unwrap()
            .join()
            .unwrap();
    assert_eq!(fds_queued, fds);
    assert_eq!(fds_after, fds);
    assert_eq!(threads_queued, threads);
    let want: u64 = (0..100_000u64).map(|i| i * i).fold(0, u64::wrapping_add);
    assert_eq!(sum, want);
    eprintln!("100,000 apply_async: {:?}", t.elapsed());
}

#[test]
fn terminate_with_pending_work_is_prompt_and_leaves_nothing() {
    multiproc::init();
    let pool = Pool::new(2).unwrap();
    let pids = both_worker_pids(&pool);
    let pending: Vec<_> = (0..10_000).map(|_| pool.apply_async(nap, 50)).collect();
    let t = Instant::now();
    pool.terminate().unwrap();
    // Without running the pending tasks (250 s of work for two workers); the bound leaves
    // room for a loaded machine.
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert!(matches!(pending[9_999].get(), Err(Error::Closed)));
    assert!(pending.iter().all(|r| r.ready()));
    for p in pids {
        assert!(gone(p), "worker {p} left behind");
    }
    assert!(matches!(pool.apply(square, 1), Err(Error::Closed)));
}

#[test]
fn drop_terminates_and_reaps() {
    multiproc::init();
    let pool = Pool::new(2).unwrap();
    let pids = both_worker_pids(&pool);
    let r = pool.apply_async(nap, 60_000);
    let t = Instant::now();
    drop(pool);
    // Without waiting for the 60 s task (the bound leaves room for a loaded machine).
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert!(matches!(r.get(), Err(Error::Closed)));
    for p in pids {
        assert!(gone(p), "worker {p} left behind");
    }
}

#[test]
fn close_and_join() {
    multiproc::init();
    let pool = Pool::new(2).unwrap();
    assert!(matches!(pool.join(), Err(Error::InvalidOperation(_))));
    let r = pool.map_async(nap, vec![50, 50, 50]);
    let it = pool.imap(square, 0..5);
    pool.close();
    assert!(matches!(pool.apply(square, 1), Err(Error::Closed)));
    assert!(matches!(pool.map(square, 0..3), Err(Error::Closed)));
    assert!(matches!(
        pool.map_async(square, 0..3).get(),
        Err(Error::Closed)
    ));
    assert!(matches!(
        pool.imap(square, 0..3).next(),
        Some(Err(Error::Closed))
    ));
    // Work queued (or iterators made) before close still completes.
    assert_eq!(
        it.collect::<multiproc::Result<Vec<_>>>().unwrap(),
        vec![0, 1, 4, 9, 16]
    );
    pool.join().unwrap();
    assert_eq!(r.get().unwrap(), vec![50, 50, 50]);
}

#[test]
fn handles_travel_in_task_arguments() {
    multiproc::init();
    let pool = Pool::new(2).unwrap();
    fn send_back((conn, x): (multiproc::Connection<u64>, u64)) -> u64 {
        conn.send(&(x * 2)).unwrap();
        x
    }
    let (a, b) = multiproc::pipe::<u64>().unwrap();
    assert_eq!(pool.apply(send_back, (b, 21)).unwrap(), 21);
    assert_eq!(a.recv().unwrap(), 42);
}

#[test]
fn handles_travel_in_map_arguments_and_results() {
    multiproc::init();
    let pool = Pool::new(2).unwrap();
    // Each task gets its own pipe end and returns a fresh one: handles of several tasks in
    // one chunk must each find their own descriptors, both ways.
    fn relay((conn, x): (multiproc::Connection<u64>, u64)) -> (multiproc::Connection<u64>, u64) {
        conn.send(&(x * 3)).unwrap();
        let (mine, theirs) = multiproc::pipe::<u64>().unwrap();
        mine.send(&(x + 100)).unwrap();
        (theirs, x)
    }
    let mut ours = Vec::new();
    let mut args = Vec::new();
    for x in 0..10u64 {
        let (a, b) = multiproc::pipe::<u64>().unwrap();
        ours.push(a);
        args.push((b, x));
    }
    let back = pool.map_chunked(relay, args, 4).unwrap();
    for (x, (a, (conn, y))) in ours.iter().zip(back).enumerate() {
        let x = x as u64;
        assert_eq!(y, x);
        assert_eq!(a.recv().unwrap(), x * 3);
        assert_eq!(conn.recv().unwrap(), x + 100);
    }
}

#[test]
fn spawn_start_method_pool() {
    multiproc::init();
    let pool = Pool::builder()
        .processes(2)
        .start_method(StartMethod::Spawn)
        .build()
        .unwrap();
    assert_eq!(pool.map(square, 0..100).unwrap()[10], 100);
    assert_eq!(pool.processes(), 2);
    assert_eq!(Pool::new(0).unwrap().processes(), multiproc::cpu_count());
}

#[test]
fn imap_over_endless_input_ends_when_pool_terminates() {
    multiproc::init();
    let pool = Pool::new(2).unwrap();
    let mut it = pool.imap(square, 0..);
    assert_eq!(it.next().unwrap().unwrap(), 0);
    pool.terminate().unwrap();
    // Whatever was in flight fails or was done; then the iterator ends instead of reading
    // its endless input for ever.
    let rest: Vec<_> = it.by_ref().take(100_000).collect();
    assert!(rest.len() < 1000, "{}", rest.len());
    assert!(rest.iter().any(|r| matches!(r, Err(Error::Closed))));
    assert!(it.next().is_none());
}

#[test]
fn fork_start_method_pool_detects_death() {
    multiproc::init();
    // SAFETY: the other threads of this test binary hold no lock the workers need.
    unsafe { multiproc::allow_fork_with_threads(true) };
    let pool = Pool::builder()
        .processes(2)
        .start_method(StartMethod::Fork)
        .build()
        .unwrap();
    // Forked workers share descriptors with each other, so a death is seen through the
    // worker's pidfd rather than the end of its socket.
    let res: Vec<_> = pool.imap(die_on_seven, 0..12).collect();
    let failed: Vec<usize> = (0..12).filter(|&i| res[i].is_err()).collect();
    assert_eq!(failed, vec![7]);
    assert_eq!(pool.map(square, 0..10).unwrap()[9], 81);
}

#[test]
fn panicking_callback_does_not_break_the_pool() {
    multiproc::init();
    let pool = Pool::new(1).unwrap();
    let r = pool.apply_async(square, 3);
    r.on_done(|_| panic!("callback bug"));
    assert_eq!(r.get().unwrap(), 9);
    assert_eq!(pool.apply(square, 4).unwrap(), 16);
    let late = pool.apply_async(square, 5);
    late.wait();
    late.on_done(|_| panic!("late callback bug"));
    assert_eq!(late.get().unwrap(), 25);
    assert_eq!(pool.map(square, 0..100).unwrap()[10], 100);
}

#[test]
fn pool_and_results_are_shareable_between_threads() {
    fn send_sync<T: Send + Sync>(_: &T) {}
    multiproc::init();
    let pool = Pool::new(2).unwrap();
    send_sync(&pool);
    let r = pool.apply_async(square, 6);
    send_sync(&r);
    let sums: Vec<u64> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4u64)
            .map(|t| {
                let pool = &pool;
                s.spawn(move || {
                    pool.map(square, t * 100..(t + 1) * 100)
                        .unwrap()
                        .iter()
                        .sum()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let want: Vec<u64> = (0..4u64)
        .map(|t| (t * 100..(t + 1) * 100).map(|x| x * x).sum())
        .collect();
    assert_eq!(sums, want);
    let r2 = r.clone();
    assert_eq!(
        std::thread::spawn(move || r2.get().unwrap())
            .join()
            .unwrap(),
        36
    );
}

/// Dies (SIGKILL) on every multiple of 97, panics on every multiple of 89.
fn faulty(x: u64) -> u64 {
    if x > 0 && x.is_multiple_of(97) {
        kill_self(rustix::process::Signal::KILL);
    }
    if x > 0 && x.is_multiple_of(89) {
        panic!("unlucky {x}");
    }
    x * 2
}

#[test]
#[ignore = "soak: minutes of repeated faults; run with --ignored"]
fn soak_repeated_faults() {
    multiproc::init();
    let pool = Pool::builder()
        .processes(3)
        .maxtasksperchild(500)
        .build()
        .unwrap();
    for round in 0..200u64 {
        let n = 1000 + round;
        let res: Vec<_> = pool
            .imap_unordered_chunked(faulty, 0..n, 1 + (round % 7) as usize)
            .collect();
        assert_eq!(res.len() as u64, n);
        let ok = res.iter().filter(|r| r.is_ok()).count() as u64;
        // Exactly these fail: every task of a chunk holding a multiple of 97 (its worker
        // died), and the multiples of 89 elsewhere (they panicked).
        let c = 1 + round % 7;
        let fails = (0..n)
            .filter(|&x| {
                let start = x / c * c;
                let dies = (start..(start + c).min(n)).any(|y| y > 0 && y % 97 == 0);
                dies || (x > 0 && x % 89 == 0)
            })
            .count() as u64;
        assert_eq!(ok, n - fails, "round {round}");
        assert_eq!(pool.apply(square, round).unwrap(), round * round);
    }
}

#[test]
fn initializer_that_exits_breaks_the_pool_cleanly() {
    multiproc::init();
    fn exits(code: i32) {
        std::process::exit(code);
    }
    match Pool::builder().processes(1).initializer(exits, 4).build() {
        Err(Error::WorkerDied {
            exitcode: Some(4), ..
        }) => {}
        other => panic!("{other:?}"),
    }
}

/// An initializer's return value counts as a Rust `main`'s: `Ok(())` lets the pool run, an
/// `Err` breaks it as a panic would (it used to be dropped, and the pool ran with workers
/// that were never set up).
#[test]
fn initializer_returning_err_breaks_the_pool() {
    multiproc::init();
    fn connect(url: String) -> Result<(), String> {
        if url.is_empty() {
            Err("no url".into())
        } else {
            Ok(())
        }
    }
    let pool = Pool::builder()
        .processes(1)
        .initializer(connect, "db://".to_string())
        .build()
        .unwrap();
    assert_eq!(pool.apply(square, 3).unwrap(), 9);
    drop(pool);
    match Pool::builder()
        .processes(1)
        .initializer(connect, String::new())
        .build()
    {
        Err(Error::BrokenPool { cause, .. }) => match *cause {
            Error::InvalidOperation(m) => assert!(m.contains("returned a failure"), "{m}"),
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
}

/// Refuses to be encoded when its number is a multiple of 3.
#[derive(Clone, Debug, serde::Deserialize)]
struct Picky(u32);

impl serde::Serialize for Picky {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0.is_multiple_of(3) {
            return Err(serde::ser::Error::custom("multiple of three"));
        }
        s.serialize_u32(self.0)
    }
}

fn unpick(p: Picky) -> u32 {
    p.0
}

#[test]
fn map_argument_encode_failure_fails_that_task() {
    multiproc::init();
    let pool = Pool::new(2).unwrap();
    let ok: Vec<Picky> = [1, 2, 4, 5, 7, 8].into_iter().map(Picky).collect();
    assert_eq!(pool.map(unpick, ok).unwrap(), vec![1, 2, 4, 5, 7, 8]);
    let bad: Vec<Picky> = (1..1000).map(Picky).collect();
    match pool.map_chunked(unpick, bad, 50) {
        Err(Error::Codec(m)) => assert!(m.message().contains("encode"), "{m}"),
        other => panic!("{other:?}"),
    }
    // Per task, through imap: only the multiples of three fail.
    let res: Vec<_> = pool.imap_chunked(unpick, (1..100).map(Picky), 7).collect();
    for (i, r) in res.iter().enumerate() {
        assert_eq!(r.is_err(), (i + 1) % 3 == 0, "{i}: {r:?}");
    }
    assert_eq!(pool.apply(square, 3).unwrap(), 9);
}

// --- apply from the calling thread -----------------------------------------------------
// A lone `apply` borrows an idle worker and runs the task from the calling thread (no
// hand-off to a handler thread); these check that it mixes with queued work and faults.

#[test]
fn apply_from_many_threads_at_once() {
    multiproc::init();
    let pool = std::sync::Arc::new(Pool::new(2).unwrap());
    let threads: Vec<_> = (0..6u64)
        .map(|t| {
            let pool = pool.clone();
            std::thread::spawn(move || {
                for i in 0..300 {
                    let x = t * 1000 + i;
                    assert_eq!(pool.apply(square, x).unwrap(), x * x);
                    if i % 50 == 0 {
                        // Queued work in between.
                        let r = pool.map(square, 0..20).unwrap();
                        assert_eq!(r[19], 361);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

/// The only worker is lent to an `apply` (run from the caller's thread) when a map comes:
/// its handler waits for the worker to come back, is woken when it does, and runs the map.
#[test]
fn work_that_comes_while_the_only_worker_is_lent_runs_when_it_is_back() {
    multiproc::init();
    let pool = Pool::new(1).unwrap();
    for round in 0..3u64 {
        // The handler is idle (its worker parked) once the pool has answered.
        assert_eq!(pool.apply(square, round).unwrap(), round * round);
        let started = multiproc::Event::new().unwrap();
        let go = multiproc::Event::new().unwrap();
        std::thread::scope(|s| {
            let lent = s.spawn(|| pool.apply(hold, (started.clone(), go.clone())));
            assert!(started.wait_timeout(Duration::from_secs(60)).unwrap());
            let m = pool.map_async(square, 0..100);
            assert!(!m.ready(), "the only worker is busy with the apply");
            go.set();
            lent.join().unwrap().unwrap();
            let got = m.get_timeout(Duration::from_secs(60)).unwrap();
            assert_eq!(got, (0..100).map(|x| x * x).collect::<Vec<u64>>());
        });
    }
}

#[test]
fn terminate_during_an_apply_is_prompt() {
    multiproc::init();
    let pool = std::sync::Arc::new(Pool::new(1).unwrap());
    assert_eq!(pool.apply(square, 3).unwrap(), 9);
    let p = pool.clone();
    fn start_then_nap((started, ms): (multiproc::Event, u64)) -> u64 {
        started.set();
        nap(ms)
    }
    let started = multiproc::Event::new().unwrap();
    let s = started.clone();
    let running = std::thread::spawn(move || p.apply(start_then_nap, (s, 20_000)));
    started.wait().unwrap(); // the task runs in the worker
    let t = Instant::now();
    pool.terminate().unwrap();
    assert!(matches!(running.join().unwrap(), Err(Error::Closed)));
    // Without waiting for the task's 20 s (the bound leaves room for a loaded machine).
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert!(matches!(pool.apply(square, 1), Err(Error::Closed)));
}

#[test]
fn a_worker_killed_under_apply_is_replaced() {
    multiproc::init();
    let pool = Pool::new(1).unwrap();
    let first = pool.apply(pid, 0).unwrap();
    match pool.apply(|_: ()| kill_self(rustix::process::Signal::KILL), ()) {
        Err(Error::WorkerDied { pid, signal, .. }) => {
            assert_eq!(pid, first);
            assert_eq!(signal, Some(9));
        }
        other => panic!("expected WorkerDied, got {other:?}"),
    }
    assert!(gone(first), "the dead worker was not reaped");
    let second = pool.apply(pid, 0).unwrap();
    assert_ne!(second, first);
    assert_eq!(pool.apply(square, 5).unwrap(), 25);
}

/// Panics while being encoded when its number is 5.
#[derive(Clone, Debug, serde::Deserialize)]
struct Explosive(u32);

impl serde::Serialize for Explosive {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0 == 5 {
            panic!("Explosive(5) cannot be encoded");
        }
        s.serialize_u32(self.0)
    }
}

fn defuse(e: Explosive) -> u32 {
    e.0
}

#[test]
fn map_argument_encode_failure_leaves_the_pool_usable() {
    multiproc::init();
    let pool = Pool::new(2).unwrap();
    // Every argument refuses: the call fails, the pool stays usable.
    let bad: Vec<Picky> = (1..4).map(|i| Picky(i * 3)).collect();
    assert!(matches!(pool.map(unpick, bad), Err(Error::Codec(_))));
    assert_eq!(pool.map(square, 0..10).unwrap()[3], 9);
    let bad: Vec<Picky> = (1..1000).map(Picky).collect();
    assert!(matches!(
        pool.map_async(unpick, bad).get(),
        Err(Error::Codec(_))
    ));
    assert_eq!(pool.map(square, 0..10).unwrap()[4], 16);
    // An argument whose encoding panics fails that call only, with the panic's message.
    let boom: Vec<Explosive> = (0..20).map(Explosive).collect();
    match pool.map_chunked(defuse, boom, 3) {
        Err(Error::Codec(m)) => assert!(m.message().contains("Explosive(5)"), "{m}"),
        other => panic!("{other:?}"),
    }
    let res: Vec<_> = pool.imap(defuse, (0..8).map(Explosive)).collect();
    for (i, r) in res.iter().enumerate() {
        assert_eq!(r.is_err(), i == 5, "{i}: {r:?}");
    }
    assert!(pool.apply(defuse, Explosive(5)).is_err());
    assert!(pool.apply_async(defuse, Explosive(5)).get().is_err());
    assert_eq!(
        pool.map(square, 0..10).unwrap(),
        (0..10).map(square).collect::<Vec<_>>()
    );
}

#[test]
fn imap_over_a_panicking_input_yields_what_came_before_then_the_error() {
    multiproc::init();
    let pool = Pool::new(2).unwrap();
    let input = (0..10u64).map(|x| match x {
        6 => panic!("input broke at {x}"),
        x => x,
    });
    let res: Vec<Result<u64, Error>> = pool.imap(square, input).collect();
    assert_eq!(res.len(), 7, "{res:?}");
    for (i, r) in res[..6].iter().enumerate() {
        assert_eq!(r.as_ref().ok(), Some(&(i as u64 * i as u64)), "{i}: {r:?}");
    }
    match &res[6] {
        Err(Error::TaskPanicked { message, .. }) => {
            assert!(message.contains("input broke at 6"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    // Chunked and unordered: the same results and one error.
    let input = (0..10u64).map(|x| if x == 6 { panic!("again") } else { x });
    let mut res: Vec<_> = pool.imap_unordered_chunked(square, input, 4).collect();
    assert_eq!(res.iter().filter(|r| r.is_err()).count(), 1, "{res:?}");
    res.retain(|r| r.is_ok());
    let mut got: Vec<u64> = res.into_iter().map(|r| r.unwrap()).collect();
    got.sort();
    assert_eq!(got, vec![0, 1, 4, 9, 16, 25]);
    assert_eq!(pool.apply(square, 3).unwrap(), 9);
}

#[test]
fn invalid_settings_are_refused_not_changed() {
    multiproc::init();
    for b in [
        Pool::builder().processes(1).maxtasksperchild(0),
        Pool::builder().processes(1).task_timeout(Duration::ZERO),
    ] {
        match b.build() {
            Err(Error::InvalidOperation(m)) => assert!(!m.is_empty()),
            other => panic!("{other:?}"),
        }
    }
    let pool = Pool::new(1).unwrap();
    assert!(matches!(
        pool.map_chunked(square, 0..4, 0),
        Err(Error::InvalidOperation(_))
    ));
    let mut it = pool.imap_chunked(square, 0..4, 0);
    assert!(matches!(it.next(), Some(Err(Error::InvalidOperation(_)))));
    assert!(it.next().is_none());
    assert!(matches!(
        pool.imap_unordered_chunked(square, 0..4, 0).next(),
        Some(Err(Error::InvalidOperation(_)))
    ));
    assert_eq!(pool.map_chunked(square, 0..4, 1).unwrap(), vec![0, 1, 4, 9]);
}

/// Counts its run in `runs[i]`; task `die_at` kills its worker on its first run.
fn counted_dying_at((i, die_at, runs): (usize, usize, multiproc::Array<u32>)) -> usize {
    let n = {
        let mut g = runs.lock().unwrap();
        g[i] += 1;
        g[i]
    };
    if i == die_at && n == 1 {
        kill_self(rustix::process::Signal::KILL);
    }
    i
}

/// Holds the pool's only worker until `go` is set (after saying it started).
fn hold((started, go): (multiproc::Event, multiproc::Event)) {
    started.set();
    assert!(go.wait_timeout(Duration::from_secs(60)).unwrap());
}

/// Issue 11.7: 40 `apply_async` jobs sent to one worker together; job `die_at` kills it.
/// It alone fails with `WorkerDied` (and ran once), unless retries were asked for; the jobs
/// behind it run once each, on the replacement.
fn killed_with_jobs_in_flight(
    retries: Option<u32>,
    die_at: usize,
) -> (Vec<multiproc::Result<usize>>, Vec<u32>) {
    let mut b = Pool::builder().processes(1);
    if let Some(n) = retries {
        b = b.retries(n);
    }
    let pool = b.build().unwrap();
    let (started, go) = (
        multiproc::Event::new().unwrap(),
        multiproc::Event::new().unwrap(),
    );
    let held = pool.apply_async(hold, (started.clone(), go.clone()));
    assert!(started.wait_timeout(Duration::from_secs(30)).unwrap());
    // Queued while the worker is busy, so that they go out to it in batches.
    let runs = multiproc::Array::<u32>::new(40).unwrap();
    let rs: Vec<_> = (0..40)
        .map(|i| pool.apply_async(counted_dying_at, (i, die_at, runs.clone())))
        .collect();
    go.set();
    held.get().unwrap();
    let out = rs.iter().map(|r| r.get()).collect();
    (out, runs.to_vec())
}

#[test]
fn worker_killed_with_several_jobs_in_flight_fails_only_the_running_one() {
    multiproc::init();
    let (out, runs) = killed_with_jobs_in_flight(None, 0);
    assert!(
        matches!(
            out[0],
            Err(Error::WorkerDied {
                signal: Some(9),
                ..
            })
        ),
        "{:?}",
        out[0]
    );
    for (i, r) in out.iter().enumerate().skip(1) {
        assert_eq!(*r.as_ref().unwrap(), i);
    }
    assert_eq!(runs, vec![1; 40], "every job ran exactly once");
}

/// `apply_async` jobs sent to one worker together; job 3 kills it, after the jobs before
/// it finished quickly. Only job 3 fails: the replies of the finished ones were handed over
/// before it started (a worker used to hold them up to 100 µs to send them together, and
/// they died with it as `WorkerDied`, found by `soak_repeated_faults`).
#[test]
fn worker_killed_after_finishing_jobs_of_its_batch_loses_none_of_their_results() {
    multiproc::init();
    const DIE_AT: usize = 3;
    // Three rounds: how the jobs fall into batches depends on when the handler looks.
    for round in 0..3 {
        let (out, runs) = killed_with_jobs_in_flight(None, DIE_AT);
        for (i, r) in out.into_iter().enumerate() {
            match r {
                Err(Error::WorkerDied {
                    signal: Some(9), ..
                }) if i == DIE_AT => {}
                Ok(v) if i != DIE_AT => assert_eq!(v, i),
                other => panic!("round {round}, job {i}: {other:?}"),
            }
        }
        assert_eq!(runs, vec![1; 40], "every job ran exactly once");
    }
}

#[test]
fn retries_run_the_job_of_a_dead_worker_again() {
    multiproc::init();
    let (out, runs) = killed_with_jobs_in_flight(Some(2), 0);
    for (i, r) in out.iter().enumerate() {
        assert_eq!(*r.as_ref().unwrap(), i);
    }
    let mut expected = vec![1; 40];
    expected[0] = 2;
    assert_eq!(runs, expected);
}

#[cfg(feature = "progress")]
#[test]
fn map_with_progress_gives_what_map_gives() {
    multiproc::init();
    let pool = Pool::new(2).unwrap();
    let items: Vec<u64> = (0..500).collect();
    let with_bar = pool
        .map_with_progress(|x: u64| x * x + 1, items.clone())
        .unwrap();
    assert_eq!(with_bar, pool.map(|x: u64| x * x + 1, items).unwrap());
    // A task error comes through as from map.
    let r = pool.map_with_progress(|x: u32| assert!(x != 7, "seven"), 0..10u32);
    assert!(matches!(r, Err(Error::TaskPanicked { .. })));
}

/// Reverses its argument: large arguments and large results.
fn reversed(mut v: Vec<u8>) -> Vec<u8> {
    v.reverse();
    v
}

#[test]
fn large_arguments_and_results_travel_whole_without_descriptor_growth() {
    multiproc::init();
    let pool = Pool::new(2).unwrap();
    // Below and above the size where a worker's messages leave its ring for a sealed
    // memory file.
    let items: Vec<Vec<u8>> = [0usize, 100, 40 << 10, 1 << 20, (6 << 20) + 5]
        .iter()
        .enumerate()
        .map(|(k, &n)| (0..n).map(|i| (i * 7 + k) as u8).collect())
        .collect();
    let want: Vec<Vec<u8>> = items
        .iter()
        .map(|v| v.iter().rev().copied().collect())
        .collect();
    assert!(pool.map(reversed, items.clone()).unwrap() == want);
    let before = fd_count();
    for _ in 0..10 {
        assert!(pool.map(reversed, items.clone()).unwrap() == want);
        let r = pool.apply_async(reversed, items[4].clone());
        assert!(r.get().unwrap() == want[4]);
    }
    // Up to the spare message files this process keeps (bounded), not one per task.
    assert!(
        fd_count() <= before + common::SPARE_MESSAGE_FILES,
        "descriptors grow with large tasks: {before} then {}",
        fd_count()
    );
}

/// In the worker: the length of `v`, and whether it is exactly `prime_pattern(len, k)`.
fn is_pattern((v, k): (Vec<u8>, usize)) -> (usize, bool) {
    (v.len(), v == common::prime_pattern(v.len(), k))
}

/// [`is_pattern`] for floats made from the pattern's bytes.
fn is_float_pattern((v, k): (Vec<f64>, usize)) -> (usize, bool) {
    (v.len(), v == float_pattern(v.len(), k))
}

fn float_pattern(n: usize, k: usize) -> Vec<f64> {
    common::prime_pattern(n, k)
        .iter()
        .map(|&b| f64::from(b) * 0.5 - 7.25)
        .collect()
}

#[test]
fn large_arguments_around_the_file_thresholds_arrive_bit_exact() {
    multiproc::init();
    let pool = Pool::new(2).unwrap();
    const MIB: usize = 1 << 20;
    const PAGE: usize = 4096;
    // A batch frame holding one task's `(Vec<u8>, usize)` of `n` bytes is `n + 74` bytes
    // long: frames just below, at and above the 2 MiB past which a frame travels in a
    // memory file, and around the 128 MiB past which that file is sealed, not lent.
    let sizes = [
        2 * MIB - 75,
        2 * MIB - 74,
        2 * MIB - 73,
        2 * MIB + PAGE,
        128 * MIB - 74 - PAGE,
        128 * MIB - 74,
        128 * MIB + PAGE,
    ];
    for (k, &n) in sizes.iter().enumerate() {
        let items = vec![
            (common::prime_pattern(n, k), k),
            (common::prime_pattern(100, k + 1), k + 1),
        ];
        let want = vec![(n, true), (100, true)];
        // One task per job (each frame holds one large argument), then both in one job.
        assert_eq!(
            pool.map_chunked(is_pattern, items.clone(), 1).unwrap(),
            want,
            "{n}"
        );
        assert_eq!(pool.map_chunked(is_pattern, items, 2).unwrap(), want, "{n}");
    }
    // Several large arguments in one frame, with small ones between them, and floats.
    let items: Vec<_> = (0..6)
        .map(|k| (common::prime_pattern([3 * MIB, 10][k % 2], k), k))
        .collect();
    let want: Vec<_> = items.iter().map(|(v, _)| (v.len(), true)).collect();
    assert_eq!(pool.map_chunked(is_pattern, items, 3).unwrap(), want);
    let floats = vec![
        (float_pattern(MIB / 8, 1), 1),
        (float_pattern(16 * MIB + 1, 2), 2),
    ];
    let r = pool.map(is_float_pattern, floats).unwrap();
    assert_eq!(r, vec![(MIB / 8, true), (16 * MIB + 1, true)]);
}

/// A result of 5 MiB (`x % 3 == 1`) or 10 bytes of `x`, whose encoding fails after all its
/// bytes when `x % 7 == 6`.
#[derive(Debug, PartialEq, serde::Deserialize)]
struct BigOrSmall(u32, serde_bytes::ByteBuf);

impl serde::Serialize for BigOrSmall {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTupleStruct;
        let mut t = s.serialize_tuple_struct("BigOrSmall", 2)?;
        t.serialize_field(&self.0)?;
        t.serialize_field(&self.1)?;
        if self.0 % 7 == 6 {
            return Err(serde::ser::Error::custom("refused after its bytes"));
        }
        t.end()
    }
}

fn big_or_small(x: u32) -> BigOrSmall {
    let len = if x % 3 == 1 { 5 << 20 } else { 10 };
    BigOrSmall(x, serde_bytes::ByteBuf::from(vec![x as u8; len]))
}

fn big_with_event(e: multiproc::Event) -> (Vec<u8>, multiproc::Event) {
    (vec![7; 5 << 20], e)
}

#[test]
fn large_results_encoded_into_their_file_keep_their_frame_whole() {
    multiproc::init();
    let pool = Pool::new(2).unwrap();
    let shm_before = common::shm_files();
    let check = |pool: &Pool| {
        // Jobs of 10 tasks: small results before and after a large one in one frame, and
        // results that fail after 5 MiB were written (what came before them survives).
        let got: Vec<_> = pool.imap_chunked(big_or_small, 0..30u32, 10).collect();
        for (x, r) in (0u32..).zip(got) {
            if x % 7 == 6 {
                match r {
                    Err(Error::Codec(m)) => assert!(m.message().contains("refused"), "{m}"),
                    other => panic!("{x}: {other:?}"),
                }
            } else {
                let len = if x % 3 == 1 { 5 << 20 } else { 10 };
                let want = BigOrSmall(x, serde_bytes::ByteBuf::from(vec![x as u8; len]));
                assert!(r.unwrap() == want, "result {x} changed");
            }
        }
        // A large result holding a handle: the handle travels with the file.
        let e = multiproc::Event::new().unwrap();
        let (v, back) = pool.apply(big_with_event, e.clone()).unwrap();
        assert!(v.len() == 5 << 20 && v.iter().all(|&b| b == 7));
        back.set();
        assert!(e.is_set());
    };
    check(&pool);
    let fds = fd_count();
    for _ in 0..5 {
        check(&pool);
    }
    // Up to the spare message files this process keeps (bounded), not one per result.
    assert!(
        fd_count() <= fds + common::SPARE_MESSAGE_FILES,
        "descriptors grow with large results: {fds} then {}",
        fd_count()
    );
    assert!(common::new_multiproc_files(&shm_before).is_empty());
}

/// A reply whose bytes travel each of a pipe's three ways, by `x`: a sealed memory file on
/// the socket (3 MiB), the large-message area (100 KiB), or a ring record (16 bytes).
/// With the worker's pid.
fn sized_reply(x: u64) -> (u64, u32, Vec<u8>) {
    let len = match x % 4 {
        0 => 3 << 20,
        1 => 100 << 10,
        _ => 16,
    };
    (x, std::process::id(), vec![x as u8; len])
}

/// Runs `tasks` tasks on a pool of three while another thread SIGKILLs random workers at
/// random moments, `kills` times: every task ends with its result or `WorkerDied`, within
/// a minute (no hang), the pool goes on working, and no killed worker is left unreaped.
fn random_worker_kills(tasks: u64, kills: usize) {
    multiproc::init();
    let pool = Pool::new(3).unwrap();
    // Every worker is up (a handshake: each answered) before the killing starts.
    assert_eq!(pool.map(square, 0..6u64).unwrap().len(), 6);
    let mut rng = common::Rng::new();
    let started = AtomicU32::new(0);
    let up = std::sync::Mutex::new(HashSet::new());
    let mut killed = Vec::new();
    let mut died = 0;
    std::thread::scope(|s| {
        let killer = s.spawn(|| {
            let mut killed = Vec::new();
            while killed.len() < kills {
                // Only while tasks run: after the first reply, and until the last.
                let n = started.load(Ordering::SeqCst);
                if n as u64 >= tasks {
                    break;
                }
                if n == 0 {
                    std::thread::yield_now();
                    continue;
                }
                std::thread::sleep(Duration::from_micros(rng.below(3000)));
                // Workers that are up (have answered): a worker killed while it starts is
                // another case (the pool gives up after three in a row in one slot).
                let up = up.lock().unwrap();
                let children: Vec<u32> = common::children_of_me()
                    .into_iter()
                    .filter(|p| up.contains(p))
                    .collect();
                drop(up);
                if children.is_empty() {
                    continue;
                }
                let victim = children[rng.below(children.len() as u64) as usize];
                if rustix::process::kill_process(
                    rustix::process::Pid::from_raw(victim as i32).unwrap(),
                    rustix::process::Signal::KILL,
                )
                .is_ok()
                {
                    killed.push(victim);
                }
            }
            killed
        });
        // The killer stops when the replies are in, or when this thread panics.
        struct Done<'a>(&'a AtomicU32);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.store(u32::MAX, Ordering::SeqCst);
            }
        }
        let done = Done(&started);
        let pending: Vec<_> = (0..tasks)
            .map(|x| pool.apply_async(sized_reply, x))
            .collect();
        for (x, r) in pending.iter().enumerate() {
            match r.get_timeout(Duration::from_secs(60)) {
                Ok((y, pid, bytes)) => {
                    up.lock().unwrap().insert(pid);
                    assert_eq!(y, x as u64);
                    assert_eq!(bytes, sized_reply(y).2, "task {x}'s reply");
                }
                Err(Error::WorkerDied {
                    signal: Some(9), ..
                }) => died += 1,
                Err(e) => panic!("task {x}: {e:?}"),
            }
            started.fetch_add(1, Ordering::SeqCst);
        }
        drop(done);
        killed = killer.join().unwrap();
    });
    eprintln!(
        "{} kills, {died} of {tasks} tasks died with their worker",
        killed.len()
    );
    assert!(
        !killed.is_empty(),
        "no worker was killed: the test tested nothing"
    );
    // Still usable, with all its workers.
    assert_eq!(
        pool.map(square, 0..30u64).unwrap(),
        (0..30u64).map(square).collect::<Vec<_>>()
    );
    drop(pool);
    for p in killed {
        assert!(gone(p), "killed worker {p} left unreaped");
    }
}

#[test]
fn workers_killed_at_random_moments_cost_only_their_tasks() {
    random_worker_kills(300, 12);
}

/// The soak version of the test above (see README: Soak tests).
#[test]
#[ignore]
fn soak_workers_killed_at_random_moments() {
    for _ in 0..20 {
        random_worker_kills(3000, 200);
    }
}
