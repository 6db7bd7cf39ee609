//! [`ShmAllocator`]: a global allocator that puts large allocations in memory files, so that
//! a large vector sent to another process moves by handing its file over instead of copying
//! its bytes — what pickle protocol 5's out-of-band buffers and ipc-channel's
//! `IpcSharedMemory` do, for the types users already write (`Vec<u8>`, `Vec<f64>`,
//! `String`, and these inside their structs).
//!
//! # How a large allocation lives and travels
//!
//! - **Made** (at least the allocator's threshold, page-aligned or less): an anonymous
//!   memory file (`memfd`) of the rounded size, mapped shared and writable, recorded in a
//!   table with its descriptor. Smaller ones, and any the table cannot take (full, half
//!   the descriptor limit in use, or more memory than the kernel's overcommit policy
//!   grants a private block of that size), go to the system allocator.
//! - **Grown** (`realloc`): the file grows and the mapping moves with `mremap` (no copy).
//!   **Shrunk**: the pages past the new end are unmapped (and cut from the file).
//! - **Sent** ([`hand_over`]): when the codec meets a run of bytes that is the start of
//!   such an allocation (a vector's buffer), the sender's own mapping is replaced, at the
//!   same address, by a private copy-on-write mapping of the same file (the bytes it shows
//!   are unchanged); then no writable shared mapping of the file is left, and it is sealed
//!   against writing and resizing. The descriptor travels instead of the bytes. From then
//!   on the sender's writes go to private pages, and the file never changes again.
//! - **Received** ([`received_vec`]): the receiver checks the seals and maps the file
//!   privately (copy-on-write): its vector's buffer *is* the sender's pages until either
//!   side writes. If this process's global allocator is a [`ShmAllocator`], the mapping is
//!   recorded in its table and becomes the vector's allocation; otherwise the bytes are
//!   copied into a vector of the global allocator's.
//! - **Freed**: `dealloc` finds the pointer in the table and unmaps it.
//!
//! Only the allocation's first owner may hand it over, once: a mapping made private (sent,
//! received, or inherited across a fork) cannot be proven unchanged since, so sending it
//! again copies its bytes as before.
//!
//! # Fork
//!
//! A child forked from a process shares its `MAP_SHARED` mappings, which would let parent
//! and child see each other's writes to what should be two copies of a vector. Before any
//! fork (a `pthread_atfork` handler, and the fork server's raw `clone`), every shared
//! mapping in the table is made private the same way as for a send: after the fork both
//! processes have their own copy-on-write view. The table's lock is held across the fork
//! (as glibc's malloc does with its own), so that no thread can add a shared mapping in
//! between and the child never inherits it locked.
//!
//! Nothing goes to /dev/shm: the files have no name, and the kernel frees each when its
//! last mapping and descriptor are gone, also when a process is killed.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::{Cell, UnsafeCell};
use std::ffi::c_void;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, AtomicU8, AtomicUsize, Ordering};

use rustix::fs::{MemfdFlags, SealFlags};
use rustix::mm::{MapFlags, MremapFlags, ProtFlags};

use crate::sys::plain::Plain;

const PAGE: usize = 4096;

/// The smallest allocation a [`ShmAllocator`] puts in a file, whatever threshold it is
/// given, and the size from which `dealloc` looks a pointer up in the table (every
/// allocation in the table has at least this size, received ones included).
pub(crate) const MIN_SIZE: usize = 256 << 10;

/// The default threshold of [`ShmAllocator::new`].
const DEFAULT_FROM: usize = 16 << 20;

/// How many allocations the table holds at once; each holds a descriptor while it is
/// shared. Past this (or past half the process's descriptor limit), large allocations go
/// to the system allocator (and are copied when sent, as without this allocator).
const SLOTS: usize = 512;

