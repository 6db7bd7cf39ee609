//! Helpers shared by the integration tests: leak checks on processes and descriptors.
#![allow(dead_code)]

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
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
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
