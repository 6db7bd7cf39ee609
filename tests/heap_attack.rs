//! Attacks on `ShmAllocator` as the global allocator: impossible sizes, a full table,
//! thresholds changed under live allocations, large alignments, received vectors used as
//! any other, the same vector sent by two threads at once, and forks while other threads
//! allocate, grow and free large vectors. Each must keep every byte and leave no
//! descriptor behind.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};

use common::heap_files::{heap_fds, in_heap_file};
use common::*;
use multiproc::{Event, Process, StartMethod};

#[global_allocator]
static HEAP: multiproc::ShmAllocator = multiproc::ShmAllocator::from_size(256 << 10);

/// Whether the system allocator gives a block of `size` bytes.
fn system_gives(size: usize) -> bool {
    let layout = Layout::from_size_align(size, 1).unwrap();
    // SAFETY: a non-zero size; the block, if any, is freed with its layout.
    unsafe {
        let p = System.alloc(layout);
        if p.is_null() {
            false
        } else {
            System.dealloc(p, layout);
            true
        }
    }
}

#[test]
fn impossible_sizes_fail_as_with_the_system_allocator() {
    let fds = fd_count();
    assert!(Vec::<u8>::new().try_reserve(1 << 60).is_err());
    assert!(Vec::<u8>::new().try_reserve(usize::MAX / 2).is_err());
    // Sizes the address space has room for but the memory has not: the system allocator
    // refuses them (heuristic overcommit), and so must this one, rather than hand out a
    // block the first writes kill the program for.
    for shift in [40, 44, 46] {
        let want = system_gives(1 << shift);
        let mut v = Vec::<u8>::new();
        assert_eq!(
            v.try_reserve(1 << shift).is_ok(),
            want,
            "try_reserve of 2^{shift} bytes"
        );
    }
    assert_eq!(fd_count(), fds, "a failed allocation left a descriptor");
}

#[test]
fn past_512_large_allocations_the_system_allocator_serves_and_all_free_cleanly() {
    let fds = fd_count();
    let mut vs: Vec<Vec<u8>> = (0..600)
        .map(|i| {
            let mut v = vec![0u8; 256 << 10];
            v[0] = i as u8;
            v[(256 << 10) - 1] = (i * 7) as u8;
            v
        })
        .collect();
    let in_files = vs.iter().filter(|v| in_heap_file(v.as_ptr())).count();
    assert_eq!(in_files, 512, "the table holds 512 allocations");
    assert_eq!(heap_fds(), 512);
    // Grow every one: those in files grow in place, the others move (maybe into freed slots).
    for (i, v) in vs.iter_mut().enumerate() {
        v.resize(300 << 10, i as u8);
    }
    for (i, v) in vs.iter().enumerate() {
        assert_eq!(v[0], i as u8);
        assert_eq!(v[(256 << 10) - 1], (i * 7) as u8);
        assert!(v[256 << 10..].iter().all(|&b| b == i as u8));
    }
    drop(vs);
    assert_eq!(heap_fds(), 0);
    assert_eq!(fd_count(), fds);
    // The table is usable again.
    let v = vec![3u8; 1 << 20];
    assert!(in_heap_file(v.as_ptr()));
}

#[test]
fn threshold_changes_move_live_allocations_between_the_two_kinds() {
    HEAP.set_threshold(usize::MAX);
    let mut sys: Vec<u32> = (0..200_000u32).collect(); // 800 KB, system allocator
    assert!(!in_heap_file(sys.as_ptr().cast()));
    HEAP.set_threshold(256 << 10);
    let mut file: Vec<u32> = (0..200_000u32).collect(); // in a file
    assert!(in_heap_file(file.as_ptr().cast()));
    sys.extend(200_000..400_000u32); // grows across into a file
    assert!(in_heap_file(sys.as_ptr().cast()));
    HEAP.set_threshold(usize::MAX);
    file.extend(200_000..400_000u32); // a file allocation still grows (in place or moved)
    let mut fresh: Vec<u32> = Vec::with_capacity(300_000); // system allocator again
    assert!(!in_heap_file(fresh.as_ptr().cast()));
    fresh.extend(0..300_000u32);
    HEAP.set_threshold(256 << 10);
    for v in [&sys, &file] {
        assert!(v.iter().enumerate().all(|(i, &x)| x == i as u32));
    }
    assert!(fresh.iter().enumerate().all(|(i, &x)| x == i as u32));
    for v in [&mut sys, &mut file, &mut fresh] {
        v.truncate(70_000); // 280 KB: still large
        v.shrink_to_fit();
        assert!(v.iter().enumerate().all(|(i, &x)| x == i as u32));
        v.truncate(10);
        v.shrink_to_fit(); // out to the system allocator
        assert!(!in_heap_file(v.as_ptr().cast()));
        assert_eq!(v[..], (0..10).collect::<Vec<u32>>()[..]);
    }
    drop((sys, file, fresh));
    assert_eq!(heap_fds(), 0);
}

