//! The parent's side of the pool: the job queue and one handler thread per worker.
//!
//! Callers encode their tasks into [`Job`]s (a chunk of tasks for one function) and push
//! them on a shared queue. Each worker process has a handler thread that takes jobs from
//! the queue (several small ones at once when many are waiting), sends them to its worker
//! in one frame, and hands the replies to each job's [`Sink`]. The handler also watches its
//! worker's pidfd: a worker that dies fails exactly the tasks it held, unstarted jobs go
//! back on the queue, and a new worker takes its place. The number of threads and
//! descriptors depends on the number of workers only, never on the number of tasks.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::fail::TaskFail;
use super::worker::{
    Progress, Reader, ReplySeg, SockHandle, TaskCode, FLAG_FLUSH_EACH, FLAG_HAS_FDS, FLAG_STRIDE,
    MSG_BATCH, MSG_STOP, REP_INIT_FAILED, REP_READY, REP_RESULTS, SEG_FAIL, SEG_OK,
};
use crate::ipc::{RawConn, Wake};
use crate::process::ChildState;
use crate::{codec, sys, Error, Process, Result};

/// Where the outcomes of a job's tasks go.
pub(crate) trait Sink: Send + Sync {
    /// The encoded results (`count × R`, laid end to end) of tasks `first..first + count`.
    fn deliver(&self, first: usize, count: usize, payload: &[u8], fds: Vec<OwnedFd>);
    /// Tasks `first..first + count` failed with `why`.
    fn fail(&self, first: usize, count: usize, why: &TaskFail);
}

/// Where each task's encoded argument ends in a job's bytes: a list, or — while every task
/// took the same number of bytes, as plain values do — just that size (no list to build,
/// send and read).
#[derive(Debug, PartialEq)]
enum Ends {
    Stride { size: u32, count: usize },
    List(Vec<u32>),
}

impl Ends {
    fn new() -> Ends {
        Ends::Stride { size: 0, count: 0 }
    }

    fn len(&self) -> usize {
        match self {
            Ends::Stride { count, .. } => *count,
            Ends::List(v) => v.len(),
        }
    }

    /// Where task `i`'s bytes end (`i < len`).
    fn end(&self, i: usize) -> usize {
        match self {
            Ends::Stride { size, .. } => (i + 1) * *size as usize,
            Ends::List(v) => v[i] as usize,
        }
    }

    /// Where task `i`'s bytes start.
    fn start(&self, i: usize) -> usize {
        if i == 0 {
            0
        } else {
            self.end(i - 1)
        }
    }

    /// One more task, ending at `end`.
    #[inline]
    fn push(&mut self, end: u32) {
        match self {
            Ends::Stride { size, count } => {
                if *count == 0 {
                    *size = end;
                    *count = 1;
                } else if end as u64 == (*count as u64 + 1) * *size as u64 {
                    *count += 1;
                } else {
                    let mut v: Vec<u32> = (1..=*count as u32).map(|i| i * *size).collect();
                    v.push(end);
                    *self = Ends::List(v);
                }
            }
            Ends::List(v) => v.push(end),
        }
    }

    /// Keeps tasks `..k`; returns the ends of tasks `k..`, counted from `start` (where task
    /// `k` starts).
    fn split_off(&mut self, k: usize, start: usize) -> Ends {
        match self {
            Ends::Stride { size, count } => {
                let tail = Ends::Stride {
                    size: *size,
                    count: count.saturating_sub(k),
                };
                *count = k.min(*count);
                tail
            }
            Ends::List(v) => Ends::List(
                v.split_off(k.min(v.len()))
                    .iter()
                    .map(|e| e - start as u32)
                    .collect(),
            ),
        }
    }
}

/// A chunk of tasks for one function: encoded arguments, laid end to end.
pub(crate) struct Job {
    code: TaskCode,
    /// The sink's index of the first task.
    first: usize,
    args: Vec<u8>,
    ends: Ends,
    fd_counts: Option<Vec<u32>>,
    fds: Vec<OwnedFd>,
    sink: Arc<dyn Sink>,
    /// How many times it was run again after its worker died while running it (see
    /// [`Config::retries`]).
    attempts: u32,
    /// Arguments not encoded yet (a map's chunk): the handler thread that takes the job
    /// encodes them, so that encoding runs in parallel, off the caller's thread.
    raw: Option<Box<dyn RawArgs>>,
    raw_count: usize,
}

/// A chunk of arguments waiting to be encoded.
pub(crate) trait RawArgs: Send {
    /// Encodes every argument into `job`; returns those that failed, by position.
    fn encode(self: Box<Self>, job: &mut Job) -> Vec<(usize, Error)>;
}

impl<A: Serialize + Send> RawArgs for Vec<A> {
    fn encode(self: Box<Self>, job: &mut Job) -> Vec<(usize, Error)> {
        let mut failed = Vec::new();
        let mut session = codec::FdSession::begin();
        // Plain values encode to about their size in memory.
        job.args
            .reserve((self.len() * std::mem::size_of::<A>()).min(MAX_JOB_BYTES));
        for (i, a) in self.iter().enumerate() {
            if let Err(e) = job.push_in(&mut session, a) {
                failed.push((i, e));
            }
        }
        failed
    }
}

/// Most descriptors one job may carry (a frame carries at most 253).
const MAX_JOB_FDS: usize = 200;
/// A job is not grown past this many bytes of arguments.
const MAX_JOB_BYTES: usize = 1 << 20;
/// Jobs bigger than this are not sent ahead while the worker is busy (both sides'
/// socket buffers must not fill up at once).
const PREFETCH_BYTES: usize = 64 << 10;
/// Tasks quicker than this count as short (see `handler`).
const SHORT_TASK: Duration = Duration::from_millis(1);
/// Most tasks sent to one worker in one frame when many small jobs are waiting.
const MAX_BATCH_TASKS: usize = 256;

impl Job {
    pub(crate) fn new(code: TaskCode, first: usize, sink: Arc<dyn Sink>) -> Job {
        Job {
            code,
            first,
            args: Vec::new(),
            ends: Ends::new(),
            fd_counts: None,
            fds: Vec::new(),
            sink,
            attempts: 0,
            raw: None,
            raw_count: 0,
        }
    }

