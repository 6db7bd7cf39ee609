//! The local manager's fast path: after a client has connected and authenticated over the
//! Unix socket, it hands the server two pipes, one per direction, and requests and
//! replies travel over those. A round trip over pipes costs about half one over a Unix
//! stream socket: reading from a socket also wakes the peer (the socket's write-space
//! notification shares the wait queue the peer sleeps on), a pipe wakes only its reader.

use std::cell::RefCell;
use std::os::fd::OwnedFd;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{codec, sys, Error, Result};

const MAGIC: u32 = 0x5050_4d4d; // "MMPP"
const HEADER: usize = 12;
const READ_BUF: usize = 64 * 1024;

struct Reader {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    broken: bool,
}

/// A framed, one-thread-at-a-time channel over two pipes.
pub(crate) struct PipeConn {
    rd: OwnedFd,
    wr: OwnedFd,
    reader: RefCell<Reader>,
    wbuf: RefCell<Vec<u8>>,
    limit: u64,
}

impl PipeConn {
    pub(crate) fn new(rd: OwnedFd, wr: OwnedFd, limit: u64) -> PipeConn {
        PipeConn {
            rd,
            wr,
            reader: RefCell::new(Reader {
                buf: vec![0u8; READ_BUF].into_boxed_slice(),
                start: 0,
                end: 0,
                broken: false,
            }),
            wbuf: RefCell::new(Vec::new()),
            limit,
        }
    }

    /// Sends one value as a frame.
    pub(crate) fn send<T: Serialize + ?Sized>(&self, value: &T) -> Result<()> {
        let mut buf = self.wbuf.borrow_mut();
        buf.clear();
        buf.extend_from_slice(&[0u8; HEADER]);
        codec::encode_into(value, &mut buf)?;
        let len = (buf.len() - HEADER) as u64;
        buf[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        buf[4..12].copy_from_slice(&len.to_le_bytes());
        let r = sys::write_all_parts(&self.wr, &[&buf]);
        if buf.capacity() > (1 << 20) {
            *buf = Vec::new();
        }
        r.map_err(Error::Io)
    }

    /// Receives one frame and decodes it.
    pub(crate) fn recv<T: DeserializeOwned>(&self) -> Result<T> {
        let mut st = self.reader.borrow_mut();
        if st.broken {
            return Err(Error::Codec("the channel received garbage earlier".into()));
        }
        while st.end - st.start < HEADER {
            if st.start > 0 {
                let (s, e) = (st.start, st.end);
                st.buf.copy_within(s..e, 0);
                st.end -= s;
                st.start = 0;
            }
            let end = st.end;
            let n = sys::read_some(&self.rd, &mut st.buf[end..])?;
            if n == 0 {
                return if st.end == st.start {
                    Err(Error::Eof)
                } else {
                    st.broken = true;
                    Err(truncated())
                };
            }
            st.end += n;
        }
        let h = &st.buf[st.start..st.start + HEADER];
        let magic = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
        let mut l = [0u8; 8];
        l.copy_from_slice(&h[4..12]);
        let len = u64::from_le_bytes(l);
        if magic != MAGIC || len > self.limit {
            st.broken = true;
            return Err(Error::Codec(if magic != MAGIC {
                "garbage on a manager pipe".into()
            } else {
                format!("frame of {len} bytes exceeds the {}-byte limit", self.limit)
            }));
        }
        let len = len as usize;
        st.start += HEADER;
        if len <= st.buf.len() {
            if st.start + len > st.buf.len() {
                let (s, e) = (st.start, st.end);
                st.buf.copy_within(s..e, 0);
                st.end -= s;
                st.start = 0;
            }
            while st.end - st.start < len {
                let end = st.end;
                let n = sys::read_some(&self.rd, &mut st.buf[end..])?;
                if n == 0 {
                    st.broken = true;
                    return Err(truncated());
                }
                st.end += n;
            }
            let s = st.start;
            st.start += len;
            if st.start == st.end {
                st.start = 0;
                st.end = 0;
            }
            return codec::decode(&st.buf[s..s + len]);
        }
        // A large frame: read straight into a vector that grows as bytes arrive.
        let mut payload: Vec<u8> = Vec::with_capacity(len.min(64 << 20));
        let take = (st.end - st.start).min(len);
        payload.extend_from_slice(&st.buf[st.start..st.start + take]);
        st.start += take;
        if st.start == st.end {
            st.start = 0;
            st.end = 0;
        }
        while payload.len() < len {
            if payload.len() == payload.capacity() {
                let grow = payload.capacity().min(len - payload.len());
                payload.reserve_exact(grow);
            }
            let old = payload.len();
            let room = (payload.capacity() - old).min(len - old);
            payload.resize(old + room, 0);
            let n = match sys::read_some(&self.rd, &mut payload[old..]) {
                Ok(n) => n,
                Err(e) => {
                    st.broken = true;
                    return Err(e.into());
                }
            };
            payload.truncate(old + n);
            if n == 0 {
                st.broken = true;
                return Err(truncated());
            }
        }
        drop(st);
        codec::decode(&payload)
    }

    /// Whether the channel is unusable (garbage or a truncated frame was read).
    pub(crate) fn is_broken(&self) -> bool {
        self.reader.borrow().broken
    }

    /// Whether the peer has closed its writing end (it is gone).
    pub(crate) fn peer_gone(&self) -> bool {
        sys::pipe_writers_gone(&self.rd)
    }
}

fn truncated() -> Error {
    Error::Io(std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        "the peer closed the pipe in the middle of a message",
    ))
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
        let mut h = MAGIC.to_le_bytes().to_vec();
        h.extend_from_slice(&(1u64 << 40).to_le_bytes());
        sys::write_all_parts(&o_wr, &[&h]).unwrap();
        let c = PipeConn::new(o_rd, sys::pipe_pair().unwrap().1, 1024);
        assert!(matches!(c.recv::<u8>(), Err(Error::Codec(_))));
        // Truncated: the writer goes away in the middle of a frame.
        let (t_rd, t_wr) = sys::pipe_pair().unwrap();
        let mut h = MAGIC.to_le_bytes().to_vec();
        h.extend_from_slice(&100u64.to_le_bytes());
        sys::write_all_parts(&t_wr, &[&h, b"only a part"]).unwrap();
        drop(t_wr);
        let c = PipeConn::new(t_rd, sys::pipe_pair().unwrap().1, 1024);
        assert!(matches!(c.recv::<Vec<u8>>(), Err(Error::Io(_))));
    }
}
