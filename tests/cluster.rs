//! The cluster pool (`Pool::cluster`). Run as a plain test it is a local pool (a singleton
//! run); `.ci/run` also runs this binary under `mpirun -n 3 --oversubscribe` with the `mpi`
//! feature, where ranks 1 and 2 become node agents and the assertions about ranks apply.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use multiproc::pool::cluster;
use multiproc::{Error, Pool};

/// Allocations of 256 KiB or more in memory files: a local pool's worker hands such a
/// result over as its file; a worker on another rank must carry its bytes over MPI.
#[global_allocator]
static HEAP: multiproc::ShmAllocator = multiproc::ShmAllocator::from_size(256 << 10);

fn square(x: u64) -> u64 {
    x.wrapping_mul(x)
}

fn add((a, b): (u64, u64)) -> u64 {
    a + b
}

/// The value, the rank that computed it, and the worker's pid.
fn square_where(x: u64) -> (u64, usize, u32) {
    (x * x, cluster::rank(), std::process::id())
}

fn kill_self() {
    let _ = rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
}

/// Task 50 panics; task 120 kills its own worker with SIGKILL mid-task. Each task takes a
/// millisecond, so a worker reports each finished task before it begins the next (a worker
/// that dies loses the replies it still held: see the pool's fault rules).
fn faulty(x: u64) -> (u64, usize) {
    std::thread::sleep(Duration::from_millis(1));
    if x == 50 {
        panic!("task {x} failed on purpose");
    }
    if x == 120 {
        kill_self();
    }
    (x, cluster::rank())
}

fn nap(ms: u64) -> u32 {
    std::thread::sleep(Duration::from_millis(ms));
    std::process::id()
}

/// The ranks that run tasks when rank 0 keeps no workers: every other one (or rank 0 alone
/// in a singleton run).
fn worker_ranks() -> BTreeSet<usize> {
    if cluster::size() == 1 {
        BTreeSet::from([0])
    } else {
        (1..cluster::size()).collect()
    }
}

/// A pool whose workers are all on ranks other than 0 (when there are other ranks).
fn remote_pool(per_rank: usize) -> Pool {
    Pool::builder()
        .cluster()
        .root_processes(0)
        .processes(per_rank)
        .build()
        .unwrap()
}

/// No file in /dev/shm that was not in `before`, within 10 s: /dev/shm is the machine's,
/// and another test process (nextest runs several at once; a second run of the suite may
/// be going on) may hold a file there for a moment; one this test left stays.
fn assert_no_new_shm_files(before: &BTreeSet<String>) {
    let new = || -> Vec<String> { shm_files().difference(before).cloned().collect() };
    common::eventually(Duration::from_secs(10), || new().is_empty());
    let left = new();
    assert!(left.is_empty(), "left in /dev/shm: {left:?}");
}

