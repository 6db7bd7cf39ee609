//! Queue workloads of the side-by-side benchmark (issue 4). Their CPython counterparts are
//! the functions of the same names in `benches/compare.py` (`multiprocessing.Queue`).

use std::time::{Duration, Instant};

use multiproc::shared_memory::SharedBytes;
use multiproc::{Event, Process, Queue};
use serde_bytes::ByteBuf;

// --- parameters shared with benches/compare.py (keep them equal) --------------------------
const QUEUE_ROUNDS: usize = 3;
const QUEUE_SMALL_COUNT: usize = 200_000;
const QUEUE_BIG_MSG: usize = 1 << 20;
const QUEUE_BIG_COUNT: usize = 500;
const QUEUE_MPMC_SIDES: usize = 4;
const QUEUE_MPMC_PER_PRODUCER: usize = 100_000;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The next item of a large-item round, from producer `p`: never a silent hang. A producer
/// that failed (its `put` gave an error: it panics, exit code 1) or one that ended without
/// having put the item (which would be a lost item) stops the benchmark with a message.
fn take<T>(q: &Queue<T>, p: &Process) -> T
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    loop {
        let ended = p.exitcode();
        match q.get_timeout(Duration::from_secs(1)) {
            Ok(v) => return v,
            Err(multiproc::Error::Empty) => match ended {
                None => {}
                Some(0) => panic!("the producer ended without error but an item is missing"),
                Some(c) => panic!("the producer failed (exit code {c}; its message is above)"),
            },
            Err(e) => panic!("get: {e}"),
        }
    }
}

fn small_producer((q, count): (Queue<[u8; 8]>, usize)) -> multiproc::Result<()> {
    q.put(*b"ready!!!")?; // the clock starts when the parent takes this
    for i in 0..count {
        q.put((i as u64).to_le_bytes())?;
    }
    Ok(())
}

fn small_round() -> f64 {
    let q = Queue::<[u8; 8]>::new().expect("queue");
    let mut p = Process::new(small_producer, (q.clone(), QUEUE_SMALL_COUNT));
    p.start().expect("start");
    q.get().expect("ready");
    let t0 = Instant::now();
    for _ in 0..QUEUE_SMALL_COUNT {
        q.get().expect("get");
    }
    let secs = t0.elapsed().as_secs_f64();
    p.join().expect("join");
    secs
}

/// 8-byte items, one producer process → the parent: items per second (median of rounds).
pub fn queue_8b_1p1c() -> f64 {
    let secs = median((0..QUEUE_ROUNDS).map(|_| small_round()).collect());
    QUEUE_SMALL_COUNT as f64 / secs
}

fn big_producer((q, size, count): (Queue<ByteBuf>, usize, usize)) -> multiproc::Result<()> {
    let msg = ByteBuf::from(vec![b'x'; size]);
    q.put(ByteBuf::from(b"r".to_vec()))?;
    for _ in 0..count {
        q.put(msg.clone())?;
    }
    Ok(())
}

fn big_round() -> f64 {
    let q = Queue::<ByteBuf>::new().expect("queue");
    let mut p = Process::new(big_producer, (q.clone(), QUEUE_BIG_MSG, QUEUE_BIG_COUNT));
    p.start().expect("start");
    q.get().expect("ready");
    let t0 = Instant::now();
    for _ in 0..QUEUE_BIG_COUNT {
        let b = q.get().expect("get");
        assert_eq!(b.len(), QUEUE_BIG_MSG, "an item changed size");
    }
    let secs = t0.elapsed().as_secs_f64();
    p.join().expect("join");
    secs
}

/// 1 MiB byte strings, one producer process → the parent: GB/s (median of rounds).
pub fn queue_1mib_1p1c() -> f64 {
    let secs = median((0..QUEUE_ROUNDS).map(|_| big_round()).collect());
    (QUEUE_BIG_MSG * QUEUE_BIG_COUNT) as f64 / secs / 1e9
}

fn mpmc_producer((q, go, n): (Queue<[u8; 8]>, Event, usize)) -> multiproc::Result<()> {
    go.wait().unwrap();
    for i in 0..n {
        q.put((i as u64).to_le_bytes())?;
    }
    Ok(())
}

fn mpmc_consumer((q, go, n): (Queue<[u8; 8]>, Event, usize)) -> multiproc::Result<()> {
    go.wait().unwrap();
    for _ in 0..n {
        q.get()?;
    }
    Ok(())
}

fn mpmc_round() -> f64 {
    let q = Queue::<[u8; 8]>::new().expect("queue");
    let go = Event::new().expect("event");
    let n = QUEUE_MPMC_PER_PRODUCER;
    let mut ps: Vec<Process> = (0..QUEUE_MPMC_SIDES)
        .flat_map(|_| {
            [
                Process::new(mpmc_producer, (q.clone(), go.clone(), n)),
                Process::new(mpmc_consumer, (q.clone(), go.clone(), n)),
            ]
        })
        .collect();
    for p in &mut ps {
        p.start().expect("start");
    }
    std::thread::sleep(Duration::from_millis(200)); // all started and waiting
    let t0 = Instant::now();
    go.set();
    for p in &ps {
        p.join().expect("join");
        assert_eq!(p.exitcode(), Some(0));
    }
    t0.elapsed().as_secs_f64()
}