/// A global allocator that puts every allocation of at least a threshold (16 MiB by
/// default) in an anonymous shared-memory file, so that such a vector (or string, or
/// ndarray array), sent to another process through a [`Queue`](crate::Queue), a
/// [`Connection`](crate::Connection) or as a pool task's result, is handed over as its file
/// — no byte is copied, whatever its size — instead of being copied twice. Smaller
/// allocations go to the system allocator unchanged.
///
/// Install it in the program's binary (it must be the global allocator of both sides, which
/// is the case for every process multiproc starts from the same program):
///
/// ```
/// #[global_allocator]
/// static HEAP: multiproc::ShmAllocator = multiproc::ShmAllocator::new();
///
/// # fn main() {
/// let v = vec![1.5f64; 4 << 20]; // 32 MiB: lives in a memory file
/// assert_eq!(v.iter().sum::<f64>(), 1.5 * (4 << 20) as f64);
/// # }
/// ```
///
/// What a user sees:
///
/// - **Value semantics are kept.** A vector sent by reference
///   ([`Connection::send`](crate::Connection::send) of `&v`,
///   [`Queue::put_ref`](crate::Queue::put_ref)) stays the sender's: after the hand-over its
///   pages are copy-on-write, so the sender's later writes are not seen by the receiver,
///   nor the receiver's by the sender. A child started by fork gets its own copy as usual.
/// - **Once per allocation.** Only an allocation that was never sent, received or
///   inherited across a fork is handed over; sending it again copies its bytes (as without
///   this allocator).
/// - **Where the types fit.** Vectors of plain numbers (`Vec<u8>` … `Vec<f64>`), `String`,
///   `serde_bytes::ByteBuf`, and ndarray arrays (the `ndarray` feature), anywhere in the
///   value, through the channels that carry memory files between processes on one machine:
///   queues, connections, pool results. Pool task arguments, manager proxies, TCP
///   connections and other MPI ranks get the bytes copied as before.
/// - **The cost.** Each large allocation is a file and a descriptor (at most 512 at once,
///   and only while half the process's descriptor limit is free; past that the system
///   allocator serves), and its fresh pages are made 4 KiB at a time
///   (shared memory gets no transparent huge pages unless the system enables them for
///   `shmem`), so filling a fresh large vector can be slower than with the system
///   allocator. Choose the threshold with [`from_size`](ShmAllocator::from_size).
/// - **Nothing is left behind.** The files have no name (nothing in /dev/shm) and are freed
///   by the kernel with their last mapping, also when a process is killed.
#[derive(Debug)]
pub struct ShmAllocator {
    from: AtomicUsize,
}

impl ShmAllocator {
    /// The allocator with the default threshold: allocations of 16 MiB or more go to
    /// memory files.
    ///
    /// ```
    /// #[global_allocator]
    /// static HEAP: multiproc::ShmAllocator = multiproc::ShmAllocator::new();
    /// # fn main() {}
    /// ```
    #[must_use]
    pub const fn new() -> ShmAllocator {
        ShmAllocator::from_size(DEFAULT_FROM)
    }

    /// The allocator with its threshold: allocations of at least `bytes` go to memory
    /// files (at least 256 KiB: a smaller `bytes` counts as 256 KiB).
    ///
    /// ```
    /// #[global_allocator]
    /// static HEAP: multiproc::ShmAllocator = multiproc::ShmAllocator::from_size(1 << 20);
    /// # fn main() {
    /// let v = vec![7u8; 2 << 20]; // 2 MiB: in a memory file with this threshold
    /// assert_eq!(v[0], 7);
    /// # }
    /// ```
    #[must_use]
    pub const fn from_size(bytes: usize) -> ShmAllocator {
        ShmAllocator {
            from: AtomicUsize::new(if bytes < MIN_SIZE { MIN_SIZE } else { bytes }),
        }
    }

    /// The threshold in bytes.
    ///
    /// ```
    /// assert_eq!(multiproc::ShmAllocator::new().threshold(), 16 << 20);
    /// assert_eq!(multiproc::ShmAllocator::from_size(1).threshold(), 256 << 10);
    /// ```
    #[must_use]
    pub fn threshold(&self) -> usize {
        self.from.load(Ordering::Relaxed)
    }

