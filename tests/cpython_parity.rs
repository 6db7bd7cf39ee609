//! Behaviour parity with CPython's own test suite (`Lib/test/_test_multiprocessing.py`):
//! each test mirrors one CPython test (named in its doc comment) for the assertions that
//! map onto this crate's API. Deliberate differences are in `src/docs/differences.md`.
//! Children and the test synchronise by events and semaphores, never by sleeping.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use multiproc::connection::wait;
use multiproc::queue::TryPutError;
use multiproc::{
    Array, Barrier, BoundedSemaphore, Condition, Error, Event, JoinableQueue, Lock, Pool, Process,
    Queue, RLock, RawArray, RawValue, Semaphore, SimpleQueue, Value,
};

const SHORT: Duration = Duration::from_millis(100);

/// A child that says it runs, then waits to be told to stop.
fn run_until((started, stop): (Event, Event)) {
    started.set();
    stop.wait().unwrap();
}

/// [`run_until`] with SIGINT's default action, as `test_interrupt_no_handler`'s child sets
/// it: a program started with SIGINT ignored (a background job of a non-interactive shell)
/// passes that on to its children, in Python as here.
fn run_until_sigint_default(ev: (Event, Event)) {
    // SAFETY: setting a signal's disposition to SIG_DFL installs no handler code; it only
    // changes SIGINT's disposition in this child.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_DFL);
    }
    run_until(ev);
}

fn events() -> (Event, Event) {
    (Event::new().unwrap(), Event::new().unwrap())
}

/// Runs `f`, a call given the timeout [`SHORT`], and checks that it did wait that long
/// (Python's `assertTimingAlmostEqual(elapsed, TIMEOUT)`, lower bound only); returns its result.
fn after_short(f: impl FnOnce() -> bool) -> bool {
    let t = Instant::now();
    let r = f();
    let waited = t.elapsed();
    assert!(
        waited >= SHORT - Duration::from_millis(10),
        "returned after {waited:?}"
    );
    r
}

// --- _TestProcess -----------------------------------------------------------------------------

/// What a process sees of itself and its parent: name, pid, ident, daemon, authkey, and
/// its parent's name, pid and daemon flag.
type SelfView = (String, u32, u32, bool, Vec<u8>, Option<(String, u32, bool)>);

fn self_view() -> SelfView {
    let me = multiproc::current_process();
    let parent = multiproc::parent_process().map(|p| (p.name().to_string(), p.pid(), p.daemon()));
    (
        me.name().to_string(),
        me.pid(),
        me.ident(),
        me.daemon(),
        me.authkey(),
        parent,
    )
}

/// `_TestProcess.test_process`'s and `test_current`'s view of `current_process()`: in the
/// main process the name is `MainProcess`, `daemon` is false, `ident` is the pid and
/// `authkey` is non-empty bytes; a daemon child sees its
/// given name, `daemon` true, its own pid as `ident`, the parent's `authkey`; a child of
/// that daemon (not a daemon itself) sees the same key and its parent as a daemon; the
/// parent's `active_children` shows the child's daemon flag. Under the fork server and
/// spawn alike. A manager started without a key uses this one, as in Python, so a child
/// connects to its parent's manager knowing only its address.
#[test]
fn current_process_attributes() {
    multiproc::init();
    let me = multiproc::current_process();
    assert_eq!(me.name(), "MainProcess");
    assert!(!me.daemon());
    assert_eq!(me.ident(), std::process::id());
    assert_eq!(me.authkey().len(), 32);
    assert_eq!(me.authkey(), multiproc::current_process().authkey());

    fn daemon_child(_: ()) -> (SelfView, SelfView) {
        let grandchild = multiproc::Builder::new()
            .name("grandchild")
            .spawn(|_: ()| self_view(), ())
            .unwrap()
            .join()
            .unwrap();
        (self_view(), grandchild)
    }
    fn wait_stop((started, stop): (Event, Event)) {
        run_until((started, stop));
    }
    for method in [
        multiproc::StartMethod::ForkServer,
        multiproc::StartMethod::Spawn,
    ] {
        let h = multiproc::Builder::new()
            .name("gate")
            .daemon(true)
            .start_method(method)
            .spawn(daemon_child, ())
            .unwrap();
        let child_pid = h.pid();
        let (child, grandchild) = h.join().unwrap();
        let parent = Some(("MainProcess".to_string(), std::process::id(), false));
        assert_eq!(
            child,
            (
                "gate".into(),
                child_pid,
                child_pid,
                true,
                me.authkey(),
                parent
            ),
            "{method:?}"
        );
        let (name, pid, ident, daemon, key, parent) = grandchild;
        assert_eq!((name.as_str(), ident, daemon), ("grandchild", pid, false));
        assert_eq!(key, me.authkey());
        assert_eq!(parent, Some(("gate".to_string(), child_pid, true)));

        let (started, stop) = events();
        let mut p = Process::new(wait_stop, (started.clone(), stop.clone()))
            .with_daemon(true)
            .with_start_method(method);
        p.start().unwrap();
        started.wait().unwrap();
        let seen = multiproc::active_children();
        let info = seen.iter().find(|c| Some(c.pid()) == p.pid()).unwrap();
        assert!(info.daemon() && info.ident() == info.pid());
        stop.set();
        p.join().unwrap();
    }

    fn connect(address: multiproc::connection::Address) -> i32 {
        let key = multiproc::current_process().authkey();
        let m = multiproc::Manager::connect(&address, &key).unwrap();
        m.value(7i32).unwrap().get().unwrap()
    }
    let manager = multiproc::Manager::start().unwrap();
    assert_eq!(manager.authkey(), me.authkey());
    let got = multiproc::spawn(connect, manager.address().clone())
        .unwrap()
        .join();
    assert_eq!(got.unwrap(), 7);
}

/// `_TestProcess.test_process`: exitcode/is_alive/pid before, during and after the run,
/// `active_children`, the child's name and parent.
#[test]
fn process_lifecycle() {
    multiproc::init();
    fn child((q, started, stop): (Queue<(String, u32)>, Event, Event)) {
        let me = multiproc::current_process();
        let parent = multiproc::parent_process().map(|p| p.pid()).unwrap_or(0);
        q.put((me.name().to_string(), parent)).unwrap();
        run_until((started, stop));
    }
    assert_eq!(multiproc::current_process().name(), "MainProcess");
    assert!(multiproc::parent_process().is_none());
    let q = Queue::new().unwrap();
    let (started, stop) = events();
    let mut p = Process::new(child, (q.clone(), started.clone(), stop.clone()))
        .with_name("p1")
        .with_daemon(true);
    assert_eq!(p.exitcode(), None);
    assert!(!p.is_alive());
    assert!(p.daemon());
    assert_eq!(p.name(), "p1");
    assert!(p.pid().is_none());
    assert!(matches!(p.join(), Err(Error::NotStarted)));
    p.start().unwrap();
    started.wait().unwrap();
    assert!(p.is_alive());
    assert_eq!(p.exitcode(), None);
    let pid = p.pid().unwrap();
    assert!(multiproc::active_children().iter().any(|c| c.pid() == pid));
    assert_eq!(q.get().unwrap(), ("p1".to_string(), std::process::id()));
    assert!(matches!(p.start(), Err(Error::AlreadyStarted)));
    stop.set();
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(0));
    assert!(!p.is_alive());
    assert!(!multiproc::active_children().iter().any(|c| c.pid() == pid));
}

/// `_TestProcess.test_name` / default names: `Process-N` like Python.
#[test]
fn process_default_name() {
    multiproc::init();
    let p = Process::new(|_: ()| (), ());
    let n = p
        .name()
        .strip_prefix("Process-")
        .unwrap_or_else(|| panic!("{}", p.name()));
    assert!(n.parse::<u32>().is_ok(), "{}", p.name());
}

/// `_TestProcess.test_terminate`, `test_kill` and `test_interrupt_no_handler`
/// (`_kill_process`): `join(timeout)` reports a running child (Python returns `None` and
/// `exitcode` stays `None`), then the exit code is `-signal` (SIGINT too: the child has no
/// handler for it), the child is no longer alive nor among `active_children`, and joining
/// again, terminating, killing or interrupting it then changes nothing.
#[test]
fn process_terminate_and_kill() {
    multiproc::init();
    for sig in [15, 9, 2] {
        let (started, stop) = events();
        let mut p =
            Process::new(run_until_sigint_default, (started.clone(), stop)).with_daemon(true);
        p.start().unwrap();
        started.wait().unwrap();
        assert!(!p.join_timeout(Duration::ZERO).unwrap());
        assert!(after_short(|| !p.join_timeout(SHORT).unwrap()));
        assert_eq!(p.exitcode(), None);
        assert!(p.is_alive());
        match sig {
            15 => p.terminate().unwrap(),
            9 => p.kill().unwrap(),
            _ => p.interrupt().unwrap(),
        }
        assert!(p.join_timeout(Duration::from_secs(30)).unwrap());
        assert_eq!(p.exitcode(), Some(-sig));
        assert!(!p.is_alive());
        let pid = p.pid().unwrap();
        assert!(!multiproc::active_children().iter().any(|c| c.pid() == pid));
        // Python: terminating a finished process does nothing.
        p.join().unwrap();
        p.terminate().unwrap();
        p.kill().unwrap();
        p.interrupt().unwrap();
        assert_eq!(p.exitcode(), Some(-sig));
    }
    // Before start: nothing to signal (Python: an `AttributeError` on its missing popen).
    let p = Process::new(run_until, events());
    assert!(matches!(p.interrupt(), Err(Error::NotStarted)));
}

/// `_TestProcess.test_sys_exit` / `test_exitcode`: the code given to `sys.exit(n)` is the
/// exit code; an uncaught exception (here a panic) gives 1.
#[test]
fn process_exit_codes() {
    multiproc::init();
    fn exit_with(n: i32) {
        std::process::exit(n)
    }
    for n in [0, 1, 3, 42] {
        let mut p = Process::new(exit_with, n);
        p.start().unwrap();
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(n));
    }
    let mut p = Process::new(|_: ()| panic!("boom"), ());
    p.start().unwrap();
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(1));
}

/// `_TestProcess.test_sentinel`: the sentinel is not ready while the child runs and is
/// ready once it has ended.
#[test]
fn process_sentinel() {
    multiproc::init();
    let (started, stop) = events();
    let mut p = Process::new(run_until, (started.clone(), stop.clone()));
    assert!(p.sentinel().is_none());
    p.start().unwrap();
    started.wait().unwrap();
    let s = p.sentinel().unwrap();
    assert!(wait(&[&s], Some(Duration::ZERO)).unwrap().is_empty());
    stop.set();
    assert_eq!(wait(&[&s], Some(Duration::from_secs(30))).unwrap(), vec![0]);
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(0));
}

// --- _TestQueue -------------------------------------------------------------------------------

/// `_TestQueue.test_put`: a bounded queue fills up; `put_nowait` and `put(timeout)` raise
/// `Full`; `qsize`/`empty`/`full` follow.
#[test]
fn queue_put_full() {
    multiproc::init();
    let q = Queue::<i32>::bounded(6).unwrap();
    assert!(q.empty());
    assert!(!q.full());
    assert_eq!(q.qsize(), 0);
    q.put(1).unwrap();
    q.put_timeout(2, SHORT).unwrap();
    q.try_put(3).unwrap();
    q.put(4).unwrap();
    q.put_timeout(5, SHORT).unwrap();
    q.try_put(6).unwrap();
    assert!(!q.empty());
    assert!(q.full());
    assert_eq!(q.qsize(), 6);
    assert!(matches!(q.try_put(7), Err(Error::Full)));
    assert!(after_short(|| matches!(
        q.put_timeout(7, SHORT),
        Err(Error::Full)
    )));
    // A child takes them all, in order.
    fn drain(q: Queue<i32>) -> Vec<i32> {
        (0..6).map(|_| q.get().unwrap()).collect()
    }
    let got = multiproc::spawn(drain, q.clone()).unwrap().join().unwrap();
    assert_eq!(got, vec![1, 2, 3, 4, 5, 6]);
    assert!(q.empty());
    assert!(!q.full());
}

/// `_TestQueue.test_get` / `test_timeout`: `get_nowait` and `get(timeout)` on an empty
/// queue raise `Empty`, the latter after the timeout.
#[test]
fn queue_get_empty() {
    multiproc::init();
    let q = Queue::<i32>::new().unwrap();
    assert!(matches!(q.try_get(), Err(Error::Empty)));
    assert!(after_short(|| matches!(
        q.get_timeout(SHORT),
        Err(Error::Empty)
    )));
    fn put_some(q: Queue<i32>) {
        for i in 0..3 {
            q.put(i).unwrap();
        }
    }
    multiproc::spawn(put_some, q.clone())
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(q.qsize(), 3);
    assert_eq!(q.get().unwrap(), 0);
    assert_eq!(q.get_timeout(SHORT).unwrap(), 1);
    assert_eq!(q.try_get().unwrap(), 2);
    assert!(q.empty());
}

/// `_TestQueue.test_closed_queue_put_get_exceptions`: after `close`, `put` and `get` raise
/// (Python: `ValueError: Queue ... is closed`), in every form, with a message that says so.
/// `qsize`, `empty` and `full` still answer, from the queue's shared memory (CPython 3.11
/// answers too; later versions raise `OSError` from `empty` once the reader is closed: a
/// documented difference).
#[test]
fn queue_closed_put_get() {
    multiproc::init();
    let q = Queue::<i32>::bounded(1).unwrap();
    q.put(1).unwrap();
    q.close();
    assert!(q.is_closed());
    let e = q.put(2).unwrap_err();
    assert!(matches!(e, Error::Closed));
    assert!(e.to_string().contains("queue"), "{e}");
    assert!(matches!(q.try_put(2), Err(Error::Closed)));
    assert!(matches!(q.put_timeout(2, SHORT), Err(Error::Closed)));
    assert!(matches!(q.get(), Err(Error::Closed)));
    assert!(matches!(q.try_get(), Err(Error::Closed)));
    assert!(matches!(q.get_timeout(SHORT), Err(Error::Closed)));
    assert_eq!(q.qsize(), 1);
    assert!(!q.empty());
    assert!(q.full());
    // Another handle (here a clone sent to a child) is not closed: the item is still there.
    fn take(q: Queue<i32>) -> i32 {
        q.get().unwrap()
    }
    let q2 = Queue::<i32>::new().unwrap();
    q2.put(7).unwrap();
    let h = multiproc::spawn(take, q2.clone()).unwrap();
    q2.close();
    assert_eq!(h.join().unwrap(), 7);
}

/// `_TestQueue.test_task_done`: workers take items and call `task_done`; `join` returns
/// once all are done; one `task_done` too many raises.
#[test]
fn joinable_queue_task_done() {
    multiproc::init();
    fn worker(q: JoinableQueue<Option<i32>>) {
        while let Some(_item) = q.get().unwrap() {
            q.task_done().unwrap();
        }
        q.task_done().unwrap();
    }
    let q = JoinableQueue::new().unwrap();
    let workers: Vec<_> = (0..3)
        .map(|_| multiproc::spawn(worker, q.clone()).unwrap())
        .collect();
    for i in 0..10 {
        q.put(Some(i)).unwrap();
    }
    q.join().unwrap();
    assert_eq!(q.unfinished_tasks(), 0);
    for _ in &workers {
        q.put(None).unwrap();
    }
    for w in workers {
        w.join().unwrap();
    }
    q.join().unwrap();
    assert!(matches!(q.task_done(), Err(Error::InvalidOperation(_))));
}

/// `TestSimpleQueue.test_empty` (and `test_close`): `empty` follows puts and gets across
/// processes; a closed handle refuses.
#[test]
fn simple_queue_empty() {
    multiproc::init();
    fn put_one((q, v): (SimpleQueue<i32>, i32)) {
        q.put(v).unwrap();
    }
    let q = SimpleQueue::<i32>::new().unwrap();
    assert!(q.empty());
    multiproc::spawn(put_one, (q.clone(), 5))
        .unwrap()
        .join()
        .unwrap();
    assert!(!q.empty());
    assert_eq!(q.get().unwrap(), 5);
    assert!(q.empty());
    q.close();
    assert!(q.put(1).is_err());
    assert!(q.get().is_err());
}

// --- _TestLock / _TestSemaphore ---------------------------------------------------------------

/// `_TestLock.test_lock`: acquire, non-blocking acquire fails, release, and releasing an
/// unlocked lock raises.
#[test]
fn lock_basics() {
    let lock = Lock::new().unwrap();
    lock.acquire().unwrap();
    assert!(!lock.try_acquire().unwrap());
    assert!(!lock.acquire_timeout(SHORT).unwrap());
    lock.release().unwrap();
    assert!(matches!(lock.release(), Err(Error::InvalidOperation(_))));
    {
        let _g = lock.lock().unwrap();
        assert!(lock.is_locked());
    }
    assert!(!lock.is_locked());
}

/// `_TestLock.test_rlock`: three acquires, three releases, the fourth raises; another
/// thread cannot release it.
#[test]
fn rlock_basics() {
    let r = RLock::new().unwrap();
    for _ in 0..3 {
        r.acquire().unwrap();
    }
    let other = r.clone();
    let released_elsewhere = std::thread::spawn(move || other.release().is_ok())
        .join()
        .unwrap();
    assert!(!released_elsewhere);
    for _ in 0..3 {
        r.release().unwrap();
    }
    assert!(r.release().is_err());
}

/// `_TestSemaphore.test_semaphore` and `test_timeout`: the value follows acquires and
/// releases; a non-blocking or timed acquire of a zero semaphore fails.
#[test]
fn semaphore_value_and_timeout() {
    let s = Semaphore::new(2).unwrap();
    assert_eq!(s.get_value(), 2);
    s.acquire().unwrap();
    assert_eq!(s.get_value(), 1);
    assert!(s.try_acquire().unwrap());
    assert_eq!(s.get_value(), 0);
    assert!(!s.try_acquire().unwrap());
    assert!(after_short(|| !s.acquire_timeout(SHORT).unwrap()));
    s.release().unwrap();
    assert_eq!(s.get_value(), 1);
    s.release().unwrap();
    s.release().unwrap();
    // An unbounded semaphore may go above its initial value.
    assert_eq!(s.get_value(), 3);
}

/// `_TestSemaphore.test_bounded_semaphore`: releasing beyond the initial value raises
/// `ValueError`.
#[test]
fn bounded_semaphore_over_release() {
    let s = BoundedSemaphore::new(2).unwrap();
    assert!(s.release().is_err());
    assert_eq!(s.get_value(), 2);
    s.acquire().unwrap();
    s.release().unwrap();
    assert!(s.release().is_err());
    assert_eq!(s.get_value(), 2);
}

// --- _TestEvent -------------------------------------------------------------------------------

/// `_TestEvent.test_event`: `wait(timeout)` on an unset event returns False after the
/// timeout; a child's `set` wakes a waiter; `clear` unsets.
#[test]
fn event_semantics() {
    multiproc::init();
    let e = Event::new().unwrap();
    assert!(!e.is_set());
    assert!(!e.wait_timeout(Duration::ZERO).unwrap());
    assert!(after_short(|| !e.wait_timeout(SHORT).unwrap()));
    e.set();
    assert!(e.is_set());
    assert!(e.wait_timeout(Duration::ZERO).unwrap());
    e.wait().unwrap();
    e.clear();
    assert!(!e.is_set());
    fn set_it(e: Event) {
        e.set()
    }
    let h = multiproc::spawn(set_it, e.clone()).unwrap();
    e.wait().unwrap();
    assert!(e.is_set());
    h.join().unwrap();
}

// --- _TestCondition ---------------------------------------------------------------------------

/// A child that waits on the condition: `sleeping` is released with the lock held (so once
/// the parent holds the lock, the child is inside `wait`), `woken` after it wakes.
fn cond_waiter((c, sleeping, woken): (Condition, Semaphore, Semaphore)) -> bool {
    c.acquire().unwrap();
    sleeping.release().unwrap();
    c.wait().unwrap();
    woken.release().unwrap();
    c.release().unwrap();
    true
}

/// `_TestCondition.test_notify` and `test_notify_n` / `test_notify_all`: `notify(n)` wakes
/// exactly n waiters, `notify_all` the rest.
#[test]
fn condition_notify_n_and_all() {
    multiproc::init();
    let c = Condition::new().unwrap();
    let (sleeping, woken) = (Semaphore::new(0).unwrap(), Semaphore::new(0).unwrap());
    let kids: Vec<_> = (0..4)
        .map(|_| {
            multiproc::spawn(cond_waiter, (c.clone(), sleeping.clone(), woken.clone())).unwrap()
        })
        .collect();
    for _ in 0..4 {
        sleeping.acquire().unwrap();
    }
    c.acquire().unwrap(); // every child is now inside wait()
    c.notify().unwrap();
    c.release().unwrap();
    woken.acquire().unwrap();
    assert!(
        !woken.acquire_timeout(SHORT).unwrap(),
        "notify(1) woke more than one"
    );
    c.acquire().unwrap();
    c.notify_n(2).unwrap();
    c.release().unwrap();
    woken.acquire().unwrap();
    woken.acquire().unwrap();
    assert!(
        !woken.acquire_timeout(SHORT).unwrap(),
        "notify(2) woke more than two"
    );
    c.acquire().unwrap();
    c.notify_all().unwrap();
    c.release().unwrap();
    woken.acquire().unwrap();
    for k in kids {
        assert!(k.join().unwrap());
    }
    assert_eq!(woken.get_value(), 0);
}

/// `_TestCondition.test_timeout` and `test_wait_result`: `wait(timeout)` returns False when
/// nobody notifies (`wait(0)` at once), True when a child does.
#[test]
fn condition_wait_result() {
    multiproc::init();
    let c = Condition::new().unwrap();
    c.acquire().unwrap();
    assert!(!c.wait_timeout(Duration::ZERO).unwrap());
    // The lock is held again after a wait that timed out.
    assert!(matches!(c.lock(), multiproc::CondLock::RLock(r) if r.is_owned()));
    assert!(after_short(|| !c.wait_timeout(SHORT).unwrap()));
    fn notifier(c: Condition) {
        c.acquire().unwrap();
        c.notify().unwrap();
        c.release().unwrap();
    }
    // The child can only take the lock once we are inside wait_timeout.
    let h = multiproc::spawn(notifier, c.clone()).unwrap();
    assert!(c.wait_timeout(Duration::from_secs(60)).unwrap());
    c.release().unwrap();
    h.join().unwrap();
}

