//! The MPI thread of each rank: the only thread that calls MPI, and the wire between ranks.
//!
//! Every message has the tag [`TAG`] and starts with `[kind u8][pool u64]`.
//!
//! Rank 0 → agent: `M_START` + the encoded `PoolSpec`; `M_BATCH` + `[njobs u32]` and jobs
//! in the pool's own job format (`Job::encode_into`); `M_STOP` + `[kill u8]`;
//! `M_SHUTDOWN` (pool 0).
//!
//! Agent → rank 0: `A_READY` + `[workers u32]`; `A_FAILED` + an encoded `TaskFail`;
//! `A_RESULTS` + result segments in the worker's reply format
//! (`[id u64][first u32][count u32][len u32][kind u8]` + `len` bytes); `A_STOPPED`;
//! `A_ALIVE` (pool 0), the heartbeat.

use std::collections::HashMap;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mpi::environment::Threading;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;

use crate::{sys, Error, Result};

pub(super) const TAG: i32 = 0x6d70;
pub(super) const M_START: u8 = 1;
pub(super) const M_BATCH: u8 = 2;
pub(super) const M_STOP: u8 = 3;
pub(super) const M_SHUTDOWN: u8 = 4;
pub(super) const A_READY: u8 = 1;
pub(super) const A_FAILED: u8 = 2;
pub(super) const A_RESULTS: u8 = 3;
pub(super) const A_STOPPED: u8 = 4;
pub(super) const A_ALIVE: u8 = 5;

/// How often an agent says it is alive.
pub(super) const HEARTBEAT: Duration = Duration::from_secs(1);

/// The header of every message.
pub(super) fn header(kind: u8, pool: u64) -> Vec<u8> {
    let mut b = Vec::with_capacity(64);
    b.push(kind);
    b.extend_from_slice(&pool.to_le_bytes());
    b
}

/// What a rank-0 handler thread of one pool hears about its rank.
pub(crate) enum Incoming {
    /// A message from the rank: its kind and the bytes after the header.
    Msg(u8, Vec<u8>),
    /// The pool is being terminated.
    Terminate,
    /// The rank is lost.
    Lost(String),
}

/// Requests to rank 0's MPI thread.
enum Cmd {
    Send(usize, Vec<u8>),
    Register(u64, Vec<(usize, Sender<Incoming>)>),
    Unregister(u64),
    Shutdown,
}

/// The MPI job as rank 0 sees it.
pub(crate) struct World {
    pub(crate) size: usize,
    /// Ranks on this node (rank 0's included).
    pub(crate) local_ranks: usize,
    cmds: Sender<Cmd>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

static WORLD: OnceLock<Option<World>> = OnceLock::new();

/// The MPI job, on rank 0 of a launched program whose MPI is up.
pub(crate) fn world() -> Option<&'static World> {
    WORLD.get().and_then(|w| w.as_ref())
}

impl World {
    /// Sends `bytes` to `rank` (in the background).
    pub(crate) fn send(&self, rank: usize, bytes: Vec<u8>) {
        let _ = self.cmds.send(Cmd::Send(rank, bytes));
    }

    /// Routes messages about `pool` from each listed rank to its channel.
    pub(crate) fn register(&self, pool: u64, routes: Vec<(usize, Sender<Incoming>)>) {
        let _ = self.cmds.send(Cmd::Register(pool, routes));
    }

    pub(crate) fn unregister(&self, pool: u64) {
        let _ = self.cmds.send(Cmd::Unregister(pool));
    }
}

