//! The one robust mutex under every lock, value and ring: a holder's death is seen at once,
//! by blocking and non-blocking calls alike, and ownership is per thread.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use multiproc::{Error, Event, Lock, Queue, RLock, Value};

fn sleep_forever() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

fn hold_lock_and_hang((lock, held): (Lock, Event)) {
    lock.acquire().unwrap();
    held.set();
    sleep_forever()
}

fn hold_rlock_and_hang((lock, held): (RLock, Event)) {
    lock.acquire().unwrap();
    lock.acquire().unwrap();
    held.set();
    sleep_forever()
}

#[test]
fn try_acquire_right_after_the_holder_is_killed_gives_owner_died() {
    multiproc::init();
    let lock = Lock::new().unwrap();
    let held = Event::new().unwrap();
    let h = multiproc::spawn(hold_lock_and_hang, (lock.clone(), held.clone())).unwrap();
    held.wait().unwrap();
    assert!(!lock.try_acquire().unwrap(), "a live holder: busy");
    h.kill().unwrap();
    assert!(matches!(h.join(), Err(Error::WorkerDied { .. })));
    // The very first non-blocking attempt learns it: no waiting, no polling interval.
    assert!(matches!(lock.try_acquire(), Err(Error::OwnerDied)));
    assert!(lock.is_locked(), "taken over by us");
    lock.release().unwrap();
    assert!(lock.try_acquire().unwrap());
    lock.release().unwrap();

    // A zero timeout is a non-blocking attempt too.
    let held = Event::new().unwrap();
    let h = multiproc::spawn(hold_lock_and_hang, (lock.clone(), held.clone())).unwrap();
    held.wait().unwrap();
    h.kill().unwrap();
    let _ = h.join();
    assert!(matches!(
        lock.acquire_timeout(Duration::ZERO),
        Err(Error::OwnerDied)
    ));
    lock.release().unwrap();
}

#[test]
fn an_rlock_held_twice_by_a_killed_process_is_taken_over() {
    multiproc::init();
    let lock = RLock::new().unwrap();
    let held = Event::new().unwrap();
    let h = multiproc::spawn(hold_rlock_and_hang, (lock.clone(), held.clone())).unwrap();
    held.wait().unwrap();
    assert!(!lock.try_acquire().unwrap());
    h.kill().unwrap();
    let _ = h.join();
    assert!(matches!(lock.try_acquire(), Err(Error::OwnerDied)));
    // Ours now, once: one release frees it for others.
    lock.release().unwrap();
    fn take(lock: RLock) -> bool {
        let ok = lock.try_acquire().unwrap_or(false);
        if ok {
            lock.release().unwrap();
        }
        ok
    }
    assert!(multiproc::spawn(take, lock.clone())
        .unwrap()
        .join()
        .unwrap());
}

fn block_on((lock, about_to_block): (Lock, Event)) -> String {
    about_to_block.set();
    match lock.acquire() {
        Ok(()) => "clean".into(),
        Err(Error::OwnerDied) => "owner died".into(),
        Err(e) => format!("error: {e}"),
    }
}

#[test]
fn a_blocked_waiter_is_handed_the_lock_when_its_holder_is_killed() {
    multiproc::init();
    let lock = Lock::new().unwrap();
    let held = Event::new().unwrap();
    let holder = multiproc::spawn(hold_lock_and_hang, (lock.clone(), held.clone())).unwrap();
    held.wait().unwrap();
    let about_to_block = Event::new().unwrap();
    let waiter = multiproc::spawn(block_on, (lock.clone(), about_to_block.clone())).unwrap();
    about_to_block.wait().unwrap();
    common::until_asleep(waiter.pid());
    holder.kill().unwrap();
    let _ = holder.join();
    // The kernel hands the lock to the queued waiter when the holder dies.
    assert_eq!(waiter.join().unwrap(), "owner died");
    // The waiter exited holding it (after learning the holder died): taken over again.
    assert!(matches!(lock.try_acquire(), Err(Error::OwnerDied)));
    lock.release().unwrap();
}

fn consume_forever((q, about_to_block): (Queue<u64>, Event)) {
    about_to_block.set();
    loop {
        let _ = q.get();
    }
}

