//! Rank 0's side of a cluster pool: building it across the ranks, and one handler thread
//! per other rank that serves that rank from the pool's queue, like a local handler serves
//! its worker process. Each handler sends its batches and receives its rank's answers
//! (the messages with its pool's tag) itself, under the MPI lock. While a handler is idle
//! it parks its line to the rank, like a local handler its worker: a caller of `apply`
//! then sends its task and receives the answer from its own thread
//! (`Shared::run_direct`), with no hand-off to the handler and back.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::agent::{PoolSpec, RemoteInit};
use super::net::{
    header, mpi, pause, world, Incoming, Msg, World, A_FAILED, A_READY, A_RESULTS, A_STOPPED,
    M_BATCH, M_START, M_STOP, SPARE_MIN, TAG,
};
use crate::pool::fail::TaskFail;
use crate::pool::sched::{Job, Lend, Shared, Take};
use crate::pool::wire::{Reader, ReplySeg};
use crate::{codec, cpu_count, Error, Pool, PoolBuilder, Result};

/// Encodes a builder's initializer for the other ranks (when the pool is built).
pub(crate) type RemoteInitFn = Arc<dyn Fn() -> Result<RemoteInit> + Send + Sync>;

/// The initializer `f(args)`, for the other ranks of a cluster pool.
pub(crate) fn remote_init<I, IR>(f: fn(I) -> IR, args: I) -> RemoteInitFn
where
    I: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
    IR: std::process::Termination + 'static,
{
    Arc::new(move || RemoteInit::new(f, &args))
}

/// What a [`Pool`] keeps of its other ranks.
pub(crate) struct Remote {
    pool: u64,
    tag: i32,
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
        // Its handlers are gone (the pool joined them): the tag is free again.
        TAGS.lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.tag);
    }
}

static NEXT_POOL: AtomicU64 = AtomicU64::new(1);

/// The tags of the live cluster pools: each has its own, so that its handlers receive only
/// its messages.
static TAGS: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());

/// A tag for a new pool: the lowest one that no live pool has.
fn new_tag() -> Result<i32> {
    let mut tags = TAGS.lock().unwrap_or_else(|p| p.into_inner());
    let tag = (1..TAG)
        .find(|t| !tags.contains(t))
        .ok_or_else(|| Error::invalid("too many cluster pools at once"))?;
    tags.insert(tag);
    Ok(tag)
}

/// A handler's line to its rank, for one pool: the messages with the pool's tag, and word
/// from rank 0's MPI thread (a rank lost) or from the pool (terminate).
struct Link {
    pool: u64,
    rank: usize,
    tag: i32,
    rx: Receiver<Incoming>,
    /// When the last message came (how long to keep looking without sleeping).
    active: Instant,
    /// Word heard by a caller that borrowed the line (a rank lost), for its handler.
    pending: Option<Incoming>,
}

/// What a handler hears on its [`Link`].
enum Heard {
    Msg(Msg),
    Event(Incoming),
}

impl Link {
    fn new(pool: u64, rank: usize, tag: i32, rx: Receiver<Incoming>) -> Link {
        Link {
            pool,
            rank,
            tag,
            rx,
            active: Instant::now(),
            pending: None,
        }
    }

    /// What arrived, if anything (not waiting).
    fn poll(&mut self) -> Option<Heard> {
        if let Some(i) = self.pending.take() {
            return Some(Heard::Event(i));
        }
        match self.rx.try_recv() {
            Ok(i) => return Some(Heard::Event(i)),
            Err(TryRecvError::Disconnected) => {
                return Some(Heard::Event(Incoming::Lost(
                    "the MPI job is ending (rank 0's main returned)".into(),
                )))
            }
            Err(TryRecvError::Empty) => {}
        }
        loop {
            let (_, bytes) = mpi().recv(Some(self.rank), self.tag)?;
            match Msg::parse(bytes) {
                // A message of an earlier pool that had this tag is dropped.
                Some(m) if m.pool == self.pool => return Some(Heard::Msg(m)),
                _ => {}
            }
        }
    }

