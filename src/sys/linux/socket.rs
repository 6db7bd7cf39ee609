//! Unix stream and sequenced-packet sockets that carry bytes and file descriptors
//! (`SCM_RIGHTS`).

use std::collections::VecDeque;
use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use rustix::net::{
    recvmsg, sendmsg, socketpair, AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage,
    RecvFlags, ReturnFlags, SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketFlags,
    SocketType,
};

/// Non-blocking reads tried before a blocking one (each a few hundred nanoseconds).
const SPIN_TRIES: u32 = 64;

/// Most descriptors the kernel accepts in one `SCM_RIGHTS` message (`SCM_MAX_FD`).
pub(crate) const MAX_FDS_PER_MESSAGE: usize = 253;

/// A connected pair of Unix stream sockets, close-on-exec.
pub(crate) fn stream_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    pair(SocketType::STREAM)
}

/// A connected pair of Unix sequenced-packet sockets, close-on-exec: each send is one
/// packet that arrives whole or not at all (a sender killed at any instant leaves no part
/// of one), and each receive takes exactly one packet (a receiver killed at any instant
/// leaves the next packet whole). The pipes' lanes use them: their packets are small,
/// large messages travel as sealed memory files attached to one.
pub(crate) fn packet_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    pair(SocketType::SEQPACKET)
}

fn pair(kind: SocketType) -> io::Result<(OwnedFd, OwnedFd)> {
    let (a, b) = socketpair(AddressFamily::UNIX, kind, SocketFlags::CLOEXEC, None)?;
    // Bigger buffers let large messages stream with fewer context switches, and more
    // packets wait (each costs its size plus about 700 bytes). (A Unix socket's sender is
    // limited by its send buffer alone; the receive buffer size is not used.) Failure to
    // enlarge is harmless.
    for s in [&a, &b] {
        let _ = rustix::net::sockopt::set_socket_send_buffer_size(s, 1 << 20);
    }
    Ok((a, b))
}

/// Whether `fd` is a sequenced-packet socket.
pub(crate) fn is_packet_socket(fd: BorrowedFd<'_>) -> bool {
    rustix::net::sockopt::socket_type(fd).is_ok_and(|t| t == SocketType::SEQPACKET)
}

