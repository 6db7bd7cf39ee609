//! Chaos: processes of every kind multiproc makes, SIGKILLed at random moments.
//!
//! Each test runs a few rounds; each round reaches a point with a handshake (the child says
//! "about to put", "about to reply", "waiting"), then kills after a random number of
//! microseconds. Whatever the moment, every surviving call returns `Ok` or a typed
//! [`multiproc::Error`] within a deadline, nothing the survivors sent is lost or duplicated,
//! and after the rounds no zombie child, no file of ours in /dev/shm and no extra
//! descriptor is left. The seed is printed (`KILL_SEED=n` replays a run's moments). The
//! `soak_` versions (`#[ignore]`) run many rounds: see README's Soak tests.

mod common;

use std::collections::HashSet;
use std::ffi::OsString;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::Rng;
use multiproc::{Error, Event, Pool, Queue, RawArray};

/// The bound on every wait of a surviving call: past it, the round has hung.
const DEADLINE: Duration = Duration::from_secs(60);

/// SIGKILLs `pid` if it is still running (a worker may have exited by itself meanwhile).
fn kill(pid: u32) -> bool {
    common::running(pid)
        && rustix::process::kill_process(
            rustix::process::Pid::from_raw(pid as i32).unwrap(),
            rustix::process::Signal::KILL,
        )
        .is_ok()
}

/// Sleeps a random moment of 0 to `max_us` microseconds (0 a quarter of the time).
fn random_moment(rng: &mut Rng, max_us: u64) {
    if rng.below(4) != 0 {
        std::thread::sleep(Duration::from_micros(rng.below(max_us)));
    }
}

/// What a round must leave as it found: taken after a first warm-up round (the fork
/// server, the resource tracker and a spare message file or two are there to stay).
struct Baseline {
    fds: usize,
}

/// The files of this test process in /dev/shm: the blocks of the tracker rounds are named
/// after it (the crate keeps its queues, pipes and locks in anonymous files, never there;
/// and other tests, running at the same time, have files of their own).
fn our_shm_files() -> Vec<OsString> {
    let ours = format!("multiproc_chaos_{}_", std::process::id());
    common::shm_files()
        .into_iter()
        .filter(|f| f.to_string_lossy().starts_with(&ours))
        .collect()
}

impl Baseline {
    fn now() -> Baseline {
        Baseline {
            fds: common::fd_count(),
        }
    }

    /// No zombie child, no new file of ours in /dev/shm, no descriptor more than before
    /// (beyond the spare message files a process keeps for reuse).
    fn check(&self, what: &str) {
        let limit = Duration::from_secs(20);
        assert!(
            common::eventually(limit, || common::zombies_of_me().is_empty()),
            "{what}: zombie children left: {:?}",
            common::zombies_of_me()
        );
        assert!(
            common::eventually(limit, || our_shm_files().is_empty()),
            "{what}: files left in /dev/shm: {:?}",
            our_shm_files()
        );
        assert!(
            common::eventually(limit, || common::fd_count()
                <= self.fds + common::SPARE_MESSAGE_FILES),
            "{what}: descriptors grew from {} to {}",
            self.fds,
            common::fd_count()
        );
    }
}

// ---------------------------------------------------------------------------------------
// Pool workers killed mid-task, while sending a large result, while starting.

/// A reply of one of three sizes, by `x`: 3 MiB (its own sealed memory file), just over
/// 1 MiB, or a few bytes. Says "about to reply" (its pid) on `about` first. With a task
/// timeout, some tasks sleep past it.
fn big_reply((x, about, sleeper): (u64, Queue<u32>, bool)) -> (u64, Vec<u8>) {
    let v = reply_bytes(x);
    about.put(std::process::id()).unwrap();
    if sleeper && x % 11 == 5 {
        std::thread::sleep(Duration::from_secs(30));
    }
    (x, v)
}

fn reply_bytes(x: u64) -> Vec<u8> {
    let len = match x % 3 {
        0 => 3 << 20,
        1 => (1 << 20) + 17,
        _ => 40,
    };
    common::prime_pattern(len, x as usize)
}

fn square(x: u64) -> u64 {
    x * x
}

/// Says its pid on `about` and then works a little: killed at a random moment of that.
fn slow_initializer(about: Queue<u32>) {
    about.put(std::process::id()).unwrap();
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(3) {
        std::hint::spin_loop();
    }
}

#[derive(Clone, Copy, Debug)]
enum Call {
    Map,
    Imap,
    ImapUnordered,
    Starmap,
    ApplyAsync,
}

const CALLS: [Call; 5] = [
    Call::Map,
    Call::Imap,
    Call::ImapUnordered,
    Call::Starmap,
    Call::ApplyAsync,
];

/// One task's outcome is right: its reply, or the typed error of a killed worker (or of a
/// task that ran past its timeout).
fn check_outcome(x: u64, r: &multiproc::Result<(u64, Vec<u8>)>, sleeper: bool, what: &str) {
    match r {
        Ok((y, v)) => {
            assert_eq!(*y, x, "{what}: reply for the wrong task");
            assert!(
                !(sleeper && x % 11 == 5),
                "{what}: task {x} slept past its timeout yet returned"
            );
            assert!(*v == reply_bytes(x), "{what}: task {x}'s bytes differ");
        }
        Err(Error::WorkerDied { .. }) | Err(Error::Timeout) => {}
        Err(e) => panic!("{what}: task {x}: unexpected {e:?}"),
    }
}

