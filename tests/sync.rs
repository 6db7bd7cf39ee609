//! Locks, semaphores, events, conditions, barriers and shared values, across processes.

mod common;

use std::time::{Duration, Instant};

use multiproc::{
    Array, Barrier, BoundedSemaphore, Condition, Error, Event, Lock, RLock, RawValue, Semaphore,
    Value,
};

fn sleep_forever() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

// --- Lock -----------------------------------------------------------------------------------

#[test]
fn lock_semantics_across_processes() {
    multiproc::init();
    let lock = Lock::new().unwrap();
    assert!(matches!(lock.release(), Err(Error::InvalidOperation(_))));

    // A child holds it: we cannot take it, and a timeout says so.
    fn hold((lock, held, done): (Lock, Event, Event)) -> Result<(), String> {
        lock.acquire().map_err(|e| e.to_string())?;
        held.set();
        done.wait().unwrap();
        lock.release().map_err(|e| e.to_string())
    }
    let (held, done) = (Event::new().unwrap(), Event::new().unwrap());
    let h = multiproc::spawn(hold, (lock.clone(), held.clone(), done.clone())).unwrap();
    held.wait().unwrap();
    assert!(lock.is_locked());
    assert!(!lock.try_acquire().unwrap());
    let t = Instant::now();
    assert!(!lock.acquire_timeout(Duration::from_millis(150)).unwrap());
    assert!(t.elapsed() >= Duration::from_millis(140));
    done.set();
    // Blocks until the child releases it.
    lock.acquire().unwrap();
    h.join().unwrap().unwrap();

    // Like Python's Lock, another process may release it.
    fn release_it(lock: Lock) -> bool {
        lock.release().is_ok()
    }
    assert!(multiproc::spawn(release_it, lock.clone())
        .unwrap()
        .join()
        .unwrap());
    assert!(!lock.is_locked());
    // ...but releasing an unlocked one is an error there too.
    assert!(!multiproc::spawn(release_it, lock.clone())
        .unwrap()
        .join()
        .unwrap());

    {
        let _g = lock.lock().unwrap();
        assert!(lock.is_locked());
    }
    assert!(!lock.is_locked());
}

#[test]
fn lock_guards_counter_in_threads() {
    let lock = Lock::new().unwrap();
    let v = RawValue::new(0u64).unwrap();
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..20_000 {
                    let _g = lock.lock().unwrap();
                    v.set(v.get() + 1);
                }
            });
        }
    });
    assert_eq!(v.get(), 80_000);
}

fn increment_many((v, n): (Value<i64>, u32)) -> Result<(), String> {
    for _ in 0..n {
        *v.lock().map_err(|e| e.to_string())? += 1;
    }
    Ok(())
}

#[test]
fn eight_processes_locked_increments() {
    multiproc::init();
    let v = Value::new(0i64).unwrap();
    let hs: Vec<_> = (0..8)
        .map(|_| multiproc::spawn(increment_many, (v.clone(), 100_000)).unwrap())
        .collect();
    for h in hs {
        h.join().unwrap().unwrap();
    }
    assert_eq!(v.get(), 800_000);
}

fn hold_and_hang((lock, held): (Lock, Event)) {
    lock.acquire().unwrap();
    held.set();
    sleep_forever()
}

#[test]
fn lock_holder_killed_gives_owner_died() {
    multiproc::init();
    let lock = Lock::new().unwrap();
    let held = Event::new().unwrap();
    let h = multiproc::spawn(hold_and_hang, (lock.clone(), held.clone())).unwrap();
    assert!(held.wait_timeout(Duration::from_secs(10)).unwrap());
    h.kill().unwrap();
    let t = Instant::now();
    assert!(matches!(lock.acquire(), Err(Error::OwnerDied)));
    // The holder's death is seen at once (no timeout or poll interval to wait for); the bound
    // only leaves room for a loaded machine to schedule the dying holder and us.
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "took {:?}",
        t.elapsed()
    );
    // We hold it now; it works normally afterwards.
    assert!(lock.is_locked());
    assert!(!lock.try_acquire().unwrap());
    lock.release().unwrap();
    assert!(lock.try_acquire().unwrap());
    lock.release().unwrap();
    assert!(matches!(h.join(), Err(Error::WorkerDied { .. })));
}

/// Kills a process holding `lock` (taken with `acquire`, so no guard of its own).
fn kill_holding(lock: &Lock) {
    let held = Event::new().unwrap();
    let h = multiproc::spawn(hold_and_hang, (lock.clone(), held.clone())).unwrap();
    assert!(held.wait_timeout(Duration::from_secs(10)).unwrap());
    h.kill().unwrap();
    assert!(matches!(h.join(), Err(Error::WorkerDied { .. })));
}