/// 8-byte items, 4 producer and 4 consumer processes: items per second (median of rounds).
pub fn queue_8b_4p4c() -> f64 {
    let secs = median((0..QUEUE_ROUNDS).map(|_| mpmc_round()).collect());
    (QUEUE_MPMC_SIDES * QUEUE_MPMC_PER_PRODUCER) as f64 / secs
}

// --- 1 MiB items of the types users write, a 1 GiB item (issue 12) -------------------------

/// An item of about 1 MiB of one type, and how many bytes of data it holds.
pub trait Sized1MiB: serde::Serialize + serde::de::DeserializeOwned + Clone + 'static {
    fn make() -> Self;
    fn data_len(&self) -> usize;
}

impl Sized1MiB for Vec<u8> {
    fn make() -> Self {
        vec![b'x'; QUEUE_BIG_MSG]
    }
    fn data_len(&self) -> usize {
        self.len()
    }
}

impl Sized1MiB for Vec<u32> {
    fn make() -> Self {
        vec![7; QUEUE_BIG_MSG / 4]
    }
    fn data_len(&self) -> usize {
        self.len() * 4
    }
}

impl Sized1MiB for Vec<f64> {
    fn make() -> Self {
        vec![1.5; QUEUE_BIG_MSG / 8]
    }
    fn data_len(&self) -> usize {
        self.len() * 8
    }
}

/// A struct as users write it: an id and a vector of floats.
#[derive(serde::Serialize, serde::Deserialize, Clone)]
pub struct Record {
    id: u64,
    data: Vec<f64>,
}

impl Sized1MiB for Record {
    fn make() -> Self {
        Record {
            id: 1,
            data: vec![1.5; QUEUE_BIG_MSG / 8],
        }
    }
    fn data_len(&self) -> usize {
        self.data.len() * 8
    }
}

impl Sized1MiB for String {
    fn make() -> Self {
        "x".repeat(QUEUE_BIG_MSG)
    }
    fn data_len(&self) -> usize {
        self.len()
    }
}

fn typed_producer<T: Sized1MiB>((q, count): (Queue<T>, usize)) {
    let item = T::make();
    q.put(item.clone()).expect("put"); // ready: the clock starts when the parent takes this
    for _ in 0..count {
        q.put(item.clone()).expect("put");
    }
}

fn typed_round<T: Sized1MiB>() -> f64 {
    let q = Queue::<T>::new().expect("queue");
    let mut p = Process::new(typed_producer::<T>, (q.clone(), QUEUE_BIG_COUNT));
    p.start().expect("start");
    take(&q, &p); // ready
    let t0 = Instant::now();
    for _ in 0..QUEUE_BIG_COUNT {
        let v = take(&q, &p);
        assert_eq!(v.data_len(), QUEUE_BIG_MSG, "an item changed size");
    }
    let secs = t0.elapsed().as_secs_f64();
    p.join().expect("join");
    secs
}

/// 1 MiB items of type `T`, one producer process → the parent: GB/s (median of rounds).
pub fn queue_1mib_typed<T: Sized1MiB>() -> f64 {
    let secs = median((0..QUEUE_ROUNDS).map(|_| typed_round::<T>()).collect());
    (QUEUE_BIG_MSG * QUEUE_BIG_COUNT) as f64 / secs / 1e9
}

const HUGE_ITEM: usize = 1 << 30;

fn huge_producer((q, ready): (Queue<Vec<u8>>, Event)) {
    let item = vec![b'x'; HUGE_ITEM];
    ready.set(); // the clock starts here: the item exists, `put` has not begun
    q.put(item).expect("put");
}

/// One round of a 1 GiB item from `producer` (in a child) to the parent: seconds from the
/// child's `put` to the parent holding the item.
fn huge_round<T>(producer: fn((Queue<T>, Event)), check: fn(&[u8])) -> f64
where
    T: serde::Serialize + serde::de::DeserializeOwned + std::ops::Deref<Target = [u8]> + 'static,
{
    let q = Queue::<T>::new().expect("queue");
    let ready = Event::new().expect("event");
    let mut p = Process::new(producer, (q.clone(), ready.clone()));
    p.start().expect("start");
    ready.wait().unwrap();
    let t0 = Instant::now();
    let v = take(&q, &p);
    let secs = t0.elapsed().as_secs_f64();
    assert_eq!(v.len(), HUGE_ITEM, "the item changed size");
    assert_eq!((v[0], v[HUGE_ITEM - 1]), (b'x', b'x'));
    check(&v);
    drop(v);
    p.join().expect("join");
    secs
}