/// One round: `call` over 18 tasks on a pool of two, `kills` workers killed each at a
/// random moment after it says "about to reply" (or, with `in_init`, while its
/// initializer runs).
fn pool_round(
    rng: &mut Rng,
    call: Call,
    max_tasks: Option<usize>,
    timeout: bool,
    in_init: bool,
) -> usize {
    let what = format!("{call:?} max_tasks={max_tasks:?} timeout={timeout} in_init={in_init}");
    let about = Queue::<u32>::new().unwrap();
    let mut b = Pool::builder().processes(2);
    if let Some(k) = max_tasks {
        b = b.maxtasksperchild(k);
    }
    if timeout {
        b = b.task_timeout(Duration::from_millis(1500));
    }
    if in_init {
        b = b.initializer(slow_initializer, about.clone());
    }
    let pool = b.build().unwrap();
    let n = 18u64;
    let kills = 1 + rng.below(2) as usize;
    let stop = AtomicBool::new(false);
    let items: Vec<_> = (0..n).map(|x| (x, about.clone(), timeout)).collect();
    let t = Instant::now();
    let killed = std::thread::scope(|s| {
        let killer = s.spawn(|| {
            let mut killed = 0;
            while killed < kills && !stop.load(Ordering::SeqCst) {
                let Ok(pid) = about.get_timeout(Duration::from_millis(20)) else {
                    continue;
                };
                // Not every handshake: the victim is one of the later ones, too.
                if rng.below(3) != 0 {
                    continue;
                }
                random_moment(rng, 3000);
                if kill(pid) {
                    killed += 1;
                }
            }
            killed
        });
        // Every call ends within the deadline with the right results or typed errors.
        match call {
            Call::Map | Call::Starmap => {
                let r = if matches!(call, Call::Map) {
                    pool.map_async(big_reply, items)
                } else {
                    pool.starmap_async(big_reply, items)
                };
                match r.get_timeout(DEADLINE) {
                    Ok(v) => {
                        assert_eq!(v.len(), n as usize, "{what}");
                        for (x, r) in v.into_iter().enumerate() {
                            check_outcome(x as u64, &Ok(r), timeout, &what);
                        }
                    }
                    Err(Error::Timeout) if timeout => {}
                    Err(Error::WorkerDied { .. }) => {}
                    Err(Error::BrokenPool { .. }) if in_init => {}
                    Err(e) => panic!("{what}: {e:?}"),
                }
            }
            Call::Imap | Call::ImapUnordered => {
                let ordered = matches!(call, Call::Imap);
                let mut it = if ordered {
                    pool.imap(big_reply, items)
                } else {
                    pool.imap_unordered(big_reply, items)
                };
                let mut seen = HashSet::new();
                let mut i = 0u64;
                let mut broken = false;
                while let Some(r) = it.next_timeout(DEADLINE) {
                    assert!(i < n, "{what}: more results than tasks");
                    match r {
                        Ok((x, ref v)) => {
                            if ordered {
                                assert_eq!(x, i, "{what}: out of order");
                            }
                            assert!(seen.insert(x), "{what}: task {x} twice");
                            check_outcome(x, &Ok((x, v.clone())), timeout, &what);
                        }
                        Err(Error::BrokenPool { .. }) if in_init => broken = true,
                        ref e => check_outcome(u64::MAX, e, timeout, &what),
                    }
                    i += 1;
                    if broken {
                        break;
                    }
                }
                assert!(broken || i == n, "{what}: {i} results of {n}");
            }
            Call::ApplyAsync => {
                let pending: Vec<_> = items
                    .into_iter()
                    .map(|a| pool.apply_async(big_reply, a))
                    .collect();
                for (x, r) in pending.iter().enumerate() {
                    match r.get_timeout(DEADLINE) {
                        Err(Error::BrokenPool { .. }) if in_init => {}
                        r => check_outcome(x as u64, &r, timeout, &what),
                    }
                }
            }
        }
        stop.store(true, Ordering::SeqCst);
        killer.join().unwrap()
    });
    // Each wait above is bounded by the deadline: one that ran out is a hang, not a task
    // timeout.
    assert!(t.elapsed() < DEADLINE, "{what}: a call hung");
    // Still usable (unless its workers kept dying while starting, which breaks it).
    let usable = match pool.map_async(square, 0..20u64).get_timeout(DEADLINE) {
        Ok(v) => {
            assert_eq!(v, (0..20u64).map(square).collect::<Vec<_>>(), "{what}");
            true
        }
        Err(Error::BrokenPool { .. }) if in_init => false,
        Err(e) => panic!("{what}: after the round: {e:?}"),
    };
    while about.try_get().is_ok() {}
    // Closed and joined while a worker is killed at a random moment of its last tasks:
    // `join` ends, and so does every task (its reply, or its worker's death).
    let killed = killed
        + usize::from(usable && rng.below(2) == 0 && close_and_join_with_a_kill(rng, &pool, &what));
    drop(pool);
    killed
}

/// Gives `pool` four last tasks, closes it and joins it while a worker that says "about to
/// reply" is killed a random moment later. Returns whether one was killed.
fn close_and_join_with_a_kill(rng: &mut Rng, pool: &Pool, what: &str) -> bool {
    let about = Queue::<u32>::new().unwrap();
    let pending: Vec<_> = (0..4u64)
        .map(|x| pool.apply_async(big_reply, (x, about.clone(), false)))
        .collect();
    pool.close();
    let (tx, rx) = mpsc::channel();
    let killed = std::thread::scope(|s| {
        s.spawn(|| tx.send(pool.join()).unwrap());
        let killed = match about.get_timeout(DEADLINE) {
            Ok(pid) => {
                random_moment(rng, 3000);
                kill(pid)
            }
            Err(e) => panic!("{what}: no task began after close: {e:?}"),
        };
        let joined = rx
            .recv_timeout(DEADLINE)
            .expect("join hung after a worker was killed");
        joined.unwrap_or_else(|e| panic!("{what}: join: {e:?}"));
        killed
    });
    for (x, r) in pending.iter().enumerate() {
        check_outcome(x as u64, &r.get_timeout(DEADLINE), false, what);
    }
    killed
}

fn pool_rounds(rounds: usize) {
    multiproc::init();
    let mut rng = Rng::new();
    pool_round(&mut rng, Call::Map, None, false, false);
    let base = Baseline::now();
    let mut kills = 0;
    for r in 0..rounds {
        let call = CALLS[rng.below(CALLS.len() as u64) as usize];
        let max_tasks = [None, Some(1), Some(3)][rng.below(3) as usize];
        let timeout = rng.below(3) == 0;
        let in_init = rng.below(4) == 0;
        kills += pool_round(&mut rng, call, max_tasks, timeout, in_init);
        base.check(&format!("pool round {r}"));
    }
    eprintln!("{kills} workers killed in {rounds} rounds");
    assert!(kills > 0, "no worker was killed: the test tested nothing");
}

