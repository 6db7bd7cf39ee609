//! The state every handler thread shares: the job queue, the workers' slots, the pool's
//! settings, and how a worker is started and made ready.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::ipc::RawConn;
use crate::pool::fail::TaskFail;
use crate::pool::wire::{
    Progress, Reader, SockHandle, FLAG_FLUSH_EACH, MSG_STOP, REP_INIT_FAILED, REP_READY,
};
use crate::process::ChildState;
use crate::{codec, sys, Error, Process, Result};

use super::handler::*;
use super::*;

/// Starts a worker process running the worker loop on the given socket.
pub(crate) type Factory = Arc<dyn Fn(SockHandle) -> Result<Process> + Send + Sync>;

pub(crate) struct Config {
    pub(crate) workers: usize,
    pub(crate) task_timeout: Option<Duration>,
    pub(crate) max_tasks: Option<usize>,
    pub(crate) factory: Factory,
    /// How many times a job whose worker died while running it is run again before it
    /// fails with `WorkerDied` (0: never; at most once is the default).
    pub(crate) retries: u32,
    /// Whether workers may hand large results over as memory files (`sys::heap`).
    pub(crate) hand_over: bool,
}

pub(crate) struct State {
    pub(super) queue: VecDeque<Job>,
    pub(super) queued_tasks: usize,
    pub(crate) closed: bool,
    pub(crate) terminating: bool,
    pub(super) broken: Option<TaskFail>,
    pub(super) live_handlers: usize,
    pub(super) active_iters: usize,
    pub(super) workers: Vec<Option<Arc<ChildState>>>,
    /// Handlers waiting on the condition variable for work (busy ones are not woken).
    pub(super) waiting: usize,
    /// Per slot: the worker of an idle handler, which a caller may borrow to run one task
    /// itself (see [`Shared::run_direct`]).
    pub(super) parked: Vec<Parking>,
    /// Per slot: whether the parked worker was lent since it was parked.
    pub(super) was_lent: Vec<bool>,
    /// Handlers waiting for their worker (or line) to come back from a loan.
    pub(super) lent_waiters: usize,
}

/// Where an idle handler's worker is.
pub(super) enum Parking {
    Empty,
    Parked(Box<dyn Lend>),
    Lent,
}

/// What an idle handler parks, for a caller to run one task on from its own thread (see
/// [`Shared::run_direct`]): a local worker process, or a cluster pool's line to another
/// rank, whose agent runs the task there.
pub(crate) trait Lend: Send + 'static {
    /// Whether it may take `tasks` more tasks, with `max` tasks per worker.
    fn room(&self, tasks: usize, max: Option<usize>) -> bool;
    /// Runs `job` and waits until each of its tasks has its outcome. False: it is lost
    /// (the job's outcomes are given all the same).
    fn run(&mut self, shared: &Shared, job: Job) -> bool;
    /// It was lost while lent: ends it, in slot `slot`.
    fn lost(self: Box<Self>, shared: &Shared, slot: usize);
    /// For its handler to take it back as the type it parked.
    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any>;
}

impl Lend for Worker {
    fn room(&self, tasks: usize, max: Option<usize>) -> bool {
        max.is_none_or(|m| self.tasks + tasks <= m)
    }

    fn run(&mut self, shared: &Shared, job: Job) -> bool {
        shared.run_on(self, job)
    }

    fn lost(self: Box<Self>, shared: &Shared, slot: usize) {
        shared.discard(slot, *self, true);
    }

    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any> {
        self
    }
}

/// How often, at most, a lent job's start wakes an idle handler in an MPI job (see
/// [`Shared::lent_job_sent`]).
const KICK_EVERY: Duration = Duration::from_micros(500);

pub(crate) struct Shared {
    pub(super) st: Mutex<State>,
    pub(super) cv: Condvar,
    pub(crate) cfg: Config,
    pub(super) next_id: AtomicU64,
}

/// A worker process as its handler sees it.
pub(crate) struct Worker {
    pub(super) process: Process,
    pub(super) child: Arc<ChildState>,
    pub(super) conn: RawConn,
    pub(super) pid: u32,
    pub(super) tasks: usize,
    /// Jobs sent to it so far: the next job's number in the order the worker runs them.
    pub(super) jobs: u64,
    /// Where the worker counts the jobs it has begun (see [`Progress`]).
    pub(super) progress: Progress,
}

