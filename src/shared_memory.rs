//! Named shared memory blocks, like Python's `multiprocessing.shared_memory`.
//!
//! A [`SharedMemory`] is a POSIX shared memory object (in /dev/shm on Linux) that any
//! process can [`attach`](SharedMemory::attach) to by name, even one not started by
//! multiproc. The creator [`unlink`](SharedMemory::unlink)s it when done.
//!
//! A block outlives its processes until unlinked, so, like CPython's resource tracker,
//! multiproc starts a small tracker process the first time a process creates a block.
//! The tracker remembers the blocks this process created and has not unlinked, and unlinks
//! them when the process is gone, however it ended (SIGKILL included). Use
//! [`SharedMemory::create_untracked`] for a block that must outlive its creator.
//!
//! # Truncation
//!
//! A named block, unlike multiproc's anonymous memory, cannot be sealed: any process that
//! can open the name can shrink it with `ftruncate`. A mapping then ends early, and a load
//! or store through it past the new end raises `SIGBUS`, which kills the process (CPython's
//! `SharedMemory.buf` has the same weakness). The byte access of this type,
//! [`read_at`](SharedMemory::read_at), [`write_at`](SharedMemory::write_at) and
//! [`to_vec`](SharedMemory::to_vec), therefore does not touch the mapping: it copies with
//! `pread`/`pwrite` on the block's descriptor, which see the same bytes and report a
//! truncated block as an [`Error::Io`] (`UnexpectedEof`). A write never grows the block
//! back (if the block is truncated exactly between the size check and the copy, the write
//! may extend it with zeros, but no process gets a signal). Only
//! [`as_ptr`](SharedMemory::as_ptr) gives raw access, with the `SIGBUS` risk.
//!
//! For memory shared only among multiproc's own processes, [`Value`](crate::Value),
//! [`Array`](crate::Array) and friends need no name and leave nothing behind.
//!
//! ```
//! use multiproc::shared_memory::SharedMemory;
//! multiproc::init();
//!
//! fn reader(name: String) -> Vec<u8> {
//!     let shm = SharedMemory::attach(&name).unwrap();
//!     let mut buf = vec![0u8; 5];
//!     shm.read_at(0, &mut buf).unwrap();
//!     buf
//! }
//! let shm = SharedMemory::create(None, 4096).unwrap();
//! shm.write_at(0, b"hello").unwrap();
//! let h = multiproc::spawn(reader, shm.name().to_string()).unwrap();
//! assert_eq!(h.join().unwrap(), b"hello");
//! shm.unlink().unwrap();
//! ```

use std::collections::HashSet;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::connection::RawConn;
use crate::sys::memfd::{self, Mapping};
use crate::{sys, Error, Result};

struct Inner {
    name: String,
    map: Mapping,
    /// Registered with this process's tracker (created here, tracked, not yet unlinked).
    tracked: Mutex<bool>,
}

/// A named block of shared memory (see the [module docs](self)).
///
/// Cloning shares the same mapping. It serializes as its name: sent to another process, it
/// is attached there by name.
///
/// ```
/// multiproc::init();
/// use multiproc::shared_memory::SharedMemory;
/// let a = SharedMemory::create(None, 64).unwrap();
/// let b = SharedMemory::attach(a.name()).unwrap();
/// a.write_at(8, &[1, 2, 3]).unwrap();
/// assert_eq!(&b.to_vec().unwrap()[8..11], &[1, 2, 3]);
/// assert!(SharedMemory::create(Some(a.name()), 64).is_err()); // exists already
/// a.unlink().unwrap();
/// ```
#[derive(Clone)]
pub struct SharedMemory {
    inner: Arc<Inner>,
}

fn os_name(name: &str) -> Result<String> {
    let n = name.strip_prefix('/').unwrap_or(name);
    if n.is_empty() || n.len() > 250 || n.contains('/') || n.contains('\0') {
        return Err(Error::invalid(format!(
            "invalid shared memory name {name:?}: 1 to 250 characters, no '/'"
        )));
    }
    Ok(format!("/{n}"))
}

fn random_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(sys::getpid());
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(t.as_nanos());
    }
    format!("mp_{:016x}", h.finish())
}

impl SharedMemory {
    /// Creates a new block of `size` bytes (zeroed) named `name`, or a fresh unique name if
    /// `None`. An existing name is an error ([`Error::Io`] with `AlreadyExists`). The block
    /// is tracked: if this process ends without unlinking it, it is unlinked then. The
    /// first tracked block starts the tracker process, which needs `multiproc::init()` to
    /// have been called ([`Error::NotInitialized`] otherwise).
    ///
    /// ```
    /// multiproc::init();
    /// let shm = multiproc::shared_memory::SharedMemory::create(None, 10).unwrap();
    /// assert_eq!(shm.len(), 10);
    /// shm.unlink().unwrap();
    /// ```
    pub fn create(name: Option<&str>, size: usize) -> Result<SharedMemory> {
        SharedMemory::create_with(name, size, true)
    }

