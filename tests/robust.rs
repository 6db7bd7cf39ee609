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
    held.wait();
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
    held.wait();
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
    held.wait();
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
    held.wait();
    let about_to_block = Event::new().unwrap();
    let waiter = multiproc::spawn(block_on, (lock.clone(), about_to_block.clone())).unwrap();
    about_to_block.wait();
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
    about_to_block.wait();
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
