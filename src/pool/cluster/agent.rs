//! A node agent: what every rank but 0 runs instead of `main`. It builds a local pool for
//! each cluster pool of rank 0, feeds it the jobs rank 0 sends, and sends the results back.
//! Runs on the rank's MPI thread, which receives what rank 0 sends and runs a lone task
//! (an `apply`) on an idle local worker itself; the local pools' threads send each result
//! to rank 0 themselves, as it comes (under the MPI lock).

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::net::{
    flush, header, mpi, pause, Msg, A_ALIVE, A_FAILED, A_READY, A_RESULTS, A_STOPPED, HEARTBEAT,
    M_BATCH, M_SHUTDOWN, M_START, M_STOP, SPARE_MIN, TAG,
};
use crate::pool::fail::TaskFail;
use crate::pool::sched::{Job, Sink};
use crate::pool::wire::{push_segment, Reader, SEG_FAIL, SEG_OK};
use crate::sys::{AnyFnRef, FnRef};
use crate::{codec, cpu_count, Error, Pool, PoolBuilder, Result, StartMethod};

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
    /// The trampoline and the initializer, as offsets and type fingerprints only: other
    /// ranks run the same program, but perhaps from another file (another node), so the
    /// build identity, which names the file, is not compared (as for a pool worker).
    entry: (i64, u64),
    target: (i64, u64),
    #[serde(with = "serde_bytes")]
    args: Vec<u8>,
}

/// Gives a builder the initializer named by a [`RemoteInit`].
type ApplyInit = fn(PoolBuilder, AnyFnRef, &[u8]) -> Result<PoolBuilder>;