/// One 1 GiB `Vec<u8>` from a child to the parent: effective GB/s from the child's `put`
/// to the parent's decoded vector (median of rounds).
pub fn queue_1gib_item() -> f64 {
    let secs = median(
        (0..QUEUE_ROUNDS)
            .map(|_| huge_round(huge_producer, |_| ()))
            .collect(),
    );
    HUGE_ITEM as f64 / secs / 1e9
}

fn handed_over_producer(args: (Queue<Vec<u8>>, Event)) {
    // As a user who installed `ShmAllocator` (default threshold) would: the 1 GiB vector is
    // made in a memory file, and `put` hands the file over.
    crate::HEAP.set_threshold(multiproc::ShmAllocator::new().threshold());
    huge_producer(args);
}

/// Checks that `b` is the producer's memory file, handed over (not a copy).
fn handed_over(b: &[u8]) {
    assert!(
        crate::heap_files::in_heap_file(b.as_ptr()),
        "the 1 GiB item was copied, not handed over"
    );
}

/// One 1 GiB `Vec<u8>` from a child to the parent with `multiproc::ShmAllocator` installed: the same
/// workload as [`queue_1gib_item`], from the child's `put` to the parent's decoded vector,
/// whose buffer is now the child's memory file, handed over (median of rounds).
pub fn queue_1gib_item_handed_over() -> f64 {
    let secs = median(
        (0..QUEUE_ROUNDS)
            .map(|_| huge_round(handed_over_producer, handed_over))
            .collect(),
    );
    HUGE_ITEM as f64 / secs / 1e9
}

fn shared_producer((q, ready): (Queue<SharedBytes>, Event)) {
    let item = SharedBytes::build(HUGE_ITEM, |b| b.fill(b'x')).expect("shared bytes");
    ready.set(); // the clock starts here: the bytes exist, `put` has not begun
    q.put(item).expect("put");
}

/// One 1 GiB [`SharedBytes`] from a child to the parent, handed over by descriptor: the
/// effective GB/s from the child's `put` to the parent holding the mapped bytes (median of
/// rounds). No byte is copied; reading them afterwards is the receiver's own work.
pub fn queue_1gib_shared_bytes() -> f64 {
    let secs = median(
        (0..QUEUE_ROUNDS)
            .map(|_| huge_round(shared_producer, |_| ()))
            .collect(),
    );
    HUGE_ITEM as f64 / secs / 1e9
}

// --- an ndarray matrix against a numpy array (issue 12; the `ndarray` feature) --------------

/// 2-D arrays of `f64` through a `Queue`, as numpy arrays go through `multiprocessing.Queue`
/// in `compare.py`: 1 MiB (128 × 1024) and 64 MiB (1024 × 8192) items.
#[cfg(feature = "ndarray")]
pub mod nd {
    use super::{median, QUEUE_ROUNDS};
    use multiproc::ndarray::Array2;
    use multiproc::{Process, Queue};
    use std::time::Instant;

    // Parameters shared with benches/compare.py (keep them equal).
    const SMALL: (usize, usize) = (128, 1024);
    const SMALL_COUNT: usize = 500;
    const BIG: (usize, usize) = (1024, 8192);
    const BIG_COUNT: usize = 16;

    fn producer((q, shape, count): (Queue<Array2<f64>>, (usize, usize), usize)) {
        let item = Array2::from_elem(shape, 1.5);
        // By reference, as Python's `q.put(arr)`: the array stays the producer's, and no
        // clone is made per put.
        q.put_ref(&item).expect("put"); // ready: the clock starts when the parent takes this
        for _ in 0..count {
            q.put_ref(&item).expect("put");
        }
    }

    fn round(shape: (usize, usize), count: usize) -> f64 {
        let q = Queue::<Array2<f64>>::new().expect("queue");
        let mut p = Process::new(producer, (q.clone(), shape, count));
        p.start().expect("start");
        super::take(&q, &p); // ready
        let t0 = Instant::now();
        for _ in 0..count {
            let a = super::take(&q, &p);
            assert_eq!(a.dim(), shape, "an array changed shape");
        }
        let secs = t0.elapsed().as_secs_f64();
        p.join().expect("join");
        secs
    }

    fn gbps(shape: (usize, usize), count: usize) -> f64 {
        let secs = median((0..QUEUE_ROUNDS).map(|_| round(shape, count)).collect());
        (shape.0 * shape.1 * 8 * count) as f64 / secs / 1e9
    }

    /// 500 matrices of 1 MiB, one producer process → the parent: GB/s (median of rounds).
    pub fn queue_ndarray_1mib() -> f64 {
        gbps(SMALL, SMALL_COUNT)
    }

    /// 16 matrices of 64 MiB, one producer process → the parent: GB/s (median of rounds).
    pub fn queue_ndarray_64mib() -> f64 {
        gbps(BIG, BIG_COUNT)
    }
}