#[test]
fn pool_workers_killed_at_random_moments() {
    pool_rounds(6);
}

#[test]
#[ignore]
fn soak_pool_workers_killed_at_random_moments() {
    pool_rounds(300);
}

// ---------------------------------------------------------------------------------------
// Queue producers killed mid-put, consumers killed mid-get, several of each.

/// Items per producer.
const ITEMS: u32 = 60;
/// Producers and consumer processes per round.
const PRODUCERS: u32 = 3;
const CONSUMERS: u32 = 2;

/// An item: (producer, sequence number, bytes). Every fourth is larger than the queue's
/// 4 KiB ring (it goes in a memory file of its own), the others are small.
type Item = (u32, u32, Vec<u8>);

fn item_bytes(p: u32, i: u32) -> Vec<u8> {
    let len = if i.is_multiple_of(4) { 9000 } else { 24 };
    common::prime_pattern(len, (p * 1000 + i) as usize)
}

/// Puts its items, each after saying "about to put" (its count) in `progress`.
fn produce((q, p, progress): (Queue<Item>, u32, RawArray<u32>)) {
    for i in 0..ITEMS {
        progress.set(p as usize, i + 1);
        q.put((p, i, item_bytes(p, i))).unwrap();
    }
}

/// Takes items until `done` is set and the queue stays empty, marking each one in `seen`
/// (slot producer * ITEMS + i; 2 or more is a duplicate, 200 a corrupt item) and counting
/// its gets in `progress`.
fn consume((q, c, seen, progress, done): (Queue<Item>, u32, RawArray<u8>, RawArray<u32>, Event)) {
    let mut n = 0;
    let t = Instant::now();
    // Bounded, so that a failed test leaves no child behind.
    while t.elapsed() < DEADLINE * 2 {
        progress.set(c as usize, n + 1);
        match q.get_timeout(Duration::from_millis(50)) {
            Ok((p, i, v)) => {
                let slot = (p * ITEMS + i) as usize;
                let bad = p >= PRODUCERS || i >= ITEMS || v != item_bytes(p, i);
                if bad {
                    seen.set(0, 200);
                } else {
                    seen.set(slot, seen.get(slot).saturating_add(1));
                }
                n += 1;
            }
            Err(Error::Empty) | Err(Error::Timeout) if done.is_set() => return,
            Err(Error::Empty) | Err(Error::Timeout) => {}
            Err(e) => panic!("consumer {c}: {e:?}"),
        }
    }
    panic!("consumer {c}: never told to stop");
}

/// Waits (bounded) until `progress[slot]` reaches at least `at`.
fn until_progress(progress: &RawArray<u32>, slot: usize, at: u32) -> bool {
    common::eventually(DEADLINE, || progress.get(slot) >= at)
}

fn queue_round(rng: &mut Rng) {
    let q = Queue::<Item>::with_capacity(0, 4096).unwrap();
    let seen = RawArray::<u8>::new((PRODUCERS * ITEMS) as usize).unwrap();
    let put_progress = RawArray::<u32>::new(PRODUCERS as usize).unwrap();
    let get_progress = RawArray::<u32>::new(CONSUMERS as usize).unwrap();
    let done = Event::new().unwrap();
    let consumers: Vec<_> = (0..CONSUMERS)
        .map(|c| {
            let args = (
                q.clone(),
                c,
                seen.clone(),
                get_progress.clone(),
                done.clone(),
            );
            multiproc::spawn(consume, args).unwrap()
        })
        .collect();
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| multiproc::spawn(produce, (q.clone(), p, put_progress.clone())).unwrap())
        .collect();
    // One producer killed at a random put (a small item or a large one), and maybe one
    // consumer at a random get.
    let victim = rng.below(PRODUCERS as u64) as usize;
    let at = 1 + rng.below(ITEMS as u64) as u32;
    assert!(until_progress(&put_progress, victim, at) || producers[victim].is_finished());
    random_moment(rng, 2000);
    producers[victim].kill().unwrap();
    let consumer_victim = (rng.below(2) == 0).then(|| rng.below(CONSUMERS as u64) as usize);
    if let Some(c) = consumer_victim {
        // After a random number of gets (or when there are no more to make).
        let at = 1 + rng.below(ITEMS as u64) as u32;
        assert!(common::eventually(DEADLINE, || get_progress.get(c) >= at
            || producers.iter().all(|h| h.is_finished())));
        random_moment(rng, 2000);
        consumers[c].kill().unwrap();
    }
    // The survivors end (no put or get hangs), the victims end killed.
    for (p, h) in producers.into_iter().enumerate() {
        let r = join_within(h);
        if p != victim {
            r.unwrap_or_else(|e| panic!("producer {p}: {e:?}"));
        }
    }
    done.set();
    let mut gone_consumers = 0;
    for (c, h) in consumers.into_iter().enumerate() {
        let r = join_within(h);
        if Some(c) == consumer_victim {
            gone_consumers += usize::from(r.is_err());
        } else {
            r.unwrap_or_else(|e| panic!("consumer {c}: {e:?}"));
        }
    }
    // What is left in the queue (the killed consumer's share, if it died first) is still
    // there for the parent, whole.
    loop {
        match q.get_timeout(Duration::from_millis(200)) {
            Ok((p, i, v)) => {
                assert!(p < PRODUCERS && i < ITEMS && v == item_bytes(p, i));
                let slot = (p * ITEMS + i) as usize;
                seen.set(slot, seen.get(slot).saturating_add(1));
            }
            Err(Error::Empty) | Err(Error::Timeout) => break,
            Err(e) => panic!("draining: {e:?}"),
        }
    }
    let seen = seen.to_vec();
    assert_ne!(seen[0], 200, "a consumer got a corrupt item");
    assert!(
        seen.iter().all(|&n| n <= 1),
        "an item was got twice: {:?}",
        seen.iter()
            .enumerate()
            .filter(|(_, &n)| n > 1)
            .collect::<Vec<_>>()
    );
    // The surviving producers' items all arrived, but the one (or ones, for a batched
    // get) a killed consumer had taken.
    let lost: Vec<usize> = (0..PRODUCERS as usize)
        .filter(|&p| p != victim)
        .flat_map(|p| (p * ITEMS as usize..(p + 1) * ITEMS as usize).filter(|&s| seen[s] == 0))
        .collect();
    assert!(
        lost.is_empty() || gone_consumers > 0 && lost.len() <= 2,
        "items of surviving producers lost: {lost:?} (killed consumers: {gone_consumers})"
    );
    // And the queue still works.
    q.put((0, 0, item_bytes(0, 0))).unwrap();
    assert_eq!(q.get_timeout(DEADLINE).unwrap().2, item_bytes(0, 0));
}

