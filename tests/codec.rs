//! The codec across processes: every type the fast paths serve (vectors of plain numbers,
//! strings, byte strings, and these inside structs, tuples and enums) round-trips bit-exact
//! through queues, pipes, pool tasks and manager proxies, for random sizes from 0 to 4 MiB (property tests);
//! values that need a self-describing format give a clear `Error::Codec`.

mod common;

use common::echo::{self, echo, echo_pipe, kind, runner};
use common::items::*;
use common::*;
use multiproc::{Connection, Error, Event, JoinableQueue, Pool, Process, Queue, SimpleQueue};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};

// --- echo children ---------------------------------------------------------------------------

fn echo_joinable_to_simple((inq, outq): (JoinableQueue<Item>, SimpleQueue<Item>)) {
    loop {
        let v = inq.get().unwrap();
        inq.task_done().unwrap();
        match v {
            Item::Stop => return,
            v => outq.put(v).unwrap(),
        }
    }
}

// --- property tests ----------------------------------------------------------------------------

#[test]
fn every_type_round_trips_bit_exact_through_a_queue() {
    echo::through_a_queue(items(), 40);
}

#[test]
fn every_type_round_trips_bit_exact_through_joinable_and_simple_queues() {
    multiproc::init();
    let (a, b) = (JoinableQueue::new().unwrap(), SimpleQueue::new().unwrap());
    let mut p = Process::new(echo_joinable_to_simple, (a.clone(), b.clone()));
    p.start().unwrap();
    runner(20)
        .run(&items(), |item| {
            a.put(item.clone()).unwrap();
            let back = b.get().unwrap();
            prop_assert!(same(&item, &back), "{}", kind(&item));
            Ok(())
        })
        .unwrap();
    a.put(Item::Stop).unwrap();
    a.join().unwrap();
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(0));
}

#[test]
fn every_type_round_trips_bit_exact_through_a_pipe() {
    echo::through_a_pipe(items(), 30);
}

#[test]
fn every_type_round_trips_bit_exact_as_pool_arguments_and_results() {
    multiproc::init();
    let pool = Pool::new(1).unwrap();
    echo::through_a_pool(&pool, items(), 20);
    // Many small ones in one map (several per task).
    let small: Vec<Item> = (0..200).map(|i| make(i as u8, i * 3, i as u64)).collect();
    let back = pool.map(echo::<Item>, small.clone()).unwrap();
    assert!(small.iter().zip(&back).all(|(a, b)| same(a, b)));
    pool.close();
    pool.join().unwrap();
}

#[test]
fn every_type_round_trips_bit_exact_through_a_manager_proxy() {
    multiproc::init();
    let m = multiproc::Manager::start().unwrap();
    let l = m.list::<Item, _>(Vec::new()).unwrap();
    runner(12)
        .run(&items(), |item| {
            // Into the manager's process and back.
            l.push(item.clone()).unwrap();
            let back = l.pop().unwrap();
            prop_assert!(same(&item, &back), "{}", kind(&item));
            Ok(())
        })
        .unwrap();
    m.shutdown().unwrap();
}

// --- large values (past the size where they travel in a sealed memory file) -------------------

/// One value of every kind, each larger than a pipe's large-message area (2 MiB), so that
/// it travels in a sealed memory file.
fn large_items() -> Vec<Item> {
    (0..14u8)
        .map(|k| make(k, (3 << 20) + usize::from(k) * 4099, u64::from(k) + 7))
        .collect()
}

#[test]
fn large_values_of_every_type_through_a_pipe_and_a_pool_leave_nothing_behind() {
    multiproc::init();
    let shm_before = shm_files();
    let (here, there) = multiproc::pipe::<Option<Item>>().unwrap();
    let mut p = Process::new(echo_pipe::<Item>, there);
    p.start().unwrap();
    let pool = Pool::new(1).unwrap();
    let items = large_items();
    // A first round opens what stays open (the pool's worker, lanes): descriptors are
    // counted after it.
    let round = || {
        for item in &items {
            here.send(&Some(item.clone())).unwrap();
            let back = here.recv().unwrap();
            assert!(back.is_some_and(|b| same(item, &b)), "pipe: {}", kind(item));
            let back = pool.apply(echo::<Item>, item.clone()).unwrap();
            assert!(same(item, &back), "pool apply: {}", kind(item));
        }
        let back = pool.map(echo::<Item>, items.clone()).unwrap();
        assert!(items.iter().zip(&back).all(|(a, b)| same(a, b)), "pool map");
    };
    round();
    let fds = fd_count();
    round();
    // Up to the spare message files this process keeps (bounded), not one per value.
    assert!(
        fd_count() <= fds + common::SPARE_MESSAGE_FILES,
        "descriptors grow with large values: {} then {}",
        fds,
        fd_count()
    );
    here.send(&None).unwrap();
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(0));
    pool.close();
    pool.join().unwrap();
    let ours = new_multiproc_files(&shm_before);
    assert!(ours.is_empty(), "left in /dev/shm: {ours:?}");
}