    /// The next message or event, waiting for it: yielding the processor between looks
    /// for a while after the last one, then sleeping longer and longer (MPI cannot wake
    /// a sleeping thread; word from rank 0's threads does).
    fn next(&mut self) -> Heard {
        loop {
            if let Some(h) = self.poll() {
                self.active = Instant::now();
                return h;
            }
            match pause(self.active.elapsed()) {
                None => std::thread::yield_now(),
                Some(d) => {
                    if let Ok(i) = self.rx.recv_timeout(d) {
                        self.active = Instant::now();
                        return Heard::Event(i);
                    }
                }
            }
        }
    }
}

/// A caller borrows an idle handler's line to run one task on its rank (`apply`).
impl Lend for Link {
    fn room(&self, _tasks: usize, _max: Option<usize>) -> bool {
        // The rank's own pool keeps its workers' task limits.
        true
    }

    fn run(&mut self, shared: &Shared, job: Job) -> bool {
        let Some(world) = world() else {
            job.fail_all(&TaskFail::Invalid("MPI is down".into()));
            return true;
        };
        let (mut sent, mut open) = (HashMap::new(), HashMap::new());
        send_jobs(
            shared,
            world,
            (self.pool, self.rank, 0),
            vec![job],
            &mut sent,
        );
        shared.lent_job_sent();
        self.active = Instant::now();
        while !sent.is_empty() {
            if let Step::End(end) = hear(self.next(), &mut sent, &mut open) {
                if let End::Lost(m) = &end {
                    // Its handler ends too, when it takes the line back.
                    self.pending = Some(Incoming::Lost(m.clone()));
                }
                end_jobs(shared, self.rank, &sent, end);
                break;
            }
        }
        // The line is never lost: a rank lost is its handler's to report.
        true
    }

    fn lost(self: Box<Self>, _shared: &Shared, _slot: usize) {}

    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any> {
        self
    }
}

/// What a message or event from a rank means for the jobs sent to it.
enum Step {
    /// Tasks answered: how many, and the shortest time per task of a job since it was sent.
    Answered(usize, Option<Duration>),
    /// The rank serves the pool no more.
    End(End),
}

/// Why a rank serves a pool no more.
enum End {
    /// The pool cannot work there (its initializer failed, or the rank's answer was
    /// unreadable).
    Broken(TaskFail),
    /// The pool is being terminated.
    Terminate,
    /// The rank is lost.
    Lost(String),
}

fn hear(h: Heard, sent: &mut HashMap<u64, Sent>, open: &mut HashMap<u64, usize>) -> Step {
    match h {
        Heard::Msg(m) if m.kind == A_RESULTS => {
            let r = on_results(sent, open, m.body());
            m.done();
            match r {
                Ok((n, per_task)) => Step::Answered(n, per_task),
                Err(e) => Step::End(End::Broken(TaskFail::from_error(&e))),
            }
        }
        Heard::Msg(m) if m.kind == A_FAILED => Step::End(End::Broken(decode_fail(m.body()))),
        Heard::Msg(_) => Step::Answered(0, None),
        Heard::Event(Incoming::Terminate) => Step::End(End::Terminate),
        Heard::Event(Incoming::Lost(m)) => Step::End(End::Lost(m)),
    }
}

