//! The worker process: the loop a pool worker runs (the frames it reads and writes are in
//! [`wire`](super::wire)).
//!
//! A worker is a long-lived child running [`worker_main`]. It runs the pool's initializer
//! once, says it is ready, then reads batches of jobs from its channel (a socket with
//! shared-memory lanes, as under a pipe) until told to stop (or until the channel closes). Each job names its function the way the start layer names
//! a process's target: an offset in this binary, checked against the build identity and the
//! function's type (see `sys::code`). The function is called through a generic trampoline,
//! [`run_job`], whose own offset travels with the job.

use std::collections::VecDeque;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::panic::AssertUnwindSafe;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::fail::TaskFail;
use super::wire::*;
use crate::ipc::RawConn;
use std::rc::Rc;

use crate::sys::plain::PlainType;
use crate::sys::{AnyFnRef, FnRef};
use crate::{codec, start, Error, Result};

/// The initializer and its arguments.
#[derive(Serialize, Deserialize, Clone)]
pub(crate) struct InitSpec<I> {
    pub(crate) target: AnyFnRef,
    pub(crate) args: I,
}

/// What a worker process is started with.
#[derive(Serialize, Deserialize)]
pub(crate) struct WorkerArgs<I> {
    pub(crate) sock: SockHandle,
    pub(crate) init: Option<InitSpec<I>>,
}

/// Names a pool function to a worker: the trampoline [`run_job::<A, R>`] and the user's
/// `fn(A) -> R`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TaskCode {
    pub(crate) entry: FnRef<JobEntry>,
    pub(crate) target: AnyFnRef,
}

impl TaskCode {
    pub(crate) fn of<A: DeserializeOwned, R: Serialize>(f: fn(A) -> R) -> TaskCode {
        TaskCode {
            entry: FnRef::of(run_job::<A, R> as JobEntry),
            target: FnRef::of(f).erase(),
        }
    }
}

/// One job as the worker sees it, handed to the trampoline with the frame it came in
/// (where its arguments are). It holds no borrow, so the trampoline's type has no lifetime
/// of its own and can be named across processes (see `sys::FnRef`).
pub(crate) struct JobRun {
    target: AnyFnRef,
    id: u64,
    count: usize,
    flush_each: bool,
    /// Where the job's arguments, their ends and descriptor counts lie in the frame.
    args: std::ops::Range<usize>,
    ends: WireEnds,
    fd_counts: Option<std::ops::Range<usize>>,
    fds: VecDeque<OwnedFd>,
    conn: Rc<RawConn>,
    /// The outgoing frame: `[RESULTS]` and segments, shared by the jobs of a batch (moved
    /// in for the job and back out after it).
    out: Vec<u8>,
    /// Where the open segment of results starts in `out`, if one is open.
    seg: Option<usize>,
    /// How many tasks the open segment holds.
    seg_count: usize,
    /// Index (within the job) of the next task to report.
    next: usize,
}

/// Results are sent early once this many bytes are waiting.
const SEND_EARLY: usize = 1 << 20;

impl JobRun {
    /// Writes a segment header for `count` tasks from `first`; returns where it starts.
    fn header(&mut self, first: usize, count: usize, kind: u8) -> usize {
        if self.out.is_empty() {
            self.out.push(REP_RESULTS);
        }
        let at = self.out.len();
        self.out.extend_from_slice(&self.id.to_le_bytes());
        self.out.extend_from_slice(&(first as u32).to_le_bytes());
        self.out.extend_from_slice(&(count as u32).to_le_bytes());
        self.out.extend_from_slice(&[0u8; 4]);
        self.out.push(kind);
        at
    }

    /// Fills in the length of the segment that starts at `at` and runs to the end.
    fn seal(&mut self, at: usize, count: usize) {
        let len = (self.out.len() - at - SEG_HEADER) as u32;
        self.out[at + 12..at + 16].copy_from_slice(&(count as u32).to_le_bytes());
        self.out[at + 16..at + 20].copy_from_slice(&len.to_le_bytes());
    }

    /// Completes the open segment of results, if any.
    fn close_segment(&mut self) {
        if let Some(at) = self.seg.take() {
            if self.seg_count == 0 {
                self.out.truncate(at);
            } else {
                self.seal(at, self.seg_count);
            }
        }
    }

