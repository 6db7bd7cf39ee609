//! Queue, SimpleQueue and JoinableQueue across processes: semantics, timeouts, many
//! producers and consumers, processes killed at any moment, huge items, handles inside
//! items, and no leaks.

mod common;

use std::time::{Duration, Instant};

use common::*;
use multiproc::queue::TryPutError;
use multiproc::{Connection, Error, JoinableQueue, Process, Queue, SimpleQueue, StartMethod};
use serde_bytes::ByteBuf;

/// Descriptors that other tests of this binary may hold at a given moment under
/// `cargo test` (all tests in one process); a leak per iteration exceeds it by far.
const FD_SLACK: usize = 12;

fn sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

// --- child functions ------------------------------------------------------------------------

fn put_range((q, from, n): (Queue<u64>, u64, u64)) {
    for i in from..from + n {
        q.put(i).unwrap();
    }
}

fn get_n((q, n): (Queue<u64>, usize)) -> Vec<u64> {
    (0..n).map(|_| q.get().unwrap()).collect()
}

fn get_one_string((q, about_to_block): (Queue<String>, multiproc::Event)) -> String {
    about_to_block.set();
    q.get().unwrap()
}

fn put_strings((q, items): (Queue<String>, Vec<String>)) {
    for s in items {
        q.put(s).unwrap();
    }
}

/// Producer `id` puts `n` items `id << 32 | seq`.
fn producer((q, id, n): (Queue<u64>, u64, u64)) {
    for seq in 0..n {
        q.put((id << 32) | seq).unwrap();
    }
}

/// Takes items until `u64::MAX`; checks each producer's items come in order; returns them.
fn consumer(q: Queue<u64>) -> Vec<u64> {
    let mut got = Vec::new();
    let mut last: std::collections::HashMap<u64, u64> = Default::default();
    loop {
        let v = q.get().unwrap();
        if v == u64::MAX {
            return got;
        }
        let (id, seq) = (v >> 32, v & 0xffff_ffff);
        if let Some(&prev) = last.get(&id) {
            assert!(seq > prev, "producer {id}: {seq} after {prev}");
        }
        last.insert(id, seq);
        got.push(v);
    }
}

/// Takes items and reports each on `conn` as soon as it has it, slowly, until killed.
fn slow_reporter((q, conn): (Queue<u64>, Connection<u64>)) {
    loop {
        let v = q.get().unwrap();
        conn.send(&v).unwrap();
        sleep_ms(2);
    }
}

fn take_big_then_report((q, conn): (Queue<ByteBuf>, Connection<u64>)) {
    conn.send(&0).unwrap(); // started
    loop {
        let b = q.get().unwrap();
        conn.send(&(b.len() as u64)).unwrap();
    }
}

fn put_big((q, mib): (Queue<ByteBuf>, usize)) {
    q.put(ByteBuf::from(pattern(mib << 20))).unwrap();
}

fn put_forever(q: Queue<u64>) {
    let mut i = 0;
    loop {
        q.put(i).unwrap();
        i += 1;
    }
}

/// Takes `n` items and checks they are `0..n` in order: returns how many were.
fn get_in_order((q, n): (Queue<u64>, u64)) -> u64 {
    for i in 0..n {
        if q.get().unwrap() != i {
            return i;
        }
    }
    n
}

fn simple_get_in_order((q, n): (SimpleQueue<u64>, u64)) -> u64 {
    for i in 0..n {
        if q.get().unwrap() != i {
            return i;
        }
    }
    n
}

fn joinable_take_all((q, n): (JoinableQueue<u64>, u64)) -> u64 {
    for i in 0..n {
        if q.get().unwrap() != i {
            return i;
        }
        q.task_done().unwrap();
    }
    n
}

fn joinable_worker(q: JoinableQueue<u32>) -> u32 {
    let mut sum = 0;
    loop {
        let n = q.get().unwrap();
        sleep_ms(1);
        sum += n;
        q.task_done().unwrap();
        if n == 0 {
            return sum;
        }
    }
}

fn simple_echo((inq, outq): (SimpleQueue<String>, SimpleQueue<String>)) {
    loop {
        let s = inq.get().unwrap();
        if s == "end" {
            return;
        }
        outq.put(s.to_uppercase()).unwrap();
    }
}

/// Receives a queue through a queue, and puts into it.
fn queue_in_queue(qq: Queue<Queue<u32>>) {
    let inner = qq.get().unwrap();
    for i in 0..3 {
        inner.put(i).unwrap();
    }
}

/// Receives a queue through a pipe, and puts into it.
fn queue_in_pipe(conn: Connection<Queue<String>>) {
    let q = conn.recv().unwrap();
    q.put("via pipe".into()).unwrap();
}

/// Receives a connection inside a queue item and answers on it.
fn conn_in_queue(q: Queue<(String, Connection<String>)>) {
    let (name, conn) = q.get().unwrap();
    conn.send(&format!("hi {name}")).unwrap();
}

/// A pattern built at memcpy speed (a per-byte loop is very slow in debug builds).
fn pattern(len: usize) -> Vec<u8> {
    let seed: Vec<u8> = (0..4096u32).map(|i| (i * 7 + i / 256) as u8).collect();
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        let n = (len - v.len()).min(seed.len().max(v.len()));
        if v.len() < seed.len() {
            v.extend_from_slice(&seed[..n.min(seed.len())]);
        } else {
            v.extend_from_within(..n);
        }
    }
    v
}

fn check_pattern(v: &[u8]) -> bool {
    let seed = pattern(4096);
    v.chunks(4096).all(|c| c == &seed[..c.len()])
}

// --- semantics ----------------------------------------------------------------------------------

#[test]
fn fifo_per_producer_across_processes() {
    multiproc::init();
    let q = Queue::<u64>::new().unwrap();
    let mut p = Process::new(put_range, (q.clone(), 0, 1000));
    p.start().unwrap();
    let got: Vec<u64> = (0..1000).map(|_| q.get().unwrap()).collect();
    assert_eq!(got, (0..1000).collect::<Vec<_>>());
    p.join().unwrap();
    assert!(q.empty());
}

#[test]
fn child_puts_and_exits_before_parent_drains() {
    multiproc::init();
    // CPython's feeder-thread trap: joining a child that put items before getting them.
    let q = Queue::<u64>::new().unwrap();
    let mut p = Process::new(put_range, (q.clone(), 0, 10_000));
    p.start().unwrap();
    assert!(
        p.join_timeout(Duration::from_secs(20)).unwrap(),
        "child did not exit"
    );
    assert_eq!(p.exitcode(), Some(0));
    assert_eq!(q.qsize(), 10_000);
    for i in 0..10_000 {
        assert_eq!(q.get().unwrap(), i);
    }
}