#[repr(C, align(8192))]
#[derive(Clone, Copy)]
struct Page2([u8; 8192]);

#[test]
fn alignments_above_a_page_go_to_the_system_allocator() {
    let mut v = vec![Page2([5; 8192]); 64]; // 512 KiB
    assert_eq!(v.as_ptr() as usize % 8192, 0);
    assert!(!in_heap_file(v.as_ptr().cast()));
    v.extend(std::iter::repeat_n(Page2([6; 8192]), 64));
    assert_eq!(v.as_ptr() as usize % 8192, 0);
    assert!(v[..64].iter().all(|p| p.0.iter().all(|&b| b == 5)));
    assert!(v[64..].iter().all(|p| p.0.iter().all(|&b| b == 6)));
    v.truncate(40);
    v.shrink_to_fit();
    assert_eq!(v.as_ptr() as usize % 8192, 0);
    assert!(v.iter().all(|p| p.0.iter().all(|&b| b == 5)));
    drop(v);
    assert_eq!(heap_fds(), 0);
}

#[test]
fn received_vectors_behave_as_any_other() {
    multiproc::init();
    let fds = fd_count();
    let (a, b) = multiproc::pipe::<Vec<u8>>().unwrap();
    let mut sent: Vec<u8> = (0..(1usize << 20)).map(|i| (i % 251) as u8).collect();
    a.send(&sent).unwrap();
    sent.iter_mut().for_each(|x| *x = 0); // after the hand-over: not seen by the receiver
    let mut got = b.recv().unwrap();
    assert!(in_heap_file(got.as_ptr()), "adopted, not copied");
    let want = |n: usize| (0..n).map(|i| (i % 251) as u8).collect::<Vec<u8>>();
    assert_eq!(got, want(1 << 20));
    // Pushed to (moves out of the read-only file's private mapping), cloned, sent on.
    got.push(250);
    assert_eq!(got.len(), (1 << 20) + 1);
    assert_eq!(got[..1 << 20], want(1 << 20)[..]);
    let c = got.clone();
    assert_eq!(c, got);
    a.send(&got).unwrap();
    let again = b.recv().unwrap();
    assert_eq!(again, got);
    // Truncated and shrunk in place, and out of the file.
    a.send(&want(1 << 20)).unwrap();
    let mut got = b.recv().unwrap();
    got.truncate(300 << 10);
    got.shrink_to_fit();
    assert_eq!(got, want(300 << 10));
    got.truncate(100);
    got.shrink_to_fit();
    assert_eq!(got, want(100));
    // A boxed slice, and a string.
    a.send(&want(1 << 20)).unwrap();
    let boxed = b.recv().unwrap().into_boxed_slice();
    assert_eq!(boxed[..], want(1 << 20)[..]);
    let text: String = "abcdefgh".repeat(1 << 17);
    let (sa, sb) = multiproc::pipe::<String>().unwrap();
    sa.send(&text).unwrap();
    let bytes = sb.recv().unwrap().into_bytes();
    assert!(in_heap_file(bytes.as_ptr()));
    let mut s = String::from_utf8(bytes).unwrap();
    assert_eq!(s, text);
    s.push_str("ij");
    assert_eq!(&s[s.len() - 10..], "abcdefghij");
    drop((boxed, s, c, again, got, sent, a, b, sa, sb));
    assert_eq!(heap_fds(), 0);
    assert_eq!(fd_count(), fds);
}

