//! One integration-test binary (so the crate links once); each module covers one room.

mod client;
mod helpers;
mod media;
mod sim;
mod store;
mod pipeline;
mod crash;
