//! The points of a process's life that `start` owns, and what runs there: after a `fork`
//! (in the child), at exit, and in `init()` of the program's main process.
//!
//! `start` sits below `process` and `pool`, so it never names them: what those modules
//! need at these points they give as [`Hooks`], once, through the crate's `init()`
//! (`lib.rs`), the one place that sees every layer.
//!
//! This is the crate's one after-fork hook: [`after_fork_in_child`] is where a forked
//! child drops what belongs to its parent. Caches that can simply be recomputed (the
//! process identity and thread ids of the robust mutex, pooled manager connections) do
//! not register here: they compare `sys::fork_generation`, the one way to learn "I am a
//! forked child", on each use.

use std::sync::OnceLock;

use super::{child, forkserver, tracker};

/// What the modules above `start` run at the points [`start`](super) owns.
pub(crate) struct Hooks {
    /// In a child made by `fork`, right after the fork (after start's own resets): drop
    /// the parent's state (its children's handles, say).
    pub(crate) after_fork: &'static [fn()],
    /// When the process exits normally, and when a child finishes: before the fork
    /// server is stopped (terminate daemon children, wait for the others).
    pub(crate) at_exit: &'static [fn()],
    /// In `init()` of a process multiproc did not start (the program's main process, or a
    /// rank started by an MPI launcher).
    pub(crate) on_main_init: &'static [fn()],
}

static HOOKS: OnceLock<&'static Hooks> = OnceLock::new();

/// Records the hooks (the first call wins: they are the same every time).
pub(super) fn set(hooks: &'static Hooks) {
    let _ = HOOKS.set(hooks);
}

fn each(pick: fn(&Hooks) -> &'static [fn()]) {
    if let Some(h) = HOOKS.get() {
        for f in pick(h) {
            f();
        }
    }
}

/// Resets what a forked child must not share with its parent.
pub(super) fn after_fork_in_child() {
    crate::sys::forget_helpers_after_fork();
    tracker::forget_after_fork();
    forkserver::forget_after_fork();
    child::forget_after_fork();
    each(|h| h.after_fork);
}

/// The process is ending (normally, or a child finishing): the hooks, then the fork
/// server is stopped.
pub(super) fn at_exit() {
    each(|h| h.at_exit);
    tracker::hand_over_at_exit();
    forkserver::shutdown();
}

pub(super) extern "C" fn at_exit_c() {
    // The exiting thread's thread-locals are gone: no more `tracing` events (see there).
    crate::log::exiting();
    at_exit();
}

/// `init()` in a process that multiproc did not start.
pub(super) fn on_main_init() {
    each(|h| h.on_main_init);
}