#[test]
fn owner_died_guard_holds_the_lock_until_dropped() {
    multiproc::init();
    let lock = Lock::new().unwrap();
    kill_holding(&lock);
    // `lock_recoverable()` agrees with `acquire()`: the caller holds the lock, through the
    // guard carried by the error.
    let err = lock.lock_recoverable().unwrap_err();
    assert!(lock.is_locked());
    assert!(!lock.try_acquire().unwrap());
    let guard = err.into_inner();
    assert!(lock.is_locked());
    drop(guard);
    assert!(!lock.is_locked());

    // Dropping the error itself releases too.
    kill_holding(&lock);
    let err = lock.lock_recoverable().unwrap_err();
    assert!(lock.is_locked());
    drop(err);
    assert!(!lock.is_locked());

    // `?` turns it into Error::OwnerDied and never leaves the lock held.
    fn take(lock: &Lock) -> multiproc::Result<()> {
        let _g = lock.lock_recoverable()?;
        Ok(())
    }
    kill_holding(&lock);
    assert!(matches!(take(&lock), Err(Error::OwnerDied)));
    assert!(!lock.is_locked());
    take(&lock).unwrap();

    // The plain `lock()` is a multiproc::Result: OwnerDied, with the lock released again,
    // and the next call takes it cleanly.
    kill_holding(&lock);
    assert!(matches!(lock.lock(), Err(Error::OwnerDied)));
    assert!(!lock.is_locked());
    let _g = lock.lock().unwrap();
}

fn value_hold_and_hang((v, held): (Value<i64>, Event)) {
    let mut g = v.lock().unwrap();
    *g = 7; // not stored: the guard never drops
    held.set();
    sleep_forever()
}

#[test]
fn owner_died_guard_of_a_value_and_an_rlock() {
    multiproc::init();
    let v = Value::new(1i64).unwrap();
    let held = Event::new().unwrap();
    let h = multiproc::spawn(value_hold_and_hang, (v.clone(), held.clone())).unwrap();
    assert!(held.wait_timeout(Duration::from_secs(10)).unwrap());
    h.kill().unwrap();
    let _ = h.join();
    let mut err = v.lock_recoverable().unwrap_err();
    assert_eq!(**err.get_ref(), 1);
    **err.get_mut() = 2; // repaired through the guard, stored when it drops
    assert!(v.get_lock().is_locked());
    drop(err);
    assert!(!v.get_lock().is_locked());
    assert_eq!(v.get(), 2);

    let r = RLock::new().unwrap();
    fn take(r: RLock) -> bool {
        r.try_acquire().unwrap()
    }
    assert!(multiproc::spawn(take, r.clone()).unwrap().join().unwrap());
    let g = r.lock_recoverable().unwrap_err().into_inner();
    assert!(!multiproc::spawn(take, r.clone()).unwrap().join().unwrap());
    drop(g);
    assert!(multiproc::spawn(take, r.clone()).unwrap().join().unwrap());
    // That child died holding it again: `?` releases.
    fn via_question_mark(r: &RLock) -> multiproc::Result<()> {
        let _g = r.lock()?;
        Ok(())
    }
    assert!(matches!(via_question_mark(&r), Err(Error::OwnerDied)));
    via_question_mark(&r).unwrap();
}

// --- RLock ----------------------------------------------------------------------------------

#[test]
fn rlock_reentrant_and_owned() {
    multiproc::init();
    let r = RLock::new().unwrap();
    r.acquire().unwrap();
    r.acquire().unwrap();
    assert!(r.try_acquire().unwrap());
    // Another thread can neither take nor release it.
    std::thread::scope(|s| {
        s.spawn(|| {
            assert!(!r.try_acquire().unwrap());
            assert!(matches!(r.release(), Err(Error::InvalidOperation(_))));
        });
    });
    // Nor can another process.
    fn other(r: RLock) -> (bool, bool) {
        (r.try_acquire().unwrap(), r.release().is_err())
    }
    assert_eq!(
        multiproc::spawn(other, r.clone()).unwrap().join().unwrap(),
        (false, true)
    );
    r.release().unwrap();
    r.release().unwrap();
    r.release().unwrap();
    assert!(r.release().is_err());
    // Free now: the other process takes it (and exits holding it: it is then dead).
    fn take(r: RLock) -> bool {
        r.try_acquire().unwrap()
    }
    assert!(multiproc::spawn(take, r.clone()).unwrap().join().unwrap());
    assert!(matches!(r.acquire(), Err(Error::OwnerDied)));
    r.release().unwrap();
}

fn rlock_hold_and_hang((r, held): (RLock, Event)) {
    r.acquire().unwrap();
    r.acquire().unwrap();
    held.set();
    sleep_forever()
}

#[test]
fn rlock_holder_killed_gives_owner_died() {
    multiproc::init();
    let r = RLock::new().unwrap();
    let held = Event::new().unwrap();
    let h = multiproc::spawn(rlock_hold_and_hang, (r.clone(), held.clone())).unwrap();
    assert!(held.wait_timeout(Duration::from_secs(10)).unwrap());
    h.kill().unwrap();
    let t = Instant::now();
    assert!(matches!(r.acquire(), Err(Error::OwnerDied)));
    // Seen at once; the bound leaves room for a loaded machine only.
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "took {:?}",
        t.elapsed()
    );
    // We hold it once.
    r.release().unwrap();
    assert!(r.release().is_err());
    let _ = h.join();
}