/// `init()`'s hook: in a program started by an MPI launcher, starts MPI on its own thread.
/// On rank 0 it returns; on any other rank this process becomes a node agent and exits
/// when rank 0 ends the job. Called once per process (later calls wait for the first).
pub(crate) fn on_init() {
    if !super::launched() {
        return;
    }
    WORLD.get_or_init(|| {
        let (info_tx, info_rx) = mpsc::channel();
        let (cmd_tx, cmd_rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("multiproc-mpi".into())
            .spawn(move || mpi_main(info_tx, cmd_rx));
        let thread = match thread {
            Ok(t) => t,
            Err(e) => {
                crate::log::log_event!(
                    Warning,
                    "cannot start the MPI thread ({e}); cluster pools run locally"
                );
                return None;
            }
        };
        match info_rx.recv() {
            Ok(Ok((0, size, local_ranks))) => {
                sys::at_exit(shutdown_at_exit);
                Some(World {
                    size,
                    local_ranks,
                    cmds: cmd_tx,
                    thread: Mutex::new(Some(thread)),
                })
            }
            Ok(Ok(_)) => {
                // A node agent: the MPI thread serves until rank 0 says stop.
                let code = match thread.join() {
                    Ok(()) => 0,
                    Err(_) => 1,
                };
                std::process::exit(code)
            }
            other => {
                let e = match other {
                    Ok(Err(e)) => e,
                    _ => Error::invalid("the MPI thread ended before MPI was initialised"),
                };
                if super::rank() != 0 {
                    crate::log::log_event!(Error, "rank {}: {e}", super::rank());
                    std::process::exit(1)
                }
                crate::log::log_event!(Warning, "{e}; cluster pools run locally");
                None
            }
        }
    });
}

/// At exit of rank 0: tells the agents to stop, finalises MPI.
extern "C" fn shutdown_at_exit() {
    let Some(w) = world() else { return };
    let _ = w.cmds.send(Cmd::Shutdown);
    let t = w.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(t) = t {
        let _ = t.join();
    }
}

/// The MPI thread's body: initialises MPI, reports `(rank, size, ranks on this node)`, then
/// serves as rank 0's post office or as a node agent; MPI is finalised when it returns.
fn mpi_main(info: Sender<Result<(usize, usize, usize)>>, cmds: Receiver<Cmd>) {
    let Some((universe, threading)) = mpi::initialize_with_threading(Threading::Funneled) else {
        let _ = info.send(Err(Error::invalid("MPI was already initialised")));
        return;
    };
    if matches!(threading, Threading::Single) {
        let _ = info.send(Err(Error::invalid(
            "the MPI library gives no thread support (MPI_THREAD_SINGLE)",
        )));
        return;
    }
    let world = universe.world();
    let rank = world.rank() as usize;
    let size = world.size() as usize;
    let local_ranks = world.split_shared(world.rank()).size().max(1) as usize;
    let _ = info.send(Ok((rank, size, local_ranks)));
    if rank == 0 {
        root_loop(&world, size, cmds);
    } else {
        super::agent::run(&world, local_ranks);
    }
    drop(universe);
}

/// Sends and receives for one rank, with the sends that are still on their way.
pub(super) struct Post<'a> {
    pub(super) world: &'a SimpleCommunicator,
    pending: Vec<sys::mpi::PendingSend>,
}

