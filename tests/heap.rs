//! `ShmAllocator` as the global allocator: large vectors, strings and byte buffers travel
//! between processes as their memory files (handed over, not copied) through queues, pipes
//! and pool results, bit-exact; value semantics are kept (a vector sent by reference stays
//! the sender's, a forked child gets its own copy); allocations grow and shrink across the
//! threshold; and nothing is left behind.

mod common;

use common::echo::{self, echo, kind};
use common::heap_files::{heap_fds, in_heap_file};
use common::items::*;
use common::*;
use multiproc::{Connection, Event, JoinableQueue, Pool, Process, Queue, SimpleQueue, StartMethod};

/// Allocations of 256 KiB or more live in memory files: the tests move items of 1 MiB.
#[global_allocator]
static HEAP: multiproc::ShmAllocator = multiproc::ShmAllocator::from_size(256 << 10);

/// The large buffers of an item (at least 256 KiB each, so in memory files when made).
fn buffers(i: &Item) -> Vec<*const u8> {
    match i {
        Item::U8(v) => vec![v.as_ptr()],
        Item::U16(v) => vec![v.as_ptr().cast()],
        Item::U32(v) => vec![v.as_ptr().cast()],
        Item::U64(v) => vec![v.as_ptr().cast()],
        Item::I8(v) => vec![v.as_ptr().cast()],
        Item::I16(v) => vec![v.as_ptr().cast()],
        Item::I32(v) => vec![v.as_ptr().cast()],
        Item::I64(v) => vec![v.as_ptr().cast()],
        Item::F32(v) => vec![v.as_ptr().cast()],
        Item::F64(v) => vec![v.as_ptr().cast()],
        Item::Text(s) => vec![s.as_ptr()],
        Item::Bytes(b) => vec![b.as_ptr()],
        Item::Record { data, .. } => vec![data.as_ptr().cast()],
        Item::Tuple((_, a, b)) => vec![a.as_ptr().cast(), b.as_ptr().cast()],
        Item::Stop => vec![],
    }
}

/// Item `k` of the 14 kinds, of a little over 1 MiB.
fn large(k: u8) -> Item {
    make(k, (1 << 20) + usize::from(k) * 4099, u64::from(k) + 7)
}

fn check_large(k: u8, got: &Item) {
    assert!(same(got, &large(k)), "kind {k}: {}", kind(got));
    for p in buffers(got) {
        assert!(
            in_heap_file(p),
            "kind {k}: the received buffer is not the sender's file"
        );
    }
}

fn put_every_kind(q: Queue<Item>) {
    for k in 0..14 {
        let item = large(k);
        assert!(
            buffers(&item).into_iter().all(in_heap_file),
            "made in a file"
        );
        q.put(item).unwrap();
    }
}

#[test]
fn large_values_of_every_type_travel_as_their_memory_files_through_a_queue() {
    multiproc::init();
    let q = Queue::new().unwrap();
    let mut p = Process::new(put_every_kind, q.clone());
    p.start().unwrap();
    for k in 0..14 {
        check_large(k, &q.get().unwrap());
    }
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(0));
}

fn send_every_kind(c: Connection<Item>) {
    for k in 0..14 {
        c.send(&large(k)).unwrap();
    }
}

fn put_every_kind_joinable(q: JoinableQueue<Item>) {
    for k in 0..14 {
        q.put(large(k)).unwrap();
    }
    q.join().unwrap();
}

fn put_every_kind_simple(q: SimpleQueue<Item>) {
    for k in 0..14 {
        q.put(large(k)).unwrap();
    }
}

#[test]
fn large_values_of_every_type_travel_as_their_memory_files_through_pipes_and_other_queues() {
    multiproc::init();
    let (here, there) = multiproc::pipe::<Item>().unwrap();
    let mut p = Process::new(send_every_kind, there);
    p.start().unwrap();
    for k in 0..14 {
        check_large(k, &here.recv().unwrap());
    }
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(0));

    let q = JoinableQueue::new().unwrap();
    let mut p = Process::new(put_every_kind_joinable, q.clone());
    p.start().unwrap();
    for k in 0..14 {
        check_large(k, &q.get().unwrap());
        q.task_done().unwrap();
    }
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(0));

    let q = SimpleQueue::new().unwrap();
    let mut p = Process::new(put_every_kind_simple, q.clone());
    p.start().unwrap();
    for k in 0..14 {
        check_large(k, &q.get().unwrap());
    }
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(0));
}

