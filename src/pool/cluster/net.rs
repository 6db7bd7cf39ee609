//! The MPI side of each rank: the wire between ranks, the lock every MPI call is made
//! under, and rank 0's watch over the agents.
//!
//! MPI runs with `MPI_THREAD_SERIALIZED`: any thread may call MPI, one at a time, holding
//! [`mpi()`]. So the threads that wait for a message call MPI themselves, with no hand-off
//! to a thread of its own on the way: on rank 0 each handler thread (one per pool and
//! rank, `remote.rs`) sends its batches and receives its results, or a caller of `apply`
//! that borrowed an idle handler's line does; on an agent the pools' threads send their
//! results.
//!
//! Every message starts with `[kind u8][pool u64]`. Rank 0 → agent, tag [`TAG`]:
//! `M_START` + `[tag i32]` + the encoded `PoolSpec`; `M_BATCH` + `[njobs u32]` and jobs in
//! the pool's own job format (`Job::encode_into`); `M_STOP` + `[kill u8]`; `M_SHUTDOWN`
//! (pool 0). Agent → rank 0, with the pool's own tag (given in `M_START`, so that each
//! handler receives only its pool's messages, in order): `A_READY` + `[workers u32]`;
//! `A_FAILED` + an encoded `TaskFail`; `A_RESULTS` + result segments in the worker's reply
//! format (`[id u64][first u32][count u32][len u32][kind u8]` + `len` bytes); `A_STOPPED`,
//! the pool's last message. And with tag [`TAG`]: `A_ALIVE` (pool 0), the heartbeat.

use std::collections::HashMap;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mpi::environment::Threading;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;

use crate::sys::spare::SpareBuffers;
use crate::{sys, Error, Result};

/// The tag of rank 0's messages to the agents, and of the heartbeats. A pool's messages
/// to rank 0 have tags below it.
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

/// A message: its kind, the pool it is about, and its bytes (the header included).
pub(crate) struct Msg {
    pub(super) kind: u8,
    pub(super) pool: u64,
    bytes: Vec<u8>,
}

impl Msg {
    /// Splits a message's header off; `None` if it is too short to have one.
    pub(super) fn parse(bytes: Vec<u8>) -> Option<Msg> {
        let id: [u8; 8] = bytes.get(1..9)?.try_into().ok()?;
        Some(Msg {
            kind: bytes[0],
            pool: u64::from_le_bytes(id),
            bytes,
        })
    }

    /// The bytes after the header.
    pub(super) fn body(&self) -> &[u8] {
        &self.bytes[9..]
    }

    /// Done with: a large message's buffer goes back to the spare ones.
    pub(super) fn done(self) {
        recycle_large(self.bytes);
    }
}

/// What a rank-0 handler thread of one pool hears from rank 0's MPI thread.
pub(crate) enum Incoming {
    /// The pool is being terminated.
    Terminate,
    /// The rank is lost.
    Lost(String),
}

/// The process's MPI, with the sends that are still on their way. Every MPI call of the
/// process is made holding it (see [`mpi()`]).
pub(super) struct Mpi {
    pending: Vec<sys::mpi::PendingSend>,
    /// MPI is up (and not finalised yet): calls may be made.
    up: bool,
    /// Large buffers free for the next messages (see [`Mpi::buffer`]).
    spare: SpareBuffers,
}

static MPI: Mutex<Mpi> = Mutex::new(Mpi {
    pending: Vec::new(),
    up: false,
    spare: SpareBuffers::new(SPARE_BUFFERS, SPARE_MIN, SPARE_MAX),
});

/// At most this many spare buffers are kept...
const SPARE_BUFFERS: usize = 4;
/// ... each of at least this capacity (smaller ones cost little to make afresh) ...
pub(super) const SPARE_MIN: usize = 64 << 10;
/// ... and at most this one.
const SPARE_MAX: usize = 8 << 20;

/// Takes the MPI lock: only its holder calls MPI (`MPI_THREAD_SERIALIZED`). Hold it for
/// a few calls at most, never while waiting.
pub(super) fn mpi() -> MutexGuard<'static, Mpi> {
    MPI.lock().unwrap_or_else(|p| p.into_inner())
}

impl Mpi {
    /// Starts sending `bytes` to `rank` with `tag` (MPI owns them until the send is done).
    pub(super) fn send(&mut self, rank: usize, tag: i32, bytes: Vec<u8>) {
        if !self.up {
            return;
        }
        let world = SimpleCommunicator::world();
        match sys::mpi::isend(&world, rank as i32, tag, bytes) {
            Ok(p) => self.pending.push(p),
            Err(e) => crate::log::log_event!(Error, "MPI send to rank {rank}: {e}"),
        }
    }

    /// The next message that arrived with `tag` (from `from`, or from any rank), with its
    /// source. Lets finished sends go as well.
    pub(super) fn recv(&mut self, from: Option<usize>, tag: i32) -> Option<(usize, Vec<u8>)> {
        if !self.up {
            return None;
        }
        self.progress();
        let world = SimpleCommunicator::world();
        let probed = match from {
            Some(r) => world
                .process_at_rank(r as i32)
                .immediate_matched_probe_with_tag(tag)?,
            None => world.any_process().immediate_matched_probe_with_tag(tag)?,
        };
        let (message, status) = probed;
        let len = status.count(u8::equivalent_datatype()).max(0) as usize;
        // A large message lands in a spare buffer (given back by `recycle` once read).
        let mut bytes = self.spare.take(len);
        match sys::mpi::receive_into(message, len, &mut bytes) {
            Ok(()) => Some((status.source_rank() as usize, bytes)),
            Err(e) => {
                crate::log::log_event!(Error, "MPI receive: {e}");
                None
            }
        }
    }