    /// As [`create`](SharedMemory::create), but not tracked: the block stays in /dev/shm
    /// after this process ends, until someone unlinks it.
    ///
    /// ```
    /// multiproc::init();
    /// let shm = multiproc::shared_memory::SharedMemory::create_untracked(None, 10).unwrap();
    /// shm.unlink().unwrap();
    /// ```
    pub fn create_untracked(name: Option<&str>, size: usize) -> Result<SharedMemory> {
        SharedMemory::create_with(name, size, false)
    }

    fn create_with(name: Option<&str>, size: usize, track: bool) -> Result<SharedMemory> {
        if size == 0 {
            return Err(Error::invalid("a SharedMemory block needs a size above 0"));
        }
        let mut tries = 0;
        loop {
            let n = match name {
                Some(n) => os_name(n)?,
                None => format!("/{}", random_name()),
            };
            // Register first, so that no moment exists where the block exists untracked.
            if track {
                tracker_send(&TrackerMsg::Register(n.clone()))?;
            }
            match Mapping::create_named(&n, size) {
                Ok(map) => {
                    return Ok(SharedMemory {
                        inner: Arc::new(Inner {
                            name: n[1..].to_string(),
                            map,
                            tracked: Mutex::new(track),
                        }),
                    })
                }
                Err(e) => {
                    if track {
                        let _ = tracker_send(&TrackerMsg::Unregister(n.clone()));
                    }
                    tries += 1;
                    if name.is_none() && e.kind() == io::ErrorKind::AlreadyExists && tries < 100 {
                        continue;
                    }
                    return Err(Error::Io(e));
                }
            }
        }
    }

    /// Attaches to the existing block `name`, whole.
    ///
    /// ```
    /// use multiproc::shared_memory::SharedMemory;
    /// assert!(SharedMemory::attach("no_such_block_here").is_err());
    /// ```
    pub fn attach(name: &str) -> Result<SharedMemory> {
        let n = os_name(name)?;
        let map = Mapping::open_named(&n)?;
        Ok(SharedMemory {
            inner: Arc::new(Inner {
                name: n[1..].to_string(),
                map,
                tracked: Mutex::new(false),
            }),
        })
    }

    /// The block's name (without the leading `/`), to attach to it elsewhere.
    ///
    /// ```
    /// multiproc::init();
    /// let shm = multiproc::shared_memory::SharedMemory::create(Some("mp_doc_name"), 1).unwrap();
    /// assert_eq!(shm.name(), "mp_doc_name");
    /// shm.unlink().unwrap();
    /// ```
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Its size in bytes.
    ///
    /// ```
    /// multiproc::init();
    /// let shm = multiproc::shared_memory::SharedMemory::create(None, 100).unwrap();
    /// assert_eq!(shm.len(), 100);
    /// shm.unlink().unwrap();
    /// ```
    pub fn len(&self) -> usize {
        self.inner.map.len()
    }

    /// Always false (a block has at least one byte).
    ///
    /// ```
    /// multiproc::init();
    /// let shm = multiproc::shared_memory::SharedMemory::create(None, 1).unwrap();
    /// assert!(!shm.is_empty());
    /// shm.unlink().unwrap();
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn range(&self, offset: usize, n: usize) -> Result<()> {
        match offset.checked_add(n) {
            Some(end) if end <= self.len() => Ok(()),
            _ => Err(Error::invalid(format!(
                "bytes {offset}..{} are outside the {}-byte block",
                offset.saturating_add(n),
                self.len()
            ))),
        }
    }

    /// Copies bytes `offset..offset + buf.len()` into `buf`. Outside the block, an
    /// [`Error::InvalidOperation`]; if another process has truncated the block meanwhile,
    /// an [`Error::Io`] (`UnexpectedEof`), never a signal (see [Truncation](self#truncation)).
    ///
    /// ```
    /// multiproc::init();
    /// let shm = multiproc::shared_memory::SharedMemory::create(None, 4).unwrap();
    /// let mut b = [9u8; 4];
    /// shm.read_at(0, &mut b).unwrap();
    /// assert_eq!(b, [0; 4]);
    /// assert!(shm.read_at(2, &mut b).is_err());
    /// shm.unlink().unwrap();
    /// ```
    pub fn read_at(&self, offset: usize, buf: &mut [u8]) -> Result<()> {
        self.range(offset, buf.len())?;
        Ok(self.inner.map.pread_exact(offset, buf)?)
    }

    /// Copies `data` to bytes `offset..offset + data.len()`. Errors as for
    /// [`read_at`](SharedMemory::read_at): a truncated block is never grown back.
    ///
    /// ```
    /// multiproc::init();
    /// let shm = multiproc::shared_memory::SharedMemory::create(None, 4).unwrap();
    /// shm.write_at(1, &[5, 6]).unwrap();
    /// assert_eq!(shm.to_vec().unwrap(), vec![0, 5, 6, 0]);
    /// shm.unlink().unwrap();
    /// ```
    pub fn write_at(&self, offset: usize, data: &[u8]) -> Result<()> {
        self.range(offset, data.len())?;
        Ok(self.inner.map.pwrite_exact(offset, data)?)
    }