#[test]
fn two_threads_sending_one_vector_at_once_both_deliver_its_bytes() {
    multiproc::init();
    let fds = fd_count();
    let (a1, b1) = multiproc::pipe::<Vec<u64>>().unwrap();
    let (a2, b2) = multiproc::pipe::<Vec<u64>>().unwrap();
    let start = Arc::new(Barrier::new(2));
    for round in 0..20u64 {
        let v: Arc<Vec<u64>> = Arc::new((0..(1u64 << 17)).map(|i| i * 3 + round).collect());
        std::thread::scope(|s| {
            for a in [&a1, &a2] {
                let (v, start) = (Arc::clone(&v), Arc::clone(&start));
                s.spawn(move || {
                    start.wait();
                    a.send(&*v).unwrap();
                });
            }
            for b in [&b1, &b2] {
                let got = b.recv().unwrap();
                assert!(
                    got.iter()
                        .enumerate()
                        .all(|(i, &x)| x == i as u64 * 3 + round),
                    "round {round}"
                );
            }
        });
        assert!(v
            .iter()
            .enumerate()
            .all(|(i, &x)| x == i as u64 * 3 + round));
    }
    drop((a1, b1, a2, b2));
    assert_eq!(heap_fds(), 0);
    assert_eq!(fd_count(), fds);
}

/// The pattern of vector `seed`, byte `i`.
fn pat(seed: usize, i: usize) -> u8 {
    (seed.wrapping_mul(31) ^ i.wrapping_mul(7) ^ (i >> 12)) as u8
}

/// The forked child: its copy of the parent's vector (at `addr`, `len` bytes) has the
/// parent's pattern `seed`; it overwrites it, then checks it allocates and frees large
/// vectors itself.
fn check_copy((addr, len, seed, done): (usize, usize, usize, Event)) {
    // SAFETY: the parent's vector is mapped in this forked child (a copy of the parent's
    // address space), and its owner does not write it until the child is joined.
    let v = unsafe { std::slice::from_raw_parts_mut(addr as *mut u8, len) };
    assert!(v.iter().enumerate().all(|(i, &b)| b == pat(seed, i)));
    v.fill(0xee);
    let mut own = vec![1u8; 1 << 20];
    own.resize(3 << 20, 2);
    assert!(own[..1 << 20].iter().all(|&b| b == 1) && own[1 << 20..].iter().all(|&b| b == 2));
    drop(own);
    done.set();
}

