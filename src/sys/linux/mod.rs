//! Linux implementation of the OS layer.

#[cfg(feature = "tokio")]
pub(crate) mod aio;
pub(crate) mod code;
pub(crate) mod futex;
pub(crate) mod heap;
pub(crate) mod memfd;
pub(crate) mod net;
pub(crate) mod process;
pub(crate) mod socket;
pub(crate) mod state_file;

pub(crate) use code::*;
pub(crate) use net::*;
pub(crate) use process::*;
pub(crate) use socket::*;