    /// A copy of the whole block ([`len`](SharedMemory::len) bytes), or an [`Error::Io`]
    /// (`UnexpectedEof`) if another process has truncated it.
    ///
    /// ```
    /// multiproc::init();
    /// let shm = multiproc::shared_memory::SharedMemory::create(None, 3).unwrap();
    /// assert_eq!(shm.to_vec().unwrap(), vec![0, 0, 0]);
    /// shm.unlink().unwrap();
    /// ```
    pub fn to_vec(&self) -> Result<Vec<u8>> {
        let mut v = vec![0u8; self.len()];
        self.inner.map.pread_exact(0, &mut v)?;
        Ok(v)
    }

    /// The address of the first byte in this process, for code that shares the memory
    /// with other languages or does its own synchronization. Valid while this handle (or a
    /// clone) lives. Other processes may write the bytes at any time.
    ///
    /// Raw access is at your own risk: if any process truncates the block (anyone who can
    /// open its name can), touching a page past the new end kills this process with
    /// `SIGBUS`. [`read_at`](SharedMemory::read_at) and [`write_at`](SharedMemory::write_at)
    /// do not have that risk (see [Truncation](self#truncation)).
    ///
    /// ```
    /// multiproc::init();
    /// let shm = multiproc::shared_memory::SharedMemory::create(None, 8).unwrap();
    /// assert!(!shm.as_ptr().is_null());
    /// shm.unlink().unwrap();
    /// ```
    pub fn as_ptr(&self) -> *mut u8 {
        self.inner.map.as_ptr()
    }

    /// Removes the name: no new process can attach; the memory goes once every process has
    /// dropped its handles. Unlinking a name that is already gone is an error.
    ///
    /// ```
    /// multiproc::init();
    /// let shm = multiproc::shared_memory::SharedMemory::create(None, 8).unwrap();
    /// shm.unlink().unwrap();
    /// assert!(multiproc::shared_memory::SharedMemory::attach(shm.name()).is_err());
    /// ```
    pub fn unlink(&self) -> Result<()> {
        let n = format!("/{}", self.inner.name);
        memfd::unlink_named(&n)?;
        let mut tracked = self.inner.tracked.lock().unwrap_or_else(|p| p.into_inner());
        if *tracked {
            *tracked = false;
            let _ = tracker_send(&TrackerMsg::Unregister(n));
        }
        Ok(())
    }
}

impl fmt::Debug for SharedMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedMemory")
            .field("name", &self.name())
            .field("len", &self.len())
            .finish()
    }
}

impl Serialize for SharedMemory {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.name().serialize(s)
    }
}

impl<'de> Deserialize<'de> for SharedMemory {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        SharedMemory::attach(&name).map_err(serde::de::Error::custom)
    }
}

// --- the tracker --------------------------------------------------------------------------

#[derive(Serialize, Deserialize)]
enum TrackerMsg {
    Register(String),
    Unregister(String),
}

/// This process's connection to its tracker, started on first use.
static TRACKER: Mutex<Option<RawConn>> = Mutex::new(None);

fn tracker_send(msg: &TrackerMsg) -> Result<()> {
    let mut g = TRACKER.lock().unwrap_or_else(|p| p.into_inner());
    if g.is_none() {
        *g = Some(start_tracker()?);
    }
    let conn = g.as_ref().ok_or(Error::Closed)?;
    match conn.send_value(msg) {
        Ok(()) => Ok(()),
        Err(e) => {
            // The tracker is gone (killed?): start another next time.
            *g = None;
            Err(e)
        }
    }
}

fn start_tracker() -> Result<RawConn> {
    crate::start::ensure_initialized()?;
    let (ours, theirs) = sys::stream_pair()?;
    crate::start::on_lasting_thread(move || crate::start::exec_self("shm-tracker", theirs))?;
    let conn = RawConn::new(ours);
    // Wait until it is ready (it has stopped dying with us), so nothing is ever registered
    // with a tracker that could still be killed along with this process.
    match conn.recv_value::<u8>() {
        Ok(_) => Ok(conn),
        Err(e) => Err(Error::Io(io::Error::other(format!(
            "the shared memory tracker did not start: {e}"
        )))),
    }
}

/// The tracker process: records the blocks its creator registers, and unlinks those still
/// registered once the creator (and every process that inherited the connection) is gone.
pub(crate) fn tracker_main(conn: RawConn) -> ! {
    memfd::become_tracker();
    if conn.send_value(&0u8).is_err() {
        sys::exit_immediately(0);
    }
    let mut names = HashSet::new();
    loop {
        match conn.recv_value::<TrackerMsg>() {
            Ok(TrackerMsg::Register(n)) => {
                names.insert(n);
            }
            Ok(TrackerMsg::Unregister(n)) => {
                names.remove(&n);
            }
            Err(_) => break,
        }
    }
    for n in names {
        let _ = memfd::unlink_named(&n);
    }
    sys::exit_immediately(0)
}

/// In a forked child: do not use (or keep alive) the parent's tracker connection.
pub(crate) fn forget_after_fork() {
    if let Ok(mut g) = TRACKER.try_lock() {
        g.take();
    }
}