/// `_TestCondition.test_waitfor` and `test_waitfor_timeout`: `wait_for` returns once the
/// predicate holds (changed by another process), or False after the timeout.
#[test]
fn condition_wait_for() {
    multiproc::init();
    let c = Condition::new().unwrap();
    let state = Value::new(0i32).unwrap();
    c.acquire().unwrap();
    assert!(after_short(|| !c
        .wait_for(|| state.get() == 4, Some(SHORT))
        .unwrap()));
    c.release().unwrap();
    fn bump((c, state): (Condition, Value<i32>)) {
        for _ in 0..4 {
            c.acquire().unwrap();
            state.set(state.get() + 1);
            c.notify().unwrap();
            c.release().unwrap();
        }
    }
    c.acquire().unwrap();
    let h = multiproc::spawn(bump, (c.clone(), state.clone())).unwrap();
    assert!(c.wait_for(|| state.get() == 4, None).unwrap());
    assert_eq!(state.get(), 4);
    c.release().unwrap();
    h.join().unwrap();
}

// --- _TestBarrier -----------------------------------------------------------------------------

/// `_TestBarrier.test_barrier`, `test_barrier_10` and `test_wait_return`: every party
/// gets a distinct index, exactly one gets 0, over ten consecutive cycles; `parties`,
/// `n_waiting`, `broken`.
#[test]
fn barrier_indices() {
    multiproc::init();
    const CYCLES: usize = 10;
    let b = Barrier::new(4).unwrap();
    assert_eq!(b.parties(), 4);
    assert_eq!(b.n_waiting(), 0);
    assert!(!b.broken());
    fn party(b: Barrier) -> Vec<usize> {
        (0..CYCLES).map(|_| b.wait().unwrap()).collect()
    }
    let kids: Vec<_> = (0..3)
        .map(|_| multiproc::spawn(party, b.clone()).unwrap())
        .collect();
    let mine: Vec<usize> = (0..CYCLES).map(|_| b.wait().unwrap()).collect();
    let mut all = vec![mine];
    all.extend(kids.into_iter().map(|k| k.join().unwrap()));
    for cycle in 0..CYCLES {
        let mut idx: Vec<usize> = all.iter().map(|v| v[cycle]).collect();
        idx.sort();
        assert_eq!(idx, vec![0, 1, 2, 3]);
    }
    assert_eq!(b.n_waiting(), 0);
    assert!(!b.broken());
}