/// Gives every task sent to `rank` and not answered yet its outcome, as `end` says (a
/// rank lost or a pool broken there breaks the pool: later calls fail too).
fn end_jobs(shared: &Shared, rank: usize, sent: &HashMap<u64, Sent>, end: End) {
    let f = match end {
        End::Lost(message) => TaskFail::RankLost {
            rank: rank as u32,
            message,
        },
        End::Broken(f) => f,
        End::Terminate => TaskFail::Closed,
    };
    if !matches!(f, TaskFail::Closed) {
        shared.set_broken(f.clone());
    }
    for s in sent.values() {
        s.fail_rest(&f);
    }
}

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
    let max_tasks = b.max_tasks;
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
    let tag = new_tag()?;
    let mut start = header(M_START, pool_id);
    start.extend_from_slice(&tag.to_le_bytes());
    if let Err(e) = codec::encode_into(&spec, &mut start) {
        TAGS.lock().unwrap_or_else(|p| p.into_inner()).remove(&tag);
        return Err(e);
    }
    let ranks: Vec<usize> = (1..world.size).collect();
    let mut routes = Vec::new();
    let mut txs = Vec::new();
    let mut links = Vec::new();
    for &r in &ranks {
        let (tx, rx) = mpsc::channel();
        routes.push((r, tx.clone()));
        txs.push(tx);
        links.push(Link::new(pool_id, r, tag, rx));
    }
    world.register(pool_id, routes);
    let remote = Remote {
        pool: pool_id,
        tag,
        routes: txs,
    };
    for &r in &ranks {
        world.send(r, start.clone());
    }
    // Rank 0's own workers start meanwhile.
    let local = b.build_local(root_n, ranks.len());
    let mut counts = Vec::with_capacity(ranks.len());
    let mut failure: Option<TaskFail> = None;
    for link in &mut links {
        match wait_ready(link) {
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
        for (link, k) in links.iter_mut().zip(&counts) {
            if k.is_some() {
                stop_rank(world, link, true);
            }
        }
        return Err(f.to_error());
    }
    let mut pool = local?;
    let shared = pool.shared.clone();
    let mut handles = Vec::new();
    let mut total = root_n;
    for (i, (link, k)) in links.into_iter().zip(counts).enumerate() {
        let k = k.unwrap_or(1);
        total += k;
        let s = shared.clone();
        let rank = link.rank;
        // The pool's slots: rank 0's workers', then one per other rank.
        let slot = root_n + i;
        match std::thread::Builder::new()
            .name(format!("multiproc-rank-{rank}"))
            .spawn(move || handler(s, world, link, slot, k))
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
    if max_tasks.is_none() {
        // (With a task limit per worker, the warm-up's tasks would count towards it.)
        warm_up(&pool, total);
    }
    Ok(pool)
}

/// Bytes per worker of a new cluster pool's warm-up (as large as a chunk of a `map` of a
/// million tiny tasks on a few workers)...
const WARM_BYTES: usize = 2 << 20;
/// ... and at most this many in all.
const WARM_TOTAL: usize = 16 << 20;

fn warm(bytes: serde_bytes::ByteBuf) -> serde_bytes::ByteBuf {
    bytes
}

/// Sends a large task to each worker of a new cluster pool, and its large result back.
/// The first large message of each kind costs several times the next (MPI's first large
/// transfer each way between two ranks, the first large frame through each worker's lane,
/// each process's allocator growing its heap for buffers that size): the pool's build pays
/// that, once, instead of the user's first `map`.
fn warm_up(pool: &Pool, workers: usize) {
    let per = WARM_BYTES.min(WARM_TOTAL / workers.max(1));
    let tasks = (0..workers).map(|_| serde_bytes::ByteBuf::from(vec![1u8; per]));
    let _ = pool.map_chunked(warm, tasks, 1);
}

/// Waits for a rank's answer to `M_START`: its number of workers, or why it failed.
fn wait_ready(link: &mut Link) -> std::result::Result<usize, TaskFail> {
    loop {
        match link.next() {
            Heard::Msg(m) if m.kind == A_READY => {
                let mut rd = Reader::new(m.body());
                return rd
                    .u32()
                    .map(|k| k as usize)
                    .map_err(|e| TaskFail::from_error(&e));
            }
            Heard::Msg(m) if m.kind == A_FAILED => return Err(decode_fail(m.body())),
            Heard::Event(Incoming::Lost(message)) => {
                return Err(TaskFail::RankLost {
                    rank: link.rank as u32,
                    message,
                })
            }
            _ => {}
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

/// Asks the link's rank to stop its workers for the pool and waits until it has (or is
/// lost).
fn stop_rank(world: &World, link: &mut Link, kill: bool) {
    world.send(link.rank, stop_message(link.pool, kill));
    loop {
        match link.next() {
            Heard::Msg(m) if m.kind == A_STOPPED => return,
            Heard::Event(Incoming::Lost(_)) => return,
            _ => {}
        }
    }
}

/// A job on another rank, with the tasks answered so far.
struct Sent {
    job: Job,
    answered: Vec<bool>,
    left: usize,
    /// The message it was sent in (one `M_BATCH` of the handler may carry several jobs).
    batch: u64,
    /// When it was sent.
    at: Instant,
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

/// Serves the link's rank (with `workers` workers) from the pool's queue until the pool
/// ends; `slot` is the rank's in the pool, where the idle handler parks its line.
fn handler(
    shared: Arc<Shared>,
    world: &'static World,
    mut link: Link,
    slot: usize,
    workers: usize,
) {
    let (pool, rank) = (link.pool, link.rank);
    let mut sent: HashMap<u64, Sent> = HashMap::new();
    let mut tasks = 0usize;
    let mut short = false;
    let mut since = Instant::now();
    // The pool's queue was found empty since the last job was taken: the next job starts
    // a new stream of work, whose tasks may be of another length.
    let mut drained = true;
    let mut next_batch = 0u64;
    // The messages (`M_BATCH`) sent whose jobs are not all answered yet: jobs left each.
    let mut open: HashMap<u64, usize> = HashMap::new();
    let mut end: Option<End> = None;
    let workers = workers.max(1);
    'outer: loop {
        // 1. Keep the rank's workers busy: a job per worker; when tasks are short, one
        //    more job per worker waiting there (it is sent, and decoded there, while the
        //    first runs), and more if the jobs are small (each MPI message costs a round
        //    trip).
        loop {
            // Messages out, not jobs: a take may cut one chunk of a map into several jobs,
            // which still go to the rank (and wait there) as one.
            let out = open.len();
            let room = out < workers
                || (short
                    && (out < 2 * workers || (out < 2 * workers + 8 && tasks < 512 * workers)));
            if !room {
                break;
            }
            let idle = sent.is_empty();
            let take = match shared.take(usize::MAX, false) {
                Take::Nothing if idle => {
                    // Nothing to do: wait for work with the line parked, for a caller of
                    // `apply` to borrow meanwhile.
                    drained = true;
                    let mut parked = Some(link);
                    let take = shared.take_parking(usize::MAX, slot, &mut parked);
                    let Some(back) = parked else {
                        // Cannot be: a line is given back after each loan.
                        shared.handler_exited();
                        return;
                    };
                    link = back;
                    if link.pending.is_some() {
                        // A rank lost, heard by a caller that borrowed the line.
                        break 'outer;
                    }
                    take
                }
                t => t,
            };
            match take {
                Take::Exit if idle => break 'outer,
                Take::Exit | Take::Nothing => {
                    drained = true;
                    break;
                }
                Take::Jobs(jobs) => {
                    if idle {
                        since = Instant::now();
                        // A new stream of work (the queue was found empty) is judged
                        // afresh. Otherwise the rank only ran out because its last answers
                        // came before more was sent (the queue still held some): the same
                        // tasks go on, and stay short.
                        if drained {
                            short = false;
                        }
                    }
                    drained = false;
                    next_batch += 1;
                    let (n, njobs) =
                        send_jobs(&shared, world, (pool, rank, next_batch), jobs, &mut sent);
                    tasks += n;
                    if njobs > 0 {
                        open.insert(next_batch, njobs);
                    }
                    link.active = Instant::now();
                }
            }
        }
        if sent.is_empty() {
            continue;
        }
        // 2. Wait for the rank's answer.
        match hear(link.next(), &mut sent, &mut open) {
            Step::Answered(n, per_task) => {
                tasks = tasks.saturating_sub(n);
                if n > 0 {
                    // Two bounds on a task's time: the time since the last answer per
                    // task answered now (too long when rank 0 was busy, e.g. encoding the
                    // next job), and the time since a job was sent per task of it answered
                    // (too long when it waited behind another).
                    let gap = since.elapsed() / (n as u32);
                    short = per_task.map_or(gap, |t| t.min(gap)) < SHORT_TASK;
                    since = Instant::now();
                }
            }
            Step::End(e) => {
                end = Some(e);
                break;
            }
        }
    }
    // Leaving: what is still out there gets its outcome.
    if let Some(Incoming::Lost(m)) = link.pending.take() {
        end = Some(End::Lost(m));
    }
    match end {
        Some(e @ End::Lost(_)) => end_jobs(&shared, rank, &sent, e),
        end => {
            let terminating = shared.lock().terminating;
            match end {
                Some(e @ End::Broken(_)) => end_jobs(&shared, rank, &sent, e),
                _ if terminating => end_jobs(&shared, rank, &sent, End::Terminate),
                _ => {
                    let f = TaskFail::Invalid("pool handler stopped".into());
                    for s in sent.values() {
                        s.fail_rest(&f);
                    }
                }
            }
            stop_rank(world, &mut link, terminating || !sent.is_empty());
        }
    }
    shared.handler_exited();
}

/// Sends `jobs` to `rank` in one message, batch `batch`; returns the number of tasks and
/// of jobs sent.
fn send_jobs(
    shared: &Shared,
    world: &World,
    (pool, rank, batch): (u64, usize, u64),
    jobs: Vec<Job>,
    sent: &mut HashMap<u64, Sent>,
) -> (usize, usize) {
    // A map's chunk is encoded into a spare buffer, and stays whole (the rank cuts it as
    // its own pool needs): its bytes are copied once more, into the message, itself in a
    // spare buffer, and its buffer goes back to the spares once copied. Spare buffers
    // are memory the process already has: no page faults while they fill.
    let mut pieces = Vec::with_capacity(jobs.len());
    for mut job in jobs {
        job.encode_into_buffer(|| mpi().buffer(SPARE_MIN));
        pieces.extend(job.materialize_cut(false));
    }
    let size = 13 + pieces.iter().map(Job::wire_len).sum::<usize>();
    let mut buf = mpi().buffer(size);
    buf.extend_from_slice(&header(M_BATCH, pool));
    buf.extend_from_slice(&0u32.to_le_bytes());
    let mut njobs = 0u32;
    let mut ntasks = 0;
    for mut job in pieces {
        if job.is_empty() {
            mpi().recycle(job.take_args());
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
        job.encode_into(id, 0, &mut buf);
        mpi().recycle(job.take_args());
        let n = job.len();
        njobs += 1;
        ntasks += n;
        sent.insert(
            id,
            Sent {
                job,
                answered: vec![false; n],
                left: n,
                batch,
                at: Instant::now(),
            },
        );
    }
    if njobs > 0 {
        buf[9..13].copy_from_slice(&njobs.to_le_bytes());
        world.send(rank, buf);
    }
    (ntasks, njobs as usize)
}

/// Hands a rank's results to their jobs' sinks; returns the number of tasks answered, and
/// the shortest time per task answered of a job since it was sent.
fn on_results(
    sent: &mut HashMap<u64, Sent>,
    open: &mut HashMap<u64, usize>,
    body: &[u8],
) -> Result<(usize, Option<Duration>)> {
    let mut per_task: Option<Duration> = None;
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
        let done = (s.answered.len() - s.left).max(1) as u32;
        let t = s.at.elapsed() / done;
        per_task = Some(per_task.map_or(t, |p| p.min(t)));
        if s.left == 0 {
            if let Some(done) = sent.remove(&seg.id) {
                if let Some(left) = open.get_mut(&done.batch) {
                    *left -= 1;
                    if *left == 0 {
                        open.remove(&done.batch);
                    }
                }
            }
        }
    }
    Ok((total, per_task))
}
