//! Linux implementation of the OS layer.

pub(crate) mod code;
// Not every helper is used by every area yet.
#[allow(dead_code)]
pub(crate) mod futex;
pub(crate) mod process;
pub(crate) mod qmem;
pub(crate) mod socket;

pub(crate) use code::*;
pub(crate) use process::*;
pub(crate) use socket::*;
