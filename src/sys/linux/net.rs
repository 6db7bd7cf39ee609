//! Listening and connecting stream sockets: Unix (filesystem path or Linux abstract name)
//! and TCP. Everything here is safe rustix; it lives in the OS layer with the rest of the
//! socket code so that another OS can provide its own.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use rustix::net::{sockopt, AddressFamily, SocketAddrAny, SocketAddrUnix, SocketFlags, SocketType};

/// Where a socket listens or connects, in OS terms.
#[derive(Clone, Debug)]
pub(crate) enum SockAddr {
    /// A Unix socket bound to a filesystem path.
    Path(std::path::PathBuf),
    /// A Unix socket in Linux's abstract namespace (no file; gone with its last user).
    Abstract(Vec<u8>),
    /// A TCP socket.
    Tcp(SocketAddr),
}

fn unix_addr(a: &SockAddr) -> io::Result<Option<SocketAddrUnix>> {
    Ok(match a {
        SockAddr::Path(p) => Some(SocketAddrUnix::new(p.as_path())?),
        SockAddr::Abstract(n) => Some(SocketAddrUnix::new_abstract_name(n)?),
        SockAddr::Tcp(_) => None,
    })
}

fn family(a: &SockAddr) -> AddressFamily {
    match a {
        SockAddr::Tcp(SocketAddr::V4(_)) => AddressFamily::INET,
        SockAddr::Tcp(SocketAddr::V6(_)) => AddressFamily::INET6,
        _ => AddressFamily::UNIX,
    }
}

/// Creates a listening socket (close-on-exec) bound to `addr`. A TCP socket gets
/// `SO_REUSEADDR`. Returns the socket and the address it is bound to (the real port when
/// `addr` asked for port 0).
pub(crate) fn listen_on(addr: &SockAddr, backlog: i32) -> io::Result<(OwnedFd, SockAddr)> {
    let fd =
        rustix::net::socket_with(family(addr), SocketType::STREAM, SocketFlags::CLOEXEC, None)?;
    match addr {
        SockAddr::Tcp(sa) => {
            sockopt::set_socket_reuseaddr(&fd, true)?;
            rustix::net::bind(&fd, sa)?;
        }
        _ => {
            let ua = unix_addr(addr)?.ok_or_else(|| io::Error::other("not a unix address"))?;
            rustix::net::bind(&fd, &ua)?;
        }
    }
    rustix::net::listen(&fd, backlog)?;
    let bound = match addr {
        SockAddr::Tcp(_) => {
            let any: SocketAddrAny = rustix::net::getsockname(&fd)?;
            let sa = SocketAddr::try_from(any)
                .map_err(|_| io::Error::other("getsockname gave a non-IP address"))?;
            SockAddr::Tcp(sa)
        }
        other => other.clone(),
    };
    Ok((fd, bound))
}