// --- Semaphore ------------------------------------------------------------------------------

/// Sets `about_to_block`, then takes `n` units (each within a generous timeout).
fn sem_take((s, n, about_to_block): (Semaphore, u32, Event)) -> bool {
    about_to_block.set();
    (0..n).all(|_| s.acquire_timeout(Duration::from_secs(60)).unwrap())
}

/// Starts a child that takes `n` units of `s` and returns once it sleeps in `acquire`.
fn blocked_taker(s: &Semaphore, n: u32) -> multiproc::JoinHandle<bool> {
    let about_to_block = Event::new().unwrap();
    let h = multiproc::spawn(sem_take, (s.clone(), n, about_to_block.clone())).unwrap();
    about_to_block.wait().unwrap();
    common::until_in_futex_wait(h.pid(), h.pid());
    h
}

#[test]
fn semaphore_across_processes() {
    multiproc::init();
    let s = Semaphore::new(0).unwrap();
    // The child sleeps in acquire: our releases must wake it.
    let h = blocked_taker(&s, 2);
    s.release().unwrap();
    s.release().unwrap();
    assert!(h.join().unwrap());
    assert_eq!(s.get_value(), 0);
    assert!(!s.try_acquire().unwrap());
    assert!(!s.acquire_timeout(Duration::from_millis(20)).unwrap());

    let b = BoundedSemaphore::new(2).unwrap();
    b.acquire().unwrap();
    b.release().unwrap();
    assert!(matches!(b.release(), Err(Error::InvalidOperation(_))));
    assert_eq!(b.get_value(), 2);
    fn over(b: BoundedSemaphore) -> bool {
        b.release().is_err()
    }
    assert!(multiproc::spawn(over, b.clone()).unwrap().join().unwrap());
}

fn sem_wait((s, about_to_block): (Semaphore, Event)) {
    about_to_block.set();
    s.acquire().unwrap();
    sleep_forever()
}

#[test]
fn semaphore_survives_killed_waiter() {
    multiproc::init();
    let s = Semaphore::new(0).unwrap();
    let about_to_block = Event::new().unwrap();
    let h = multiproc::spawn(sem_wait, (s.clone(), about_to_block.clone())).unwrap();
    // Killed while it sleeps in acquire.
    about_to_block.wait().unwrap();
    common::until_in_futex_wait(h.pid(), h.pid());
    h.kill().unwrap();
    let _ = h.join();
    s.release().unwrap();
    assert_eq!(s.get_value(), 1);
    assert!(s.try_acquire().unwrap());
    assert_eq!(s.get_value(), 0);
    // Waking still works after the dead sleeper.
    let h = blocked_taker(&s, 1);
    s.release().unwrap();
    assert!(h.join().unwrap());
    assert_eq!(s.get_value(), 0);
}

// --- Event ----------------------------------------------------------------------------------

#[test]
fn event_across_processes() {
    multiproc::init();
    let e = Event::new().unwrap();
    assert!(!e.is_set());
    assert!(!e.wait_timeout(Duration::from_millis(20)).unwrap());
    fn waiter((e, about_to_block): (Event, Event)) -> bool {
        about_to_block.set();
        e.wait_timeout(Duration::from_secs(60)).unwrap()
    }
    // Set once all three sleep in wait: the one set wakes them all.
    let hs: Vec<_> = (0..3)
        .map(|_| {
            let about_to_block = Event::new().unwrap();
            let h = multiproc::spawn(waiter, (e.clone(), about_to_block.clone())).unwrap();
            about_to_block.wait().unwrap();
            h
        })
        .collect();
    for h in &hs {
        common::until_in_futex_wait(h.pid(), h.pid());
    }
    e.set();
    for h in hs {
        assert!(h.join().unwrap());
    }
    assert!(e.wait_timeout(Duration::ZERO).unwrap());
    e.clear();
    assert!(!e.is_set());
    fn setter(e: Event) {
        e.set()
    }
    multiproc::spawn(setter, e.clone()).unwrap().join().unwrap();
    assert!(e.is_set());
}

// --- Condition ------------------------------------------------------------------------------

fn cond_waiter((c, ready, woken): (Condition, RawValue<u32>, Value<u32>)) -> bool {
    c.acquire().unwrap();
    ready.set(ready.get() + 1);
    let notified = c.wait_timeout(Duration::from_secs(60)).unwrap();
    *woken.lock().unwrap() += 1;
    c.release().unwrap();
    notified
}