#[test]
fn parent_feeds_a_blocked_child() {
    multiproc::init();
    let q = Queue::<String>::new().unwrap();
    let about_to_block = multiproc::Event::new().unwrap();
    let h = multiproc::spawn(get_one_string, (q.clone(), about_to_block.clone())).unwrap();
    about_to_block.wait().unwrap();
    until_in_futex_wait(h.pid(), h.pid()); // the child sleeps in get
    assert!(!h.is_finished());
    let t = Instant::now();
    q.put("Jimmy".into()).unwrap();
    assert_eq!(h.join().unwrap(), "Jimmy");
    // Woken by the put (it would sleep for ever otherwise); the bound leaves room for a
    // loaded machine only.
    assert!(t.elapsed() < Duration::from_secs(10));
}

#[test]
fn child_gets_what_parent_puts_under_every_start_method() {
    multiproc::init();
    allow_fork();
    for m in [
        StartMethod::ForkServer,
        StartMethod::Spawn,
        StartMethod::Fork,
    ] {
        let q = Queue::<u64>::new().unwrap();
        let back = Queue::<u64>::new().unwrap();
        let mut p = Process::new(put_range, (back.clone(), 100, 3)).with_start_method(m);
        let mut c = Process::new(
            |a| {
                get_n(a);
            },
            (q.clone(), 2),
        )
        .with_start_method(m);
        p.start().unwrap();
        c.start().unwrap();
        q.put(1).unwrap();
        q.put(2).unwrap();
        c.join().unwrap();
        p.join().unwrap();
        assert_eq!(c.exitcode(), Some(0), "{m:?}");
        let got: Vec<u64> = (0..3).map(|_| back.get().unwrap()).collect();
        assert_eq!(got, vec![100, 101, 102], "{m:?}");
        assert!(q.empty());
    }
}

#[test]
fn timeouts_and_nonblocking_calls() {
    multiproc::init();
    let q = Queue::<u8>::bounded(1).unwrap();
    let t = Instant::now();
    assert!(matches!(
        q.get_timeout(Duration::from_millis(200)),
        Err(Error::Empty)
    ));
    let e = t.elapsed();
    assert!(e >= Duration::from_millis(100), "returned after {e:?}");
    // It does return (the bound leaves room for a loaded machine).
    assert!(e < Duration::from_secs(10), "returned after {e:?}");
    assert!(matches!(q.try_get(), Err(Error::Empty)));
    q.try_put(1).unwrap();
    assert!(q.full());
    assert!(matches!(q.try_put(2), Err(Error::Full)));
    let t = Instant::now();
    assert!(matches!(
        q.put_timeout(2, Duration::from_millis(200)),
        Err(Error::Full)
    ));
    assert!(t.elapsed() >= Duration::from_millis(100));
    assert_eq!(q.try_get().unwrap(), 1);
    assert_eq!(q.qsize(), 0);
    q.put_timeout(3, Duration::from_millis(200)).unwrap();
    assert_eq!(q.get_timeout(Duration::from_millis(200)).unwrap(), 3);
}

#[test]
fn try_put_on_a_full_queue_gives_the_value_back() {
    // A value that is not Copy and owns a handle: it must come back whole, and working.
    let q = Queue::<(String, Queue<u8>)>::bounded(1).unwrap();
    let inner = Queue::<u8>::new().unwrap();
    q.try_put(("first".to_string(), inner.clone())).unwrap();
    let back = match q.try_put_giving_back(("second".to_string(), inner.clone())) {
        Err(TryPutError::Full(v)) => v,
        other => panic!("expected Full with the value, got {other:?}"),
    };
    assert_eq!(back.0, "second");
    back.1.put(9).unwrap();
    assert_eq!(inner.get().unwrap(), 9);
    // Nothing was put by the refused call.
    assert_eq!(q.qsize(), 1);
    assert_eq!(q.get().unwrap().0, "first");
    assert!(q.try_get().is_err());
    // A closed handle gives the value back too; `?` turns the error into Error::Closed.
    q.close();
    let e = q
        .try_put_giving_back(("third".to_string(), inner))
        .unwrap_err();
    assert!(e.is_closed());
    assert_eq!(e.into_inner().0, "third");
    let as_error: Error = q
        .try_put_giving_back(("fourth".to_string(), Queue::new().unwrap()))
        .unwrap_err()
        .into();
    assert!(matches!(as_error, Error::Closed));
}

#[test]
fn get_timeout_wakes_when_an_item_arrives() {
    multiproc::init();
    let q = Queue::<u64>::new().unwrap();
    let go = multiproc::Event::new().unwrap();
    let mut p = Process::new(
        |(q, go): (Queue<u64>, multiproc::Event)| {
            go.wait().unwrap();
            q.put(7).unwrap();
        },
        (q.clone(), go.clone()),
    );
    p.start().unwrap();
    // The child puts once this thread sleeps in get_timeout.
    let (me, tid) = (std::process::id(), my_tid());
    let starter = std::thread::spawn(move || {
        until_in_futex_wait(me, tid);
        go.set();
    });
    let t = Instant::now();
    assert_eq!(q.get_timeout(Duration::from_secs(60)).unwrap(), 7);
    // Woken by the item, not by the timeout.
    assert!(t.elapsed() < Duration::from_secs(30));
    starter.join().unwrap();
    p.join().unwrap();
}

#[test]
fn maxsize_back_pressure() {
    multiproc::init();
    let q = Queue::<u64>::bounded(3).unwrap();
    let mut p = Process::new(put_range, (q.clone(), 0, 20));
    p.start().unwrap();
    // The producer fills the queue and then waits.
    assert!(eventually(Duration::from_secs(10), || q.full()));
    sleep_ms(100);
    assert_eq!(q.qsize(), 3);
    assert!(p.is_alive(), "put must block while the queue is full");
    for i in 0..20 {
        assert!(q.qsize() <= 3);
        assert_eq!(q.get().unwrap(), i);
    }
    p.join().unwrap();
    assert!(q.empty());
}

#[test]
fn two_million_puts_without_a_consumer_then_a_consumer_gets_them_all_in_order() {
    multiproc::init();
    let q = Queue::<u64>::new().unwrap();
    // Python's unbounded `put` never blocks: neither does this one, with nobody reading.
    for i in 0..2_000_000 {
        q.try_put(i).unwrap();
    }
    assert_eq!(q.qsize(), 2_000_000);
    let h = multiproc::spawn(get_in_order, (q.clone(), 2_000_000)).unwrap();
    assert_eq!(h.join().unwrap(), 2_000_000);
    assert!(q.empty());
}