/// Joins a child within the deadline (a hung child fails the test, killed first so that
/// it is not left behind).
fn join_within<R: serde::de::DeserializeOwned>(
    mut h: multiproc::JoinHandle<R>,
) -> multiproc::Result<R> {
    match h.join_timeout(DEADLINE) {
        Ok(Some(r)) => Ok(r),
        Ok(None) => {
            let pid = h.pid();
            h.kill().unwrap();
            let _ = h.join();
            panic!("child {pid} hung");
        }
        Err(e) => Err(e),
    }
}

/// A warm-up round (what it leaves open is the baseline), then `n` rounds, each followed
/// by the baseline check (no descriptor, file or zombie more).
fn rounds(what: &str, n: usize, mut round: impl FnMut(&mut Rng, usize)) {
    multiproc::init();
    let mut rng = Rng::new();
    round(&mut rng, 0);
    let base = Baseline::now();
    for r in 1..=n {
        round(&mut rng, r);
        base.check(&format!("{what} round {r}"));
    }
}

fn queue_rounds(rounds: usize) {
    self::rounds("queue", rounds, |rng, _| queue_round(rng));
}

#[test]
fn queue_producers_and_consumers_killed_at_random_moments() {
    queue_rounds(4);
}

#[test]
#[ignore]
fn soak_queue_producers_and_consumers_killed_at_random_moments() {
    queue_rounds(300);
}

// ---------------------------------------------------------------------------------------
// Pipe peers killed mid-send of a large message, several sharing one end.

/// Sends `MESSAGES` messages on the shared end, each after counting it in `progress`:
/// (sender, sequence number, bytes) of 3 MiB, 200 KiB or a few bytes.
fn send_messages((tx, s, progress): (multiproc::Connection<Item>, u32, RawArray<u32>)) {
    for i in 0..MESSAGES {
        progress.set(s as usize, i + 1);
        tx.send(&(s, i, message_bytes(s, i))).unwrap();
    }
}

const MESSAGES: u32 = 12;
const SENDERS: u32 = 3;

fn message_bytes(s: u32, i: u32) -> Vec<u8> {
    let len = match i % 3 {
        0 => 3 << 20,
        1 => 200 << 10,
        _ => 24,
    };
    common::prime_pattern(len, (s * 100 + i) as usize)
}

fn pipe_round(rng: &mut Rng) {
    let (rx, tx) = multiproc::pipe::<Item>().unwrap();
    let progress = RawArray::<u32>::new(SENDERS as usize).unwrap();
    let senders: Vec<_> = (0..SENDERS)
        .map(|s| multiproc::spawn(send_messages, (tx.clone(), s, progress.clone())).unwrap())
        .collect();
    drop(tx);
    let victim = rng.below(SENDERS as u64) as usize;
    let at = 1 + rng.below(MESSAGES as u64) as u32;
    let (got_tx, got_rx) = mpsc::channel();
    // The receiver takes messages until every sender's end is closed (or an error).
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut got = Vec::new();
            let end = loop {
                match rx.poll(Some(DEADLINE)) {
                    Ok(true) => {}
                    Ok(false) => break Err(Error::Timeout),
                    Err(e) => break Err(e),
                }
                match rx.recv() {
                    Ok((s, i, v)) => {
                        assert!(
                            s < SENDERS && i < MESSAGES && v == message_bytes(s, i),
                            "a corrupt message (sender {s}, number {i}, {} bytes)",
                            v.len()
                        );
                        got.push((s, i));
                    }
                    Err(Error::Eof) => break Ok(()),
                    Err(e) => break Err(e),
                }
            };
            got_tx.send((got, end)).unwrap();
        });
        assert!(until_progress(&progress, victim, at) || senders[victim].is_finished());
        random_moment(rng, 3000);
        senders[victim].kill().unwrap();
    });
    let (got, end) = got_rx.recv_timeout(DEADLINE).expect("the receiver hung");
    for (s, h) in senders.into_iter().enumerate() {
        let r = join_within(h);
        if s != victim {
            r.unwrap_or_else(|e| panic!("sender {s}: {e:?}"));
        }
    }
    // No duplicate; each survivor's messages in its order, all of them unless the stream
    // ended with a typed error.
    let mut seen = HashSet::new();
    for m in &got {
        assert!(seen.insert(*m), "message {m:?} twice");
    }
    for s in 0..SENDERS {
        let mine: Vec<u32> = got.iter().filter(|m| m.0 == s).map(|m| m.1).collect();
        assert!(
            mine.windows(2).all(|w| w[0] < w[1]),
            "sender {s} out of order"
        );
        if s as usize != victim && end.is_ok() {
            assert_eq!(mine.len(), MESSAGES as usize, "sender {s}'s messages lost");
        }
    }
    if let Err(e) = end {
        assert!(!matches!(e, Error::Timeout), "the receiver waited in vain");
    }
}

/// Receives messages, counting them in `progress[0]`, until killed (bounded).
fn receive_messages((rx, progress): (multiproc::Connection<Item>, RawArray<u32>)) {
    let t = Instant::now();
    let mut n = 0;
    while t.elapsed() < DEADLINE * 2 {
        if rx.poll(Some(Duration::from_millis(50))).unwrap() {
            let (s, i, v) = rx.recv().unwrap();
            assert!(v == message_bytes(s, i));
            n += 1;
            progress.set(0, n);
        }
    }
    panic!("never killed");
}