    /// A job of `items`, to be encoded by the handler thread that takes it.
    pub(crate) fn lazy<A: Serialize + Send + 'static>(
        code: TaskCode,
        first: usize,
        items: Vec<A>,
        sink: Arc<dyn Sink>,
    ) -> Job {
        let mut j = Job::new(code, first, sink);
        j.raw_count = items.len();
        j.raw = Some(Box::new(items));
        j
    }

    pub(crate) fn len(&self) -> usize {
        if self.raw.is_some() {
            self.raw_count
        } else {
            self.ends.len()
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Encodes a lazy job's arguments: the pieces to send (contiguous runs of tasks, each
    /// within the size and handle limits); tasks whose argument cannot be encoded fail.
    pub(crate) fn materialize(mut self) -> Vec<Job> {
        let Some(raw) = self.raw.take() else {
            return vec![self];
        };
        let total = std::mem::take(&mut self.raw_count);
        let failed = raw.encode(&mut self);
        if failed.is_empty() && !self.is_full() {
            return vec![self];
        }
        // Cut into pieces at the failed tasks and at the limits.
        let (code, first, attempts, sink) =
            (self.code, self.first, self.attempts, self.sink.clone());
        let fresh = |at: usize| {
            let mut j = Job::new(code, at, sink.clone());
            j.attempts = attempts;
            j
        };
        let mut pieces = Vec::new();
        let mut cur = fresh(first);
        let mut failed = failed.into_iter().peekable();
        let mut task = 0;
        for pos in 0..total {
            if failed.peek().is_some_and(|(i, _)| *i == pos) {
                if let Some((_, e)) = failed.next() {
                    sink.fail(first + pos, 1, &TaskFail::from_error(&e));
                }
                let next = fresh(first + pos + 1);
                let done = std::mem::replace(&mut cur, next);
                if !done.is_empty() {
                    pieces.push(done);
                }
                continue;
            }
            if cur.is_full() {
                let next = fresh(first + pos);
                pieces.push(std::mem::replace(&mut cur, next));
            }
            self.move_task(task, &mut cur);
            task += 1;
        }
        if !cur.is_empty() {
            pieces.push(cur);
        }
        pieces
    }

    /// Appends encoded task `i` of `self` to `to` (tasks are moved in order).
    fn move_task(&mut self, i: usize, to: &mut Job) {
        let start = self.ends.start(i);
        let end = self.ends.end(i);
        to.args.extend_from_slice(&self.args[start..end]);
        to.ends.push(to.args.len() as u32);
        let nfds = self.fd_counts.as_ref().map_or(0, |c| c[i] as usize);
        if nfds > 0 && to.fd_counts.is_none() {
            to.fd_counts = Some(vec![0; to.ends.len() - 1]);
        }
        if let Some(c) = &mut to.fd_counts {
            c.push(nfds as u32);
        }
        // Descriptors are taken from the front, in task order.
        to.fds.extend(self.fds.drain(..nfds.min(self.fds.len())));
    }

    /// Whether the job should be sent before more tasks are added.
    pub(crate) fn is_full(&self) -> bool {
        self.fds.len() >= MAX_JOB_FDS || self.args.len() >= MAX_JOB_BYTES
    }

    /// Encodes one more task's argument. On error nothing is added.
    pub(crate) fn push<A: Serialize>(&mut self, a: &A) -> Result<()> {
        self.push_in(&mut codec::FdSession::begin(), a)
    }

    /// [`push`](Job::push) within an encoding session (shared by the tasks of a chunk).
    #[inline]
    fn push_in<A: Serialize>(&mut self, session: &mut codec::FdSession, a: &A) -> Result<()> {
        if self.code.target == sys::FOREIGN_FN {
            return Err(crate::start::foreign_fn_error());
        }
        let len = self.args.len();
        let nfds = session.append(a, &mut self.args)?;
        let mut owned = Vec::new();
        if nfds > 0 {
            // Each task's handles are numbered from 0: the list starts again.
            let raw = session.take_fds();
            owned.reserve(raw.len());
            for fd in &raw {
                match sys::dup_raw(*fd) {
                    Ok(d) => owned.push(d),
                    Err(e) => {
                        self.args.truncate(len);
                        return Err(e.into());
                    }
                }
            }
        }
        if self.args.len() > u32::MAX as usize {
            self.args.truncate(len);
            return Err(Error::codec("a pool job's arguments exceed 4 GiB"));
        }
        if !owned.is_empty() && self.fd_counts.is_none() {
            self.fd_counts = Some(vec![0; self.ends.len()]);
        }
        if let Some(c) = &mut self.fd_counts {
            c.push(owned.len() as u32);
        }
        self.fds.extend(owned);
        self.ends.push(self.args.len() as u32);
        Ok(())
    }

    pub(crate) fn fail_all(&self, why: &TaskFail) {
        if !self.is_empty() {
            self.sink.fail(self.first, self.len(), why);
        }
    }

    /// Splits off tasks `k..` as a job of their own (`None` if there are none).
    fn split_off(&mut self, k: usize) -> Option<Job> {
        if k >= self.len() {
            return None;
        }
        let start = self.ends.start(k);
        let args = self.args.split_off(start);
        let ends = self.ends.split_off(k, start);
        let (fd_counts, fds) = match &mut self.fd_counts {
            Some(c) => {
                let tail = c.split_off(k);
                let before: usize = c.iter().map(|&n| n as usize).sum();
                let fds = self.fds.split_off(before.min(self.fds.len()));
                (Some(tail), fds)
            }
            None => (None, Vec::new()),
        };
        Some(Job {
            code: self.code,
            first: self.first + k,
            args,
            ends,
            fd_counts,
            fds,
            sink: self.sink.clone(),
            attempts: self.attempts,
            raw: None,
            raw_count: 0,
        })
    }

    /// Whether its arguments hold handles (descriptors), which cannot leave this machine.
    #[cfg_attr(not(feature = "mpi"), allow(dead_code))]
    pub(crate) fn has_fds(&self) -> bool {
        !self.fds.is_empty()
    }

    /// Reads back one job written by [`encode_into`](Job::encode_into) (without
    /// descriptors: a job that crossed to another MPI rank has none), for `sink`. Returns
    /// the job's id with it; flags that only concern the sender are dropped.
    #[cfg_attr(not(feature = "mpi"), allow(dead_code))]
    pub(crate) fn decode_wire(
        rd: &mut Reader<'_>,
        sink: impl FnOnce(u64) -> Arc<dyn Sink>,
    ) -> Result<(u64, Job)> {
        let id = rd.u64()?;
        let code = TaskCode {
            entry: rd.i64()?,
            entry_sig: rd.u64()?,
            target: rd.i64()?,
            target_sig: rd.u64()?,
        };
        let count = rd.u32()? as usize;
        let flags = rd.u8()?;
        let args_len = rd.u32()? as usize;
        if flags & FLAG_HAS_FDS != 0 {
            return Err(Error::codec(
                "a job with handles cannot cross to another rank",
            ));
        }
        let ends = if flags & FLAG_STRIDE != 0 {
            Ends::Stride {
                size: rd.u32()?,
                count,
            }
        } else {
            let b = rd.bytes(
                count
                    .checked_mul(4)
                    .ok_or_else(|| Error::codec("bad job"))?,
            )?;
            Ends::List((0..count).map(|i| super::worker::u32_at(b, i)).collect())
        };
        let args = rd.bytes(args_len)?.to_vec();
        if count > 0 && ends.end(count - 1) != args.len() {
            return Err(Error::codec("a job's argument ends do not match its bytes"));
        }
        let mut job = Job::new(code, 0, sink(id));
        job.args = args;
        job.ends = ends;
        Ok((id, job))
    }

    /// Tasks `from..from + count` of this job failed with `why`.
    #[cfg_attr(not(feature = "mpi"), allow(dead_code))]
    pub(crate) fn fail_tasks(&self, from: usize, count: usize, why: &TaskFail) {
        if count > 0 {
            self.sink.fail(self.first + from, count, why);
        }
    }

    /// Hands one reply segment (`kind`, for tasks `first..first + count` of this job) to
    /// the job's sink.
    pub(crate) fn deliver_segment(
        &self,
        first: usize,
        count: usize,
        kind: u8,
        payload: &[u8],
        fds: Vec<OwnedFd>,
    ) -> Result<()> {
        let (sink, at) = (&self.sink, self.first + first);
        match kind {
            SEG_OK => {
                // A result type whose decoding panics must not take the pool's thread
                // with it.
                let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    sink.deliver(at, count, payload, fds)
                }));
                if ok.is_err() {
                    sink.fail(
                        at,
                        count,
                        &TaskFail::Codec("decoding the task's result panicked".into()),
                    );
                }
            }
            SEG_FAIL => {
                let why = codec::decode::<TaskFail>(payload).unwrap_or_else(|e| {
                    TaskFail::Codec(format!("a task failed; its error could not be read: {e}"))
                });
                sink.fail(at, count, &why);
            }
            other => return Err(Error::codec(format!("unknown pool reply kind {other}"))),
        }
        Ok(())
    }

    pub(crate) fn encode_into(&self, id: u64, flags: u8, out: &mut Vec<u8>, fds: &mut Vec<RawFd>) {
        let mut flags = flags;
        if self.fd_counts.is_some() {
            flags |= FLAG_HAS_FDS;
        }
        if matches!(self.ends, Ends::Stride { .. }) {
            flags |= FLAG_STRIDE;
        }
        out.extend_from_slice(&id.to_le_bytes());
        out.extend_from_slice(&self.code.entry.to_le_bytes());
        out.extend_from_slice(&self.code.entry_sig.to_le_bytes());
        out.extend_from_slice(&self.code.target.to_le_bytes());
        out.extend_from_slice(&self.code.target_sig.to_le_bytes());
        out.extend_from_slice(&(self.len() as u32).to_le_bytes());
        out.push(flags);
        out.extend_from_slice(&(self.args.len() as u32).to_le_bytes());
        match &self.ends {
            Ends::Stride { size, .. } => out.extend_from_slice(&size.to_le_bytes()),
            Ends::List(v) => {
                for e in v {
                    out.extend_from_slice(&e.to_le_bytes());
                }
            }
        }
        if let Some(c) = &self.fd_counts {
            for n in c {
                out.extend_from_slice(&n.to_le_bytes());
            }
        }
        out.extend_from_slice(&self.args);
        fds.extend(self.fds.iter().map(|f| f.as_raw_fd()));
    }
}