/// Takes `n` byte vectors and returns their lengths, each, or 0 for one that is not the
/// pattern.
fn get_patterns((q, n): (SimpleQueue<Vec<u8>>, usize)) -> Vec<usize> {
    (0..n)
        .map(|_| {
            let v = q.get().unwrap();
            if check_pattern(&v) {
                v.len()
            } else {
                0
            }
        })
        .collect()
}

#[test]
fn put_ref_leaves_the_item_with_the_caller_and_sends_it_whole() {
    multiproc::init();
    let before = shm_files();
    // A small item (in the ring) and one larger than the ring (a sealed segment), each
    // put twice by reference through every kind of queue, and taken in another process.
    let small = pattern(1000);
    let big = pattern(5 << 20);
    let q = SimpleQueue::<Vec<u8>>::new().unwrap();
    let h = multiproc::spawn(get_patterns, (q.clone(), 4)).unwrap();
    for item in [&small, &big, &small, &big] {
        q.put_ref(item).unwrap();
    }
    assert_eq!(h.join().unwrap(), [1000, 5 << 20, 1000, 5 << 20]);
    // The caller still holds both, unchanged.
    assert!(check_pattern(&small) && small.len() == 1000);
    assert!(check_pattern(&big) && big.len() == 5 << 20);

    let q = Queue::<Vec<u8>>::new().unwrap();
    q.put_ref(&big).unwrap();
    q.put_ref(&small).unwrap();
    assert_eq!(q.get().unwrap(), big);
    assert_eq!(q.get().unwrap(), small);

    let q = JoinableQueue::<Vec<u8>>::new().unwrap();
    q.put_ref(&big).unwrap();
    assert_eq!(q.unfinished_tasks(), 1);
    assert_eq!(q.get().unwrap(), big);
    q.task_done().unwrap();
    q.join().unwrap();
    assert!(new_multiproc_files(&before).is_empty());
}

#[test]
fn simple_and_joinable_queues_are_unbounded_too() {
    multiproc::init();
    let q = SimpleQueue::<u64>::new().unwrap();
    for i in 0..400_000 {
        q.put(i).unwrap();
    }
    // A consumer reads while the parent keeps putting: items move between the ring and
    // the overflow and still come out in order.
    let h = multiproc::spawn(simple_get_in_order, (q.clone(), 800_000)).unwrap();
    for i in 400_000..800_000 {
        q.put(i).unwrap();
    }
    assert_eq!(h.join().unwrap(), 800_000);
    assert!(q.empty());

    let q = JoinableQueue::<u64>::new().unwrap();
    for i in 0..400_000 {
        q.try_put(i).unwrap();
    }
    assert_eq!(q.unfinished_tasks(), 400_000);
    let h = multiproc::spawn(joinable_take_all, (q.clone(), 400_000)).unwrap();
    q.join().unwrap();
    assert_eq!(h.join().unwrap(), 400_000);
    assert_eq!(q.unfinished_tasks(), 0);
}

#[test]
fn close_is_local_to_the_handle() {
    multiproc::init();
    let q = Queue::<String>::new().unwrap();
    q.put("left".into()).unwrap();
    let other = q.clone();
    q.close();
    assert!(q.is_closed() && other.is_closed());
    assert!(matches!(q.put("x".into()), Err(Error::Closed)));
    assert!(matches!(q.get(), Err(Error::Closed)));
    assert!(matches!(q.try_get(), Err(Error::Closed)));
    // Another process's handle is not closed, and what was put is still there.
    let mut p = Process::new(
        |q: Queue<String>| {
            assert_eq!(q.get().unwrap(), "left");
        },
        q.clone(),
    );
    p.start().unwrap();
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(0));
}

/// In a child with its own (open) handle: takes one item and puts two.
fn take_one_put_two(q: Queue<String>) -> String {
    let got = q.get_timeout(Duration::from_secs(30)).unwrap();
    q.put("c".into()).unwrap();
    q.put("d".into()).unwrap();
    got
}

/// Runs `op` on another thread, waits until that thread sleeps in it, then `close()`s:
/// what `op` returned, and how long it took.
fn blocked_then_closed<T: Send + 'static>(
    who: &str,
    op: impl FnOnce() -> multiproc::Result<T> + Send + 'static,
    close: impl FnOnce(),
) -> (multiproc::Result<T>, Duration) {
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let t = std::thread::spawn(move || {
        tid_tx.send(my_tid()).unwrap();
        let t = Instant::now();
        (op(), t.elapsed())
    });
    let tid = tid_rx.recv_timeout(Duration::from_secs(30)).unwrap();
    assert!(
        eventually(Duration::from_secs(30), || thread_asleep(
            std::process::id(),
            tid
        )),
        "the {who} never blocked"
    );
    close();
    t.join().unwrap()
}

/// After `close()` (Python 3.11: `put`/`get` raise `ValueError`, `qsize()`/`full()` answer,
/// `empty()` raises only because the reader pipe was closed): every put and get form gives
/// `Error::Closed` at once, a get blocked in another thread wakes with it, and
/// `empty`/`qsize`/`full` keep answering for the queue as a whole, following what another
/// process's open handle does to it.
#[test]
fn after_close_put_and_get_fail_and_the_state_queries_follow_the_queue() {
    multiproc::init();
    let q = Queue::<String>::bounded(3).unwrap();
    // A get blocked in another thread of this process when the handle is closed.
    let empty = Queue::<String>::new().unwrap();
    let blocked = empty.clone();
    let (r, waited) = blocked_then_closed(
        "getter",
        move || blocked.get_timeout(Duration::from_secs(60)),
        || empty.close(),
    );
    assert!(matches!(r, Err(Error::Closed)), "{r:?}");
    assert!(waited < Duration::from_secs(30), "{waited:?}");

    // A put blocked on a full queue, likewise.
    let full = Queue::<u8>::bounded(1).unwrap();
    full.put(1).unwrap();
    let putter_q = full.clone();
    let (r, waited) = blocked_then_closed(
        "putter",
        move || putter_q.put_timeout(2, Duration::from_secs(60)),
        || full.close(),
    );
    assert!(matches!(r, Err(Error::Closed)), "{r:?}");
    assert!(waited < Duration::from_secs(30), "{waited:?}");
    assert_eq!(full.qsize(), 1);

    q.put("a".into()).unwrap();
    q.put("b".into()).unwrap();
    q.close();
    q.close(); // twice: harmless
    let t = Instant::now();
    assert!(matches!(q.put("x".into()), Err(Error::Closed)));
    assert!(matches!(q.try_put("x".into()), Err(Error::Closed)));
    assert!(matches!(
        q.put_timeout("x".into(), Duration::from_secs(30)),
        Err(Error::Closed)
    ));
    assert!(matches!(q.get(), Err(Error::Closed)));
    assert!(matches!(q.try_get(), Err(Error::Closed)));
    assert!(matches!(
        q.get_timeout(Duration::from_secs(30)),
        Err(Error::Closed)
    ));
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert_eq!(
        (q.qsize(), q.len(), q.empty(), q.full()),
        (2, 2, false, false)
    );
    // Another process's handle is open: what it does shows through the closed one.
    let h = multiproc::spawn(take_one_put_two, q.clone()).unwrap();
    assert_eq!(h.join().unwrap(), "a");
    assert_eq!((q.qsize(), q.empty(), q.full()), (3, false, true));
    assert!(q.is_closed());
    // And through a SimpleQueue's closed handle too.
    let sq = SimpleQueue::<u8>::new().unwrap();
    sq.close();
    assert!(sq.empty());
    assert!(matches!(sq.get(), Err(Error::Closed)));
}