/// `_TestBarrier.test_action`: the action runs once per cycle.
#[test]
fn barrier_action() {
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    fn action() {
        RUNS.fetch_add(1, Ordering::SeqCst);
    }
    let b = Barrier::builder(3).action(action).build().unwrap();
    let threads: Vec<_> = (0..3)
        .map(|_| {
            let b = b.clone();
            std::thread::spawn(move || {
                b.wait().unwrap();
                b.wait().unwrap();
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(RUNS.load(Ordering::SeqCst), 2);
}

/// `_TestBarrier.test_abort`, `test_reset` and `test_abort_and_reset`: `abort` breaks the
/// barrier for a waiting child and for later waits; `reset` makes it usable again.
#[test]
fn barrier_abort_and_reset() {
    multiproc::init();
    let b = Barrier::new(2).unwrap();
    fn wait_once(b: Barrier) -> bool {
        matches!(b.wait(), Err(Error::BrokenBarrier))
    }
    let h = multiproc::spawn(wait_once, b.clone()).unwrap();
    assert!(common::eventually(Duration::from_secs(30), || b
        .n_waiting()
        == 1));
    b.abort();
    assert!(
        h.join().unwrap(),
        "the waiting child did not get BrokenBarrier"
    );
    assert!(b.broken());
    assert!(matches!(b.wait(), Err(Error::BrokenBarrier)));
    b.reset();
    assert!(!b.broken());
    assert_eq!(b.n_waiting(), 0);
    fn wait_ok(b: Barrier) -> usize {
        b.wait().unwrap()
    }
    let h = multiproc::spawn(wait_ok, b.clone()).unwrap();
    let mine = b.wait().unwrap();
    assert_eq!(mine + h.join().unwrap(), 1);
}

/// `_TestBarrier.test_reset` (a waiter during `reset` gets `BrokenBarrierError`) and
/// `test_timeout`: a timed-out wait breaks the barrier for everyone.
#[test]
fn barrier_reset_wakes_waiter_and_timeout_breaks() {
    multiproc::init();
    let b = Barrier::new(2).unwrap();
    fn wait_once(b: Barrier) -> bool {
        matches!(b.wait(), Err(Error::BrokenBarrier))
    }
    let h = multiproc::spawn(wait_once, b.clone()).unwrap();
    assert!(common::eventually(Duration::from_secs(30), || b
        .n_waiting()
        == 1));
    b.reset();
    assert!(h.join().unwrap());
    assert!(!b.broken());
    assert!(matches!(b.wait_timeout(SHORT), Err(Error::BrokenBarrier)));
    assert!(b.broken());
    assert!(matches!(b.wait(), Err(Error::BrokenBarrier)));
}

/// `_TestBarrier.test_single_thread`: a one-party barrier never blocks, even with a zero
/// timeout. `threading.Barrier.wait(0)` with a party missing: the wait times out at once,
/// which breaks the barrier (`BrokenBarrierError` there and for every later wait) until
/// `reset`.
#[test]
fn barrier_single_party_and_zero_timeout() {
    let b = Barrier::new(1).unwrap();
    for _ in 0..3 {
        assert_eq!(b.wait().unwrap(), 0);
        assert_eq!(b.wait_timeout(Duration::ZERO).unwrap(), 0);
    }
    let b = Barrier::new(2).unwrap();
    assert!(matches!(
        b.wait_timeout(Duration::ZERO),
        Err(Error::BrokenBarrier)
    ));
    assert!(b.broken());
    assert_eq!(b.n_waiting(), 0);
    assert!(matches!(b.wait(), Err(Error::BrokenBarrier)));
    b.reset();
    assert!(!b.broken());
    assert!(matches!(
        b.wait_timeout(Duration::ZERO),
        Err(Error::BrokenBarrier)
    ));
}

/// `threading.Barrier.n_waiting`: the parties waiting while the barrier fills, and 0 as
/// soon as it is broken (its waiters are on their way out), for a barrier in shared memory
/// and one kept by a manager.
#[test]
fn barrier_n_waiting_is_zero_once_broken() {
    multiproc::init();
    let b = Barrier::new(3).unwrap();
    let waiter = {
        let b = b.clone();
        std::thread::spawn(move || b.wait())
    };
    while b.n_waiting() < 1 {
        std::thread::yield_now();
    }
    b.abort();
    assert_eq!(b.n_waiting(), 0);
    assert!(matches!(waiter.join().unwrap(), Err(Error::BrokenBarrier)));
    assert_eq!(b.n_waiting(), 0);

    let m = multiproc::Manager::start().unwrap();
    let b = m.barrier(3).unwrap();
    let waiter = {
        let b = b.clone();
        std::thread::spawn(move || b.wait())
    };
    while b.n_waiting().unwrap() < 1 {
        std::thread::yield_now();
    }
    b.abort().unwrap();
    assert_eq!(b.n_waiting().unwrap(), 0);
    assert!(matches!(waiter.join().unwrap(), Err(Error::BrokenBarrier)));
    assert!(matches!(
        b.wait_timeout(Duration::ZERO),
        Err(Error::BrokenBarrier)
    ));
    assert_eq!(b.n_waiting().unwrap(), 0);
}

// --- _TestValue / _TestArray ------------------------------------------------------------------

/// `_TestValue.test_value` and `test_rawvalue`: a child's writes are seen by the parent;
/// `get_lock` is there for a synchronized value.
#[test]
fn value_and_raw_value() {
    multiproc::init();
    let (a, b, c) = (
        Value::new(25i32).unwrap(),
        Value::new(1.25f64).unwrap(),
        RawValue::new(b'x').unwrap(),
    );
    assert_eq!((a.get(), b.get(), c.get()), (25, 1.25, b'x'));
    fn modify((a, b, c): (Value<i32>, Value<f64>, RawValue<u8>)) {
        a.set(-1);
        b.set(-2.5);
        c.set(b'c');
    }
    multiproc::spawn(modify, (a.clone(), b.clone(), c.clone()))
        .unwrap()
        .join()
        .unwrap();
    assert_eq!((a.get(), b.get(), c.get()), (-1, -2.5, b'c'));
    let lock = a.get_lock();
    lock.acquire().unwrap();
    a.set(a.get() + 1); // Python's `with v.get_lock(): v.value += 1`
    lock.release().unwrap();
    assert_eq!(a.get(), 0);
}

/// `_TestArray.test_array`, `test_array_from_size` and `test_rawarray`: a sized array starts
/// zeroed; a child's writes are seen.
#[test]
fn array_and_raw_array() {
    multiproc::init();
    let z = Array::<i64>::new(10).unwrap();
    assert_eq!(z.len(), 10);
    assert_eq!(z.to_vec(), vec![0; 10]);
    let a = Array::from_slice(&[1i32, 2, 3, 4, 5]).unwrap();
    let r = RawArray::from_slice(&[1.5f64, 2.5]).unwrap();
    fn double((a, r): (Array<i32>, RawArray<f64>)) {
        for i in 0..a.len() {
            a.set(i, a.get(i) * 2);
        }
        r.set(0, -1.0);
    }
    multiproc::spawn(double, (a.clone(), r.clone()))
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(a.to_vec(), vec![2, 4, 6, 8, 10]);
    assert_eq!(r.to_vec(), vec![-1.0, 2.5]);
    assert_eq!(a.try_get(5), None);
    assert_eq!(a.lock().unwrap()[4], 10);
}

// --- _TestConnection / _TestPoll --------------------------------------------------------------

/// `_TestConnection.test_connection`: `poll` with and without timeout, objects and bytes
/// (with offset and size), `recv_bytes_into` with an offset, `BufferTooShort` carrying the
/// message, and `EOFError` once the peer is closed.
#[test]
fn connection_semantics() {
    multiproc::init();
    fn echo(conn: multiproc::Connection<Vec<i32>>) {
        loop {
            match conn.recv_bytes() {
                Ok(b) => conn.send_bytes(&b).unwrap(),
                Err(_) => return,
            }
        }
    }
    let (ours, theirs) = multiproc::pipe::<Vec<i32>>().unwrap();
    let h = multiproc::spawn(echo, theirs).unwrap();
    assert!(!ours.poll(Some(Duration::ZERO)).unwrap());
    assert!(after_short(|| !ours.poll(Some(SHORT)).unwrap()));

    // Objects round trip (through bytes, as the child echoes raw bytes).
    let seq = vec![1, 2, 3];
    ours.send(&seq).unwrap();
    assert!(ours.poll(Some(Duration::from_secs(30))).unwrap());
    assert_eq!(ours.recv().unwrap(), seq);

    // send_bytes(arr, offset, size) is a sub-slice.
    let msg = b"abcdefghijklmnopqrstuvwxyz";
    ours.send_bytes(&msg[8..8 + 6]).unwrap();
    assert_eq!(ours.recv_bytes().unwrap(), b"ijklmn");
    ours.send_bytes(b"").unwrap();
    assert_eq!(ours.recv_bytes().unwrap(), b"");

    // recv_bytes_into(buffer, offset)
    let mut buf = [0u8; 16];
    ours.send_bytes(b"hello").unwrap();
    assert_eq!(ours.recv_bytes_into(&mut buf[3..]).unwrap(), 5);
    assert_eq!(&buf[..8], b"\0\0\0hello");
    let long = [7u8; 40];
    ours.send_bytes(&long).unwrap();
    match ours.recv_bytes_into(&mut buf) {
        Err(Error::BufferTooShort { message }) => assert_eq!(message, long),
        other => panic!("expected BufferTooShort, got {other:?}"),
    }

    // The peer closes: EOF.
    ours.send_bytes(b"").unwrap();
    assert_eq!(ours.recv_bytes().unwrap(), b"");
    drop(ours);
    h.join().unwrap();
    let (a, b) = multiproc::pipe::<i32>().unwrap();
    a.send(&1).unwrap();
    a.close();
    assert!(b.poll(Some(Duration::ZERO)).unwrap());
    assert_eq!(b.recv().unwrap(), 1);
    assert!(matches!(b.recv(), Err(Error::Eof)));
    assert!(matches!(b.recv_bytes(), Err(Error::Eof)));
}

/// `Connection.recv_bytes(maxlength)` (`multiprocessing/connection.py`): a message longer
/// than `maxlength` raises `OSError("bad message length")` and closes the connection; one
/// of exactly `maxlength` bytes is received. Checked on each way a pipe carries a message
/// (in its ring, in its large-message area, as a memory file beside the socket).
#[test]
fn connection_recv_bytes_maxlength() {
    fn bad_length(r: multiproc::Result<Vec<u8>>) {
        match r {
            Err(Error::Io(e)) => {
                assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{e}");
                assert!(e.to_string().contains("bad message length"), "{e}");
            }
            other => panic!("expected a bad message length, got {other:?}"),
        }
    }
    for len in [100usize, 256 << 10, 8 << 20] {
        let (a, b) = multiproc::pipe::<()>().unwrap();
        let msg = vec![5u8; len];
        a.send_bytes(&msg).unwrap();
        assert!(b.recv_bytes_max(len).unwrap() == msg, "{len} bytes");
        a.send_bytes(b"").unwrap();
        assert_eq!(b.recv_bytes_max(0).unwrap(), b"");
        a.send_bytes(&msg).unwrap();
        a.send_bytes(b"next").unwrap();
        bad_length(b.recv_bytes_max(len - 1));
        // The connection is closed for receiving, like Python's.
        assert!(matches!(b.recv_bytes(), Err(Error::Closed)), "{len} bytes");
        assert!(matches!(b.clone().recv_bytes_max(len), Err(Error::Closed)));
        assert!(matches!(
            b.recv_bytes_into(&mut [0u8; 8]),
            Err(Error::Closed)
        ));
    }
    let (a, b) = multiproc::pipe::<String>().unwrap();
    a.send(&"typed".to_string()).unwrap();
    bad_length(b.recv_bytes_max(3));
    assert!(matches!(b.recv(), Err(Error::Closed)));
}

/// `recv_bytes(maxlength)` on a socket connection refuses a frame by its header, before
/// reading (or setting memory aside for) its bytes: a peer that announces 32 GiB and
/// sends nothing more is refused at once instead of waited for.
#[test]
fn connection_recv_bytes_maxlength_refuses_by_header() {
    use multiproc::connection::{Address, Listener};
    use std::io::Write;
    let l = Listener::bind("127.0.0.1:0", None).unwrap();
    let Address::Tcp(addr) = l.address().clone() else {
        unreachable!()
    };
    let mut peer = std::net::TcpStream::connect(addr).unwrap();
    let conn = l.accept::<()>().unwrap();
    let mut frame = b"MPC1".to_vec();
    frame.extend_from_slice(&0u32.to_le_bytes());
    frame.extend_from_slice(&(32u64 << 30).to_le_bytes());
    peer.write_all(&frame).unwrap();
    match conn.recv_bytes_max(1 << 20) {
        Err(Error::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{e}"),
        other => panic!("expected a bad message length, got {other:?}"),
    }
    assert!(matches!(conn.recv_bytes(), Err(Error::Closed)));
}

/// `recv_bytes_into` with a zero-size buffer (Python: `recv_bytes_into(bytearray())`): an
/// empty message fits and gives 0; any other is `BufferTooShort` carrying it, and the
/// connection goes on.
#[test]
fn connection_recv_bytes_into_zero_size_buffer() {
    let (a, b) = multiproc::pipe::<()>().unwrap();
    a.send_bytes(b"").unwrap();
    assert_eq!(b.recv_bytes_into(&mut []).unwrap(), 0);
    a.send_bytes(b"x").unwrap();
    match b.recv_bytes_into(&mut []) {
        Err(Error::BufferTooShort { message }) => assert_eq!(message, b"x"),
        other => panic!("expected BufferTooShort, got {other:?}"),
    }
    a.send_bytes(b"next").unwrap();
    assert_eq!(b.recv_bytes().unwrap(), b"next");
}

/// `_TestConnection.test_duplex_false`: the reading end cannot send, the writing end cannot
/// receive.
#[test]
fn connection_simplex() {
    let (rx, tx) = multiproc::pipe_simplex::<i32>().unwrap();
    assert!(rx.send(&1).is_err());
    assert!(tx.recv().is_err());
    tx.send(&2).unwrap();
    assert_eq!(rx.recv().unwrap(), 2);
}

/// `_TestPoll.test_empty_string`: an empty message makes `poll` true (and stays so until
/// it is read).
#[test]
fn poll_empty_message() {
    let (a, b) = multiproc::pipe::<()>().unwrap();
    assert!(!a.poll(Some(Duration::ZERO)).unwrap());
    b.send_bytes(b"").unwrap();
    assert!(a.poll(Some(Duration::ZERO)).unwrap());
    assert!(a.poll(Some(Duration::ZERO)).unwrap());
    assert_eq!(a.recv_bytes().unwrap(), b"");
    assert!(!a.poll(Some(Duration::ZERO)).unwrap());
}

// --- _TestPool --------------------------------------------------------------------------------

fn sqr(x: i64) -> i64 {
    x * x
}

fn mul((a, b): (i64, i64)) -> i64 {
    a * b
}

fn raise_on_5(x: i64) -> i64 {
    if x == 5 {
        panic!("key error 5");
    }
    x
}

/// `_TestPool.test_apply`, `test_map`, `test_starmap`, `test_map_async` and
/// `test_map_chunksize`: results in order, with any chunk size.
#[test]
fn pool_map_family() {
    multiproc::init();
    let pool = Pool::new(2).unwrap();
    assert_eq!(pool.apply(sqr, 5).unwrap(), 25);
    let want: Vec<i64> = (0..10).map(sqr).collect();
    assert_eq!(pool.map(sqr, 0..10).unwrap(), want);
    let want: Vec<i64> = (0..100).map(sqr).collect();
    for chunk in [1, 3, 7, 100, 1000] {
        assert_eq!(pool.map_chunked(sqr, 0..100, chunk).unwrap(), want);
    }
    let pairs: Vec<(i64, i64)> = (0..10).map(|i| (i, 10 - i)).collect();
    let want: Vec<i64> = pairs.iter().copied().map(mul).collect();
    assert_eq!(pool.starmap(mul, pairs.clone()).unwrap(), want);
    assert_eq!(pool.starmap_async(mul, pairs).get().unwrap(), want);
    assert_eq!(
        pool.map_async(sqr, 0..10).get().unwrap(),
        pool.map(sqr, 0..10).unwrap()
    );
    assert_eq!(
        pool.map_async_chunked(sqr, 0..10, 4).get().unwrap(),
        pool.map(sqr, 0..10).unwrap()
    );
    assert!(pool.map_chunked(sqr, 0..10, 0).is_err());
}

/// `_TestPool.test_empty_iterable` and `test_map_chunksize` (an empty list with a chunk
/// size): every form gives an empty result.
#[test]
fn pool_empty_iterables() {
    multiproc::init();
    let pool = Pool::new(1).unwrap();
    let none: Vec<i64> = Vec::new();
    assert_eq!(pool.map(sqr, none.clone()).unwrap(), Vec::<i64>::new());
    assert_eq!(
        pool.map_chunked(sqr, none.clone(), 1).unwrap(),
        Vec::<i64>::new()
    );
    assert_eq!(pool.starmap(mul, Vec::new()).unwrap(), Vec::<i64>::new());
    assert_eq!(
        pool.map_async(sqr, none.clone()).get().unwrap(),
        Vec::<i64>::new()
    );
    assert_eq!(pool.imap(sqr, none.clone()).count(), 0);
    assert_eq!(pool.imap_unordered(sqr, none).count(), 0);
}

/// `_TestPool.test_imap` and `test_imap_unordered`: ordered results one by one, then the
/// end; unordered gives the same set; a chunk size changes nothing.
#[test]
fn pool_imap() {
    multiproc::init();
    let pool = Pool::new(2).unwrap();
    let mut it = pool.imap(sqr, 0..10);
    for i in 0..10 {
        assert_eq!(it.next().unwrap().unwrap(), i * i);
    }
    assert!(it.next().is_none());
    let got: Vec<i64> = pool
        .imap_chunked(sqr, 0..1000, 100)
        .map(Result::unwrap)
        .collect();
    assert_eq!(got, (0..1000).map(sqr).collect::<Vec<_>>());
    let mut got: Vec<i64> = pool
        .imap_unordered(sqr, 0..1000)
        .map(Result::unwrap)
        .collect();
    got.sort();
    assert_eq!(got, (0..1000).map(sqr).collect::<Vec<_>>());
    let mut got: Vec<i64> = pool
        .imap_unordered_chunked(sqr, 0..1000, 53)
        .map(Result::unwrap)
        .collect();
    got.sort();
    assert_eq!(got, (0..1000).map(sqr).collect::<Vec<_>>());
}

/// `_TestPool.test_traceback` / `test_imap_handle_iterable_exception`'s task side: a
/// failing task makes `map` fail and `imap` yield that item's error in its place, the other
/// items still coming. `test_wrapped_exception`: `apply` of a failing task raises the
/// task's own error (a `TaskPanicked` with its message), not a wrapper.
#[test]
fn pool_task_errors() {
    multiproc::init();
    let pool = Pool::new(2).unwrap();
    match pool.apply(raise_on_5, 5) {
        Err(Error::TaskPanicked { message, .. }) => assert!(message.contains("key error 5")),
        other => panic!("{other:?}"),
    }
    match pool.map(raise_on_5, 0..10) {
        Err(Error::TaskPanicked { message, .. }) => assert!(message.contains("key error 5")),
        other => panic!("{other:?}"),
    }
    let out: Vec<_> = pool.imap(raise_on_5, 0..10).collect();
    assert_eq!(out.len(), 10);
    for (i, r) in out.into_iter().enumerate() {
        match r {
            Ok(v) => assert_eq!(v, i as i64),
            Err(Error::TaskPanicked { .. }) => assert_eq!(i, 5),
            Err(e) => panic!("{e:?}"),
        }
    }
    let r = pool.apply_async(raise_on_5, 5);
    r.wait();
    assert!(r.ready());
    assert!(!r.successful().unwrap());
    assert!(matches!(r.get(), Err(Error::TaskPanicked { .. })));
    // get() again gives the same outcome.
    assert!(matches!(r.get(), Err(Error::TaskPanicked { .. })));
    // The pool is still usable.
    assert_eq!(pool.apply(sqr, 3).unwrap(), 9);
}

/// `_TestPool.test_async`, `test_async_timeout` and `successful()` on a pending result
/// (Python raises `ValueError`): `ready` is false and `get(timeout)` raises
/// `TimeoutError` while the task is blocked; then the result comes.
#[test]
fn pool_async_result_timeout() {
    multiproc::init();
    fn blocked((started, go, x): (Event, Event, i64)) -> i64 {
        started.set();
        go.wait().unwrap();
        x * x
    }
    let pool = Pool::new(1).unwrap();
    let (started, go) = events();
    let r = pool.apply_async(blocked, (started.clone(), go.clone(), 7));
    started.wait().unwrap();
    assert!(!r.ready());
    assert!(matches!(r.successful(), Err(Error::InvalidOperation(_))));
    assert!(after_short(|| matches!(
        r.get_timeout(SHORT),
        Err(Error::Timeout)
    )));
    assert!(!r.wait_timeout(Duration::ZERO));
    go.set();
    assert_eq!(r.get_timeout(Duration::from_secs(60)).unwrap(), 49);
    assert!(r.ready());
    assert!(r.successful().unwrap());
}

/// `_TestPool.test_map_async_callbacks` and `test_async_error_callback`: the callback gets
/// the result list, the error callback the error.
#[test]
fn pool_callbacks() {
    multiproc::init();
    let pool = Pool::new(2).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let tx2 = tx.clone();
    let r = pool.map_async(sqr, 0..5);
    r.on_done(move |v: &Vec<i64>| tx.send(Ok(v.clone())).unwrap());
    assert_eq!(rx.recv().unwrap(), Ok(vec![0, 1, 4, 9, 16]));
    let r = pool.apply_async(raise_on_5, 5);
    r.on_error(move |e: &Error| tx2.send(Err(e.to_string())).unwrap());
    match rx.recv().unwrap() {
        Err(m) => assert!(m.contains("key error 5"), "{m}"),
        Ok(v) => panic!("{v:?}"),
    }
}

/// `_TestPool.test_terminate` and the "Pool not running" checks: `terminate` returns
/// promptly with work queued, pending results fail instead of hanging, `join` returns;
/// after `close`, new work is refused and queued work still completes.
#[test]
fn pool_terminate_and_close() {
    multiproc::init();
    fn block(go: Event) {
        go.wait().unwrap();
    }
    let pool = Pool::new(2).unwrap();
    let go = Event::new().unwrap();
    let r = pool.map_async_chunked(block, vec![go.clone(); 1000], 1);
    pool.terminate().unwrap();
    pool.join().unwrap();
    assert!(r.get().is_err());
    assert!(pool.apply(sqr, 2).is_err());

    let pool = Pool::new(2).unwrap();
    let r = pool.map_async(sqr, 0..20);
    pool.close();
    assert!(matches!(pool.apply(sqr, 2), Err(Error::Closed)));
    pool.join().unwrap();
    assert_eq!(r.get().unwrap(), (0..20).map(sqr).collect::<Vec<_>>());
}

/// `_TestPoolWorkerLifetime.test_pool_worker_lifetime` and `..._early_close`: with
/// `maxtasksperchild`, workers are replaced, and every task still completes.
#[test]
fn pool_maxtasksperchild() {
    multiproc::init();
    fn my_pid(_: i32) -> u32 {
        std::process::id()
    }
    let pool = Pool::builder()
        .processes(1)
        .maxtasksperchild(1)
        .build()
        .unwrap();
    let rs: Vec<_> = (0..5).map(|i| pool.apply_async(my_pid, i)).collect();
    pool.close();
    pool.join().unwrap();
    let mut pids: Vec<u32> = rs.iter().map(|r| r.get().unwrap()).collect();
    pids.sort();
    pids.dedup();
    assert_eq!(pids.len(), 5, "each task should run in a fresh worker");
    assert!(Pool::builder().maxtasksperchild(0).build().is_err());
}

// --- batch 2: more of _TestProcess, _TestQueue (shutdown), _TestLock, _TestBarrier, ... ------

/// `_TestProcess.test_recursion`: processes start processes; the tree is walked depth
/// first, each child joined before the next starts.
#[test]
fn process_recursion() {
    multiproc::init();
    fn recurse((q, id): (Queue<Vec<u8>>, Vec<u8>)) {
        q.put(id.clone()).unwrap();
        if id.len() < 2 {
            for i in 0..2 {
                let mut next = id.clone();
                next.push(i);
                let mut p = Process::new(recurse, (q.clone(), next));
                p.start().unwrap();
                p.join().unwrap();
                assert_eq!(p.exitcode(), Some(0));
            }
        }
    }
    let q = Queue::new().unwrap();
    recurse((q.clone(), vec![]));
    let got: Vec<Vec<u8>> = std::iter::from_fn(|| q.try_get().ok()).collect();
    let want: Vec<Vec<u8>> = vec![
        vec![],
        vec![0],
        vec![0, 0],
        vec![0, 1],
        vec![1],
        vec![1, 0],
        vec![1, 1],
    ];
    assert_eq!(got, want);
}

/// `_TestProcess.test_parent_process_attributes`: the child's `parent_process()` has the
/// parent's pid and name.
#[test]
fn process_parent_attributes() {
    multiproc::init();
    fn report(_: ()) -> (u32, String) {
        let p = multiproc::parent_process().unwrap();
        (p.pid(), p.name().to_string())
    }
    let (pid, name) = multiproc::spawn(report, ()).unwrap().join().unwrap();
    assert_eq!(pid, std::process::id());
    assert_eq!(name, multiproc::current_process().name());
}

/// `_TestProcess.test_active_children`: a started child is listed, a joined one is not.
#[test]
fn process_active_children() {
    multiproc::init();
    fn wait_on(e: Event) {
        e.wait().unwrap()
    }
    let e = Event::new().unwrap();
    let mut p = Process::new(wait_on, e.clone()).with_daemon(true);
    p.start().unwrap();
    let pid = p.pid().unwrap();
    assert!(multiproc::active_children().iter().any(|c| c.pid() == pid));
    e.set();
    p.join().unwrap();
    assert!(!multiproc::active_children().iter().any(|c| c.pid() == pid));
}

/// `_TestQueue.test_qsize`: exact counts as items come and go.
#[test]
fn queue_qsize() {
    let q = Queue::<i32>::new().unwrap();
    assert_eq!(q.qsize(), 0);
    q.put(1).unwrap();
    assert_eq!(q.qsize(), 1);
    q.put(5).unwrap();
    assert_eq!(q.qsize(), 2);
    q.get().unwrap();
    assert_eq!(q.qsize(), 1);
    q.get().unwrap();
    assert_eq!(q.qsize(), 0);
}

/// `_TestQueue.test_fork`: items put before and after a child starts (and by the child)
/// all arrive in order.
#[test]
fn queue_items_from_parent_and_child() {
    multiproc::init();
    fn put_more(q: Queue<i32>) {
        for i in 10..20 {
            q.put(i).unwrap();
        }
    }
    let q = Queue::new().unwrap();
    for i in 0..10 {
        q.put(i).unwrap();
    }
    let h = multiproc::spawn(put_more, q.clone()).unwrap();
    for i in 0..20 {
        assert_eq!(q.get().unwrap(), i);
    }
    assert!(matches!(q.try_get(), Err(Error::Empty)));
    h.join().unwrap();
}

fn join_queue(q: JoinableQueue<String>) -> bool {
    q.join().is_ok()
}

/// `_TestQueue.test_shutdown_empty`: shutting down an empty queue releases a `join`er;
/// `put`/`put_nowait`/`get`/`get_nowait` then raise `ShutDown`, in any process.
#[test]
fn queue_shutdown_empty() {
    multiproc::init();
    fn put_in(q: Queue<String>) -> bool {
        matches!(q.put("data".into()), Err(Error::ShutDown))
    }
    fn get_in(q: Queue<String>) -> bool {
        matches!(q.get(), Err(Error::ShutDown))
    }
    let q = JoinableQueue::<String>::new().unwrap();
    let joiner = multiproc::spawn(join_queue, q.clone()).unwrap();
    q.shutdown();
    assert!(joiner.join().unwrap());
    assert_eq!(q.qsize(), 0);
    assert!(q.is_shutdown());
    let plain: Queue<String> = (*q).clone();
    assert!(multiproc::spawn(put_in, plain.clone())
        .unwrap()
        .join()
        .unwrap());
    assert!(matches!(q.try_put("data".into()), Err(Error::ShutDown)));
    assert!(multiproc::spawn(get_in, plain).unwrap().join().unwrap());
    assert!(matches!(q.try_get(), Err(Error::ShutDown)));
}

/// `_TestQueue.test_shutdown_nonempty`: after a non-immediate shutdown the item left can
/// still be taken; `join` waits for its `task_done`; further puts and gets raise. (CPython
/// takes the item in a child that then exits; here the parent takes it, see
/// `joinable_queue_item_taken_by_exited_child`.)
#[test]
fn queue_shutdown_nonempty() {
    multiproc::init();
    let q = JoinableQueue::<String>::bounded(1).unwrap();
    q.put("data".into()).unwrap();
    let joiner = multiproc::spawn(join_queue, q.clone()).unwrap();
    q.shutdown();
    assert_eq!(q.qsize(), 1);
    assert_eq!(q.get().unwrap(), "data");
    assert!(
        !q.join_timeout(SHORT).unwrap(),
        "join returned with a task not done"
    );
    assert!(matches!(q.put("data".into()), Err(Error::ShutDown)));
    assert!(matches!(q.get(), Err(Error::ShutDown)));
    q.task_done().unwrap();
    assert!(joiner.join().unwrap());
}

/// The part of `_TestQueue.test_shutdown_nonempty` that differs on purpose: CPython's child
/// takes the item and exits, and the parent calls `task_done` for it. Here a process that
/// ends holding items it has not marked done is a dead consumer: `join` reports
/// `ConsumerDied` with the count and counts them done, so that `join` cannot wait for ever
/// (see `JoinableQueue::join` and docs/differences.md).
#[test]
fn joinable_queue_item_taken_by_exited_child() {
    multiproc::init();
    fn get_one(q: Queue<String>) -> String {
        q.get().unwrap()
    }
    let q = JoinableQueue::<String>::new().unwrap();
    q.put("data".into()).unwrap();
    let pid = {
        let h = multiproc::spawn(get_one, (*q).clone()).unwrap();
        let pid = h.pid();
        assert_eq!(h.join().unwrap(), "data");
        pid
    };
    match q.join() {
        Err(Error::ConsumerDied { pid: p, items }) => assert_eq!((p, items), (pid, 1)),
        other => panic!("expected ConsumerDied, got {other:?}"),
    }
    q.join().unwrap();
    assert!(matches!(q.task_done(), Err(Error::InvalidOperation(_))));
}

/// `_TestQueue.test_shutdown_immediate`: the items left are dropped, a `join`er is
/// released, and one `task_done` too many raises `ValueError`.
#[test]
fn queue_shutdown_immediate() {
    multiproc::init();
    let q = JoinableQueue::<String>::new().unwrap();
    q.put("data".into()).unwrap();
    let joiner = multiproc::spawn(join_queue, q.clone()).unwrap();
    q.shutdown_immediate();
    assert!(joiner.join().unwrap());
    assert_eq!(q.qsize(), 0);
    assert!(matches!(q.put("data".into()), Err(Error::ShutDown)));
    assert!(matches!(q.get(), Err(Error::ShutDown)));
    assert!(matches!(q.task_done(), Err(Error::InvalidOperation(_))));
}

/// `_TestQueue.test_shutdown_immediate_with_unfinished`: an item taken before an immediate
/// shutdown still needs its `task_done` before `join` returns.
#[test]
fn queue_shutdown_immediate_with_unfinished() {
    multiproc::init();
    let q = JoinableQueue::<String>::new().unwrap();
    q.put("data".into()).unwrap();
    q.put("data".into()).unwrap();
    let joiner = multiproc::spawn(join_queue, q.clone()).unwrap();
    assert_eq!(q.get().unwrap(), "data");
    q.shutdown_immediate();
    assert_eq!(q.qsize(), 0);
    assert!(
        !q.join_timeout(SHORT).unwrap(),
        "join returned with a task not done"
    );
    assert!(matches!(q.put("data".into()), Err(Error::ShutDown)));
    assert!(matches!(q.try_get(), Err(Error::ShutDown)));
    q.task_done().unwrap();
    assert!(matches!(q.task_done(), Err(Error::InvalidOperation(_))));
    assert!(joiner.join().unwrap());
}

/// `_TestLock.test_lock_locked_2processes` and `test_rlock_locked_2processes`: a lock held
/// by a child shows as locked in the parent (and in the child).
#[test]
fn locks_locked_across_processes() {
    multiproc::init();
    fn hold_lock((l, held, res): (Lock, Event, Value<u8>)) {
        l.acquire().unwrap();
        res.set(l.is_locked() as u8);
        held.set();
    }
    fn hold_rlock((l, held, res): (RLock, Event, Value<u8>)) {
        l.acquire().unwrap();
        res.set(l.is_locked() as u8);
        held.set();
    }
    let (lock, held, res) = (
        Lock::new().unwrap(),
        Event::new().unwrap(),
        Value::new(0u8).unwrap(),
    );
    let mut p = Process::new(hold_lock, (lock.clone(), held.clone(), res.clone()));
    p.start().unwrap();
    held.wait().unwrap();
    assert!(lock.is_locked());
    assert_eq!(res.get(), 1);
    p.join().unwrap();

    let (rlock, held, res) = (
        RLock::new().unwrap(),
        Event::new().unwrap(),
        Value::new(0u8).unwrap(),
    );
    let mut p = Process::new(hold_rlock, (rlock.clone(), held.clone(), res.clone()));
    p.start().unwrap();
    held.wait().unwrap();
    assert!(rlock.is_locked());
    assert!(!rlock.is_owned());
    assert_eq!(res.get(), 1);
    p.join().unwrap();
}

/// `_TestCondition.test_notify_all`'s first half: waiters with a timeout all time out and
/// leave the condition usable; the second half then wakes a new set with `notify_all`.
#[test]
fn condition_waiters_time_out_then_notify_all() {
    multiproc::init();
    fn timed_waiter((c, sleeping, woken): (Condition, Semaphore, Semaphore)) -> bool {
        c.acquire().unwrap();
        sleeping.release().unwrap();
        let notified = c.wait_timeout(SHORT).unwrap();
        woken.release().unwrap();
        c.release().unwrap();
        notified
    }
    let c = Condition::new().unwrap();
    let (sleeping, woken) = (Semaphore::new(0).unwrap(), Semaphore::new(0).unwrap());
    let kids: Vec<_> = (0..3)
        .map(|_| {
            multiproc::spawn(timed_waiter, (c.clone(), sleeping.clone(), woken.clone())).unwrap()
        })
        .collect();
    for _ in 0..3 {
        sleeping.acquire().unwrap();
    }
    for _ in 0..3 {
        woken.acquire().unwrap();
    }
    for k in kids {
        assert!(!k.join().unwrap(), "a timed-out wait said it was notified");
    }
    let kids: Vec<_> = (0..3)
        .map(|_| {
            multiproc::spawn(cond_waiter, (c.clone(), sleeping.clone(), woken.clone())).unwrap()
        })
        .collect();
    for _ in 0..3 {
        sleeping.acquire().unwrap();
    }
    c.acquire().unwrap();
    c.notify_all().unwrap();
    c.release().unwrap();
    for _ in 0..3 {
        woken.acquire().unwrap();
    }
    for k in kids {
        assert!(k.join().unwrap());
    }
    // notify with nobody waiting does nothing.
    c.acquire().unwrap();
    c.notify_n(3).unwrap();
    c.release().unwrap();
    assert_eq!(woken.get_value(), 0);
}

/// `_TestBarrier.test_default_timeout`: a barrier's default timeout breaks it when a party
/// is late.
#[test]
fn barrier_default_timeout() {
    let b = Barrier::builder(2).timeout(SHORT).build().unwrap();
    assert!(after_short(|| matches!(
        b.wait(),
        Err(Error::BrokenBarrier)
    )));
    assert!(b.broken());
}

/// `_TestBarrier.test_thousand` (200 passes here): five processes pass the barrier in
/// lockstep, each reporting its pass through a pipe under a lock.
#[test]
fn barrier_many_passes() {
    multiproc::init();
    const PASSES: u32 = 200;
    fn passes((b, conn, lock): (Barrier, multiproc::Connection<u32>, Lock)) {
        for i in 0..PASSES {
            b.wait().unwrap();
            let _g = lock.lock().unwrap();
            conn.send(&i).unwrap();
        }
    }
    let b = Barrier::new(5).unwrap();
    let lock = Lock::new().unwrap();
    let (rx, tx) = multiproc::pipe_simplex::<u32>().unwrap();
    let kids: Vec<_> = (0..5)
        .map(|_| multiproc::spawn(passes, (b.clone(), tx.clone(), lock.clone())).unwrap())
        .collect();
    drop(tx);
    for i in 0..PASSES {
        for _ in 0..5 {
            assert_eq!(rx.recv().unwrap(), i);
        }
    }
    for k in kids {
        k.join().unwrap();
    }
    assert!(matches!(rx.recv(), Err(Error::Eof)));
}

/// `_TestArray.test_array`: a child turns the array into its prefix sums.
#[test]
fn array_prefix_sums_in_child() {
    multiproc::init();
    fn f(a: Array<i32>) {
        let mut g = a.lock().unwrap();
        for i in 1..g.len() {
            g[i] += g[i - 1];
        }
    }
    let mut seq = vec![680, 626, 934, 821, 150, 233, 548, 982, 714, 831];
    let arr = Array::from_slice(&seq).unwrap();
    assert_eq!(arr.len(), seq.len());
    assert_eq!(arr.get(3), seq[3]);
    for (i, v) in [1, 2, 3, 4].into_iter().enumerate() {
        arr.set(4 + i, v);
        seq[4 + i] = v;
    }
    assert_eq!(arr.to_vec(), seq);
    for i in 1..seq.len() {
        seq[i] += seq[i - 1];
    }
    multiproc::spawn(f, arr.clone()).unwrap().join().unwrap();
    assert_eq!(arr.to_vec(), seq);
}

/// `_TestConnection.test_connection`'s big message, `readable`/`writable` and
/// `test_spawn_close`: a 16 MiB message round trips through a child whose end the parent
/// closed right after starting it.
#[test]
fn connection_big_message_and_spawn_close() {
    multiproc::init();
    fn echo(conn: multiproc::Connection<()>) {
        while let Ok(b) = conn.recv_bytes() {
            if b.is_empty() {
                return;
            }
            conn.send_bytes(&b).unwrap();
        }
    }
    let (conn, child_conn) = multiproc::pipe::<()>().unwrap();
    let mut p = Process::new(echo, child_conn.clone());
    p.start().unwrap();
    child_conn.close();
    assert!(conn.readable() && conn.writable());
    conn.send_bytes(b"hello").unwrap();
    assert_eq!(conn.recv_bytes().unwrap(), b"hello");
    let big = vec![b'X'; 16 << 20];
    conn.send_bytes(&big).unwrap();
    assert!(conn.recv_bytes().unwrap() == big);
    conn.send_bytes(b"").unwrap();
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(0));
    assert!(matches!(conn.recv_bytes(), Err(Error::Eof)));
}

/// `_TestConnection.test_duplex_false`'s flags: the reader is readable only, the writer
/// writable only, and `writer.poll()` raises.
#[test]
fn connection_simplex_flags() {
    let (reader, writer) = multiproc::pipe_simplex::<i32>().unwrap();
    assert!(reader.readable() && !reader.writable());
    assert!(!writer.readable() && writer.writable());
    assert!(writer.poll(Some(Duration::ZERO)).is_err());
}

/// `_TestPool.test_context` / `test_enter`: once a pool is terminated, new work raises
/// (`ValueError: Pool not running` in Python).
#[test]
fn pool_not_running_after_terminate() {
    multiproc::init();
    let pool = Pool::new(2).unwrap();
    assert_eq!(
        pool.map_async(sqr, 0..10).get().unwrap(),
        (0..10).map(sqr).collect::<Vec<_>>()
    );
    pool.terminate().unwrap();
    pool.join().unwrap();
    assert!(pool.map_async(sqr, 0..10).get().is_err());
    assert!(pool.apply_async(sqr, 1).get().is_err());
    assert!(pool.map(sqr, 0..10).is_err());
}

/// `_TestPoolWorkerLifetime.test_pool_worker_lifetime_early_close`: closing a pool whose
/// workers run one task each, with tasks still queued, does not hang `join`; every task
/// completes.
#[test]
fn pool_worker_lifetime_early_close() {
    multiproc::init();
    let pool = Pool::builder()
        .processes(3)
        .maxtasksperchild(1)
        .build()
        .unwrap();
    let rs: Vec<_> = (0..6).map(|i| pool.apply_async(sqr, i)).collect();
    pool.close();
    pool.join().unwrap();
    for (j, r) in rs.iter().enumerate() {
        assert_eq!(r.get().unwrap(), sqr(j as i64));
    }
}

/// `_TestPool.test_map_async_callbacks`: exactly one of the two callbacks runs, with the
/// result list or the error.
#[test]
fn pool_map_async_one_callback() {
    multiproc::init();
    let pool = Pool::new(2).unwrap();
    let calls = std::sync::Arc::new(AtomicUsize::new(0));
    let (c1, c2) = (calls.clone(), calls.clone());
    let r = pool.map_async(raise_on_5, vec![1]);
    r.on_done(move |v: &Vec<i64>| {
        assert_eq!(v, &vec![1]);
        c1.fetch_add(1, Ordering::SeqCst);
    });
    r.on_error(move |_: &Error| {
        c2.fetch_add(100, Ordering::SeqCst);
    });
    r.wait();
    assert_eq!(r.get().unwrap(), vec![1]);
    let r = pool.map_async(raise_on_5, vec![5]);
    let (c3, c4) = (calls.clone(), calls.clone());
    r.on_done(move |_: &Vec<i64>| {
        c3.fetch_add(1000, Ordering::SeqCst);
    });
    r.on_error(move |_: &Error| {
        c4.fetch_add(10, Ordering::SeqCst);
    });
    r.wait();
    assert!(r.get().is_err());
    assert!(common::eventually(Duration::from_secs(30), || calls
        .load(Ordering::SeqCst)
        == 11));
    assert_eq!(calls.load(Ordering::SeqCst), 11);
}

// --- batch 3: _TestPoll, _TestListenerClient, _TestPicklingConnections -------------------------

/// `_TestPoll.test_dont_merge`: messages keep their boundaries; `poll` stays true until
/// each is read.
#[test]
fn poll_dont_merge() {
    multiproc::init();
    fn send_three(b: multiproc::Connection<()>) {
        b.send_bytes(b"a").unwrap();
        b.send_bytes(b"b").unwrap();
        b.send_bytes(b"cd").unwrap();
    }
    let (a, b) = multiproc::pipe::<()>().unwrap();
    assert!(!a.poll(Some(Duration::ZERO)).unwrap());
    assert!(after_short(|| !a.poll(Some(SHORT)).unwrap()));
    let h = multiproc::spawn(send_three, b).unwrap();
    assert_eq!(a.recv_bytes().unwrap(), b"a");
    assert!(a.poll(Some(Duration::from_secs(30))).unwrap());
    assert!(a.poll(Some(Duration::from_secs(30))).unwrap());
    assert_eq!(a.recv_bytes().unwrap(), b"b");
    assert!(a.poll(Some(Duration::from_secs(30))).unwrap());
    assert!(a.poll(Some(Duration::ZERO)).unwrap());
    assert_eq!(a.recv_bytes().unwrap(), b"cd");
    h.join().unwrap();
}

/// `_TestPoll.test_strings`: a sequence with empty messages among others arrives intact.
#[test]
fn poll_strings() {
    multiproc::init();
    fn send_all((b, strings): (multiproc::Connection<()>, Vec<Vec<u8>>)) {
        for s in strings {
            b.send_bytes(&s).unwrap();
        }
    }
    let strings: Vec<Vec<u8>> = [&b"hello"[..], b"", b"a", b"b", b"", b"bye", b"", b"lop"]
        .iter()
        .map(|s| s.to_vec())
        .collect();
    let (a, b) = multiproc::pipe::<()>().unwrap();
    let h = multiproc::spawn(send_all, (b, strings.clone())).unwrap();
    for s in &strings {
        assert!(a.poll(Some(Duration::from_secs(30))).unwrap());
        assert_eq!(&a.recv_bytes().unwrap(), s);
    }
    h.join().unwrap();
    assert!(matches!(a.recv_bytes(), Err(Error::Eof)));
}

/// `_TestPoll.test_boundaries`: a child polling a shared reading end does not take part
/// of a message; the parent then reads a whole one.
#[test]
fn poll_boundaries() {
    multiproc::init();
    fn poll_it((r, polling): (multiproc::Connection<()>, Event)) -> bool {
        polling.set();
        r.poll(Some(Duration::from_secs(30))).unwrap()
    }
    let (r, w) = multiproc::pipe_simplex::<()>().unwrap();
    let polling = Event::new().unwrap();
    let h = multiproc::spawn(poll_it, (r.clone(), polling.clone())).unwrap();
    polling.wait().unwrap();
    for m in [&b"first"[..], b"second"] {
        w.send_bytes(m).unwrap();
    }
    w.close();
    assert!(h.join().unwrap());
    assert_eq!(r.recv_bytes().unwrap(), b"first");
    assert_eq!(r.recv_bytes().unwrap(), b"second");
    assert!(matches!(r.recv_bytes(), Err(Error::Eof)));
}

/// `_TestListenerClient.test_listener_client` and `test_issue16955`: a child connects to
/// a listener (TCP and Unix) and sends; a client's `poll` sees data the server sent.
#[test]
fn listener_client() {
    multiproc::init();
    use multiproc::connection::{Client, Listener};
    fn say_hello(address: String) {
        let c = Client::connect::<String>(address.as_str(), None).unwrap();
        c.send(&"hello".to_string()).unwrap();
    }
    let dir = std::env::temp_dir().join(format!("mp-parity-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let unix = dir.join("sock").to_string_lossy().into_owned();
    for addr in ["127.0.0.1:0", unix.as_str()] {
        let l = Listener::bind(addr, None).unwrap();
        let h = multiproc::spawn(say_hello, l.address().to_string()).unwrap();
        let conn = l.accept::<String>().unwrap();
        assert_eq!(conn.recv().unwrap(), "hello");
        h.join().unwrap();

        let c = Client::connect::<()>(l.address().clone(), None).unwrap();
        let a = l.accept::<()>().unwrap();
        a.send_bytes(b"hello").unwrap();
        assert!(c.poll(Some(Duration::from_secs(30))).unwrap());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `_TestListener.test_empty_authkey` (bpo-43952): an empty authkey is a valid key.
#[test]
fn listener_empty_authkey() {
    use multiproc::connection::{Client, Listener};
    let l = Listener::bind("127.0.0.1:0", Some(b"")).unwrap();
    let addr = l.address().clone();
    let t = std::thread::spawn(move || {
        let c = Client::connect::<i32>(addr, Some(b"")).unwrap();
        c.send(&1729).unwrap();
    });
    let d = l.accept::<i32>().unwrap();
    assert_eq!(d.recv().unwrap(), 1729);
    t.join().unwrap();
}

/// `_TestListener.test_multiple_bind`: binding an address already bound fails.
#[test]
fn listener_multiple_bind() {
    use multiproc::connection::Listener;
    let l = Listener::bind("127.0.0.1:0", None).unwrap();
    assert!(Listener::bind(l.address().clone(), None).is_err());
}

/// `_TestPicklingConnections.test_access`: the ends of a pipe are sent to a child through
/// another connection, and both directions work there.
#[test]
fn connections_sent_to_a_child() {
    multiproc::init();
    type Ends = multiproc::Connection<String>;
    fn child_access(conn: multiproc::Connection<Ends>) {
        let w = conn.recv().unwrap();
        w.send(&"all is well".to_string()).unwrap();
        drop(w);
        let r = conn.recv().unwrap();
        let msg = r.recv().unwrap();
        // The channel carries connections only: the reply goes through a third one.
        let reply = conn.recv().unwrap();
        reply.send(&msg.repeat(2)).unwrap();
    }
    let (conn, child_conn) = multiproc::pipe::<Ends>().unwrap();
    let h = multiproc::spawn(child_access, child_conn).unwrap();

    let (r, w) = multiproc::pipe_simplex::<String>().unwrap();
    conn.send(&w).unwrap();
    drop(w);
    assert_eq!(r.recv().unwrap(), "all is well");
    drop(r);

    let (r, w) = multiproc::pipe_simplex::<String>().unwrap();
    conn.send(&r).unwrap();
    drop(r);
    w.send(&"foobar".to_string()).unwrap();
    drop(w);
    let (rx, tx) = multiproc::pipe_simplex::<String>().unwrap();
    conn.send(&tx).unwrap();
    drop(tx);
    assert_eq!(rx.recv().unwrap(), "foobarfoobar");
    h.join().unwrap();
}

// --- _TestContainers (managers) ---------------------------------------------------------------

/// `_TestContainers.test_list`, `test_dict` and `test_namespace`: a list proxy extends,
/// indexes (negative too) and pops; a dict proxy lists its keys, values and items; a
/// namespace sets, reads and deletes attributes; a child's writes through the proxies are
/// seen by the parent.
#[test]
fn manager_containers() {
    multiproc::init();
    let m = multiproc::Manager::start().unwrap();
    let a = m.list(0..10).unwrap();
    assert_eq!(a.to_vec().unwrap(), (0..10).collect::<Vec<i32>>());
    let b = m.list(Vec::<i32>::new()).unwrap();
    assert_eq!(b.to_vec().unwrap(), Vec::<i32>::new());
    b.extend(0..5).unwrap();
    assert_eq!(b.to_vec().unwrap(), vec![0, 1, 2, 3, 4]);
    assert_eq!(b.get(2).unwrap(), 2);
    assert_eq!(b.get(-1).unwrap(), 4);
    assert!(b.get(5).is_err());
    assert_eq!(b.pop().unwrap(), 4);
    assert_eq!(b.len().unwrap(), 4);

    let d = m.dict::<i32, String>().unwrap();
    for i in 65..70 {
        d.insert(i, char::from(i as u8).to_string()).unwrap();
    }
    let mut keys = d.keys().unwrap();
    keys.sort();
    assert_eq!(keys, (65..70).collect::<Vec<_>>());
    let mut values = d.values().unwrap();
    values.sort();
    assert_eq!(values, ["A", "B", "C", "D", "E"]);
    let mut items = d.items().unwrap();
    items.sort();
    assert_eq!(items[0], (65, "A".to_string()));
    assert_eq!(items.len(), 5);

    let n = m.namespace().unwrap();
    n.set("name", "Bob").unwrap();
    n.set("job", "Builder").unwrap();
    assert_eq!(n.get::<String>("name").unwrap(), "Bob");
    assert_eq!(n.get::<String>("job").unwrap(), "Builder");
    n.remove("job").unwrap();
    assert!(n.get::<String>("job").is_err());

    fn child_writes(
        (l, d, n): (
            multiproc::manager::ListProxy<i32>,
            multiproc::manager::DictProxy<i32, String>,
            multiproc::manager::NamespaceProxy,
        ),
    ) {
        l.push(99).unwrap();
        d.insert(1, "one".into()).unwrap();
        n.set("job", "Plumber").unwrap();
    }
    multiproc::spawn(child_writes, (b.clone(), d.clone(), n.clone()))
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(b.get(-1).unwrap(), 99);
    assert_eq!(d.get(&1).unwrap().as_deref(), Some("one"));
    assert_eq!(n.get::<String>("job").unwrap(), "Plumber");
}

/// `threading.Condition`'s rule that CPython's `multiprocessing.Condition` keeps (asserted by
/// `lock_tests.ConditionTests.test_unacquired_wait` / `test_unacquired_notify`): waiting or
/// notifying without holding the lock raises `RuntimeError`.
#[test]
fn condition_unacquired_wait_and_notify() {
    let c = Condition::new().unwrap();
    assert!(c.wait_timeout(SHORT).is_err());
    assert!(c.notify().is_err());
    assert!(c.notify_all().is_err());
    assert!(c.release().is_err());
}

/// `_TestLock.test_rlock`'s last assertion from another process: a child cannot release an
/// RLock the parent holds.
#[test]
fn rlock_release_from_other_process() {
    multiproc::init();
    fn release_it(r: RLock) -> bool {
        r.release().is_ok()
    }
    let r = RLock::new().unwrap();
    r.acquire().unwrap();
    assert!(!multiproc::spawn(release_it, r.clone())
        .unwrap()
        .join()
        .unwrap());
    assert!(r.is_owned());
    r.release().unwrap();
}

// --- batch 4: _TestWait, _TestValue typecodes, _TestInitializers ------------------------------

/// `TestWait.test_wait` / `test_wait_integer`: waiting on connections and process sentinels
/// together collects every message and every exit.
#[test]
fn wait_connections_and_sentinels() {
    multiproc::init();
    fn send_three((w, i): (multiproc::Connection<u32>, u32)) {
        for k in 0..3 {
            w.send(&(i * 10 + k)).unwrap();
        }
    }
    let mut readers = Vec::new();
    let mut procs = Vec::new();
    for i in 0..4 {
        let (r, w) = multiproc::pipe_simplex::<u32>().unwrap();
        let mut p = Process::new(send_three, (w, i)).with_daemon(true);
        p.start().unwrap();
        readers.push(Some(r));
        procs.push(p);
    }
    let mut got = Vec::new();
    let mut ended = vec![false; procs.len()];
    loop {
        let mut objs: Vec<&dyn multiproc::connection::Waitable> = Vec::new();
        let mut which = Vec::new();
        for (i, r) in readers.iter().enumerate() {
            if let Some(r) = r {
                objs.push(r);
                which.push((true, i));
            }
        }
        for (i, p) in procs.iter().enumerate() {
            if !ended[i] {
                objs.push(p);
                which.push((false, i));
            }
        }
        if objs.is_empty() {
            break;
        }
        for k in wait(&objs, Some(Duration::from_secs(60))).unwrap() {
            let (is_conn, i) = which[k];
            if is_conn {
                match readers[i].as_ref().unwrap().recv() {
                    Ok(v) => got.push(v),
                    Err(Error::Eof) => readers[i] = None,
                    Err(e) => panic!("{e:?}"),
                }
            } else {
                ended[i] = true;
            }
        }
    }
    got.sort();
    let want: Vec<u32> = (0..4)
        .flat_map(|i| (0..3).map(move |k| i * 10 + k))
        .collect();
    assert_eq!(got, want);
    for p in &procs {
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
    }
}

/// `TestWait.test_wait_timeout`: nothing ready gives an empty list after the timeout; a
/// message makes its connection ready at once.
#[test]
fn wait_timeout() {
    let (a, b) = multiproc::pipe::<()>().unwrap();
    assert!(after_short(|| wait(&[&a], Some(SHORT)).unwrap().is_empty()));
    b.send_bytes(b"x").unwrap();
    assert_eq!(wait(&[&a], Some(SHORT)).unwrap(), vec![0]);
    assert_eq!(wait(&[&b, &a], Some(Duration::ZERO)).unwrap(), vec![1]);
}

/// `_TestValue.test_value` with CPython's typecodes `i`, `d`, `h`, `q` (2**33) and `c`:
/// each keeps its value and takes a child's write.
#[test]
fn value_typecodes() {
    multiproc::init();
    type Vals = (Value<i32>, Value<f64>, Value<i16>, Value<i64>, Value<u8>);
    fn write_all((i, d, h, q, c): Vals) {
        i.set(24234);
        d.set(-4.25);
        h.set(234);
        q.set(1 << 34);
        c.set(b'y');
    }
    let vals: Vals = (
        Value::new(4343).unwrap(),
        Value::new(3.625).unwrap(),
        Value::new(-232).unwrap(),
        Value::new(1 << 33).unwrap(),
        Value::new(b'x').unwrap(),
    );
    let read = |(i, d, h, q, c): &Vals| (i.get(), d.get(), h.get(), q.get(), c.get());
    assert_eq!(read(&vals), (4343, 3.625, -232, 1 << 33, b'x'));
    multiproc::spawn(write_all, vals.clone())
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(read(&vals), (24234, -4.25, 234, 1 << 34, b'y'));
}

/// `_TestValue.test_getobj_getlock`: a value made with a given lock uses that lock.
#[test]
fn value_with_given_lock() {
    multiproc::init();
    let lock = Lock::new().unwrap();
    let v = Value::with_lock(5i32, lock.clone()).unwrap();
    let a = Array::with_lock(&[1i32, 2], lock.clone()).unwrap();
    {
        let _g = v.lock().unwrap();
        assert!(lock.is_locked());
        assert!(a.get_lock().is_locked());
    }
    assert!(!lock.is_locked());
    lock.acquire().unwrap();
    assert!(v.get_lock().is_locked());
    lock.release().unwrap();
}

/// `TestInitializers.test_pool_initializer`: each worker runs the initializer with its
/// arguments (here it writes to a manager namespace, as in CPython).
#[test]
fn pool_initializer() {
    multiproc::init();
    fn initializer(ns: multiproc::manager::NamespaceProxy) {
        ns.set("test", 1).unwrap();
    }
    let m = multiproc::Manager::start().unwrap();
    let ns = m.namespace().unwrap();
    ns.set("test", 0).unwrap();
    let pool = Pool::builder()
        .processes(1)
        .initializer(initializer, ns.clone())
        .build()
        .unwrap();
    pool.close();
    pool.join().unwrap();
    assert_eq!(ns.get::<i32>("test").unwrap(), 1);
}

// --- batch 5: edge values -----------------------------------------------------------------

/// Edge values CPython's tests and documentation fix: `Queue(maxsize=0)` is unbounded,
/// `Array('i', 0)` is empty, `threading.Barrier(0)` raises `ValueError`, and
/// `imap(chunksize=0)` raises `ValueError`.
#[test]
fn edge_values() {
    multiproc::init();
    let q = Queue::<u8>::bounded(0).unwrap();
    for i in 0..100 {
        q.try_put(i).unwrap();
    }
    assert!(!q.full());
    assert_eq!(q.qsize(), 100);
    let a = Array::<i32>::new(0).unwrap();
    assert_eq!((a.len(), a.to_vec()), (0, vec![]));
    assert!(Barrier::new(0).is_err());
    let pool = Pool::new(1).unwrap();
    let first = pool.imap_chunked(sqr, 0..10, 0).next();
    assert!(matches!(first, Some(Err(_))), "{first:?}");
}

/// `_TestPool.test_map_no_failfast` (bpo-23992): after `map` raised for a failing task whose
/// error is large (1 MiB), `close` and `join` do not deadlock; and `get(timeout)` of a
/// result already there returns it at once.
#[test]
fn pool_map_no_failfast() {
    multiproc::init();
    fn raise_large(_: i32) -> i32 {
        panic!("{}", "x".repeat(1 << 20));
    }
    let pool = Pool::new(2).unwrap();
    match pool.map(raise_large, [0, 1]) {
        Err(Error::TaskPanicked { message, .. }) => assert!(message.len() >= 1 << 20),
        other => panic!("{other:?}"),
    }
    let r = pool.apply_async(sqr, 4);
    r.wait();
    assert_eq!(r.get_timeout(Duration::ZERO).unwrap(), 16);
    pool.close();
    pool.join().unwrap();
}

// --- batch 6: authentication, unencodable items, lock release ---------------------------------

/// `_TestListenerClient` with a wrong authkey (`connection.answer_challenge` /
/// `deliver_challenge` raising `AuthenticationError`): both ends fail with
/// `AuthenticationFailed`, and the listener goes on serving clients that know the key.
#[test]
fn listener_client_wrong_authkey() {
    use multiproc::connection::{Client, Listener};
    let l = Listener::bind("127.0.0.1:0", Some(b"right key")).unwrap();
    let addr = l.address().clone();
    let t = std::thread::spawn(move || Client::connect::<i32>(addr, Some(b"wrong key")).err());
    assert!(matches!(
        l.accept::<i32>(),
        Err(Error::AuthenticationFailed)
    ));
    assert!(matches!(
        t.join().unwrap(),
        Some(Error::AuthenticationFailed)
    ));
    // A client without a key does not authenticate (as Python's `Client(authkey=None)`):
    // it connects, and the listener, whose challenge gets no answer, refuses it.
    let addr = l.address().clone();
    let t = std::thread::spawn(move || Client::connect::<i32>(addr, None).is_ok());
    assert!(l.accept::<i32>().is_err());
    assert!(t.join().unwrap());
    let addr = l.address().clone();
    let t = std::thread::spawn(move || {
        let c = Client::connect::<i32>(addr, Some(b"right key")).unwrap();
        c.send(&5).unwrap();
    });
    assert_eq!(l.accept::<i32>().unwrap().recv().unwrap(), 5);
    t.join().unwrap();
}

/// Refuses to be encoded when its number is odd.
#[derive(Debug, serde::Deserialize)]
struct EvenOnly(u32);

impl serde::Serialize for EvenOnly {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0 % 2 == 1 {
            return Err(serde::ser::Error::custom("odd"));
        }
        s.serialize_u32(self.0)
    }
}

/// `_TestQueue.test_queue_feeder_on_queue_feeder_error` and
/// `test_queue_feeder_donot_stop_onexc`: an item that cannot be pickled is reported and the
/// queue goes on working (here `put` itself returns the `Codec` error, there is no feeder
/// thread), in order, for the items before and after it.
#[test]
fn queue_unencodable_item_is_reported_and_the_queue_goes_on() {
    multiproc::init();
    let q = Queue::<EvenOnly>::new().unwrap();
    q.put(EvenOnly(2)).unwrap();
    assert!(matches!(q.put(EvenOnly(3)), Err(Error::Codec(_))));
    assert!(matches!(
        q.try_put_giving_back(EvenOnly(5)),
        Err(TryPutError::Failed(EvenOnly(5), Error::Codec(_)))
    ));
    q.put(EvenOnly(4)).unwrap();
    assert_eq!(q.qsize(), 2);
    assert_eq!(q.get().unwrap().0, 2);
    assert_eq!(q.get().unwrap().0, 4);
    assert!(q.empty());
}

/// `_TestProcess.test_many_processes`: many children at once, each ended by `terminate`
/// (exit code `-SIGTERM`) or `kill` (`-SIGKILL`), none left running; and a child that
/// aborts ends with `-SIGABRT`, one that exits with `-1` with 255, as in CPython.
#[test]
fn process_many_and_signal_exit_codes() {
    multiproc::init();
    let mut children = Vec::new();
    for i in 0..6 {
        let (started, stop) = events();
        let mut p = Process::new(run_until, (started.clone(), stop)).with_daemon(true);
        p.start().unwrap();
        children.push((p, started, i % 2 == 0));
    }
    for (p, started, kill) in &children {
        started.wait().unwrap();
        if *kill {
            p.kill().unwrap();
        } else {
            p.terminate().unwrap();
        }
    }
    for (p, _, kill) in &children {
        assert!(p.join_timeout(Duration::from_secs(30)).unwrap());
        assert_eq!(p.exitcode(), Some(if *kill { -9 } else { -15 }));
        assert!(!p.is_alive());
    }
    fn abort_without_core(_: ()) {
        // No core file left behind, whatever the machine's setting.
        let mut l = rustix::process::getrlimit(rustix::process::Resource::Core);
        l.current = Some(0);
        let _ = rustix::process::setrlimit(rustix::process::Resource::Core, l);
        std::process::abort()
    }
    let mut p = Process::new(abort_without_core, ());
    p.start().unwrap();
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(-6));
    let mut p = Process::new(|_: ()| std::process::exit(-1), ());
    p.start().unwrap();
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(255));
}

/// A child interrupted by SIGINT (Ctrl-C sent to it) ends with exit code `-SIGINT`, like
/// one killed by any other signal. CPython's child turns SIGINT into `KeyboardInterrupt`
/// and usually ends with 1: a documented difference (Rust has no such exception).
#[test]
fn process_sigint_exit_code() {
    multiproc::init();
    let (started, stop) = events();
    let mut p = Process::new(run_until_sigint_default, (started.clone(), stop)).with_daemon(true);
    p.start().unwrap();
    started.wait().unwrap();
    let pid = rustix::process::Pid::from_raw(p.pid().unwrap() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    assert!(p.join_timeout(Duration::from_secs(30)).unwrap());
    assert_eq!(p.exitcode(), Some(-2));
}

// --- batch 7: descriptors in children, broken output, abstract sockets, manager restart -------

/// `_TestProcess.test_child_fd_inflation`: the number of descriptors a child has open does
/// not grow with the number of children already running (fork server and spawn; CPython
/// skips `fork`, whose children inherit everything by design).
#[test]
fn child_fd_count_does_not_grow_with_running_children() {
    multiproc::init();
    fn report((q, stop): (Queue<usize>, Event)) {
        let open = std::fs::read_dir("/proc/self/fd").unwrap().count();
        q.put(open).unwrap();
        stop.wait().unwrap();
    }
    for method in [
        multiproc::StartMethod::ForkServer,
        multiproc::StartMethod::Spawn,
    ] {
        let q = Queue::new().unwrap();
        let stop = Event::new().unwrap();
        let kids: Vec<Process> = (0..5)
            .map(|_| {
                let mut p = Process::new(report, (q.clone(), stop.clone()))
                    .with_start_method(method)
                    .with_daemon(true);
                p.start().unwrap();
                p
            })
            .collect();
        // Each child reports while the ones started before it still run.
        let counts: Vec<usize> = (0..5).map(|_| q.get().unwrap()).collect();
        stop.set();
        for p in &kids {
            p.join().unwrap();
            assert_eq!(p.exitcode(), Some(0));
        }
        assert!(
            counts.iter().all(|&c| c == counts[0]),
            "{method:?}: descriptors open in each child: {counts:?}"
        );
    }
}

/// `TestCloseFds.test_closefd`: a descriptor the parent has open (not even close-on-exec,
/// and numbered high, past anything a fresh process has) is not open in a child started by
/// the fork server or by spawn; a forked child inherits it, as in CPython.
#[test]
fn children_do_not_inherit_unrelated_descriptors() {
    multiproc::init();
    use std::os::fd::AsRawFd;
    fn has_fd(fd: i32) -> bool {
        std::path::Path::new(&format!("/proc/self/fd/{fd}")).exists()
    }
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let high = rustix::io::fcntl_dupfd_cloexec(&sock, 50).unwrap();
    rustix::io::fcntl_setfd(&high, rustix::io::FdFlags::empty()).unwrap();
    let fd = high.as_raw_fd();
    assert!(has_fd(fd));
    common::allow_fork();
    for (method, inherited) in [
        (multiproc::StartMethod::Fork, true),
        (multiproc::StartMethod::ForkServer, false),
        (multiproc::StartMethod::Spawn, false),
    ] {
        let got = multiproc::Builder::new()
            .start_method(method)
            .spawn(has_fd, fd)
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(got, inherited, "{method:?}");
    }
}

/// `_TestProcess.test_error_on_stdio_flush_2`: a child whose standard output is broken when
/// it ends (a pipe whose reader is gone, with output still buffered) ends normally, with
/// exit code 0, under every start method.
#[test]
fn broken_stdout_at_exit_leaves_the_exit_code_alone() {
    multiproc::init();
    use multiproc::process::Stdio;
    fn print_unflushed((printed, go): (Event, Event)) {
        print!("no newline, so this stays in the buffer until the child ends");
        printed.set();
        go.wait().unwrap();
    }
    common::allow_fork();
    for method in [
        multiproc::StartMethod::Fork,
        multiproc::StartMethod::ForkServer,
        multiproc::StartMethod::Spawn,
    ] {
        let (printed, go) = events();
        let mut p = multiproc::Builder::new()
            .start_method(method)
            .stdout(Stdio::piped())
            .process(print_unflushed, (printed.clone(), go.clone()));
        p.start().unwrap();
        printed.wait().unwrap();
        drop(p.take_stdout().unwrap());
        go.set();
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0), "{method:?}");
    }
}

/// `_TestProcess.test_error_on_stdio_flush_1`: a child started with a standard output or
/// error that refuses every write (Python sets `sys.stdout` / `sys.stderr` to `None` or
/// to a closed stream; here the descriptor is open for reading only) still runs its
/// target and ends with exit code 0, also with output left to flush at its end.
#[test]
fn unwritable_stdio_leaves_the_exit_code_alone() {
    multiproc::init();
    use multiproc::process::Stdio;
    fn set_then_leave_output(evt: Event) {
        evt.set();
        print!("unflushed");
        eprint!("unflushed");
    }
    for stream in ["stdout", "stderr"] {
        let read_only = Stdio::from(std::fs::File::open("/dev/null").unwrap());
        let b = multiproc::Builder::new();
        let b = if stream == "stdout" {
            b.stdout(read_only)
        } else {
            b.stderr(read_only)
        };
        let evt = Event::new().unwrap();
        let mut p = b.process(set_then_leave_output, evt.clone());
        p.start().unwrap();
        p.join().unwrap();
        assert!(evt.is_set(), "{stream}");
        assert_eq!(p.exitcode(), Some(0), "{stream}");
    }
}

/// `_TestListener.test_abstract_socket`: Python's `"\0name"` is an address in Linux's
/// abstract namespace (here `"@name"` too); a client connects and talks. Once the listener
/// is gone the name is free: connecting fails. `TestInvalidFamily`: a Windows pipe name is
/// no address here (Python: `ValueError`), and binding it creates nothing.
#[test]
fn listener_abstract_socket_and_invalid_family() {
    use multiproc::connection::{Address, Client, Listener};
    let name = format!("multiproc-parity-{}", std::process::id());
    let python_form = format!("\0{name}");
    let l = Listener::bind(python_form.as_str(), None).unwrap();
    assert_eq!(l.address(), &Address::Abstract(name.clone().into_bytes()));
    let c = Client::connect::<i32>(python_form.as_str(), None).unwrap();
    let d = l.accept::<i32>().unwrap();
    c.send(&1729).unwrap();
    assert_eq!(d.recv().unwrap(), 1729);
    // The same socket under its other spelling.
    let c = Client::connect::<i32>(format!("@{name}"), None).unwrap();
    let d = l.accept::<i32>().unwrap();
    d.send(&7).unwrap();
    assert_eq!(c.recv().unwrap(), 7);
    drop(l);
    assert!(Client::connect::<i32>(python_form.as_str(), None).is_err());

    let pipe_name = r"\\.\test";
    assert!(Listener::bind(pipe_name, None).is_err());
    assert!(!std::path::Path::new(pipe_name).exists());
}

/// `_TestManagerRestart.test_rapid_restart`: a manager served on a TCP address, used by a
/// child through that address, is shut down, and a new one is served on the same address at
/// once (the old connections' TIME_WAIT does not block the bind).
#[test]
fn manager_rapid_restart_on_the_same_address() {
    multiproc::init();
    use multiproc::manager::QueueProxy;
    use multiproc::Manager;
    fn putter((address, key): (String, Vec<u8>)) {
        let m = Manager::connect(address.as_str(), &key).unwrap();
        let q = m.lookup::<QueueProxy<String>>("queue").unwrap();
        q.put("hello world".into()).unwrap();
    }
    let key = b"rapid restart";
    let m = Manager::serve("127.0.0.1:0", key).unwrap();
    let q = m.queue::<String>().unwrap();
    m.publish("queue", &q).unwrap();
    let address = m.address().clone();
    multiproc::spawn(putter, (address.to_string(), key.to_vec()))
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(q.get().unwrap(), "hello world");
    m.shutdown().unwrap();
    assert!(
        q.get_timeout(SHORT).is_err(),
        "the old server still answers"
    );

    let m = Manager::serve(&address, key).unwrap();
    assert_eq!(m.address(), &address);
    let l = m.list(vec![1, 2]).unwrap();
    assert_eq!(l.len().unwrap(), 2);
    m.shutdown().unwrap();
}

// --- batch 8: signals that interrupt blocking calls ---------------------------------------------

/// SIGUSR1s delivered to the main thread (the one that runs a child's target).
static SIGUSR1_ON_MAIN: AtomicUsize = AtomicUsize::new(0);

extern "C" fn on_sigusr1(_: libc::c_int) {
    // getpid, gettid and an atomic add: async-signal-safe.
    if rustix::thread::gettid() == rustix::process::getpid() {
        SIGUSR1_ON_MAIN.fetch_add(1, Ordering::SeqCst);
    }
}

/// Installs a SIGUSR1 handler that does nothing, without `SA_RESTART` (as Python's
/// `signal.signal` installs one): each SIGUSR1 makes a blocking call fail with `EINTR`.
fn install_interrupting_sigusr1_handler() {
    // SAFETY: a zeroed sigaction is a valid one; the handler does nothing, which is
    // async-signal-safe; the call only replaces SIGUSR1's disposition in this child.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigusr1 as *const () as usize;
        sa.sa_flags = 0;
        libc::sigemptyset(&mut sa.sa_mask);
        assert_eq!(libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()), 0);
    }
}

/// Whether a SIGUSR1 sent to `pid` is still waiting to be delivered.
fn sigusr1_pending(pid: u32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let bit = 1u64 << (libc::SIGUSR1 - 1);
    status
        .lines()
        .filter(|l| l.starts_with("ShdPnd:") || l.starts_with("SigPnd:"))
        .any(|l| u64::from_str_radix(l[7..].trim(), 16).is_ok_and(|m| m & bit != 0))
}

type Interrupted = (
    Value<u32>,
    multiproc::Connection<u32>,
    Queue<u32>,
    Lock,
    (Event, Event, Event),
    Semaphore,
    Barrier,
    String,
);

/// Blocks in one call after another, each announced in `stage` just before it, and says
/// what each returned.
fn block_through_signals(
    (stage, conn, q, lock, (event, timed_event, grandchild_go), sem, barrier, address): Interrupted,
) -> Vec<String> {
    install_interrupting_sigusr1_handler();
    let listener = multiproc::connection::Listener::bind(address.as_str(), None).unwrap();
    let long = Duration::from_secs(60);
    let mut out = Vec::new();
    stage.set(1);
    out.push(format!("{:?}", conn.recv()));
    stage.set(2);
    out.push(format!("{:?}", conn.poll(Some(long))));
    out.push(format!("{:?}", conn.recv()));
    stage.set(3);
    out.push(format!("{:?}", q.get()));
    stage.set(4);
    out.push(format!("{:?}", q.get_timeout(long)));
    stage.set(5);
    out.push(format!("{:?}", lock.acquire()));
    out.push(format!("{:?}", lock.release()));
    stage.set(6);
    event.wait().unwrap();
    out.push("event".into());
    stage.set(7);
    out.push(format!("{:?}", timed_event.wait_timeout(long)));
    stage.set(8);
    sem.acquire().unwrap();
    out.push("semaphore".into());
    stage.set(9);
    out.push(format!("{:?}", barrier.wait_timeout(long).map(|_| ())));
    stage.set(10);
    out.push(format!(
        "{:?}",
        listener.accept::<u32>().and_then(|c| c.recv())
    ));
    let mut grandchild = Process::new(|go: Event| go.wait(), grandchild_go);
    grandchild.start().unwrap();
    stage.set(11);
    out.push(format!("{:?}", grandchild.join()));
    out.push(format!("{:?}", grandchild.exitcode()));
    stage.set(12);
    out.push(format!(
        "{} interruptions",
        SIGUSR1_ON_MAIN.load(Ordering::SeqCst)
    ));
    out
}

/// `TestIgnoreEINTR.test_ignore` / `test_ignore_listener` and `_TestPollEintr`: a process
/// with a signal handler that interrupts system calls (no `SA_RESTART`, as Python's) gets
/// signals while it blocks in `recv`, `poll`, `get` (plain and timed), `acquire`, an event's
/// `wait` (plain and timed), a semaphore, a barrier, `accept` and `join`; each call goes on
/// waiting and then returns what it was given, never `EINTR`.
#[test]
fn blocking_calls_go_on_after_interrupting_signals() {
    multiproc::init();
    let stage = Value::new(0u32).unwrap();
    let (ours, theirs) = multiproc::pipe::<u32>().unwrap();
    let q = Queue::new().unwrap();
    let lock = Lock::new().unwrap();
    let events = (
        Event::new().unwrap(),
        Event::new().unwrap(),
        Event::new().unwrap(),
    );
    let sem = Semaphore::new(0).unwrap();
    let barrier = Barrier::new(2).unwrap();
    let address = format!("@multiproc-parity-eintr-{}", std::process::id());
    lock.acquire().unwrap();
    let mut h = multiproc::spawn(
        block_through_signals,
        (
            stage.clone(),
            theirs,
            q.clone(),
            lock.clone(),
            events.clone(),
            sem.clone(),
            barrier.clone(),
            address.clone(),
        ),
    )
    .unwrap();
    let pid = h.pid();
    let kill = |sig| {
        rustix::process::kill_process(rustix::process::Pid::from_raw(pid as i32).unwrap(), sig)
    };
    // Interrupts the child three times while it blocks in the call of `k`.
    let interrupt = |k: u32| {
        assert!(
            common::eventually(Duration::from_secs(30), || stage.get() == k),
            "the child never reached stage {k} (at {})",
            stage.get()
        );
        common::until_asleep(pid);
        for _ in 0..3 {
            kill(rustix::process::Signal::USR1).unwrap();
            assert!(common::eventually(Duration::from_secs(30), || {
                !sigusr1_pending(pid)
            }));
            common::until_asleep(pid);
        }
        // Still in stage k: the interrupted call went back to waiting.
        assert_eq!(stage.get(), k, "the call of stage {k} returned early");
    };
    interrupt(1);
    ours.send(&1).unwrap();
    interrupt(2);
    ours.send(&2).unwrap();
    interrupt(3);
    q.put(3).unwrap();
    interrupt(4);
    q.put(4).unwrap();
    interrupt(5);
    lock.release().unwrap();
    interrupt(6);
    events.0.set();
    interrupt(7);
    events.1.set();
    interrupt(8);
    sem.release().unwrap();
    interrupt(9);
    barrier.wait_timeout(Duration::from_secs(60)).unwrap();
    interrupt(10);
    let c = multiproc::connection::Client::connect::<u32>(address.as_str(), None).unwrap();
    c.send(&10).unwrap();
    interrupt(11);
    events.2.set();
    let out = h.join_timeout(Duration::from_secs(60)).unwrap().unwrap();
    assert_eq!(
        out,
        [
            "Ok(1)",
            "Ok(true)",
            "Ok(2)",
            "Ok(3)",
            "Ok(4)",
            "Ok(())",
            "Ok(())",
            "event",
            "Ok(true)",
            "semaphore",
            "Ok(())",
            "Ok(10)",
            "Ok(())",
            "Some(0)",
            "33 interruptions",
        ]
    );
    assert_eq!(stage.get(), 12);
    drop(c);
}

// --- batch 9: an input that fails part-way --------------------------------------------------

/// Python's `exception_throwing_generator(total, when)`: yields `0..total` but panics when it
/// reaches `when` (`when == -1`: before the first item).
fn panics_at(total: i64, when: i64) -> impl Iterator<Item = i64> {
    (-1..total).filter(move |&i| {
        if i == when {
            panic!("Somebody said when");
        }
        i >= 0
    })
}

/// `_TestPool.test_imap_handle_iterable_exception`,
/// `test_imap_unordered_handle_iterable_exception` and `test_map_handle_iterable_exception`
/// (at the end): when the input iterator fails (here panics) part-way, `imap` yields the
/// results of the items before it, then the failure as an error, then ends; a failure at
/// the very start is the first item's error; the pool goes on working after each, as after
/// `map` over such an input. (CPython drops the items of the failing chunk that came before
/// the failure; here each item taken before it is run, whatever the chunk size.)
#[test]
fn pool_imap_input_that_panics() {
    multiproc::init();
    let pool = Pool::new(2).unwrap();
    let is_input_panic = |r: &multiproc::Result<i64>| {
        matches!(r, Err(Error::TaskPanicked { message, .. })
            if message.contains("input iterator panicked") && message.contains("Somebody said when"))
    };
    for _ in 0..2 {
        let out: Vec<_> = pool.imap_chunked(sqr, panics_at(1, -1), 1).collect();
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(is_input_panic(&out[0]), "{out:?}");
    }
    for (total, when, chunk) in [(10, 3, 1), (20, 7, 2), (20, 7, 4)] {
        let mut it = pool.imap_chunked(sqr, panics_at(total, when), chunk);
        for i in 0..when {
            assert_eq!(it.next().unwrap().unwrap(), i * i, "chunk {chunk}");
        }
        let failed = it.next().unwrap();
        assert!(is_input_panic(&failed), "{failed:?}");
        assert!(it.next().is_none());
    }
    for chunk in [1, 2] {
        let out: Vec<_> = pool
            .imap_unordered_chunked(sqr, panics_at(20, 7), chunk)
            .collect();
        assert_eq!(out.len(), 8, "{out:?}");
        assert_eq!(
            out.iter().filter(|r| is_input_panic(r)).count(),
            1,
            "{out:?}"
        );
        let mut got: Vec<i64> = out.into_iter().filter_map(Result::ok).collect();
        got.sort();
        assert_eq!(got, (0..7).map(sqr).collect::<Vec<_>>());
    }
    // `map` reads its input in the caller, so there the panic is the caller's own, as
    // Python's `map` raises the generator's exception; the pool is unharmed.
    for when in [-1, 3] {
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.map_chunked(sqr, panics_at(10, when), 1)
        }));
        assert!(
            caught.is_err(),
            "map over a failing input returned {caught:?}"
        );
    }
    assert_eq!(pool.map(sqr, 0..4).unwrap(), vec![0, 1, 4, 9]);
}

