//! Rank 0's side of a cluster pool: building it across the ranks, and one handler thread
//! per other rank that serves that rank from the pool's queue, like a local handler serves
//! its worker process.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::agent::{PoolSpec, RemoteInit};
use super::net::{
    header, world, Incoming, World, A_FAILED, A_READY, A_RESULTS, A_STOPPED, M_BATCH, M_START,
    M_STOP,
};
use crate::pool::fail::TaskFail;
use crate::pool::sched::{Job, Shared, Take};
use crate::pool::wire::{Reader, ReplySeg};
use crate::{codec, cpu_count, Error, Pool, PoolBuilder, Result};

/// Encodes a builder's initializer for the other ranks (when the pool is built).
pub(crate) type RemoteInitFn = Arc<dyn Fn() -> Result<RemoteInit> + Send + Sync>;

/// The initializer `f(args)`, for the other ranks of a cluster pool.
pub(crate) fn remote_init<I, IR>(f: fn(I) -> IR, args: I) -> RemoteInitFn
where
    I: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
    IR: 'static,
{
    Arc::new(move || RemoteInit::new(f, &args))
}

/// What a [`Pool`] keeps of its other ranks.
pub(crate) struct Remote {
    pool: u64,
    routes: Vec<Sender<Incoming>>,
}

impl Remote {
    /// Tells every rank's handler that the pool is being terminated.
    pub(crate) fn terminate(&self) {
        for r in &self.routes {
            let _ = r.send(Incoming::Terminate);
        }
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        if let Some(w) = world() {
            w.unregister(self.pool);
        }
    }
}

static NEXT_POOL: AtomicU64 = AtomicU64::new(1);

/// Builds a cluster pool: a local pool on rank 0 whose queue is also served by every other
/// rank. A plain local pool when this is no MPI job (or a job of one rank).
pub(crate) fn build(b: PoolBuilder) -> Result<Pool> {
    let world = match world() {
        Some(w) if w.size > 1 => w,
        _ => {
            let n = if b.processes == 0 {
                cpu_count()
            } else {
                b.processes
            };
            return b.build_local(n, 0);
        }
    };
    let per_rank = if b.processes == 0 {
        (cpu_count() / world.local_ranks.max(1)).max(1)
    } else {
        b.processes
    };
    let root_n = b.root_processes.unwrap_or(per_rank);
    let init = match &b.remote_init {
        Some(f) => Some(f()?),
        None => None,
    };
    let spec = PoolSpec {
        processes: b.processes as u32,
        max_tasks: b.max_tasks.map(|m| m as u64),
        task_timeout_us: b.task_timeout.map(|d| d.as_micros() as u64),
        method: b.method,
        retries: b.retries,
        init,
    };
    let pool_id = NEXT_POOL.fetch_add(1, Ordering::Relaxed);
    let mut start = header(M_START, pool_id);
    codec::encode_into(&spec, &mut start)?;
    let ranks: Vec<usize> = (1..world.size).collect();
    let mut routes = Vec::new();
    let mut txs = Vec::new();
    let mut rxs = Vec::new();
    for &r in &ranks {
        let (tx, rx) = mpsc::channel();
        routes.push((r, tx.clone()));
        txs.push(tx);
        rxs.push(rx);
    }
    world.register(pool_id, routes);
    let remote = Remote {
        pool: pool_id,
        routes: txs,
    };
    for &r in &ranks {
        world.send(r, start.clone());
    }
    // Rank 0's own workers start meanwhile.
    let local = b.build_local(root_n, ranks.len());
    let mut counts = Vec::with_capacity(ranks.len());
    let mut failure: Option<TaskFail> = None;
    for (&rank, rx) in ranks.iter().zip(&rxs) {
        match wait_ready(rx, rank) {
            Ok(k) => counts.push(Some(k)),
            Err(f) => {
                counts.push(None);
                failure.get_or_insert(f);
            }
        }
    }
    let failure = match (&local, failure) {
        (Err(e), _) => Some(TaskFail::from_error(e)),
        (Ok(_), f) => f,
    };
    if let Some(f) = failure {
        // Stop what did start, everywhere.
        drop(local);
        for ((&rank, rx), k) in ranks.iter().zip(&rxs).zip(&counts) {
            if k.is_some() {
                stop_rank(world, pool_id, rank, true, rx);
            }
        }
        return Err(f.to_error());
    }
    let mut pool = local?;
    let shared = pool.shared.clone();
    let mut handles = Vec::new();
    let mut total = root_n;
    for ((rank, rx), k) in ranks.into_iter().zip(rxs).zip(counts) {
        let k = k.unwrap_or(1);
        total += k;
        let s = shared.clone();
        match std::thread::Builder::new()
            .name(format!("multiproc-rank-{rank}"))
            .spawn(move || handler(s, world, pool_id, rank, k, rx))
        {
            Ok(h) => handles.push(h),
            Err(_) => {
                // This rank serves nobody: stop its workers at once.
                shared.handler_exited();
                world.send(rank, stop_message(pool_id, true));
            }
        }
    }
    pool.handlers
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .extend(handles);
    pool.processes = total;
    pool.remote = Some(remote);
    Ok(pool)
}

