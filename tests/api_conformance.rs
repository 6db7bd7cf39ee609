//! The public API contract (`API.md`), used exactly as it is written there.
//!
//! Each test takes one section of the contract and writes its calls the way the contract
//! does: the same names and argument shapes, `?` where the contract has it, and results bound
//! to the types the contract states (`let ok: bool = ev.wait_timeout(d)?;`). So a change of a
//! public signature that would break code written from the contract breaks this file. Each
//! test also checks what the calls do, across processes where the contract says "any
//! process"; processes meet by handshakes (events, queues, joins), never by sleeping.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use multiproc::connection::{Client, Listener};
use multiproc::manager::{DictProxy, ListProxy, NamespaceProxy};
use multiproc::shared_memory::SharedMemory;
use multiproc::{
    Array, AsyncResult, Barrier, BoundedSemaphore, Condition, Connection, Error, Event,
    JoinableQueue, Lock, Manager, Pool, Process, ProcessInfo, Queue, RLock, RawArray, RawValue,
    Result, Semaphore, SimpleQueue, StartMethod, Value,
};

/// A bound for what must happen (generous: the machine may be loaded).
const LONG: Duration = Duration::from_secs(30);
/// How long to wait for what must not happen.
const SHORT: Duration = Duration::from_millis(50);

/// The variants the contract names, matched by their contract names and fields.
fn kind(e: &Error) -> &'static str {
    match e {
        Error::Io(_) => "Io",
        Error::Codec(_) => "Codec",
        Error::Eof => "Eof",
        Error::Timeout => "Timeout",
        Error::Empty => "Empty",
        Error::Full => "Full",
        Error::Closed => "Closed",
        Error::TaskPanicked { message: _, .. } => "TaskPanicked",
        Error::WorkerDied {
            pid: _,
            exitcode: _,
            signal: _,
            ..
        } => "WorkerDied",
        Error::AuthenticationFailed => "AuthenticationFailed",
        Error::AlreadyStarted => "AlreadyStarted",
        Error::NotStarted => "NotStarted",
        Error::OwnerDied => "OwnerDied",
        _ => "other",
    }
}

/// The kind of a result's error ("ok" if none).
fn kind_of<T>(r: &Result<T>) -> &'static str {
    r.as_ref().err().map_or("ok", kind)
}

// --- Program set-up ------------------------------------------------------------------------

fn describe_me(_: ()) -> (String, u32, Option<u32>) {
    let me = multiproc::current_process();
    let parent = multiproc::parent_process();
    (me.name().to_string(), me.pid(), parent.map(|p| p.pid()))
}

fn wait_for_go(go: Event) -> Result<()> {
    go.wait()?;
    Ok(())
}

#[test]
fn setup_start_methods_and_free_functions() -> Result<()> {
    multiproc::init();
    multiproc::set_start_method(StartMethod::Spawn)?;
    let method: StartMethod = multiproc::get_start_method();
    let copy = method; // Copy
    assert_eq!(method, StartMethod::Spawn);
    assert_eq!(copy, method);
    assert_ne!(StartMethod::Fork, StartMethod::ForkServer);
    assert_eq!(format!("{method:?}"), "Spawn");

    let n: usize = multiproc::cpu_count();
    assert!(n >= 1);
    let me: ProcessInfo = multiproc::current_process();
    let name: &str = me.name();
    assert_eq!(name, "MainProcess");
    let pid: u32 = me.pid();
    assert_eq!(pid, std::process::id());
    let parent: Option<ProcessInfo> = multiproc::parent_process();
    assert!(parent.is_none());
    let children: Vec<ProcessInfo> = multiproc::active_children();
    assert!(children.is_empty());

    // A child (started with the method set above) sees itself and its parent.
    let (child_name, child_pid, its_parent) = multiproc::spawn(describe_me, ())?.join()?;
    assert!(child_name.starts_with("Process-"), "{child_name}");
    assert_ne!(child_pid, pid);
    assert_eq!(its_parent, Some(pid));

    // A running child is listed by active_children, and no longer once joined.
    let go = Event::new()?;
    let mut p = Process::new(wait_for_go, go.clone());
    p.start()?;
    let listed: Vec<u32> = multiproc::active_children()
        .iter()
        .map(|c| c.pid())
        .collect();
    assert_eq!(listed, vec![p.pid().expect("started")]);
    go.set();
    p.join()?;
    assert!(multiproc::active_children().is_empty());
    Ok(())
}

// --- Process ------------------------------------------------------------------------------

fn print_cube(x: i64) {
    println!("{}", x * x * x);
}

fn signal_then_park(started: Event) {
    started.set();
    loop {
        std::thread::park();
    }
}

fn boom(_: ()) {
    panic!("boom");
}