/// Sends the concatenation of `parts` as one packet on the packet socket `fd`, with `fds`
/// attached, blocking while the peer's queue is full. Never raises SIGPIPE.
pub(crate) fn send_packet(
    fd: BorrowedFd<'_>,
    parts: &[&[u8]],
    fds: &[BorrowedFd<'_>],
) -> io::Result<()> {
    check_fd_count(fds.len())?;
    let borrowed = fds;
    let iov: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(4))];
    let mut big = Vec::new();
    let space: &mut [MaybeUninit<u8>] = if borrowed.len() <= 4 {
        &mut space
    } else {
        big.resize(
            rustix::cmsg_space!(ScmRights(borrowed.len())),
            MaybeUninit::<u8>::uninit(),
        );
        &mut big
    };
    loop {
        let mut control = SendAncillaryBuffer::new(&mut *space);
        if !borrowed.is_empty() {
            control.push(SendAncillaryMessage::ScmRights(borrowed));
        }
        // A packet socket sends all of it or nothing.
        match sendmsg(fd, &iov, &mut control, SendFlags::NOSIGNAL) {
            Ok(_) => return Ok(()),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// What [`recv_packet`] took.
pub(crate) enum Packet {
    /// Every copy of the peer is closed and no packet is left.
    End,
    /// A packet of `len` bytes (only the first `buf.len()` kept if `cut`; its descriptors
    /// were lost if `fds_cut`).
    Got {
        len: usize,
        cut: bool,
        fds_cut: bool,
    },
}

/// Takes the next packet from the packet socket `fd` without blocking (`None`: none is
/// waiting): its bytes into `buf`, its descriptors appended to `fds`.
pub(crate) fn recv_packet(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
) -> io::Result<Option<Packet>> {
    let mut space =
        [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS_PER_MESSAGE))];
    loop {
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let mut iov = [IoSliceMut::new(&mut *buf)];
        let flags = RecvFlags::CMSG_CLOEXEC | RecvFlags::DONTWAIT;
        match recvmsg(fd, &mut iov, &mut control, flags) {
            Ok(r) => {
                for msg in control.drain() {
                    if let RecvAncillaryMessage::ScmRights(it) = msg {
                        fds.extend(it);
                    }
                }
                let cut = r.flags.contains(ReturnFlags::TRUNC);
                let fds_cut = r.flags.contains(ReturnFlags::CTRUNC);
                if r.bytes == 0 && !cut {
                    // No packet this crate sends is empty: the end of the stream.
                    return Ok(Some(Packet::End));
                }
                return Ok(Some(Packet::Got {
                    len: r.bytes,
                    cut,
                    fds_cut,
                }));
            }
            Err(Errno::AGAIN) => return Ok(None),
            // A pending error (the peer closed with packets it had not read) is reported
            // once, before the packets that wait: look again.
            Err(Errno::INTR | Errno::CONNRESET) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Throws the next packet of the packet socket `fd` away (descriptors attached to it are
/// closed), without blocking.
pub(crate) fn discard_packet(fd: BorrowedFd<'_>) -> io::Result<()> {
    let mut one = [0u8; 1];
    loop {
        match rustix::net::recv(fd, &mut one, RecvFlags::DONTWAIT) {
            Ok(_) | Err(Errno::AGAIN) => return Ok(()),
            Err(Errno::INTR | Errno::CONNRESET) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Writes every byte of `parts` (in order) to the stream socket `fd`, attaching `fds` to the
/// first byte. Never raises SIGPIPE: a closed peer gives `BrokenPipe`.
pub(crate) fn send_all(
    fd: BorrowedFd<'_>,
    parts: &[&[u8]],
    fds: &[BorrowedFd<'_>],
) -> io::Result<()> {
    if fds.is_empty() {
        // The common case: no descriptors. Small messages are gathered into one buffer on
        // the stack and sent with a plain send(); nothing is allocated.
        let total: usize = parts.iter().map(|p| p.len()).sum();
        if total <= SMALL_SEND {
            let mut one = [0u8; SMALL_SEND];
            let mut at = 0;
            for p in parts {
                one[at..at + p.len()].copy_from_slice(p);
                at += p.len();
            }
            return send_plain(fd, &one[..at]);
        }
        if let [only] = parts {
            return send_plain(fd, only);
        }
    }
    check_fd_count(fds.len())?;
    let borrowed = fds;
    let mut space =
        vec![MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(borrowed.len()))];
    let mut part = 0usize;
    let mut off = 0usize;
    let mut first = true;
    while part < parts.len() {
        if off == parts[part].len() {
            part += 1;
            off = 0;
            continue;
        }
        let mut iov: Vec<IoSlice<'_>> = Vec::with_capacity(parts.len() - part);
        iov.push(IoSlice::new(&parts[part][off..]));
        for p in &parts[part + 1..] {
            if !p.is_empty() {
                iov.push(IoSlice::new(p));
            }
        }
        let mut control = SendAncillaryBuffer::new(&mut space);
        if first && !borrowed.is_empty() {
            control.push(SendAncillaryMessage::ScmRights(borrowed));
        }
        let n = match sendmsg(fd, &iov, &mut control, SendFlags::NOSIGNAL) {
            Ok(n) => n,
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        };
        first = false;
        // Advance over `n` bytes.
        let mut left = n;
        while left > 0 && part < parts.len() {
            let avail = parts[part].len() - off;
            if left >= avail {
                left -= avail;
                part += 1;
                off = 0;
            } else {
                off += left;
                left = 0;
            }
        }
    }
    if first && !borrowed.is_empty() {
        // Nothing was written (all parts empty) but descriptors must still travel.
        let mut control = SendAncillaryBuffer::new(&mut space);
        control.push(SendAncillaryMessage::ScmRights(borrowed));
        loop {
            match sendmsg(
                fd,
                &[IoSlice::new(&[0u8; 0])],
                &mut control,
                SendFlags::NOSIGNAL,
            ) {
                Ok(_) => break,
                Err(Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

/// Refuses more descriptors than one message can carry.
pub(crate) fn check_fd_count(n: usize) -> io::Result<()> {
    if n > MAX_FDS_PER_MESSAGE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("a message can carry at most {MAX_FDS_PER_MESSAGE} handles, not {n}"),
        ));
    }
    Ok(())
}

/// Messages up to this size (header included) are sent from a stack buffer.
const SMALL_SEND: usize = 512;

/// Writes all of `bytes` with send(2), without SIGPIPE.
fn send_plain(fd: BorrowedFd<'_>, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        match rustix::net::send(fd, bytes, SendFlags::NOSIGNAL) {
            Ok(n) => bytes = &bytes[n..],
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Reads what is available (at least one byte, blocking) into `buf`; received descriptors
/// are appended to `fds`. Returns 0 at end of stream. `spin`: look a few times without
/// blocking first (good for streams; request/reply channels pass false).
pub(crate) fn recv_some(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    fds: &mut VecDeque<OwnedFd>,
    spin: bool,
) -> io::Result<usize> {
    let mut space =
        [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS_PER_MESSAGE))];
    // Before sleeping in the kernel, look again for a short while: a peer streaming small
    // messages usually has the next one ready within microseconds, and not sleeping saves
    // it the cost of waking us for every message.
    let mut spins = if spin { SPIN_TRIES } else { 0 };
    loop {
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let mut iov = [IoSliceMut::new(buf)];
        let flags = if spins > 0 {
            RecvFlags::CMSG_CLOEXEC | RecvFlags::DONTWAIT
        } else {
            RecvFlags::CMSG_CLOEXEC
        };
        match recvmsg(fd, &mut iov, &mut control, flags) {
            Err(Errno::AGAIN) if spins > 0 => {
                spins -= 1;
                std::hint::spin_loop();
                continue;
            }
            Ok(r) => {
                for msg in control.drain() {
                    if let RecvAncillaryMessage::ScmRights(it) = msg {
                        fds.extend(it);
                    }
                }
                return Ok(r.bytes);
            }
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Waits until `fd` is readable (data or end of stream), up to `timeout` (`None`: forever).
/// Returns whether it is readable.
pub(crate) fn wait_readable(fd: BorrowedFd<'_>, timeout: Option<Duration>) -> io::Result<bool> {
    Ok(!readable_of(&[fd], timeout)?.is_empty())
}

/// Duplicates `fd` (close-on-exec).
pub(crate) fn dup_fd(fd: impl AsFd) -> io::Result<OwnedFd> {
    Ok(rustix::io::fcntl_dupfd_cloexec(fd, 3)?)
}

/// Reads at most `max` bytes from `fd` into the spare capacity of `v` (blocking until at
/// least one byte or end of stream), without initialising that memory first. Returns the
/// number of bytes appended (0 at end of stream). Ancillary data is not read: callers only
/// stream the body of a frame whose descriptors already arrived with its first bytes.
pub(crate) fn recv_into_spare(
    fd: BorrowedFd<'_>,
    v: &mut Vec<u8>,
    max: usize,
) -> io::Result<usize> {
    let want = max.min(v.capacity() - v.len());
    loop {
        let spare = &mut v.spare_capacity_mut()[..want];
        match rustix::net::recv(fd, spare, rustix::net::RecvFlags::empty()) {
            Ok(((filled, _), _)) => {
                let n = filled.len();
                // SAFETY: `recv` initialised the first `n` bytes of the spare capacity.
                unsafe { v.set_len(v.len() + n) };
                return Ok(n);
            }
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Waits until at least one of `fds` is readable (data, end of stream, or for a pidfd: the
/// process ended), up to `timeout` (`None`: forever). Returns a bit mask of the readable
/// ones (bit i for `fds[i]`; at most 32 descriptors); 0 means the timeout passed.
pub(crate) fn wait_any_readable(
    fds: &[BorrowedFd<'_>],
    timeout: Option<Duration>,
) -> io::Result<u32> {
    let n = fds.len().min(32);
    let ready = readable_of(&fds[..n], timeout)?;
    Ok(ready.iter().fold(0u32, |m, &i| m | 1 << i))
}

/// Waits until at least one of `fds` (any number) is readable or has hung up, up to
/// `timeout` (`None`: forever). Returns the indices of the ready ones, in order; empty
/// means the timeout passed.
pub(crate) fn readable_of(
    fds: &[BorrowedFd<'_>],
    timeout: Option<Duration>,
) -> io::Result<Vec<usize>> {
    let deadline = timeout.and_then(crate::sys::deadline);
    loop {
        let mut pfds: Vec<PollFd<'_>> = fds
            .iter()
            .map(|fd| PollFd::new(fd, PollFlags::IN))
            .collect();
        let ts = deadline.map(|d| {
            let left = d.saturating_duration_since(Instant::now());
            Timespec {
                tv_sec: left.as_secs() as _,
                tv_nsec: left.subsec_nanos() as _,
            }
        });
        match poll(&mut pfds, ts.as_ref()) {
            Ok(0) => return Ok(Vec::new()),
            Ok(_) => {
                return Ok(pfds
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| !p.revents().is_empty())
                    .map(|(i, _)| i)
                    .collect())
            }
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Copies up to `buf.len()` bytes from the front of the socket `fd` (a stream, or the next
/// packet of a packet socket) without taking them and without blocking. `None`: nothing has arrived yet; `Some(0)`: end of stream.
pub(crate) fn peek_nowait(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Option<usize>> {
    loop {
        match rustix::net::recv(fd, &mut *buf, RecvFlags::PEEK | RecvFlags::DONTWAIT) {
            Ok((n, _)) => return Ok(Some(n)),
            Err(Errno::AGAIN) => return Ok(None),
            // A pending error (the peer closed with bytes it had not read) is reported once;
            // a packet socket reports it even before the packets that wait: look again.
            Err(Errno::INTR | Errno::CONNRESET) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Whether every copy of the other end of the connected socket `fd` is closed (the kernel
/// reports a hang-up or an error), without blocking.
pub(crate) fn peer_hung_up(fd: BorrowedFd<'_>) -> bool {
    let mut pfd = [PollFd::new(&fd, PollFlags::empty())];
    let zero = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    match poll(&mut pfd, Some(&zero)) {
        Ok(0) | Err(_) => false,
        Ok(_) => pfd[0].revents().intersects(PollFlags::HUP | PollFlags::ERR),
    }
}

/// A descriptor that is readable when a socket is, or when its owner says so: an epoll
/// set holding the socket and an eventfd that the owner raises and lowers. It stands in for
/// a socket whose messages may also wait somewhere the kernel does not see (shared memory).
pub(crate) struct Readiness {
    epoll: OwnedFd,
    event: OwnedFd,
}

impl Readiness {
    /// A readiness descriptor that follows `sock` (readable, hang-up) and its own flag.
    pub(crate) fn new(sock: BorrowedFd<'_>) -> io::Result<Readiness> {
        use rustix::event::epoll;
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        let event = eventfd()?;
        let flags = epoll::EventFlags::IN | epoll::EventFlags::RDHUP;
        epoll::add(&epoll, sock, epoll::EventData::new_u64(0), flags)?;
        epoll::add(&epoll, &event, epoll::EventData::new_u64(1), flags)?;
        Ok(Readiness { epoll, event })
    }

    /// The descriptor to wait on.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.epoll.as_fd()
    }

    /// Makes the descriptor readable until [`lower`](Self::lower).
    pub(crate) fn raise(&self) {
        eventfd_add(self.event.as_fd());
    }

    /// Undoes [`raise`](Self::raise).
    pub(crate) fn lower(&self) {
        let mut b = [0u8; 8];
        let _ = rustix::io::read(&self.event, &mut b);
    }
}

/// A new event counter (`eventfd(2)`): non-blocking, close-on-exec, starting at 0. It is
/// readable while its count is above 0, and every [`eventfd_add`] wakes every `epoll` set
/// that watches it, edge-triggered ones included, even when it was readable already.
pub(crate) fn eventfd() -> io::Result<OwnedFd> {
    use rustix::event::EventfdFlags;
    Ok(rustix::event::eventfd(
        0,
        EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK,
    )?)
}

/// Adds 1 to the count of an event counter made by [`eventfd`]. A counter that is full
/// (2^64 - 2, never reached in practice) is left as it is: it is readable already.
pub(crate) fn eventfd_add(fd: BorrowedFd<'_>) {
    let _ = rustix::io::write(fd, &1u64.to_ne_bytes());
}

// --- the queues' side channel for file descriptors -----------------------------------------

/// A connected pair of Unix datagram sockets (close-on-exec): what is sent on the first
/// arrives on the second.
pub(crate) fn dgram_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let (a, b) = socketpair(
        AddressFamily::UNIX,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC,
        None,
    )?;
    // Each waiting datagram takes about 768 bytes of the sender's buffer: the default
    // (~208 KiB) holds about 270. Ask for more; the kernel caps it at `wmem_max`.
    let _ = rustix::net::sockopt::set_socket_send_buffer_size(&a, 4 << 20);
    Ok((a, b))
}

/// Sends one datagram holding `tag` with the descriptors `fds` attached (blocking).
pub(crate) fn send_tagged(
    sock: BorrowedFd<'_>,
    tag: u64,
    fds: &[BorrowedFd<'_>],
) -> io::Result<()> {
    check_fd_count(fds.len())?;
    let borrowed = fds;
    let mut space =
        vec![MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(borrowed.len()))];
    let bytes = tag.to_le_bytes();
    loop {
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !borrowed.is_empty() {
            control.push(SendAncillaryMessage::ScmRights(borrowed));
        }
        match sendmsg(
            sock,
            &[IoSlice::new(&bytes)],
            &mut control,
            SendFlags::NOSIGNAL,
        ) {
            Ok(_) => return Ok(()),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Looks at (`peek`) or takes the next datagram without blocking: its tag and the
/// descriptors that came with it (when peeking, duplicates of them). `None` if none is
/// waiting. A datagram that is not 8 bytes long gives tag `u64::MAX`.
pub(crate) fn recv_tagged(
    sock: BorrowedFd<'_>,
    peek: bool,
) -> io::Result<Option<(u64, Vec<OwnedFd>)>> {
    let mut space =
        [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS_PER_MESSAGE))];
    let mut buf = [0u8; 16];
    let mut flags = RecvFlags::DONTWAIT | RecvFlags::CMSG_CLOEXEC;
    if peek {
        flags |= RecvFlags::PEEK;
    }
    loop {
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let mut iov = [IoSliceMut::new(&mut buf)];
        match recvmsg(sock, &mut iov, &mut control, flags) {
            Ok(r) => {
                let mut fds = Vec::new();
                for msg in control.drain() {
                    if let RecvAncillaryMessage::ScmRights(it) = msg {
                        fds.extend(it);
                    }
                }
                let tag = if r.bytes == 8 {
                    let mut t = [0u8; 8];
                    t.copy_from_slice(&buf[..8]);
                    u64::from_le_bytes(t)
                } else {
                    u64::MAX
                };
                return Ok(Some((tag, fds)));
            }
            Err(Errno::AGAIN) => return Ok(None),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tagged_datagrams() {
        let (a, b) = dgram_pair().unwrap();
        assert!(recv_tagged(b.as_fd(), true).unwrap().is_none());
        let f = std::fs::File::open("/dev/null").unwrap();
        send_tagged(a.as_fd(), 42, &[f.as_fd()]).unwrap();
        let (t, fds) = recv_tagged(b.as_fd(), true).unwrap().unwrap();
        assert_eq!((t, fds.len()), (42, 1));
        let (t, fds) = recv_tagged(b.as_fd(), false).unwrap().unwrap();
        assert_eq!((t, fds.len()), (42, 1));
        assert!(recv_tagged(b.as_fd(), false).unwrap().is_none());
    }
}
