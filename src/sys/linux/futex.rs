//! Futex waits and wake-ups on words in shared memory, and the identity of processes
//! (pid + start time) used to tell whether a lock's holder is still alive.
//!
//! The futexes here are *shared* ones (no `FUTEX_PRIVATE_FLAG`): the word lives in a
//! mapping that several processes see, and the kernel keys the wait queue on the backing
//! file and offset, not on one process's address.

use std::cell::Cell;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustix::io::Errno;
use rustix::thread::futex;

/// How a [`wait`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wake {
    /// Woken, or the word no longer held the expected value, or interrupted: look again.
    Woken,
    /// The timeout passed.
    TimedOut,
}

/// Sleeps while `word` holds `expected`, for at most `timeout` (forever if `None`).
///
/// Spurious returns are possible: callers re-check their condition in a loop.
pub(crate) fn wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> Wake {
    let ts = timeout.map(|d| rustix::time::Timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as i64,
        tv_nsec: d.subsec_nanos() as _,
    });
    match futex::wait(word, futex::Flags::empty(), expected, ts.as_ref()) {
        Ok(()) => Wake::Woken,
        Err(Errno::TIMEDOUT) => Wake::TimedOut,
        // AGAIN: the value changed before we slept; INTR: a signal. Both: look again.
        Err(_) => Wake::Woken,
    }
}

/// Sleeps while `word` holds `expected`, until `deadline` (forever if `None`).
pub(crate) fn wait_until(word: &AtomicU32, expected: u32, deadline: Option<Instant>) -> Wake {
    match deadline {
        None => wait(word, expected, None),
        Some(d) => {
            let now = Instant::now();
            if now >= d {
                return Wake::TimedOut;
            }
            wait(word, expected, Some(d - now))
        }
    }
}

/// Wakes up to `n` processes or threads waiting on `word`. Returns how many were woken.
pub(crate) fn wake(word: &AtomicU32, n: u32) -> usize {
    futex::wake(word, futex::Flags::empty(), n.min(i32::MAX as u32)).unwrap_or(0)
}

/// Wakes every waiter on `word`.
pub(crate) fn wake_all(word: &AtomicU32) -> usize {
    wake(word, i32::MAX as u32)
}

// --- priority-inheritance futexes: the kernel half of the robust mutex -----------------------
//
// A PI futex word holds its owner's kernel thread id (bits 0..29), plus `PI_WAITERS` when a
// thread may be queued in the kernel and `PI_OWNER_DIED` when the kernel handed the lock on
// after its owner exited. The kernel knows the owner: when that thread exits while others
// are queued, it hands the lock to one of them at once; when it exits with nobody queued, the
// next `lock_pi`/`trylock_pi` is told so (`ESRCH`) at once. No polling is involved.

/// `FUTEX_WAITERS`: a thread may be queued in the kernel; the owner must unlock there.
pub(crate) const PI_WAITERS: u32 = 0x8000_0000;
/// `FUTEX_OWNER_DIED`: the kernel passed the lock on after its owner died.
pub(crate) const PI_OWNER_DIED: u32 = 0x4000_0000;
/// The owner's thread id in a PI futex word.
pub(crate) const PI_TID: u32 = 0x3fff_ffff;

/// How a kernel attempt to take a PI futex word ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pi {
    /// The caller owns the word now (the kernel wrote its thread id into it).
    Locked,
    /// The word names a thread that no longer exists, and nobody is queued: its owner died.
    OwnerGone,
    /// Held by a live thread (`trylock_pi`), or the deadline passed (`lock_pi`).
    Busy,
    /// The calling thread owns it already.
    Deadlock,
    /// The word and the kernel's record disagree (the word was handed over in user space
    /// while others were queued in the kernel): look again a little later.
    Inconsistent,
}

fn pi_result(r: rustix::io::Result<()>) -> Pi {
    match r {
        Ok(()) => Pi::Locked,
        Err(Errno::SRCH) => Pi::OwnerGone,
        Err(Errno::TIMEDOUT) | Err(Errno::AGAIN) | Err(Errno::INTR) | Err(Errno::NOMEM) => Pi::Busy,
        Err(Errno::DEADLK) => Pi::Deadlock,
        Err(_) => Pi::Inconsistent,
    }
}