#[test]
fn condition_notify_one_then_all() {
    multiproc::init();
    let c = Condition::new().unwrap();
    assert!(matches!(c.wait(), Err(Error::InvalidOperation(_))));
    assert!(matches!(c.notify(), Err(Error::InvalidOperation(_))));
    c.acquire().unwrap();
    assert!(!c.wait_timeout(Duration::from_millis(20)).unwrap());
    c.release().unwrap();

    let ready = RawValue::new(0u32).unwrap();
    let woken = Value::new(0u32).unwrap();
    let hs: Vec<_> = (0..2)
        .map(|_| multiproc::spawn(cond_waiter, (c.clone(), ready.clone(), woken.clone())).unwrap())
        .collect();
    // Once both have registered (under the lock) and we hold the lock, both are waiting.
    loop {
        c.acquire().unwrap();
        if ready.get() == 2 {
            break;
        }
        c.release().unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    c.notify().unwrap();
    c.release().unwrap();
    // One waiter wakes and exits; the other sleeps on (a second wake would count in `woken`
    // before its process could go back to sleep or end).
    assert!(common::eventually(Duration::from_secs(30), || hs
        .iter()
        .any(|h| h.is_finished())));
    let left: Vec<_> = hs.iter().filter(|h| !h.is_finished()).collect();
    assert_eq!(left.len(), 1, "notify(1) must wake exactly one waiter");
    common::until_in_futex_wait(left[0].pid(), left[0].pid());
    c.acquire().unwrap();
    assert_eq!(woken.get(), 1, "notify(1) must wake exactly one waiter");
    c.notify_all().unwrap();
    c.release().unwrap();
    for h in hs {
        assert!(h.join().unwrap());
    }
    assert_eq!(woken.get(), 2);
}

#[test]
fn condition_wait_for_with_plain_lock() {
    multiproc::init();
    let lock = Lock::new().unwrap();
    let c = Condition::with_lock(lock.clone()).unwrap();
    let v = RawValue::new(0i32).unwrap();
    fn producer((c, v): (Condition, RawValue<i32>)) {
        // We hold the lock until the parent waits: each value is set while it waits.
        for i in 1..=3 {
            c.acquire().unwrap();
            v.set(i);
            c.notify_all().unwrap();
            c.release().unwrap();
        }
    }
    lock.acquire().unwrap();
    let h = multiproc::spawn(producer, (c.clone(), v.clone())).unwrap();
    assert!(c
        .wait_for(|| v.get() == 3, Some(Duration::from_secs(10)))
        .unwrap());
    assert!(lock.is_locked()); // re-acquired
    assert!(!c
        .wait_for(|| v.get() == 4, Some(Duration::from_millis(30)))
        .unwrap());
    lock.release().unwrap();
    h.join().unwrap();
}

// --- Barrier --------------------------------------------------------------------------------

fn party(b: Barrier) -> Result<usize, String> {
    b.wait().map_err(|e| e.to_string())
}

fn broken<T: std::fmt::Debug>(r: Result<T, String>) -> bool {
    matches!(r, Err(m) if m == Error::BrokenBarrier.to_string())
}

#[test]
fn barrier_indices_and_rounds() {
    multiproc::init();
    let b = Barrier::new(3).unwrap();
    for _round in 0..2 {
        let hs: Vec<_> = (0..2)
            .map(|_| multiproc::spawn(party, b.clone()).unwrap())
            .collect();
        let mut idx = vec![b.wait().unwrap()];
        for h in hs {
            idx.push(h.join().unwrap().unwrap());
        }
        idx.sort();
        assert_eq!(idx, vec![0, 1, 2]);
    }
    assert_eq!(b.parties(), 3);
    assert_eq!(b.n_waiting(), 0);
}

#[test]
fn barrier_timeout_abort_reset() {
    multiproc::init();
    let b = Barrier::new(3).unwrap();
    let h = multiproc::spawn(party, b.clone()).unwrap();
    // Our timeout breaks the barrier for the child too.
    let t = Instant::now();
    assert!(matches!(
        b.wait_timeout(Duration::from_millis(200)),
        Err(Error::BrokenBarrier)
    ));
    assert!(t.elapsed() >= Duration::from_millis(190));
    assert!(broken(h.join().unwrap()));
    assert!(b.broken());
    assert!(matches!(b.wait(), Err(Error::BrokenBarrier)));
    b.reset();
    assert!(!b.broken());

    // abort() from another process releases the waiters with an error.
    fn abort_later(b: Barrier) {
        // Once the parent waits at the barrier.
        assert!(common::eventually(Duration::from_secs(30), || b
            .n_waiting()
            == 1));
        b.abort();
    }
    let h = multiproc::spawn(abort_later, b.clone()).unwrap();
    assert!(matches!(b.wait(), Err(Error::BrokenBarrier)));
    h.join().unwrap();
    b.reset();

    // reset() while a party waits: it gets BrokenBarrier; the barrier is usable after.
    let h = multiproc::spawn(party, b.clone()).unwrap();
    assert!(common::eventually(Duration::from_secs(30), || b
        .n_waiting()
        == 1));
    b.reset();
    assert!(broken(h.join().unwrap()));
    let b1 = Barrier::new(1).unwrap();
    assert_eq!(b1.wait().unwrap(), 0);
}

fn barrier_bystander((b, started): (Barrier, Event)) {
    let _keep = &b;
    started.set();
    sleep_forever()
}

#[test]
fn barrier_with_a_killed_party_breaks() {
    multiproc::init();
    let b = Barrier::new(3).unwrap();
    let started = Event::new().unwrap();
    // One party waits; another holds the barrier but is killed before arriving.
    let waiter = multiproc::spawn(party, b.clone()).unwrap();
    let doomed = multiproc::spawn(barrier_bystander, (b.clone(), started.clone())).unwrap();
    assert!(started.wait_timeout(Duration::from_secs(10)).unwrap());
    doomed.kill().unwrap();
    let t = Instant::now();
    assert!(matches!(b.wait(), Err(Error::BrokenBarrier)));
    // The killed party is seen at once; the bound leaves room for a loaded machine only.
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "took {:?}",
        t.elapsed()
    );
    assert!(broken(waiter.join().unwrap()));
    let _ = doomed.join();
    // After a reset the survivors can use it again.
    b.reset();
    let hs: Vec<_> = (0..2)
        .map(|_| multiproc::spawn(party, b.clone()).unwrap())
        .collect();
    b.wait().unwrap();
    for h in hs {
        h.join().unwrap().unwrap();
    }
}

