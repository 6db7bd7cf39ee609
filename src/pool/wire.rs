//! The wire format between a pool worker and its handler thread, and the handles that
//! pass a worker its channel and name the functions it runs.
//!
//! Parent → worker frames:
//! - `BATCH`: `[1][njobs u32]` then per job
//!   `[id u64][entry i64][entry_sig u64][target i64][target_sig u64][count u32][flags u8]
//!   [args_len u32][ends: count × u32, or with flag STRIDE one u32, the size of every
//!   task's arguments][fd counts: count × u32, if flag HAS_FDS][args]`;
//!   the descriptors of all jobs travel with the frame, in order.
//! - `STOP`: `[2]`.
//!
//! Worker → parent frames:
//! - `READY`: `[0]`; `INIT_FAILED`: `[1][TaskFail]`;
//! - `RESULTS`: `[2]` then segments `[id u64][first u32][count u32][len u32][kind u8]`
//!   and `len` bytes: kind `SEG_OK`, the results of `count` consecutive tasks of a job
//!   (`count × R`); kind `SEG_FAIL`, one `TaskFail` for `count` tasks. The replies of a
//!   whole batch travel together; descriptors of handles inside the results travel with
//!   the frame and belong to its last segment.

use std::os::fd::AsFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ipc::segment::{SegRef, Segment};
use crate::ipc::RawConn;
use crate::sync::kinds;
use crate::{codec, Error, Result};

pub(crate) const MSG_BATCH: u8 = 1;

pub(crate) const MSG_STOP: u8 = 2;

pub(crate) const REP_READY: u8 = 0;

pub(crate) const REP_INIT_FAILED: u8 = 1;

pub(crate) const REP_RESULTS: u8 = 2;

pub(crate) const FLAG_FLUSH_EACH: u8 = 1;

pub(crate) const FLAG_HAS_FDS: u8 = 2;

pub(crate) const FLAG_STRIDE: u8 = 4;

/// Where each task's arguments end in a job's bytes, as sent.
#[derive(Clone)]
pub(crate) enum WireEnds {
    /// Every task's arguments take this many bytes.
    Stride(usize),
    /// Little-endian u32 ends, one per task, at this place in the frame.
    List(std::ops::Range<usize>),
}

/// What a worker counts in shared memory: the jobs it has begun, in the order they were
/// sent. Its handler reads it when the worker dies, to tell the job that was running from
/// the jobs that never began (a worker hands over each job's results before it begins the
/// next).
#[derive(Clone)]
pub(crate) struct Progress(Arc<Segment>);

impl Progress {
    pub(crate) fn new() -> Result<Progress> {
        Ok(Progress(Segment::new(kinds::POOL_PROGRESS, 8)?))
    }

    /// Counts one more job begun (in the worker, before it runs any of the job).
    pub(crate) fn begin(&self) {
        self.0.u64(0).fetch_add(1, Ordering::Release);
    }

    /// The jobs begun so far.
    pub(crate) fn begun(&self) -> u64 {
        self.0.u64(0).load(Ordering::Acquire)
    }
}

/// The worker's end of its channel (socket and lanes) and its progress counter, passed as
/// handles in the worker's arguments.
pub(crate) struct SockHandle {
    pub(crate) conn: RawConn,
    pub(crate) progress: Progress,
    /// Whether the worker may hand large results over as memory files (`sys::heap`).
    pub(crate) hand_over: bool,
}

impl Serialize for SockHandle {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let lane = self
            .conn
            .lane_fd()
            .ok_or_else(|| serde::ser::Error::custom("a pool worker's channel has no lanes"))?;
        (
            codec::FdRef(self.conn.as_fd()),
            codec::FdRef(lane),
            SegRef(&self.progress.0),
            self.hand_over,
        )
            .serialize(s)
    }
}