fn apply_init<I, IR>(b: PoolBuilder, target: AnyFnRef, args: &[u8]) -> Result<PoolBuilder>
where
    I: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
    IR: std::process::Termination + 'static,
{
    let f = target.typed::<fn(I) -> IR>().get().ok_or_else(|| {
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
        IR: std::process::Termination + 'static,
    {
        let mut bytes = Vec::new();
        if !codec::encode_with_fds(args, &mut bytes)?.is_empty() {
            return Err(Error::invalid(
                "the initializer's arguments hold handles (file descriptors), which cannot \
                 travel to another MPI rank",
            ));
        }
        Ok(RemoteInit {
            entry: FnRef::of(apply_init::<I, IR> as ApplyInit)
                .erase()
                .to_wire(),
            target: FnRef::of(f).erase().to_wire(),
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
    let mut b = PoolBuilder::new().processes(n).results_leave_node();
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
        let apply = AnyFnRef::from_wire(i.entry.0, i.entry.1)
            .typed::<ApplyInit>()
            .get()
            .ok_or_else(|| {
                Error::BuildMismatch("rank 0 runs another build of this program".into())
            })?;
        b = apply(b, AnyFnRef::from_wire(i.target.0, i.target.1), &i.args)?;
    }
    b.build()
}

/// What the agent's helper threads tell its MPI thread.
enum Event {
    Built(u64, std::result::Result<Pool, TaskFail>),
    Stopped(u64),
}

/// Where the local pool puts the outcomes of a job from rank 0: straight to rank 0, one
/// message per reply of the worker, with the pool's tag.
struct RemoteSink {
    pool: u64,
    tag: i32,
    id: u64,
}

impl RemoteSink {
    /// Sends one segment of results (in the worker's reply format) to rank 0.
    fn send(&self, first: usize, count: usize, kind: u8, payload: &[u8]) {
        let size = 9 + 21 + payload.len();
        let mut m = if size >= SPARE_MIN {
            // A spare buffer (its pages already this process's), given back once sent.
            let mut m = mpi().buffer(size);
            m.extend_from_slice(&header(A_RESULTS, self.pool));
            m
        } else {
            let mut m = header(A_RESULTS, self.pool);
            m.reserve(21 + payload.len());
            m
        };
        push_segment(&mut m, self.id, first, count, kind, payload);
        mpi().send(0, self.tag, m);
    }
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
        self.send(first, count, SEG_OK, payload);
    }

    fn fail(&self, first: usize, count: usize, why: &TaskFail) {
        let payload = codec::encode(why).unwrap_or_default();
        self.send(first, count, SEG_FAIL, &payload);
    }
}

/// Decodes a batch from rank 0 and queues its jobs on `pool`; a lone task is given back
/// instead when `direct` (for the caller to run on an idle local worker itself).
fn submit_batch(
    pool: &Arc<Pool>,
    id: u64,
    tag: i32,
    body: &[u8],
    direct: bool,
) -> Result<Option<Job>> {
    let mut rd = Reader::new(body);
    let n = rd.u32()?;
    let mut jobs = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let (_, job) = Job::decode_wire(&mut rd, |job_id| {
            Arc::new(RemoteSink {
                pool: id,
                tag,
                id: job_id,
            }) as Arc<dyn Sink>
        })?;
        // Rank 0 sends a map's chunk whole: cut it as the local pool cuts its own.
        jobs.extend(job.cut_large());
    }
    if direct && jobs.len() == 1 && jobs[0].len() == 1 {
        return Ok(jobs.pop());
    }
    pool.shared.submit(jobs, true);
    Ok(None)
}

/// A pool of rank 0 as this agent serves it.
struct Served {
    /// Its tag, for the messages to rank 0.
    tag: i32,
    /// Its local pool, once built.
    pool: Option<Arc<Pool>>,
}

/// What the agent knows and does, one look ([`Agent::step`]) at a time: normally on the
/// MPI thread; while that thread runs a lone task, on the cover thread.
struct Agent {
    local_ranks: usize,
    pools: HashMap<u64, Served>,
    stoppers: Vec<std::thread::JoinHandle<()>>,
    /// The helper threads' line to the agent.
    tx: mpsc::Sender<Event>,
    rx: mpsc::Receiver<Event>,
    /// An event that came while waiting.
    held: Option<Event>,
    inbox: Vec<Vec<u8>>,
    last_beat: Instant,
    last_active: Instant,
    /// Rank 0 said the job is over.
    shutdown: bool,
}

/// A lone task from rank 0, to run on an idle local worker.
type Lone = (Arc<Pool>, Job);

impl Agent {
    /// Looks once at what rank 0 sent and what the helper threads did, and says the agent
    /// is alive when it is time. Returns a lone task for the caller to run itself, when
    /// `direct` (otherwise lone tasks queue like any).
    fn step(&mut self, mut direct: bool) -> Option<Lone> {
        let mut lone = None;
        let mut active = false;
        // 1. What rank 0 sent.
        {
            let mut m = mpi();
            while let Some((_, bytes)) = m.recv(Some(0), TAG) {
                self.inbox.push(bytes);
            }
        }
        let inbox = std::mem::take(&mut self.inbox);
        for bytes in inbox {
            active = true;
            let Some(msg) = Msg::parse(bytes) else {
                continue;
            };
            if let Some(l) = self.on_message(&msg, direct) {
                direct = false;
                lone = Some(l);
            }
            msg.done();
            if self.shutdown {
                return lone;
            }
        }
        // 2. What the helper threads did.
        while let Some(ev) = self.held.take().or_else(|| self.rx.try_recv().ok()) {
            active = true;
            self.on_event(ev);
        }
        if self.last_beat.elapsed() >= HEARTBEAT {
            self.last_beat = Instant::now();
            mpi().send(0, TAG, header(A_ALIVE, 0));
        }
        if active {
            self.last_active = Instant::now();
        }
        lone
    }

    /// How long to wait before the next look (`None`: just yield the processor): MPI
    /// cannot wake the thread that waits.
    fn pause(&self) -> Option<Duration> {
        pause(self.last_active.elapsed())
            .map(|d| d.min(HEARTBEAT.saturating_sub(self.last_beat.elapsed())))
    }

    fn on_message(&mut self, msg: &Msg, direct: bool) -> Option<Lone> {
        let id = msg.pool;
        let body = msg.body();
        match msg.kind {
            M_START => {
                let tag = body
                    .get(..4)
                    .map(|t| i32::from_le_bytes(t.try_into().unwrap_or_default()))?;
                self.pools.insert(id, Served { tag, pool: None });
                let to_me = self.tx.clone();
                let spec = body[4..].to_vec();
                let local_ranks = self.local_ranks;
                let r = std::thread::Builder::new()
                    .name("multiproc-agent-start".into())
                    .spawn(move || {
                        let r =
                            build_local(&spec, local_ranks).map_err(|e| TaskFail::from_error(&e));
                        let _ = to_me.send(Event::Built(id, r));
                    });
                if let Err(e) = r {
                    let _ = self
                        .tx
                        .send(Event::Built(id, Err(TaskFail::from_error(&e.into()))));
                }
            }
            M_BATCH => {
                let s = self.pools.get(&id)?;
                let r = match &s.pool {
                    Some(p) => submit_batch(p, id, s.tag, body, direct)
                        .map(|lone| lone.map(|j| (p.clone(), j))),
                    None => Err(Error::Closed),
                };
                match r {
                    Ok(lone) => return lone,
                    Err(e) => {
                        let mut m = header(A_FAILED, id);
                        let _ = codec::encode_into(&TaskFail::from_error(&e), &mut m);
                        mpi().send(0, s.tag, m);
                    }
                }
            }
            M_STOP => match self.pools.get_mut(&id).and_then(|s| s.pool.take()) {
                Some(p) => {
                    let kill = body.first() == Some(&1);
                    let to_me = self.tx.clone();
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
                            let _ = to_me.send(Event::Stopped(id));
                        });
                    match r {
                        Ok(h) => self.stoppers.push(h),
                        Err(_) => {
                            let _ = self.tx.send(Event::Stopped(id));
                        }
                    }
                }
                None => {
                    if let Some(s) = self.pools.remove(&id) {
                        mpi().send(0, s.tag, header(A_STOPPED, id));
                    }
                }
            },
            M_SHUTDOWN => self.shutdown = true,
            _ => {}
        }
        None
    }

    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Built(id, r) => {
                let Some(s) = self.pools.get_mut(&id) else {
                    return;
                };
                let tag = s.tag;
                let m = match r {
                    Ok(p) => {
                        let mut m = header(A_READY, id);
                        m.extend_from_slice(&(p.processes() as u32).to_le_bytes());
                        s.pool = Some(Arc::new(p));
                        m
                    }
                    Err(f) => {
                        // Rank 0 gives the pool up: nothing more comes for it.
                        self.pools.remove(&id);
                        let mut m = header(A_FAILED, id);
                        let _ = codec::encode_into(&f, &mut m);
                        m
                    }
                };
                mpi().send(0, tag, m);
            }
            Event::Stopped(id) => {
                // Every result of the pool went before (its threads sent them).
                if let Some(s) = self.pools.remove(&id) {
                    mpi().send(0, s.tag, header(A_STOPPED, id));
                }
            }
        }
    }
}