/// Why a worker could not be made ready.
pub(crate) enum StartFail {
    /// The initializer failed: the pool cannot work (a [`TaskFail::Broken`] that says so).
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
                lent_waiters: 0,
            }),
            cv: Condvar::new(),
            cfg,
            next_id: AtomicU64::new(1),
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.st.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Why new work is refused right now, if it is.
    pub(super) fn refusal(st: &State, allow_closed: bool) -> Option<TaskFail> {
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
        self.take_locked::<Worker>(self.lock(), budget, blocking, None)
            .1
    }

    /// Takes jobs for an idle worker, waiting for them; meanwhile the worker is parked in
    /// the shared state, where a caller of [`run_direct`](Self::run_direct) may borrow it.
    /// On return the worker is back in `worker` (or `None`: it died while lent). If it was
    /// lent, whatever was taken is put back ([`Take::Nothing`]): its task budget changed.
    pub(crate) fn take_parking<W: Lend>(
        &self,
        budget: usize,
        slot: usize,
        worker: &mut Option<W>,
    ) -> Take {
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
                    st.lent_waiters += 1;
                    st = self.cv.wait(st).unwrap_or_else(|p| p.into_inner());
                    st.lent_waiters -= 1;
                }
                Parking::Parked(w) => {
                    *worker = w.into_any().downcast::<W>().ok().map(|w| *w);
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

    pub(super) fn take_locked<'a, W: Lend>(
        &'a self,
        mut st: MutexGuard<'a, State>,
        budget: usize,
        blocking: bool,
        mut park: Option<(usize, &mut Option<W>, &mut bool)>,
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

    /// Runs `job` (encoded, one task) on an idle handler's worker (see [`Lend`]: in a
    /// cluster pool, maybe another rank) from the calling thread, without the hand-offs to
    /// and from a handler thread: a lone `apply` then costs one round trip to the worker
    /// (or the rank). Faults are handled as the handler would (a dead worker is
    /// reaped and its handler starts another). Gives the job back if no worker is idle, or
    /// if work is queued (it would overtake it): submit it instead.
    pub(crate) fn run_direct(&self, job: Job) -> Option<Job> {
        let (slot, mut w) = {
            let mut st = self.lock();
            if Self::refusal(&st, false).is_some() || !st.queue.is_empty() {
                return Some(job);
            }
            let max = self.cfg.max_tasks;
            let free = st
                .parked
                .iter()
                .position(|p| matches!(p, Parking::Parked(w) if w.room(job.len(), max)));
            let Some(slot) = free else {
                return Some(job);
            };
            let Parking::Parked(w) = std::mem::replace(&mut st.parked[slot], Parking::Lent) else {
                return Some(job);
            };
            st.was_lent[slot] = true;
            (slot, w)
        };
        let alive = w.run(self, job);
        let back = if alive {
            Parking::Parked(w)
        } else {
            w.lost(self, slot);
            Parking::Empty
        };
        let mut st = self.lock();
        st.parked[slot] = back;
        let handler_waits = st.lent_waiters > 0;
        drop(st);
        if handler_waits || !alive {
            // A handler woke (work came) while its worker or line was lent, and waits for
            // it, or the worker died: wake every waiter, that handler among them. No other
            // handler is woken (see `lent_job_sent`).
            self.cv.notify_all();
        }
        None
    }

    /// Said by a lent worker or line (see [`Lend::run`]) once its job is on its way, before
    /// it waits for the answer. In an MPI job, one idle handler is woken for nothing, at
    /// most once per [`KICK_EVERY`]. There every waiter yields the processor between looks
    /// (the MPI waits, the lanes), and where several processes share few cores such
    /// waiters alone fall behind other runnable work and may wait milliseconds for their
    /// turn; a thread woken now and then keeps them going (why, inside the kernel's
    /// scheduler, is not pinned down). Cluster `apply` round trips on 2 cores kept busy by
    /// other jobs (load 3-9), mean / median / 99th percentile per repeat, µs: no wake-up
    /// 31-100 / 16-25 / 84-2,440; one per call (what the crate did before) 28-37 / 26-33 /
    /// 62-138; one per 500 µs 20-26 / 19-23 / 48-77; one per 2 ms 23-37 / 20-22 / 69-90.
    /// A system call that wakes no thread does not help, nor does the caller sleeping now
    /// and then. Outside an MPI job nobody is woken.
    pub(crate) fn lent_job_sent(&self) {
        if !crate::ipc::wait::yield_between_looks() {
            return;
        }
        static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        static LAST: AtomicU64 = AtomicU64::new(0);
        let every = KICK_EVERY.as_micros() as u64;
        // Microseconds since the first call, plus `every`: the first call wakes one.
        let now = (EPOCH.get_or_init(Instant::now).elapsed().as_micros() as u64) + every;
        let last = LAST.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= every
            && LAST
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.cv.notify_one();
        }
    }

    /// Sends `job` to `w` and waits for all its replies. False: the worker is lost.
    pub(super) fn run_on(&self, w: &mut Worker, job: Job) -> bool {
        let id = self.fresh_id();
        let flags = if self.cfg.task_timeout.is_some() {
            FLAG_FLUSH_EACH
        } else {
            0
        };
        w.tasks += job.len();
        let seq = w.jobs;
        w.jobs += 1;
        let sent = send_batch(&w.conn, &[(&job, id)], flags, &mut Vec::new());
        match sent {
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
        self.lent_job_sent();
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

    pub(super) fn set_worker(&self, slot: usize, child: Option<Arc<ChildState>>) -> bool {
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
        let sock = SockHandle {
            conn: theirs,
            progress: progress.clone(),
            hand_over: self.cfg.hand_over,
        };
        let process =
            (self.cfg.factory)(sock).map_err(|e| StartFail::Start(TaskFail::from_error(&e)))?;
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
                            return Err(StartFail::Init(TaskFail::initializer_failed(fail)));
                        }
                        Err(_) => return Err(self.died_starting(slot, w)),
                    }
                }
                Event::Died => {
                    // Died before it was ready (killed, or its initializer exited): maybe
                    // bad luck, so the caller tries again a few times.
                    return Err(self.died_starting(slot, w));
                }
            }
        }
    }

    /// The failure for tasks held by a worker that ended: reaps it.
    pub(super) fn death(&self, w: &Worker) -> TaskFail {
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

    /// A worker that died before it was ready: its slot is given up, and why it failed
    /// (or that the pool is terminating) is the answer.
    pub(super) fn died_starting(&self, slot: usize, w: Worker) -> StartFail {
        let fail = self.death(&w);
        let term = self.lock().terminating;
        self.discard(slot, w, true);
        if term {
            StartFail::Terminating
        } else {
            StartFail::Start(fail)
        }
    }

    /// Ends a worker: asks it to stop (or kills it) and reaps it.
    pub(super) fn discard(&self, slot: usize, w: Worker, kill: bool) {
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