// --- Values ---------------------------------------------------------------------------------

fn square_list((list, result, sum): (Vec<i32>, Array<i32>, Value<i32>)) {
    for (i, n) in list.iter().enumerate() {
        result.set(i, n * n);
    }
    sum.set(result.to_vec().iter().sum());
}

#[test]
fn value_and_array_shared_with_child() {
    multiproc::init();
    let result = Array::<i32>::new(4).unwrap();
    let sum = Value::new(0i32).unwrap();
    multiproc::spawn(square_list, (vec![1, 2, 3, 4], result.clone(), sum.clone()))
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(sum.get(), 30);
    assert_eq!(result.to_vec(), vec![1, 4, 9, 16]);

    // Guards, get_lock, every number type.
    {
        let mut g = result.lock().unwrap();
        g.reverse();
    }
    assert_eq!(result.to_vec(), vec![16, 9, 4, 1]);
    {
        let _g = sum.get_lock().lock().unwrap();
        sum.set(sum.get() + 1); // does not deadlock: this process holds the lock
    }
    assert_eq!(sum.get(), 31);
    fn all_types(
        (a, b, c, d): (Value<f64>, Array<bool>, Array<u8>, Value<i8>),
    ) -> (f64, Vec<bool>, Vec<u8>, i8) {
        a.set(a.get() * 2.0);
        b.set(1, true);
        c.lock().unwrap()[2] = 255;
        {
            let mut g = d.lock().unwrap();
            *g = g.wrapping_sub(1);
        }
        (a.get(), b.to_vec(), c.to_vec(), d.get())
    }
    let args = (
        Value::new(1.25f64).unwrap(),
        Array::<bool>::new(2).unwrap(),
        Array::<u8>::from_slice(&[1, 2, 3]).unwrap(),
        Value::new(-128i8).unwrap(),
    );
    let got = multiproc::spawn(all_types, args.clone())
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(got, (2.5, vec![false, true], vec![1, 2, 255], 127));
    assert_eq!(args.0.get(), 2.5);
    assert_eq!(args.3.get(), 127);
}

fn raw_increments((r, lock, n): (RawValue<i64>, Option<Lock>, u32)) {
    for _ in 0..n {
        match &lock {
            Some(l) => {
                let _g = l.lock().unwrap();
                r.set(r.get() + 1);
            }
            None => r.set(r.get() + 1),
        }
    }
}

#[test]
fn raw_value_with_and_without_lock() {
    multiproc::init();
    for lock in [None, Some(Lock::new().unwrap())] {
        let r = RawValue::new(0i64).unwrap();
        let hs: Vec<_> = (0..2)
            .map(|_| multiproc::spawn(raw_increments, (r.clone(), lock.clone(), 50_000)).unwrap())
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        let total = r.get();
        if lock.is_some() {
            assert_eq!(total, 100_000);
        } else {
            // Updates may be lost (that is the point of the seed's demo), never invented.
            assert!(total > 0 && total <= 100_000, "total {total}");
        }
    }
}

fn take_and_exit(lock: Lock) -> bool {
    // Exits holding the lock: the process is then a dead holder.
    lock.try_acquire().unwrap_or(false)
}