/// The agent's state, shared by the MPI thread and the cover thread.
struct AgentLock {
    agent: Mutex<Agent>,
    /// The MPI thread is running a lone task.
    busy: AtomicBool,
    /// The agent is ending: the cover thread returns.
    done: AtomicBool,
    /// How many lone tasks the MPI thread has started: the cover thread sees from it
    /// whether lone tasks come often.
    lone_started: AtomicU64,
    /// The cover thread is parked until unparked (no lone task for a while).
    cover_parked: AtomicBool,
}

impl AgentLock {
    fn lock(&self) -> MutexGuard<'_, Agent> {
        self.agent.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// How often the cover thread looks whether the MPI thread is running a lone task.
const COVER_LOOK: Duration = Duration::from_millis(1);

/// After this long without a lone task the cover thread stops looking by itself and
/// sleeps until the MPI thread starts one.
const COVER_ACTIVE: Duration = Duration::from_millis(100);

/// The cover thread: while the MPI thread runs a lone task (seen at two looks in a row),
/// it serves the agent in its place: what rank 0 sends meanwhile (more tasks, a stop)
/// and the heartbeats. While lone tasks keep coming it looks every [`COVER_LOOK`] by
/// itself, so that the MPI thread starts each with no wake-up of another thread (a
/// system call and two context switches per `apply`); after [`COVER_ACTIVE`] without one
/// it sleeps until the MPI thread starts one and unparks it: an idle agent has no thread
/// waking every [`COVER_LOOK`].
fn cover(sh: &AgentLock) {
    let mut seen = false;
    let (mut started, mut changed) = (0u64, Instant::now());
    while !sh.done.load(Ordering::Acquire) {
        if !sh.busy.load(Ordering::Acquire) {
            seen = false;
            let n = sh.lone_started.load(Ordering::Relaxed);
            if n != started {
                (started, changed) = (n, Instant::now());
            }
            if changed.elapsed() < COVER_ACTIVE {
                std::thread::park_timeout(COVER_LOOK);
            } else {
                // Unparked when a lone task starts (the MPI thread sees this flag after
                // raising `busy`, or this thread sees `busy`: both are SeqCst) and when the
                // agent ends; the timeout only bounds a wake-up lost to a spurious one.
                sh.cover_parked.store(true, Ordering::SeqCst);
                if !sh.busy.load(Ordering::SeqCst) && !sh.done.load(Ordering::SeqCst) {
                    std::thread::park_timeout(Duration::from_secs(1));
                }
                sh.cover_parked.store(false, Ordering::SeqCst);
            }
            continue;
        }
        std::thread::sleep(COVER_LOOK);
        if !sh.busy.load(Ordering::Acquire) {
            seen = false;
            continue;
        }
        if !std::mem::replace(&mut seen, true) {
            continue;
        }
        while sh.busy.load(Ordering::Acquire) && !sh.done.load(Ordering::Acquire) {
            let wait = {
                let mut a = sh.lock();
                if a.shutdown {
                    break;
                }
                a.step(false);
                a.pause()
            };
            match wait {
                None => std::thread::yield_now(),
                Some(d) => std::thread::sleep(d),
            }
        }
    }
}

/// The agent's loop; returns when rank 0 says the job is over (every local worker reaped).
/// A lone task (an `apply`) runs on an idle local worker straight from this thread
/// (`Shared::run_direct`), as a local `apply` does: no hand-off to another thread on the
/// way; the cover thread serves the agent while it runs.
pub(super) fn run(local_ranks: usize) {
    let (tx, rx) = mpsc::channel::<Event>();
    let now = Instant::now();
    let sh = Arc::new(AgentLock {
        agent: Mutex::new(Agent {
            local_ranks,
            pools: HashMap::new(),
            stoppers: Vec::new(),
            tx,
            rx,
            held: None,
            inbox: Vec::new(),
            last_beat: now,
            last_active: now,
            shutdown: false,
        }),
        busy: AtomicBool::new(false),
        done: AtomicBool::new(false),
        lone_started: AtomicU64::new(0),
        cover_parked: AtomicBool::new(false),
    });
    mpi().send(0, TAG, header(A_ALIVE, 0));
    let sh2 = sh.clone();
    let cover = std::thread::Builder::new()
        .name("multiproc-agent-cover".into())
        .spawn(move || cover(&sh2))
        .ok();
    let cover_thread = cover.as_ref().map(|c| c.thread().clone());
    let mut a = sh.lock();
    loop {
        let lone = a.step(cover.is_some());
        if a.shutdown {
            break;
        }
        if let Some((pool, job)) = lone {
            drop(a);
            sh.lone_started.fetch_add(1, Ordering::Relaxed);
            sh.busy.store(true, Ordering::SeqCst);
            if let Some(t) = cover_thread
                .as_ref()
                .filter(|_| sh.cover_parked.load(Ordering::SeqCst))
            {
                t.unpark();
            }
            if let Some(job) = pool.shared.run_direct(job) {
                pool.shared.submit(vec![job], true);
            }
            drop(pool);
            sh.busy.store(false, Ordering::Release);
            a = sh.lock();
            // The next task may follow at once: look again without sleeping.
            a.last_active = Instant::now();
            continue;
        }
        match a.pause() {
            None => std::thread::yield_now(),
            Some(d) => a.held = a.rx.recv_timeout(d).ok(),
        }
    }
    // The job is over: stop every local worker.
    sh.done.store(true, Ordering::Release);
    if let Some(t) = &cover_thread {
        t.unpark();
    }
    for p in a.pools.values().filter_map(|s| s.pool.as_ref()) {
        let _ = p.terminate();
    }
    a.pools.clear();
    let stoppers = std::mem::take(&mut a.stoppers);
    drop(a);
    if let Some(c) = cover {
        let _ = c.join();
    }
    for h in stoppers {
        let _ = h.join();
    }
    flush(Duration::from_secs(10));
}