/// Starts a worker process running the worker loop on the given socket.
pub(crate) type Factory = Arc<dyn Fn(SockHandle, String) -> Result<Process> + Send + Sync>;

pub(crate) struct Config {
    pub(crate) workers: usize,
    pub(crate) task_timeout: Option<Duration>,
    pub(crate) max_tasks: Option<usize>,
    pub(crate) factory: Factory,
    /// How many times a job whose worker died while running it is run again before it
    /// fails with `WorkerDied` (0: never; at most once is the default).
    pub(crate) retries: u32,
}

pub(crate) struct State {
    queue: VecDeque<Job>,
    queued_tasks: usize,
    pub(crate) closed: bool,
    pub(crate) terminating: bool,
    broken: Option<TaskFail>,
    live_handlers: usize,
    active_iters: usize,
    workers: Vec<Option<Arc<ChildState>>>,
    /// Handlers waiting on the condition variable for work (busy ones are not woken).
    waiting: usize,
    /// Per slot: the worker of an idle handler, which a caller may borrow to run one task
    /// itself (see [`Shared::run_direct`]).
    parked: Vec<Parking>,
    /// Per slot: whether the parked worker was lent since it was parked.
    was_lent: Vec<bool>,
}

/// Where an idle handler's worker is.
enum Parking {
    Empty,
    Parked(Box<Worker>),
    Lent,
}

pub(crate) struct Shared {
    st: Mutex<State>,
    cv: Condvar,
    pub(crate) cfg: Config,
    next_id: AtomicU64,
    worker_seq: AtomicUsize,
}

/// A worker process as its handler sees it.
pub(crate) struct Worker {
    process: Process,
    child: Arc<ChildState>,
    conn: RawConn,
    pid: u32,
    tasks: usize,
    /// Jobs sent to it so far: the next job's number in the order the worker runs them.
    jobs: u64,
    /// Where the worker counts the jobs it has begun (see [`Progress`]).
    progress: Progress,
}