/// The size: 8 producers × 8 consumers × 100,000 items (about 3 s in a debug build).
#[test]
fn many_producers_many_consumers_exactly_once() {
    multiproc::init();
    exactly_once(8, 8, 100_000);
}

/// A longer soak of the same: `cargo nextest run --profile soak --run-ignored only`.
#[test]
#[ignore]
fn many_producers_many_consumers_exactly_once_soak() {
    multiproc::init();
    for _ in 0..10 {
        exactly_once(8, 8, 100_000);
    }
}

fn exactly_once(np: u64, nc: usize, n: u64) {
    let q = Queue::<u64>::bounded(10_000).unwrap();
    let consumers: Vec<_> = (0..nc)
        .map(|_| multiproc::spawn(consumer, q.clone()).unwrap())
        .collect();
    let producers: Vec<_> = (0..np)
        .map(|id| multiproc::spawn(producer, (q.clone(), id, n)).unwrap())
        .collect();
    for p in producers {
        p.join().unwrap();
    }
    for _ in 0..nc {
        q.put(u64::MAX).unwrap();
    }
    let mut all: Vec<u64> = Vec::new();
    for c in consumers {
        all.extend(c.join().unwrap());
    }
    all.sort_unstable();
    let expected: Vec<u64> = (0..np)
        .flat_map(|id| (0..n).map(move |s| (id << 32) | s))
        .collect();
    assert_eq!(all.len(), expected.len(), "lost or duplicated items");
    assert!(all == expected, "lost or duplicated items");
    assert!(q.empty());
}

// --- processes killed at any moment ------------------------------------------------------

#[test]
fn consumer_killed_while_others_continue() {
    multiproc::init();
    let q = Queue::<u64>::new().unwrap();
    let (rx_a, tx_a) = multiproc::pipe_simplex::<u64>().unwrap();
    let (rx_b, tx_b) = multiproc::pipe_simplex::<u64>().unwrap();
    let a = Process::new(slow_reporter, (q.clone(), tx_a));
    let b = Process::new(slow_reporter, (q.clone(), tx_b));
    let mut a = a;
    let mut b = b;
    a.start().unwrap();
    b.start().unwrap();
    let n = 400u64;
    for i in 0..n {
        q.put(i).unwrap();
    }
    sleep_ms(100);
    a.kill().unwrap(); // at whatever point it is: mid-get, mid-report, asleep
    a.join().unwrap();
    let mut got = Vec::new();
    while rx_a.poll(Some(Duration::ZERO)).unwrap() {
        match rx_a.recv() {
            Ok(v) => got.push(v),
            Err(_) => break,
        }
    }
    let from_a = got.len();
    // B goes on and drains the rest.
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if rx_b.poll(Some(Duration::from_millis(500))).unwrap() {
            got.push(rx_b.recv().unwrap());
        } else if q.empty() {
            break;
        }
    }
    b.kill().unwrap();
    b.join().unwrap();
    got.sort_unstable();
    let before = got.len();
    got.dedup();
    assert_eq!(before, got.len(), "an item was delivered twice");
    // At most the one item A had taken and not yet reported is missing.
    assert!(
        got.len() as u64 >= n - 1,
        "only {} of {n} items arrived (A reported {from_a})",
        got.len()
    );
    assert!(from_a > 0 && from_a < n as usize, "A took {from_a}");
}

#[test]
fn consumer_killed_mid_stream_of_a_huge_item() {
    multiproc::init();
    // A 4 KiB ring: a 64 MiB item streams through it in thousands of chunks.
    let q = Queue::<ByteBuf>::streaming(0, 4096).unwrap();
    let (rx, tx) = multiproc::pipe_simplex::<u64>().unwrap();
    let mut a = Process::new(take_big_then_report, (q.clone(), tx));
    a.start().unwrap();
    assert_eq!(rx.recv().unwrap(), 0);
    let mut prod = Process::new(put_big, (q.clone(), 64));
    prod.start().unwrap();
    sleep_ms(30); // A is now reading the big item, chunk by chunk
    a.kill().unwrap();
    a.join().unwrap();
    // The producer may be mid-stream, waiting for room; the next consumer skips the rest
    // of the lost item and gets what follows.
    let q2 = q.clone();
    let t = std::thread::spawn(move || q2.get_timeout(Duration::from_secs(30)));
    prod.join().unwrap();
    q.put(ByteBuf::from(b"after".to_vec())).unwrap();
    let first = t.join().unwrap().unwrap();
    if first.len() == 64 << 20 {
        // A was killed before it started reading the item: it is intact.
        assert!(check_pattern(&first));
        assert_eq!(q.get().unwrap().as_slice(), b"after");
    } else {
        assert_eq!(first.as_slice(), b"after");
    }
    assert!(q.empty());
}

#[test]
fn consumer_killed_while_taking_spilled_items() {
    multiproc::init();
    let shm_before = shm_files();
    let q = Queue::<ByteBuf>::new().unwrap();
    let (rx, tx) = multiproc::pipe_simplex::<u64>().unwrap();
    let mut a = Process::new(take_big_then_report, (q.clone(), tx));
    a.start().unwrap();
    assert_eq!(rx.recv().unwrap(), 0);
    for _ in 0..3 {
        q.put(ByteBuf::from(pattern(32 << 20))).unwrap(); // spilled: returns at once
    }
    sleep_ms(40);
    a.kill().unwrap(); // typically while it maps, copies or decodes one
    a.join().unwrap();
    let mut reported = 0;
    while rx.poll(Some(Duration::ZERO)).unwrap() {
        match rx.recv() {
            Ok(n) => {
                assert_eq!(n, 32 << 20);
                reported += 1;
            }
            Err(_) => break,
        }
    }
    // What A had not finished taking is still there, whole.
    let mut got = 0;
    while let Ok(b) = q.get_timeout(Duration::from_millis(300)) {
        assert_eq!(b.len(), 32 << 20);
        assert!(check_pattern(&b));
        got += 1;
    }
    // At most one item can be missing: one A took completely but died before reporting.
    assert!(
        reported + got >= 2 && reported + got <= 3,
        "{reported} + {got}"
    );
    assert!(q.empty());
    // The large items travelled as anonymous sealed segments: nothing of them is in
    // /dev/shm, even the one the killed consumer held.
    let ours = new_multiproc_files(&shm_before);
    assert!(ours.is_empty(), "left in /dev/shm: {ours:?}");
}

