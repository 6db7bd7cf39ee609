//! The codec across processes: every type the fast paths serve (vectors of plain numbers,
//! strings, byte strings, and these inside structs, tuples and enums) round-trips bit-exact
//! through queues, pipes, pool tasks and manager proxies, for random sizes from 0 to 4 MiB (property tests);
//! values that need a self-describing format give a clear `Error::Codec`.

mod common;

use common::echo::{self, echo, echo_pipe, kind, runner, Echoed};
use common::*;
use multiproc::{Connection, Error, Event, JoinableQueue, Pool, Process, Queue, SimpleQueue};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

#[derive(Serialize, Deserialize, Debug, Clone)]
enum Item {
    U8(Vec<u8>),
    U16(Vec<u16>),
    U32(Vec<u32>),
    U64(Vec<u64>),
    I8(Vec<i8>),
    I16(Vec<i16>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    Text(String),
    Bytes(ByteBuf),
    /// Numbers inside a struct inside an enum.
    Record {
        id: u64,
        data: Vec<f64>,
        name: String,
    },
    /// Inside a tuple, next to a boxed slice.
    Tuple((u32, Vec<i16>, Box<[u64]>)),
    Stop,
}

impl Echoed for Item {
    fn same(&self, other: &Self) -> bool {
        same(self, other)
    }
}

/// Bit-exact equality (floats by their bits, so NaN payloads count).
fn same(a: &Item, b: &Item) -> bool {
    fn f32s(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }
    fn f64s(v: &[f64]) -> Vec<u64> {
        v.iter().map(|x| x.to_bits()).collect()
    }
    use Item::*;
    match (a, b) {
        (U8(x), U8(y)) => x == y,
        (U16(x), U16(y)) => x == y,
        (U32(x), U32(y)) => x == y,
        (U64(x), U64(y)) => x == y,
        (I8(x), I8(y)) => x == y,
        (I16(x), I16(y)) => x == y,
        (I32(x), I32(y)) => x == y,
        (I64(x), I64(y)) => x == y,
        (F32(x), F32(y)) => f32s(x) == f32s(y),
        (F64(x), F64(y)) => f64s(x) == f64s(y),
        (Text(x), Text(y)) => x == y,
        (Bytes(x), Bytes(y)) => x == y,
        (
            Record { id, data, name },
            Record {
                id: i2,
                data: d2,
                name: n2,
            },
        ) => id == i2 && f64s(data) == f64s(d2) && name == n2,
        (Tuple((a1, b1, c1)), Tuple((a2, b2, c2))) => a1 == a2 && b1 == b2 && c1 == c2,
        (Stop, Stop) => true,
        _ => false,
    }
}

/// Random bytes from a seed (xorshift): fast enough for 4 MiB per case.
fn bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(n);
    out
}

fn nums<T: bytemuck::Pod>(seed: u64, size: usize) -> Vec<T> {
    let n = size / std::mem::size_of::<T>();
    let b = bytes(seed, n * std::mem::size_of::<T>());
    let mut v = vec![T::zeroed(); n];
    bytemuck::cast_slice_mut::<T, u8>(&mut v).copy_from_slice(&b);
    v
}

/// A string of about `size` bytes with one-, two-, three- and four-byte characters.
fn text(seed: u64, size: usize) -> String {
    const CHARS: [char; 6] = ['a', 'Z', '7', 'é', '€', '🦀'];
    let mut s = String::with_capacity(size + 4);
    for b in bytes(seed, size) {
        if s.len() >= size {
            break;
        }
        s.push(CHARS[b as usize % CHARS.len()]);
    }
    s
}

fn make(kind: u8, size: usize, seed: u64) -> Item {
    match kind % 14 {
        0 => Item::U8(nums(seed, size)),
        1 => Item::U16(nums(seed, size)),
        2 => Item::U32(nums(seed, size)),
        3 => Item::U64(nums(seed, size)),
        4 => Item::I8(nums(seed, size)),
        5 => Item::I16(nums(seed, size)),
        6 => Item::I32(nums(seed, size)),
        7 => Item::I64(nums(seed, size)),
        8 => Item::F32(nums(seed, size)),
        9 => Item::F64(nums(seed, size)),
        10 => Item::Text(text(seed, size)),
        11 => Item::Bytes(ByteBuf::from(bytes(seed, size))),
        12 => Item::Record {
            id: seed,
            data: nums(seed, size),
            name: text(seed ^ 1, size % 100),
        },
        _ => Item::Tuple((
            seed as u32,
            nums(seed, size / 2),
            nums::<u64>(seed ^ 2, size / 2).into_boxed_slice(),
        )),
    }
}

/// Items of every kind, of sizes from 0 to 4 MiB (small sizes drawn often too).
fn items() -> impl Strategy<Value = Item> {
    let size = prop_oneof![0usize..64, 0usize..(64 << 10), 0usize..=(4 << 20)];
    (any::<u8>(), size, any::<u64>()).prop_map(|(k, n, s)| make(k, n, s))
}

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