    /// Lets finished sends go (their buffers are kept for reuse); whether any is still on
    /// its way.
    pub(super) fn progress(&mut self) -> bool {
        if self.up {
            let mut done = Vec::new();
            self.pending.retain_mut(|p| {
                if !p.test() {
                    return true;
                }
                done.extend(p.take_buffer());
                false
            });
            for b in done {
                self.recycle(b);
            }
        }
        !self.pending.is_empty()
    }

    /// An empty buffer for a message of about `size` bytes: a spare one (its memory is
    /// already the process's, so filling it costs no page faults), or a new one.
    pub(super) fn buffer(&mut self, size: usize) -> Vec<u8> {
        self.spare.take(size)
    }

    /// Keeps a large buffer no longer needed for a later [`buffer`](Self::buffer) (or
    /// drops it: a small or huge one, or when enough are kept).
    pub(super) fn recycle(&mut self, b: Vec<u8>) {
        self.spare.give(b);
    }
}

/// Gives a buffer back to the spare ones if it is large enough to be kept (a small one is
/// just dropped, without taking the MPI lock).
pub(super) fn recycle_large(b: Vec<u8>) {
    if b.capacity() >= SPARE_MIN {
        mpi().recycle(b);
    }
}

/// Waits (receiving nothing) until every send is done, or `limit` passed.
pub(super) fn flush(limit: Duration) {
    let end = Instant::now() + limit;
    while mpi().progress() && Instant::now() < end {
        std::thread::sleep(Duration::from_micros(50));
    }
}

/// How long a thread that waits for MPI messages yields the processor and looks again,
/// after the last activity, before it sleeps between looks.
pub(super) const SPIN: Duration = Duration::from_millis(1);

/// How a thread that waits for MPI messages (MPI cannot wake a sleeping thread) pauses
/// `idle` after the last activity: `None`, just yield the processor (a quick round trip
/// stays quick, and another process's thread on this core runs meanwhile); then sleeps
/// longer and longer, up to a millisecond.
pub(super) fn pause(idle: Duration) -> Option<Duration> {
    if idle < SPIN {
        None
    } else if idle < Duration::from_millis(10) {
        Some(Duration::from_micros(50))
    } else if idle < Duration::from_millis(100) {
        Some(Duration::from_micros(200))
    } else {
        Some(Duration::from_millis(1))
    }
}

/// Requests to rank 0's MPI thread.
enum Cmd {
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
    /// Sends `bytes` to agent `rank` (in the background).
    pub(crate) fn send(&self, rank: usize, bytes: Vec<u8>) {
        mpi().send(rank, TAG, bytes);
    }

    /// Tells each listed rank's channel when that rank is lost.
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
/// serves as rank 0's watch or as a node agent; MPI is finalised when it returns (under
/// the MPI lock, after which no thread calls MPI).
fn mpi_main(info: Sender<Result<(usize, usize, usize)>>, cmds: Receiver<Cmd>) {
    let Some((universe, threading)) = mpi::initialize_with_threading(Threading::Serialized) else {
        let _ = info.send(Err(Error::invalid("MPI was already initialised")));
        return;
    };
    if threading < Threading::Serialized {
        let _ = info.send(Err(Error::invalid(format!(
            "the MPI library gives too little thread support ({threading:?}; \
             MPI_THREAD_SERIALIZED is needed)"
        ))));
        return;
    }
    let (rank, size, local_ranks) = {
        let world = universe.world();
        let shared = world.split_shared(world.rank());
        (
            world.rank() as usize,
            world.size() as usize,
            shared.size().max(1) as usize,
        )
    };
    mpi().up = true;
    let _ = info.send(Ok((rank, size, local_ranks)));
    if rank == 0 {
        root_loop(size, cmds);
    } else {
        super::agent::run(local_ranks);
    }
    let mut m = mpi();
    m.up = false;
    drop(universe);
    drop(m);
}

/// The rank timeout: `MULTIPROC_RANK_TIMEOUT` seconds, 30 by default.
fn rank_timeout() -> Duration {
    std::env::var("MULTIPROC_RANK_TIMEOUT")
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .map_or(Duration::from_secs(30), Duration::from_secs_f64)
}

/// How often rank 0's MPI thread looks for heartbeats (and lets finished sends go).
const WATCH: Duration = Duration::from_millis(5);

/// Rank 0's MPI thread: watches that every agent is alive (its heartbeats), tells the
/// pools' handlers of a rank that is lost, and at the end tells every agent to stop.
fn root_loop(size: usize, cmds: Receiver<Cmd>) {
    let mut routes: HashMap<u64, Vec<(usize, Sender<Incoming>)>> = HashMap::new();
    let mut last_heard = vec![Instant::now(); size];
    let mut lost: Vec<Option<String>> = vec![None; size];
    let timeout = rank_timeout();
    let mut last_check = Instant::now();
    let mut shutdown = false;
    while !shutdown {
        // 1. What the pools ask for.
        let mut next = match cmds.recv_timeout(WATCH) {
            Ok(c) => Some(c),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => Some(Cmd::Shutdown),
        };
        while let Some(cmd) = next.take() {
            match cmd {
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
        // 2. The heartbeats.
        {
            let mut m = mpi();
            while let Some((src, _)) = m.recv(None, TAG) {
                if let Some(t) = last_heard.get_mut(src) {
                    *t = Instant::now();
                }
            }
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
    {
        let mut m = mpi();
        for rank in 1..size {
            m.send(rank, TAG, header(M_SHUTDOWN, 0));
        }
    }
    flush(Duration::from_secs(10));
}
