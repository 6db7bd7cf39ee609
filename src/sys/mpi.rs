//! The one piece of MPI that rsmpi's safe API does not cover: a non-blocking send that owns
//! its buffer for as long as MPI may read it (rsmpi ties a request to a borrowed buffer and
//! panics when one is dropped unfinished). Everything else about MPI goes through rsmpi.
//!
//! MPI runs with `MPI_THREAD_SERIALIZED`: these are called by one thread at a time, under
//! the cluster pool's MPI lock (`pool::cluster::net::mpi`).

use mpi::ffi;
use mpi::raw::AsRaw;
use mpi::topology::SimpleCommunicator;

use crate::{Error, Result};

/// A message on its way (`MPI_Isend`), with the bytes MPI reads from.
pub(crate) struct PendingSend {
    req: ffi::MPI_Request,
    buf: Vec<u8>,
    done: bool,
}

// SAFETY: the request handle is plain data that MPI lets any thread use under
// MPI_THREAD_SERIALIZED, provided no two threads call MPI at once: every call on it
// (`test`) is made under the cluster pool's MPI lock, wherever the value has moved.
unsafe impl Send for PendingSend {}

/// Starts sending `buf` to `rank` of `comm` with `tag`.
pub(crate) fn isend(
    comm: &SimpleCommunicator,
    rank: i32,
    tag: i32,
    buf: Vec<u8>,
) -> Result<PendingSend> {
    let count =
        i32::try_from(buf.len()).map_err(|_| Error::codec("an MPI message exceeds 2 GiB"))?;
    // SAFETY: `buf` is owned by the returned `PendingSend` and neither moved nor freed while
    // the request is unfinished (its heap block stays where it is when the Vec moves; see
    // `Drop`). The datatype, communicator and request are valid handles of an initialised MPI.
    let (rc, req) = unsafe {
        let mut req: ffi::MPI_Request = ffi::RSMPI_REQUEST_NULL;
        let rc = ffi::MPI_Isend(
            buf.as_ptr() as *const std::ffi::c_void,
            count,
            ffi::RSMPI_UINT8_T,
            rank,
            tag,
            comm.as_raw(),
            &mut req,
        );
        (rc, req)
    };
    if rc != 0 {
        return Err(Error::Io(std::io::Error::other(format!(
            "MPI_Isend to rank {rank} failed (code {rc})"
        ))));
    }
    Ok(PendingSend {
        req,
        buf,
        done: false,
    })
}

impl PendingSend {
    /// Whether the send has completed (its buffer is free again).
    pub(crate) fn test(&mut self) -> bool {
        if self.done {
            return true;
        }
        let mut flag: std::ffi::c_int = 0;
        // SAFETY: `self.req` is the live request of `isend`; MPI_Test sets it to
        // MPI_REQUEST_NULL once complete, after which `done` keeps us from testing it again.
        let rc = unsafe { ffi::MPI_Test(&mut self.req, &mut flag, ffi::RSMPI_STATUS_IGNORE) };
        if rc != 0 || flag != 0 {
            self.done = true;
        }
        self.done
    }
}

impl PendingSend {
    /// The buffer of a completed send, for reuse (`None` while MPI may still read it).
    pub(crate) fn take_buffer(&mut self) -> Option<Vec<u8>> {
        self.done.then(|| std::mem::take(&mut self.buf))
    }
}

impl Drop for PendingSend {
    fn drop(&mut self) {
        if !self.done {
            // MPI may still read the bytes (a peer that was lost): they must stay valid, so
            // they are leaked rather than freed.
            std::mem::forget(std::mem::take(&mut self.buf));
        }
    }
}