    /// Sends everything waiting now (with `fds`).
    fn send_now(&mut self, fds: &[std::os::fd::BorrowedFd<'_>]) -> Result<()> {
        self.close_segment();
        if self.out.len() > 1 {
            self.conn.send_bytes(&self.out, fds)?;
        }
        self.out.clear();
        Ok(())
    }

    /// Sends the frame the codec wrote to `file` (`len` bytes, `out` now empty): closes
    /// the open segment there, seals the file and sends it, with the descriptors of the
    /// `nfds` handles in the last result.
    fn send_file(
        &mut self,
        session: &mut codec::FdSession,
        nfds: usize,
        mut file: crate::sys::memfd::MessageFile,
        len: usize,
    ) -> Result<()> {
        if let Some(at) = self.seg.take() {
            let mut counts = [0u8; 8];
            counts[..4].copy_from_slice(&(self.seg_count as u32).to_le_bytes());
            counts[4..].copy_from_slice(&((len - at - SEG_HEADER) as u32).to_le_bytes());
            file.write_at((at + 12) as u64, &counts)?;
        }
        let fd = file.finish()?;
        let fds = if nfds > 0 {
            session.take_fds()
        } else {
            Vec::new()
        };
        self.conn
            .send_sealed(fd.as_fd(), len, &crate::ipc::conn::borrowed(&fds))
    }

    /// Sends what waits if this job sends each reply at once, or too much waits.
    #[inline]
    fn maybe_send(&mut self) -> Result<()> {
        if self.flush_each || self.out.len() >= SEND_EARLY {
            self.send_now(&[])?;
        }
        Ok(())
    }

    /// Task `self.next`'s result: encodes it into the open segment (opening one if needed).
    /// `Ok(Some(fds))`: it holds handles, whose descriptors must be sent now, while the
    /// result is alive.
    #[inline]
    fn push_ok<R: Serialize>(
        &mut self,
        session: &mut codec::FdSession,
        r: &R,
    ) -> Result<std::result::Result<(), TaskFail>> {
        if self.seg.is_none() {
            self.seg = Some(self.header(self.next, 0, SEG_OK));
            self.seg_count = 0;
        }
        // A result that takes the frame past what the lanes carry inline is encoded
        // straight into the sealed memory file the frame travels in (no copy of it in
        // between), and the frame is sent at once.
        let spill_at = self.conn.spill_threshold().unwrap_or(usize::MAX);
        match session.append_spilling(r, &mut self.out, spill_at) {
            Ok((nfds, Some((file, len)))) => {
                self.seg_count += 1;
                self.next += 1;
                self.send_file(session, nfds, file, len)?;
                Ok(Ok(()))
            }
            Ok((nfds, None)) => {
                self.seg_count += 1;
                self.next += 1;
                if nfds > 0 {
                    let fds = session.take_fds();
                    self.send_now(&crate::ipc::conn::borrowed(&fds))?;
                } else {
                    self.maybe_send()?;
                }
                Ok(Ok(()))
            }
            Err(e) => Ok(Err(TaskFail::Codec(format!(
                "cannot encode the task's result: {}",
                codec_message(e)
            )))),
        }
    }

    /// Task `self.next`'s result, a plain number whose memory (`bytes`) is its encoding:
    /// copied into the open segment (opening one if needed). `false` (nothing done) if it
    /// would take the frame past `spill_at`, where [`push_ok`](Self::push_ok) takes over.
    #[inline]
    fn push_plain(&mut self, bytes: &[u8], spill_at: usize) -> Result<bool> {
        if self.out.len() + bytes.len() + SEG_HEADER + 1 > spill_at {
            return Ok(false);
        }
        if self.seg.is_none() {
            self.seg = Some(self.header(self.next, 0, SEG_OK));
            self.seg_count = 0;
        }
        self.out.extend_from_slice(bytes);
        self.seg_count += 1;
        self.next += 1;
        self.maybe_send()?;
        Ok(true)
    }

    /// The next `count` tasks failed with `fail`.
    fn push_fail(&mut self, fail: TaskFail, count: usize) -> Result<()> {
        self.close_segment();
        let at = self.header(self.next, count, SEG_FAIL);
        if codec::append_with_fds(&fail, &mut self.out).is_err() {
            // A failure always encodes; if not, say so without the details.
            let _ = codec::append_with_fds(
                &TaskFail::Codec("unreadable failure".into()),
                &mut self.out,
            );
        }
        self.seal(at, count);
        self.next += count;
        self.maybe_send()
    }

    /// The arguments of the next task (from `*start`, the end of the previous one),
    /// decoded; copied from their bytes where they are a plain number (`plain`, for a job
    /// without handles). Tasks are taken in order: handles inside take the next
    /// descriptors.
    #[inline]
    fn decode_task<A: DeserializeOwned>(
        &mut self,
        frame: &[u8],
        dec: &mut codec::TaskDecoder,
        (i, plain): (usize, Option<PlainType<A>>),
        start: &mut usize,
    ) -> Result<A> {
        let end = match &self.ends {
            WireEnds::Stride(size) => (i + 1).saturating_mul(*size),
            WireEnds::List(e) => u32_at(&frame[e.clone()], i) as usize,
        };
        let args = &frame[self.args.clone()];
        let bytes = args.get(*start..end).unwrap_or(&[]);
        *start = end;
        if let Some(a) = plain.and_then(|p| p.read(bytes)) {
            return Ok(a);
        }
        match &self.fd_counts {
            None => dec.decode(bytes, Vec::new()),
            Some(c) => {
                let nfds = (u32_at(&frame[c.clone()], i) as usize).min(self.fds.len());
                let fds: Vec<OwnedFd> = self.fds.drain(..nfds).collect();
                dec.decode(bytes, fds)
            }
        }
    }
}

/// The trampoline's type: runs every task of a job and sends the replies.
pub(crate) type JobEntry = fn(&mut JobRun, &[u8]) -> Result<()>;

fn codec_message(e: Error) -> String {
    match e {
        Error::Codec(m) => m.full_text(),
        other => other.to_string(),
    }
}

fn panicked() -> TaskFail {
    let (message, location, backtrace) =
        start::take_last_panic().unwrap_or_else(|| ("<unknown panic>".into(), None, None));
    TaskFail::Panicked {
        message,
        location,
        backtrace,
    }
}

/// Runs `f: fn(A) -> R` (named by `run.target`) on each task of the job.
pub(crate) fn run_job<A: DeserializeOwned, R: Serialize>(
    run: &mut JobRun,
    frame: &[u8],
) -> Result<()> {
    let Some(f) = run.target.typed::<fn(A) -> R>().get() else {
        let n = run.count;
        return run.push_fail(
            TaskFail::BuildMismatch("the pool function's type does not match in the worker".into()),
            n,
        );
    };
    // Plain numbers (their memory is their encoding) are copied in and out, with no serde
    // call per task.
    let plain_args = PlainType::<A>::of().filter(|_| run.fd_counts.is_none());
    let plain_results = PlainType::<R>::of();
    let spill_at = run.conn.spill_threshold().unwrap_or(usize::MAX);
    let mut session = codec::FdSession::begin();
    let mut dec = codec::TaskDecoder::begin();
    let mut start = 0;
    for i in 0..run.count {
        let a: A = match run.decode_task(frame, &mut dec, (i, plain_args), &mut start) {
            Ok(a) => a,
            Err(e) => {
                let fail = match e {
                    // A handle that cannot be rebuilt here: its own error, naming it.
                    Error::Io(_) => TaskFail::from_error(&e),
                    e => TaskFail::Codec(format!(
                        "cannot decode the task's arguments: {}",
                        codec_message(e)
                    )),
                };
                run.push_fail(fail, 1)?;
                continue;
            }
        };
        match std::panic::catch_unwind(AssertUnwindSafe(move || f(a))) {
            Ok(r) => {
                if let Some(p) = plain_results {
                    if run.push_plain(p.bytes(std::slice::from_ref(&r)), spill_at)? {
                        continue;
                    }
                }
                if let Err(fail) = run.push_ok(&mut session, &r)? {
                    run.push_fail(fail, 1)?;
                }
            }
            Err(_) => run.push_fail(panicked(), 1)?,
        }
    }
    run.close_segment();
    Ok(())
}

/// Parses and runs one batch. `Ok(false)`: told to stop.
fn run_batch(
    conn: &Rc<RawConn>,
    progress: &Progress,
    bytes: &[u8],
    fds: Vec<OwnedFd>,
    out: &mut Vec<u8>,
) -> Result<bool> {
    let mut rd = Reader::new(bytes);
    match rd.u8()? {
        MSG_STOP => return Ok(false),
        MSG_BATCH => {}
        other => return Err(Error::codec(format!("unknown pool message {other}"))),
    }
    let njobs = rd.u32()?;
    let mut fds: VecDeque<OwnedFd> = fds.into();
    out.clear();
    for _ in 0..njobs {
        // What this worker finished is in the handler's hands before the next job starts:
        // if that job kills the worker, the results it finished are not lost with it, and
        // if it runs long, they do not wait for it. (Sending wakes the handler only if it
        // sleeps: one busy with replies in a hurry reads them as they come.)
        if out.len() > 1 {
            conn.send_bytes(out, &[])?;
            out.clear();
        }
        let id = rd.u64()?;
        let entry = AnyFnRef::from_wire(rd.i64()?, rd.u64()?).typed::<JobEntry>();
        let target = AnyFnRef::from_wire(rd.i64()?, rd.u64()?);
        let count = rd.u32()? as usize;
        let flags = rd.u8()?;
        let args_len = rd.u32()? as usize;
        let ends = if flags & FLAG_STRIDE != 0 {
            WireEnds::Stride(rd.u32()? as usize)
        } else {
            WireEnds::List(rd.span(count * 4)?)
        };
        let fd_counts = if flags & FLAG_HAS_FDS != 0 {
            Some(rd.span(count * 4)?)
        } else {
            None
        };
        let args = rd.span(args_len)?;
        let nfds: usize = fd_counts.as_ref().map_or(0, |c| {
            (0..count)
                .map(|i| u32_at(&bytes[c.clone()], i) as usize)
                .sum()
        });
        let job_fds: VecDeque<OwnedFd> = fds.drain(..nfds.min(fds.len())).collect();
        let mut run = JobRun {
            target,
            id,
            count,
            flush_each: flags & FLAG_FLUSH_EACH != 0,
            args,
            ends,
            fd_counts,
            fds: job_fds,
            conn: conn.clone(),
            out: std::mem::take(out),
            seg: None,
            seg_count: 0,
            next: 0,
        };
        progress.begin();
        let r = match entry.get() {
            Some(e) => e(&mut run, bytes),
            None => run.push_fail(
                TaskFail::BuildMismatch("the worker's executable is not the parent's".into()),
                count,
            ),
        };
        *out = std::mem::take(&mut run.out);
        r?;
    }
    if out.len() > 1 {
        conn.send_bytes(out, &[])?;
    }
    out.clear();
    if !rd.rest().is_empty() {
        return Err(Error::codec("trailing bytes in a pool batch"));
    }
    Ok(true)
}

/// The worker process's body.
pub(crate) fn worker_main<I: DeserializeOwned, IR: std::process::Termination>(args: WorkerArgs<I>) {
    start::set_quiet_panics(true);
    let SockHandle {
        conn,
        progress,
        hand_over,
    } = args.sock;
    if !hand_over {
        codec::never_hand_over();
    }
    let conn = Rc::new(conn);
    if let Some(init) = args.init {
        let fail = match init.target.typed::<fn(I) -> IR>().get() {
            None => Some(TaskFail::BuildMismatch(
                "the initializer's type does not match in the worker".into(),
            )),
            Some(f) => match start::call_reporting(f, init.args) {
                Ok(0) => None,
                Ok(code) => Some(TaskFail::Invalid(start::initializer_reported(code))),
                Err(_) => Some(panicked()),
            },
        };
        if let Some(fail) = fail {
            let mut b = vec![REP_INIT_FAILED];
            let _ = codec::append_with_fds(&fail, &mut b);
            let _ = conn.send_bytes(&b, &[]);
            return;
        }
    }
    let _ = std::io::stdout().flush();
    if conn.send_bytes(&[REP_READY], &[]).is_err() {
        return;
    }
    let mut out = Vec::new();
    loop {
        let r = conn.recv_with(|bytes, fds| run_batch(&conn, &progress, bytes, fds, &mut out));
        let _ = std::io::stdout().flush();
        if out.capacity() > (4 << 20) {
            out = Vec::new();
        }
        match r {
            Ok(true) => {}
            _ => break,
        }
    }
}