/// Whether the kernel has `FUTEX_LOCK_PI2` (Linux 5.14; monotonic deadlines). 0 unknown,
/// 1 yes, 2 no.
static LOCK_PI2: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// `now + left` on `clock`, as an absolute timespec.
fn abs_deadline(clock: rustix::time::ClockId, left: Duration) -> rustix::time::Timespec {
    let now = rustix::time::clock_gettime(clock);
    let mut sec = now
        .tv_sec
        .saturating_add(left.as_secs().min(i64::MAX as u64 / 2) as i64);
    let mut nsec = now.tv_nsec as i64 + left.subsec_nanos() as i64;
    if nsec >= 1_000_000_000 {
        sec = sec.saturating_add(1);
        nsec -= 1_000_000_000;
    }
    rustix::time::Timespec {
        tv_sec: sec,
        tv_nsec: nsec as _,
    }
}

/// Takes the PI futex `word` in the kernel, sleeping until `deadline` (`None`: for ever)
/// while a live thread owns it. Call it only after the user-space fast path failed.
pub(crate) fn lock_pi(word: &AtomicU32, deadline: Option<Instant>) -> Pi {
    let left = match deadline {
        None => None,
        Some(d) => match d.checked_duration_since(Instant::now()) {
            Some(l) if !l.is_zero() => Some(l),
            _ => return trylock_pi(word),
        },
    };
    if LOCK_PI2.load(Ordering::Relaxed) != 2 {
        let ts = left.map(|l| abs_deadline(rustix::time::ClockId::Monotonic, l));
        match futex::lock_pi2(word, futex::Flags::empty(), ts.as_ref()) {
            Err(Errno::NOSYS) => LOCK_PI2.store(2, Ordering::Relaxed),
            r => {
                LOCK_PI2.store(1, Ordering::Relaxed);
                return pi_result(r);
            }
        }
    }
    // FUTEX_LOCK_PI measures its absolute deadline on the real-time clock.
    let ts = left.map(|l| abs_deadline(rustix::time::ClockId::Realtime, l));
    pi_result(futex::lock_pi(word, futex::Flags::empty(), ts.as_ref()))
}

/// Tries once to take the PI futex `word` in the kernel, without sleeping. Unlike a
/// compare-and-swap, this learns from the kernel whether the owner still exists.
pub(crate) fn trylock_pi(word: &AtomicU32) -> Pi {
    match futex::trylock_pi(word, futex::Flags::empty()) {
        Ok(true) => Pi::Locked,
        Ok(false) => Pi::Busy,
        Err(e) => match pi_result(Err(e)) {
            Pi::Locked => Pi::Busy,
            other => other,
        },
    }
}

/// Releases the PI futex `word`, owned by the calling thread, in the kernel (which hands
/// it to the first queued thread, if any). False if the kernel does not see the caller as
/// its owner.
pub(crate) fn unlock_pi(word: &AtomicU32) -> bool {
    futex::unlock_pi(word, futex::Flags::empty()).is_ok()
}

// --- process identity ---------------------------------------------------------------------

/// This process's identity, cached: `pid | (start_time_ticks as u32) << 32`, valid for the
/// fork generation in [`IDENT_GEN`]. 0 = not yet known.
static IDENT: AtomicU64 = AtomicU64::new(0);
/// The fork generation ([`super::process::fork_generation`]) [`IDENT`] belongs to.
static IDENT_GEN: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// (fork generation, kernel thread id, process identity) of the calling thread.
    static ME: Cell<(u64, u32, u64)> = const { Cell::new((0, 0, 0)) };
}

/// Packs a pid and its start time into an identity word.
pub(crate) fn make_ident(pid: u32, start: u64) -> u64 {
    (pid as u64) | ((start as u32 as u64) << 32)
}

/// The identity word of process `pid` (its start time 0 if it cannot be read: then only
/// the pid counts, see [`process_gone`]).
pub(crate) fn ident_of(pid: u32) -> u64 {
    make_ident(pid, proc_start_time(pid).unwrap_or(0))
}

/// The pid part of an identity word.
pub(crate) fn ident_pid(ident: u64) -> u32 {
    ident as u32
}

/// This process's identity word (pid and start time), cached after the first call (and
/// again after a fork).
#[inline]
pub(crate) fn current_ident() -> u64 {
    let g = super::process::fork_generation();
    // IDENT_GEN is stored after IDENT: seeing the current generation there means IDENT is
    // this process's.
    if IDENT_GEN.load(Ordering::Acquire) == g {
        let v = IDENT.load(Ordering::Relaxed);
        if v != 0 {
            return v;
        }
    }
    compute_ident(g)
}