/// Why a worker could not be made ready.
pub(crate) enum StartFail {
    /// The initializer failed: the pool cannot work.
    Init(TaskFail),
    /// The process could not be started (maybe only for now).
    Start(TaskFail),
    /// The pool is being terminated.
    Terminating,
}

pub(crate) enum Take {
    Jobs(Vec<Job>),
    Nothing,
    Exit,
}

impl Shared {
    pub(crate) fn new(cfg: Config) -> Arc<Shared> {
        let n = cfg.workers;
        Arc::new(Shared {
            st: Mutex::new(State {
                queue: VecDeque::new(),
                queued_tasks: 0,
                closed: false,
                terminating: false,
                broken: None,
                live_handlers: n,
                active_iters: 0,
                workers: vec![None; n],
                waiting: 0,
                parked: (0..n).map(|_| Parking::Empty).collect(),
                was_lent: vec![false; n],
            }),
            cv: Condvar::new(),
            cfg,
            next_id: AtomicU64::new(1),
            worker_seq: AtomicUsize::new(1),
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.st.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Why new work is refused right now, if it is.
    fn refusal(st: &State, allow_closed: bool) -> Option<TaskFail> {
        if st.terminating || (st.closed && !allow_closed) {
            return Some(TaskFail::Closed);
        }
        if let Some(b) = &st.broken {
            return Some(b.clone());
        }
        if st.live_handlers == 0 {
            return Some(TaskFail::Closed);
        }
        None
    }

    /// Whether new work would be accepted.
    pub(crate) fn check_open(&self) -> Result<()> {
        match Self::refusal(&self.lock(), false) {
            Some(f) => Err(f.to_error()),
            None => Ok(()),
        }
    }

    /// Queues `jobs`; if the pool refuses work, their tasks fail instead (and `false` is
    /// returned). `allow_closed`: jobs of an iterator created before `close` are still
    /// accepted.
    pub(crate) fn submit(&self, jobs: Vec<Job>, allow_closed: bool) -> bool {
        let refused = {
            let mut st = self.lock();
            match Self::refusal(&st, allow_closed) {
                Some(f) => Some((f, jobs)),
                None => {
                    let n = jobs.len();
                    for j in jobs {
                        st.queued_tasks += j.len();
                        st.queue.push_back(j);
                    }
                    let waiting = st.waiting;
                    drop(st);
                    // Busy handlers look at the queue by themselves: wake only idle ones
                    // (no system call per task while the pool is busy).
                    if waiting > 0 {
                        if n == 1 {
                            self.cv.notify_one();
                        } else {
                            self.cv.notify_all();
                        }
                    }
                    None
                }
            }
        };
        match refused {
            Some((f, jobs)) => {
                for j in jobs {
                    j.fail_all(&f);
                }
                false
            }
            None => true,
        }
    }

    /// Puts jobs taken from the queue back at its front, in order.
    pub(crate) fn requeue(&self, jobs: Vec<Job>) {
        if jobs.is_empty() {
            return;
        }
        let mut st = self.lock();
        if st.terminating || st.broken.is_some() || st.live_handlers == 0 {
            let f = Self::refusal(&st, true).unwrap_or(TaskFail::Closed);
            drop(st);
            for j in jobs {
                j.fail_all(&f);
            }
            return;
        }
        for j in jobs.into_iter().rev() {
            st.queued_tasks += j.len();
            st.queue.push_front(j);
        }
        drop(st);
        self.cv.notify_all();
    }

    /// An iterator that may still submit jobs after `close` started.
    pub(crate) fn iter_started(&self) {
        self.lock().active_iters += 1;
    }

    /// That iterator will submit nothing more.
    pub(crate) fn iter_finished(&self) {
        let mut st = self.lock();
        st.active_iters = st.active_iters.saturating_sub(1);
        drop(st);
        self.cv.notify_all();
    }

    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.cv.notify_all();
    }

    /// Fails every queued job, kills every worker; handler threads then end.
    pub(crate) fn terminate(&self) {
        let (jobs, workers) = {
            let mut st = self.lock();
            st.terminating = true;
            st.closed = true;
            st.queued_tasks = 0;
            let jobs: Vec<Job> = st.queue.drain(..).collect();
            let workers: Vec<Arc<ChildState>> = st.workers.iter().flatten().cloned().collect();
            (jobs, workers)
        };
        self.cv.notify_all();
        for w in workers {
            let _ = w.signal(libc::SIGKILL);
        }
        for j in jobs {
            j.fail_all(&TaskFail::Closed);
        }
    }

    /// Marks the pool unusable (its initializer fails) and fails what is queued.
    pub(crate) fn set_broken(&self, why: TaskFail) {
        let jobs: Vec<Job> = {
            let mut st = self.lock();
            if st.broken.is_none() {
                st.broken = Some(why.clone());
            }
            st.queued_tasks = 0;
            st.queue.drain(..).collect()
        };
        self.cv.notify_all();
        for j in jobs {
            j.fail_all(&why);
        }
    }

    /// Takes jobs for one worker.
    pub(crate) fn take(&self, budget: usize, blocking: bool) -> Take {
        self.take_locked(self.lock(), budget, blocking, None).1
    }

    /// Takes jobs for an idle worker, waiting for them; meanwhile the worker is parked in
    /// the shared state, where a caller of [`run_direct`](Self::run_direct) may borrow it.
    /// On return the worker is back in `worker` (or `None`: it died while lent). If it was
    /// lent, whatever was taken is put back ([`Take::Nothing`]): its task budget changed.
    fn take_parking(&self, budget: usize, slot: usize, worker: &mut Option<Worker>) -> Take {
        let mut parked = false;
        let (mut st, take) =
            self.take_locked(self.lock(), budget, true, Some((slot, worker, &mut parked)));
        if !parked {
            return take;
        }
        loop {
            match std::mem::replace(&mut st.parked[slot], Parking::Empty) {
                Parking::Lent => {
                    st.parked[slot] = Parking::Lent;
                    st = self.cv.wait(st).unwrap_or_else(|p| p.into_inner());
                }
                Parking::Parked(w) => {
                    *worker = Some(*w);
                    break;
                }
                Parking::Empty => break,
            }
        }
        let lent = std::mem::take(&mut st.was_lent[slot]);
        drop(st);
        match take {
            Take::Jobs(jobs) if lent || worker.is_none() => {
                self.requeue(jobs);
                Take::Nothing
            }
            t => t,
        }
    }

    fn take_locked<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
        budget: usize,
        blocking: bool,
        mut park: Option<(usize, &mut Option<Worker>, &mut bool)>,
    ) -> (MutexGuard<'a, State>, Take) {
        loop {
            if st.terminating || st.broken.is_some() {
                return (st, Take::Exit);
            }
            if !st.queue.is_empty() {
                let limit = (st.queued_tasks / (4 * self.cfg.workers).max(1))
                    .clamp(1, MAX_BATCH_TASKS)
                    .min(budget.max(1));
                let mut jobs = Vec::new();
                let mut tasks = 0;
                let mut bytes = 0;
                let mut fds = 0;
                while let Some(j) = st.queue.front() {
                    if !jobs.is_empty()
                        && (tasks + j.len() > limit
                            || bytes + j.args.len() > PREFETCH_BYTES
                            || fds + j.fds.len() > MAX_JOB_FDS)
                    {
                        break;
                    }
                    tasks += j.len();
                    bytes += j.args.len();
                    fds += j.fds.len();
                    if let Some(j) = st.queue.pop_front() {
                        jobs.push(j);
                    }
                }
                st.queued_tasks = st.queued_tasks.saturating_sub(tasks);
                return (st, Take::Jobs(jobs));
            }
            if st.closed && st.active_iters == 0 {
                return (st, Take::Exit);
            }
            if !blocking {
                return (st, Take::Nothing);
            }
            if let Some((slot, worker, parked)) = park.as_mut() {
                if !**parked {
                    if let Some(w) = worker.take() {
                        st.parked[*slot] = Parking::Parked(Box::new(w));
                        **parked = true;
                    }
                }
            }
            st.waiting += 1;
            st = self.cv.wait(st).unwrap_or_else(|p| p.into_inner());
            st.waiting -= 1;
        }
    }

    /// Runs `job` (encoded, one task) on an idle handler's worker from the calling thread,
    /// without the hand-offs to and from a handler thread: a lone `apply` then costs one
    /// round trip to the worker. Faults are handled as the handler would (a dead worker is
    /// reaped and its handler starts another). Gives the job back if no worker is idle, or
    /// if work is queued (it would overtake it): submit it instead.
    pub(crate) fn run_direct(&self, job: Job) -> Option<Job> {
        let (slot, mut w) = {
            let mut st = self.lock();
            if Self::refusal(&st, false).is_some() || !st.queue.is_empty() {
                return Some(job);
            }
            let max = self.cfg.max_tasks;
            let free = st.parked.iter().position(
                |p| matches!(p, Parking::Parked(w) if max.is_none_or(|m| w.tasks + job.len() <= m)),
            );
            let Some(slot) = free else {
                return Some(job);
            };
            let Parking::Parked(w) = std::mem::replace(&mut st.parked[slot], Parking::Lent) else {
                return Some(job);
            };
            st.was_lent[slot] = true;
            (slot, w)
        };
        let alive = self.run_on(&mut w, job);
        let back = if alive {
            Parking::Parked(w)
        } else {
            self.discard(slot, *w, true);
            Parking::Empty
        };
        self.lock().parked[slot] = back;
        self.cv.notify_all();
        None
    }

    /// Sends `job` to `w` and waits for all its replies. False: the worker is lost.
    fn run_on(&self, w: &mut Box<Worker>, job: Job) -> bool {
        let id = self.fresh_id();
        let mut buf = vec![MSG_BATCH];
        buf.extend_from_slice(&1u32.to_le_bytes());
        let flags = if self.cfg.task_timeout.is_some() {
            FLAG_FLUSH_EACH
        } else {
            0
        };
        let mut fds = Vec::new();
        job.encode_into(id, flags, &mut buf, &mut fds);
        w.tasks += job.len();
        let seq = w.jobs;
        w.jobs += 1;
        match w.conn.send_bytes(&buf, &fds) {
            Ok(()) => {}
            Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::InvalidInput => {
                job.fail_all(&TaskFail::Invalid(e.to_string()));
                return true;
            }
            Err(_) => {
                // It never got the job: the worker is gone; a handler runs the job.
                self.requeue(vec![job]);
                return false;
            }
        }
        let started = Instant::now();
        let mut inflight = VecDeque::from([InFlight {
            job,
            id,
            done: 0,
            seq,
        }]);
        while !inflight.is_empty() {
            match await_reply(self, w, &mut inflight, started) {
                Step::Replied(_) | Step::Waiting => {}
                Step::Lost => return false,
            }
        }
        true
    }

    fn set_worker(&self, slot: usize, child: Option<Arc<ChildState>>) -> bool {
        let mut st = self.lock();
        if let Some(w) = st.workers.get_mut(slot) {
            *w = child;
        }
        !st.terminating
    }

    /// Starts a worker for `slot`, waits until it is ready.
    pub(crate) fn start_worker(&self, slot: usize) -> std::result::Result<Worker, StartFail> {
        let (ours, theirs) =
            RawConn::lane_pair().map_err(|e| StartFail::Start(TaskFail::from_error(&e)))?;
        let progress = Progress::new().map_err(|e| StartFail::Start(TaskFail::from_error(&e)))?;
        let n = self.worker_seq.fetch_add(1, Ordering::SeqCst);
        let sock = SockHandle {
            conn: theirs,
            progress: progress.clone(),
        };
        let process = (self.cfg.factory)(sock, format!("PoolWorker-{n}"))
            .map_err(|e| StartFail::Start(TaskFail::from_error(&e)))?;
        let Some(child) = process.child_state() else {
            return Err(StartFail::Start(TaskFail::Invalid(
                "pool worker was not started".into(),
            )));
        };
        let w = Worker {
            pid: child.pid(),
            child,
            process,
            conn: ours,
            tasks: 0,
            jobs: 0,
            progress,
        };
        if !self.set_worker(slot, Some(w.child.clone())) {
            self.discard(slot, w, true);
            return Err(StartFail::Terminating);
        }
        // Wait for READY (or the initializer's failure, or death).
        loop {
            match wait_worker(&w, None) {
                Event::Timeout => continue,
                Event::Readable => {
                    let r = w.conn.recv_with(|bytes, _fds| {
                        let mut rd = Reader::new(bytes);
                        match rd.u8()? {
                            REP_READY => Ok(None),
                            REP_INIT_FAILED => Ok(Some(
                                codec::decode::<TaskFail>(rd.rest()).unwrap_or_else(|e| {
                                    TaskFail::Codec(format!(
                                        "the initializer failed; its error could not be read: {e}"
                                    ))
                                }),
                            )),
                            other => Err(Error::codec(format!("unexpected reply {other}"))),
                        }
                    });
                    match r {
                        Ok(None) => return Ok(w),
                        Ok(Some(fail)) => {
                            self.discard(slot, w, false);
                            return Err(StartFail::Init(fail));
                        }
                        Err(_) => {
                            let fail = self.death(&w);
                            let term = self.lock().terminating;
                            self.discard(slot, w, true);
                            return Err(if term {
                                StartFail::Terminating
                            } else {
                                StartFail::Start(fail)
                            });
                        }
                    }
                }
                Event::Died => {
                    // Died before it was ready (killed, or its initializer exited): maybe
                    // bad luck, so the caller tries again a few times.
                    let fail = self.death(&w);
                    let term = self.lock().terminating;
                    self.discard(slot, w, true);
                    return Err(if term {
                        StartFail::Terminating
                    } else {
                        StartFail::Start(fail)
                    });
                }
            }
        }
    }

    /// The failure for tasks held by a worker that ended: reaps it.
    fn death(&self, w: &Worker) -> TaskFail {
        let status = match w.child.wait(Some(Duration::from_secs(2))) {
            Ok(Some(s)) => Some(s),
            _ => {
                // The socket failed but the process lives on (it closed the socket, or
                // sent garbage): it cannot serve any more.
                let _ = w.child.signal(libc::SIGKILL);
                w.child.wait(None).ok().flatten()
            }
        };
        if self.lock().terminating {
            return TaskFail::Closed;
        }
        let (exitcode, signal) = match status {
            Some(sys::ExitStatus::Code(c)) => (Some(c), None),
            Some(sys::ExitStatus::Signal(s)) => (None, Some(s)),
            None => (None, None),
        };
        crate::log::log_event!(
            Warning,
            "pool worker (pid {}) died ({}); the task(s) it held fail with WorkerDied, and a new worker replaces it",
            w.pid,
            match (exitcode, signal) {
                (_, Some(s)) => format!("killed by signal {s}"),
                (Some(c), None) => format!("exit code {c}"),
                (None, None) => "no status".to_string(),
            }
        );
        TaskFail::Died {
            pid: w.pid,
            exitcode,
            signal,
        }
    }

    /// Ends a worker: asks it to stop (or kills it) and reaps it.
    fn discard(&self, slot: usize, w: Worker, kill: bool) {
        if kill || w.conn.send_bytes(&[MSG_STOP], &[]).is_err() {
            let _ = w.child.signal(libc::SIGKILL);
        }
        match w.child.wait(Some(Duration::from_secs(10))) {
            Ok(Some(_)) => {}
            _ => {
                let _ = w.child.signal(libc::SIGKILL);
                let _ = w.child.wait(None);
            }
        }
        self.set_worker(slot, None);
        drop(w.process);
    }

    /// Ends a worker that was started but never handed to a handler.
    pub(crate) fn discard_worker(&self, slot: usize, w: Worker) {
        self.discard(slot, w, false);
    }

    /// A handler thread ends: once the last one has, what is still queued fails.
    pub(crate) fn handler_exited(&self) {
        let jobs: Vec<Job> = {
            let mut st = self.lock();
            st.live_handlers = st.live_handlers.saturating_sub(1);
            if st.live_handlers > 0 {
                return;
            }
            st.queued_tasks = 0;
            st.queue.drain(..).collect()
        };
        for j in jobs {
            j.fail_all(&TaskFail::Closed);
        }
    }

    /// Removes the queued jobs of `sink` (an iterator that was dropped).
    pub(crate) fn withdraw(&self, sink: &Arc<dyn Sink>) {
        let p = Arc::as_ptr(sink) as *const ();
        let mut st = self.lock();
        let mut removed = 0;
        st.queue.retain(|j| {
            let keep = Arc::as_ptr(&j.sink) as *const () != p;
            if !keep {
                removed += j.len();
            }
            keep
        });
        st.queued_tasks = st.queued_tasks.saturating_sub(removed);
    }

    pub(crate) fn fresh_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }
}

