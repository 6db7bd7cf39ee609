//! Helpers shared by the integration tests: leak checks on processes and descriptors.
#![allow(dead_code)]

pub mod echo;
pub mod heap_files;
pub mod items;

use std::time::{Duration, Instant};

/// Pids of zombie processes whose parent is this process.
pub fn zombies_of_me() -> Vec<u32> {
    let me = std::process::id();
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Some((state, ppid)) = stat(pid) {
            if state == 'Z' && ppid == me {
                out.push(pid);
            }
        }
    }
    out
}

/// (state, ppid) of a process from /proc/PID/stat.
pub fn stat(pid: u32) -> Option<(char, u32)> {
    stat_at(&format!("/proc/{pid}/stat"))
}

/// (state, ppid) from a `stat` file of /proc (a process's or one thread's).
fn stat_at(path: &str) -> Option<(char, u32)> {
    let s = std::fs::read_to_string(path).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let mut it = rest.split_whitespace();
    let state = it.next()?.chars().next()?;
    let ppid = it.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Whether `pid` exists and is not a zombie.
pub fn running(pid: u32) -> bool {
    matches!(stat(pid), Some((s, _)) if s != 'Z' && s != 'X')
}

/// Waits up to `limit` for `cond`; returns whether it became true.
pub fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < limit {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    cond()
}

/// How many descriptors more than before a process that sent large messages may hold: it
/// keeps up to this many of their memory files for reuse (how many depends on how many were
/// lent out at once), so a check for growth allows them.
#[allow(dead_code)]
pub const SPARE_MESSAGE_FILES: usize = 4;

/// Number of open descriptors of this process.
pub fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// Lets tests use the Fork start method inside the (multi-threaded) test harness.
pub fn allow_fork() {
    // SAFETY: the harness's other threads are parked (each test binary runs its tests in
    // separate processes under nextest), and forked children only run test functions.
    unsafe { multiproc::allow_fork_with_threads(true) };
}

/// Waits (bounded) until process `pid` is asleep ('S'): blocked in a system call.
///
/// The second half of a handshake: the child sets an `Event` (or sends a message) just
/// before the call that blocks, the test waits for that, then for this. Between the two the
/// child can only be running toward the call (state 'R'), so 'S' means it is in it.
pub fn until_asleep(pid: u32) {
    assert!(
        eventually(Duration::from_secs(30), || matches!(
            stat(pid),
            Some(('S', _))
        )),
        "process {pid} never blocked"
    );
}

/// Whether every thread of process `pid` is stopped ('T': SIGSTOP has taken effect).
pub fn stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().all(|t| {
        matches!(
            stat_at(&format!("{}/stat", t.path().display())),
            Some(('T', _))
        )
    })
}

/// Whether thread `tid` of process `pid` is asleep ('S'): blocked in a system call.
pub fn thread_asleep(pid: u32, tid: u32) -> bool {
    matches!(
        stat_at(&format!("/proc/{pid}/task/{tid}/stat")),
        Some(('S', _))
    )
}

/// The kernel's id of the calling thread (a child's target runs on its main thread, whose
/// id is the child's pid).
pub fn my_tid() -> u32 {
    let link = std::fs::read_link("/proc/thread-self").expect("/proc/thread-self");
    link.file_name().unwrap().to_str().unwrap().parse().unwrap()
}

/// Waits (bounded) until thread `tid` of process `pid` sleeps in a futex wait: blocked in a
/// lock, a semaphore, a condition or a queue. The same handshake as [`until_asleep`], for
/// a thread, and without having to set anything before it blocks: a thread that sleeps
/// anywhere else (a socket, a pipe) does not count.
pub fn until_in_futex_wait(pid: u32, tid: u32) {
    let stat = format!("/proc/{pid}/task/{tid}/stat");
    let wchan = format!("/proc/{pid}/task/{tid}/wchan");
    assert!(
        eventually(Duration::from_secs(30), || {
            let asleep = matches!(stat_at(&stat), Some(('S', _)));
            // Where the thread sleeps in the kernel ("0" where the kernel does not say).
            let w = std::fs::read_to_string(&wchan).unwrap_or_default();
            asleep && (w.contains("futex") || w.contains("mutex") || w == "0")
        }),
        "thread {tid} of {pid} never waited on a futex"
    );
}

/// A small xorshift generator for tests that kill at random moments: the victims and the
/// moments (the seed is printed so that a failing run can be replayed with `KILL_SEED`).
pub struct Rng(u64);

impl Rng {
    pub fn new() -> Rng {
        let seed = std::env::var("KILL_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        eprintln!("KILL_SEED={seed}");
        Rng(seed)
    }
    /// A number below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// The names in /dev/shm now.
pub fn shm_files() -> Vec<std::ffi::OsString> {
    let mut v: Vec<_> = std::fs::read_dir("/dev/shm")
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// Names in /dev/shm that mention multiproc and were not in `before`, and are still there
/// after up to 10 s: /dev/shm is the machine's, and a test of another process (nextest runs
/// several at once, and a second run of the suite may be going on) may have such a name for
/// a moment; a file this test left stays.
pub fn new_multiproc_files(before: &[std::ffi::OsString]) -> Vec<std::ffi::OsString> {
    let new = || -> Vec<std::ffi::OsString> {
        shm_files()
            .into_iter()
            .filter(|n| !before.contains(n) && n.to_string_lossy().contains("multiproc"))
            .collect()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let left = new();
        if left.is_empty() || std::time::Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// `len` bytes repeating every 65,537 (a prime: bytes moved by whole pages do not compare
/// equal), different for each `k`: for bit-exact checks of large messages.
pub fn prime_pattern(len: usize, k: usize) -> Vec<u8> {
    let unit: Vec<u8> = (0..65_537usize)
        .map(|i| (i.wrapping_mul(29) ^ (i >> 9) ^ k) as u8)
        .collect();
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        v.extend_from_slice(&unit[..unit.len().min(len - v.len())]);
    }
    v
}

/// The pids of this process's children (from every thread's `children` list).
pub fn children_of_me() -> Vec<u32> {
    let mut out = Vec::new();
    for t in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
            out.extend(s.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
        }
    }
    out
}
