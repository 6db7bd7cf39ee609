use multiproc::*;
use std::time::Duration;
const M: Duration = Duration::MAX;
fn probe_one(name: &str, f: impl FnOnce() -> String + std::panic::UnwindSafe) {
    match std::panic::catch_unwind(f) {
        Ok(s) => println!("P {name}: {s}"),
        Err(_) => println!("P {name}: PANIC"),
    }
}
#[test]
fn probe() {
    multiproc::init();
    probe_one("conn.poll", || {
        let (a, b) = pipe::<u8>().unwrap();
        a.send(&1).unwrap();
        format!("{:?}", b.poll(Some(M)))
    });
    probe_one("wait", || {
        let (a, b) = pipe::<u8>().unwrap();
        a.send(&1).unwrap();
        format!("{:?}", connection::wait(&[&b], Some(M)))
    });
    probe_one("async get_timeout", || {
        let p = Pool::new(1).unwrap();
        let r = p.apply_async(|x: u8| x, 1);
        r.wait();
        format!("{:?}", r.get_timeout(M))
    });
    probe_one("async wait_timeout", || {
        let p = Pool::new(1).unwrap();
        let r = p.apply_async(|x: u8| x, 1);
        r.wait();
        format!("{:?}", r.wait_timeout(M))
    });
    probe_one("process join_timeout", || {
        let mut p = Process::new(|_: ()| (), ());
        p.start().unwrap();
        p.join().unwrap();
        format!("{:?}", p.join_timeout(M))
    });
    probe_one("process join_timeout running-ended", || {
        let mut p = Process::new(|_: ()| (), ());
        p.start().unwrap();
        format!("{:?}", p.join_timeout(M))
    });
    probe_one("handle join_timeout", || {
        let mut h = spawn(|x: u8| x, 1).unwrap();
        format!("{:?}", h.join_timeout(M))
    });
    probe_one("queue get_timeout", || {
        let q = Queue::<u8>::new().unwrap();
        q.put(1).unwrap();
        format!("{:?}", q.get_timeout(M))
    });
    probe_one("event", || {
        let e = Event::new().unwrap();
        e.set();
        format!("{:?}", e.wait_timeout(M))
    });
    probe_one("lock", || {
        let l = Lock::new().unwrap();
        format!("{:?}", l.acquire_timeout(M))
    });
    probe_one("barrier", || {
        let b = Barrier::new(1).unwrap();
        format!("{:?}", b.wait_timeout(M))
    });
    probe_one("cond", || {
        let c = Condition::new().unwrap();
        c.acquire().unwrap();
        format!("{:?}", c.wait_for(|| true, Some(M)))
    });
    probe_one("jq join_timeout", || {
        let q = JoinableQueue::<u8>::new().unwrap();
        format!("{:?}", q.join_timeout(M))
    });
    probe_one("imap next_timeout", || {
        let p = Pool::new(1).unwrap();
        let mut it = p.imap(|x: u8| x, vec![1u8]);
        format!("{:?}", it.next_timeout(M))
    });
    let m = Manager::start().unwrap();
    probe_one("mgr queue get_timeout", || {
        let q = m.queue::<u8>().unwrap();
        q.put(1).unwrap();
        format!("{:?}", q.get_timeout(M))
    });
    probe_one("mgr event", || {
        let e = m.event().unwrap();
        e.set().unwrap();
        format!("{:?}", e.wait_timeout(M))
    });
    probe_one("mgr lock", || {
        let l = m.lock().unwrap();
        format!("{:?}", l.acquire_timeout(M))
    });
    probe_one("mgr barrier", || {
        let b = m.barrier(1).unwrap();
        format!("{:?}", b.wait_timeout(M))
    });
    probe_one("mgr sem", || {
        let s = m.semaphore(1).unwrap();
        format!("{:?}", s.acquire_timeout(M))
    });
    probe_one("mgr cond", || {
        let c = m.condition().unwrap();
        c.acquire().unwrap();
        format!("{:?}", c.wait_for(|| true, Some(M)))
    });
    probe_one("mgr jq", || {
        let q = m.joinable_queue::<u8>().unwrap();
        format!("{:?}", q.join_timeout(M))
    });
}
