//! A node agent: what every rank but 0 runs instead of `main`. It builds a local pool for
//! each cluster pool of rank 0, feeds it the jobs rank 0 sends, and sends the results back.
//! Runs on the rank's MPI thread (the only one that calls MPI); the local pools' threads
//! hand it their results through a channel.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mpi::topology::SimpleCommunicator;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::net::{
    backoff, header, Post, A_ALIVE, A_FAILED, A_READY, A_RESULTS, A_STOPPED, HEARTBEAT, M_BATCH,
    M_SHUTDOWN, M_START, M_STOP,
};
use crate::pool::fail::TaskFail;
use crate::pool::sched::{Job, Sink};
use crate::pool::wire::{push_segment, Reader, SEG_FAIL, SEG_OK};
use crate::{codec, cpu_count, sys, Error, Pool, PoolBuilder, Result, StartMethod};

/// A cluster pool's settings, as sent to every agent.
#[derive(Serialize, Deserialize)]
pub(super) struct PoolSpec {
    /// Workers per rank; 0: this node's cores shared among its ranks.
    pub(super) processes: u32,
    pub(super) max_tasks: Option<u64>,
    pub(super) task_timeout_us: Option<u64>,
    pub(super) method: Option<StartMethod>,
    pub(super) retries: u32,
    pub(super) init: Option<RemoteInit>,
}

/// The initializer, as an agent rebuilds it: a checked reference to
/// [`apply_init::<I, IR>`] and the user's function, with the encoded arguments.
#[derive(Serialize, Deserialize, Clone)]
pub(crate) struct RemoteInit {
    entry: i64,
    entry_sig: u64,
    target: i64,
    target_sig: u64,
    #[serde(with = "serde_bytes")]
    args: Vec<u8>,
}

/// Gives a builder the initializer named by a [`RemoteInit`].
type ApplyInit = fn(PoolBuilder, i64, u64, &[u8]) -> Result<PoolBuilder>;

fn apply_init<I, IR>(b: PoolBuilder, target: i64, sig: u64, args: &[u8]) -> Result<PoolBuilder>
where
    I: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
    IR: 'static,
{
    let f = sys::fn_at::<fn(I) -> IR>(target, sys::build_id(), sig).ok_or_else(|| {
        Error::BuildMismatch("the pool's initializer does not match on this rank".into())
    })?;
    let a: I = codec::decode(args)?;
    Ok(b.initializer(f, a))
}

impl RemoteInit {
    /// The initializer `f` with `args`, encoded once for every rank. Handles cannot travel.
    pub(crate) fn new<I, IR>(f: fn(I) -> IR, args: &I) -> Result<RemoteInit>
    where
        I: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
        IR: 'static,
    {
        let mut bytes = Vec::new();
        if !codec::encode_with_fds(args, &mut bytes)?.is_empty() {
            return Err(Error::invalid(
                "the initializer's arguments hold handles (file descriptors), which cannot \
                 travel to another MPI rank",
            ));
        }
        Ok(RemoteInit {
            entry: sys::offset_of(apply_init::<I, IR> as ApplyInit as usize),
            entry_sig: sys::type_sig::<ApplyInit>(),
            target: sys::offset_of(f as usize),
            target_sig: sys::type_sig::<fn(I) -> IR>(),
            args: bytes,
        })
    }
}

/// The local pool for a spec.
fn build_local(spec: &[u8], local_ranks: usize) -> Result<Pool> {
    let spec: PoolSpec = codec::decode(spec)?;
    let n = match spec.processes {
        0 => (cpu_count() / local_ranks.max(1)).max(1),
        n => n as usize,
    };
    let mut b = PoolBuilder::new().processes(n);
    if let Some(m) = spec.max_tasks {
        b = b.maxtasksperchild(m as usize);
    }
    if let Some(t) = spec.task_timeout_us {
        b = b.task_timeout(Duration::from_micros(t));
    }
    if let Some(m) = spec.method {
        b = b.start_method(m);
    }
    b = b.retries(spec.retries);
    if let Some(i) = spec.init {
        let apply =
            sys::fn_at::<ApplyInit>(i.entry, sys::build_id(), i.entry_sig).ok_or_else(|| {
                Error::BuildMismatch("rank 0 runs another build of this program".into())
            })?;
        b = apply(b, i.target, i.target_sig, &i.args)?;
    }
    b.build()
}

/// What the agent's helpers tell its MPI thread.
enum Event {
    /// A result segment for rank 0.
    Seg(u64, Vec<u8>),
    Built(u64, std::result::Result<Pool, TaskFail>),
    Stopped(u64),
}

/// A segment in the worker's reply format.
fn segment(id: u64, first: usize, count: usize, kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(21 + payload.len());
    push_segment(&mut b, id, first, count, kind, payload);
    b
}

/// Where the local pool puts the outcomes of a job from rank 0: back to rank 0.
struct RemoteSink {
    pool: u64,
    id: u64,
    tx: Sender<Event>,
}

impl Sink for RemoteSink {
    fn deliver(&self, first: usize, count: usize, payload: &[u8], fds: Vec<OwnedFd>) {
        if !fds.is_empty() {
            let why = TaskFail::Invalid(
                "a task's result holds handles (file descriptors), which cannot travel to rank 0"
                    .into(),
            );
            return self.fail(first, count, &why);
        }
        let seg = segment(self.id, first, count, SEG_OK, payload);
        let _ = self.tx.send(Event::Seg(self.pool, seg));
    }

    fn fail(&self, first: usize, count: usize, why: &TaskFail) {
        let payload = codec::encode(why).unwrap_or_default();
        let seg = segment(self.id, first, count, SEG_FAIL, &payload);
        let _ = self.tx.send(Event::Seg(self.pool, seg));
    }
}