/// Accepts one connection (close-on-exec), retrying on `EINTR` and on errors that concern
/// only the connection that failed (it was reset before we took it).
pub(crate) fn accept_one(listener: impl AsFd) -> io::Result<OwnedFd> {
    loop {
        match rustix::net::accept_with(listener.as_fd(), SocketFlags::CLOEXEC) {
            Ok(fd) => return Ok(fd),
            Err(rustix::io::Errno::INTR)
            | Err(rustix::io::Errno::CONNABORTED)
            | Err(rustix::io::Errno::PROTO) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Connects a new stream socket (close-on-exec) to `addr`. TCP sockets get `TCP_NODELAY`:
/// requests and replies are small and latency matters.
pub(crate) fn connect_to(addr: &SockAddr) -> io::Result<OwnedFd> {
    connect_with(addr, None)
}

/// [`connect_to`] that gives up with a `TimedOut` error after `limit` (a TCP peer whose
/// host does not answer would otherwise hold the caller for minutes).
pub(crate) fn connect_within(addr: &SockAddr, limit: Duration) -> io::Result<OwnedFd> {
    connect_with(addr, Some(limit))
}

fn connect_with(addr: &SockAddr, limit: Option<Duration>) -> io::Result<OwnedFd> {
    let fd =
        rustix::net::socket_with(family(addr), SocketType::STREAM, SocketFlags::CLOEXEC, None)?;
    if limit.is_some() {
        // A blocking connect waits at most the send time-out (Linux), then says
        // EINPROGRESS.
        sockopt::set_socket_timeout(&fd, sockopt::Timeout::Send, limit)?;
    }
    let r = match addr {
        SockAddr::Tcp(sa) => rustix::net::connect(&fd, sa),
        _ => {
            let ua = unix_addr(addr)?.ok_or_else(|| io::Error::other("not a unix address"))?;
            rustix::net::connect(&fd, &ua)
        }
    };
    let timed_out = || io::Error::new(io::ErrorKind::TimedOut, "connect timed out");
    match r {
        Ok(()) => {}
        Err(rustix::io::Errno::INPROGRESS) if limit.is_some() => return Err(timed_out()),
        Err(rustix::io::Errno::INTR) => {
            // A signal (SIGCHLD, say) interrupted it; the connection continues in the
            // background: wait until it is writable, within what is left of the limit
            // (every retry after another signal with what is left then, not the whole
            // limit again).
            let deadline = limit.and_then(crate::sys::deadline);
            loop {
                let mut pfd = [rustix::event::PollFd::new(
                    &fd,
                    rustix::event::PollFlags::OUT,
                )];
                let timeout = deadline
                    .map(|d| {
                        rustix::event::Timespec::try_from(
                            d.saturating_duration_since(std::time::Instant::now()),
                        )
                    })
                    .transpose()
                    .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
                match rustix::event::poll(&mut pfd, timeout.as_ref()) {
                    Ok(0) => return Err(timed_out()),
                    Ok(_) => break,
                    Err(rustix::io::Errno::INTR) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            if let Some(e) = sockopt::socket_error(&fd)?.err() {
                return Err(e.into());
            }
        }
        Err(e) => return Err(e.into()),
    }
    if limit.is_some() {
        sockopt::set_socket_timeout(&fd, sockopt::Timeout::Send, None)?;
    }
    set_nodelay(&fd, addr);
    Ok(fd)
}

/// The pid of the process at the other end of a connected Unix socket (the one that
/// created that end), if it runs as our own user: `None` for another user's process.
pub(crate) fn peer_pid_if_same_user(fd: impl AsFd) -> io::Result<Option<u32>> {
    let cred = sockopt::socket_peercred(fd.as_fd())?;
    Ok((cred.uid == rustix::process::getuid()).then(|| cred.pid.as_raw_nonzero().get() as u32))
}

/// Shuts a connected socket down both ways: a thread blocked reading it wakes up with end
/// of file, and the peer sees the connection end (the descriptor stays open).
pub(crate) fn shutdown_both(fd: impl AsFd) {
    let _ = rustix::net::shutdown(fd, rustix::net::Shutdown::Both);
}

/// Sets `TCP_NODELAY` on a TCP socket; does nothing for Unix sockets.
pub(crate) fn set_nodelay(fd: impl AsFd, addr: &SockAddr) {
    if matches!(addr, SockAddr::Tcp(_)) {
        let _ = sockopt::set_tcp_nodelay(fd, true);
    }
}

/// Sets (or with `None` clears) the receive and send timeouts of a socket.
pub(crate) fn set_io_timeout(fd: impl AsFd, t: Option<Duration>) -> io::Result<()> {
    sockopt::set_socket_timeout(&fd, sockopt::Timeout::Recv, t)?;
    sockopt::set_socket_timeout(&fd, sockopt::Timeout::Send, t)?;
    Ok(())
}

/// Whether the peer of a connected socket has closed or reset it (without reading data).
pub(crate) fn peer_closed(fd: impl AsFd) -> bool {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let mut pfd = [PollFd::new(&fd, PollFlags::RDHUP)];
    let zero = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    match poll(&mut pfd, Some(&zero)) {
        Ok(0) => false,
        Ok(_) => pfd[0]
            .revents()
            .intersects(PollFlags::RDHUP | PollFlags::HUP | PollFlags::ERR),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A listener whose accept queue is full drops new connections' SYNs, so a connect to
    /// it waits: `connect_within` gives up with `TimedOut`; a connect to a free listener
    /// is made as by `connect_to`.
    #[test]
    fn connect_within_gives_up_on_a_listener_that_never_answers() {
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let (listener, addr) = listen_on(&SockAddr::Tcp(any), 0).unwrap();
        // Backlog 0: one connection fills the queue (nobody accepts); the rest wait.
        let mut held = Vec::new();
        let e = loop {
            match connect_within(&addr, Duration::from_millis(200)) {
                Ok(fd) => held.push(fd),
                Err(e) => break e,
            }
            assert!(held.len() < 64, "the queue never filled");
        };
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
        drop(listener);
        let (_free, addr) = listen_on(&SockAddr::Tcp(any), 8).unwrap();
        let fd = connect_within(&addr, Duration::from_secs(30)).unwrap();
        assert!(!peer_closed(&fd));
    }
}