#[test]
fn a_consumer_killed_while_blocked_in_get_does_not_wedge_try_get() {
    multiproc::init();
    let q = Queue::<u64>::new().unwrap();
    let about_to_block = Event::new().unwrap();
    let h = multiproc::spawn(consume_forever, (q.clone(), about_to_block.clone())).unwrap();
    about_to_block.wait().unwrap();
    common::until_asleep(h.pid());
    h.kill().unwrap();
    let _ = h.join();
    q.put(7).unwrap();
    q.put(8).unwrap();
    // At once: the dead consumer's place is taken over on the first attempt.
    assert_eq!(q.try_get().unwrap(), 7);
    assert_eq!(q.get_timeout(Duration::ZERO).unwrap(), 8);
    assert!(matches!(q.try_get(), Err(Error::Empty)));
}

/// (producer id, sequence number, body)
type Item = (u32, u64, Vec<u8>);

fn produce((q, id, n): (Queue<Item>, u32, u64)) {
    for seq in 0..n {
        // Items of a few KiB: a put copies for a while, so a kill lands mid-put often.
        q.put((id, seq, vec![id as u8; 2048 + (seq % 7) as usize * 512]))
            .unwrap();
    }
}

fn produce_forever((q, id): (Queue<Item>, u32)) {
    for seq in 0.. {
        if q.put((id, seq, vec![id as u8; 4096])).is_err() {
            return;
        }
    }
}

#[test]
fn a_producer_killed_mid_put_costs_the_others_nothing() {
    multiproc::init();
    const N: u64 = 1000;
    // A small bound keeps every producer blocking in `put`, holding the ring's locks.
    let q = Queue::<Item>::bounded(8).unwrap();
    let victim = multiproc::spawn(produce_forever, (q.clone(), 99)).unwrap();
    let others: Vec<_> = (0..3)
        .map(|id| multiproc::spawn(produce, (q.clone(), id, N)).unwrap())
        .collect();
    let mut seen = vec![vec![false; N as usize]; 3];
    let (mut from_victim, mut victim_next, mut killed) = (0u64, 0u64, false);
    let mut got = 0u64;
    while got < 3 * N {
        let (id, seq, body) = q
            .get_timeout(Duration::from_secs(60))
            .expect("the surviving producers' items keep arriving");
        assert!(body.iter().all(|&b| b == id as u8), "an item arrived whole");
        if id == 99 {
            // The victim's items arrive in order, each at most once.
            assert!(
                seq >= victim_next,
                "victim item {seq} twice or out of order"
            );
            victim_next = seq + 1;
            from_victim += 1;
            if from_victim == 100 && !killed {
                victim.kill().unwrap();
                killed = true;
            }
            continue;
        }
        let slot = &mut seen[id as usize][seq as usize];
        assert!(!*slot, "item ({id}, {seq}) arrived twice");
        *slot = true;
        got += 1;
    }
    assert!(killed, "the victim was killed while the others produced");
    assert!(
        seen.iter().flatten().all(|&s| s),
        "every survivor's item arrived"
    );
    for h in others {
        h.join().unwrap();
    }
    assert!(matches!(victim.join(), Err(Error::WorkerDied { .. })));
    // Whatever the victim left half done, the queue works afterwards.
    q.put((1, 1, vec![1])).unwrap();
    loop {
        let (id, _, _) = q.get_timeout(Duration::from_secs(10)).unwrap();
        if id == 1 {
            break;
        }
    }
}

/// The state letter of this process's thread named `name`.
fn thread_state(name: &str) -> Option<char> {
    for t in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if comm.trim_end() == name {
            let stat = std::fs::read_to_string(t.path().join("stat")).ok()?;
            return stat[stat.rfind(')')? + 2..].chars().next();
        }
    }
    None
}

#[test]
fn value_set_on_another_thread_waits_for_the_guard() {
    multiproc::init();
    let v = Value::new(0i64).unwrap();
    let started = AtomicBool::new(false);
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let mut g = v.lock().unwrap();
        *g = 1;
        std::thread::Builder::new()
            .name("mp-setter".into())
            .spawn_scoped(s, || {
                started.store(true, Ordering::SeqCst);
                // Another thread of the same process: must wait for the guard.
                v.set(100);
                done.store(true, Ordering::SeqCst);
            })
            .unwrap();
        while !started.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        // Either the setter blocks (correct), or it writes past our guard (the bug).
        assert!(
            common::eventually(Duration::from_secs(30), || done.load(Ordering::SeqCst)
                || thread_state("mp-setter") == Some('S')),
            "the setter neither blocked nor finished"
        );
        assert!(
            !done.load(Ordering::SeqCst),
            "set() did not wait for the guard held by another thread"
        );
        *g += 1;
        drop(g); // stores 2, then releases: the setter's 100 comes after
    });
    assert!(done.load(Ordering::SeqCst));
    assert_eq!(v.get(), 100, "the setter's update was not lost");

    // And guarded increments from two threads lose nothing.
    let v = Value::new(0i64).unwrap();
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                for _ in 0..20_000 {
                    *v.lock().unwrap() += 1;
                }
            });
        }
    });
    assert_eq!(v.get(), 40_000);
}