#[test]
fn producer_killed_mid_message() {
    multiproc::init();
    let q = Queue::<ByteBuf>::streaming(0, 64 * 1024).unwrap();
    // Nobody reads: the producer writes the first chunks of a 16 MiB item, then waits for
    // room while holding the producer lock. Kill it there.
    let mut p = Process::new(put_big, (q.clone(), 16));
    p.start().unwrap();
    sleep_ms(300);
    assert!(p.is_alive());
    p.kill().unwrap();
    p.join().unwrap();
    // Another producer takes the dead one's lock over; a consumer drops the partial item
    // (whose chunks fill the ring until then).
    let t = Instant::now();
    let q2 = q.clone();
    let getter = std::thread::spawn(move || q2.get_timeout(Duration::from_secs(10)));
    q.put(ByteBuf::from(b"next".to_vec())).unwrap();
    assert_eq!(getter.join().unwrap().unwrap().as_slice(), b"next");
    assert!(t.elapsed() < Duration::from_secs(5));
    assert!(q.empty());
}

#[test]
fn producers_killed_at_random_moments_never_wedge() {
    multiproc::init();
    let q = Queue::<u64>::bounded(50).unwrap();
    for round in 0..4 {
        let mut p = Process::new(put_forever, q.clone());
        p.start().unwrap();
        sleep_ms(20 + round * 7);
        // Take a few while it runs, then kill it at whatever point it is.
        for _ in 0..10 {
            q.get_timeout(Duration::from_secs(10)).unwrap();
        }
        p.kill().unwrap();
        p.join().unwrap();
        // Drain: every item is whole, in order.
        let mut last = None;
        while let Ok(v) = q.try_get() {
            if let Some(l) = last {
                assert!(v > l);
            }
            last = Some(v);
        }
        q.put(u64::MAX).unwrap();
        assert_eq!(q.get_timeout(Duration::from_secs(10)).unwrap(), u64::MAX);
    }
}

// --- large items ---------------------------------------------------------------------------

#[test]
fn one_gib_item() {
    multiproc::init();
    let q = Queue::<ByteBuf>::new().unwrap();
    let mut p = Process::new(put_big, (q.clone(), 1024));
    p.start().unwrap();
    let b = q.get().unwrap();
    assert_eq!(b.len(), 1 << 30);
    assert!(check_pattern(&b));
    p.join().unwrap();
    assert!(q.empty());
}

/// Byte lengths around the sizes where a decoded vector's memory is prepared differently
/// (huge pages from 4 MiB, made whole from 128 MiB) and where an item leaves the lent
/// files for a sealed one (128 MiB).
const DECODE_EDGES: [usize; 6] = [
    (4 << 20) - 1,
    4 << 20,
    (128 << 20) - 4096,
    128 << 20,
    (128 << 20) + 1,
    (128 << 20) + 4096,
];

fn put_vectors((b, f, s): (Queue<Vec<u8>>, Queue<Vec<f64>>, Queue<String>)) {
    for (k, &n) in DECODE_EDGES.iter().enumerate() {
        b.put(common::prime_pattern(n, k)).unwrap();
    }
    f.put(float_pattern()).unwrap();
    s.put(text_pattern()).unwrap();
}

/// 128 MiB and 8 bytes of floats.
fn float_pattern() -> Vec<f64> {
    let bytes = common::prime_pattern(16 << 20, 1);
    bytes
        .iter()
        .map(|&x| f64::from(x) - 0.5)
        .chain([1.25])
        .collect()
}

/// 128 MiB and a page of text.
fn text_pattern() -> String {
    let mut bytes = common::prime_pattern((128 << 20) + 4096, 3);
    for x in bytes.chunks_mut(65_537).next().into_iter().flatten() {
        *x = *x % 64 + 48;
    }
    // The rest repeats the first 65,537 bytes, now ASCII.
    let (head, tail) = bytes.split_at_mut(65_537);
    for c in tail.chunks_mut(65_537) {
        c.copy_from_slice(&head[..c.len()]);
    }
    String::from_utf8(bytes).unwrap()
}

#[test]
fn vectors_around_the_decoding_thresholds_arrive_bit_exact() {
    multiproc::init();
    let (b, f, s) = (
        Queue::new().unwrap(),
        Queue::new().unwrap(),
        Queue::new().unwrap(),
    );
    let mut p = Process::new(put_vectors, (b.clone(), f.clone(), s.clone()));
    p.start().unwrap();
    for (k, &n) in DECODE_EDGES.iter().enumerate() {
        let v = b.get().unwrap();
        assert!(v == common::prime_pattern(n, k), "{n} bytes differ");
    }
    assert!(f.get().unwrap() == float_pattern(), "floats differ");
    assert!(s.get().unwrap() == text_pattern(), "text differs");
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(0));
}

#[test]
fn child_puts_a_large_item_and_exits_before_parent_drains() {
    multiproc::init();
    // An item far larger than the ring: it goes to its own shared segment, so the child's
    // put returns without a consumer, and the parent may join it first.
    let q = Queue::<ByteBuf>::new().unwrap();
    let mut p = Process::new(put_big, (q.clone(), 64));
    p.start().unwrap();
    assert!(
        p.join_timeout(Duration::from_secs(20)).unwrap(),
        "child did not exit"
    );
    assert_eq!(p.exitcode(), Some(0));
    let b = q.get().unwrap();
    assert_eq!(b.len(), 64 << 20);
    assert!(check_pattern(&b));
}

/// An item with handles and a large run inside: bytes, the connection to answer on, words.
type Parcel = (Vec<u8>, Connection<(usize, bool, Vec<String>)>, Vec<String>);

fn answer_parcels((q, n): (Queue<Parcel>, usize)) {
    for _ in 0..n {
        let (bytes, conn, words) = q.get().unwrap();
        conn.send(&(bytes.len(), check_pattern(&bytes), words))
            .unwrap();
    }
}