/// Decodes a batch from rank 0 and queues its jobs on `pool`.
fn submit_batch(pool: &Pool, id: u64, body: &[u8], tx: &Sender<Event>) -> Result<()> {
    let mut rd = Reader::new(body);
    let n = rd.u32()?;
    let mut jobs = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let (_, job) = Job::decode_wire(&mut rd, |job_id| {
            Arc::new(RemoteSink {
                pool: id,
                id: job_id,
                tx: tx.clone(),
            }) as Arc<dyn Sink>
        })?;
        jobs.push(job);
    }
    pool.shared.submit(jobs, true);
    Ok(())
}

/// Most bytes of results sent to rank 0 in one message.
const MAX_RESULTS_MSG: usize = 4 << 20;

/// The agent's loop; returns when rank 0 says the job is over (every local worker reaped).
pub(super) fn run(world: &SimpleCommunicator, local_ranks: usize) {
    let mut post = Post::new(world);
    let (tx, rx) = mpsc::channel::<Event>();
    let mut pools: HashMap<u64, Arc<Pool>> = HashMap::new();
    let mut out: HashMap<u64, Vec<u8>> = HashMap::new();
    let mut stoppers: Vec<std::thread::JoinHandle<()>> = Vec::new();
    let mut last_beat = Instant::now();
    post.send(0, header(A_ALIVE, 0));
    let mut last_active = Instant::now();
    let mut shutdown = false;
    while !shutdown {
        let mut active = false;
        // 1. What rank 0 sent.
        while let Some((src, bytes)) = post.recv() {
            active = true;
            if src != 0 || bytes.len() < 9 {
                continue;
            }
            let kind = bytes[0];
            let mut idb = [0u8; 8];
            idb.copy_from_slice(&bytes[1..9]);
            let id = u64::from_le_bytes(idb);
            let body = &bytes[9..];
            match kind {
                M_START => {
                    let to_me = tx.clone();
                    let spec = body.to_vec();
                    let r = std::thread::Builder::new()
                        .name("multiproc-agent-start".into())
                        .spawn(move || {
                            let r = build_local(&spec, local_ranks)
                                .map_err(|e| TaskFail::from_error(&e));
                            let _ = to_me.send(Event::Built(id, r));
                        });
                    if let Err(e) = r {
                        let _ = tx.send(Event::Built(id, Err(TaskFail::from_error(&e.into()))));
                    }
                }
                M_BATCH => {
                    let r = match pools.get(&id) {
                        Some(p) => submit_batch(p, id, body, &tx),
                        None => Err(Error::Closed),
                    };
                    if let Err(e) = r {
                        let mut m = header(A_FAILED, id);
                        let _ = codec::encode_into(&TaskFail::from_error(&e), &mut m);
                        post.send(0, m);
                    }
                }
                M_STOP => match pools.remove(&id) {
                    Some(p) => {
                        let kill = body.first() == Some(&1);
                        let tx = tx.clone();
                        let r = std::thread::Builder::new()
                            .name("multiproc-agent-stop".into())
                            .spawn(move || {
                                if kill {
                                    let _ = p.terminate();
                                } else {
                                    p.close();
                                    let _ = p.join();
                                }
                                drop(p);
                                let _ = tx.send(Event::Stopped(id));
                            });
                        match r {
                            Ok(h) => stoppers.push(h),
                            Err(_) => post.send(0, header(A_STOPPED, id)),
                        }
                    }
                    None => post.send(0, header(A_STOPPED, id)),
                },
                M_SHUTDOWN => shutdown = true,
                _ => {}
            }
        }
        if shutdown {
            break;
        }
        // 2. What the local pools did.
        let wait =
            backoff(last_active.elapsed()).min(HEARTBEAT.saturating_sub(last_beat.elapsed()));
        let first = if wait.is_zero() {
            std::thread::yield_now();
            rx.try_recv().map_err(|_| RecvTimeoutError::Timeout)
        } else {
            rx.recv_timeout(wait)
        };
        let mut next = first.ok();
        while let Some(ev) = next.take() {
            active = true;
            match ev {
                Event::Seg(id, seg) => {
                    let buf = out.entry(id).or_insert_with(|| header(A_RESULTS, id));
                    buf.extend_from_slice(&seg);
                    if buf.len() >= MAX_RESULTS_MSG {
                        if let Some(b) = out.remove(&id) {
                            post.send(0, b);
                        }
                    }
                }
                Event::Built(id, Ok(p)) => {
                    let mut m = header(A_READY, id);
                    m.extend_from_slice(&(p.processes() as u32).to_le_bytes());
                    pools.insert(id, Arc::new(p));
                    post.send(0, m);
                }
                Event::Built(id, Err(f)) => {
                    let mut m = header(A_FAILED, id);
                    let _ = codec::encode_into(&f, &mut m);
                    post.send(0, m);
                }
                Event::Stopped(id) => {
                    // Results sent before the pool stopped go first.
                    if let Some(b) = out.remove(&id) {
                        post.send(0, b);
                    }
                    post.send(0, header(A_STOPPED, id));
                }
            }
            next = rx.try_recv().ok();
        }
        for (_, b) in out.drain() {
            post.send(0, b);
        }
        if last_beat.elapsed() >= HEARTBEAT {
            last_beat = Instant::now();
            post.send(0, header(A_ALIVE, 0));
        }
        post.progress();
        if active {
            last_active = Instant::now();
        }
    }
    // The job is over: stop every local worker.
    for p in pools.values() {
        let _ = p.terminate();
    }
    drop(pools);
    for h in stoppers {
        let _ = h.join();
    }
    post.flush(Duration::from_secs(10));
}
