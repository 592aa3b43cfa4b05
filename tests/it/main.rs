//! One integration-test binary (so the crate links once); each module covers one room.

mod client;
mod crash;
mod helpers;
mod media;
mod pipeline;
mod sim;
mod store;
mod watch;