#[test]
fn items_past_the_spill_threshold_with_handles_inside() {
    multiproc::init();
    // A small ring: items from a few bytes up to several MiB, on both sides of half the
    // ring (where an item starts to be encoded into a segment of its own), each with a
    // connection inside, and a long sequence of small parts in some.
    let q = Queue::<Parcel>::with_capacity(0, 8192).unwrap();
    let sizes = [
        0,
        100,
        4000,
        4070,
        4080,
        4090,
        5000,
        300_000,
        1 << 20,
        6 << 20,
    ];
    let mut p = Process::new(answer_parcels, (q.clone(), sizes.len()));
    p.start().unwrap();
    for (i, &n) in sizes.iter().enumerate() {
        let words: Vec<String> = (0..(i % 3) * 20_000).map(|w| format!("w{w}")).collect();
        let (mine, theirs) = multiproc::pipe().unwrap();
        q.put((pattern(n), theirs, words.clone())).unwrap();
        assert_eq!(mine.recv().unwrap(), (n, true, words), "item of {n} bytes");
    }
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(0));
    assert!(q.empty());
}

fn hold_a_large_item((q, holding, never): (Queue<Parcel>, multiproc::Event, multiproc::Event)) {
    let item = q.get().unwrap();
    holding.set();
    never.wait().unwrap(); // killed here, holding `item`
    drop(item);
}

#[test]
fn consumer_killed_while_holding_a_large_item_leaves_nothing_in_dev_shm() {
    multiproc::init();
    let shm_before = shm_files();
    let q = Queue::<Parcel>::new().unwrap();
    let (holding, never) = (
        multiproc::Event::new().unwrap(),
        multiproc::Event::new().unwrap(),
    );
    let mut c = Process::new(
        hold_a_large_item,
        (q.clone(), holding.clone(), never.clone()),
    );
    c.start().unwrap();
    let (_mine, theirs) = multiproc::pipe().unwrap();
    q.put((pattern(16 << 20), theirs, vec!["x".into()]))
        .unwrap();
    holding.wait().unwrap();
    c.kill().unwrap();
    c.join().unwrap();
    assert!(q.empty());
    // The queue still works, large items included.
    let (mine, theirs) = multiproc::pipe().unwrap();
    q.put((pattern(16 << 20), theirs, Vec::new())).unwrap();
    let (b, conn, _) = q.get().unwrap();
    assert!(b.len() == 16 << 20 && check_pattern(&b));
    conn.send(&(1, true, Vec::new())).unwrap();
    assert_eq!(mine.recv().unwrap(), (1, true, Vec::new()));
    // The item travelled as an anonymous sealed segment: nothing of it is in /dev/shm.
    let ours = new_multiproc_files(&shm_before);
    assert!(ours.is_empty(), "left in /dev/shm: {ours:?}");
}

#[test]
fn items_larger_than_the_ring_between_processes() {
    multiproc::init();
    let q = Queue::<ByteBuf>::with_capacity(0, 8192).unwrap();
    let mut p = Process::new(put_big, (q.clone(), 3));
    p.start().unwrap();
    let b = q.get().unwrap();
    assert_eq!(b.len(), 3 << 20);
    assert!(check_pattern(&b));
    p.join().unwrap();
}

// --- handles ---------------------------------------------------------------------------------

#[test]
fn queue_travels_through_a_queue_and_a_pipe() {
    multiproc::init();
    let qq = Queue::<Queue<u32>>::new().unwrap();
    let inner = Queue::<u32>::new().unwrap();
    let mut p = Process::new(queue_in_queue, qq.clone());
    p.start().unwrap();
    qq.put(inner.clone()).unwrap();
    let got: Vec<u32> = (0..3).map(|_| inner.get().unwrap()).collect();
    assert_eq!(got, vec![0, 1, 2]);
    p.join().unwrap();

    let (a, b) = multiproc::pipe::<Queue<String>>().unwrap();
    let q = Queue::<String>::new().unwrap();
    let mut p = Process::new(queue_in_pipe, b);
    p.start().unwrap();
    a.send(&q).unwrap();
    assert_eq!(q.get().unwrap(), "via pipe");
    p.join().unwrap();
}

fn pool_task_puts((q, n): (Queue<u64>, u64)) -> u64 {
    q.put(n * 10).unwrap();
    n
}

#[test]
fn queue_inside_pool_task_arguments() {
    multiproc::init();
    let q = Queue::<u64>::new().unwrap();
    let pool = multiproc::Pool::new(2).unwrap();
    let got = pool
        .map(
            pool_task_puts,
            (1..=4).map(|n| (q.clone(), n)).collect::<Vec<_>>(),
        )
        .unwrap();
    assert_eq!(got, vec![1, 2, 3, 4]);
    let mut items: Vec<u64> = (0..4).map(|_| q.get().unwrap()).collect();
    items.sort_unstable();
    assert_eq!(items, vec![10, 20, 30, 40]);
    drop(pool);
}

#[test]
fn connection_inside_a_queue_item() {
    multiproc::init();
    let q = Queue::<(String, Connection<String>)>::new().unwrap();
    let mut p = Process::new(conn_in_queue, q.clone());
    p.start().unwrap();
    let (mine, theirs) = multiproc::pipe::<String>().unwrap();
    q.put(("Ann".into(), theirs)).unwrap();
    assert_eq!(mine.recv().unwrap(), "hi Ann");
    p.join().unwrap();
}

#[test]
fn handles_in_items_do_not_leak_descriptors() {
    multiproc::init();
    let q = Queue::<Connection<u8>>::new().unwrap();
    let before = fd_count();
    for _ in 0..200 {
        let (a, b) = multiproc::pipe::<u8>().unwrap();
        q.put(b).unwrap();
        let b = q.get().unwrap();
        a.send(&1).unwrap();
        assert_eq!(b.recv().unwrap(), 1);
    }
    for _ in 0..200 {
        let qq = Queue::<u8>::new().unwrap();
        let (a, b) = multiproc::pipe::<Queue<u8>>().unwrap();
        a.send(&qq).unwrap();
        let back = b.recv().unwrap();
        back.put(5).unwrap();
        assert_eq!(qq.get().unwrap(), 5);
    }
    // Exact under nextest (one test per process); other tests running in the same process
    // under `cargo test` may hold a few descriptors for a moment, while a leak here would
    // be hundreds.
    assert!(
        eventually(Duration::from_secs(5), || fd_count() <= before + FD_SLACK),
        "descriptors leaked: {before} before, {} after",
        fd_count()
    );
}

// --- SimpleQueue and JoinableQueue ---------------------------------------------------------