enum Event {
    Readable,
    Died,
    Timeout,
}

fn wait_worker(w: &Worker, timeout: Option<Duration>) -> Event {
    match w.conn.wait_message_or(w.child.pidfd(), timeout) {
        Ok(Wake::Message) => Event::Readable,
        Ok(Wake::TimedOut) => Event::Timeout,
        Ok(Wake::Other) | Err(_) => Event::Died,
    }
}

struct InFlight {
    job: Job,
    id: u64,
    done: usize,
    /// The job's number among those sent to its worker (compared with the worker's count
    /// of jobs begun when it dies).
    seq: u64,
}

/// A handler thread's body: serves `slot` with `worker` (and its replacements) until the
/// pool is closed and drained, or terminated.
pub(crate) fn handler(shared: Arc<Shared>, slot: usize, first: Worker) {
    let mut worker = Some(first);
    let mut inflight: VecDeque<InFlight> = VecDeque::new();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        serve(&shared, slot, &mut worker, &mut inflight)
    }));
    if r.is_err() {
        // A bug in the pool itself: never leave a caller waiting for ever.
        let f = TaskFail::Invalid("internal error in the pool's handler thread".into());
        for s in inflight.drain(..) {
            if let Some(rest) = split_rest(s) {
                rest.fail_all(&f);
            }
        }
        if let Some(w) = worker.take() {
            shared.discard(slot, w, true);
        }
        shared.set_broken(f);
        let mut st = shared.lock();
        st.live_handlers = st.live_handlers.saturating_sub(1);
    }
}