/// The receiving peer killed at a random moment while this process sends it large
/// messages: a send fails with a typed error within the deadline (none waits for ever for
/// room the dead peer will never make).
fn pipe_receiver_round(rng: &mut Rng) {
    let (mine, theirs) = multiproc::pipe::<Item>().unwrap();
    let progress = RawArray::<u32>::new(1).unwrap();
    let h = multiproc::spawn(receive_messages, (theirs.clone(), progress.clone())).unwrap();
    drop(theirs);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = 0u32;
        let r = loop {
            let i = sent % MESSAGES;
            if let Err(e) = mine.send(&(0, i, message_bytes(0, i))) {
                break Some(e);
            }
            sent += 1;
            if sent > 2000 {
                break None;
            }
        };
        tx.send((sent, r)).unwrap();
    });
    let at = 1 + rng.below(2 * MESSAGES as u64) as u32;
    assert!(common::eventually(DEADLINE, || progress.get(0) >= at));
    random_moment(rng, 3000);
    h.kill().unwrap();
    let (sent, e) = rx
        .recv_timeout(DEADLINE)
        .expect("a send to a killed peer hung");
    let e = e.unwrap_or_else(|| panic!("{sent} sends to a killed peer all succeeded"));
    assert!(
        matches!(e, Error::Io(_) | Error::Eof | Error::Closed),
        "{e:?}"
    );
    assert!(join_within(h).is_err());
}

fn pipe_rounds(rounds: usize) {
    self::rounds("pipe", rounds, |rng, r| {
        pipe_round(rng);
        if r > 0 {
            pipe_receiver_round(rng);
        }
    });
}

#[test]
fn pipe_peers_killed_mid_send_and_mid_receive() {
    pipe_rounds(4);
}

#[test]
#[ignore]
fn soak_pipe_peers_killed_mid_send_and_mid_receive() {
    pipe_rounds(200);
}

// ---------------------------------------------------------------------------------------
// The manager server killed mid-call, and while starting.

/// Calls on one kind of proxy in a loop, counting each call in `calls`, until one fails:
/// every call must end, `Ok` or an error, once the server is killed.
fn manager_calls(
    m: &multiproc::Manager,
    kind: u64,
    calls: &std::sync::atomic::AtomicU32,
) -> multiproc::Result<()> {
    let l = m.list(vec![0u64; 4])?;
    let d = m.dict::<u64, Vec<u8>>()?;
    let lock = m.lock()?;
    let q = m.queue::<Vec<u8>>()?;
    for i in 0u64.. {
        calls.fetch_add(1, Ordering::SeqCst);
        match kind {
            0 => {
                l.push(i)?;
                l.get(0)?;
                l.pop()?;
            }
            1 => {
                d.insert(i % 8, vec![i as u8; (i % 3 * 40_000) as usize])?;
                d.get(&(i % 8))?;
            }
            2 => {
                lock.acquire()?;
                lock.release()?;
            }
            // Blocked in a get that only the server's death ends (nobody puts).
            _ => {
                q.get_timeout(DEADLINE * 2)?;
            }
        }
    }
    Ok(())
}

fn manager_round(rng: &mut Rng) {
    let m = multiproc::Manager::start().unwrap();
    let pid = m.server_pid().unwrap();
    let calls: Vec<_> = (0..4)
        .map(|_| std::sync::atomic::AtomicU32::new(0))
        .collect();
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::scope(|s| {
        for (kind, c) in calls.iter().enumerate() {
            let (m, done_tx) = (&m, done_tx.clone());
            s.spawn(move || {
                let r = manager_calls(m, kind as u64, c);
                done_tx.send((kind, r)).unwrap();
            });
        }
        // Every caller is in its loop (the blocked getter has begun its call) before the
        // kill, which comes after a random number of further calls and microseconds.
        let after = 1 + rng.below(40) as u32;
        assert!(common::eventually(DEADLINE, || calls
            .iter()
            .all(|c| c.load(Ordering::SeqCst) >= after.min(1))
            && calls[0].load(Ordering::SeqCst) >= after));
        random_moment(rng, 2000);
        assert!(kill(pid));
        for _ in 0..calls.len() {
            let (kind, r) = done_rx.recv_timeout(DEADLINE).expect("a call hung");
            let e = r.expect_err("calls went on after the server was killed");
            assert!(
                matches!(
                    e,
                    Error::Io(_) | Error::Eof | Error::ShutDown | Error::Closed
                ),
                "caller {kind}: {e:?}"
            );
        }
    });
    // Dropping the handle of a dead server neither hangs nor leaves it a zombie.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        drop(m);
        tx.send(()).unwrap();
    });
    rx.recv_timeout(DEADLINE)
        .expect("dropping the manager hung");
}

/// A manager whose server is killed at a random moment while it starts: `start` ends with
/// a manager or a typed error, and a manager it gave either works or says its server is
/// gone.
fn manager_start_round(rng: &mut Rng) {
    let before: HashSet<u32> = common::children_of_me().into_iter().collect();
    let (tx, rx) = mpsc::channel();
    std::thread::scope(|s| {
        s.spawn(move || {
            let r = multiproc::Manager::start().map(|m| {
                let l = m.list(vec![1u8]);
                (m, l)
            });
            tx.send(r).unwrap();
        });
        let t = Instant::now();
        let server = loop {
            if let Some(p) = common::children_of_me()
                .into_iter()
                .find(|p| !before.contains(p))
            {
                break Some(p);
            }
            if t.elapsed() > DEADLINE {
                break None;
            }
            std::thread::yield_now();
        };
        let server = server.expect("no manager server started");
        random_moment(rng, 3000);
        kill(server);
    });
    match rx.recv_timeout(DEADLINE).expect("Manager::start hung") {
        Ok((m, Ok(l))) => {
            if let Err(e) = l.push(2) {
                assert!(matches!(e, Error::Io(_) | Error::Eof), "{e:?}");
            }
            drop(m);
        }
        Ok((m, Err(e))) => {
            assert!(matches!(e, Error::Io(_) | Error::Eof), "{e:?}");
            drop(m);
        }
        Err(e) => assert!(
            matches!(e, Error::Io(_) | Error::Eof | Error::WorkerDied { .. }),
            "{e:?}"
        ),
    }
}

