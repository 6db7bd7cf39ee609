//! The pieces of MPI that rsmpi's safe API does not cover: a non-blocking send that owns
//! its buffer for as long as MPI may read it (rsmpi ties a request to a borrowed buffer and
//! panics when one is dropped unfinished), and the receive of a probed message into a
//! buffer whose memory is reused (rsmpi's `matched_receive_vec` makes a new one for each).
//! Everything else about MPI goes through rsmpi.
//!
//! MPI runs with `MPI_THREAD_SERIALIZED`: these are called by one thread at a time, under
//! the cluster pool's MPI lock (`pool::cluster::net::mpi`).

use mpi::ffi;
use mpi::point_to_point::Message;
use mpi::raw::{AsRaw, AsRawMut};
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

/// Receives the probed `message`, of `len` bytes, into `buf`: emptied first, its memory
/// reused (a spare buffer's pages are already the process's).
pub(crate) fn receive_into(mut message: Message, len: usize, buf: &mut Vec<u8>) -> Result<()> {
    let count = i32::try_from(len).map_err(|_| Error::codec("an MPI message exceeds 2 GiB"))?;
    buf.clear();
    buf.reserve(len);
    // SAFETY: `buf` has room for `len` bytes, and the probed message is exactly `count`
    // bytes (its status said so), which MPI_Mrecv writes at the start of `buf`; it sets the
    // message handle to MPI_MESSAGE_NULL, as rsmpi's `Message` expects when dropped.
    let rc = unsafe {
        ffi::MPI_Mrecv(
            buf.as_mut_ptr() as *mut std::ffi::c_void,
            count,
            ffi::RSMPI_UINT8_T,
            message.as_raw_mut(),
            ffi::RSMPI_STATUS_IGNORE,
        )
    };
    if rc != 0 {
        // The handle may still name the message: rsmpi's drop would panic on it.
        std::mem::forget(message);
        return Err(Error::Io(std::io::Error::other(format!(
            "MPI_Mrecv failed (code {rc})"
        ))));
    }
    // SAFETY: MPI_Mrecv succeeded and wrote the `len` bytes of the message.
    unsafe { buf.set_len(len) };
    Ok(())
}