impl<'a> Post<'a> {
    pub(super) fn new(world: &'a SimpleCommunicator) -> Post<'a> {
        Post {
            world,
            pending: Vec::new(),
        }
    }

    pub(super) fn send(&mut self, rank: usize, bytes: Vec<u8>) {
        match sys::mpi::isend(self.world, rank as i32, TAG, bytes) {
            Ok(p) => self.pending.push(p),
            Err(e) => crate::log::log_event!(Error, "MPI send to rank {rank}: {e}"),
        }
    }

    /// The next message that arrived, with its source.
    pub(super) fn recv(&mut self) -> Option<(usize, Vec<u8>)> {
        let probed = self
            .world
            .any_process()
            .immediate_matched_probe_with_tag(TAG)?;
        let (bytes, status) = probed.matched_receive_vec::<u8>();
        Some((status.source_rank() as usize, bytes))
    }

    /// Lets finished sends go; whether any is still on its way.
    pub(super) fn progress(&mut self) -> bool {
        self.pending.retain_mut(|p| !p.test());
        !self.pending.is_empty()
    }

    /// Waits (receiving and dropping nothing) until every send is done, or `limit` passed.
    pub(super) fn flush(&mut self, limit: Duration) {
        let end = Instant::now() + limit;
        while self.progress() && Instant::now() < end {
            std::thread::sleep(Duration::from_micros(50));
        }
    }
}

/// How long an idle MPI thread waits before looking for messages again: not at all just
/// after some activity (a quick round trip stays quick), then longer and longer, up to a
/// millisecond.
pub(super) fn backoff(idle: Duration) -> Duration {
    if idle < Duration::from_micros(300) {
        Duration::ZERO
    } else if idle < Duration::from_millis(5) {
        Duration::from_micros(20)
    } else if idle < Duration::from_millis(100) {
        Duration::from_micros(200)
    } else {
        Duration::from_millis(1)
    }
}

/// The rank timeout: `MULTIPROC_RANK_TIMEOUT` seconds, 30 by default.
fn rank_timeout() -> Duration {
    std::env::var("MULTIPROC_RANK_TIMEOUT")
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .map_or(Duration::from_secs(30), Duration::from_secs_f64)
}

/// Rank 0's MPI thread: sends what the pools hand it, routes what the agents send, watches
/// that every agent is alive.
fn root_loop(world: &SimpleCommunicator, size: usize, cmds: Receiver<Cmd>) {
    let mut post = Post::new(world);
    let mut routes: HashMap<u64, Vec<(usize, Sender<Incoming>)>> = HashMap::new();
    let mut last_heard = vec![Instant::now(); size];
    let mut lost: Vec<Option<String>> = vec![None; size];
    let timeout = rank_timeout();
    let mut last_active = Instant::now();
    let mut last_check = Instant::now();
    let mut shutdown = false;
    while !shutdown {
        let mut active = false;
        // 1. What the pools ask for.
        let wait = if routes.is_empty() && !post.progress() {
            Duration::from_millis(100)
        } else {
            backoff(last_active.elapsed())
        };
        let first = if wait.is_zero() {
            std::thread::yield_now();
            cmds.try_recv().map_err(|e| match e {
                mpsc::TryRecvError::Empty => RecvTimeoutError::Timeout,
                mpsc::TryRecvError::Disconnected => RecvTimeoutError::Disconnected,
            })
        } else {
            cmds.recv_timeout(wait)
        };
        let mut next = match first {
            Ok(c) => Some(c),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => Some(Cmd::Shutdown),
        };
        while let Some(cmd) = next.take() {
            active = true;
            match cmd {
                Cmd::Send(rank, bytes) => {
                    if rank < size && lost[rank].is_none() {
                        post.send(rank, bytes);
                    }
                }
                Cmd::Register(pool, r) => {
                    for (rank, tx) in &r {
                        if let Some(Some(why)) = lost.get(*rank) {
                            let _ = tx.send(Incoming::Lost(why.clone()));
                        }
                    }
                    routes.insert(pool, r);
                }
                Cmd::Unregister(pool) => {
                    routes.remove(&pool);
                }
                Cmd::Shutdown => shutdown = true,
            }
            next = cmds.try_recv().ok();
        }
        // 2. What the agents sent.
        while let Some((src, bytes)) = post.recv() {
            active = true;
            if src >= size {
                continue;
            }
            last_heard[src] = Instant::now();
            if bytes.len() < 9 {
                continue;
            }
            let kind = bytes[0];
            let mut id = [0u8; 8];
            id.copy_from_slice(&bytes[1..9]);
            let pool = u64::from_le_bytes(id);
            if kind == A_ALIVE {
                continue;
            }
            if let Some(r) = routes.get(&pool) {
                if let Some((_, tx)) = r.iter().find(|(rank, _)| *rank == src) {
                    let _ = tx.send(Incoming::Msg(kind, bytes[9..].to_vec()));
                }
            }
        }
        post.progress();
        if active {
            last_active = Instant::now();
        }
        // 3. Is every agent alive?
        if last_check.elapsed() >= Duration::from_millis(500) {
            last_check = Instant::now();
            for rank in 1..size {
                if lost[rank].is_none() && last_heard[rank].elapsed() > timeout {
                    let why = format!(
                        "no word from it for {:.0?} (its node failed, or its process hangs)",
                        last_heard[rank].elapsed()
                    );
                    for r in routes.values() {
                        for (_, tx) in r.iter().filter(|(r, _)| *r == rank) {
                            let _ = tx.send(Incoming::Lost(why.clone()));
                        }
                    }
                    lost[rank] = Some(why);
                }
            }
        }
    }
    // Rank 0's main is over: every agent stops its workers and leaves (one declared lost
    // too: if it only hung, it may yet hear it; a send that never completes is left).
    for rank in 1..size {
        post.send(rank, header(M_SHUTDOWN, 0));
    }
    post.flush(Duration::from_secs(10));
}
