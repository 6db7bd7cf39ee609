//! Guides that are about the crate as a whole rather than one item.

#[doc = include_str!("docs/differences.md")]
pub mod differences {}

// Its links point at the `tokio` feature's methods: whole with that feature (docs.rs
// builds with it: every feature but `mpi`), plain text without it.
#[cfg_attr(not(feature = "tokio"), allow(rustdoc::broken_intra_doc_links))]
#[doc = include_str!("docs/asynchronous.md")]
pub mod asynchronous {}