#[test]
fn large_pool_results_travel_as_their_memory_files() {
    multiproc::init();
    let pool = Pool::new(2).unwrap();
    let got = pool.map(large, 0..14u8).unwrap();
    for (k, item) in got.iter().enumerate() {
        check_large(k as u8, item);
    }
    // Arguments travel too (copied: a pool task's arguments are not handed over), and an
    // echoed result is a private mapping in the worker, so it comes back copied.
    let items: Vec<Item> = (0..14).map(large).collect();
    let back = pool.map(echo::<Item>, items.clone()).unwrap();
    assert!(items.iter().zip(&back).all(|(a, b)| same(a, b)));
    pool.close();
    pool.join().unwrap();
}

#[test]
fn every_type_round_trips_bit_exact_with_the_allocator_installed() {
    // Random sizes from 0 to 4 MiB: below and above the threshold, handed over one way.
    echo::through_a_queue(items(), 16);
    echo::through_a_pipe(items(), 16);
    multiproc::init();
    let pool = Pool::new(1).unwrap();
    echo::through_a_pool(&pool, items(), 8);
    pool.close();
    pool.join().unwrap();
    // A manager proxy copies (no memory file crosses it) and still works.
    let m = multiproc::Manager::start().unwrap();
    let l = m.list::<Item, _>(Vec::new()).unwrap();
    for k in [0u8, 10, 12] {
        l.push(large(k)).unwrap();
        assert!(same(&l.pop().unwrap(), &large(k)));
    }
    m.shutdown().unwrap();
}

const N: u64 = 200_000; // 1.6 MB of u64

fn send_then_change(c: Connection<Vec<u64>>) {
    let mut v: Vec<u64> = (0..N).collect();
    c.send(&v).unwrap(); // by reference: handed over, and the pages become copy-on-write
    for x in &mut v {
        *x *= 3;
    }
    assert!(v.iter().enumerate().all(|(i, &x)| x == 3 * i as u64));
    c.send(&v).unwrap(); // sent again: copied (the file no longer matches)
    let echoed = c.recv().unwrap();
    assert!(echoed
        .iter()
        .enumerate()
        .all(|(i, &x)| x == 3 * i as u64 + 1));
    assert!(v.iter().enumerate().all(|(i, &x)| x == 3 * i as u64));
}

#[test]
fn a_vector_sent_by_reference_stays_the_senders() {
    multiproc::init();
    let (here, there) = multiproc::pipe::<Vec<u64>>().unwrap();
    let mut p = Process::new(send_then_change, there);
    p.start().unwrap();
    let mut first = here.recv().unwrap();
    assert!(in_heap_file(first.as_ptr().cast()));
    let second = here.recv().unwrap();
    // The sender's writes after the hand-over are not in what was handed over.
    assert!(first.iter().enumerate().all(|(i, &x)| x == i as u64));
    assert!(second.iter().enumerate().all(|(i, &x)| x == 3 * i as u64));
    // The receiver's copy is its own: written, grown (it moves out of the file), sent back.
    for x in &mut first {
        *x = 3 * *x + 1;
    }
    first.push(0);
    first.pop();
    here.send(&first).unwrap();
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(0));
}

fn scribble((addr, len, done): (usize, usize, Event)) {
    // SAFETY: the parent's vector at `addr`, of `len` bytes, is mapped in this forked child
    // (a copy of the parent's address space); the child writes its own copy.
    unsafe { std::ptr::write_bytes(addr as *mut u8, 2, len) };
    // SAFETY: as above; read back what this process wrote.
    let back = unsafe { std::slice::from_raw_parts(addr as *const u8, len) };
    assert!(back.iter().all(|&b| b == 2));
    done.set();
}

#[test]
fn a_forked_child_gets_its_own_copy_of_a_large_vector() {
    multiproc::init();
    allow_fork();
    let v = vec![1u8; 1 << 20];
    assert!(in_heap_file(v.as_ptr()), "made in a file");
    let done = Event::new().unwrap();
    let mut p = Process::new(scribble, (v.as_ptr() as usize, v.len(), done.clone()))
        .with_start_method(StartMethod::Fork);
    p.start().unwrap();
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(0));
    assert!(done.is_set(), "the child wrote its copy");
    assert!(
        v.iter().all(|&b| b == 1),
        "the child's writes reached the parent"
    );
}

