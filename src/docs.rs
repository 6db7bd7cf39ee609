//! Guides that are about the crate as a whole rather than one item.

#[doc = include_str!("docs/differences.md")]
pub mod differences {}

#[doc = include_str!("docs/asynchronous.md")]
pub mod asynchronous {}