fn shm_files() -> BTreeSet<String> {
    std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn results_equal_the_local_pool() {
    multiproc::init();
    let n = 100_000u64;
    let local = Pool::new(2).unwrap();
    let pool = remote_pool(1);
    assert_eq!(pool.processes(), worker_ranks().len());

    let expect = local.map(square, 0..n).unwrap();
    let got = pool.map(square_where, 0..n).unwrap();
    assert_eq!(got.iter().map(|r| r.0).collect::<Vec<_>>(), expect);
    let ranks: BTreeSet<usize> = got.iter().map(|r| r.1).collect();
    assert_eq!(ranks, worker_ranks(), "every rank takes part");

    let lazy: Vec<u64> = pool
        .imap_chunked(square, 0..n, 500)
        .collect::<multiproc::Result<_>>()
        .unwrap();
    assert_eq!(lazy, expect);

    let pairs: Vec<(u64, u64)> = (0..n).map(|i| (i, 2 * i)).collect();
    assert_eq!(
        pool.starmap(add, pairs.clone()).unwrap(),
        local.starmap(add, pairs).unwrap()
    );

    let pending: Vec<_> = (0..n).map(|i| pool.apply_async(square, i)).collect();
    let got: Vec<u64> = pending.iter().map(|r| r.get().unwrap()).collect();
    assert_eq!(got, expect);

    let mut unordered: Vec<u64> = pool
        .imap_unordered_chunked(square, 0..n, 1000)
        .map(|r| r.unwrap())
        .collect();
    unordered.sort_unstable();
    let mut sorted = expect.clone();
    sorted.sort_unstable();
    assert_eq!(unordered, sorted);
    assert_eq!(pool.map_async(square, 0..10).get().unwrap(), &expect[..10]);
}

/// A result of 1 MiB, with the rank that made it.
fn big(x: u64) -> (usize, Vec<u8>) {
    (cluster::rank(), vec![x as u8; 1 << 20])
}

#[test]
fn large_results_come_back_from_every_rank() {
    multiproc::init();
    let pool = remote_pool(1);
    let got = pool.map(big, 0..40u64).unwrap();
    for (x, (_, v)) in got.iter().enumerate() {
        assert!(
            v.len() == 1 << 20 && v.iter().all(|&b| b == x as u8),
            "result {x}"
        );
    }
    let ranks: BTreeSet<usize> = got.iter().map(|r| r.0).collect();
    assert!(
        ranks.is_subset(&worker_ranks()) && !ranks.is_empty(),
        "{ranks:?}"
    );
    pool.close();
    pool.join().unwrap();
}

#[test]
fn processes_counts_every_rank() {
    multiproc::init();
    let pool = Pool::builder().cluster().processes(2).build().unwrap();
    assert_eq!(pool.processes(), 2 * cluster::size());
    assert_eq!(pool.apply(square, 12).unwrap(), 144);
}

#[test]
fn panic_and_sigkill_on_another_rank_fail_only_their_task() {
    multiproc::init();
    let pool = remote_pool(1);
    let results: Vec<multiproc::Result<(u64, usize)>> = pool.imap(faulty, 0..200).collect();
    assert_eq!(results.len(), 200);
    for (i, r) in results.iter().enumerate() {
        match (i, r) {
            (50, Err(Error::TaskPanicked { message, .. })) => {
                assert!(message.contains("task 50 failed on purpose"), "{message}")
            }
            (120, Err(Error::WorkerDied { signal, .. })) => assert_eq!(*signal, Some(9)),
            (50 | 120, other) => panic!("task {i}: unexpected {other:?}"),
            (_, Ok((x, rank))) => {
                assert_eq!(*x, i as u64);
                assert!(worker_ranks().contains(rank), "task {i} ran on rank {rank}");
            }
            (_, Err(e)) => panic!("task {i} failed: {e}"),
        }
    }
    // The same with apply_async, and the pool goes on.
    let a = pool.apply_async(faulty, 120);
    let b = pool.apply_async(faulty, 7);
    assert!(matches!(a.get(), Err(Error::WorkerDied { .. })));
    assert_eq!(b.get().unwrap().0, 7);
    assert_eq!(pool.apply(square, 9).unwrap(), 81);
}

#[test]
fn lazy_imap_over_an_endless_input() {
    multiproc::init();
    let pool = remote_pool(1);
    let first: Vec<u64> = pool
        .imap(square, 0u64..)
        .take(2000)
        .collect::<multiproc::Result<_>>()
        .unwrap();
    assert_eq!(first, (0..2000u64).map(square).collect::<Vec<_>>());
    let firsts: Vec<u64> = pool
        .imap_unordered(square, 0u64..)
        .take(100)
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(firsts.len(), 100);
    // Dropping the iterators withdrew their tasks: the pool is free for more.
    assert_eq!(pool.apply(square, 3).unwrap(), 9);
}

#[test]
fn terminate_with_ten_thousand_tasks_queued_leaves_nothing() {
    multiproc::init();
    let shm_before = shm_files();
    let pool = remote_pool(1);
    let pending: Vec<_> = (0..10_000).map(|_| pool.apply_async(nap, 20)).collect();
    // A task has run: the work is spread out.
    let first_pid = pending[0].get().unwrap();
    pool.terminate().unwrap();
    let mut done = vec![first_pid];
    let mut closed = 0;
    for r in &pending {
        match r.get() {
            Ok(pid) => done.push(pid),
            Err(Error::Closed) => closed += 1,
            Err(e) => panic!("unexpected outcome after terminate: {e}"),
        }
    }
    assert!(closed > 9_000, "only {closed} tasks were cancelled");
    assert!(matches!(pool.apply(square, 1), Err(Error::Closed)));
    // Every worker that ran a task is gone (all ranks run on this machine in CI).
    for pid in done {
        assert!(!common::running(pid), "worker {pid} survived terminate");
    }
    assert_no_new_shm_files(&shm_before);
}

/// Writes its worker's pid to the file `path` names (a sign that it runs), then runs until
/// its worker is killed.
fn hold(path: String) -> u32 {
    let tmp = format!("{path}.tmp");
    let _ = std::fs::write(&tmp, std::process::id().to_string());
    let _ = std::fs::rename(&tmp, &path);
    loop {
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A lone task is run on another rank by its agent's MPI thread itself: meanwhile another
/// thread of the agent serves the rank, so that a terminate reaches it and kills the task.
#[test]
fn terminate_reaches_a_rank_running_a_lone_task() {
    multiproc::init();
    let path = std::env::temp_dir().join(format!("multiproc-hold-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let pool = remote_pool(1);
    let task = pool.apply_async(hold, path.to_string_lossy().into_owned());
    let pid = loop {
        if let Some(pid) = std::fs::read_to_string(&path)
            .ok()
            .and_then(|s| s.parse::<u32>().ok())
        {
            break pid;
        }
        assert!(!task.ready(), "the task ended: {:?}", task.get());
        std::thread::sleep(Duration::from_millis(1));
    };
    let _ = std::fs::remove_file(&path);
    let (tx, rx) = std::sync::mpsc::channel();
    let pool = std::sync::Arc::new(pool);
    let p = pool.clone();
    std::thread::spawn(move || {
        let _ = tx.send(p.terminate());
    });
    // Its task never ends by itself: terminate returns only if the stop reached the rank.
    let done = rx.recv_timeout(Duration::from_secs(120));
    assert!(
        matches!(done, Ok(Ok(()))),
        "terminate did not return: {done:?}"
    );
    assert!(matches!(task.get(), Err(Error::Closed)));
    assert!(!common::running(pid), "worker {pid} survived terminate");
}

#[test]
fn close_and_join_reap_every_rank() {
    multiproc::init();
    let shm_before = shm_files();
    let pool = remote_pool(2);
    let pids: BTreeSet<u32> = pool
        .map(|x: u64| (x, std::process::id()), 0..2000)
        .unwrap()
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    pool.close();
    pool.join().unwrap();
    for pid in pids {
        assert!(!common::running(pid), "worker {pid} survived close + join");
    }
    assert_no_new_shm_files(&shm_before);
}

static TABLE: std::sync::OnceLock<Vec<u64>> = std::sync::OnceLock::new();

fn load_table(t: Vec<u64>) {
    let _ = TABLE.set(t);
}

fn lookup(i: usize) -> u64 {
    TABLE.get().map_or(u64::MAX, |t| t[i])
}

fn refuse(level: u32) {
    assert!(level < 10, "level {level} is too high");
}

#[test]
fn initializer_data_reaches_every_rank_once() {
    multiproc::init();
    let table: Vec<u64> = (0..10_000u64).map(|i| i * 7).collect();
    let pool = Pool::builder()
        .cluster()
        .root_processes(0)
        .processes(1)
        .initializer(load_table, table)
        .build()
        .unwrap();
    let idx: Vec<usize> = (0..10_000).step_by(37).collect();
    let got = pool.map(lookup, idx.clone()).unwrap();
    assert_eq!(got, idx.iter().map(|&i| i as u64 * 7).collect::<Vec<_>>());
    drop(pool);
    let bad = Pool::builder()
        .cluster()
        .root_processes(0)
        .processes(1)
        .initializer(refuse, 30)
        .build();
    // As for a local pool (issue 10): the pool is broken, and the initializer's panic is
    // the cause, on whichever rank it failed.
    match bad {
        Err(Error::BrokenPool { cause, .. }) => match *cause {
            Error::TaskPanicked { message, .. } => assert!(message.contains("too high")),
            other => panic!("expected the initializer's panic as the cause, got {other:?}"),
        },
        other => panic!("expected a broken pool, got {other:?}"),
    }
}

#[test]
fn task_timeout_holds_on_every_rank() {
    multiproc::init();
    let pool = Pool::builder()
        .cluster()
        .root_processes(0)
        .processes(1)
        .task_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    assert!(matches!(pool.apply(nap, 10_000), Err(Error::Timeout)));
    let pid = pool.apply(nap, 1).unwrap();
    assert!(common::running(pid));
}

/// The rank and the pid of the agent (the worker's parent) that ran a task.
fn where_am_i(_: u64) -> (usize, u32) {
    (
        cluster::rank(),
        rustix::process::getppid().map_or(0, |p| p.as_raw_nonzero().get() as u32),
    )
}

fn signal(pid: u32, sig: rustix::process::Signal) {
    if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
        rustix::process::kill_process(p, sig).unwrap();
    }
}

/// A whole rank that stops answering (its process frozen with SIGSTOP, as a hung node would
/// be) ends the pool with `RankLost`, naming it. Needs other ranks and a short rank timeout:
/// `.ci/run` runs it alone, as
/// `mpirun -n 3 -x MULTIPROC_RANK_TIMEOUT=3 <test binary> --ignored --exact <this test>`.
#[test]
#[ignore = "run under mpirun with MULTIPROC_RANK_TIMEOUT by .ci/run"]
fn a_frozen_rank_ends_the_pool_naming_it() {
    multiproc::init();
    assert!(cluster::size() >= 2, "run this test under mpirun");
    let pool = remote_pool(1);
    let agents: BTreeSet<(usize, u32)> = pool
        .map_chunked(where_am_i, 0..2000, 10)
        .unwrap()
        .into_iter()
        .collect();
    let ranks: BTreeSet<usize> = agents.iter().map(|a| a.0).collect();
    assert_eq!(ranks, worker_ranks());
    // Woken again however the test ends (MPI's finalisation waits for every rank).
    struct Thaw<'a>(&'a BTreeSet<(usize, u32)>);
    impl Drop for Thaw<'_> {
        fn drop(&mut self) {
            for &(_, pid) in self.0 {
                signal(pid, rustix::process::Signal::CONT);
            }
        }
    }
    let thaw = Thaw(&agents);
    for &(_, pid) in &agents {
        signal(pid, rustix::process::Signal::STOP);
    }
    // The signal takes effect asynchronously: a quick task could still be answered.
    assert!(
        common::eventually(Duration::from_secs(30), || agents
            .iter()
            .all(|&(_, pid)| common::stopped(pid))),
        "the agents did not stop"
    );
    match pool.apply(square, 3) {
        Err(Error::RankLost { rank, message }) => {
            assert!(ranks.contains(&(rank as usize)), "rank {rank}");
            assert!(message.contains("no word"), "{message}");
        }
        other => panic!("expected RankLost, got {other:?}"),
    }
    // The pool is over; later calls say why.
    assert!(matches!(pool.apply(square, 4), Err(Error::RankLost { .. })));
    drop(thaw);
    drop(pool);
}
