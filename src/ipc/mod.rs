//! The internal IPC layer: the mechanisms every public type stands on, each written once.
//! Nothing here is public, and nothing here imports a public module of the crate except
//! [`codec`](crate::codec) (the wire format) and [`log`](crate::log); the public modules
//! (`connection`, `queue`, `sync`, `value`, `process`, `pool`, `manager`, `shared_memory`)
//! are built from these parts.
//!
//! - [`mutex`]: the one robust, process-shared mutex (a PI futex word plus an owner
//!   record), under locks, values, barriers, the queues' ring and the pipes' lanes.
//! - [`wait`]: the one spin-then-futex wait on a word in shared memory (with a "sleeping"
//!   flag so that the busy path makes no system call), and the mutex as a guard over
//!   words of a ring or lane.
//! - [`segment`]: anonymous shared segments (a sealed `memfd`), the memory under locks,
//!   events, values and semaphores, carried between processes as a descriptor.
//! - [`record`]: the one record ring (record format, wrap-around, the `head`/`tail` index
//!   words and what is done with them) under the queues' ring and the pipes' lanes, whose
//!   memory and index words are reached only through its `Records`.
//! - [`ring`]: the record ring under every queue.
//! - [`conn`]: [`RawConn`], the framed transport (a stream socket with length-prefixed
//!   frames and descriptors beside them) under pipes, the fork server, the child
//!   bootstrap, the pool's workers and the manager; and [`lane`], the shared-memory rings
//!   beside a pipe's packet socket that carry its messages up to 2 MiB without a system
//!   call (larger ones travel as sealed memory files; no process killed mid-message can
//!   cut one).
//! - [`bell`]: the event counter that async code (the `tokio` feature) waits on for a
//!   change in shared memory (queues, events), rung by whoever changes it.

pub(crate) mod bell;
pub(crate) mod conn;
pub(crate) mod lane;
pub(crate) mod mutex;
pub(crate) mod record;
pub(crate) mod ring;
pub(crate) mod segment;
pub(crate) mod wait;

pub(crate) use conn::{RawConn, Wake};