/// `IMapIterator.next(timeout)` (Python raises `multiprocessing.TimeoutError` and the
/// iterator stays usable): `next_timeout` gives `Error::Timeout` while the next result is
/// not there, without skipping it; an ordered `imap` waits for the blocked first task even
/// when a later one is done, `imap_unordered` gives the done one first.
#[test]
fn pool_imap_next_timeout() {
    multiproc::init();
    fn first_waits((go, done, i): (Event, Event, i64)) -> i64 {
        if i == 0 {
            go.wait().unwrap();
        } else {
            done.set();
        }
        i
    }
    let pool = Pool::new(2).unwrap();
    for ordered in [true, false] {
        let (go, done) = events();
        let items: Vec<_> = (0..2).map(|i| (go.clone(), done.clone(), i)).collect();
        let mut it = if ordered {
            pool.imap(first_waits, items)
        } else {
            pool.imap_unordered(first_waits, items)
        };
        if ordered {
            // Starts the tasks; the second finishes, the first waits.
            assert!(matches!(
                it.next_timeout(Duration::ZERO),
                Some(Err(Error::Timeout))
            ));
            done.wait().unwrap();
            assert!(after_short(|| matches!(
                it.next_timeout(SHORT),
                Some(Err(Error::Timeout))
            )));
        } else {
            assert_eq!(
                it.next_timeout(Duration::from_secs(60)).unwrap().unwrap(),
                1
            );
            assert!(matches!(
                it.next_timeout(Duration::ZERO),
                Some(Err(Error::Timeout))
            ));
        }
        go.set();
        let rest: Vec<i64> = std::iter::from_fn(|| it.next_timeout(Duration::from_secs(60)))
            .map(Result::unwrap)
            .collect();
        assert_eq!(rest, if ordered { vec![0, 1] } else { vec![0] });
        assert!(it.next_timeout(Duration::ZERO).is_none());
    }
}