#[test]
fn process_lifecycle() -> Result<()> {
    multiproc::init();
    let mut p = Process::new(print_cube, 3)
        .with_name("p1")
        .with_daemon(false);
    let before: Option<u32> = p.pid();
    assert_eq!(before, None);
    assert_eq!(kind_of(&p.join()), "NotStarted");
    p.start()?;
    assert_eq!(kind_of(&p.start()), "AlreadyStarted");
    let pid: Option<u32> = p.pid();
    assert!(pid.is_some());
    let name: &str = p.name();
    assert_eq!(name, "p1");
    p.join()?;
    let alive: bool = p.is_alive();
    assert!(!alive);
    let code: Option<i32> = p.exitcode();
    assert_eq!(code, Some(0));
    let ended: bool = p.join_timeout(Duration::ZERO)?;
    assert!(ended);
    assert!(Process::new(print_cube, 1).name().starts_with("Process-"));

    // Blocked on an event the parent holds back: alive, not ended; then it ends with 0.
    let go = Event::new()?;
    let mut w = Process::new(wait_for_go, go.clone());
    w.start()?;
    assert!(w.is_alive());
    assert_eq!(w.exitcode(), None);
    let ended: bool = w.join_timeout(SHORT)?;
    assert!(!ended);
    go.set();
    w.join()?;
    assert_eq!(w.exitcode(), Some(0));

    // terminate → -SIGTERM, kill → -SIGKILL.
    for (by_kill, code) in [(false, -15), (true, -9)] {
        let started = Event::new()?;
        let mut t = Process::new(signal_then_park, started.clone());
        t.start()?;
        assert!(started.wait_timeout(LONG)?);
        if by_kill {
            t.kill()?;
        } else {
            t.terminate()?;
        }
        t.join()?;
        assert_eq!(t.exitcode(), Some(code));
    }

    // A panicking target exits with 1.
    let mut b = Process::new(boom, ());
    b.start()?;
    b.join()?;
    assert_eq!(b.exitcode(), Some(1));
    Ok(())
}

fn no_answer(_: ()) -> u32 {
    panic!("no answer today")
}

#[test]
fn spawn_returns_the_value_or_the_panic() -> Result<()> {
    multiproc::init();
    let v: u32 = multiproc::spawn(|x: u32| x * 2, 21)?.join()?;
    assert_eq!(v, 42);
    match multiproc::spawn(no_answer, ())?.join() {
        Err(Error::TaskPanicked { message, .. }) => assert!(message.contains("no answer today")),
        other => panic!("expected TaskPanicked, got {other:?}"),
    }
    Ok(())
}

// --- Connections (Pipe) ------------------------------------------------------------------