/// The handler's loop; returns when the handler is done (its accounting done too).
fn serve(
    shared: &Arc<Shared>,
    slot: usize,
    worker: &mut Option<Worker>,
    inflight: &mut VecDeque<InFlight>,
) {
    let shared = shared.clone();
    let mut buf: Vec<u8> = Vec::new();
    let mut task_started = Instant::now();
    let timeout = shared.cfg.task_timeout;
    let depth = if timeout.is_some() { 1 } else { 2 };
    let mut start_failures = 0u32;
    // Jobs are sent ahead to a busy worker only when its tasks are known to be short: for
    // long tasks that would unbalance the load (one worker holding two, another idle).
    let mut short_tasks = false;
    'outer: loop {
        let Some(w) = worker.as_mut() else {
            // Replace the worker, unless there is nothing left to do.
            {
                let st = shared.lock();
                if st.terminating
                    || st.broken.is_some()
                    || (st.closed && st.queue.is_empty() && st.active_iters == 0)
                {
                    break 'outer;
                }
            }
            match shared.start_worker(slot) {
                Ok(w) => {
                    crate::log::log_event!(
                        Info,
                        "started pool worker pid {} in slot {slot} (a replacement)",
                        w.pid
                    );
                    start_failures = 0;
                    *worker = Some(w);
                }
                Err(StartFail::Terminating) => break 'outer,
                Err(StartFail::Init(f)) => {
                    shared.set_broken(f);
                    break 'outer;
                }
                Err(StartFail::Start(f)) => {
                    start_failures += 1;
                    if start_failures >= 3 {
                        let last = {
                            let mut st = shared.lock();
                            st.live_handlers = st.live_handlers.saturating_sub(1);
                            st.live_handlers == 0
                        };
                        if last {
                            shared.set_broken(f);
                        }
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(50 * u64::from(start_failures)));
                }
            }
            continue;
        };

        // 1. Give the worker work.
        let budget = shared
            .cfg
            .max_tasks
            .map_or(usize::MAX, |m| m.saturating_sub(w.tasks));
        let take = if inflight.is_empty() {
            if budget == 0 {
                // maxtasksperchild reached: retire it; a fresh one follows.
                if let Some(w) = worker.take() {
                    shared.discard(slot, w, false);
                }
                continue;
            }
            shared.take_parking(budget, slot, worker)
        } else if inflight.len() < depth
            && short_tasks
            && budget > 0
            && inflight.iter().all(|f| f.job.args.len() <= PREFETCH_BYTES)
        {
            shared.take(budget, false)
        } else {
            Take::Nothing
        };
        let Some(w) = worker.as_mut() else {
            // It died while a direct call had it: start another.
            continue;
        };
        match take {
            Take::Exit if inflight.is_empty() => break 'outer,
            Take::Exit | Take::Nothing => {}
            Take::Jobs(jobs) => {
                // Encode lazy jobs here, in parallel with the other handlers; a frame
                // carries at most MAX_JOB_FDS descriptors, the rest waits its turn.
                let mut pieces: Vec<Job> = jobs.into_iter().flat_map(Job::materialize).collect();
                let mut nfds = 0;
                let keep = pieces
                    .iter()
                    .position(|j| {
                        nfds += j.fds.len();
                        nfds > MAX_JOB_FDS
                    })
                    .unwrap_or(pieces.len())
                    .max(1)
                    .min(pieces.len());
                let later = pieces.split_off(keep);
                shared.requeue(later);
                let jobs = pieces;
                if jobs.is_empty() {
                    continue;
                }
                buf.clear();
                buf.push(MSG_BATCH);
                buf.extend_from_slice(&(jobs.len() as u32).to_le_bytes());
                let mut fds = Vec::new();
                let flags = if timeout.is_some() {
                    FLAG_FLUSH_EACH
                } else {
                    0
                };
                let was_idle = inflight.is_empty();
                let mut sent = Vec::with_capacity(jobs.len());
                for job in jobs {
                    let id = shared.fresh_id();
                    job.encode_into(id, flags, &mut buf, &mut fds);
                    w.tasks += job.len();
                    let seq = w.jobs;
                    w.jobs += 1;
                    sent.push(InFlight {
                        job,
                        id,
                        done: 0,
                        seq,
                    });
                }
                let r = w.conn.send_bytes(&buf, &fds);
                if buf.capacity() > (4 << 20) {
                    buf = Vec::new();
                }
                match r {
                    Ok(()) => {
                        if was_idle {
                            task_started = Instant::now();
                            // New work may be of another kind: learn its length again.
                            short_tasks = false;
                        }
                        inflight.extend(sent);
                    }
                    Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::InvalidInput => {
                        // Too many handles for one message.
                        let f = TaskFail::Invalid(e.to_string());
                        for s in sent {
                            s.job.fail_all(&f);
                        }
                    }
                    Err(_) => {
                        // The worker is gone; these jobs never reached it.
                        shared.requeue(sent.into_iter().map(|s| s.job).collect());
                        if let Some(w) = worker.take() {
                            let f = shared.death(&w);
                            fail_inflight(&shared, &w, inflight, f);
                            shared.discard(slot, w, true);
                        }
                        continue;
                    }
                }
            }
        }
        if inflight.is_empty() {
            continue;
        }

        // 2. Wait for a reply, the worker's death, or the running task's deadline.
        let Some(w) = worker.as_mut() else { continue };
        match await_reply(&shared, w, inflight, task_started) {
            Step::Replied(count) => {
                let per_task = task_started.elapsed() / (count.max(1) as u32);
                short_tasks = per_task < SHORT_TASK;
                task_started = Instant::now();
            }
            Step::Lost => {
                if let Some(w) = worker.take() {
                    shared.discard(slot, w, true);
                }
            }
            Step::Waiting => {}
        }
    }
    // Leaving: nothing is in flight here.
    let f = if shared.lock().terminating {
        TaskFail::Closed
    } else {
        TaskFail::Invalid("pool worker stopped".into())
    };
    for s in inflight.drain(..) {
        if let Some(rest) = split_rest(s) {
            rest.fail_all(&f);
        }
    }
    if let Some(w) = worker.take() {
        let kill = shared.lock().terminating;
        shared.discard(slot, w, kill);
    }
    shared.handler_exited();
}