impl<'de> Deserialize<'de> for SockHandle {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct ProgressSeg(Arc<Segment>);
        impl<'de> Deserialize<'de> for ProgressSeg {
            fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                Segment::deserialize_handle(d, kinds::POOL_PROGRESS).map(ProgressSeg)
            }
        }
        let (sock, lane, progress, hand_over) =
            <(codec::FdOwned, codec::FdOwned, ProgressSeg, bool)>::deserialize(d)?;
        let conn = RawConn::from_lane_fds(sock.0, lane.0).map_err(crate::codec::handle_error)?;
        Ok(SockHandle {
            conn,
            progress: Progress(progress.0),
            hand_over,
        })
    }
}

/// Reads the little-endian fields of a frame; running off the end is a codec error.
pub(crate) struct Reader<'a> {
    b: &'a [u8],
    /// Length of the whole frame (to tell positions).
    total: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(b: &'a [u8]) -> Reader<'a> {
        Reader { b, total: b.len() }
    }

    /// Skips the next `n` bytes and tells where they lie in the frame.
    pub(crate) fn span(&mut self, n: usize) -> Result<std::ops::Range<usize>> {
        let start = self.total - self.b.len();
        self.bytes(n)?;
        Ok(start..start + n)
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.b.len() < n {
            return Err(Error::codec("truncated pool frame"));
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }

    pub(crate) fn u8(&mut self) -> Result<u8> {
        Ok(self.bytes(1)?[0])
    }

    pub(crate) fn u32(&mut self) -> Result<u32> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.bytes(4)?);
        Ok(u32::from_le_bytes(a))
    }

    pub(crate) fn u64(&mut self) -> Result<u64> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.bytes(8)?);
        Ok(u64::from_le_bytes(a))
    }

    pub(crate) fn i64(&mut self) -> Result<i64> {
        Ok(self.u64()? as i64)
    }

    pub(crate) fn rest(&self) -> &'a [u8] {
        self.b
    }

    /// The next segment of a `RESULTS` frame.
    pub(crate) fn segment(&mut self) -> Result<ReplySeg<'a>> {
        let id = self.u64()?;
        let first = self.u32()? as usize;
        let count = self.u32()? as usize;
        let len = self.u32()? as usize;
        let kind = self.u8()?;
        let payload = self.bytes(len)?;
        Ok(ReplySeg {
            id,
            first,
            count,
            kind,
            payload,
        })
    }
}

/// One segment of a `RESULTS` frame: the outcomes of tasks `first..first + count` of job
/// `id`.
pub(crate) struct ReplySeg<'a> {
    pub(crate) id: u64,
    pub(crate) first: usize,
    pub(crate) count: usize,
    pub(crate) kind: u8,
    pub(crate) payload: &'a [u8],
}

/// Appends a whole segment to `out`.
#[cfg_attr(not(feature = "mpi"), allow(dead_code))]
pub(crate) fn push_segment(
    out: &mut Vec<u8>,
    id: u64,
    first: usize,
    count: usize,
    kind: u8,
    payload: &[u8],
) {
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&(first as u32).to_le_bytes());
    out.extend_from_slice(&(count as u32).to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.push(kind);
    out.extend_from_slice(payload);
}

/// The `i`th little-endian u32 of `b` (callers checked the length).
#[inline]
pub(crate) fn u32_at(b: &[u8], i: usize) -> u32 {
    match b.get(i * 4..i * 4 + 4) {
        Some(&[a, b, c, d]) => u32::from_le_bytes([a, b, c, d]),
        _ => 0,
    }
}

/// Size of a result segment's header: `[id u64][first u32][count u32][len u32][kind u8]`.
pub(crate) const SEG_HEADER: usize = 8 + 4 + 4 + 4 + 1;

/// Segment kinds: the tasks' results (`count × R`), or one failure for all its tasks.
pub(crate) const SEG_OK: u8 = 0;

pub(crate) const SEG_FAIL: u8 = 1;
