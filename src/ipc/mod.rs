//! The internal IPC layer: mechanisms that every public type stands on and that exist once.
//!
//! - [`mutex`]: the one robust, process-shared mutex (a PI futex word plus an owner
//!   record), under locks, values, barriers, the queues' ring and the pipes' lanes.

pub(crate) mod mutex;