fn hold_a_large_value((c, holding, never): (Connection<Item>, Event, Event)) {
    let item = c.recv().unwrap();
    holding.set();
    never.wait().unwrap(); // killed here, holding `item`
    drop(item);
}

#[test]
fn a_receiver_killed_holding_a_large_value_leaves_nothing_behind() {
    multiproc::init();
    let shm_before = shm_files();
    let once = || {
        let (here, there) = multiproc::pipe::<Item>().unwrap();
        let (holding, never) = (Event::new().unwrap(), Event::new().unwrap());
        let mut c = Process::new(hold_a_large_value, (there, holding.clone(), never.clone()));
        c.start().unwrap();
        here.send(&make(12, 16 << 20, 3)).unwrap();
        holding.wait().unwrap();
        c.kill().unwrap();
        c.join().unwrap();
        // The receiver is gone: sending again fails cleanly (no hang, no panic).
        let e = here.send(&make(0, 16 << 20, 4)).unwrap_err();
        assert!(matches!(e, Error::Io(_)), "{e:?}");
    };
    // The first rounds open what stays open: this process's side of starting children,
    // and its spare message files (the one lent to each killed receiver stays lent until
    // the sender's bounded cache of at most 4 files drops it, oldest first).
    for _ in 0..5 {
        once();
    }
    let fds = fd_count();
    for _ in 0..3 {
        once();
    }
    assert_eq!(fd_count(), fds, "descriptors left open");
    let ours = new_multiproc_files(&shm_before);
    assert!(ours.is_empty(), "left in /dev/shm: {ours:?}");
}

// --- the format's limits -----------------------------------------------------------------------

#[derive(Serialize, Deserialize, Debug, PartialEq)]
#[serde(untagged)]
enum Untagged {
    N(u32),
    S(String),
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Inner {
    a: u32,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Flattened {
    #[serde(flatten)]
    inner: Inner,
    b: u32,
}

/// The error and its sources, in one line.
fn chain(e: &Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(x) = src {
        s.push_str(&format!(": {x}"));
        src = x.source();
    }
    s
}

fn not_self_describing(e: Error) -> bool {
    matches!(&e, Error::Codec(_)) && e.to_string().contains("not self-describing")
}

#[test]
fn types_that_need_a_self_describing_format_give_a_clear_codec_error() {
    multiproc::init();
    let c = multiproc::codec::encode(&Untagged::N(3)).unwrap();
    assert!(not_self_describing(
        multiproc::codec::decode::<Untagged>(&c).unwrap_err()
    ));
    let c = multiproc::codec::encode(&serde_json::json!({"a": 1})).unwrap();
    assert!(not_self_describing(
        multiproc::codec::decode::<serde_json::Value>(&c).unwrap_err()
    ));
    // Through a queue and a pipe: the error reaches the receiver, nothing panics, and the
    // channel goes on working.
    let q = Queue::<Flattened>::new().unwrap();
    q.put(Flattened {
        inner: Inner { a: 1 },
        b: 2,
    })
    .unwrap();
    assert!(not_self_describing(q.get().unwrap_err()));
    let (a, b) = multiproc::pipe::<serde_json::Value>().unwrap();
    a.send(&serde_json::json!([1, "x"])).unwrap();
    assert!(not_self_describing(b.recv().unwrap_err()));
}

#[test]
fn garbage_never_panics() {
    // Random bytes decoded as every kind of item: an error or a value, never a panic.
    runner(2000)
        .run(&prop::collection::vec(any::<u8>(), 0..64), |b| {
            let _ = multiproc::codec::decode::<Item>(&b);
            let _ = multiproc::codec::decode::<(String, Vec<f64>, Option<Box<Item>>)>(&b);
            let _ = multiproc::codec::decode::<Vec<()>>(&b);
            Ok(())
        })
        .unwrap();
    // A deep chain of `Some`s stops at the nesting limit instead of the stack's end.
    #[derive(Deserialize, Debug)]
    #[allow(dead_code)]
    struct Chain(Option<Box<Chain>>);
    let deep = vec![1u8; 100_000];
    assert!(matches!(
        multiproc::codec::decode::<Chain>(&deep),
        Err(e @ Error::Codec(_)) if chain(&e).contains("deep")
    ));
    // A huge count of empty elements is refused before any work.
    let mut b = u64::MAX.to_le_bytes().to_vec();
    b.push(0);
    assert!(matches!(
        multiproc::codec::decode::<Vec<()>>(&b),
        Err(Error::Codec(_))
    ));
}