#[test]
fn every_start_method_and_pipes_carry_primitives() {
    multiproc::init();
    // SAFETY: this test's other threads (the harness's) hold no lock the child needs.
    unsafe { multiproc::allow_fork_with_threads(true) };
    for m in [
        multiproc::StartMethod::ForkServer,
        multiproc::StartMethod::Spawn,
        multiproc::StartMethod::Fork,
    ] {
        let lock = Lock::new().unwrap();
        let h = multiproc::Builder::new()
            .start_method(m)
            .spawn(take_and_exit, lock.clone())
            .unwrap();
        assert!(h.join().unwrap(), "{m:?}");
        // The child's identity was its own (not the parent's cached one): the parent sees
        // a dead holder, not itself.
        assert!(
            matches!(
                lock.acquire_timeout(Duration::from_secs(5)),
                Err(Error::OwnerDied)
            ),
            "{m:?}"
        );
        lock.release().unwrap();
    }

    // Through a pipe: the received Event is the same event.
    let (a, b) = multiproc::pipe::<(Event, Semaphore)>().unwrap();
    let e = Event::new().unwrap();
    let s = Semaphore::new(0).unwrap();
    a.send(&(e.clone(), s.clone())).unwrap();
    let (e2, s2) = b.recv().unwrap();
    e2.set();
    s2.release().unwrap();
    assert!(e.is_set());
    assert_eq!(s.get_value(), 1);
}

fn contend_and_maybe_hang((lock, counter, hang_at, hung): (Lock, RawValue<u64>, u32, Event)) {
    for i in 0..20_000u32 {
        match lock.acquire() {
            Ok(()) | Err(Error::OwnerDied) => {}
            Err(e) => panic!("{e}"),
        }
        if i == hang_at {
            hung.set();
            sleep_forever(); // killed while holding the lock
        }
        counter.set(counter.get() + 1);
        lock.release().unwrap();
    }
}

/// Soak: processes contend for a lock while some of them are killed holding it; the
/// survivors always finish. `cargo nextest run --profile soak --run-ignored only`.
#[test]
#[ignore]
fn soak_contention_with_killed_holders() {
    multiproc::init();
    for round in 0..20u32 {
        let lock = Lock::new().unwrap();
        let counter = RawValue::new(0u64).unwrap();
        let hung = Event::new().unwrap();
        let doomed = multiproc::spawn(
            contend_and_maybe_hang,
            (lock.clone(), counter.clone(), 500 + round, hung.clone()),
        )
        .unwrap();
        let others: Vec<_> = (0..3)
            .map(|_| {
                multiproc::spawn(
                    contend_and_maybe_hang,
                    (lock.clone(), counter.clone(), u32::MAX, hung.clone()),
                )
                .unwrap()
            })
            .collect();
        // Once the doomed one hangs holding the lock, kill it.
        hung.wait().unwrap();
        doomed.kill().unwrap();
        let _ = doomed.join();
        for h in others {
            h.join().unwrap();
        }
        assert_eq!(counter.get(), 3 * 20_000 + 500 + u64::from(round));
    }
}

fn touch_all(
    (l, r, s, e, c, b, v, a): (
        Lock,
        RLock,
        Semaphore,
        Event,
        Condition,
        Barrier,
        Value<u8>,
        Array<u8>,
    ),
) -> usize {
    let _ = (
        l.is_locked(),
        r.try_acquire(),
        s.get_value(),
        e.is_set(),
        b.parties(),
    );
    let _ = (c.notify(), v.get(), a.len());
    0
}

#[test]
fn no_descriptor_growth() {
    multiproc::init();
    let round = || {
        let args = (
            Lock::new().unwrap(),
            RLock::new().unwrap(),
            Semaphore::new(1).unwrap(),
            Event::new().unwrap(),
            Condition::new().unwrap(),
            Barrier::new(2).unwrap(),
            Value::new(1u8).unwrap(),
            Array::<u8>::new(3).unwrap(),
        );
        multiproc::spawn(touch_all, args).unwrap().join().unwrap();
    };
    round();
    let before = common::fd_count();
    for _ in 0..20 {
        round();
    }
    assert_eq!(common::fd_count(), before);
}

// --- Barrier: action and default timeout ------------------------------------------------------

/// The counter the barrier's action bumps, set in every process before it waits.
static ROUNDS: std::sync::OnceLock<Value<u32>> = std::sync::OnceLock::new();

fn count_round() {
    *ROUNDS.get().expect("set before waiting").lock().unwrap() += 1;
}

/// Waits three rounds; after each, reports how many actions had run.
fn party_of_three((b, rounds): (Barrier, Value<u32>)) -> Vec<u32> {
    let _ = ROUNDS.set(rounds);
    (0..3)
        .map(|_| {
            b.wait().unwrap();
            ROUNDS.get().unwrap().get()
        })
        .collect()
}