#[test]
fn a_child_forked_behind_the_crates_back_does_not_think_it_holds_the_parents_lock() {
    multiproc::init();
    let r = RLock::new().unwrap();
    r.acquire().unwrap();
    assert!(r.is_owned());
    // A fork the crate did not make (a C library's, or the user's own): the child must not
    // take the parent's cached thread id for its own.
    // SAFETY: the child only reads atomics and thread-locals and then calls _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        let code = if r.is_owned() { 1 } else { 0 };
        // SAFETY: _exit ends the forked child without running the harness's exit code.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFEXITED(status));
    assert_eq!(
        libc::WEXITSTATUS(status),
        0,
        "the child believed it held the lock"
    );
    r.release().unwrap();
}

// --- garbage in shared memory ------------------------------------------------------------

/// The crate's memory files open in this process: (descriptor number, inode) → size. (The
/// inode tells a new file from an old one whose number was just closed and reused.)
fn memory_files() -> std::collections::BTreeMap<(String, u64), u64> {
    use std::os::unix::fs::MetadataExt;
    let mut m = std::collections::BTreeMap::new();
    for e in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let Ok(link) = std::fs::read_link(e.path()) else {
            continue;
        };
        if link.to_string_lossy().starts_with("/memfd:multiproc") {
            if let Ok(md) = std::fs::metadata(e.path()) {
                let fd = e.file_name().to_string_lossy().into_owned();
                m.insert((fd, md.ino()), md.len());
            }
        }
    }
    m
}

/// What a hostile or broken process that maps an object's memory can write into a word: a
/// random one, all ones, flag bits alone, zero, a number past any pid. (Not the thread id
/// of a live thread: a lock word naming one is a lock that thread holds, which a blocking
/// call rightly waits for.)
fn garbage_word(rng: &mut common::Rng) -> u64 {
    match rng.below(6) {
        0 => rng.below(u64::MAX),
        1 => u64::MAX,
        2 => 1 << 31,
        3 => 1 << 30,
        4 => 0,
        _ => (1 << 23) + rng.below(1 << 20),
    }
}

/// `rounds` times: makes an object with `make` (which returns what exercises it, with
/// short time-outs only), exercises it once, writes 1 to 3 garbage words into the memory
/// files it created (at random in their first 64 KiB, often in the control words at their
/// start), and exercises it again on another thread. Every call must return: no panic, and
/// no hang (the bound below is far beyond what the calls take; it only turns a hang into a
/// failure).
fn garbage_never_panics_or_hangs(
    what: &str,
    rounds: u64,
    make: &dyn Fn() -> Box<dyn Fn() + Send + Sync>,
) {
    use std::os::unix::fs::FileExt;
    let mut rng = common::Rng::new();
    for round in 0..rounds {
        let before = memory_files();
        let exercise: std::sync::Arc<dyn Fn() + Send + Sync> = make().into();
        let files: Vec<(String, u64)> = memory_files()
            .into_iter()
            .filter(|(k, _)| !before.contains_key(k))
            .map(|((fd, _), len)| (fd, len))
            .collect();
        assert!(!files.is_empty(), "{what} made no memory file");
        exercise();
        let (fd, len) = files[rng.below(files.len() as u64) as usize].clone();
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(format!("/proc/self/fd/{fd}"))
            .unwrap();
        let mut writes = Vec::new();
        for _ in 0..1 + rng.below(3) {
            let span = if rng.below(2) == 0 { 1100 } else { 1 << 16 };
            let word = garbage_word(&mut rng);
            let (off, bytes) = if rng.below(2) == 0 {
                let off = rng.below(len.min(span) - 3) & !3;
                (off, (word as u32).to_le_bytes().to_vec())
            } else {
                let off = rng.below(len.min(span) - 7) & !7;
                (off, word.to_le_bytes().to_vec())
            };
            file.write_all_at(&bytes, off).unwrap();
            writes.push((off, word));
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let ex = exercise.clone();
        std::thread::spawn(move || {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| ex()));
            let _ = tx.send(r.is_ok());
        });
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(true) => {}
            Ok(false) => panic!("{what}, round {round}: panicked after writes {writes:?}"),
            Err(_) => panic!("{what}, round {round}: hangs after writes {writes:?}"),
        }
    }
}