    /// Changes the threshold for the allocations made from now on in this process
    /// (`usize::MAX`: none goes to a memory file any more); each allocation made already
    /// keeps its kind. A process started later begins with the threshold its `static` was
    /// made with. Receiving handed-over vectors without copies needs only the allocator
    /// installed, whatever its threshold.
    ///
    /// ```
    /// #[global_allocator]
    /// static HEAP: multiproc::ShmAllocator = multiproc::ShmAllocator::from_size(usize::MAX);
    /// # fn main() {
    /// HEAP.set_threshold(64 << 20); // from here on, 64 MiB and more go to memory files
    /// assert_eq!(HEAP.threshold(), 64 << 20);
    /// # }
    /// ```
    pub fn set_threshold(&self, bytes: usize) {
        self.from.store(bytes.max(MIN_SIZE), Ordering::Relaxed);
    }

    #[inline]
    fn wants(&self, layout: Layout) -> bool {
        layout.size() >= self.from.load(Ordering::Relaxed)
            && layout.align() <= PAGE
            && !PRIVATE_SCOPE.get()
    }
}

impl Default for ShmAllocator {
    fn default() -> Self {
        ShmAllocator::new()
    }
}

/// The layout of the probe allocation by which [`is_global`] learns whether the global
/// allocator is a [`ShmAllocator`]: an alignment no real program asks of a 1-byte block.
const PROBE_ALIGN: usize = 1 << 16;

/// Set when a [`ShmAllocator`] sees the probe layout.
static PROBED: AtomicU8 = AtomicU8::new(0);

// SAFETY: every method either forwards to `System` with the caller's arguments, or serves
// a block from a mapping of its own that is at least `layout.size()` bytes, page-aligned
// (so aligned for any `layout.align() <= PAGE`, which `wants` requires), and recorded in
// the table until `dealloc`/`realloc` unmaps it; a pointer is served back to the side it
// came from (the table decides, by exact address, for every size that can be in it).
unsafe impl GlobalAlloc for ShmAllocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if self.wants(layout) {
            if let Some(p) = map_new(layout.size()) {
                return p;
            }
        } else if layout.align() == PROBE_ALIGN && layout.size() == 1 {
            PROBED.store(1, Ordering::Relaxed);
        }
        // SAFETY: the caller's contract for `alloc` is passed on unchanged.
        unsafe { System.alloc(layout) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if self.wants(layout) {
            // A fresh file reads as zeros.
            if let Some(p) = map_new(layout.size()) {
                return p;
            }
        }
        // SAFETY: as in `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if layout.size() >= MIN_SIZE && unmap_if_ours(ptr) {
            return;
        }
        // SAFETY: not in the table, so `System` served it (the caller's contract).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let ours = layout.size() >= MIN_SIZE && LIVE.load(Ordering::Relaxed) > 0;
        if ours {
            match resize_in_place(ptr, new_size) {
                Resize::Done(p) => return p,
                Resize::Move => {}
                Resize::NotOurs => {
                    if new_size < self.threshold() || layout.align() > PAGE {
                        // SAFETY: `System` served it (not in the table).
                        return unsafe { System.realloc(ptr, layout, new_size) };
                    }
                }
            }
        } else if new_size < self.threshold() || layout.align() > PAGE {
            // SAFETY: `System` served it (nothing of that size can be in the table).
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // Moving between the two sides, or out of a private mapping: a new block, a copy.
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
            return std::ptr::null_mut();
        };
        // SAFETY: `new_size` is non-zero (the caller's contract for `realloc`).
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both blocks are live, distinct, and at least this long.
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new
    }
}