/// `TestSimpleQueue.test_close` and `test_empty_exceptions`: closing twice is harmless;
/// once closed, `put` and `get` fail with `Closed` while `empty` still answers (CPython's
/// raises `OSError`: a documented difference), for a used queue and an unused one alike.
#[test]
fn simple_queue_close_twice() {
    for used in [false, true] {
        let q = SimpleQueue::<i32>::new().unwrap();
        if used {
            q.put(1).unwrap();
        }
        q.close();
        q.close();
        assert_eq!(q.empty(), !used);
        assert!(matches!(q.put(2), Err(Error::Closed)));
        assert!(matches!(q.get(), Err(Error::Closed)));
    }
}

/// `_TestLock.test_repr_lock`, `test_repr_rlock` and `_TestEvent.test_repr`: a lock's debug
/// form says who holds it (Python names the owner; here its thread id, which is the pid
/// for a child's main thread, and 0 when free), an RLock's also how many times, an event's
/// whether it is set.
#[test]
fn debug_forms_tell_the_state() {
    multiproc::init();
    let me = rustix::thread::gettid().as_raw_nonzero().get();
    let lock = Lock::new().unwrap();
    assert_eq!(format!("{lock:?}"), "Lock { holder_tid: 0 }");
    lock.acquire().unwrap();
    assert_eq!(format!("{lock:?}"), format!("Lock {{ holder_tid: {me} }}"));
    lock.release().unwrap();

    let r = RLock::new().unwrap();
    assert_eq!(format!("{r:?}"), "RLock { holder_tid: 0, count: 0 }");
    for _ in 0..3 {
        r.acquire().unwrap();
    }
    assert_eq!(
        format!("{r:?}"),
        format!("RLock {{ holder_tid: {me}, count: 3 }}")
    );
    for _ in 0..3 {
        r.release().unwrap();
    }
    assert_eq!(format!("{r:?}"), "RLock { holder_tid: 0, count: 0 }");

    // Held by another process.
    fn hold((lock, r, held, stop): (Lock, RLock, Event, Event)) {
        lock.acquire().unwrap();
        r.acquire().unwrap();
        held.set();
        stop.wait().unwrap();
        r.release().unwrap();
        lock.release().unwrap();
    }
    let (held, stop) = events();
    let h = multiproc::spawn(hold, (lock.clone(), r.clone(), held.clone(), stop.clone())).unwrap();
    held.wait().unwrap();
    let pid = h.pid();
    assert_eq!(format!("{lock:?}"), format!("Lock {{ holder_tid: {pid} }}"));
    assert_eq!(
        format!("{r:?}"),
        format!("RLock {{ holder_tid: {pid}, count: 1 }}")
    );
    stop.set();
    h.join().unwrap();

    let e = Event::new().unwrap();
    assert_eq!(format!("{e:?}"), "Event { is_set: false }");
    e.set();
    assert_eq!(format!("{e:?}"), "Event { is_set: true }");
    e.clear();
    assert_eq!(format!("{e:?}"), "Event { is_set: false }");
}

// --- batch 10: hostile peers during authentication ---------------------------------------------

/// A frame as multiproc's sockets carry it: magic "MPC1", no descriptors, the length.
fn raw_frame(payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&0x3143_504du32.to_le_bytes());
    f.extend_from_slice(&0u32.to_le_bytes());
    f.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    f.extend_from_slice(payload);
    f
}

/// A frame that announces a descriptor and carries none.
fn frame_claiming_a_handle() -> Vec<u8> {
    let mut f = raw_frame(b"x");
    f[4..8].copy_from_slice(&1u32.to_le_bytes());
    f
}

