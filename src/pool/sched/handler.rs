//! A handler thread: serves one worker slot, sends its worker batches of jobs, hands the
//! replies to each job's sink, and fails or requeues exactly the tasks a dead worker held.

use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::ipc::Wake;
use crate::pool::fail::TaskFail;
use crate::pool::wire::{Reader, ReplySeg, FLAG_FLUSH_EACH, REP_RESULTS};
use crate::{Error, Result};

use super::*;

/// A worker slot is given up after this many failed starts in a row (a worker SIGKILLed
/// while it starts counts apart); once every slot has given up, the pool is broken.
const START_ATTEMPTS: u32 = 3;
/// ... or after this many workers in a row SIGKILLed while they start: killed from outside
/// now and then, a worker is simply replaced, but every one of twenty in a row is no
/// accident (the OOM killer in the initializer, say), and waiting on would hang the tasks.
const KILLED_ATTEMPTS: u32 = 20;

pub(super) enum Event {
    Readable,
    Died,
    Timeout,
}

pub(super) fn wait_worker(w: &Worker, timeout: Option<Duration>) -> Event {
    match w.conn.wait_message_or(w.child.pidfd(), timeout) {
        Ok(Wake::Message) => Event::Readable,
        Ok(Wake::TimedOut) => Event::Timeout,
        Ok(Wake::Other) | Err(_) => Event::Died,
    }
}

pub(super) struct InFlight {
    pub(super) job: Job,
    pub(super) id: u64,
    pub(super) done: usize,
    /// The job's number among those sent to its worker (compared with the worker's count
    /// of jobs begun when it dies).
    pub(super) seq: u64,
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
pub(super) fn serve(
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
    let mut start_kills = 0u32;
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
                    start_kills = 0;
                    *worker = Some(w);
                }
                Err(StartFail::Terminating) => break 'outer,
                Err(StartFail::Init(f)) => {
                    shared.set_broken(f);
                    break 'outer;
                }
                Err(StartFail::Start(f)) => {
                    // A worker SIGKILLed while it started was killed from outside (the
                    // OOM killer, a user): not the pool's fault, so it is replaced, as
                    // CPython does, up to KILLED_ATTEMPTS times in a row. Any other failure
                    // (the process cannot be started, or it exited or crashed in the
                    // initializer) counts against START_ATTEMPTS.
                    let killed = matches!(
                        f,
                        TaskFail::Died {
                            signal: Some(libc::SIGKILL),
                            ..
                        }
                    );
                    if killed {
                        start_kills += 1;
                    } else {
                        start_failures += 1;
                    }
                    let tries = if killed { start_kills } else { start_failures };
                    let limit = if killed {
                        KILLED_ATTEMPTS
                    } else {
                        START_ATTEMPTS
                    };
                    if tries >= limit {
                        let last = {
                            let mut st = shared.lock();
                            st.live_handlers = st.live_handlers.saturating_sub(1);
                            st.live_handlers == 0
                        };
                        crate::log::log_event!(
                            Warning,
                            "pool worker slot {slot} gave up: {limit} workers in a row failed to start ({})",
                            f.to_error()
                        );
                        if last {
                            shared.set_broken(TaskFail::Broken {
                                reason: format!(
                                    "no worker can be started: each worker slot failed to start one {limit} times in a row"
                                ),
                                cause: Box::new(f),
                            });
                        }
                        return;
                    }
                    let pause = 50 * u64::from(start_failures.max(1));
                    std::thread::sleep(Duration::from_millis(pause));
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
                let flags = if timeout.is_some() {
                    FLAG_FLUSH_EACH
                } else {
                    0
                };
                let was_idle = inflight.is_empty();
                let mut sent = Vec::with_capacity(jobs.len());
                for job in jobs {
                    let id = shared.fresh_id();
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
                let r = {
                    let batch: Vec<_> = sent.iter().map(|s| (&s.job, s.id)).collect();
                    send_batch(&w.conn, &batch, flags, &mut buf)
                };
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
pub(super) enum Step {
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
pub(super) fn await_reply(
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
pub(super) fn split_rest(mut s: InFlight) -> Option<Job> {
    s.job.split_off(s.done)
}

/// The worker died: the job it was running (and any job it had finished whose results it
/// had not sent yet) loses its unanswered tasks, which fail with `f`, or, while the pool's
/// `retries` allow, are queued again. The jobs behind it never began: they go back on the
/// queue for other workers. Which jobs began is what the worker counted in its
/// [`Progress`](crate::pool::wire::Progress) before starting each: no job ever runs twice unless retries were asked for.
pub(super) fn fail_inflight(
    shared: &Shared,
    w: &Worker,
    inflight: &mut VecDeque<InFlight>,
    f: TaskFail,
) {
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
pub(super) fn fail_running_one(shared: &Shared, inflight: &mut VecDeque<InFlight>, f: TaskFail) {
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
pub(super) fn on_reply(
    inflight: &mut VecDeque<InFlight>,
    bytes: &[u8],
    fds: Vec<OwnedFd>,
) -> Result<usize> {
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