thread_local! {
    /// Set while the codec fills a vector it decodes (see [`private_scope`]).
    static PRIVATE_SCOPE: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with this thread's large allocations served by the system allocator: for a
/// vector the codec is about to fill whole by copying received bytes, which private memory
/// takes at several times the speed of fresh shared pages (huge pages).
pub(crate) fn private_scope<T>(f: impl FnOnce() -> T) -> T {
    let was = PRIVATE_SCOPE.replace(true);
    let r = f();
    PRIVATE_SCOPE.set(was);
    r
}

// --- the table ------------------------------------------------------------------------

#[derive(Clone, Copy)]
struct Slot {
    /// The mapping's address; 0: a free slot.
    addr: usize,
    /// The mapping's length (whole pages).
    len: usize,
    /// While the mapping is shared and writable: the file's descriptor, and its device and
    /// inode (to notice a descriptor closed behind our back and reused). -1 once private.
    fd: RawFd,
    dev: u64,
    ino: u64,
}

const FREE: Slot = Slot {
    addr: 0,
    len: 0,
    fd: -1,
    dev: 0,
    ino: 0,
};

struct Table {
    /// 0 free, 1 held, 2 held with waiters (a futex word).
    lock: AtomicU32,
    slots: UnsafeCell<[Slot; SLOTS]>,
}

// SAFETY: `slots` is reached only through a `Held` guard, that is with `lock` held.
unsafe impl Sync for Table {}

static TABLE: Table = Table {
    lock: AtomicU32::new(0),
    slots: UnsafeCell::new([FREE; SLOTS]),
};

/// How many slots are in use: `dealloc` and `realloc` skip the table while it is 0.
static LIVE: AtomicUsize = AtomicUsize::new(0);

/// The table, locked. This is a lock of its own (a futex word) rather than a
/// `std::sync::Mutex` because the fork handlers must take it in one callback and release
/// it in another, and a forked child must be able to reset it.
struct Held;

fn lock() -> Held {
    let word = &TABLE.lock;
    if word
        .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        while word.swap(2, Ordering::Acquire) != 0 {
            super::futex::wait(word, 2, None);
        }
    }
    Held
}

fn unlock() {
    if TABLE.lock.swap(0, Ordering::Release) == 2 {
        super::futex::wake(&TABLE.lock, 1);
    }
}

impl Held {
    fn slots(&mut self) -> &mut [Slot; SLOTS] {
        // SAFETY: the lock is held while `self` lives, and `&mut self` makes this borrow
        // the only one.
        unsafe { &mut *TABLE.slots.get() }
    }

    fn find(&mut self, addr: usize) -> Option<usize> {
        self.slots().iter().position(|s| s.addr == addr)
    }