#[test]
fn simple_queue_across_processes() {
    multiproc::init();
    let inq = SimpleQueue::<String>::new().unwrap();
    let outq = SimpleQueue::<String>::new().unwrap();
    let mut p = Process::new(simple_echo, (inq.clone(), outq.clone()));
    p.start().unwrap();
    for w in ["a", "bc"] {
        inq.put(w.into()).unwrap();
    }
    assert_eq!(outq.get().unwrap(), "A");
    assert_eq!(outq.get().unwrap(), "BC");
    inq.put("end".into()).unwrap();
    p.join().unwrap();
    assert!(inq.empty() && outq.empty());
    inq.close();
    assert!(matches!(inq.get(), Err(Error::Closed)));
}

#[test]
fn joinable_queue_join_and_task_done() {
    multiproc::init();
    let q = JoinableQueue::<u32>::new().unwrap();
    let h = multiproc::spawn(joinable_worker, q.clone()).unwrap();
    for n in [5, 4, 3, 2, 1, 0] {
        q.put(n).unwrap();
    }
    q.join().unwrap();
    assert_eq!(q.unfinished_tasks(), 0);
    assert!(q.empty());
    assert_eq!(h.join().unwrap(), 15);
    // More task_done calls than items taken is an error.
    assert!(matches!(q.task_done(), Err(Error::InvalidOperation(_))));
    q.put(9).unwrap();
    assert!(!q.join_timeout(Duration::from_millis(50)).unwrap());
    assert!(matches!(q.task_done(), Err(Error::InvalidOperation(_))));
    assert_eq!(q.get().unwrap(), 9);
    q.task_done().unwrap();
    assert!(q.join_timeout(Duration::from_millis(50)).unwrap());
}

// --- leaks --------------------------------------------------------------------------------

#[test]
fn nothing_left_in_dev_shm_and_no_fd_growth() {
    multiproc::init();
    let shm = || {
        std::fs::read_dir("/dev/shm")
            .map(|d| d.count())
            .unwrap_or(0)
    };
    let shm_before = shm();
    // The first start opens the fork server's channel: count after it.
    multiproc::spawn(sleep_ms, 0).unwrap().join().unwrap();
    let before = fd_count();
    for _ in 0..30 {
        let q = Queue::<String>::new().unwrap();
        let h = multiproc::spawn(put_strings, (q.clone(), vec!["x".into(), "y".into()])).unwrap();
        h.join().unwrap();
        assert_eq!(q.get().unwrap(), "x");
        assert_eq!(q.get().unwrap(), "y");
    }
    assert!(
        eventually(Duration::from_secs(5), || fd_count() <= before + FD_SLACK),
        "descriptors leaked: {before} before, {} after",
        fd_count()
    );
    assert_eq!(shm(), shm_before, "files appeared in /dev/shm");
}

// --- large items in reusable message files ----------------------------------------------------

/// Items of [`echo_items`]: `None` ends.
type Items = Queue<Option<Vec<u8>>>;

/// Puts back each item it gets, until `None`.
fn echo_items((inq, outq): (Items, Items)) {
    while let Some(v) = inq.get().unwrap() {
        outq.put(Some(v)).unwrap();
    }
}

/// Bytes of `len` that depend on `seed` (so that one item's bytes cannot pass for another's).
fn seeded(len: usize, seed: u64) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u64).wrapping_mul(0x9e37_79b9).wrapping_add(seed) as u8 ^ (i >> 12) as u8)
        .collect()
}

#[test]
fn items_of_random_sizes_across_the_spill_threshold_round_trip_bit_exact() {
    multiproc::init();
    // A 64 KiB ring: items past about 32 KiB travel by descriptor, in message files the
    // sender reuses once the receiver gives them back (both ways here).
    let (inq, outq) = (
        Items::with_capacity(0, 64 << 10).unwrap(),
        Items::with_capacity(0, 64 << 10).unwrap(),
    );
    let mut p = Process::new(echo_items, (inq.clone(), outq.clone()));
    p.start().unwrap();
    let mut rng = Rng::new();
    for k in 0..300u64 {
        let len = match rng.below(20) {
            0 => rng.below(4 << 20),
            1..=4 => rng.below(64),
            _ => (24 << 10) + rng.below(144 << 10),
        } as usize;
        let v = seeded(len, k);
        inq.put(Some(v.clone())).unwrap();
        let back = outq.get().unwrap().unwrap();
        assert!(back == v, "item {k} of {len} bytes changed");
    }
    inq.put(None).unwrap();
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(0));
}

/// Takes `n` items, each a pattern: how many were whole.
fn take_patterns((q, n): (Queue<ByteBuf>, usize)) -> usize {
    (0..n).filter(|_| check_pattern(&q.get().unwrap())).count()
}

#[test]
fn message_files_never_given_back_are_dropped_and_descriptors_stay_bounded() {
    multiproc::init();
    let shm_before = shm_files();
    // Items nobody will take: their files stay lent for ever (as to a consumer killed
    // holding them), until this process, their sender, drops them to make room.
    let dead = Queue::<ByteBuf>::with_capacity(0, 64 << 10).unwrap();
    for _ in 0..6 {
        dead.put(ByteBuf::from(pattern(100 << 10))).unwrap();
    }
    drop(dead);
    let q = Queue::<ByteBuf>::with_capacity(0, 64 << 10).unwrap();
    let n = 1_000;
    let h = multiproc::spawn(take_patterns, (q.clone(), n)).unwrap();
    let mut before = 0;
    for i in 0..n {
        q.put(ByteBuf::from(pattern((100 << 10) + i))).unwrap();
        if i == 20 {
            before = fd_count();
        }
    }
    assert_eq!(h.join().unwrap(), n, "every item whole");
    assert!(
        fd_count() <= before + SPARE_MESSAGE_FILES,
        "descriptors grow with large items: {before} then {}",
        fd_count()
    );
    let ours = new_multiproc_files(&shm_before);
    assert!(ours.is_empty(), "left in /dev/shm: {ours:?}");
}

// --- shutdown (Python 3.13) -------------------------------------------------------------------

/// Says it is about to wait, then gets until the queue gives an error; returns what it got
/// and whether that error was `ShutDown`.
fn get_until_shutdown((q, ready): (Queue<u64>, multiproc::Event)) -> (Vec<u64>, bool) {
    ready.set();
    let mut got = Vec::new();
    loop {
        match q.get() {
            Ok(x) => got.push(x),
            Err(e) => return (got, matches!(e, Error::ShutDown)),
        }
    }
}

/// Fills a bounded queue, says so, then puts once more (blocking until shutdown).
fn put_into_full((q, ready): (Queue<u64>, multiproc::Event)) -> bool {
    q.put(1).unwrap();
    ready.set();
    matches!(q.put(2), Err(Error::ShutDown))
}