/// A frame header announcing 100 bytes, followed by 10 of them (and then the peer hangs up).
fn truncated_frame() -> Vec<u8> {
    let mut f = raw_frame(&[1u8; 10]);
    f[8..16].copy_from_slice(&100u64.to_le_bytes());
    f
}

/// Python's `EOFError` / `OSError("got end of file during message")`.
fn is_truncated(r: &multiproc::Result<multiproc::Connection<i32>>) -> bool {
    matches!(r, Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof)
}

/// A frame header claiming a terabyte, with nothing after it.
fn terabyte_header() -> Vec<u8> {
    let mut f = raw_frame(b"");
    f[8..16].copy_from_slice(&(1u64 << 40).to_le_bytes());
    f
}

/// What a hostile peer does: sends these byte strings (after the first, each once the other
/// side has answered with a frame header at least), then hangs up or stays silent.
type Script = (Vec<Vec<u8>>, bool);

/// What a connection attempt against a hostile peer must give.
type Expect = fn(&multiproc::Result<multiproc::Connection<i32>>) -> bool;

fn play(s: &mut std::net::TcpStream, (msgs, stay): &Script) -> bool {
    use std::io::{Read, Write};
    for (i, msg) in msgs.iter().enumerate() {
        if i > 0 {
            let mut answer = [0u8; 16];
            s.read_exact(&mut answer).unwrap();
        }
        let _ = s.write_all(msg);
    }
    *stay
}

/// The error for a peer that stayed silent: a timeout that says what did not happen.
fn is_handshake_timeout(r: &multiproc::Result<multiproc::Connection<i32>>) -> bool {
    matches!(r, Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::TimedOut
        && e.to_string().contains("authentication handshake"))
}

/// `OtherTest.test_deliver_challenge_auth_failure`: peers that do not answer a listener's
/// challenge properly each make `accept` fail with a clear error: a well-framed bogus or
/// short answer, bytes that are no frame, a header claiming a terabyte or a descriptor
/// that never comes (`AuthenticationFailed`, Python's `AuthenticationError`; Python gives
/// `OSError("bad message length")` for the terabyte), hanging up (`Eof`, Python's
/// `EOFError`), hanging up in the middle of a frame (`Io` of kind `UnexpectedEof`, Python's
/// `OSError`), saying nothing for 5 s (an `Io` error of kind `TimedOut`, where Python's
/// `accept` would wait for ever). The listener then serves a client that knows the key.
#[test]
fn listener_refuses_bogus_answers_to_its_challenge() {
    use multiproc::connection::{Address, Client, Listener};
    let l = Listener::bind("127.0.0.1:0", Some(b"abc")).unwrap();
    let Address::Tcp(sa) = l.address().clone() else {
        panic!("{}", l.address())
    };
    let peers: [(Script, Expect); 8] = [
        ((vec![raw_frame(b"something bogus")], false), |r| {
            matches!(r, Err(Error::AuthenticationFailed))
        }),
        ((vec![raw_frame(b"{sha256}")], false), |r| {
            matches!(r, Err(Error::AuthenticationFailed))
        }),
        (
            (vec![b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()], false),
            |r| matches!(r, Err(Error::AuthenticationFailed)),
        ),
        ((vec![terabyte_header()], true), |r| {
            matches!(r, Err(Error::AuthenticationFailed))
        }),
        ((vec![frame_claiming_a_handle()], true), |r| {
            matches!(r, Err(Error::AuthenticationFailed))
        }),
        ((vec![], false), |r| matches!(r, Err(Error::Eof))),
        ((vec![truncated_frame()], false), is_truncated),
        ((vec![], true), is_handshake_timeout),
    ];
    for (script, expected) in peers {
        let t = std::thread::spawn(move || {
            let mut s = std::net::TcpStream::connect(sa).unwrap();
            play(&mut s, &script).then_some(s)
        });
        let r = l.accept::<i32>();
        assert!(expected(&r), "{:?}", r.err());
        drop(t.join().unwrap());
    }
    let t = std::thread::spawn(move || {
        let c = Client::connect::<i32>(sa, Some(b"abc")).unwrap();
        c.send(&1729).unwrap();
    });
    assert_eq!(l.accept::<i32>().unwrap().recv().unwrap(), 1729);
    t.join().unwrap();
}

/// `OtherTest.test_answer_challenge_auth_failure`: a server that challenges properly but
/// then says something bogus instead of welcome, or sends junk or a short challenge
/// instead of a challenge, bytes that are no frame, a header claiming a terabyte or a
/// descriptor that never comes, makes `Client::connect` fail with `AuthenticationFailed`
/// (Python: `AuthenticationError`, and `OSError("bad message length")` for the terabyte);
/// hanging up gives `AuthenticationFailed` too (the server refused us; Python: `EOFError`),
/// hanging up in the middle of a frame an `Io` error of kind `UnexpectedEof`; saying
/// nothing for 5 s gives an `Io` error of kind `TimedOut` (Python's `Client` would wait
/// for ever).
#[test]
fn client_refuses_a_bogus_server() {
    use multiproc::connection::Client;
    let fake = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = fake.local_addr().unwrap();
    let mut challenge = b"#CHALLENGE#{sha256}".to_vec();
    challenge.extend_from_slice(&[7u8; 40]);
    let servers: [(Script, Expect); 9] = [
        (
            (
                vec![raw_frame(&challenge), raw_frame(b"something bogus")],
                false,
            ),
            |r| matches!(r, Err(Error::AuthenticationFailed)),
        ),
        ((vec![raw_frame(b"something bogus")], false), |r| {
            matches!(r, Err(Error::AuthenticationFailed))
        }),
        ((vec![raw_frame(b"#CHALLENGE#{sha256}short")], false), |r| {
            matches!(r, Err(Error::AuthenticationFailed))
        }),
        (
            (vec![b"\xff\xfe junk, no frame \x00".to_vec()], true),
            |r| matches!(r, Err(Error::AuthenticationFailed)),
        ),
        ((vec![terabyte_header()], true), |r| {
            matches!(r, Err(Error::AuthenticationFailed))
        }),
        ((vec![frame_claiming_a_handle()], true), |r| {
            matches!(r, Err(Error::AuthenticationFailed))
        }),
        ((vec![truncated_frame()], false), is_truncated),
        ((vec![], false), |r| {
            matches!(r, Err(Error::AuthenticationFailed))
        }),
        ((vec![], true), is_handshake_timeout),
    ];
    for (script, expected) in servers {
        let server = {
            let fake = fake.try_clone().unwrap();
            std::thread::spawn(move || {
                let (mut s, _) = fake.accept().unwrap();
                play(&mut s, &script).then_some(s)
            })
        };
        let r = Client::connect::<i32>(addr, Some(b"abc"));
        assert!(expected(&r), "{:?}", r.err());
        drop(server.join().unwrap());
    }
}

// --- batch 11: descriptors with large numbers ---------------------------------------------------

/// `_TestConnection.test_large_fd_transfer` (a descriptor numbered past 256, bpo-11657), and
/// past `select`'s limit of 1024: with a thousand other descriptors open, a pipe (whose own
/// descriptors are then numbered past 1024) polls, waits and carries messages, an event and
/// a queue made then work across processes, and a file descriptor numbered past 1500
/// travels to a child by `send_handle`, which writes through it.
#[test]
fn descriptors_numbered_past_1024() {
    multiproc::init();
    use rustix::process::{getrlimit, setrlimit, Resource};
    use std::os::fd::AsRawFd;
    const WANT: u64 = 2048;
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current.is_some_and(|c| c < WANT) {
        limit.current = Some(limit.maximum.map_or(WANT, |m| m.min(WANT)));
        setrlimit(Resource::Nofile, limit).unwrap();
    }
    let null = std::fs::File::open("/dev/null").unwrap();
    let filler: Vec<std::os::fd::OwnedFd> = (0..1100)
        .map(|_| rustix::io::fcntl_dupfd_cloexec(&null, 0).unwrap())
        .collect();
    let path = std::env::temp_dir().join(format!("multiproc-parity-fd-{}", std::process::id()));
    let file = std::fs::File::create(&path).unwrap();
    let high = rustix::io::fcntl_dupfd_cloexec(&file, 1500).unwrap();
    drop(file);
    assert!(high.as_raw_fd() >= 1500);

    fn write_through((conn, q, e): (multiproc::Connection<u8>, Queue<u8>, Event)) {
        use std::io::Write;
        let fd = conn.recv_handle().unwrap();
        std::fs::File::from(fd).write_all(b"bar").unwrap();
        conn.send(&1).unwrap();
        e.wait().unwrap();
        q.put(2).unwrap();
    }
    let (ours, theirs) = multiproc::pipe::<u8>().unwrap();
    assert!(ours.as_raw_fd() > 1024, "{}", ours.as_raw_fd());
    let (q, e) = (Queue::new().unwrap(), Event::new().unwrap());
    let h = multiproc::spawn(write_through, (theirs, q.clone(), e.clone())).unwrap();
    ours.send_handle(&high).unwrap();
    drop(high);
    assert!(ours.poll(Some(Duration::from_secs(60))).unwrap());
    assert_eq!(
        wait(&[&ours], Some(Duration::from_secs(60))).unwrap(),
        vec![0]
    );
    assert_eq!(ours.recv().unwrap(), 1);
    e.set();
    assert_eq!(q.get_timeout(Duration::from_secs(60)).unwrap(), 2);
    h.join().unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"bar");
    std::fs::remove_file(&path).unwrap();
    drop(filler);
}

/// `_TestProcess.test_daemon_argument` and `BaseProcess.start`'s rule that "daemonic
/// processes are not allowed to have children": here a daemon may start a child, which is
/// not a daemon unless asked (Python defaults the flag to the creator's), runs and is
/// joined normally. A documented difference: a child here ends with its parent however the
/// parent ends, so a terminated daemon leaves no orphan behind.
#[test]
fn a_daemon_may_start_children() {
    multiproc::init();
    fn start_one(_: ()) -> (bool, Option<i32>) {
        let mut p = Process::new(|_: ()| (), ());
        let daemon = p.daemon();
        p.start().unwrap();
        p.join().unwrap();
        (daemon, p.exitcode())
    }
    let h = multiproc::Builder::new()
        .daemon(true)
        .spawn(start_one, ())
        .unwrap();
    assert_eq!(h.join().unwrap(), (false, Some(0)));
}

/// `TestSyncManagerTypes.test_queue`: a manager's bounded queue of two, filled by the
/// parent, is seen full, not empty, with two items by a child that then empties it; the
/// parent then sees it empty and not full.
#[test]
fn manager_queue_full_and_empty_across_processes() {
    multiproc::init();
    use multiproc::manager::QueueProxy;
    fn drain(q: QueueProxy<u32>) -> Vec<String> {
        vec![
            format!("{:?}", q.qsize()),
            format!("{:?}", q.full()),
            format!("{:?}", q.empty()),
            format!("{:?}", q.get()),
            format!("{:?}", q.empty()),
            format!("{:?}", q.get()),
            format!("{:?}", q.empty()),
        ]
    }
    let m = multiproc::Manager::start().unwrap();
    let q = m.bounded_queue::<u32>(2).unwrap();
    assert!(q.empty().unwrap() && !q.full().unwrap());
    q.put(5).unwrap();
    assert!(!q.full().unwrap());
    q.put(6).unwrap();
    let seen = multiproc::spawn(drain, q.clone()).unwrap().join().unwrap();
    assert_eq!(
        seen,
        [
            "Ok(2)",
            "Ok(true)",
            "Ok(false)",
            "Ok(5)",
            "Ok(false)",
            "Ok(6)",
            "Ok(true)"
        ]
    );
    assert!(q.empty().unwrap());
    assert!(!q.full().unwrap());
    // An unbounded queue is never full.
    let u = m.queue::<u32>().unwrap();
    for i in 0..100 {
        u.put(i).unwrap();
    }
    assert!(!u.full().unwrap());
}

/// The manager objects a `TestSyncManagerTypes` worker uses.
type SyncTypes = (
    multiproc::manager::EventProxy,
    multiproc::manager::LockProxy,
    multiproc::manager::RLockProxy,
    multiproc::manager::SemaphoreProxy,
    multiproc::manager::BoundedSemaphoreProxy,
    multiproc::manager::ConditionProxy,
    multiproc::manager::BarrierProxy,
    multiproc::manager::ValueProxy<i32>,
    multiproc::manager::ArrayProxy<i32>,
    multiproc::manager::NamespaceProxy,
);

/// The workers of `TestSyncManagerTypes` in one child (asserting panics: exit code 1).
fn sync_types_worker((e, l, r, s, bs, c, b, v, a, ns): SyncTypes) {
    assert!(e.is_set().unwrap());
    e.wait().unwrap();
    e.clear().unwrap();
    assert!(!e.wait_timeout(Duration::from_millis(1)).unwrap());
    l.acquire().unwrap();
    assert!(l.locked().unwrap());
    r.acquire().unwrap();
    r.release().unwrap();
    s.acquire().unwrap();
    bs.acquire().unwrap();
    c.acquire().unwrap();
    c.release().unwrap();
    assert_eq!(b.parties().unwrap(), 5);
    b.reset().unwrap();
    assert_eq!(v.get().unwrap(), 1);
    v.set(2).unwrap();
    assert_eq!(a.get(0).unwrap(), 0);
    assert_eq!(a.get(1).unwrap(), 1);
    assert_eq!(a.len().unwrap(), 2);
    assert_eq!(a.to_vec().unwrap(), [0, 1]);
    assert_eq!(ns.get::<i32>("x").unwrap(), 0);
    assert_eq!(ns.get::<i32>("y").unwrap(), 1);
}

/// `TestSyncManagerTypes` (`test_event`, `test_lock`, `test_rlock`, `test_semaphore`,
/// `test_bounded_semaphore`, `test_condition`, `test_barrier`, `test_value`, `test_array`,
/// `test_namespace`): a daemon child works on each kind of manager object and exits with
/// 0; the parent then sees the event cleared and the value changed, releases the lock the
/// child left held (a second release raises) and the semaphores the child took (a bounded
/// one refuses a release beyond its initial value).
#[test]
fn manager_sync_types_across_a_child() {
    multiproc::init();
    let m = multiproc::Manager::start().unwrap();
    let objs: SyncTypes = (
        m.event().unwrap(),
        m.lock().unwrap(),
        m.rlock().unwrap(),
        m.semaphore(1).unwrap(),
        m.bounded_semaphore(1).unwrap(),
        m.condition().unwrap(),
        m.barrier(5).unwrap(),
        m.value(1i32).unwrap(),
        m.array(vec![0i32, 1]).unwrap(),
        m.namespace().unwrap(),
    );
    objs.0.set().unwrap();
    objs.9.set("x", 0i32).unwrap();
    objs.9.set("y", 1i32).unwrap();
    let mut p = Process::new(sync_types_worker, objs.clone()).with_daemon(true);
    p.start().unwrap();
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(0));
    let (e, l, _, s, bs, _, b, v, _, _) = objs;
    assert!(!e.is_set().unwrap());
    assert!(!e.wait_timeout(Duration::from_millis(1)).unwrap());
    l.release().unwrap();
    assert!(l.release().is_err(), "already released");
    assert_eq!(s.get_value().unwrap(), 0);
    s.release().unwrap();
    assert_eq!(s.get_value().unwrap(), 1);
    bs.release().unwrap();
    assert!(bs.release().is_err());
    assert!(!b.broken().unwrap());
    assert_eq!(v.get().unwrap(), 2);
}

// --- _TestSharedMemory ----------------------------------------------------------------------------

/// `_TestSharedMemory.test_shared_memory_basics`: a block attached by name has the
/// creator's size and contents; a second `unlink` (`shm_unlink` twice) and attaching a name
/// that is gone are `FileNotFoundError` (an `Io` error of kind `NotFound`); creating a name
/// in use is `FileExistsError` (`AlreadyExists`); a size of 0 and a name with an embedded
/// NUL are `ValueError` (`InvalidOperation`), as in `test_invalid_shared_memory_cration`.
#[test]
fn shared_memory_basics() {
    use multiproc::shared_memory::SharedMemory;
    use std::io::ErrorKind;
    multiproc::init();
    let io_kind = |r: multiproc::Result<SharedMemory>| match r {
        Err(Error::Io(e)) => Some(e.kind()),
        _ => None,
    };
    let name = format!("mp_parity_dblunlink_{}", std::process::id());
    let uno = SharedMemory::create(Some(&name), 5000).unwrap();
    assert!(uno.len() >= 5000);
    uno.write_at(0, &[42]).unwrap();
    let duo = SharedMemory::attach(&name).unwrap();
    assert_eq!(duo.len(), uno.len());
    let mut b = [0u8];
    duo.read_at(0, &mut b).unwrap();
    assert_eq!(b, [42]);
    assert_eq!(
        io_kind(SharedMemory::create(Some(&name), 5000)),
        Some(ErrorKind::AlreadyExists)
    );
    duo.unlink().unwrap();
    assert!(matches!(uno.unlink(), Err(Error::Io(e)) if e.kind() == ErrorKind::NotFound));
    assert_eq!(
        io_kind(SharedMemory::attach(&name)),
        Some(ErrorKind::NotFound)
    );
    assert!(matches!(
        SharedMemory::create(None, 0),
        Err(Error::InvalidOperation(_))
    ));
    assert!(matches!(
        SharedMemory::create(Some("mp_parity\0nul"), 10),
        Err(Error::InvalidOperation(_))
    ));
}

/// `_TestSharedMemory.test_shared_memory_ShareableList_basics` and
/// `..._pickling_dead_object`: an index out of range (get or set) is refused (Python:
/// `IndexError`; here `IndexOutOfRange`, as for a manager's list); a value too large for its slot is refused
/// ("exceeds available storage") and leaves that item and its neighbour as they were; an
/// empty list has length 0, counts 0 and finds nothing; attaching to a list whose block is
/// gone is `FileNotFoundError` (`NotFound`).
#[test]
fn shareable_list_basics() {
    use multiproc::shared_memory::ShareableList;
    multiproc::init();
    let l = ShareableList::create(None, &["howdy".to_string(), "HoWdY".to_string()]).unwrap();
    assert!(matches!(
        l.get(7),
        Err(Error::IndexOutOfRange { index: 7, len: 2 })
    ));
    assert!(matches!(
        l.set(7, &"x".to_string()),
        Err(Error::IndexOutOfRange { index: 7, len: 2 })
    ));
    assert!(matches!(
        l.set(
            0,
            &"far too many bytes for the room this slot was given".repeat(2)
        ),
        Err(Error::InvalidOperation(_))
    ));
    assert_eq!(l.to_vec().unwrap(), ["howdy", "HoWdY"]);
    l.set(0, &"encodés".to_string()).unwrap();
    assert_eq!(l.to_vec().unwrap(), ["encodés", "HoWdY"]);
    l.unlink().unwrap();

    let empty = ShareableList::<String>::create(None, &[]).unwrap();
    assert_eq!(empty.len(), 0);
    assert_eq!(empty.count(&"any".to_string()).unwrap(), 0);
    assert_eq!(empty.index(&String::new()).unwrap(), None);
    let name = empty.name().to_string();
    assert_eq!(ShareableList::<String>::attach(&name).unwrap().len(), 0);
    empty.unlink().unwrap();
    assert!(matches!(
        ShareableList::<String>::attach(&name),
        Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::NotFound
    ));
}

// --- TestStartMethod ----------------------------------------------------------------------------

/// `TestStartMethod.test_context` (`check_context`): a process made by a context starts with
/// the context's method, which is then the child's own default (Python's
/// `BaseProcess._bootstrap` forces it), whatever this process's default; a process made
/// without one inherits this process's default.
#[test]
fn start_method_of_a_context_is_the_childs_default() {
    use multiproc::StartMethod;
    multiproc::init();
    common::allow_fork();
    fn child_method(_: ()) -> StartMethod {
        multiproc::get_start_method()
    }
    for default in [StartMethod::ForkServer, StartMethod::Spawn] {
        multiproc::set_start_method(default).unwrap();
        for method in [
            StartMethod::Fork,
            StartMethod::Spawn,
            StartMethod::ForkServer,
        ] {
            let ctx = multiproc::get_context(method);
            assert_eq!(ctx.get_start_method(), method);
            let got = ctx.spawn(child_method, ()).unwrap().join().unwrap();
            assert_eq!(got, method, "default {default:?}");
        }
        let got = multiproc::spawn(child_method, ()).unwrap().join().unwrap();
        assert_eq!(got, default);
    }
    multiproc::set_start_method(StartMethod::ForkServer).unwrap();
}

// --- timeouts too large to represent ------------------------------------------------------------

/// Python computes deadlines in floats, so a huge timeout (`poll(1e9)`, `get(timeout=1e9)`)
/// only means "wait that long", in practice for ever. Here a `Duration` too large to add to
/// the clock (`Duration::MAX`) means the same on every call that takes one, never a panic:
/// each call below has something ready and returns at once.
#[test]
fn timeouts_too_large_to_represent_wait_for_ever() {
    multiproc::init();
    const FOREVER: Duration = Duration::MAX;
    let (a, b) = multiproc::pipe::<u8>().unwrap();
    a.send(&1).unwrap();
    assert!(b.poll(Some(FOREVER)).unwrap());
    assert_eq!(wait(&[&b], Some(FOREVER)).unwrap(), vec![0]);
    assert_eq!(b.recv().unwrap(), 1);

    let pool = Pool::new(1).unwrap();
    let r = pool.apply_async(sqr, 3);
    assert!(r.wait_timeout(FOREVER));
    assert_eq!(r.get_timeout(FOREVER).unwrap(), 9);
    let mut it = pool.imap(sqr, vec![4]);
    assert_eq!(it.next_timeout(FOREVER).unwrap().unwrap(), 16);

    let mut h = multiproc::spawn(sqr, 5).unwrap();
    assert_eq!(h.join_timeout(FOREVER).unwrap(), Some(25));
    let mut p = Process::new(
        |x: i64| {
            sqr(x);
        },
        6,
    );
    p.start().unwrap();
    assert!(p.join_timeout(FOREVER).unwrap());

    let q = Queue::new().unwrap();
    q.put(7u8).unwrap();
    assert_eq!(q.get_timeout(FOREVER).unwrap(), 7);
    let e = Event::new().unwrap();
    e.set();
    assert!(e.wait_timeout(FOREVER).unwrap());
    assert!(Lock::new().unwrap().acquire_timeout(FOREVER).unwrap());
    assert_eq!(Barrier::new(1).unwrap().wait_timeout(FOREVER).unwrap(), 0);

    let m = multiproc::Manager::start().unwrap();
    let mq = m.queue::<u8>().unwrap();
    mq.put(8).unwrap();
    assert_eq!(mq.get_timeout(FOREVER).unwrap(), 8);
    assert!(m.lock().unwrap().acquire_timeout(FOREVER).unwrap());
}

