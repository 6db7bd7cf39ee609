//! A job: a chunk of tasks for one function, their arguments encoded end to end, and the
//! sink its outcomes go to.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::pool::fail::TaskFail;
use crate::pool::wire::{Reader, FLAG_HAS_FDS, FLAG_STRIDE, SEG_FAIL, SEG_OK};
use crate::pool::worker::TaskCode;
use crate::sys::plain::PlainType;
use crate::sys::AnyFnRef;
use crate::{codec, Error, Result};

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
pub(super) enum Ends {
    Stride { size: u32, count: usize },
    List(Vec<u32>),
}

impl Ends {
    pub(super) fn new() -> Ends {
        Ends::Stride { size: 0, count: 0 }
    }

    pub(super) fn len(&self) -> usize {
        match self {
            Ends::Stride { count, .. } => *count,
            Ends::List(v) => v.len(),
        }
    }

    /// Where task `i`'s bytes end (`i < len`).
    pub(super) fn end(&self, i: usize) -> usize {
        match self {
            Ends::Stride { size, .. } => (i + 1) * *size as usize,
            Ends::List(v) => v[i] as usize,
        }
    }

    /// Where task `i`'s bytes start.
    pub(super) fn start(&self, i: usize) -> usize {
        if i == 0 {
            0
        } else {
            self.end(i - 1)
        }
    }

    /// The first task from `i` on whose bytes end at or past `at` (the last task if none
    /// does; `i < len`).
    pub(super) fn first_reaching(&self, i: usize, at: usize) -> usize {
        let last = self.len() - 1;
        let k = match self {
            Ends::Stride { size: 0, .. } => last,
            Ends::Stride { size, .. } => at.div_ceil(*size as usize).saturating_sub(1),
            Ends::List(v) => i + v[i..].partition_point(|&e| (e as usize) < at),
        };
        k.clamp(i, last)
    }