/// Waits for a rank's answer to `M_START`: its number of workers, or why it failed.
fn wait_ready(rx: &Receiver<Incoming>, rank: usize) -> std::result::Result<usize, TaskFail> {
    loop {
        match rx.recv() {
            Ok(Incoming::Msg(A_READY, body)) => {
                let mut rd = Reader::new(&body);
                return rd
                    .u32()
                    .map(|k| k as usize)
                    .map_err(|e| TaskFail::from_error(&e));
            }
            Ok(Incoming::Msg(A_FAILED, body)) => return Err(decode_fail(&body)),
            Ok(Incoming::Lost(message)) => {
                return Err(TaskFail::RankLost {
                    rank: rank as u32,
                    message,
                })
            }
            Ok(_) => {}
            Err(_) => return Err(TaskFail::Closed),
        }
    }
}

fn decode_fail(body: &[u8]) -> TaskFail {
    codec::decode::<TaskFail>(body).unwrap_or_else(|e| {
        TaskFail::Codec(format!("a rank failed; its error could not be read: {e}"))
    })
}

fn stop_message(pool: u64, kill: bool) -> Vec<u8> {
    let mut m = header(M_STOP, pool);
    m.push(u8::from(kill));
    m
}

/// Asks `rank` to stop its workers for the pool and waits until it has (or is lost).
fn stop_rank(world: &World, pool: u64, rank: usize, kill: bool, rx: &Receiver<Incoming>) {
    world.send(rank, stop_message(pool, kill));
    loop {
        match rx.recv() {
            Ok(Incoming::Msg(A_STOPPED, _)) | Ok(Incoming::Lost(_)) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// A job on another rank, with the tasks answered so far.
struct Sent {
    job: Job,
    answered: Vec<bool>,
    left: usize,
}

impl Sent {
    /// Fails every task that has no outcome yet.
    fn fail_rest(&self, why: &TaskFail) {
        let mut i = 0;
        while i < self.answered.len() {
            if self.answered[i] {
                i += 1;
                continue;
            }
            let start = i;
            while i < self.answered.len() && !self.answered[i] {
                i += 1;
            }
            self.job.fail_tasks(start, i - start, why);
        }
    }
}

/// Tasks quicker than this count as short: more of them may wait on a rank.
const SHORT_TASK: Duration = Duration::from_millis(1);

/// Serves `rank` (with `workers` workers) from the pool's queue until the pool ends.
fn handler(
    shared: Arc<Shared>,
    world: &'static World,
    pool: u64,
    rank: usize,
    workers: usize,
    rx: Receiver<Incoming>,
) {
    let mut sent: HashMap<u64, Sent> = HashMap::new();
    let mut tasks = 0usize;
    let mut short = false;
    let mut since = Instant::now();
    let mut lost: Option<String> = None;
    let mut broken: Option<TaskFail> = None;
    let workers = workers.max(1);
    'outer: loop {
        // 1. Keep the rank's workers busy: a job per worker, and when tasks are short,
        //    more waiting there (each MPI message costs a round trip).
        loop {
            let room = sent.len() < workers
                || (short && sent.len() < 2 * workers + 8 && tasks < 512 * workers);
            if !room {
                break;
            }
            let idle = sent.is_empty();
            match shared.take(usize::MAX, idle) {
                Take::Exit if idle => break 'outer,
                Take::Exit | Take::Nothing => break,
                Take::Jobs(jobs) => {
                    if idle {
                        since = Instant::now();
                        short = false;
                    }
                    tasks += send_jobs(&shared, world, pool, rank, jobs, &mut sent);
                }
            }
        }
        if sent.is_empty() {
            continue;
        }
        // 2. Wait for the rank's answer.
        match rx.recv() {
            Ok(Incoming::Msg(A_RESULTS, body)) => match on_results(&mut sent, &body) {
                Ok(n) => {
                    tasks = tasks.saturating_sub(n);
                    if n > 0 {
                        short = since.elapsed() / (n as u32) < SHORT_TASK;
                        since = Instant::now();
                    }
                }
                Err(e) => {
                    broken = Some(TaskFail::from_error(&e));
                    break;
                }
            },
            Ok(Incoming::Msg(A_FAILED, body)) => {
                broken = Some(decode_fail(&body));
                break;
            }
            Ok(Incoming::Msg(..)) => {}
            Ok(Incoming::Terminate) | Err(_) => break,
            Ok(Incoming::Lost(m)) => {
                lost = Some(m);
                break;
            }
        }
    }
    // Leaving: what is still out there gets its outcome.
    if let Some(message) = lost {
        let f = TaskFail::RankLost {
            rank: rank as u32,
            message,
        };
        shared.set_broken(f.clone());
        for s in sent.values() {
            s.fail_rest(&f);
        }
    } else {
        let terminating = shared.lock().terminating;
        let f = match broken {
            Some(f) => {
                shared.set_broken(f.clone());
                f
            }
            None if terminating => TaskFail::Closed,
            None => TaskFail::Invalid("pool handler stopped".into()),
        };
        for s in sent.values() {
            s.fail_rest(&f);
        }
        stop_rank(world, pool, rank, terminating || !sent.is_empty(), &rx);
    }
    shared.handler_exited();
}

/// Sends `jobs` to `rank` in one message; returns the number of tasks sent.
fn send_jobs(
    shared: &Shared,
    world: &World,
    pool: u64,
    rank: usize,
    jobs: Vec<Job>,
    sent: &mut HashMap<u64, Sent>,
) -> usize {
    let mut buf = header(M_BATCH, pool);
    buf.extend_from_slice(&0u32.to_le_bytes());
    let mut fds = Vec::new();
    let mut njobs = 0u32;
    let mut ntasks = 0;
    for job in jobs.into_iter().flat_map(Job::materialize) {
        if job.is_empty() {
            continue;
        }
        if job.has_fds() {
            job.fail_all(&TaskFail::Invalid(
                "the task's arguments hold handles (file descriptors), which cannot travel to \
                 another MPI rank"
                    .into(),
            ));
            continue;
        }
        let id = shared.fresh_id();
        job.encode_into(id, 0, &mut buf, &mut fds);
        let n = job.len();
        njobs += 1;
        ntasks += n;
        sent.insert(
            id,
            Sent {
                job,
                answered: vec![false; n],
                left: n,
            },
        );
    }
    if njobs > 0 {
        buf[9..13].copy_from_slice(&njobs.to_le_bytes());
        world.send(rank, buf);
    }
    ntasks
}

/// Hands a rank's results to their jobs' sinks; returns the number of tasks answered.
fn on_results(sent: &mut HashMap<u64, Sent>, body: &[u8]) -> Result<usize> {
    let mut rd = Reader::new(body);
    let mut total = 0;
    while !rd.rest().is_empty() {
        let seg: ReplySeg<'_> = rd.segment()?;
        let (first, count) = (seg.first, seg.count);
        let Some(s) = sent.get_mut(&seg.id) else {
            continue;
        };
        let Some(slots) = s.answered.get_mut(first..first.saturating_add(count)) else {
            return Err(Error::codec("a rank answered tasks it was not given"));
        };
        if slots.iter().any(|a| *a) {
            return Err(Error::codec("a rank answered a task twice"));
        }
        slots.fill(true);
        s.job
            .deliver_segment(first, count, seg.kind, seg.payload, Vec::new())?;
        s.left -= count;
        total += count;
        if s.left == 0 {
            sent.remove(&seg.id);
        }
    }
    Ok(total)
}