/// Pool workers as `Pool._repopulate_pool_static` makes them: daemons named after their
/// process identity with "Process" replaced ("PoolWorker-N"), so that the workers of two
/// pools of one process never share a name, and a process made later counts on from them;
/// a manager's server likewise ("SyncManager-N").
#[test]
fn pool_workers_are_named_daemons_unique_in_the_process() {
    multiproc::init();
    fn me(_: u8) -> (String, bool, u32) {
        let c = multiproc::current_process();
        (c.name().to_string(), c.daemon(), c.pid())
    }
    let pools = [Pool::new(2).unwrap(), Pool::new(2).unwrap()];
    let mut names = std::collections::HashMap::new();
    for pool in &pools {
        // Enough tasks that each worker is very likely to run some; every one seen counts.
        for (name, daemon, pid) in pool.map_chunked(me, vec![0u8; 64], 1).unwrap() {
            assert!(daemon, "{name}");
            let number: u32 = name.strip_prefix("PoolWorker-").unwrap().parse().unwrap();
            assert!(names.insert(pid, number).is_none_or(|n| n == number));
        }
    }
    let numbers: std::collections::HashSet<u32> = names.values().copied().collect();
    assert_eq!(
        numbers.len(),
        names.len(),
        "two workers share a name: {names:?}"
    );
    let later = Process::new(
        |x: u8| {
            me(x);
        },
        0,
    );
    let n: u32 = later
        .name()
        .strip_prefix("Process-")
        .unwrap()
        .parse()
        .unwrap();
    assert!(numbers.iter().all(|&w| w < n), "{n} after {numbers:?}");
    // A manager's server process is named the same way ("SyncManager-N", BaseManager.start).
    let m = multiproc::Manager::start().unwrap();
    let pid = m.server_pid().unwrap();
    let server = multiproc::active_children()
        .into_iter()
        .find(|c| c.pid() == pid)
        .unwrap();
    let k: u32 = server
        .name()
        .strip_prefix("SyncManager-")
        .unwrap()
        .parse()
        .unwrap();
    assert!(k > n, "{k} after {n}");
}

/// `_TestPool.test_map_unplicklable`'s counterpart for a process (Python's `start` raises
/// the pickling error under spawn and forkserver): arguments that cannot be encoded make
/// `start` fail with `Codec`, no child is left behind, and the process stays unstarted
/// (`join` is `NotStarted`, a second `start` fails the same way); a result that cannot be
/// encoded is a `Codec` error from `join` (Python's pool: `MaybeEncodingError`).
#[test]
fn process_with_unencodable_arguments_or_result() {
    multiproc::init();
    fn take(_: EvenOnly) {}
    fn give(n: u32) -> EvenOnly {
        EvenOnly(n)
    }
    let before = multiproc::active_children().len();
    let mut p = Process::new(take, EvenOnly(1));
    assert!(matches!(p.start(), Err(Error::Codec(_))));
    assert!(!p.is_alive());
    assert_eq!((p.pid(), p.exitcode()), (None, None));
    assert!(matches!(p.join(), Err(Error::NotStarted)));
    assert!(matches!(p.start(), Err(Error::Codec(_))));
    assert!(matches!(
        multiproc::spawn(take, EvenOnly(3)),
        Err(Error::Codec(_))
    ));
    assert_eq!(multiproc::active_children().len(), before);
    assert!(matches!(
        multiproc::spawn(give, 5).unwrap().join(),
        Err(Error::Codec(_))
    ));
    assert_eq!(multiproc::spawn(give, 4).unwrap().join().unwrap().0, 4);
}

/// Zero-size items (Python's `q.put(None)`, `conn.send(None)`; here `()`, whose encoding
/// is no bytes at all): each still counts as one item in a queue (`qsize`, `full`, a
/// child takes exactly as many as were put), as one message on a pipe (`poll` true until
/// it is taken, then false), in a manager's queue and list and through a pool.
#[test]
fn zero_size_items_count_as_items() {
    multiproc::init();
    let q = Queue::<()>::new().unwrap();
    for _ in 0..3 {
        q.put(()).unwrap();
    }
    assert_eq!((q.qsize(), q.empty()), (3, false));
    fn take_all(q: Queue<()>) -> usize {
        let mut n = 0;
        while q.try_get().is_ok() {
            n += 1;
        }
        n
    }
    assert_eq!(
        multiproc::spawn(take_all, q.clone())
            .unwrap()
            .join()
            .unwrap(),
        3
    );
    assert!(matches!(q.try_get(), Err(Error::Empty)));
    let b = Queue::<()>::bounded(2).unwrap();
    b.put(()).unwrap();
    b.put(()).unwrap();
    assert!(b.full());
    assert!(b.try_put(()).is_err());
    let s = SimpleQueue::<()>::new().unwrap();
    s.put(()).unwrap();
    assert!(!s.empty());
    s.get().unwrap();
    assert!(s.empty());

    let (a, c) = multiproc::pipe::<()>().unwrap();
    a.send(&()).unwrap();
    a.send(&()).unwrap();
    assert!(c.poll(Some(Duration::ZERO)).unwrap());
    c.recv().unwrap();
    assert_eq!(c.recv_bytes_max(0).unwrap(), b"");
    assert!(!c.poll(Some(Duration::ZERO)).unwrap());

    let m = multiproc::Manager::start().unwrap();
    let mq = m.queue::<()>().unwrap();
    mq.put(()).unwrap();
    assert_eq!(mq.qsize().unwrap(), 1);
    mq.get().unwrap();
    let l = m.list(vec![(), ()]).unwrap();
    assert_eq!(l.len().unwrap(), 2);
    let pool = Pool::new(1).unwrap();
    assert_eq!(pool.map(|_: ()| (), vec![(); 5]).unwrap().len(), 5);
}

/// `TestInvalidFamily.test_invalid_family`: a Windows pipe name is no address on Linux
/// (`ValueError`; here `InvalidOperation`) for a listener or a client; a client of an
/// address nobody listens on gets `ConnectionRefusedError` (an `Io` error of that kind),
/// for TCP and for an abstract Unix socket alike.
#[test]
fn listener_and_client_bad_addresses() {
    use multiproc::connection::{Client, Listener};
    use std::io::ErrorKind;
    assert!(matches!(
        Listener::bind(r"\\.\test", None),
        Err(Error::InvalidOperation(_))
    ));
    assert!(matches!(
        Client::connect::<u8>(r"\\.\test", None),
        Err(Error::InvalidOperation(_))
    ));
    // A port just freed: nobody listens there.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let nobody = format!("@mp-parity-nobody-{}", std::process::id());
    for address in [format!("127.0.0.1:{port}"), nobody] {
        match Client::connect::<u8>(address.as_str(), None) {
            Err(Error::Io(e)) => assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{address}"),
            other => panic!("{address}: {other:?}"),
        }
    }
}

// --- batch 5: gaps found by listing every test of CPython 3.11's suite ---------------------------

/// A child that says it runs, then waits to be told to stop, and exits 0.
fn run_until_then_ok(ev: (Event, Event)) {
    run_until(ev);
}

/// The signals process `pid` ignores (the `SigIgn` mask of /proc/PID/status).
fn sig_ignored(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .map(|m| u64::from_str_radix(m.trim(), 16).unwrap())
        .unwrap()
}

/// `_TestProcess.test_forkserver_sigint` and `test_forkserver_sigkill` (bpo-31308): when
/// the fork server is sent SIGINT or SIGKILL, a process it already started runs on and
/// ends with 0, and a process started afterwards runs. SIGINT is ignored by the server,
/// as by CPython's (the same server starts the next process); after SIGKILL it is
/// started again.
#[test]
fn fork_server_signalled_does_not_stop_processes() {
    multiproc::init();
    for sig in [libc::SIGINT, libc::SIGKILL] {
        let (started, stop) = events();
        let mut p = Process::new(run_until_then_ok, (started.clone(), stop.clone()))
            .with_start_method(multiproc::StartMethod::ForkServer);
        p.start().unwrap();
        started.wait().unwrap();
        let server = multiproc::start::fork_server_pid().expect("a fork server runs");
        let pid = rustix::process::Pid::from_raw(server as i32).unwrap();
        let signal = rustix::process::Signal::from_named_raw(sig).unwrap();
        rustix::process::kill_process(pid, signal).unwrap();
        if sig == libc::SIGKILL {
            // Dead (a zombie until the next start reaps it) before the next start.
            assert!(common::eventually(Duration::from_secs(10), || {
                !matches!(common::stat(server), Some((s, _)) if s != 'Z')
            }));
        }
        let (started2, stop2) = events();
        let mut p2 = Process::new(run_until_then_ok, (started2.clone(), stop2.clone()))
            .with_start_method(multiproc::StartMethod::ForkServer);
        p2.start().unwrap();
        if sig == libc::SIGINT {
            // Ignored, as by CPython's fork server: the same server started p2, and p2
            // itself does not ignore SIGINT (a Ctrl-C still reaches the user's processes).
            assert_eq!(multiproc::start::fork_server_pid(), Some(server));
            assert!(started2.wait_timeout(Duration::from_secs(30)).unwrap());
            let p2_pid = p2.pid().unwrap();
            assert_eq!(sig_ignored(server) & (1 << (libc::SIGINT - 1)), 1 << 1);
            assert_eq!(sig_ignored(p2_pid) & (1 << (libc::SIGINT - 1)), 0);
        }
        stop2.set();
        p2.join().unwrap();
        assert!(started2.is_set());
        assert_eq!(p2.exitcode(), Some(0), "signal {sig}");
        stop.set();
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0), "signal {sig}");
    }
}

/// `_TestLock.test_lock_context`: `with lock:` is a guard; the lock is free again when
/// the block ends, also when it ends by an exception (here a panic that unwinds).
#[test]
fn lock_guard_is_a_with_block() {
    multiproc::init();
    let lock = Lock::new().unwrap();
    {
        let _held = lock.lock().unwrap();
        assert!(!lock.try_acquire().unwrap());
    }
    assert!(lock.try_acquire().unwrap());
    lock.release().unwrap();
    let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _held = lock.lock().unwrap();
        panic!("raised inside the block");
    }));
    assert!(unwound.is_err());
    assert!(lock.try_acquire().unwrap());
    lock.release().unwrap();
    let r = RLock::new().unwrap();
    {
        let _a = r.lock().unwrap();
        let _b = r.lock().unwrap();
    }
    assert!(!r.is_locked());
}

/// `_TestArray.test_getobj_getlock_obj`: an array made with a given lock uses that lock
/// (`lock3 == lock`), one made without gets a lock of its own; `lock=False` is a
/// [`RawArray`], which has no lock at all (no `get_lock` method to call).
#[test]
fn array_uses_the_lock_it_is_given() {
    multiproc::init();
    let items: Vec<i32> = (0..10).collect();
    let own = Array::from_slice(&items).unwrap();
    let lock = Lock::new().unwrap();
    let shared = Array::with_lock(&items, lock.clone()).unwrap();
    let guard = lock.lock().unwrap();
    assert!(!shared.get_lock().try_acquire().unwrap());
    assert!(own.get_lock().try_acquire().unwrap());
    own.get_lock().release().unwrap();
    drop(guard);
    {
        let _g = shared.lock().unwrap();
        assert!(!lock.try_acquire().unwrap());
    }
    assert!(lock.try_acquire().unwrap());
    lock.release().unwrap();
    let raw = RawArray::from_slice(&items).unwrap();
    assert_eq!(raw.to_vec(), shared.to_vec());
}

/// `_TestPool.test_make_pool`: `Pool(3)` has three workers. (`Pool(0)` is the CPU count
/// here, `ValueError` in Python: see differences.md.) And
/// `_TestPoolWorkerLifetime.test_pool_maxtasksperchild_invalid`: `maxtasksperchild=0` is
/// refused (`ValueError`; here `InvalidOperation`).
#[test]
fn pool_sizes_and_invalid_maxtasksperchild() {
    multiproc::init();
    let pool = Pool::new(3).unwrap();
    assert_eq!(pool.processes(), 3);
    pool.close();
    pool.join().unwrap();
    assert_eq!(Pool::new(0).unwrap().processes(), multiproc::cpu_count());
    assert!(matches!(
        Pool::builder().processes(1).maxtasksperchild(0).build(),
        Err(Error::InvalidOperation(_))
    ));
}

/// `_TestConnection.test_missing_fd_transfer`: `recv_handle` on a message that came
/// without a descriptor fails (`RuntimeError` in Python, `Error::Codec` here) instead of
/// making one up, and the connection goes on working.
#[test]
fn recv_handle_of_a_message_without_a_descriptor_fails() {
    multiproc::init();
    fn send_data_without_fd(conn: multiproc::Connection<u64>) {
        conn.send_bytes(b"\x00\x00\x00\x00").unwrap();
        conn.send(&7).unwrap();
    }
    let (conn, child_conn) = multiproc::pipe::<u64>().unwrap();
    let h = multiproc::spawn(send_data_without_fd, child_conn).unwrap();
    assert!(matches!(conn.recv_handle(), Err(Error::Codec(_))));
    assert!(matches!(conn.recv_handle(), Err(Error::Codec(_))));
    h.join().unwrap();
    let (a, b) = multiproc::pipe::<u64>().unwrap();
    a.send(&9).unwrap();
    match b.recv_handle() {
        Err(e @ Error::Codec(_)) => {
            let mut chain = Vec::new();
            let mut cause = std::error::Error::source(&e);
            while let Some(c) = cause {
                chain.push(c.to_string());
                cause = c.source();
            }
            assert!(
                chain
                    .iter()
                    .any(|c| c.contains("carries no file descriptor")),
                "the error says what is missing: {e} ({chain:?})"
            );
        }
        other => panic!("expected a Codec error, got {other:?}"),
    }
    a.send(&10).unwrap();
    assert_eq!(b.recv().unwrap(), 10);
}

/// `_TestListenerClient.test_issue14725`: a client that connected, sent and hung up before
/// the listener accepted it is still accepted, and what it sent is received.
#[test]
fn listener_accepts_a_client_that_already_left() {
    multiproc::init();
    use multiproc::connection::{Client, Listener};
    fn say_hello_and_go(address: String) {
        let c = Client::connect::<String>(address.as_str(), None).unwrap();
        c.send(&"hello".to_string()).unwrap();
    }
    let l = Listener::bind("127.0.0.1:0", None).unwrap();
    // The child has connected, sent and exited before `accept`.
    multiproc::spawn(say_hello_and_go, l.address().to_string())
        .unwrap()
        .join()
        .unwrap();
    let conn = l.accept::<String>().unwrap();
    assert_eq!(conn.recv().unwrap(), "hello");
    assert!(matches!(conn.recv(), Err(Error::Eof)));
}

/// What `_TestPicklingConnections.test_pickling`'s listener child sends back: a
/// connection it accepted, or a plain socket it accepted.
#[derive(serde::Serialize, serde::Deserialize)]
enum Accepted {
    Address(String),
    Conn(multiproc::Connection<String>),
    Socket(multiproc::connection::Fd),
}

/// `test_pickling`'s listener: for each family, binds, says where, accepts one client and
/// sends the accepted connection to the parent; then the same with a plain TCP socket.
fn pickling_listener((conn, dir): (multiproc::Connection<Accepted>, String)) {
    use multiproc::connection::Listener;
    let unix = format!("{dir}/pickling.sock");
    for address in ["127.0.0.1:0", unix.as_str()] {
        let l = Listener::bind(address, None).unwrap();
        conn.send(&Accepted::Address(l.address().to_string()))
            .unwrap();
        let new_conn = l.accept::<String>().unwrap();
        conn.send(&Accepted::Conn(new_conn)).unwrap();
    }
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    conn.send(&Accepted::Address(l.local_addr().unwrap().to_string()))
        .unwrap();
    let (s, _) = l.accept().unwrap();
    conn.send(&Accepted::Socket(multiproc::connection::Fd::new(s.into())))
        .unwrap();
}

/// `test_pickling`'s remote: connects to each address it is given and sends the message
/// in capitals; the last one over a plain socket.
fn pickling_remote(conn: multiproc::Connection<Option<(String, String)>>) {
    use std::io::Write;
    while let Some((address, msg)) = conn.recv().unwrap() {
        let c = multiproc::connection::Client::connect::<String>(address.as_str(), None).unwrap();
        c.send(&msg.to_uppercase()).unwrap();
    }
    let (address, msg) = conn.recv().unwrap().unwrap();
    let mut s = std::net::TcpStream::connect(address.as_str()).unwrap();
    s.write_all(msg.to_uppercase().as_bytes()).unwrap();
}