#[cold]
fn compute_ident(g: u64) -> u64 {
    let pid = super::process::getpid();
    let start = proc_start_time(pid).unwrap_or(0);
    let v = make_ident(pid, start);
    IDENT.store(v, Ordering::Relaxed);
    IDENT_GEN.store(g, Ordering::Release);
    v
}

/// The calling thread's kernel thread id and its process's identity word, cached per thread
/// (and asked again after a fork): one thread-local read and one relaxed load on the hot path
/// of every lock.
#[inline]
pub(crate) fn current_thread() -> (u32, u64) {
    let g = super::process::fork_generation_now();
    ME.with(|c| {
        let (cg, tid, ident) = c.get();
        if cg == g && tid != 0 {
            return (tid, ident);
        }
        refresh_thread(c)
    })
}

#[cold]
fn refresh_thread(c: &Cell<(u64, u32, u64)>) -> (u32, u64) {
    // Registers the fork hook before anything is cached.
    let g = super::process::fork_generation();
    let tid = rustix::thread::gettid().as_raw_nonzero().get() as u32;
    let ident = current_ident();
    c.set((g, tid, ident));
    (tid, ident)
}

/// The calling thread's kernel thread id, cached (and asked again after a fork).
#[inline]
pub(crate) fn current_tid() -> u32 {
    current_thread().0
}

/// What `/proc/<pid>/stat` says: (state letter, start time in clock ticks since boot).
fn proc_stat(pid: u32) -> Option<(u8, u64)> {
    let s = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may itself contain ") ": parse after the last.
    let close = s.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(s.get(close + 2..)?).ok()?;
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.bytes().next()?;
    // `state` is field 3; starttime is field 22: 19 further on.
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

fn proc_start_time(pid: u32) -> Option<u64> {
    proc_stat(pid).map(|(_, s)| s)
}

/// Is the process `pid` gone (exited, even if not yet reaped)?
///
/// `ident` is the identity the holder recorded for itself, if it is known to belong to
/// `pid` (its pid part equals `pid`): then a process now running under the same pid but
/// started at another time is a different one (the pid was reused), and counts as gone.
pub(crate) fn process_gone(pid: u32, ident: Option<u64>) -> bool {
    if pid == 0 {
        return false;
    }
    match proc_stat(pid) {
        Some((state, start)) => {
            if state == b'Z' || state == b'X' {
                return true;
            }
            match ident {
                Some(id) if ident_pid(id) == pid && (id >> 32) != 0 => {
                    (start as u32 as u64) != (id >> 32)
                }
                _ => false,
            }
        }
        None => {
            // No /proc entry: gone, unless /proc is not mounted; ask kill(pid, 0) then. A
            // number past `i32::MAX` (garbage in a word another process can write) names no
            // process at all.
            match i32::try_from(pid)
                .ok()
                .and_then(rustix::process::Pid::from_raw)
            {
                Some(p) => matches!(rustix::process::test_kill_process(p), Err(Errno::SRCH)),
                None => true,
            }
        }
    }
}

/// Is the process with identity word `ident` gone? (See [`process_gone`].)
pub(crate) fn ident_gone(ident: u64) -> bool {
    process_gone(ident_pid(ident), Some(ident))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An identity word whose pid part does not fit a pid (garbage another process wrote)
    /// names a process that is gone, and asking does not panic.
    #[test]
    fn a_pid_past_i32_max_is_gone() {
        assert!(process_gone(u32::MAX, None));
        assert!(process_gone(1 << 31, None));
        assert!(ident_gone(u64::MAX));
    }

    #[test]
    fn own_identity_is_alive() {
        let me = current_ident();
        assert_eq!(ident_pid(me), super::super::process::getpid());
        assert!(!ident_gone(me));
        // Same pid, another start time: a reused pid, so "gone".
        let other = make_ident(ident_pid(me), (me >> 32) + 1);
        assert!(ident_gone(other));
        assert!(current_tid() > 0);
    }

    #[test]
    fn wait_times_out_and_wakes() {
        let w = AtomicU32::new(5);
        assert_eq!(wait(&w, 6, Some(Duration::from_millis(1))), Wake::Woken);
        assert_eq!(wait(&w, 5, Some(Duration::from_millis(5))), Wake::TimedOut);
        assert_eq!(wake(&w, 1), 0);
    }
}