#[test]
fn shutdown_wakes_every_waiting_get_and_put_in_every_process() {
    multiproc::init();
    let q = Queue::<u64>::new().unwrap();
    let getters: Vec<_> = (0..3)
        .map(|_| {
            let ready = multiproc::Event::new().unwrap();
            let h = multiproc::spawn(get_until_shutdown, (q.clone(), ready.clone())).unwrap();
            (h, ready)
        })
        .collect();
    let full = Queue::<u64>::bounded(1).unwrap();
    let put_ready = multiproc::Event::new().unwrap();
    let putter = multiproc::spawn(put_into_full, (full.clone(), put_ready.clone())).unwrap();
    // A thread of this process waits too.
    let q2 = q.clone();
    let local = std::thread::spawn(move || q2.get());
    for (_, ready) in &getters {
        ready.wait().unwrap();
    }
    put_ready.wait().unwrap();
    assert!(!q.is_shutdown());
    q.shutdown();
    full.shutdown();
    for (h, _) in getters {
        assert_eq!(h.join().unwrap(), (vec![], true));
    }
    assert!(putter.join().unwrap());
    assert!(matches!(local.join().unwrap(), Err(Error::ShutDown)));
    // The item the putter got in before the shutdown is still there to take.
    assert_eq!(full.get().unwrap(), 1);
    assert!(matches!(full.get(), Err(Error::ShutDown)));
    assert!(matches!(q.try_get(), Err(Error::ShutDown)));
    assert!(matches!(
        q.get_timeout(Duration::from_secs(5)),
        Err(Error::ShutDown)
    ));
    assert!(zombies_of_me().is_empty());
}

fn is_shut(q: Queue<u64>) -> bool {
    q.is_shutdown()
}

#[test]
fn after_shutdown_consumers_drain_what_is_left() {
    multiproc::init();
    let q = Queue::<u64>::new().unwrap();
    for i in 0..5 {
        q.put(i).unwrap();
    }
    q.shutdown();
    assert!(matches!(q.put(9), Err(Error::ShutDown)));
    assert!(matches!(
        q.try_put_giving_back(9),
        Err(TryPutError::Failed(9, Error::ShutDown))
    ));
    assert!(multiproc::spawn(is_shut, q.clone())
        .unwrap()
        .join()
        .unwrap());
    let ready = multiproc::Event::new().unwrap();
    let h = multiproc::spawn(get_until_shutdown, (q.clone(), ready)).unwrap();
    assert_eq!(h.join().unwrap(), ((0..5).collect(), true));
}

fn join_joinable(q: JoinableQueue<u32>) -> bool {
    q.join().is_ok()
}

#[test]
fn immediate_shutdown_drops_items_and_releases_join() {
    multiproc::init();
    let q = JoinableQueue::<u32>::new().unwrap();
    for i in 0..3 {
        q.put(i).unwrap();
    }
    let joiner = multiproc::spawn(join_joinable, q.clone()).unwrap();
    assert!(!joiner.is_finished());
    q.shutdown_immediate();
    assert!(joiner.join().unwrap());
    assert!(q.empty());
    assert_eq!(q.unfinished_tasks(), 0);
    assert!(matches!(q.get(), Err(Error::ShutDown)));
    assert!(matches!(q.put(1), Err(Error::ShutDown)));
}

/// Takes two items, marks one done, says so, and waits to be killed.
fn take_two_finish_one((q, holding): (JoinableQueue<u32>, multiproc::Event)) {
    q.get().unwrap();
    q.get().unwrap();
    q.task_done().unwrap();
    holding.set();
    loop {
        sleep_ms(60_000);
    }
}

/// Issue 11.8: a consumer killed holding an item it had not marked done. `join` reports
/// it (pid, one item) instead of waiting for ever, then waits only for the rest.
#[test]
fn join_reports_a_consumer_that_died_holding_items() {
    multiproc::init();
    let q = JoinableQueue::<u32>::new().unwrap();
    for i in 0..3 {
        q.put(i).unwrap();
    }
    let holding = multiproc::Event::new().unwrap();
    let mut p = Process::new(take_two_finish_one, (q.clone(), holding.clone()));
    p.start().unwrap();
    assert!(holding.wait_timeout(Duration::from_secs(30)).unwrap());
    assert_eq!(q.unfinished_tasks(), 2);
    // Alive, it still holds its item: join waits.
    assert!(!q.join_timeout(Duration::from_millis(50)).unwrap());
    let pid = p.pid().unwrap();
    p.kill().unwrap();
    p.join().unwrap();
    match q.join_timeout(Duration::from_secs(60)) {
        Err(Error::ConsumerDied { pid: who, items: 1 }) => assert_eq!(who, pid),
        other => panic!("expected ConsumerDied, got {other:?}"),
    }
    // Its item is written off; the one still queued is all that is left.
    assert_eq!(q.unfinished_tasks(), 1);
    assert!(!q.join_timeout(Duration::from_millis(20)).unwrap());
    assert_eq!(q.get().unwrap(), 2);
    q.task_done().unwrap();
    q.join().unwrap();
}

/// A consumer that marks everything done and exits is no reason to complain, and items
/// marked done by another process than the one that took them count as well.
#[test]
fn join_is_quiet_about_consumers_that_finished_their_items() {
    multiproc::init();
    fn take_one(q: JoinableQueue<u32>) {
        q.get().unwrap();
    }
    let q = JoinableQueue::<u32>::new().unwrap();
    q.put(1).unwrap();
    q.put(2).unwrap();
    // The child takes item 1 and exits without marking it; we mark it for it.
    multiproc::spawn(take_one, q.clone())
        .unwrap()
        .join()
        .unwrap();
    q.task_done().unwrap();
    assert_eq!(q.get().unwrap(), 2);
    q.task_done().unwrap();
    assert!(q.join_timeout(Duration::from_secs(10)).unwrap());
}

/// Takes a descriptor out of the queue and writes on it.
fn write_on_queued_fd(q: Queue<(u32, multiproc::connection::Fd)>) {
    use std::io::Write;
    let (n, fd) = q.get().unwrap();
    writeln!(std::fs::File::from(fd.into_inner()), "item {n}").unwrap();
}

#[test]
fn a_plain_descriptor_travels_inside_a_queue_item() {
    multiproc::init();
    let q = Queue::<(u32, multiproc::connection::Fd)>::new().unwrap();
    let h = multiproc::spawn(write_on_queued_fd, q.clone()).unwrap();
    let (mut r, w) = std::os::unix::net::UnixStream::pair().unwrap();
    q.put((5, multiproc::connection::Fd::new(w.into())))
        .unwrap();
    h.join().unwrap();
    let mut s = String::new();
    std::io::Read::read_to_string(&mut r, &mut s).unwrap();
    assert_eq!(s, "item 5\n");
}