fn manager_rounds(rounds: usize) {
    multiproc::init();
    let mut rng = Rng::new();
    // A first process started (the fork server, if the start method has one, is not taken
    // for the manager's server).
    multiproc::spawn(square, 2).unwrap().join().unwrap();
    manager_round(&mut rng);
    let base = Baseline::now();
    for r in 0..rounds {
        manager_round(&mut rng);
        base.check(&format!("manager round {r}"));
        manager_start_round(&mut rng);
        base.check(&format!("manager start round {r}"));
    }
}

#[test]
fn manager_server_killed_mid_call_and_while_starting() {
    manager_rounds(3);
}

#[test]
#[ignore]
fn soak_manager_server_killed_mid_call_and_while_starting() {
    manager_rounds(200);
}

// ---------------------------------------------------------------------------------------
// Users of Semaphore, Condition, Barrier, Event and a Value's lock killed holding or
// waiting.

/// Takes and gives back the semaphore, the value's lock and the condition's lock in a
/// loop, counting rounds in `progress[me]`; waits on the condition and the event in between.
#[allow(clippy::type_complexity)]
fn sync_user(
    (me, sem, value, array, cond, event, progress): (
        usize,
        multiproc::Semaphore,
        multiproc::Value<u64>,
        multiproc::Array<u32>,
        multiproc::Condition,
        Event,
        RawArray<u32>,
    ),
) {
    let t = Instant::now();
    // Bounded, so that a failed test leaves no child behind.
    for i in 1u32.. {
        assert!(t.elapsed() < DEADLINE * 2, "never killed");
        progress.set(me, i);
        if sem.acquire_timeout(DEADLINE).unwrap() {
            std::hint::black_box(i);
            sem.release().unwrap();
        }
        *value
            .lock_recoverable()
            .unwrap_or_else(|died| died.into_inner()) += 1;
        {
            let mut a = array
                .lock_recoverable()
                .unwrap_or_else(|died| died.into_inner());
            a[i as usize % 64] += 1;
        }
        match cond.acquire() {
            Ok(()) | Err(Error::OwnerDied) => {}
            Err(e) => panic!("{e:?}"),
        }
        // Waits briefly for a notify (the parent notifies in a loop).
        match cond.wait_timeout(Duration::from_millis(2)) {
            Ok(_) | Err(Error::OwnerDied) => {}
            Err(e) => panic!("{e:?}"),
        }
        cond.release().unwrap();
        event.wait_timeout(Duration::from_micros(200)).unwrap();
    }
}

fn sync_round(rng: &mut Rng) {
    let sem = multiproc::Semaphore::new(1).unwrap();
    let value = multiproc::Value::new(0u64).unwrap();
    let array = multiproc::Array::<u32>::new(64).unwrap();
    let cond = multiproc::Condition::new().unwrap();
    let event = Event::new().unwrap();
    let progress = RawArray::<u32>::new(3).unwrap();
    let users: Vec<_> = (0..3)
        .map(|me| {
            let args = (
                me,
                sem.clone(),
                value.clone(),
                array.clone(),
                cond.clone(),
                event.clone(),
                progress.clone(),
            );
            multiproc::spawn(sync_user, args).unwrap()
        })
        .collect();
    let victim = rng.below(3) as usize;
    let at = 1 + rng.below(200) as u32;
    assert!(common::eventually(DEADLINE, || progress.get(victim) >= at));
    random_moment(rng, 1000);
    users[victim].kill().unwrap();
    // The survivors go on: each makes 50 more rounds within the deadline (a lock or a
    // semaphore unit the victim held is not lost for good: the lock is taken over; a
    // semaphore unit it held is lost, so the survivors' acquire times out instead).
    let survivors: Vec<usize> = (0..3).filter(|&u| u != victim).collect();
    let marks: Vec<u32> = survivors.iter().map(|&u| progress.get(u)).collect();
    let t = Instant::now();
    while !survivors
        .iter()
        .zip(&marks)
        .all(|(&u, &m)| progress.get(u) >= m + 50)
    {
        assert!(
            t.elapsed() < DEADLINE,
            "the survivors stopped after the kill"
        );
        match cond.acquire() {
            Ok(()) | Err(Error::OwnerDied) => {}
            Err(e) => panic!("{e:?}"),
        }
        cond.notify_all().unwrap();
        cond.release().unwrap();
        std::thread::sleep(Duration::from_micros(200));
        // A semaphore unit the victim held is gone with it (as in Python): give it back
        // so the survivors need not wait the deadline.
        if sem.get_value() == 0 && t.elapsed() > Duration::from_millis(500) {
            sem.release().unwrap();
        }
    }
    // The value's and the array's locks are usable (taken over if the victim held one).
    match value.lock() {
        Ok(g) => drop(g),
        Err(Error::OwnerDied) => {}
        Err(e) => panic!("{e:?}"),
    }
    match array.lock() {
        Ok(g) => drop(g),
        Err(Error::OwnerDied) => {}
        Err(e) => panic!("{e:?}"),
    }
    for (u, h) in users.iter().enumerate() {
        if u != victim {
            h.kill().unwrap();
        }
    }
    for h in users {
        let _ = join_within(h);
    }
}

/// Parties of a barrier: the one at `victim` is killed while it waits (or just before),
/// the others' `wait_timeout` ends: the barrier breaks (a party died, or time ran out).
fn barrier_party((b, me, arrived): (multiproc::Barrier, usize, RawArray<u32>)) -> String {
    arrived.set(me, 1);
    match b.wait_timeout(Duration::from_secs(5)) {
        Ok(_) => "passed".into(),
        Err(Error::BrokenBarrier) => "broken".into(),
        Err(e) => format!("{e:?}"),
    }
}

