//! hili: feeds photos through the Hili PhotoEnhance cloud API and never loses a photo or
//! wastes a credit. The binary's `main.rs` only parses the command line; everything else lives
//! here so integration tests boot the real thing in-process.

pub mod api;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod failpoint;
pub mod media;
pub mod metrics;
pub mod pipeline;
pub mod repair;
pub mod report;
pub mod secret;
pub mod sim;
pub mod store;
pub mod watch;