/// What came of waiting for a worker's reply.
enum Step {
    /// A reply answered this many tasks.
    Replied(usize),
    /// The worker is lost (died, garbled its reply, or overran the task timeout); the tasks
    /// it held were failed or queued again. Discard it.
    Lost,
    /// Nothing yet.
    Waiting,
}

/// Waits for one reply of `w`, its death, or the deadline of the task it runs (started at
/// `task_started`), and handles what came.
fn await_reply(
    shared: &Shared,
    w: &Worker,
    inflight: &mut VecDeque<InFlight>,
    task_started: Instant,
) -> Step {
    let timeout = shared.cfg.task_timeout;
    let wait_for = timeout.map(|t| (task_started + t).saturating_duration_since(Instant::now()));
    match wait_worker(w, wait_for) {
        Event::Readable => match w
            .conn
            .recv_with(|bytes, fds| on_reply(inflight, bytes, fds))
        {
            Ok(count) => Step::Replied(count),
            Err(_) => {
                let f = shared.death(w);
                fail_inflight(shared, w, inflight, f);
                Step::Lost
            }
        },
        Event::Died => {
            // Read what it sent before it died.
            while matches!(wait_worker(w, Some(Duration::ZERO)), Event::Readable) {
                if w.conn
                    .recv_with(|bytes, fds| on_reply(inflight, bytes, fds))
                    .is_err()
                {
                    break;
                }
            }
            let f = shared.death(w);
            fail_inflight(shared, w, inflight, f);
            Step::Lost
        }
        Event::Timeout => {
            if timeout.is_none_or(|t| task_started.elapsed() < t) {
                return Step::Waiting;
            }
            let _ = w.child.signal(libc::SIGKILL);
            let _ = w.child.wait(None);
            let f = if shared.lock().terminating {
                TaskFail::Closed
            } else {
                TaskFail::Timeout
            };
            fail_running_one(shared, inflight, f);
            Step::Lost
        }
    }
}