fn barrier_round(rng: &mut Rng) {
    let b = multiproc::Barrier::new(4).unwrap();
    let arrived = RawArray::<u32>::new(3).unwrap();
    let parties: Vec<_> = (0..3)
        .map(|me| multiproc::spawn(barrier_party, (b.clone(), me, arrived.clone())).unwrap())
        .collect();
    let victim = rng.below(3) as usize;
    assert!(common::eventually(DEADLINE, || arrived.get(victim) == 1));
    random_moment(rng, 2000);
    parties[victim].kill().unwrap();
    // The fourth party (this process) comes too: either the barrier let everyone through
    // before the kill, or it is broken for every survivor; nobody hangs.
    let mine = b.wait_timeout(Duration::from_secs(5));
    let mine = match mine {
        Ok(_) => "passed".to_string(),
        Err(Error::BrokenBarrier) => "broken".into(),
        Err(e) => panic!("{e:?}"),
    };
    for (p, h) in parties.into_iter().enumerate() {
        let r = join_within(h);
        if p != victim {
            let theirs = r.unwrap();
            assert!(theirs == "passed" || theirs == "broken", "{theirs}");
            if mine == "broken" {
                assert_eq!(theirs, "broken", "party {p} passed a broken barrier");
            }
        }
    }
}

fn sync_rounds(rounds: usize) {
    self::rounds("sync", rounds, |rng, r| {
        sync_round(rng);
        if r > 0 {
            barrier_round(rng);
        }
    });
}

#[test]
fn sync_users_killed_holding_or_waiting() {
    sync_rounds(3);
}

#[test]
#[ignore]
fn soak_sync_users_killed_holding_or_waiting() {
    sync_rounds(200);
}

// ---------------------------------------------------------------------------------------
// The resource tracker killed while SharedMemory segments are created and unlinked.

/// Creates `n` segments named `prefix_i`, counting each in `progress[0]`, unlinks every
/// other one (counting in `progress[1]`), then waits to be killed holding the rest.
fn create_segments((prefix, n, progress): (String, u32, RawArray<u32>)) {
    use multiproc::shared_memory::SharedMemory;
    let mut held = Vec::new();
    for i in 0..n {
        held.push(SharedMemory::create(Some(&format!("{prefix}_{i}")), 8192).unwrap());
        progress.set(0, i + 1);
    }
    for (i, s) in held.iter().enumerate().step_by(2) {
        s.unlink().unwrap();
        progress.set(1, i as u32 + 1);
    }
    progress.set(2, 1);
    std::thread::sleep(DEADLINE * 2);
}

/// Creates segments named `prefix_i` (and unlinks every third) until killed, counting
/// creates in `progress[0]` (bounded).
fn create_until_killed((prefix, progress): (String, RawArray<u32>)) {
    use multiproc::shared_memory::SharedMemory;
    let mut held = Vec::new();
    for i in 0..5000u32 {
        let s = SharedMemory::create(Some(&format!("{prefix}_{i}")), 4096).unwrap();
        if i % 3 == 0 {
            s.unlink().unwrap();
        } else {
            held.push(s);
        }
        progress.set(0, i + 1);
    }
    std::thread::sleep(DEADLINE * 2);
}

fn tracker_round(rng: &mut Rng, round: usize) {
    use multiproc::shared_memory::{tracker_pid, SharedMemory};
    let prefix = format!("multiproc_chaos_{}_{round}", std::process::id());
    let n = 24;
    let progress = RawArray::<u32>::new(3).unwrap();
    let child = multiproc::spawn(
        create_segments,
        (format!("{prefix}_c"), n, progress.clone()),
    )
    .unwrap();
    // This process creates and unlinks too, on another thread, meanwhile.
    let (done_tx, done_rx) = mpsc::channel();
    let mine = format!("{prefix}_p");
    std::thread::spawn(move || {
        let mut r = Ok(());
        for i in 0..n {
            r = SharedMemory::create(Some(&format!("{mine}_{i}")), 4096).and_then(|s| s.unlink());
            if r.is_err() {
                break;
            }
        }
        done_tx.send(r).unwrap();
    });
    let at = 1 + rng.below(n as u64) as u32;
    assert!(common::eventually(DEADLINE, || progress.get(0) >= at));
    random_moment(rng, 2000);
    let tracker = tracker_pid().expect("a tracker runs");
    if kill(tracker) {
        // Dead (its sockets closed) before what follows: a start of a child hands the
        // names over only from a tracker known to be dead.
        assert!(common::eventually(DEADLINE, || reaped(tracker)));
    }
    let r = done_rx
        .recv_timeout(DEADLINE)
        .expect("create or unlink hung");
    r.unwrap_or_else(|e| panic!("create or unlink after the tracker was killed: {e:?}"));
    assert!(
        common::eventually(DEADLINE, || progress.get(2) == 1),
        "the child's creates and unlinks hung"
    );
    child.kill().unwrap();
    assert!(join_within(child).is_err());
    // A process killed at a random moment of its creates and unlinks (between registering
    // a name and making the file, between making it and sizing it, ...).
    let progress = RawArray::<u32>::new(1).unwrap();
    let child = multiproc::spawn(
        create_until_killed,
        (format!("{prefix}_k"), progress.clone()),
    )
    .unwrap();
    let at = 1 + rng.below(40) as u32;
    assert!(common::eventually(DEADLINE, || progress.get(0) >= at));
    random_moment(rng, 2000);
    child.kill().unwrap();
    assert!(join_within(child).is_err());
    // What the killed children held is removed by the tracker: the replacement, if the
    // first was killed before it learnt of them; or, if they registered nothing after the
    // kill, the one that this process (which used the dead one) handed the dead one's
    // state to when it started the second child (see src/start/tracker.rs).
    assert!(
        common::eventually(Duration::from_secs(20), || our_shm_files().is_empty()),
        "left in /dev/shm after the tracker was killed: {:?}; killed {tracker}, now {:?}, trackers {:?}",
        our_shm_files(),
        tracker_pid(),
        trackers(),
    );
}

