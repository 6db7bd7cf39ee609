//! Named shared memory blocks, like Python's `multiprocessing.shared_memory`.
//!
//! A [`SharedMemory`] is a POSIX shared memory object (in /dev/shm on Linux) that any
//! process can [`attach`](SharedMemory::attach) to by name, even one not started by
//! multiproc. The creator [`unlink`](SharedMemory::unlink)s it when done.
//!
//! A block outlives its processes until unlinked, so, like CPython's resource tracker,
//! multiproc starts a small tracker process the first time a process creates a block.
//! The tracker remembers the blocks each process created and has not unlinked, and unlinks
//! them when that process is gone, however it ended (SIGKILL included). Use
//! [`SharedMemory::create_untracked`] for a block that must outlive its creator.
//!
//! # The tracker, and what it survives
//!
//! One tracker serves a whole tree of processes: children (plain processes, pool workers,
//! their own children) use their parent's tracker, each through a connection of its own,
//! instead of starting one each. The tracker unlinks a process's names when that process's
//! connection closes, which the kernel does when the process ends, however it ends.
//!
//! - **A process is killed**: its connection closes; its names are unlinked at once.
//! - **The whole process group is killed** (`kill -9 -PGID`, job control, a supervisor
//!   killing a job): the tracker is not in the group. It starts its own session
//!   (`setsid`) before it accepts the first name, so it sees every connection close and
//!   unlinks everything. Waiting for the connections, rather than for a pid or a timer,
//!   works whatever order the processes die in and needs no polling.
//! - **The tracker alone is killed**: the next process that registers a name notices
//!   (its send fails), starts a replacement on the same socket name, and registers every
//!   name it holds again; each other process does the same at its next registration. No
//!   call fails because of it. Nor are the names of a process that makes no registration
//!   after the tracker died lost, even if it is then killed: the tracker keeps who holds
//!   which names in an anonymous state file that every process it serves holds open, and
//!   the first process that reaches the replacement hands it the dead tracker's file. The
//!   replacement unlinks at once the names of processes that are gone, and watches the
//!   others (through pidfds) until they reconnect or end. That happens at the next
//!   registration or unlink of any process that had used the dead tracker, or when one
//!   ends normally, whichever comes first; meanwhile the names of a process killed after
//!   the tracker wait in /dev/shm. (The state is rewritten whole at each registration:
//!   some tens of thousands of names at most, 16 MiB, are kept this way.)
//! - **Everything at once**, the tracker included (a cgroup kill, `kill -9 -1`), or
//!   the tracker and then every process that had used it: no process is left to unlink
//!   anything, and no design that keeps the names in a running
//!   process can help. A container's /dev/shm goes with the container; elsewhere the
//!   names stay until someone unlinks them (they start with `mp_` when multiproc chose
//!   them). We chose not to keep a file of names for a later run to clean: that run
//!   cannot tell a dead program's block from one a live, unrelated program still uses.
//!
//! The tracker listens on a Unix socket in Linux's abstract namespace (no file to leave
//! behind), named by the first process of the tree, and serves only processes of the
//! same user.
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
//! [`Array`](crate::Array) and friends need no name and leave nothing behind; so does
//! [`SharedBytes`], immutable bytes of any size handed to another process inside any item
//! without a copy.
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

mod bytes;
mod list;
mod manager;

pub use crate::start::tracker_pid;
use crate::start::{tracker_register, tracker_unregister};
pub use bytes::SharedBytes;
pub use list::ShareableList;
pub use manager::SharedMemoryManager;

use std::fmt;
use std::io;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::sys::memfd::{self, Mapping};
use crate::{Error, Result};

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
                None => format!("/{}", memfd::unique_name()),
            };
            // Register first, so that no moment exists where the block exists untracked.
            let fresh = track && tracker_register(&n)?;
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
                    // (Not a name this process already holds: that one stays registered.)
                    if fresh {
                        let _ = tracker_unregister(&n);
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

    /// Attaches to the existing block `name`, whole. Attaching never tracks: the block is
    /// not unlinked when this process ends, however it ends — only its creator's end (or an
    /// [`unlink`](SharedMemory::unlink)) removes it. This is Python 3.13's
    /// `SharedMemory(name, track=False)`, and the only behaviour here: an attaching process
    /// that unlinked what it did not create (Python's default, `track=True`) would take the
    /// block away from its creator.
    ///
    /// ```
    /// use multiproc::shared_memory::SharedMemory;
    /// assert!(SharedMemory::attach("no_such_block_here").is_err());
    /// ```
    #[doc(alias = "track")]
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

    /// Creates the block `name` with `size` bytes, or attaches to it if it exists already
    /// (whatever its size: check [`len`](SharedMemory::len)); returns the block and whether
    /// this call created it. Of several processes racing, exactly one creates it, and that
    /// one's block is tracked as [`create`](SharedMemory::create)'s is. (Python needs a
    /// `try: SharedMemory(name, create=True) except FileExistsError:` for this.)
    ///
    /// ```
    /// multiproc::init();
    /// use multiproc::shared_memory::SharedMemory;
    /// let (a, created) = SharedMemory::create_or_attach("mp_doc_coa", 32).unwrap();
    /// assert!(created);
    /// let (b, created) = SharedMemory::create_or_attach("mp_doc_coa", 32).unwrap();
    /// assert!(!created);
    /// a.write_at(0, &[7]).unwrap();
    /// assert_eq!(b.to_vec().unwrap()[0], 7);
    /// a.unlink().unwrap();
    /// ```
    pub fn create_or_attach(name: &str, size: usize) -> Result<(SharedMemory, bool)> {
        // The block may be unlinked between a failed create and the attach: try again.
        for _ in 0..100 {
            match SharedMemory::create(Some(name), size) {
                Ok(shm) => return Ok((shm, true)),
                Err(Error::Io(e)) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
            match SharedMemory::attach(name) {
                Ok(shm) => return Ok((shm, false)),
                Err(Error::Io(e)) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Err(Error::invalid(format!(
            "shared memory {name:?} kept appearing and disappearing; gave up"
        )))
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
        // Zeroed pages from the kernel, not yet touched: advised before `pread` fills them.
        let mut v = vec![0u8; self.len()];
        crate::sys::memfd::prepare_fill(&mut v);
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
            let _ = tracker_unregister(&n);
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
        SharedMemory::attach(&name).map_err(|e| {
            let kind = match &e {
                Error::Io(io) => io.kind(),
                _ => std::io::ErrorKind::Other,
            };
            crate::codec::handle_error(Error::Io(std::io::Error::new(
                kind,
                format!("the shared memory block {name:?} received cannot be attached: {e}"),
            )))
        })
    }
}