#[test]
fn allocations_grow_into_files_and_shrink_out_of_them() {
    let mut v: Vec<u64> = Vec::new();
    for i in 0..(1u64 << 20) {
        v.push(i); // crosses 256 KiB into a file, then grows in place by remapping
    }
    assert!(in_heap_file(v.as_ptr().cast()));
    assert!(v.iter().enumerate().all(|(i, &x)| x == i as u64));
    v.truncate(1000);
    v.shrink_to_fit(); // 8000 bytes: back to the system allocator
    assert!(!in_heap_file(v.as_ptr().cast()));
    assert!(v.iter().enumerate().all(|(i, &x)| x == i as u64));
    drop(v);
    let z = vec![0u32; 1 << 20]; // zeroed, in a file
    assert!(in_heap_file(z.as_ptr().cast()) && z.iter().all(|&x| x == 0));
    drop(z);
    assert_eq!(heap_fds(), 0, "a freed allocation's file stays open");
}

fn hold((q, holding, never): (Queue<Vec<u8>>, Event, Event)) {
    let v = q.get().unwrap();
    assert!(in_heap_file(v.as_ptr()));
    holding.set();
    never.wait().unwrap(); // killed here, holding the handed-over vector
    drop(v);
}

fn drain(q: Queue<Option<Vec<u8>>>) {
    while let Some(v) = q.get().unwrap() {
        assert!(v.iter().all(|&b| b == 9));
    }
}

#[test]
fn handed_over_items_leave_nothing_behind_also_when_their_holder_is_killed() {
    multiproc::init();
    let shm_before = shm_files();
    // Many items to a consumer that drops them: no descriptor or file stays with the sender.
    let q = Queue::new().unwrap();
    let mut p = Process::new(drain, q.clone());
    p.start().unwrap();
    q.put(Some(vec![9u8; 1 << 20])).unwrap();
    let fds = fd_count();
    for _ in 0..40 {
        q.put(Some(vec![9u8; 1 << 20])).unwrap();
    }
    q.put(None).unwrap();
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(0));
    assert_eq!(fd_count(), fds, "descriptors grow with handed-over items");
    assert_eq!(heap_fds(), 0);

    // A holder killed with the item: its mapping goes with it; the sender holds nothing.
    let q = Queue::new().unwrap();
    let (holding, never) = (Event::new().unwrap(), Event::new().unwrap());
    let mut p = Process::new(hold, (q.clone(), holding.clone(), never.clone()));
    p.start().unwrap();
    q.put(vec![5u8; 1 << 20]).unwrap();
    holding.wait().unwrap();
    p.kill().unwrap();
    p.join().unwrap();
    assert_eq!(heap_fds(), 0);
    let ours = new_multiproc_files(&shm_before);
    assert!(ours.is_empty(), "left in /dev/shm: {ours:?}");
    assert!(zombies_of_me().is_empty());
}

fn put_many(q: Queue<Vec<Vec<u8>>>) {
    let v: Vec<Vec<u8>> = (0..100u8).map(|i| vec![i; 300 << 10]).collect();
    q.put(v).unwrap();
}

#[test]
fn a_message_hands_over_at_most_64_files_and_copies_the_rest() {
    multiproc::init();
    let q = Queue::new().unwrap();
    let mut p = Process::new(put_many, q.clone());
    p.start().unwrap();
    let v = q.get().unwrap();
    p.join().unwrap();
    assert_eq!(v.len(), 100);
    for (i, x) in v.iter().enumerate() {
        assert!(
            x.len() == 300 << 10 && x.iter().all(|&b| b == i as u8),
            "vector {i}"
        );
    }
    let handed = v.iter().filter(|x| in_heap_file(x.as_ptr())).count();
    assert_eq!(handed, 64, "descriptors per message are bounded");
}

const GIB: usize = 1 << 30;

fn put_a_gib(q: Queue<Vec<u8>>) {
    let mut v = vec![0u8; GIB];
    for (i, b) in v.iter_mut().enumerate().step_by(4096) {
        *b = (i / 4096) as u8;
    }
    v[GIB - 1] = 0xAB;
    q.put(v).unwrap();
}

#[test]
fn a_one_gib_vector_is_handed_over_whole() {
    multiproc::init();
    let q = Queue::new().unwrap();
    let mut p = Process::new(put_a_gib, q.clone());
    p.start().unwrap();
    let v = q.get().unwrap();
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(0));
    assert_eq!(v.len(), GIB);
    assert!(in_heap_file(v.as_ptr()), "the 1 GiB vector was copied");
    // One byte per page carries its page number; the last byte its own mark.
    for (page, i) in (0..GIB).step_by(4096).enumerate() {
        assert_eq!(v[i], page as u8, "page {page}");
    }
    assert_eq!(v[GIB - 1], 0xAB);
    drop(v);
    assert_eq!(heap_fds(), 0);
}