    fn insert(&mut self, slot: Slot) -> bool {
        match self.find(0) {
            Some(i) => {
                self.slots()[i] = slot;
                LIVE.fetch_add(1, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    fn remove(&mut self, i: usize) -> Slot {
        let s = std::mem::replace(&mut self.slots()[i], FREE);
        LIVE.fetch_sub(1, Ordering::Relaxed);
        s
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        unlock();
    }
}

/// The slot's descriptor, if the mapping is still shared and the descriptor still names
/// its file.
fn slot_fd(s: &Slot) -> Option<BorrowedFd<'_>> {
    if s.fd < 0 {
        return None;
    }
    // SAFETY: the table owns this descriptor while the slot is shared; if other code closed
    // it behind our back, the device and inode check below notices (the number may name another file
    // now, which we then leave alone).
    let fd = unsafe { BorrowedFd::borrow_raw(s.fd) };
    match rustix::fs::fstat(fd) {
        Ok(st) if st.st_ino == s.ino && st.st_dev == s.dev => Some(fd),
        _ => None,
    }
}

/// Closes the slot's descriptor (if still shared and still its own) and marks it private.
fn drop_fd(s: &mut Slot) {
    if slot_fd(s).is_some() {
        // SAFETY: the descriptor is the table's own (checked by device and inode just now) and
        // nothing else holds it: it is closed once, here.
        drop(unsafe { OwnedFd::from_raw_fd(s.fd) });
    }
    s.fd = -1;
}

/// Whether the system would commit `len` more bytes of private memory now: asked by
/// mapping them (private and writable, so the kernel's overcommit policy judges it, as it
/// does the system allocator's blocks) and unmapping them at once. A memory file's pages
/// are not counted against that policy, so without this ask an allocation far past the
/// machine's memory (`Vec::try_reserve(1 << 40)`) would succeed here where the system
/// allocator refuses it, and the program would be killed on writing it instead.
fn memory_for(len: usize) -> bool {
    // SAFETY: a fresh private anonymous mapping (no MAP_FIXED) aliases nothing; it is
    // unmapped just below, untouched.
    match unsafe {
        rustix::mm::mmap_anonymous(
            std::ptr::null_mut(),
            len,
            ProtFlags::READ | ProtFlags::WRITE,
            MapFlags::PRIVATE,
        )
    } {
        Ok(p) => {
            // SAFETY: the mapping made just above, never handed out.
            let _ = unsafe { rustix::mm::munmap(p, len) };
            true
        }
        Err(_) => false,
    }
}

/// Whether `fd`, just opened, leaves the program at least half its descriptors: the
/// kernel gives the lowest free number, so a number past half the limit means half are
/// in use. Past that, large allocations go to the system allocator, so that the table's
/// descriptors never make the program's own `open`s fail (a limit of 256 or 1024 is
/// common, and the table could hold 512).
fn few_descriptors_open(fd: RawFd) -> bool {
    match rustix::process::getrlimit(rustix::process::Resource::Nofile).current {
        Some(limit) => u64::try_from(fd).is_ok_and(|n| n < limit / 2),
        None => true,
    }
}

/// A new shared mapping of a fresh file, of at least `size` bytes, recorded in the table.
fn map_new(size: usize) -> Option<*mut u8> {
    register_fork_hooks();
    let len = size.checked_next_multiple_of(PAGE)?;
    if !memory_for(len) {
        return None;
    }
    // The table stays locked from before the file exists until it is recorded: a fork in
    // between (the fork handlers wait for the lock) would give the child the descriptor
    // and the mapping shared, unrecorded, so neither closed nor made private.
    let mut t = lock();
    // Full: the system allocator serves.
    t.find(0)?;
    let fd = rustix::fs::memfd_create(
        c"multiproc-heap",
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )
    .ok()?;
    if !few_descriptors_open(fd.as_raw_fd()) {
        return None;
    }
    rustix::fs::ftruncate(&fd, len as u64).ok()?;
    let st = rustix::fs::fstat(&fd).ok()?;
    // SAFETY: a fresh mapping (no MAP_FIXED) of a file that is `len` bytes long; it aliases
    // nothing, and nothing shrinks the file while it is in the table (only we hold it).
    let p = unsafe {
        rustix::mm::mmap(
            std::ptr::null_mut(),
            len,
            ProtFlags::READ | ProtFlags::WRITE,
            MapFlags::SHARED,
            &fd,
            0,
        )
    }
    .ok()?;
    let slot = Slot {
        addr: p as usize,
        len,
        fd: fd.as_raw_fd(),
        dev: st.st_dev,
        ino: st.st_ino,
    };
    if t.insert(slot) {
        let _ = fd.into_raw_fd(); // the table's now
        Some(p.cast())
    } else {
        // SAFETY: the mapping made just above, not handed out.
        let _ = unsafe { rustix::mm::munmap(p, len) };
        None
    }
}

/// Unmaps `ptr` if the table has it.
fn unmap_if_ours(ptr: *mut u8) -> bool {
    if LIVE.load(Ordering::Relaxed) == 0 {
        return false;
    }
    let mut t = lock();
    let Some(i) = t.find(ptr as usize) else {
        return false;
    };
    let mut s = t.remove(i);
    // SAFETY: the mapping is the block being freed (the caller's contract: nothing uses it
    // any more), and it is out of the table, so nothing else unmaps it. Unmapped with the
    // table still locked, and its descriptor closed: a fork (its handlers wait for the
    // lock) must not find a shared mapping or descriptor that is no longer in the table,
    // which the child would keep.
    let _ = unsafe { rustix::mm::munmap(s.addr as *mut c_void, s.len) };
    drop_fd(&mut s);
    drop(t);
    true
}

enum Resize {
    Done(*mut u8),
    /// Ours, but it must move to a new block (private, or the remap failed).
    Move,
    NotOurs,
}

fn resize_in_place(ptr: *mut u8, new_size: usize) -> Resize {
    let mut t = lock();
    let Some(i) = t.find(ptr as usize) else {
        return Resize::NotOurs;
    };
    if new_size < MIN_SIZE {
        return Resize::Move;
    }
    let Some(new_len) = new_size.checked_next_multiple_of(PAGE) else {
        return Resize::Move;
    };
    let s = t.slots()[i];
    if new_len <= s.len {
        // Growing within the last page: the mapping stays as it is. Shrinking: the pages
        // past the new end are unmapped (and cut from the file while it is ours), so that
        // `shrink_to_fit` gives the memory back.
        if new_len < s.len {
            // SAFETY: `ptr..ptr+s.len` is this slot's mapping, the block being
            // reallocated; without MAYMOVE a shrinking mremap stays at `ptr` and unmaps
            // only the pages past `new_len`, which the block no longer covers.
            if unsafe { rustix::mm::mremap(ptr.cast(), s.len, new_len, MremapFlags::empty()) }
                .is_ok()
            {
                if let Some(fd) = slot_fd(&s) {
                    // No mapping of the file reaches past `new_len` now.
                    let _ = rustix::fs::ftruncate(fd, new_len as u64);
                }
                t.slots()[i].len = new_len;
            }
        }
        return Resize::Done(ptr);
    }
    let Some(fd) = slot_fd(&s) else {
        return Resize::Move;
    };
    if !memory_for(new_len - s.len) {
        return Resize::Move;
    }
    if rustix::fs::ftruncate(fd, new_len as u64).is_err() {
        return Resize::Move;
    }
    // SAFETY: `ptr..ptr+s.len` is this slot's shared mapping, the block being reallocated
    // (the caller's contract: no one else uses it during the call); MAY_MOVE lets the
    // kernel place the larger mapping elsewhere, carrying the pages over, and the file is
    // now long enough for all of it.
    match unsafe { rustix::mm::mremap(ptr.cast::<c_void>(), s.len, new_len, MremapFlags::MAYMOVE) }
    {
        Ok(p) => {
            t.slots()[i].addr = p as usize;
            t.slots()[i].len = new_len;
            Resize::Done(p.cast())
        }
        Err(_) => Resize::Move,
    }
}

/// Replaces a shared slot's mapping by a private copy-on-write mapping of the same file at
/// the same address; `true` if it worked (the slot then has no shared mapping left here).
fn make_private(s: &Slot, fd: BorrowedFd<'_>) -> bool {
    // SAFETY: the range is exactly this slot's mapping, which we own; MAP_FIXED replaces it
    // atomically by a mapping of the same file whose pages show the same bytes (writes
    // through the shared mapping went to the file), so the block's owner sees no change
    // other than that its later writes stay in this process.
    unsafe {
        rustix::mm::mmap(
            s.addr as *mut c_void,
            s.len,
            ProtFlags::READ | ProtFlags::WRITE,
            MapFlags::PRIVATE | MapFlags::FIXED,
            fd,
            0,
        )
    }
    .is_ok()
}

/// The seals a handed-over file carries: nobody can write, grow or shrink it again.
const FROZEN: SealFlags = SealFlags::WRITE
    .union(SealFlags::GROW)
    .union(SealFlags::SHRINK)
    .union(SealFlags::SEAL);

/// If `bytes` starts a large allocation of this process's [`ShmAllocator`] that is still
/// shared (never sent, received nor inherited) and fills at least half of it: makes the
/// sender's mapping private, seals the file, and returns its descriptor to send in place
/// of the bytes. `None`: copy the bytes as usual.
pub(crate) fn hand_over(bytes: &[u8]) -> Option<OwnedFd> {
    if bytes.len() < MIN_SIZE || LIVE.load(Ordering::Relaxed) == 0 {
        return None;
    }
    let mut t = lock();
    let i = t.find(bytes.as_ptr() as usize)?;
    let mut s = t.slots()[i];
    if bytes.len() < s.len / 2 {
        return None;
    }
    let fd = slot_fd(&s)?;
    if !make_private(&s, fd) {
        return None;
    }
    let sealed = rustix::fs::fcntl_add_seals(fd, FROZEN).is_ok();
    // The mapping is private now whatever happens: the table keeps no descriptor for it.
    let fd = if sealed {
        // SAFETY: the table's own descriptor (checked by `slot_fd`), given up to the
        // caller: the slot forgets it just below.
        Some(unsafe { OwnedFd::from_raw_fd(s.fd) })
    } else {
        // Another process holds a writable shared mapping (a child forked by a raw
        // `clone` we were not told of): not frozen, so not sent.
        drop_fd(&mut s);
        None
    };
    t.slots()[i].fd = -1;
    fd
}

/// Whether this process's global allocator is a [`ShmAllocator`] (learnt once, from a
/// probe allocation of a layout only such an allocator recognises).
fn is_global() -> bool {
    static KNOWN: AtomicU8 = AtomicU8::new(0); // 0 unknown, 1 yes, 2 no
    match KNOWN.load(Ordering::Relaxed) {
        1 => true,
        2 => false,
        _ => {
            let layout = Layout::from_size_align(1, PROBE_ALIGN).expect("a valid layout");
            // SAFETY: a non-zero-sized layout; the block is freed with the same layout.
            unsafe {
                // `black_box`: the compiler may not remove the pair as unused.
                let p = std::hint::black_box(std::alloc::alloc(layout));
                if !p.is_null() {
                    std::alloc::dealloc(p, layout);
                }
            }
            let yes = PROBED.load(Ordering::Relaxed) == 1;
            KNOWN.store(if yes { 1 } else { 2 }, Ordering::Relaxed);
            yes
        }
    }
}

fn bad(m: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, m)
}

/// The vector of `n` numbers handed over as the memory file `fd` (by [`hand_over`] in the
/// sending process): the file must be sealed against writing and resizing and hold at
/// least `n` numbers. With a [`ShmAllocator`] as this process's global allocator, the
/// file's pages become the vector's memory (mapped copy-on-write: nothing is copied);
/// otherwise they are copied into a new vector.
pub(crate) fn received_vec<P: Plain>(fd: OwnedFd, n: usize) -> io::Result<Vec<P>> {
    let nbytes = n
        .checked_mul(std::mem::size_of::<P>())
        .ok_or_else(|| bad(format!("a sequence of {n} numbers is too large")))?;
    let seals = rustix::fs::fcntl_get_seals(&fd)
        .map_err(|_| bad("a handed-over vector's descriptor is not a memory file".into()))?;
    if !seals.contains(FROZEN.difference(SealFlags::SEAL)) {
        return Err(bad(
            "a handed-over vector's memory file is not sealed read-only".into(),
        ));
    }
    let size = rustix::fs::fstat(&fd)?.st_size;
    let size = usize::try_from(size)
        .ok()
        .filter(|&s| s >= nbytes && s <= isize::MAX as usize)
        .ok_or_else(|| {
            bad(format!(
                "a handed-over vector's memory file has {size} bytes, {nbytes} expected"
            ))
        })?;
    if nbytes >= MIN_SIZE && is_global() {
        if let Some(v) = adopt::<P>(fd.as_fd(), size, n) {
            return Ok(v);
        }
    }
    if nbytes == 0 {
        return Ok(Vec::new());
    }
    let bytes = super::memfd::SealedBytes::from_fd_lazy(fd.as_fd(), size)?;
    private_scope(|| crate::sys::plain::vec_from_bytes::<P>(&bytes.as_slice()[..nbytes]))
        .ok_or_else(|| bad(format!("cannot allocate {nbytes} bytes")))
}

/// Maps the sealed file `fd` (`size` bytes) privately and records it as an allocation of
/// this process's [`ShmAllocator`]: the vector of its first `n` numbers.
fn adopt<P: Plain>(fd: BorrowedFd<'_>, size: usize, n: usize) -> Option<Vec<P>> {
    // The table's lock must be held across forks from now on, also in a process that
    // never made a large allocation of its own.
    register_fork_hooks();
    let len = size.checked_next_multiple_of(PAGE)?;
    // SAFETY: a fresh private mapping (no MAP_FIXED) aliases nothing; the file is sealed
    // against shrinking, so every page of it stays backed.
    let p = unsafe {
        rustix::mm::mmap(
            std::ptr::null_mut(),
            len,
            ProtFlags::READ | ProtFlags::WRITE,
            MapFlags::PRIVATE,
            fd,
            0,
        )
    }
    .ok()?;
    let slot = Slot {
        addr: p as usize,
        len,
        fd: -1,
        dev: 0,
        ino: 0,
    };
    if !lock().insert(slot) {
        // SAFETY: the mapping made just above, not handed out.
        let _ = unsafe { rustix::mm::munmap(p, len) };
        return None;
    }
    // SAFETY: the global allocator is a `ShmAllocator` (checked by the caller), whose table
    // now holds this mapping: the vector's `dealloc`/`realloc` (layout `n * size_of::<P>()`
    // bytes, at least `MIN_SIZE`, so looked up in the table) unmap or move it. The mapping
    // is page-aligned (aligned for `P`), at least `n * size_of::<P>()` bytes long, and
    // readable and writable privately; its bytes are initialised (file contents), and any
    // bytes are a valid `P` (`Plain`).
    Some(unsafe { Vec::from_raw_parts(p.cast::<P>(), n, n) })
}

// --- fork ---------------------------------------------------------------------------

/// Makes every shared mapping of the table private (see the module docs, "Fork"), with
/// the table locked; the lock stays held (released by [`after_fork`]).
fn before_fork_locked() {
    let mut t = lock();
    for s in t.slots().iter_mut() {
        if s.addr != 0 && s.fd >= 0 {
            if let Some(fd) = slot_fd(s) {
                make_private(s, fd);
            }
            drop_fd(s);
        }
    }
    std::mem::forget(t);
}

extern "C" fn atfork_prepare() {
    before_fork_locked();
}

extern "C" fn atfork_parent() {
    unlock();
}

extern "C" fn atfork_child() {
    // The only thread of the child is the one that held the lock: nobody waits on it.
    TABLE.lock.store(0, Ordering::Release);
}

fn register_fork_hooks() {
    static REGISTER: std::sync::Once = std::sync::Once::new();
    REGISTER.call_once(|| {
        // SAFETY: pthread_atfork only records the function pointers. The handlers take and
        // release the table's lock and make mappings private (system calls that are safe
        // in a forking thread); none allocates.
        unsafe {
            libc::pthread_atfork(
                Some(atfork_prepare),
                Some(atfork_parent),
                Some(atfork_child),
            );
        }
    });
}

/// Before a fork that does not run the `pthread_atfork` handlers (the fork server's raw
/// `clone`, from a single-threaded process): makes every shared mapping private.
pub(crate) fn before_raw_fork() {
    if LIVE.load(Ordering::Relaxed) > 0 {
        before_fork_locked();
        unlock();
    }
}