#[test]
fn forks_while_other_threads_allocate_grow_and_free_keep_every_copy_apart() {
    multiproc::init();
    allow_fork();
    let stop = AtomicBool::new(false);
    let rounds = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for t in 0..3usize {
            let (stop, rounds) = (&stop, &rounds);
            s.spawn(move || {
                let mut n = 0usize;
                while !stop.load(Ordering::Relaxed) || n < 4 {
                    let seed = t * 1_000_000 + n;
                    let mut v: Vec<u8> = Vec::new();
                    let mut len = 200 << 10;
                    while len < 3 << 20 {
                        let from = v.len();
                        v.extend((from..len).map(|i| pat(seed, i)));
                        assert!(
                            v.iter().enumerate().all(|(i, &b)| b == pat(seed, i)),
                            "thread {t} vector {n} at {len} bytes"
                        );
                        len = len * 3 / 2;
                    }
                    v.truncate(300 << 10);
                    v.shrink_to_fit();
                    assert!(v.iter().enumerate().all(|(i, &b)| b == pat(seed, i)));
                    n += 1;
                    rounds.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        for f in 0..12usize {
            let seed = 7_000 + f;
            let v: Vec<u8> = (0..(1usize << 20)).map(|i| pat(seed, i)).collect();
            let done = Event::new().unwrap();
            let mut p = Process::new(
                check_copy,
                (v.as_ptr() as usize, v.len(), seed, done.clone()),
            )
            .with_start_method(StartMethod::Fork);
            p.start().unwrap();
            p.join().unwrap();
            assert_eq!(p.exitcode(), Some(0), "fork {f}");
            assert!(done.is_set());
            assert!(
                v.iter().enumerate().all(|(i, &b)| b == pat(seed, i)),
                "fork {f}: the child's writes reached the parent"
            );
        }
        stop.store(true, Ordering::Relaxed);
    });
    assert!(rounds.load(Ordering::Relaxed) >= 12);
    assert_eq!(heap_fds(), 0);
}

#[test]
fn growing_a_file_allocation_past_the_memory_fails_as_with_the_system_allocator() {
    let mut v = vec![4u8; 1 << 20];
    assert!(in_heap_file(v.as_ptr()));
    let want = system_gives(1 << 40);
    assert_eq!(v.try_reserve_exact(1 << 40).is_ok(), want);
    assert!(v.iter().all(|&b| b == 4));
    assert!(in_heap_file(v.as_ptr()));
}

#[test]
fn large_allocations_leave_most_descriptors_to_the_program() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    limit.current = Some(128);
    setrlimit(Resource::Nofile, limit).unwrap();
    let vs: Vec<Vec<u8>> = (0..200).map(|i| vec![i as u8; 256 << 10]).collect();
    assert!(in_heap_file(vs[0].as_ptr()), "the first ones are in files");
    assert!(heap_fds() <= 64, "{} of 128 descriptors held", heap_fds());
    // The program can still open files and pipes.
    let files: Vec<std::fs::File> = (0..40)
        .map(|_| std::fs::File::open("/proc/self/stat").unwrap())
        .collect();
    let pipes: Vec<_> = (0..10).map(|_| rustix::pipe::pipe().unwrap()).collect();
    assert!(vs
        .iter()
        .enumerate()
        .all(|(i, v)| v.iter().all(|&b| b == i as u8)));
    drop((files, pipes, vs));
    assert_eq!(heap_fds(), 0);
}

/// The grandchild: takes the allocator's table lock (a new large allocation).
fn allocate_large(_: ()) {
    HEAP.set_threshold(256 << 10);
    let v = vec![1u8; 1 << 20];
    assert!(in_heap_file(v.as_ptr()));
}

/// A process that only receives large vectors (it never makes one itself): one thread
/// reallocates one of them in place without end (each time taking the allocator's table
/// lock) while the main thread forks children that allocate: no child may inherit the
/// table locked.
fn receive_and_fork(c: multiproc::Connection<Vec<Vec<u8>>>) {
    HEAP.set_threshold(usize::MAX);
    allow_fork();
    let mut held = c.recv().unwrap();
    held.extend(c.recv().unwrap());
    assert!(held.iter().all(|v| in_heap_file(v.as_ptr())), "adopted");
    let mut last = held.pop().unwrap();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                last.reserve_exact(1); // within the mapping's last page: in place
                last.shrink_to_fit();
            }
        });
        for f in 0..30 {
            let mut p = Process::new(allocate_large, ()).with_start_method(StartMethod::Fork);
            p.start().unwrap();
            if !p.join_timeout(std::time::Duration::from_secs(20)).unwrap() {
                p.kill().unwrap();
                p.join().unwrap();
                stop.store(true, Ordering::Relaxed);
                panic!("fork {f}: the child hangs on the allocator's lock");
            }
            assert_eq!(p.exitcode(), Some(0), "fork {f}");
        }
        stop.store(true, Ordering::Relaxed);
    });
    assert!(in_heap_file(last.as_ptr()), "reallocated in place");
    assert!(last.iter().chain(held.iter().flatten()).all(|&b| b == 3));
}

#[test]
fn a_process_that_only_receives_large_vectors_forks_safely() {
    multiproc::init();
    let (here, there) = multiproc::pipe::<Vec<Vec<u8>>>().unwrap();
    let mut p = Process::new(receive_and_fork, there);
    p.start().unwrap();
    for _ in 0..2 {
        here.send(&vec![vec![3u8; (260 << 10) + 100]; 60]).unwrap();
    }
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(0));
}

/// A message whose sender claims a vector handed over as a memory file it chose (the
/// length word marked as handed over, then the descriptor's index), read as a `Vec<u64>`.
enum Crafted {
    Claim { n: u64, file: std::os::fd::OwnedFd },
    Got(Vec<u64>),
}

impl serde::Serialize for Crafted {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let Crafted::Claim { n, file } = self else {
            unreachable!("only claims are sent")
        };
        let fd = multiproc::connection::Fd::new(file.try_clone().unwrap());
        (n | 1 << 63, fd).serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for Crafted {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Vec::<u64>::deserialize(d).map(Crafted::Got)
    }
}

/// A memory file of `size` bytes (sparse: zeros), with the given seals.
fn memfd(size: u64, seals: rustix::fs::SealFlags) -> std::os::fd::OwnedFd {
    use rustix::fs::{fcntl_add_seals, ftruncate, memfd_create, MemfdFlags};
    let fd = memfd_create("crafted", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING).unwrap();
    ftruncate(&fd, size).unwrap();
    fcntl_add_seals(&fd, seals).unwrap();
    fd
}