#[test]
fn garbage_in_a_queues_memory_gives_errors_never_a_panic_or_a_hang() {
    multiproc::init();
    let ms = Duration::from_millis(2);
    for bounded in [0, 50] {
        garbage_never_panics_or_hangs("a queue", 500, &|| {
            let q = Queue::<Vec<u64>>::with_capacity(bounded, 64 << 10).unwrap();
            Box::new(move || {
                let _ = (q.qsize(), q.empty(), q.full());
                for i in 0..4u64 {
                    let _ = q.put_timeout(vec![i; 40 * i as usize], ms);
                }
                for _ in 0..3 {
                    let _ = q.try_get();
                }
                let _ = q.get_timeout(ms);
                let _ = q.try_put(vec![7; 3000]);
                let _ = q.get_timeout(ms);
            })
        });
    }
    garbage_never_panics_or_hangs("a joinable queue", 500, &|| {
        let q = multiproc::JoinableQueue::<u64>::new().unwrap();
        Box::new(move || {
            for i in 0..3 {
                let _ = q.put_timeout(i, ms);
            }
            let _ = q.try_get();
            let _ = q.task_done();
            let _ = q.join_timeout(ms);
            let _ = (q.unfinished_tasks(), q.get_timeout(ms), q.get_timeout(ms));
            let _ = (q.task_done(), q.task_done(), q.join_timeout(ms));
        })
    });
}

#[test]
fn garbage_in_a_pipes_or_a_locks_memory_gives_errors_never_a_panic_or_a_hang() {
    multiproc::init();
    let ms = Duration::from_millis(2);
    garbage_never_panics_or_hangs("a pipe", 100, &|| {
        let (a, b) = multiproc::pipe::<Vec<u8>>().unwrap();
        let b = std::sync::Arc::new(b);
        Box::new(move || {
            // A reader takes the three messages (or learns that they are garbage) while
            // they are sent: a message larger than the room left waits for it.
            let rb = b.clone();
            let reader = std::thread::spawn(move || {
                let mut taken = 0;
                while taken < 3 {
                    match rb.poll(Some(Duration::from_millis(200))) {
                        Ok(true) => {
                            let _ = rb.recv();
                            taken += 1;
                        }
                        Ok(false) | Err(_) => return,
                    }
                }
            });
            for len in [100, 100_000, 3_000_000] {
                let _ = a.send(&vec![1; len]);
            }
            reader.join().unwrap();
        })
    });
    garbage_never_panics_or_hangs("a lock", 100, &|| {
        let l = Lock::new().unwrap();
        Box::new(move || {
            let _ = (l.try_acquire(), l.release(), l.acquire_timeout(ms));
            let _ = (l.release(), l.is_locked());
        })
    });
    garbage_never_panics_or_hangs("an rlock", 100, &|| {
        let l = RLock::new().unwrap();
        Box::new(move || {
            let _ = (
                l.try_acquire(),
                l.acquire_timeout(ms),
                l.release(),
                l.release(),
            );
        })
    });
    garbage_never_panics_or_hangs("a semaphore", 100, &|| {
        let s = multiproc::BoundedSemaphore::new(2).unwrap();
        Box::new(move || {
            let _ = (
                s.try_acquire(),
                s.acquire_timeout(ms),
                s.release(),
                s.release(),
            );
            let _ = s.get_value();
        })
    });
    garbage_never_panics_or_hangs("an event", 100, &|| {
        let e = Event::new().unwrap();
        Box::new(move || {
            let _ = (e.is_set(), e.wait_timeout(ms));
            e.set();
            let _ = e.wait_timeout(ms);
            e.clear();
        })
    });
    garbage_never_panics_or_hangs("a value", 100, &|| {
        let v = Value::<u64>::new(5).unwrap();
        Box::new(move || {
            let _ = v.get_lock().acquire_timeout(ms);
            let _ = v.get_lock().release();
            let _ = v.get_lock().try_acquire();
            let _ = v.get_lock().release();
        })
    });
}