/// `_TestPicklingConnections.test_pickling`: connections a child accepted from a listener
/// (TCP and Unix) are sent to the parent through a pipe and read there; so is a plain
/// accepted socket.
#[test]
fn accepted_connections_travel_through_pipes() {
    multiproc::init();
    use std::io::Read;
    let dir = std::env::temp_dir().join(format!("mp-pickling-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (lconn, lconn0) = multiproc::pipe::<Accepted>().unwrap();
    let lp = multiproc::spawn(
        pickling_listener,
        (lconn0, dir.to_string_lossy().into_owned()),
    )
    .unwrap();
    let (rconn, rconn0) = multiproc::pipe::<Option<(String, String)>>().unwrap();
    let rp = multiproc::spawn(pickling_remote, rconn0).unwrap();
    let address = |a| match a {
        Accepted::Address(a) => a,
        _ => panic!("expected an address"),
    };
    for fam in ["AF_INET", "AF_UNIX"] {
        let msg = format!("This connection uses family {fam}");
        rconn
            .send(&Some((address(lconn.recv().unwrap()), msg.clone())))
            .unwrap();
        let Accepted::Conn(new_conn) = lconn.recv().unwrap() else {
            panic!("expected a connection")
        };
        assert_eq!(new_conn.recv().unwrap(), msg.to_uppercase());
    }
    rconn.send(&None).unwrap();
    let msg = "This connection uses a normal socket".to_string();
    rconn
        .send(&Some((address(lconn.recv().unwrap()), msg.clone())))
        .unwrap();
    let Accepted::Socket(s) = lconn.recv().unwrap() else {
        panic!("expected a socket")
    };
    let mut got = String::new();
    std::fs::File::from(s.into_inner())
        .read_to_string(&mut got)
        .unwrap();
    assert_eq!(got, msg.to_uppercase());
    lp.join().unwrap();
    rp.join().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A child that receives a shared memory block and writes `b"howdy"` at its start, or
/// says why it could not receive it (the kind of an `Io` error).
fn receive_block_and_write(
    conn: multiproc::Connection<multiproc::shared_memory::SharedMemory>,
) -> Result<(), String> {
    let shm = conn.recv().map_err(|e| match e {
        Error::Io(e) => format!("{:?}", e.kind()),
        e => format!("{e:?}"),
    })?;
    shm.write_at(0, b"howdy").unwrap();
    Ok(())
}

/// A child that receives a shareable list and sets its item 1 to 99, or says why it could
/// not receive it.
fn receive_list_and_set(
    conn: multiproc::Connection<multiproc::shared_memory::ShareableList<u32>>,
) -> Result<(), String> {
    let sl = conn.recv().map_err(|e| match e {
        Error::Io(e) => format!("{:?}", e.kind()),
        e => format!("{e:?}"),
    })?;
    sl.set(1, &99).unwrap();
    Ok(())
}

/// `_TestSharedMemory.test_shared_memory_pickle_unpickle`,
/// `test_shared_memory_across_processes` and `test_shared_memory_ShareableList_pickling`:
/// a block and a shareable list sent to another process are the same memory there (its
/// writes are seen here); `..._pickle_unpickle_dead_object` and
/// `..._ShareableList_pickling_dead_object`: once unlinked, receiving one fails with
/// `FileNotFoundError` (an `Io` error of kind `NotFound`), in the receiver only.
/// `TestResourceTracker.test_too_long_name_resource`: a name too long for the tracker is
/// `ValueError` (`InvalidOperation`) at creation.
#[test]
fn shared_memory_sent_to_another_process() {
    use multiproc::shared_memory::{ShareableList, SharedMemory};
    multiproc::init();
    let shm = SharedMemory::create(None, 64).unwrap();
    let (a, b) = multiproc::pipe().unwrap();
    let h = multiproc::spawn(receive_block_and_write, b).unwrap();
    a.send(&shm).unwrap();
    h.join().unwrap().unwrap();
    assert_eq!(&shm.to_vec().unwrap()[..5], b"howdy");
    shm.unlink().unwrap();
    let (a, b) = multiproc::pipe().unwrap();
    let h = multiproc::spawn(receive_block_and_write, b).unwrap();
    a.send(&shm).unwrap();
    assert_eq!(h.join().unwrap(), Err("NotFound".to_string()));

    let sl = ShareableList::create(None, &[1u32, 2, 3]).unwrap();
    let (a, b) = multiproc::pipe().unwrap();
    let h = multiproc::spawn(receive_list_and_set, b).unwrap();
    a.send(&sl).unwrap();
    h.join().unwrap().unwrap();
    assert_eq!(sl.to_vec().unwrap(), vec![1, 99, 3]);
    sl.unlink().unwrap();
    let (a, b) = multiproc::pipe().unwrap();
    let h = multiproc::spawn(receive_list_and_set, b).unwrap();
    a.send(&sl).unwrap();
    assert_eq!(h.join().unwrap(), Err("NotFound".to_string()));

    let too_long = "a".repeat(512 - "shared_memory".len());
    assert!(matches!(
        SharedMemory::create(Some(&too_long), 8),
        Err(Error::InvalidOperation(_))
    ));
}

/// `TestResourceTracker.test_resource_tracker_sigint` and `..._sigterm`: the tracker
/// ignores SIGINT and SIGTERM (a Ctrl-C aimed at the program must not stop the process
/// that cleans up after it), so after either it is the same process and still tracks:
/// a block created afterwards by a child that then exits without unlinking is removed.
/// (`..._sigkill`, a tracker replaced after SIGKILL, is `killed_tracker_is_replaced_and_
/// keeps_every_name` in tests/shared_memory.rs.)
#[test]
fn tracker_ignores_sigint_and_sigterm() {
    use multiproc::shared_memory::SharedMemory;
    multiproc::init();
    fn create_and_leave(name: String) {
        std::mem::forget(SharedMemory::create(Some(&name), 16).unwrap());
    }
    let first = SharedMemory::create(None, 8).unwrap();
    let tracker = multiproc::shared_memory::tracker_pid().expect("a tracker runs");
    let ignored = sig_ignored(tracker);
    for sig in [libc::SIGINT, libc::SIGTERM] {
        assert_ne!(ignored & (1 << (sig - 1)), 0, "signal {sig} not ignored");
        let pid = rustix::process::Pid::from_raw(tracker as i32).unwrap();
        let signal = rustix::process::Signal::from_named_raw(sig).unwrap();
        rustix::process::kill_process(pid, signal).unwrap();
    }
    let name = format!("mp_parity_tracker_sig_{}", std::process::id());
    multiproc::spawn(create_and_leave, name.clone())
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(multiproc::shared_memory::tracker_pid(), Some(tracker));
    assert!(common::eventually(Duration::from_secs(10), || {
        !std::path::Path::new(&format!("/dev/shm/{name}")).exists()
    }));
    first.unlink().unwrap();
}

/// `TestWait._child_test_wait_socket`: connects to `address` and sends the lines `0\n` to
/// `9\n`, one write each.
fn send_lines_on_a_socket(address: String) {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(address.as_str()).unwrap();
    for i in 0..10 {
        s.write_all(format!("{i}\n").as_bytes()).unwrap();
    }
}

/// `TestWait.test_wait_socket` (and `test_wait_socket_slow`, whose sender pauses between
/// writes): `wait` over plain sockets (their descriptors) reports each one that has data
/// or has been closed, until every child's lines have arrived whole and every socket has
/// ended.
#[test]
fn wait_on_plain_sockets() {
    multiproc::init();
    use std::io::Read;
    use std::os::fd::AsFd;
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = l.local_addr().unwrap().to_string();
    let kids: Vec<_> = (0..4)
        .map(|_| multiproc::spawn(send_lines_on_a_socket, address.clone()).unwrap())
        .collect();
    let mut readers: Vec<(std::net::TcpStream, Vec<u8>)> = (0..4)
        .map(|_| (l.accept().unwrap().0, Vec::new()))
        .collect();
    drop(l);
    let mut done = Vec::new();
    while !readers.is_empty() {
        let fds: Vec<_> = readers.iter().map(|(r, _)| r.as_fd()).collect();
        let objs: Vec<&dyn multiproc::connection::Waitable> = fds
            .iter()
            .map(|f| f as &dyn multiproc::connection::Waitable)
            .collect();
        let ready = wait(&objs, None).unwrap();
        assert!(!ready.is_empty());
        drop(objs);
        drop(fds);
        for i in ready.into_iter().rev() {
            let mut buf = [0u8; 32];
            let n = readers[i].0.read(&mut buf).unwrap();
            if n == 0 {
                done.push(readers.remove(i).1);
            } else {
                readers[i].1.extend_from_slice(&buf[..n]);
            }
        }
    }
    let expected: String = (0..10).map(|i| format!("{i}\n")).collect();
    assert_eq!(done.len(), 4);
    for got in done {
        assert_eq!(String::from_utf8(got).unwrap(), expected);
    }
    for k in kids {
        k.join().unwrap();
    }
}

/// `TestStartMethod.test_nested_startmethod` (gh-108520): a child passes the queue it was
/// given on to a child of its own; both put into it. And `test_get_all`: every start
/// method is listed, the default first; `test_set_get` (each method set is the one got)
/// is `default_method_is_forkserver_and_settable` in tests/process.rs.
#[test]
fn nested_start_and_all_start_methods() {
    multiproc::init();
    fn put_one(q: Queue<u32>) {
        q.put(1).unwrap();
    }
    fn put_two_and_nest_once(q: Queue<u32>) {
        q.put(2).unwrap();
        let mut p = Process::new(put_one, q);
        p.start().unwrap();
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
    }
    let q = Queue::new().unwrap();
    let mut p = Process::new(put_two_and_nest_once, q.clone());
    p.start().unwrap();
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(0));
    let mut got = Vec::new();
    while !q.empty() {
        got.push(q.get().unwrap());
    }
    got.sort();
    assert_eq!(got, vec![1, 2]);

    use multiproc::StartMethod;
    let all = multiproc::get_all_start_methods();
    assert_eq!(all[0], multiproc::get_start_method());
    let mut sorted = all.clone();
    sorted.sort_by_key(|m| format!("{m:?}"));
    assert_eq!(
        sorted,
        vec![
            StartMethod::Fork,
            StartMethod::ForkServer,
            StartMethod::Spawn
        ]
    );
}

/// `_TestSubclassingProcess.test_stderr_flush` (issue #13812): a child whose standard
/// error is a file and whose target fails (here panics) has the whole report in that
/// file when it has ended: the message, and the file and line it came from.
#[test]
fn child_error_report_is_flushed_to_its_stderr_file() {
    multiproc::init();
    fn divide_by_zero(_: ()) {
        let zero = std::hint::black_box(0u32);
        let _ = std::hint::black_box(1 / zero); // MARKER
    }
    let path = std::env::temp_dir().join(format!("mp-stderr-flush-{}", std::process::id()));
    let file = std::fs::File::create(&path).unwrap();
    let mut p = multiproc::Builder::new()
        .stderr(file)
        .process(divide_by_zero, ());
    p.start().unwrap();
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(1));
    let err = std::fs::read_to_string(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert!(err.contains("attempt to divide by zero"), "{err}");
    assert!(err.contains("cpython_parity.rs"), "{err}");
}

/// `TestStdinBadfiledescriptor.test_queue_in_process` and `test_pool_in_process`: a child
/// and a pool worker have `/dev/null` as standard input (Python closes `sys.stdin` in the
/// child and opens `os.devnull`): reading it ends at once, and the child goes on to use a
/// queue and the pool works.
#[test]
fn children_read_an_empty_stdin() {
    multiproc::init();
    fn stdin_then_put(q: Queue<usize>) {
        let mut s = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut s).unwrap();
        q.put(s.len()).unwrap();
        q.put(7).unwrap();
    }
    fn stdin_len(_: ()) -> usize {
        let mut s = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut s).unwrap();
        s.len()
    }
    let q = Queue::new().unwrap();
    let mut p = Process::new(stdin_then_put, q.clone());
    p.start().unwrap();
    p.join().unwrap();
    assert_eq!((q.get().unwrap(), q.get().unwrap()), (0, 7));
    let pool = Pool::new(1).unwrap();
    assert_eq!(pool.apply(stdin_len, ()).unwrap(), 0);
    assert_eq!(pool.map(sqr, [2, 3]).unwrap(), vec![4, 9]);
}

/// `_TestContainers.test_list_iter`: iterating a list proxy (the live form, which reads
/// one value per step as Python does) gives every value, an exhausted iterator stays
/// exhausted, and a value written after the iteration began is seen. (`iter()` is a
/// snapshot: see differences.md.)
#[test]
fn manager_list_iteration() {
    multiproc::init();
    let m = multiproc::Manager::start().unwrap();
    let a = m.list((0..10).collect::<Vec<i32>>()).unwrap();
    let mut it = a.iter_live();
    let all: Vec<i32> = it.by_ref().map(Result::unwrap).collect();
    assert_eq!(all, (0..10).collect::<Vec<_>>());
    assert!(it.next().is_none());
    let mut it = a.iter_live();
    let snapshot = a.iter().unwrap();
    a.set(0, 100).unwrap();
    assert_eq!(it.next().unwrap().unwrap(), 100);
    assert_eq!(snapshot.collect::<Vec<_>>(), (0..10).collect::<Vec<_>>());
}

/// `_TestContainers.test_dict_iter`: iterating a dict proxy gives its keys in insertion
/// order, and an exhausted iterator stays exhausted. Python's iterator then raises
/// `RuntimeError` once the dict is cleared; this one ends instead (differences.md).
#[test]
fn manager_dict_iteration() {
    multiproc::init();
    let m = multiproc::Manager::start().unwrap();
    let d = m.dict::<u32, char>().unwrap();
    let indices: Vec<u32> = (65..70).collect();
    for &i in &indices {
        d.insert(i, char::from_u32(i).unwrap()).unwrap();
    }
    let mut it = d.iter_live();
    let keys: Vec<u32> = it.by_ref().map(|e| e.unwrap().0).collect();
    assert_eq!(keys, indices);
    assert!(it.next().is_none());
    let mut it = d.iter_live();
    d.clear().unwrap();
    assert!(it.next().is_none());
}

/// Timeouts at both ends, on every call that takes one (Python: `timeout=0` only looks;
/// a huge float waits for ever; see differences.md for negative ones). `Duration::ZERO`
/// answers at once, "not yet" where the object is not ready and the result where it is;
/// `Duration::MAX` on a ready object returns at once (nothing overflows).
#[test]
fn zero_and_huge_timeouts_on_every_object() {
    multiproc::init();
    let (zero, huge) = (Duration::ZERO, Duration::MAX);
    let lock = Lock::new().unwrap();
    assert!(lock.acquire_timeout(zero).unwrap());
    assert!(!lock.acquire_timeout(zero).unwrap());
    lock.release().unwrap();
    assert!(lock.acquire_timeout(huge).unwrap());
    lock.release().unwrap();
    let r = RLock::new().unwrap();
    assert!(r.acquire_timeout(zero).unwrap());
    assert!(r.acquire_timeout(huge).unwrap());
    r.release().unwrap();
    r.release().unwrap();
    let s = Semaphore::new(1).unwrap();
    assert!(s.acquire_timeout(zero).unwrap());
    assert!(!s.acquire_timeout(zero).unwrap());
    s.release().unwrap();
    assert!(s.acquire_timeout(huge).unwrap());
    let bs = BoundedSemaphore::new(1).unwrap();
    assert!(bs.acquire_timeout(huge).unwrap());
    assert!(!bs.acquire_timeout(zero).unwrap());
    let e = Event::new().unwrap();
    assert!(!e.wait_timeout(zero).unwrap());
    e.set();
    assert!(e.wait_timeout(zero).unwrap() && e.wait_timeout(huge).unwrap());
    let c = Condition::new().unwrap();
    c.acquire().unwrap();
    assert!(!c.wait_timeout(zero).unwrap());
    assert!(!c.wait_for(|| false, Some(zero)).unwrap());
    assert!(c.wait_for(|| true, Some(zero)).unwrap());
    assert!(c.wait_for(|| true, Some(huge)).unwrap());
    c.release().unwrap();
    let b = Barrier::new(1).unwrap();
    assert_eq!(b.wait_timeout(huge).unwrap(), 0);

    let q = Queue::bounded(1).unwrap();
    assert!(matches!(q.get_timeout(zero), Err(Error::Empty)));
    q.put_timeout(1u32, zero).unwrap();
    assert!(matches!(q.put_timeout(2, zero), Err(Error::Full)));
    assert_eq!(q.get_timeout(zero).unwrap(), 1);
    q.put_timeout(3, huge).unwrap();
    assert_eq!(q.get_timeout(huge).unwrap(), 3);
    let jq = JoinableQueue::new().unwrap();
    assert!(matches!(jq.get_timeout(zero), Err(Error::Empty)));
    jq.put(4u32).unwrap();
    assert_eq!(jq.get_timeout(huge).unwrap(), 4);
    jq.task_done().unwrap();

    let (a, bconn) = multiproc::pipe::<u8>().unwrap();
    assert!(!bconn.poll(Some(zero)).unwrap());
    a.send(&5).unwrap();
    assert!(bconn.poll(Some(zero)).unwrap() && bconn.poll(Some(huge)).unwrap());
    assert!(wait(&[&bconn], Some(zero)).unwrap() == vec![0]);
    assert!(wait(&[&bconn], Some(huge)).unwrap() == vec![0]);

    let (started, stop) = events();
    let mut p = Process::new(run_until, (started.clone(), stop.clone()));
    p.start().unwrap();
    started.wait().unwrap();
    assert!(!p.join_timeout(zero).unwrap());
    stop.set();
    assert!(p.join_timeout(huge).unwrap());
    assert!(p.join_timeout(zero).unwrap());

    let pool = Pool::new(1).unwrap();
    let gate = Event::new().unwrap();
    fn wait_gate(gate: Event) -> u8 {
        gate.wait().unwrap();
        6
    }
    let pending = pool.apply_async(wait_gate, gate.clone());
    assert!(matches!(pending.get_timeout(zero), Err(Error::Timeout)));
    let mut it = pool.imap(sqr, [3]);
    assert!(matches!(it.next_timeout(zero), Some(Err(Error::Timeout))));
    gate.set();
    assert_eq!(pending.get_timeout(huge).unwrap(), 6);
    assert_eq!(pending.get_timeout(zero).unwrap(), 6);
    assert_eq!(it.next_timeout(huge).unwrap().unwrap(), 9);
    assert!(it.next_timeout(huge).is_none());

    // The same through a manager's proxies (`TestSyncManagerTypes`' objects).
    let m = multiproc::Manager::start().unwrap();
    let q = m.queue::<u32>().unwrap();
    assert!(matches!(q.get_timeout(zero), Err(Error::Empty)));
    q.put_timeout(1, huge).unwrap();
    assert_eq!(q.get_timeout(huge).unwrap(), 1);
    let l = m.lock().unwrap();
    assert!(l.acquire_timeout(huge).unwrap());
    assert!(!l.acquire_timeout(zero).unwrap());
    let e = m.event().unwrap();
    assert!(!e.wait_timeout(zero).unwrap());
    e.set().unwrap();
    assert!(e.wait_timeout(huge).unwrap());
    let c = m.condition().unwrap();
    assert!(c.acquire_timeout(huge).unwrap());
    assert!(!c.wait_timeout(zero).unwrap());
    assert!(!c.wait_for(|| false, Some(zero)).unwrap());
    assert!(c.wait_for(|| true, Some(huge)).unwrap());
    c.release().unwrap();
    assert_eq!(m.barrier(1).unwrap().wait_timeout(huge).unwrap(), 0);
    assert!(matches!(
        m.barrier(2).unwrap().wait_timeout(zero),
        Err(Error::BrokenBarrier)
    ));
    let s = m.semaphore(1).unwrap();
    assert!(s.acquire_timeout(huge).unwrap());
    assert!(!s.acquire_timeout(zero).unwrap());
    assert!(m.rlock().unwrap().acquire_timeout(huge).unwrap());
    let jq = m.joinable_queue::<u32>().unwrap();
    assert!(jq.join_timeout(zero).unwrap() && jq.join_timeout(huge).unwrap());
    jq.put(1).unwrap();
    assert!(!jq.join_timeout(zero).unwrap());
}

/// `_TestLogging.test_level` (and `test_enable_logging`): the level set in the parent
/// ([`log_to_stderr`](multiproc::log_to_stderr), Python's `logger.setLevel`) is the one a
/// child started afterwards has, and a new level reaches the next child, under the fork
/// server and spawn alike.
#[test]
fn log_level_reaches_children() {
    use multiproc::log::Level;
    multiproc::init();
    fn child_level(_: ()) -> Option<String> {
        multiproc::log::level().map(|l| l.to_string())
    }
    for method in [
        multiproc::StartMethod::ForkServer,
        multiproc::StartMethod::Spawn,
    ] {
        for level in [Level::Warning, Level::Error] {
            multiproc::log_to_stderr(level);
            assert_eq!(multiproc::log::level(), Some(level));
            let got = multiproc::Builder::new()
                .start_method(method)
                .spawn(child_level, ())
                .unwrap()
                .join()
                .unwrap();
            assert_eq!(got, Some(level.to_string()), "{method:?}");
        }
    }
}

/// `_TestConnection.test_sendbytes`: Python's `send_bytes(msg, offset, size)` is a
/// sub-slice here; every part arrives as sent, an empty part as an empty message. (The
/// `ValueError`s for an offset or size outside the buffer have no counterpart: a slice
/// outside the buffer cannot be made.)
#[test]
fn send_bytes_parts_of_a_buffer() {
    multiproc::init();
    let msg = b"abcdefghijklmnopqrstuvwxyz";
    let (a, b) = multiproc::pipe::<()>().unwrap();
    for part in [
        &msg[..],
        &msg[5..],
        &msg[7..7 + 8],
        &msg[26..],
        &msg[26..26],
    ] {
        a.send_bytes(part).unwrap();
        assert_eq!(b.recv_bytes().unwrap(), part);
    }
}

/// `TestSyncManagerTypes._test_queue` on a joinable queue, and `_test_list` and
/// `_test_dict`, in one daemon child (a failed assertion panics: exit code 1).
fn sync_containers_worker(
    (q, l, d): (
        multiproc::manager::JoinableQueueProxy<u32>,
        multiproc::manager::ListProxy<u32>,
        multiproc::manager::DictProxy<String, u32>,
    ),
) {
    assert_eq!(q.qsize().unwrap(), 2);
    assert!(q.full().unwrap());
    assert!(!q.empty().unwrap());
    assert_eq!(q.get().unwrap(), 5);
    assert!(!q.empty().unwrap());
    assert_eq!(q.get().unwrap(), 6);
    assert!(q.empty().unwrap());
    q.task_done().unwrap();
    q.task_done().unwrap();

    assert_eq!(l.get(0).unwrap(), 5);
    assert_eq!(l.count(&5).unwrap(), 1);
    assert_eq!(l.index(&5).unwrap(), 0);
    l.sort().unwrap();
    l.reverse().unwrap();
    assert_eq!(l.iter_live().count(), 1);
    assert_eq!(l.len().unwrap(), 1);
    assert_eq!(l.remove(0).unwrap(), 5);

    let key = "foo".to_string();
    assert_eq!(d.len().unwrap(), 1);
    assert_eq!(d.get(&key).unwrap(), Some(5));
    assert_eq!(d.items().unwrap(), vec![(key.clone(), 5)]);
    assert_eq!(d.keys().unwrap(), vec![key.clone()]);
    assert_eq!(d.values().unwrap(), vec![5]);
    assert_eq!(
        d.to_map().unwrap(),
        [(key.clone(), 5)].into_iter().collect()
    );
    assert_eq!(d.popitem().unwrap(), Some((key, 5)));
}

/// `TestSyncManagerTypes.test_joinable_queue`, `test_list` and `test_dict`: a manager's
/// joinable queue of two (`manager.JoinableQueue(2)`), a list and a dict, worked on by a
/// daemon child that exits with 0; the parent then sees the queue's tasks done and the
/// list and the dict emptied. (`test_pool`: a manager has no `Pool`; see differences.md.)
#[test]
fn manager_joinable_queue_list_and_dict_in_a_child() {
    multiproc::init();
    let m = multiproc::Manager::start().unwrap();
    let q = m.bounded_joinable_queue::<u32>(2).unwrap();
    q.put(5).unwrap();
    q.put(6).unwrap();
    let l = m.list(vec![5u32]).unwrap();
    let d = m.dict::<String, u32>().unwrap();
    d.insert("foo".to_string(), 5).unwrap();
    let mut p =
        Process::new(sync_containers_worker, (q.clone(), l.clone(), d.clone())).with_daemon(true);
    p.start().unwrap();
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(0));
    assert!(q.join_timeout(Duration::ZERO).unwrap());
    assert!(q.empty().unwrap());
    assert!(l.is_empty().unwrap());
    assert_eq!(l.len().unwrap(), 0);
    assert!(d.is_empty().unwrap());
    assert_eq!(d.len().unwrap(), 0);
}

/// `_TestCondition`'s conditions use Python's default lock, an `RLock`, and `wait` follows
/// `threading.Condition`'s contract for it (`_release_save` / `_acquire_restore`): a
/// waiter that holds the lock twice releases it completely while it waits, so another
/// process can take it and notify, and holds it twice again afterwards (two releases
/// succeed, a third raises).
#[test]
fn condition_wait_releases_a_recursive_rlock_completely() {
    multiproc::init();
    fn take_and_notify(c: Condition) {
        c.acquire().unwrap(); // only possible while the waiter waits
        c.notify().unwrap();
        c.release().unwrap();
    }
    let c = Condition::new().unwrap();
    assert!(matches!(c.lock(), multiproc::CondLock::RLock(_)));
    c.acquire().unwrap();
    c.acquire().unwrap();
    let h = multiproc::spawn(take_and_notify, c.clone()).unwrap();
    // Notified by the child; a waiter that kept one level would time out instead.
    assert!(c.wait_timeout(Duration::from_secs(60)).unwrap());
    h.join().unwrap();
    c.release().unwrap();
    c.release().unwrap();
    assert!(matches!(c.release(), Err(Error::InvalidOperation(_))));
}

/// A pool initializer that records its worker's pid and fails in the third worker to
/// start (`TestPoolNotLeakOnFailure`'s `FailingForkProcess`, which fails its third start).
fn record_pid_fail_third((starts, pids): (Value<u32>, Array<u32>)) {
    let n = {
        let mut g = starts.lock().unwrap();
        *g += 1;
        *g
    };
    if (n as usize) <= pids.len() {
        pids.set(n as usize - 1, std::process::id());
    }
    if n == 3 {
        panic!("Manually induced OSError");
    }
}

/// `TestPoolNotLeakOnFailure.test_release_unused_processes` (issue #19675): when a pool
/// of five cannot be made because one of its workers fails to start, creating it raises
/// (here `BrokenPool`, with the failure as its cause), and none of the workers that did
/// start is left running, or unreaped.
#[test]
fn a_pool_that_fails_to_start_leaves_no_worker_behind() {
    multiproc::init();
    let starts = Value::new(0u32).unwrap();
    let pids = Array::<u32>::new(16).unwrap();
    let built = Pool::builder()
        .processes(5)
        .initializer(record_pid_fail_third, (starts.clone(), pids.clone()))
        .build();
    match built {
        Err(Error::BrokenPool { cause, .. }) => assert!(
            matches!(&*cause, Error::TaskPanicked { message, .. } if message.contains("Manually induced")),
            "{cause:?}"
        ),
        other => panic!("expected BrokenPool, got {:?}", other.map(|_| ())),
    }
    let started: Vec<u32> = pids.to_vec().into_iter().filter(|&p| p != 0).collect();
    assert!(started.len() >= 3, "{started:?}");
    for pid in started {
        assert!(
            common::eventually(Duration::from_secs(30), || common::stat(pid).is_none()),
            "worker {pid} is still there: {:?}",
            common::stat(pid)
        );
    }
}