#[test]
fn a_hostile_peers_handed_over_files_give_clear_errors_or_their_bytes() {
    use rustix::fs::SealFlags;
    multiproc::init();
    let fds = fd_count();
    let frozen = SealFlags::WRITE | SealFlags::GROW | SealFlags::SHRINK;
    let (a, b) = multiproc::pipe::<Crafted>().unwrap();
    let refused = |file, n: u64, why: &str| {
        a.send(&Crafted::Claim { n, file }).unwrap();
        let e = b.recv().err().expect("a crafted claim was accepted");
        assert!(matches!(e, multiproc::Error::Codec(_)), "{e:?}");
        let mut chain = e.to_string();
        let mut cause = std::error::Error::source(&e);
        while let Some(c) = cause {
            chain += &format!(": {c}");
            cause = c.source();
        }
        assert!(chain.contains(why), "{why}: {chain}");
    };
    // Not sealed, sealed but still growable, too short, a count that overflows, not a
    // memory file at all.
    refused(memfd(1 << 20, SealFlags::empty()), 1 << 17, "not sealed");
    refused(
        memfd(1 << 20, SealFlags::WRITE | SealFlags::SHRINK),
        1 << 17,
        "not sealed",
    );
    refused(memfd(1 << 20, frozen), (1 << 17) + 1, "expected");
    refused(memfd(1 << 20, frozen), 1 << 61, "too large");
    let (sock, peer) = std::os::unix::net::UnixStream::pair().unwrap();
    refused(sock.into(), 1 << 17, "not a memory file");
    // A valid claim on a file far larger than the vector (sparse, 16 GiB and 1 TiB): the
    // receiver gets the vector's zeros, whether it maps the file or copies from it.
    for size in [16u64 << 30, 1 << 40] {
        a.send(&Crafted::Claim {
            n: 1 << 17,
            file: memfd(size, frozen),
        })
        .unwrap();
        let Crafted::Got(mut v) = b.recv().unwrap() else {
            unreachable!()
        };
        assert_eq!(v.len(), 1 << 17);
        assert!(v.iter().all(|&x| x == 0));
        v.push(1);
        v.truncate(10);
        v.shrink_to_fit();
        assert_eq!(v, vec![0; 10]);
    }
    // The connection still works.
    a.send(&Crafted::Claim {
        n: 1 << 17,
        file: memfd(1 << 20, frozen),
    })
    .unwrap();
    assert!(matches!(b.recv().unwrap(), Crafted::Got(v) if v.len() == 1 << 17));
    drop((a, b, peer));
    assert_eq!(fd_count(), fds);
    assert_eq!(heap_fds(), 0);
}

#[cfg(feature = "ndarray")]
#[test]
fn ndarray_arrays_are_handed_over_and_stay_usable() {
    use multiproc::ndarray::{s, Array2};
    multiproc::init();
    let (a, b) = multiproc::pipe::<Array2<f64>>().unwrap();
    let mut m = Array2::<f64>::from_shape_fn((512, 300), |(i, j)| (i * 1000 + j) as f64);
    a.send(&m).unwrap();
    m.fill(-1.0); // after the hand-over: not seen by the receiver
    let mut got = b.recv().unwrap();
    assert!(in_heap_file(got.as_ptr().cast()), "adopted");
    assert!(got
        .indexed_iter()
        .all(|((i, j), &x)| x == (i * 1000 + j) as f64));
    got.slice_mut(s![.., 0]).fill(7.0);
    let t = got.t().to_owned(); // column-major copy: sent by copying
    a.send(&t.t().to_owned()).unwrap();
    let back = b.recv().unwrap();
    assert_eq!(back, got);
    assert!(m.iter().all(|&x| x == -1.0));
}

#[cfg(feature = "tokio")]
#[test]
fn tokio_gets_and_puts_hand_large_vectors_over() {
    multiproc::init();
    let q = multiproc::Queue::<Vec<u32>>::new().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        for k in 0..5u32 {
            q.put_async((0..(1u32 << 18)).map(|i| i ^ k).collect())
                .await
                .unwrap();
        }
        for k in 0..5u32 {
            let v = q.get_async().await.unwrap();
            assert!(in_heap_file(v.as_ptr().cast()), "adopted");
            assert!(v.iter().enumerate().all(|(i, &x)| x == i as u32 ^ k));
        }
    });
}

