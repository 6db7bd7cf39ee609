//! A small anonymous file of state that outlives the one process writing it: the
//! shared-memory tracker keeps in it which process owns which names, and the processes it
//! serves hold the file open, so that a replacement tracker can take the names over when
//! the tracker is killed (see `start::tracker`).
//!
//! One writer; readers read only once the writer is dead. Each write fills one of two
//! slots, its bytes first and then its header (`seq`, `len`: one 16-byte write), so a
//! writer killed in the middle of a write leaves the other slot, the one before, whole:
//! a reader takes the slot with the higher `seq` among those whose header was written.

use std::io;
use std::os::fd::{AsFd, OwnedFd};

/// Where the second slot begins (the file is sparse: only written pages take memory).
const SLOT: u64 = 1 << 24;
/// A slot's header: `seq` and `len`, little-endian `u64`s.
const HEADER: u64 = 16;
/// The most bytes one state may have.
pub(crate) const MAX_STATE: usize = (SLOT - HEADER) as usize;

/// A new, empty state file.
pub(crate) fn create() -> io::Result<OwnedFd> {
    Ok(rustix::fs::memfd_create(
        "multiproc-tracker-state",
        rustix::fs::MemfdFlags::CLOEXEC,
    )?)
}

fn pwrite_all(fd: impl AsFd, mut buf: &[u8], mut at: u64) -> io::Result<()> {
    while !buf.is_empty() {
        match rustix::io::pwrite(fd.as_fd(), buf, at) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                buf = &buf[n..];
                at += n as u64;
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn pread_exact(fd: impl AsFd, buf: &mut [u8], mut at: u64) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match rustix::io::pread(fd.as_fd(), &mut buf[done..], at) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                done += n;
                at += n as u64;
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Writes `state` as version `seq` (which must grow by one from write to write).
pub(crate) fn write(fd: impl AsFd, seq: u64, state: &[u8]) -> io::Result<()> {
    if state.len() > MAX_STATE {
        return Err(io::Error::other("the tracker's state is too large to keep"));
    }
    let at = (seq % 2) * SLOT;
    pwrite_all(fd.as_fd(), state, at + HEADER)?;
    let mut header = [0u8; HEADER as usize];
    header[..8].copy_from_slice(&seq.to_le_bytes());
    header[8..].copy_from_slice(&(state.len() as u64).to_le_bytes());
    pwrite_all(fd, &header, at)
}

/// The newest whole state in the file, if any was written (and the file was not
/// [`clear`]ed since).
pub(crate) fn read(fd: impl AsFd) -> Option<Vec<u8>> {
    let fd = fd.as_fd();
    let header = |slot: u64| {
        let mut h = [0u8; HEADER as usize];
        pread_exact(fd, &mut h, slot * SLOT).ok()?;
        let seq = u64::from_le_bytes(h[..8].try_into().ok()?);
        let len = u64::from_le_bytes(h[8..].try_into().ok()?);
        // A slot never written reads as zeros (or ends the file); seq starts at 1.
        (seq != 0 && len <= MAX_STATE as u64).then_some((seq, slot, len as usize))
    };
    let (_, slot, len) = [header(0), header(1)].into_iter().flatten().max()?;
    let mut state = vec![0u8; len];
    pread_exact(fd, &mut state, slot * SLOT + HEADER).ok()?;
    Some(state)
}

/// Empties the file: once a replacement has taken its state over, nobody hands it on again.
pub(crate) fn clear(fd: impl AsFd) -> io::Result<()> {
    Ok(rustix::fs::ftruncate(fd, 0)?)
}

/// Does the file hold no state (never written, or cleared)?
pub(crate) fn is_empty(fd: impl AsFd) -> bool {
    rustix::fs::fstat(fd).map_or(true, |st| st.st_size == 0)
}

/// Are `a` and `b` the same file?
pub(crate) fn same_file(a: impl AsFd, b: impl AsFd) -> bool {
    match (rustix::fs::fstat(a), rustix::fs::fstat(b)) {
        (Ok(a), Ok(b)) => a.st_dev == b.st_dev && a.st_ino == b.st_ino,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_whole_state_and_clear() {
        let f = create().unwrap();
        assert!(is_empty(&f));
        assert_eq!(read(&f), None);
        write(&f, 1, b"first").unwrap();
        assert_eq!(read(&f).as_deref(), Some(&b"first"[..]));
        write(&f, 2, b"second, longer").unwrap();
        write(&f, 3, b"3").unwrap();
        assert_eq!(read(&f).as_deref(), Some(&b"3"[..]));
        // A write whose header never came (its writer killed): the slot before it counts.
        pwrite_all(&f, b"torn", HEADER).unwrap();
        assert_eq!(read(&f).as_deref(), Some(&b"3"[..]));
        let g = rustix::io::dup(&f).unwrap();
        assert!(same_file(&f, &g) && !same_file(&f, create().unwrap()));
        clear(&g).unwrap();
        assert!(is_empty(&f));
        assert_eq!(read(&f), None);
    }
}