#[test]
fn barrier_action_runs_once_per_round_before_anyone_goes_on() {
    multiproc::init();
    let rounds = Value::new(0u32).unwrap();
    let b = Barrier::builder(3).action(count_round).build().unwrap();
    let children: Vec<_> = (0..2)
        .map(|_| multiproc::spawn(party_of_three, (b.clone(), rounds.clone())).unwrap())
        .collect();
    let mine = party_of_three((b.clone(), rounds.clone()));
    // Round k is seen complete (k actions run) by every party as it leaves round k; a
    // fast party may already see the next round's action.
    for seen in children
        .into_iter()
        .map(|h| h.join().unwrap())
        .chain([mine])
    {
        for (k, n) in seen.iter().enumerate() {
            assert!(*n as usize > k, "{seen:?}");
        }
    }
    assert_eq!(rounds.get(), 3);
    assert!(!b.broken());
}

fn panicking_action() {
    panic!("the action failed");
}

fn wait_on(b: Barrier) -> String {
    match b.wait() {
        Ok(i) => format!("ok {i}"),
        Err(Error::TaskPanicked { message, .. }) => format!("panicked: {message}"),
        Err(Error::BrokenBarrier) => "broken".into(),
        Err(e) => format!("other: {e}"),
    }
}

#[test]
fn a_panicking_action_breaks_the_barrier() {
    multiproc::init();
    let b = Barrier::builder(3)
        .action(panicking_action)
        .build()
        .unwrap();
    let children: Vec<_> = (0..2)
        .map(|_| multiproc::spawn(wait_on, b.clone()).unwrap())
        .collect();
    let mine = wait_on(b.clone());
    let mut got: Vec<String> = children.into_iter().map(|h| h.join().unwrap()).collect();
    got.push(mine);
    got.sort();
    assert_eq!(got, ["broken", "broken", "panicked: the action failed"]);
    assert!(b.broken());
}

#[test]
fn barrier_default_timeout_breaks_it_in_every_process() {
    multiproc::init();
    let b = Barrier::builder(3)
        .timeout(Duration::from_millis(50))
        .build()
        .unwrap();
    // One party alone: its wait times out after the default timeout.
    assert_eq!(
        multiproc::spawn(wait_on, b.clone())
            .unwrap()
            .join()
            .unwrap(),
        "broken"
    );
    assert!(b.broken());
    b.reset();
    // An explicit timeout still overrides the default.
    let t = Instant::now();
    assert!(matches!(
        b.wait_timeout(Duration::from_millis(300)),
        Err(Error::BrokenBarrier)
    ));
    assert!(t.elapsed() >= Duration::from_millis(300));
}

// --- Value and Array sharing a lock; RLock ownership ---------------------------------------------

/// Moves units from `a` to `b` and records them in `log`, all under the one shared lock.
fn transfer_many((a, b, log, n): (Value<i64>, Value<i64>, Array<i64>, usize)) -> bool {
    // The three share one lock: taking it through `a` locks `b` and `log` too.
    let same = {
        let _g = a.get_lock().lock().unwrap();
        b.get_lock().is_locked() && log.get_lock().is_locked()
    };
    for _ in 0..n {
        let _g = a.get_lock().lock().unwrap();
        a.set(a.get() - 1);
        b.set(b.get() + 1);
        log.set(0, log.get(0) + 1);
    }
    same
}

#[test]
fn values_and_arrays_sharing_one_lock_change_together_across_processes() {
    multiproc::init();
    let lock = Lock::new().unwrap();
    let a = Value::with_lock(1000i64, lock.clone()).unwrap();
    let b = Value::with_lock(0i64, lock.clone()).unwrap();
    let log = Array::with_lock(&[0i64, 7], lock.clone()).unwrap();
    let children: Vec<_> = (0..2)
        .map(|_| multiproc::spawn(transfer_many, (a.clone(), b.clone(), log.clone(), 200)).unwrap())
        .collect();
    // Under the lock, every look sees a consistent state.
    for _ in 0..200 {
        let _g = lock.lock().unwrap();
        assert_eq!(a.get() + b.get(), 1000);
        assert_eq!(log.get(0), b.get());
    }
    for h in children {
        assert!(h.join().unwrap());
    }
    assert_eq!((a.get(), b.get()), (600, 400));
    assert_eq!(log.to_vec(), vec![400, 7]);
    // A value with a lock of its own does not share it.
    let own = Value::new(0i64).unwrap();
    let _g = lock.lock().unwrap();
    assert!(!own.get_lock().is_locked());
}

fn rlock_state(r: RLock) -> (bool, bool) {
    (r.is_owned(), r.is_locked())
}

#[test]
fn rlock_says_whether_it_is_held_and_by_whom() {
    multiproc::init();
    let r = RLock::new().unwrap();
    assert_eq!(rlock_state(r.clone()), (false, false));
    r.acquire().unwrap();
    r.acquire().unwrap();
    assert_eq!(rlock_state(r.clone()), (true, true));
    // Another process sees it held, not by itself.
    assert_eq!(
        multiproc::spawn(rlock_state, r.clone())
            .unwrap()
            .join()
            .unwrap(),
        (false, true)
    );
    // Another thread of this process too.
    let r2 = r.clone();
    assert_eq!(
        std::thread::spawn(move || rlock_state(r2)).join().unwrap(),
        (false, true)
    );
    r.release().unwrap();
    assert_eq!(rlock_state(r.clone()), (true, true));
    r.release().unwrap();
    assert_eq!(
        multiproc::spawn(rlock_state, r.clone())
            .unwrap()
            .join()
            .unwrap(),
        (false, false)
    );
}

