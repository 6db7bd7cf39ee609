//! The local manager's fast path: after a client has connected and authenticated over the
//! Unix socket, it hands the server two pipes, one per direction, and requests and
//! replies travel over those. A round trip over pipes costs about half one over a Unix
//! stream socket: reading from a socket also wakes the peer (the socket's write-space
//! notification shares the wait queue the peer sleeps on), a pipe wakes only its reader.

use std::cell::RefCell;
use std::os::fd::{AsFd, OwnedFd};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::connection::{header, Payload, ReadState, Source, HEADER};
use crate::{codec, sys, Error, Result};

/// A framed, one-thread-at-a-time channel over two pipes, with the same frames as a
/// [`Connection`](crate::Connection) (no descriptors).
pub(crate) struct PipeConn {
    rd: OwnedFd,
    wr: OwnedFd,
    reader: RefCell<ReadState>,
    wbuf: RefCell<Vec<u8>>,
}

impl PipeConn {
    /// Frames longer than `limit` bytes are refused (and break the channel).
    pub(crate) fn new(rd: OwnedFd, wr: OwnedFd, limit: u64) -> PipeConn {
        PipeConn {
            rd,
            wr,
            reader: RefCell::new(ReadState::new(Source::Pipe, limit)),
            wbuf: RefCell::new(Vec::new()),
        }
    }

    /// Sends one value as a frame.
    pub(crate) fn send<T: Serialize + ?Sized>(&self, value: &T) -> Result<()> {
        let mut buf = self.wbuf.borrow_mut();
        buf.clear();
        buf.extend_from_slice(&[0u8; HEADER]);
        codec::encode_into(value, &mut buf)?;
        let h = header(buf.len() - HEADER, 0);
        buf[..HEADER].copy_from_slice(&h);
        let r = sys::write_all_parts(&self.wr, &[&buf]);
        if buf.capacity() > (1 << 20) {
            *buf = Vec::new();
        }
        r.map_err(Error::Io)
    }

    /// Receives one frame and decodes it.
    pub(crate) fn recv<T: DeserializeOwned>(&self) -> Result<T> {
        let mut st = self.reader.borrow_mut();
        st.read_frame(self.rd.as_fd(), |p, _fds| match p {
            Payload::Borrowed(b) => codec::decode(b),
            Payload::Owned(v) => codec::decode(&v),
        })
    }

    /// Whether the channel is unusable (garbage or a truncated frame was read).
    pub(crate) fn is_broken(&self) -> bool {
        self.reader.borrow().is_broken()
    }

    /// Whether the peer has closed its writing end (it is gone).
    pub(crate) fn peer_gone(&self) -> bool {
        sys::pipe_writers_gone(&self.rd)
    }
}

/// Makes the two pipes of a connection: `(ours, theirs)`, each `(read end, write end)`.
pub(crate) fn pipe_pairs() -> Result<((OwnedFd, OwnedFd), (OwnedFd, OwnedFd))> {
    let (req_rd, req_wr) = sys::pipe_pair()?;
    let (rep_rd, rep_wr) = sys::pipe_pair()?;
    Ok(((rep_rd, req_wr), (req_rd, rep_wr)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(limit: u64) -> (PipeConn, PipeConn) {
        let ((a_rd, a_wr), (b_rd, b_wr)) = pipe_pairs().unwrap();
        (
            PipeConn::new(a_rd, a_wr, limit),
            PipeConn::new(b_rd, b_wr, limit),
        )
    }

    #[test]
    fn round_trip_small_and_large() {
        let (a, b) = pair(1 << 30);
        a.send(&"hello".to_string()).unwrap();
        assert_eq!(b.recv::<String>().unwrap(), "hello");
        let big = vec![7u8; 3 << 20];
        let t = std::thread::spawn(move || {
            b.send(&big).unwrap();
            b
        });
        assert_eq!(a.recv::<Vec<u8>>().unwrap().len(), 3 << 20);
        let b = t.join().unwrap();
        drop(b);
        assert!(matches!(a.recv::<u8>(), Err(Error::Eof)));
        assert!(a.peer_gone());
    }

    #[test]
    fn garbage_oversized_and_truncated_frames_are_errors() {
        // Garbage.
        let (g_rd, g_wr) = sys::pipe_pair().unwrap();
        sys::write_all_parts(&g_wr, &[b"this is not a frame at all"]).unwrap();
        let c = PipeConn::new(g_rd, sys::pipe_pair().unwrap().1, 1024);
        assert!(matches!(c.recv::<u8>(), Err(Error::Codec(_))));
        assert!(c.is_broken());
        // Oversized.
        let (o_rd, o_wr) = sys::pipe_pair().unwrap();
        let h = header(1 << 40, 0).to_vec();
        sys::write_all_parts(&o_wr, &[&h]).unwrap();
        let c = PipeConn::new(o_rd, sys::pipe_pair().unwrap().1, 1024);
        assert!(matches!(c.recv::<u8>(), Err(Error::Codec(_))));
        // Truncated: the writer goes away in the middle of a frame.
        let (t_rd, t_wr) = sys::pipe_pair().unwrap();
        let h = header(100, 0).to_vec();
        sys::write_all_parts(&t_wr, &[&h, b"only a part"]).unwrap();
        drop(t_wr);
        let c = PipeConn::new(t_rd, sys::pipe_pair().unwrap().1, 1024);
        assert!(matches!(c.recv::<Vec<u8>>(), Err(Error::Io(_))));
    }
}