    /// One more task, ending at `end`.
    #[inline]
    pub(super) fn push(&mut self, end: u32) {
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
    pub(super) fn split_off(&mut self, k: usize, start: usize) -> Ends {
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
    pub(super) code: TaskCode,
    /// The sink's index of the first task.
    pub(super) first: usize,
    pub(super) args: Vec<u8>,
    pub(super) ends: Ends,
    pub(super) fd_counts: Option<Vec<u32>>,
    pub(super) fds: Vec<OwnedFd>,
    pub(super) sink: Arc<dyn Sink>,
    /// How many times it was run again after its worker died while running it (see
    /// [`Config::retries`](super::shared::Config::retries)).
    pub(super) attempts: u32,
    /// Arguments not encoded yet (a map's chunk): the handler thread that takes the job
    /// encodes them, so that encoding runs in parallel, off the caller's thread.
    pub(super) raw: Option<Box<dyn RawArgs>>,
    pub(super) raw_count: usize,
}

/// A chunk of arguments waiting to be encoded.
pub(crate) trait RawArgs: Send {
    /// Encodes every argument into `job`; returns those that failed, by position.
    fn encode(self: Box<Self>, job: &mut Job) -> Vec<(usize, Error)>;
}

impl<A: Serialize + Send> RawArgs for Vec<A> {
    fn encode(self: Box<Self>, job: &mut Job) -> Vec<(usize, Error)> {
        if let Some(p) = PlainType::<A>::of() {
            // Plain numbers: their memory is their encoding, one copy for the chunk.
            if job.push_plain(p.bytes(&self), p.size()) {
                return Vec::new();
            }
        }
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
pub(super) const MAX_JOB_FDS: usize = 200;
/// A job is not grown past this many bytes of arguments.
pub(super) const MAX_JOB_BYTES: usize = 1 << 20;
/// Jobs bigger than this are not sent ahead while the worker is busy (both sides'
/// socket buffers must not fill up at once).
pub(super) const PREFETCH_BYTES: usize = 64 << 10;
/// Tasks quicker than this count as short (see `handler`).
pub(super) const SHORT_TASK: Duration = Duration::from_millis(1);
/// Most tasks sent to one worker in one frame when many small jobs are waiting.
pub(super) const MAX_BATCH_TASKS: usize = 256;

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
    pub(crate) fn materialize(self) -> Vec<Job> {
        self.materialize_cut(true)
    }

    /// [`materialize`](Self::materialize), but a job past the size limit with no failed
    /// task and no handle stays whole (`cut_large` false: for another rank, which cuts it
    /// itself, see [`cut_large`](Self::cut_large)).
    pub(crate) fn materialize_cut(mut self, cut_large: bool) -> Vec<Job> {
        let Some(raw) = self.raw.take() else {
            return vec![self];
        };
        let total = std::mem::take(&mut self.raw_count);
        let failed = raw.encode(&mut self);
        if failed.is_empty() && (!self.is_full() || (!cut_large && self.fds.is_empty())) {
            return vec![self];
        }
        if failed.is_empty() && self.fds.is_empty() {
            return self.cut_at_size();
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

    /// A job without handles, cut into pieces at the size limit as
    /// [`materialize`](Self::materialize) cuts (whole if it is within it).
    #[cfg_attr(not(feature = "mpi"), allow(dead_code))]
    pub(crate) fn cut_large(self) -> Vec<Job> {
        if self.raw.is_none() && self.fds.is_empty() && self.is_full() {
            self.cut_at_size()
        } else {
            vec![self]
        }
    }

    /// A lazy job not encoded yet will encode its arguments into the buffer `buf` gives
    /// (emptied first), whose memory is then reused.
    #[cfg_attr(not(feature = "mpi"), allow(dead_code))]
    pub(crate) fn encode_into_buffer(&mut self, buf: impl FnOnce() -> Vec<u8>) {
        if self.raw.is_some() && self.args.capacity() == 0 {
            self.args = buf();
            self.args.clear();
        }
    }

    /// The encoded arguments, taken out of a job that has been sent away (it keeps its
    /// tasks' count and its sink, for their outcomes), for their memory to be reused.
    #[cfg_attr(not(feature = "mpi"), allow(dead_code))]
    pub(crate) fn take_args(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.args)
    }

    /// An encoded job without failures or handles, cut into pieces at the size limit as
    /// [`materialize`](Self::materialize) cuts task by task (each piece takes tasks until
    /// its bytes reach [`MAX_JOB_BYTES`]), but by whole runs of tasks: each piece's bytes
    /// are copied once, not task by task.
    fn cut_at_size(mut self) -> Vec<Job> {
        let n = self.len();
        let mut starts = Vec::new();
        let (mut i, mut from) = (0, 0);
        while i < n {
            starts.push(i);
            let last = self.ends.first_reaching(i, from + MAX_JOB_BYTES);
            i = last + 1;
            from = self.ends.end(last);
        }
        // Split from the back, so that each split copies only its own piece.
        let mut pieces: Vec<Job> = starts[1..]
            .iter()
            .rev()
            .filter_map(|&k| self.split_off(k))
            .collect();
        pieces.push(self);
        pieces.reverse();
        pieces
    }

    /// Appends encoded task `i` of `self` to `to` (tasks are moved in order).
    pub(super) fn move_task(&mut self, i: usize, to: &mut Job) {
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

    /// Adds the tasks whose encoded arguments, `size` bytes each, lie end to end in
    /// `bytes` (plain numbers, which hold no handle and cannot fail to encode), to a job
    /// that has none yet. `false` (nothing added) where the tasks must go one by one: the
    /// job has tasks, its function is foreign, or the bytes pass what a job can carry.
    pub(super) fn push_plain(&mut self, bytes: &[u8], size: usize) -> bool {
        if self.ends.len() > 0
            || self.code.target.is_foreign()
            || size == 0
            || bytes.len() > u32::MAX as usize
            || !bytes.len().is_multiple_of(size)
        {
            return false;
        }
        self.args.extend_from_slice(bytes);
        self.ends = Ends::Stride {
            size: size as u32,
            count: bytes.len() / size,
        };
        true
    }

    /// Encodes one more task's argument. On error nothing is added.
    pub(crate) fn push<A: Serialize>(&mut self, a: &A) -> Result<()> {
        self.push_in(&mut codec::FdSession::begin(), a)
    }

    /// [`push`](Job::push) within an encoding session (shared by the tasks of a chunk).
    #[inline]
    pub(super) fn push_in<A: Serialize>(
        &mut self,
        session: &mut codec::FdSession,
        a: &A,
    ) -> Result<()> {
        if self.code.target.is_foreign() {
            return Err(crate::start::foreign_fn_error());
        }
        let len = self.args.len();
        let nfds = session.append(a, &mut self.args)?;
        let owned = if nfds > 0 {
            // Each task's handles are numbered from 0: the list starts again.
            session.take_fds()
        } else {
            Vec::new()
        };
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
    pub(super) fn split_off(&mut self, k: usize) -> Option<Job> {
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
            entry: AnyFnRef::from_wire(rd.i64()?, rd.u64()?).typed(),
            target: AnyFnRef::from_wire(rd.i64()?, rd.u64()?),
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
            Ends::List(
                (0..count)
                    .map(|i| crate::pool::wire::u32_at(b, i))
                    .collect(),
            )
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

    /// How many bytes [`encode_into`](Self::encode_into) appends.
    pub(crate) fn wire_len(&self) -> usize {
        let ends = match &self.ends {
            Ends::Stride { .. } => 4,
            Ends::List(v) => 4 * v.len(),
        };
        let counts = self.fd_counts.as_ref().map_or(0, |c| 4 * c.len());
        8 + 32 + 4 + 1 + 4 + ends + counts + self.args.len()
    }

    /// Appends the job to a `BATCH` frame; its descriptors ([`fds`](Self::fds)) travel with
    /// the frame, in job order.
    pub(crate) fn encode_into(&self, id: u64, flags: u8, out: &mut Vec<u8>) {
        self.encode_header_into(id, flags, out);
        out.extend_from_slice(&self.args);
    }

    /// Appends what [`encode_into`](Self::encode_into) appends before the arguments
    /// ([`args`](Self::args)), which follow it in the frame.
    pub(crate) fn encode_header_into(&self, id: u64, flags: u8, out: &mut Vec<u8>) {
        let mut flags = flags;
        if self.fd_counts.is_some() {
            flags |= FLAG_HAS_FDS;
        }
        if matches!(self.ends, Ends::Stride { .. }) {
            flags |= FLAG_STRIDE;
        }
        out.extend_from_slice(&id.to_le_bytes());
        for (offset, sig) in [
            self.code.entry.erase().to_wire(),
            self.code.target.to_wire(),
        ] {
            out.extend_from_slice(&offset.to_le_bytes());
            out.extend_from_slice(&sig.to_le_bytes());
        }
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
    }

    /// The encoded arguments of the job's tasks, as they end its part of a frame.
    pub(crate) fn args(&self) -> &[u8] {
        &self.args
    }

    /// The descriptors of the handles in the job's arguments, in task order.
    pub(crate) fn fds(&self) -> impl Iterator<Item = BorrowedFd<'_>> {
        self.fds.iter().map(|f| f.as_fd())
    }
}

/// Sends `jobs` (each with its id) to a worker as one `BATCH` frame, with their
/// descriptors. A frame larger than what the lanes carry (past
/// [`RawConn::spill_threshold`], a large argument's) travels as a memory file written
/// straight from each job's arguments: one copy, not one into `buf` and another into the
/// file. `buf` is scratch space.
pub(super) fn send_batch(
    conn: &crate::ipc::RawConn,
    jobs: &[(&Job, u64)],
    flags: u8,
    buf: &mut Vec<u8>,
) -> Result<()> {
    use crate::pool::wire::MSG_BATCH;
    buf.clear();
    buf.push(MSG_BATCH);
    buf.extend_from_slice(&(jobs.len() as u32).to_le_bytes());
    let fds: Vec<_> = jobs.iter().flat_map(|(j, _)| j.fds()).collect();
    let len = buf.len() + jobs.iter().map(|(j, _)| j.wire_len()).sum::<usize>();
    if conn.spill_threshold().is_none_or(|t| len <= t) {
        for (j, id) in jobs {
            j.encode_into(*id, flags, buf);
        }
        return conn.send_bytes(buf, &fds);
    }
    // The headers go into `buf`, one after another; the frame is each job's header
    // followed by its arguments.
    let mut ends = Vec::with_capacity(jobs.len());
    for (j, id) in jobs {
        j.encode_header_into(*id, flags, buf);
        ends.push(buf.len());
    }
    let mut parts = Vec::with_capacity(2 * jobs.len());
    let mut start = 0;
    for ((j, _), end) in jobs.iter().zip(ends) {
        parts.push(&buf[start..end]);
        parts.push(j.args());
        start = end;
    }
    let file = crate::sys::memfd::message_copy_parts(&parts)?;
    conn.send_sealed(file.as_fd(), len, &fds)
}