/// Whether process `pid` is gone and reaped: not even a zombie. (A zombie may still have
/// threads tearing down, holding its descriptors: the thread-group leader shows 'Z' as soon
/// as it has exited itself.)
fn reaped(pid: u32) -> bool {
    !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Creates the block `name`, kills the tracker that holds it (and waits until it is
/// gone), starts a child, then says `ready` and waits to be killed.
fn create_then_kill_the_tracker_then_start_a_child((name, ready): (String, Event)) {
    use multiproc::shared_memory::{tracker_pid, SharedMemory};
    let _block = SharedMemory::create(Some(&name), 4096).unwrap();
    let tracker = tracker_pid().unwrap();
    assert!(kill(tracker));
    assert!(common::eventually(DEADLINE, || reaped(tracker)));
    multiproc::spawn(square, 3).unwrap().join().unwrap();
    ready.set();
    std::thread::sleep(DEADLINE * 2);
}

/// Found by the tracker rounds: a process whose tracker was killed, and that registers
/// nothing afterwards, hands its names to a replacement tracker when it next starts a
/// child, so that they are unlinked when it is killed in turn. (Before, they were held
/// only in the dead tracker's state, which nobody alive held: left in /dev/shm for good.)
#[test]
fn names_of_a_process_killed_after_its_tracker_are_unlinked_if_it_started_a_child_since() {
    multiproc::init();
    let name = format!("multiproc_chaos_{}_handover", std::process::id());
    let ready = Event::new().unwrap();
    let h = multiproc::spawn(
        create_then_kill_the_tracker_then_start_a_child,
        (name.clone(), ready.clone()),
    )
    .unwrap();
    assert!(ready.wait_timeout(DEADLINE).unwrap());
    h.kill().unwrap();
    assert!(join_within(h).is_err());
    let gone = common::eventually(Duration::from_secs(10), || our_shm_files().is_empty());
    if !gone {
        let _ = std::fs::remove_file(format!("/dev/shm/{name}"));
    }
    assert!(gone, "{name} left in /dev/shm");
}

/// The tracker processes running (pid, parent pid).
fn trackers() -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        if env
            .split(|&b| b == 0)
            .any(|kv| kv.starts_with(b"MULTIPROC_ROLE=shm-tracker"))
        {
            out.push((pid, common::stat(pid).map_or(0, |s| s.1)));
        }
    }
    out
}

fn tracker_rounds(rounds: usize) {
    self::rounds("tracker", rounds, tracker_round);
}

#[test]
fn tracker_killed_while_segments_are_created_and_unlinked() {
    tracker_rounds(4);
}

#[test]
#[ignore]
fn soak_tracker_killed_while_segments_are_created_and_unlinked() {
    tracker_rounds(200);
}

// ---------------------------------------------------------------------------------------
// Listener and Client peers killed mid-authentication.

const KEY: &[u8] = b"chaos key";

/// Connects (after saying so in `about`) and sends one message; killed at a random moment
/// of the handshake.
fn connect_and_send((address, about): (String, Event)) {
    about.set();
    let c = multiproc::connection::Client::connect::<u32>(address.as_str(), Some(KEY)).unwrap();
    c.send(&7).unwrap();
}

/// Accepts one connection (after saying so in `about`) and answers it; killed at a random
/// moment of the handshake.
fn accept_and_send((address, about): (String, Event)) {
    let l = multiproc::connection::Listener::bind(address.as_str(), Some(KEY)).unwrap();
    about.set();
    let c = l.accept::<u32>().unwrap();
    c.send(&7).unwrap();
}

/// Whether an error is one a peer killed mid-handshake may give.
fn handshake_error(e: &Error) -> bool {
    matches!(e, Error::Io(_) | Error::Eof | Error::AuthenticationFailed)
}

fn auth_round(rng: &mut Rng, round: usize) {
    use multiproc::connection::{Client, Listener};
    // A client killed mid-handshake: this listener's accept ends (a connection or a typed
    // error), and the next, honest client is served.
    let l = Listener::bind("127.0.0.1:0", Some(KEY)).unwrap();
    let address = l.address().to_string();
    let about = Event::new().unwrap();
    let victim = multiproc::spawn(connect_and_send, (address.clone(), about.clone())).unwrap();
    assert!(about.wait_timeout(DEADLINE).unwrap());
    random_moment(rng, 3000);
    victim.kill().unwrap();
    let _ = join_within(victim);
    let honest = {
        let address = address.clone();
        std::thread::spawn(move || {
            let c = Client::connect::<u32>(address.as_str(), Some(KEY))?;
            c.send(&8)
        })
    };
    let (tx, rx) = mpsc::channel();
    std::thread::scope(|s| {
        s.spawn(|| {
            // The victim's connection (if it got that far), then the honest one.
            let mut got = Vec::new();
            for _ in 0..2 {
                match l.accept::<u32>() {
                    Ok(c) => match c.recv() {
                        Ok(v) => {
                            got.push(v);
                            if v == 8 {
                                break;
                            }
                        }
                        Err(e) => assert!(handshake_error(&e), "{e:?}"),
                    },
                    Err(e) => assert!(handshake_error(&e), "{e:?}"),
                }
            }
            tx.send(got).unwrap();
        });
        let got = rx.recv_timeout(DEADLINE).expect("accept hung");
        assert_eq!(
            got.last(),
            Some(&8),
            "the honest client was not served: {got:?}"
        );
    });
    honest.join().unwrap().unwrap();
    // A listener killed mid-handshake: this client's connect ends with a typed error (or a
    // connection whose recv does).
    let path = format!("/tmp/multiproc_chaos_{}_{round}.sock", std::process::id());
    let about = Event::new().unwrap();
    let server = multiproc::spawn(accept_and_send, (path.clone(), about.clone())).unwrap();
    assert!(about.wait_timeout(DEADLINE).unwrap());
    let (tx, rx) = mpsc::channel();
    let client = {
        let path = path.clone();
        std::thread::spawn(move || {
            let r = Client::connect::<u32>(path.as_str(), Some(KEY)).and_then(|c| c.recv());
            tx.send(r).unwrap();
        })
    };
    random_moment(rng, 3000);
    server.kill().unwrap();
    match rx.recv_timeout(DEADLINE).expect("connect hung") {
        Ok(v) => assert_eq!(v, 7),
        Err(e) => assert!(handshake_error(&e), "{e:?}"),
    }
    client.join().unwrap();
    let _ = join_within(server);
    let _ = std::fs::remove_file(&path);
}

fn auth_rounds(rounds: usize) {
    self::rounds("authentication", rounds, auth_round);
}

#[test]
fn peers_killed_mid_authentication() {
    auth_rounds(4);
}

#[test]
#[ignore]
fn soak_peers_killed_mid_authentication() {
    auth_rounds(300);
}