// --- Barrier: its internal lock held by a process that does not let go ---------------------

/// Set in the child that must hang inside the barrier's action (so, holding the barrier's
/// internal lock); unset elsewhere, where the action does nothing.
static HANG_IN_ACTION: std::sync::OnceLock<Event> = std::sync::OnceLock::new();

fn hang_in_action() {
    if let Some(in_action) = HANG_IN_ACTION.get() {
        in_action.set();
        sleep_forever()
    }
}

/// Arrives at the barrier last: its action runs here, under the barrier's lock, and hangs.
fn arrive_and_hang_in_the_action((b, in_action): (Barrier, Event)) {
    let _ = HANG_IN_ACTION.set(in_action);
    let _ = b.wait();
}

/// Starts `b.wait_timeout(timeout)` on another thread; its result and how long it took
/// arrive on the receiver.
fn start_wait_timeout(
    b: &Barrier,
    timeout: Duration,
) -> std::sync::mpsc::Receiver<(Result<usize, Error>, Duration)> {
    let (tx, rx) = std::sync::mpsc::channel();
    let b = b.clone();
    std::thread::spawn(move || {
        let t = Instant::now();
        let r = b.wait_timeout(timeout);
        let _ = tx.send((r, t.elapsed()));
    });
    rx
}

/// The outcome of a [`start_wait_timeout`], or a failure if it has not returned long
/// after its timeout.
fn outcome(
    rx: std::sync::mpsc::Receiver<(Result<usize, Error>, Duration)>,
    timeout: Duration,
) -> (Result<usize, Error>, Duration) {
    rx.recv_timeout(timeout + Duration::from_secs(30))
        .expect("wait_timeout did not return long after its timeout")
}

/// Runs `b.wait_timeout(timeout)` on another thread: its result and how long it took.
fn bounded_wait_timeout(b: &Barrier, timeout: Duration) -> (Result<usize, Error>, Duration) {
    outcome(start_wait_timeout(b, timeout), timeout)
}

/// Loose end 4: `Barrier::wait_timeout` honours its timeout even when another process
/// holds the barrier's internal lock and does not let go (here: hangs in the action, then
/// is stopped with SIGSTOP): a waiter already counted and a newcomer both get
/// `BrokenBarrier` about their timeout after their call (not sooner, not much later),
/// and the barrier is broken. Once the holder is killed, the next wait sees the barrier
/// broken at once, and `reset` works.
#[test]
fn barrier_wait_timeout_is_honoured_while_a_stopped_process_holds_its_lock() {
    multiproc::init();
    let b = Barrier::builder(2).action(hang_in_action).build().unwrap();
    // The first party waits (in this process) with a timeout.
    let first = start_wait_timeout(&b, Duration::from_secs(2));
    assert!(common::eventually(Duration::from_secs(30), || b
        .n_waiting()
        == 1));
    // The last party arrives in a child, whose action takes the lock and hangs.
    let in_action = Event::new().unwrap();
    let holder = multiproc::spawn(
        arrive_and_hang_in_the_action,
        (b.clone(), in_action.clone()),
    )
    .unwrap();
    assert!(in_action.wait_timeout(Duration::from_secs(30)).unwrap());
    let (r, waited) = outcome(first, Duration::from_secs(2));
    assert!(matches!(r, Err(Error::BrokenBarrier)), "{r:?}");
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_secs(10),
        "{waited:?}"
    );
    // Stopped: it cannot let go of the lock, yet a newcomer's timeout holds.
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(holder.pid() as i32).unwrap(),
        rustix::process::Signal::STOP,
    )
    .unwrap();
    assert!(common::eventually(Duration::from_secs(30), || {
        common::stopped(holder.pid())
    }));
    let timeout = Duration::from_millis(300);
    let (r, waited) = bounded_wait_timeout(&b, timeout);
    assert!(matches!(r, Err(Error::BrokenBarrier)), "{r:?}");
    assert!(
        waited >= timeout && waited < timeout + Duration::from_secs(5),
        "{waited:?}"
    );
    assert!(b.broken());
    // Killed while holding the lock: noticed within the next wait, long before its timeout.
    holder.kill().unwrap();
    let _ = holder.join();
    let (r, waited) = bounded_wait_timeout(&b, Duration::from_secs(60));
    assert!(matches!(r, Err(Error::BrokenBarrier)), "{r:?}");
    assert!(waited < Duration::from_secs(10), "{waited:?}");
    b.reset();
    assert!(!b.broken());
    assert_eq!(b.n_waiting(), 0);
}