/// The tasks of an in-flight job that got no reply, as a job.
fn split_rest(mut s: InFlight) -> Option<Job> {
    s.job.split_off(s.done)
}

/// The worker died: the job it was running (and any job it had finished whose results it
/// had not sent yet) loses its unanswered tasks, which fail with `f`, or, while the pool's
/// `retries` allow, are queued again. The jobs behind it never began: they go back on the
/// queue for other workers. Which jobs began is what the worker counted in its
/// [`Progress`] before starting each: no job ever runs twice unless retries were asked for.
fn fail_inflight(shared: &Shared, w: &Worker, inflight: &mut VecDeque<InFlight>, f: TaskFail) {
    let begun = w.progress.begun();
    let mut again = Vec::new();
    for s in inflight.drain(..) {
        let began = s.seq < begun;
        let Some(mut job) = split_rest(s) else {
            continue;
        };
        if !began {
            again.push(job);
        } else if job.attempts < shared.cfg.retries {
            job.attempts += 1;
            again.push(job);
        } else {
            job.fail_all(&f);
        }
    }
    shared.requeue(again);
}

/// The running task (the first unanswered one) fails with `f`; everything after it goes
/// back on the queue.
fn fail_running_one(shared: &Shared, inflight: &mut VecDeque<InFlight>, f: TaskFail) {
    let mut again = Vec::new();
    if let Some(front) = inflight.pop_front() {
        let done = front.done;
        if let Some(mut rest) = split_rest(InFlight { done, ..front }) {
            let after = rest.split_off(1);
            rest.fail_all(&f);
            again.extend(after);
        }
    }
    again.extend(inflight.drain(..).filter_map(split_rest));
    shared.requeue(again);
}

/// Handles one frame from a worker; returns the number of tasks it answered.
fn on_reply(inflight: &mut VecDeque<InFlight>, bytes: &[u8], fds: Vec<OwnedFd>) -> Result<usize> {
    let mut rd = Reader::new(bytes);
    if rd.u8()? != REP_RESULTS {
        return Err(Error::codec("unexpected message from a pool worker"));
    }
    let mut fds = Some(fds);
    let mut total = 0;
    while !rd.rest().is_empty() {
        let ReplySeg {
            id,
            first,
            count,
            kind,
            payload,
        } = rd.segment()?;
        // Descriptors belong to the frame's last segment.
        let seg_fds = if rd.rest().is_empty() {
            fds.take().unwrap_or_default()
        } else {
            Vec::new()
        };
        let Some(front) = inflight.front_mut() else {
            return Err(Error::codec(
                "reply from a pool worker that was given nothing",
            ));
        };
        if front.id != id || first != front.done || first + count > front.job.len() {
            return Err(Error::codec("out-of-order reply from a pool worker"));
        }
        front
            .job
            .deliver_segment(first, count, kind, payload, seg_fds)?;
        front.done += count;
        total += count;
        if front.done == front.job.len() {
            inflight.pop_front();
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ends_keep_a_stride_until_a_task_differs() {
        let mut e = Ends::new();
        for end in [8, 16, 24] {
            e.push(end);
        }
        assert_eq!(e, Ends::Stride { size: 8, count: 3 });
        assert_eq!((e.start(2), e.end(2)), (16, 24));
        e.push(30);
        assert_eq!(e, Ends::List(vec![8, 16, 24, 30]));
        assert_eq!((e.start(3), e.end(3)), (24, 30));
        let tail = e.split_off(2, 16);
        assert_eq!(e, Ends::List(vec![8, 16]));
        assert_eq!(tail, Ends::List(vec![8, 14]));
    }

    #[test]
    fn stride_ends_split_and_empty_arguments() {
        let mut e = Ends::new();
        for end in [4, 8, 12, 16] {
            e.push(end);
        }
        let tail = e.split_off(1, 4);
        assert_eq!(e, Ends::Stride { size: 4, count: 1 });
        assert_eq!(tail, Ends::Stride { size: 4, count: 3 });
        assert_eq!(tail.end(2), 12);
        // `()` arguments take no bytes at all.
        let mut z = Ends::new();
        z.push(0);
        z.push(0);
        assert_eq!(z, Ends::Stride { size: 0, count: 2 });
        z.push(3);
        assert_eq!(z, Ends::List(vec![0, 0, 3]));
    }
}