/// The length of the mapping that holds `p` (/proc/self/maps).
fn mapping_len(p: *const u8) -> usize {
    let a = p as usize;
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .find_map(|l| {
            let (lo, hi) = l.split_once(' ').unwrap().0.split_once('-').unwrap();
            let lo = usize::from_str_radix(lo, 16).unwrap();
            let hi = usize::from_str_radix(hi, 16).unwrap();
            (lo <= a && a < hi).then_some(hi - lo)
        })
        .unwrap()
}

#[test]
fn shrinking_a_large_allocation_gives_its_memory_back() {
    multiproc::init();
    // Made here (shared), and received (private).
    let mut made = vec![6u8; 64 << 20];
    let (a, b) = multiproc::pipe::<Vec<u8>>().unwrap();
    a.send(&vec![8u8; 64 << 20]).unwrap();
    let mut got = b.recv().unwrap();
    for (v, x) in [(&mut made, 6u8), (&mut got, 8)] {
        assert!(in_heap_file(v.as_ptr()));
        assert_eq!(mapping_len(v.as_ptr()), 64 << 20);
        v.truncate(1 << 20);
        v.shrink_to_fit();
        assert!(in_heap_file(v.as_ptr()));
        assert_eq!(mapping_len(v.as_ptr()), 1 << 20, "the rest is still mapped");
        assert!(v.iter().all(|&b| b == x));
        v.resize(3 << 20, x); // and grows again
        assert!(v.iter().all(|&b| b == x));
    }
}

fn put_large_forever(q: multiproc::Queue<Vec<u8>>) {
    for i in 0u64.. {
        q.put(vec![i as u8; 300 << 10]).unwrap();
    }
}

#[test]
fn producers_killed_while_handing_vectors_over_never_wedge_nor_leak() {
    multiproc::init();
    let shm_before = shm_files();
    let q = multiproc::Queue::<Vec<u8>>::bounded(3).unwrap();
    let fds = fd_count();
    for round in 0..4 {
        let mut p = Process::new(put_large_forever, q.clone());
        p.start().unwrap();
        // Take some while it runs (it blocks on the full queue, or is mid-put), then kill
        // it wherever it is.
        for _ in 0..(5 + round * 3) {
            let v = q.get_timeout(std::time::Duration::from_secs(30)).unwrap();
            assert!(in_heap_file(v.as_ptr()), "adopted");
            assert!(v.len() == 300 << 10 && v.iter().all(|&b| b == v[0]));
        }
        p.kill().unwrap();
        p.join().unwrap();
        // Every item left is whole; the queue still works.
        while let Ok(v) = q.try_get() {
            assert!(v.len() == 300 << 10 && v.iter().all(|&b| b == v[0]));
        }
        q.put(vec![0xab; 1 << 20]).unwrap();
        let v = q.get_timeout(std::time::Duration::from_secs(30)).unwrap();
        assert!(v.iter().all(|&b| b == 0xab), "round {round}");
    }
    assert!(fd_count() <= fds + SPARE_MESSAGE_FILES, "descriptors grow");
    assert_eq!(heap_fds(), 0);
    let ours = new_multiproc_files(&shm_before);
    assert!(ours.is_empty(), "left in /dev/shm: {ours:?}");
    assert!(zombies_of_me().is_empty());
}

/// The forked child: no mapping of the allocator's files may be shared with its parent,
/// and none of their descriptors open (each would keep a file's memory alive).
fn no_shared_heap_mapping(done: Event) {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let shared: Vec<&str> = maps
        .lines()
        .filter(|l| {
            l.contains("memfd:multiproc-heap") && l.split(' ').nth(1).unwrap().ends_with('s')
        })
        .collect();
    assert!(shared.is_empty(), "shared with the parent: {shared:?}");
    assert_eq!(heap_fds(), 0, "the parent's memory files are open here");
    done.set();
}

#[test]
fn a_fork_during_new_large_allocations_shares_none_of_them() {
    multiproc::init();
    allow_fork();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let v = vec![1u8; 1 << 20];
                    assert_eq!(v[v.len() - 1], 1);
                }
            });
        }
        for f in 0..30 {
            let done = Event::new().unwrap();
            let mut p = Process::new(no_shared_heap_mapping, done.clone())
                .with_start_method(StartMethod::Fork);
            p.start().unwrap();
            p.join().unwrap();
            if p.exitcode() != Some(0) {
                stop.store(true, Ordering::Relaxed);
                panic!("fork {f}: the child shares a new allocation's mapping or file");
            }
            assert!(done.is_set());
        }
        stop.store(true, Ordering::Relaxed);
    });
}