fn shout(conn: Connection<String>) -> Result<()> {
    loop {
        match conn.recv() {
            Ok(s) => conn.send(&s.to_uppercase())?,
            Err(Error::Eof) => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

fn send_three(tx: Connection<u32>) -> Result<()> {
    for i in 0..3 {
        tx.send(&i)?;
    }
    Ok(())
}

#[test]
fn pipe_duplex_simplex_bytes_and_fd() -> Result<()> {
    multiproc::init();
    // Duplex: both ends send and receive; the child ends at Eof once we close our end.
    let (a, b) = multiproc::pipe::<String>()?;
    let mut p = Process::new(shout, b);
    p.start()?;
    a.send(&"hello".to_string())?;
    let ready: bool = a.poll(Some(LONG))?;
    assert!(ready);
    let got: String = a.recv()?;
    assert_eq!(got, "HELLO");
    a.close();
    p.join()?;
    assert_eq!(p.exitcode(), Some(0));

    // Bytes, poll, AsRawFd/AsFd (poll(2) sees a pending message), Eof after close.
    let (x, y) = multiproc::pipe::<u64>()?;
    x.send_bytes(&[1, 2, 3])?;
    let raw: Vec<u8> = y.recv_bytes()?;
    assert_eq!(raw, vec![1, 2, 3]);
    let nothing: bool = y.poll(Some(Duration::ZERO))?;
    assert!(!nothing);
    x.send(&9)?;
    let fd: RawFd = y.as_raw_fd();
    let bfd: BorrowedFd<'_> = y.as_fd();
    assert_eq!(bfd.as_raw_fd(), fd);
    let mut fds = [rustix::event::PollFd::new(
        &bfd,
        rustix::event::PollFlags::IN,
    )];
    let n = rustix::event::poll(&mut fds, None).map_err(std::io::Error::from)?;
    assert_eq!(n, 1);
    assert!(fds[0].revents().contains(rustix::event::PollFlags::IN));
    let nine: u64 = y.recv()?;
    assert_eq!(nine, 9);
    // Bytes that are not a T: Error::Codec, and the connection goes on.
    x.send_bytes(&[0xff])?;
    assert_eq!(kind_of(&y.recv()), "Codec");
    x.send(&10)?;
    assert_eq!(y.recv()?, 10);
    x.close();
    assert_eq!(kind_of(&y.recv()), "Eof");

    // Simplex: (receiving end, sending end), like Pipe(duplex=False).
    let (rx, tx) = multiproc::pipe_simplex::<u32>()?;
    assert!(rx.send(&1).is_err());
    let mut s = Process::new(send_three, tx);
    s.start()?;
    for i in 0..3 {
        let v: u32 = rx.recv()?;
        assert_eq!(v, i);
    }
    s.join()?;
    drop(s);
    assert_eq!(kind_of(&rx.recv()), "Eof");
    Ok(())
}

#[test]
fn listener_and_client_with_authkey() -> Result<()> {
    multiproc::init();
    let key: &[u8] = b"conformance-key";
    let listener = Listener::bind("127.0.0.1:0", Some(key))?;
    let address = listener.address().to_string();
    std::thread::scope(|s| -> Result<()> {
        let client = s.spawn(|| -> Result<u32> {
            let c: Connection<u32> = Client::connect(address.as_str(), Some(key))?;
            c.send(&5)?;
            c.recv()
        });
        let conn: Connection<u32> = listener.accept()?;
        let v: u32 = conn.recv()?;
        conn.send(&(v * 2))?;
        assert_eq!(client.join().expect("client thread")?, 10);

        // A wrong key is refused on both sides.
        let wrong = s.spawn(|| Client::connect::<u32>(address.as_str(), Some(b"wrong")));
        assert_eq!(kind_of(&listener.accept::<u32>()), "AuthenticationFailed");
        assert_eq!(
            kind_of(&wrong.join().expect("client thread")),
            "AuthenticationFailed"
        );
        Ok(())
    })
}

// --- Queues -------------------------------------------------------------------------------

fn produce((q, n): (Queue<u64>, u64)) -> Result<()> {
    for i in 0..n {
        q.put(i)?;
    }
    Ok(())
}

fn put_one((q, v): (SimpleQueue<i32>, i32)) -> Result<()> {
    q.put(v)
}

fn consume_until_zero(q: JoinableQueue<u32>) -> Result<()> {
    loop {
        let v = q.get()?;
        q.task_done()?;
        if v == 0 {
            return Ok(());
        }
    }
}

#[test]
fn queues() -> Result<()> {
    multiproc::init();
    let q = Queue::<u64>::new()?;
    let mut p = Process::new(produce, (q.clone(), 100));
    p.start()?;
    let mut got = Vec::new();
    for _ in 0..100 {
        let v: u64 = q.get()?;
        got.push(v);
    }
    assert_eq!(got, (0..100).collect::<Vec<u64>>());
    p.join()?;
    let size: usize = q.qsize();
    assert_eq!(size, 0);
    let empty: bool = q.empty();
    assert!(empty);
    assert_eq!(kind_of(&q.try_get()), "Empty");
    assert_eq!(kind_of(&q.get_timeout(SHORT)), "Empty");

    let b = Queue::<String>::bounded(2)?;
    b.put("a".to_string())?;
    b.put_timeout("b".to_string(), LONG)?;
    let full: bool = b.full();
    assert!(full);
    assert_eq!(b.qsize(), 2);
    assert_eq!(kind_of(&b.try_put("c".to_string())), "Full");
    assert_eq!(kind_of(&b.put_timeout("c".to_string(), SHORT)), "Full");
    let first: String = b.try_get()?;
    assert_eq!(first, "a");
    b.try_put("c".to_string())?;
    let second: String = b.get_timeout(LONG)?;
    assert_eq!(second, "b");
    let third: String = b.get()?;
    assert_eq!(third, "c");
    b.close();
    assert_eq!(kind_of(&b.put("d".to_string())), "Closed");

    let sq = SimpleQueue::<i32>::new()?;
    assert!(sq.empty());
    let mut p = Process::new(put_one, (sq.clone(), -5));
    p.start()?;
    let v: i32 = sq.get()?;
    assert_eq!(v, -5);
    p.join()?;
    assert!(sq.empty());

    // join() returns once the consumer has marked every item done.
    let jq = JoinableQueue::<u32>::new()?;
    for v in [3, 2, 1, 0] {
        jq.put(v)?;
    }
    let mut c = Process::new(consume_until_zero, jq.clone());
    c.start()?;
    jq.join()?;
    assert!(jq.empty());
    c.join()?;
    assert_eq!(c.exitcode(), Some(0));
    Ok(())
}

// --- Synchronization ----------------------------------------------------------------------

fn hold_until_told((lock, held, release): (Lock, Event, Event)) -> Result<()> {
    lock.acquire()?;
    held.set();
    release.wait()?;
    lock.release()
}

fn try_rlock(r: RLock) -> std::result::Result<bool, String> {
    r.try_acquire().map_err(|e| e.to_string())
}

fn exit_holding(lock: Lock) -> Result<()> {
    lock.acquire()
}

#[test]
fn locks() -> Result<()> {
    multiproc::init();
    let lock = Lock::new()?;
    lock.acquire()?;
    lock.release()?;
    {
        // Every fallible call returns multiproc::Result, the guard calls included.
        let g: Result<multiproc::LockGuard<'_>> = lock.lock();
        let _g = g?;
        let got: bool = lock.try_acquire()?;
        assert!(!got);
    }
    let got: bool = lock.try_acquire()?;
    assert!(got);
    lock.release()?;

    // Held by a child: a timed acquire fails, then succeeds once the child releases it.
    let (held, release) = (Event::new()?, Event::new()?);
    let mut p = Process::new(
        hold_until_told,
        (lock.clone(), held.clone(), release.clone()),
    );
    p.start()?;
    held.wait()?;
    let got: bool = lock.acquire_timeout(SHORT)?;
    assert!(!got);
    release.set();
    let got: bool = lock.acquire_timeout(LONG)?;
    assert!(got);
    lock.release()?;
    p.join()?;
    assert_eq!(p.exitcode(), Some(0));

    // A holder that dies holding it: the next acquirer learns OwnerDied.
    let orphaned = Lock::new()?;
    let mut p = Process::new(exit_holding, orphaned.clone());
    p.start()?;
    p.join()?;
    assert_eq!(kind_of(&orphaned.acquire()), "OwnerDied");
    orphaned.release()?;
    // lock() says so too, as a multiproc::Result (and leaves the lock free).
    let mut p = Process::new(exit_holding, orphaned.clone());
    p.start()?;
    p.join()?;
    assert_eq!(kind_of(&orphaned.lock()), "OwnerDied");
    let _g = orphaned.lock()?;

    // RLock: the same calls, re-entrant for its owner, refused to another process.
    let r = RLock::new()?;
    r.acquire()?;
    let again: bool = r.try_acquire()?;
    assert!(again);
    let third: bool = r.acquire_timeout(SHORT)?;
    assert!(third);
    {
        let _g = r.lock()?;
        assert_eq!(multiproc::spawn(try_rlock, r.clone())?.join()?, Ok(false));
    }
    r.release()?;
    r.release()?;
    r.release()?;
    assert_eq!(multiproc::spawn(try_rlock, r.clone())?.join()?, Ok(true));
    Ok(())
}

fn release_sem(s: Semaphore) -> Result<()> {
    s.release()
}

#[test]
fn semaphores() -> Result<()> {
    multiproc::init();
    let s = Semaphore::new(2)?;
    s.acquire()?;
    s.acquire()?;
    let got: bool = s.acquire_timeout(SHORT)?;
    assert!(!got);
    assert_eq!(s.get_value(), 0);
    let mut p = Process::new(release_sem, s.clone());
    p.start()?;
    let got: bool = s.acquire_timeout(LONG)?;
    assert!(got);
    p.join()?;
    s.release()?;
    s.release()?;
    assert_eq!(s.get_value(), 2);

    let b = BoundedSemaphore::new(1)?;
    b.acquire()?;
    let got: bool = b.acquire_timeout(SHORT)?;
    assert!(!got);
    b.release()?;
    assert_eq!(b.get_value(), 1);
    assert!(b.release().is_err(), "released above its initial value");
    Ok(())
}

fn set_event(ev: Event) {
    ev.set();
}

#[test]
fn event_set_in_a_child_is_seen_by_wait() -> Result<()> {
    multiproc::init();
    let ev = Event::new()?;
    let is: bool = ev.is_set();
    assert!(!is);
    let ok: bool = ev.wait_timeout(SHORT)?;
    assert!(!ok);
    let mut p = Process::new(set_event, ev.clone());
    p.start()?;
    ev.wait()?;
    assert!(ev.is_set());
    let ok: bool = ev.wait_timeout(Duration::ZERO)?;
    assert!(ok);
    p.join()?;
    ev.clear();
    assert!(!ev.is_set());
    assert!(!ev.wait_timeout(Duration::ZERO)?);
    Ok(())
}

fn store_and_notify((cond, flag, v, all): (Condition, Value<i32>, i32, bool)) -> Result<()> {
    cond.acquire()?;
    flag.set(v);
    if all {
        cond.notify_all()?;
    } else {
        cond.notify()?;
    }
    cond.release()
}

#[test]
fn condition() -> Result<()> {
    multiproc::init();
    let cond = Condition::new()?;
    let flag = Value::new(0i32)?;

    // Nobody notifies: a timed wait returns false.
    cond.acquire()?;
    let woken: bool = cond.wait_timeout(SHORT)?;
    assert!(!woken);

    // A child sets the flag and notifies one waiter (us): wait_for sees the predicate.
    let mut p = Process::new(store_and_notify, (cond.clone(), flag.clone(), 1, false));
    p.start()?;
    let ok: bool = cond.wait_for(|| flag.get() == 1, Some(LONG))?;
    assert!(ok);
    cond.release()?;
    p.join()?;

    // notify_all, and wait in the usual loop.
    cond.acquire()?;
    let mut p = Process::new(store_and_notify, (cond.clone(), flag.clone(), 2, true));
    p.start()?;
    while flag.get() != 2 {
        cond.wait()?;
    }
    cond.release()?;
    p.join()?;

    // with_lock: the condition uses the lock it is given.
    let lock = Lock::new()?;
    let c2 = Condition::with_lock(lock.clone())?;
    c2.acquire()?;
    assert!(!lock.try_acquire()?);
    c2.release()?;
    assert!(lock.try_acquire()?);
    lock.release()?;
    Ok(())
}

fn meet(b: Barrier) -> std::result::Result<(usize, usize), String> {
    let first = b.wait().map_err(|e| e.to_string())?;
    let second = b.wait_timeout(LONG).map_err(|e| e.to_string())?;
    Ok((first, second))
}

#[test]
fn barrier() -> Result<()> {
    multiproc::init();
    let b = Barrier::new(2)?;
    let h = multiproc::spawn(meet, b.clone())?;
    let mine: usize = b.wait()?;
    let mine2: usize = b.wait_timeout(LONG)?;
    let (theirs, theirs2) = h.join()?.map_err(std::io::Error::other)?;
    let mut first = [mine, theirs];
    first.sort();
    assert_eq!(first, [0, 1]);
    let mut second = [mine2, theirs2];
    second.sort();
    assert_eq!(second, [0, 1]);

    // Alone, a timed wait fails and breaks the barrier; reset mends it; abort breaks it.
    assert!(b.wait_timeout(SHORT).is_err());
    assert!(b.wait().is_err());
    b.reset();
    b.abort();
    assert!(b.wait().is_err());
    b.reset();
    Ok(())
}

// --- Shared memory values -----------------------------------------------------------------

fn withdraw((balance, times): (Value<i32>, i32)) -> Result<()> {
    for _ in 0..times {
        *balance.lock()? -= 1;
    }
    Ok(())
}

fn raw_store((r, v): (RawValue<i32>, i32)) {
    r.set(v);
}

fn double_all(a: Array<i32>) -> Result<()> {
    let mut g = a.lock()?;
    for x in g.iter_mut() {
        *x *= 2;
    }
    Ok(())
}

fn raw_set((a, i, v): (RawArray<u8>, usize, u8)) {
    a.set(i, v);
}

/// The panic message of `f`, which must panic.
fn panic_message(f: impl FnOnce()) -> String {
    let e = catch_unwind(AssertUnwindSafe(f)).expect_err("it must panic");
    e.downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

#[test]
fn values_and_arrays() -> Result<()> {
    multiproc::init();
    let balance = Value::new(100i32)?;
    let v: i32 = balance.get();
    assert_eq!(v, 100);
    balance.set(200);
    let mut ps = Vec::new();
    for _ in 0..2 {
        let mut p = Process::new(withdraw, (balance.clone(), 50));
        p.start()?;
        ps.push(p);
    }
    for p in &ps {
        p.join()?;
        assert_eq!(p.exitcode(), Some(0));
    }
    assert_eq!(balance.get(), 100);
    let guard: Result<multiproc::ValueGuard<'_, i32>> = balance.lock();
    assert_eq!(*guard?, 100);
    let lock: &Lock = balance.get_lock();
    {
        let _g = balance.lock()?;
        assert!(!lock.try_acquire()?);
    }
    assert!(lock.try_acquire()?);
    lock.release()?;

    let r = RawValue::new(0i32)?;
    r.set(r.get() + 1);
    let x: i32 = r.get();
    assert_eq!(x, 1);
    let mut p = Process::new(raw_store, (r.clone(), 7));
    p.start()?;
    p.join()?;
    assert_eq!(r.get(), 7);

    let a = Array::<i32>::new(4)?;
    let n: usize = a.len();
    assert_eq!(n, 4);
    a.set(2, 9);
    let x: i32 = a.get(2);
    assert_eq!(x, 9);
    a.lock()?[0] = 5;
    let all: Vec<i32> = a.to_vec();
    assert_eq!(all, vec![5, 0, 9, 0]);
    assert_eq!(a.try_get(3), Some(0));
    assert_eq!(a.try_get(4), None);
    let msg = panic_message(|| {
        a.get(4);
    });
    assert!(msg.contains("index out of bounds"), "{msg}");

    let b = Array::from_slice(&[1, 2, 3])?;
    let mut p = Process::new(double_all, b.clone());
    p.start()?;
    p.join()?;
    assert_eq!(b.to_vec(), vec![2, 4, 6]);

    let ra = RawArray::<u8>::new(3)?;
    let mut p = Process::new(raw_set, (ra.clone(), 1, 42));
    p.start()?;
    p.join()?;
    let got: u8 = ra.get(1);
    assert_eq!(got, 42);
    assert_eq!(ra.len(), 3);
    assert_eq!(ra.to_vec(), vec![0, 42, 0]);
    assert_eq!(ra.try_get(3), None);
    let msg = panic_message(|| {
        ra.get(3);
    });
    assert!(msg.contains("index out of bounds"), "{msg}");
    let rb = RawArray::from_slice(&[1.5f64, 2.5])?;
    rb.set(0, rb.get(0) + rb.get(1));
    assert_eq!(rb.to_vec(), vec![4.0, 2.5]);
    Ok(())
}

/// Each of the contract's number types (Python's typecodes) round-trips through the four
/// shared kinds in this process and in a child.
fn bump_all<T: multiproc::Number + serde::Serialize + serde::de::DeserializeOwned>(
    (v, r, a, ra, x): (Value<T>, RawValue<T>, Array<T>, RawArray<T>, T),
) {
    v.set(x);
    r.set(x);
    a.set(1, x);
    ra.set(1, x);
}

fn all_kinds_hold<
    T: multiproc::Number
        + PartialEq
        + std::fmt::Debug
        + serde::Serialize
        + serde::de::DeserializeOwned,
>(
    zero: T,
    x: T,
) -> Result<()> {
    let v = Value::new(zero)?;
    let r = RawValue::new(zero)?;
    let a = Array::<T>::new(2)?;
    let ra = RawArray::from_slice(&[zero, zero])?;
    assert_eq!(
        (v.get(), r.get(), a.get(0), ra.get(0)),
        (zero, zero, zero, zero)
    );
    let mut p = Process::new(
        bump_all::<T>,
        (v.clone(), r.clone(), a.clone(), ra.clone(), x),
    );
    p.start()?;
    p.join()?;
    assert_eq!(p.exitcode(), Some(0));
    assert_eq!((v.get(), r.get()), (x, x));
    assert_eq!(a.to_vec(), vec![zero, x]);
    assert_eq!(ra.to_vec(), vec![zero, x]);
    Ok(())
}

#[test]
fn every_number_type_of_the_contract() -> Result<()> {
    multiproc::init();
    all_kinds_hold(0i8, -8)?;
    all_kinds_hold(0i16, -16_000)?;
    all_kinds_hold(0i32, -32)?;
    all_kinds_hold(0i64, i64::MIN)?;
    all_kinds_hold(0u8, b'a')?; // char-as-u8
    all_kinds_hold(0u16, u16::MAX)?;
    all_kinds_hold(0u32, u32::MAX)?;
    all_kinds_hold(0u64, u64::MAX)?;
    all_kinds_hold(0f32, -1.5)?;
    all_kinds_hold(0f64, std::f64::consts::PI)?;
    all_kinds_hold(false, true)?;
    Ok(())
}

fn read_block(name: String) -> std::result::Result<Vec<u8>, String> {
    let shm = SharedMemory::attach(&name).map_err(|e| e.to_string())?;
    let mut buf = [0u8; 5];
    shm.read_at(0, &mut buf).map_err(|e| e.to_string())?;
    shm.write_at(5, b"!").map_err(|e| e.to_string())?;
    Ok(buf.to_vec())
}

#[test]
fn shared_memory_blocks() -> Result<()> {
    multiproc::init();
    let shm = SharedMemory::create(None, 16)?;
    let len: usize = shm.len();
    assert_eq!(len, 16);
    shm.write_at(0, b"hello")?;
    let name: String = shm.name().to_string();
    let seen = multiproc::spawn(read_block, name.clone())?.join()?;
    assert_eq!(seen, Ok(b"hello".to_vec()));
    assert_eq!(&shm.to_vec()?[..6], b"hello!");
    shm.unlink()?;
    assert!(SharedMemory::attach(&name).is_err());

    let wanted = format!("multiproc-api-conformance-{}", std::process::id());
    let named = SharedMemory::create(Some(&wanted), 8)?;
    assert_eq!(named.name(), wanted);
    assert!(std::path::Path::new(&format!("/dev/shm/{wanted}")).exists());
    let other = SharedMemory::attach(&wanted)?;
    other.write_at(0, &[7])?;
    let mut first = [0u8];
    named.read_at(0, &mut first)?;
    assert_eq!(first, [7]);
    named.unlink()?;
    assert!(!std::path::Path::new(&format!("/dev/shm/{wanted}")).exists());
    Ok(())
}

// --- Pool ---------------------------------------------------------------------------------

fn square(x: u64) -> u64 {
    x * x
}

fn cube(x: u64) -> u64 {
    x * x * x
}

fn add((a, b): (u64, u64)) -> u64 {
    a + b
}

fn wait_for_go_ok(go: Event) {
    go.wait().expect("waits");
}

static OFFSET: AtomicU64 = AtomicU64::new(0);

fn set_offset(o: u64) {
    OFFSET.store(o, Ordering::Relaxed);
}

fn plus_offset(x: u64) -> u64 {
    OFFSET.load(Ordering::Relaxed) + x
}

fn panics_on_3(x: u64) -> u64 {
    assert_ne!(x, 3, "task 3 fails on purpose");
    x
}

fn exits_on_3(x: u64) -> u64 {
    if x == 3 {
        std::process::exit(3);
    }
    x
}

#[test]
fn pool() -> Result<()> {
    multiproc::init();
    let pool = Pool::new(2)?;
    let squares: Vec<u64> = pool.map(square, 1..=6)?;
    assert_eq!(squares, vec![1, 4, 9, 16, 25, 36]);
    let chunked: Vec<u64> = pool.map_chunked(square, vec![1, 2, 3, 4, 5], 2)?;
    assert_eq!(chunked, vec![1, 4, 9, 16, 25]);
    let nine: u64 = pool.apply(square, 3)?;
    assert_eq!(nine, 9);

    let r: AsyncResult<u64> = pool.apply_async(cube, 3);
    let v: u64 = r.get()?;
    assert_eq!(v, 27);
    let again: u64 = r.get()?;
    assert_eq!(again, 27);
    let timed: u64 = r.get_timeout(LONG)?;
    assert_eq!(timed, 27);
    r.wait();
    let ready: bool = r.ready();
    assert!(ready);
    let ok: bool = r.successful()?;
    assert!(ok);

    // Not ready within the timeout: Error::Timeout, and the result still comes.
    let go = Event::new()?;
    let later: AsyncResult<()> = pool.apply_async(wait_for_go_ok, go.clone());
    assert_eq!(kind_of(&later.get_timeout(SHORT)), "Timeout");
    assert!(!later.ready());
    go.set();
    later.get()?;

    let m: AsyncResult<Vec<u64>> = pool.map_async(square, vec![1, 2, 3]);
    assert_eq!(m.get()?, vec![1, 4, 9]);
    let ordered: Vec<u64> = pool.imap(square, 1..=5).collect::<Result<Vec<u64>>>()?;
    assert_eq!(ordered, vec![1, 4, 9, 16, 25]);
    let mut unordered: Vec<u64> = pool
        .imap_unordered(square, 1..=5)
        .collect::<Result<Vec<u64>>>()?;
    unordered.sort();
    assert_eq!(unordered, vec![1, 4, 9, 16, 25]);
    let sums: Vec<u64> = pool.starmap(add, vec![(1, 2), (3, 4)])?;
    assert_eq!(sums, vec![3, 7]);

    // A task that panics: TaskPanicked for it, the others complete.
    let results: Vec<Result<u64>> = pool.imap(panics_on_3, 1..=5).collect();
    for (i, r) in results.iter().enumerate() {
        if i == 2 {
            match r {
                Err(Error::TaskPanicked { message, .. }) => {
                    assert!(message.contains("fails on purpose"), "{message}")
                }
                other => panic!("expected TaskPanicked, got {other:?}"),
            }
        } else {
            assert_eq!(r.as_ref().ok(), Some(&(i as u64 + 1)));
        }
    }
    let failed = pool.apply_async(panics_on_3, 3);
    failed.wait();
    assert!(failed.ready());
    assert!(!failed.successful()?);
    assert_eq!(kind_of(&failed.get()), "TaskPanicked");

    // A worker that dies: WorkerDied for its task, every other task completes.
    let results: Vec<Result<u64>> = pool.imap(exits_on_3, 1..=6).collect();
    assert_eq!(kind_of(&results[2]), "WorkerDied");
    for (i, r) in results.iter().enumerate().filter(|(i, _)| *i != 2) {
        assert_eq!(r.as_ref().ok(), Some(&(i as u64 + 1)));
    }
    assert_eq!(pool.map(square, 1..=3)?, vec![1, 4, 9]);
    pool.close();
    pool.join()?;

    let pool = Pool::builder()
        .processes(2)
        .initializer(set_offset, 100)
        .maxtasksperchild(100)
        .build()?;
    assert_eq!(pool.map(plus_offset, 1..=3)?, vec![101, 102, 103]);
    pool.terminate()?;

    let all = Pool::new(0)?;
    assert_eq!(all.processes(), multiproc::cpu_count());
    assert_eq!(all.apply(square, 4)?, 16);
    drop(all);
    let default = Pool::default();
    assert_eq!(default.processes(), multiproc::cpu_count());
    Ok(())
}

// --- Manager ------------------------------------------------------------------------------

type Record = (String, i32);

fn from_a_child(
    (records, d, ns): (ListProxy<Record>, DictProxy<String, i32>, NamespaceProxy),
) -> Result<()> {
    records.push(("Ann".to_string(), 9))?;
    d.insert("from child".to_string(), 1)?;
    ns.set("x", ns.get::<i32>("x")? + 1)
}

#[test]
fn manager() -> Result<()> {
    multiproc::init();
    let manager = Manager::start()?;
    let records = manager.list(vec![("Sam".to_string(), 10)])?;
    records.push(("Tom".to_string(), 7))?;
    let first: Record = records.get(0)?;
    assert_eq!(first, ("Sam".to_string(), 10));
    records.set(1, ("Tim".to_string(), 8))?;
    let n: usize = records.len()?;
    assert_eq!(n, 2);
    let last: Record = records.pop()?;
    assert_eq!(last, ("Tim".to_string(), 8));
    records.extend(vec![("Bo".to_string(), 1), ("Al".to_string(), 2)])?;
    let removed: Record = records.remove(1)?;
    assert_eq!(removed, ("Bo".to_string(), 1));

    let d = manager.dict::<String, i32>()?;
    d.insert("a".to_string(), 1)?;
    let got: Option<i32> = d.get(&"a".to_string())?;
    assert_eq!(got, Some(1));
    assert_eq!(d.get(&"b".to_string())?, None);
    let has: bool = d.contains_key(&"a".to_string())?;
    assert!(has);

    let ns = manager.namespace()?;
    ns.set("x", 1)?;
    let x: i32 = ns.get::<i32>("x")?;
    assert_eq!(x, 1);

    // Proxies work from a child process.
    let mut p = Process::new(from_a_child, (records.clone(), d.clone(), ns.clone()));
    p.start()?;
    p.join()?;
    assert_eq!(p.exitcode(), Some(0));
    let all: Vec<Record> = records.to_vec()?;
    assert_eq!(
        all,
        vec![
            ("Sam".to_string(), 10),
            ("Al".to_string(), 2),
            ("Ann".to_string(), 9)
        ]
    );
    let n: usize = d.len()?;
    assert_eq!(n, 2);
    let mut keys: Vec<String> = d.keys()?;
    keys.sort();
    assert_eq!(keys, vec!["a".to_string(), "from child".to_string()]);
    let map: HashMap<String, i32> = d.to_map()?;
    assert_eq!(map.get("from child"), Some(&1));
    d.remove(&"a".to_string())?;
    assert!(!d.contains_key(&"a".to_string())?);
    assert_eq!(ns.get::<i32>("x")?, 2);

    let q = manager.queue::<u32>()?;
    q.put(5)?;
    assert_eq!(q.get()?, 5);
    let v = manager.value(3.5f64)?;
    assert_eq!(v.get()?, 3.5);
    let l = manager.lock()?;
    l.acquire()?;
    assert!(!l.try_acquire()?);
    l.release()?;
    let e = manager.event()?;
    e.set()?;
    assert!(e.is_set()?);

    manager.shutdown()?;
    assert!(records.len().is_err(), "the server is gone");
    Ok(())
}

#[test]
fn manager_network_mode() -> Result<()> {
    multiproc::init();
    let server = Manager::serve("127.0.0.1:0", b"authkey")?;
    let address = server.address().to_string();
    let client = Manager::connect(address.as_str(), b"authkey")?;
    let shared = server.list(vec![1u32, 2])?;
    server.publish("shared", &shared)?;
    let seen: ListProxy<u32> = client.lookup("shared")?;
    seen.push(3)?;
    assert_eq!(shared.to_vec()?, vec![1, 2, 3]);
    assert_eq!(
        kind_of(&Manager::connect(address.as_str(), b"wrong key")),
        "AuthenticationFailed"
    );
    drop(client);
    server.shutdown()?;
    Ok(())
}
