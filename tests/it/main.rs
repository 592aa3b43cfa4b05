//! One integration-test binary (so the crate links once); each module covers one room.

mod helpers;
mod sim;
mod client;
mod store;
mod media;
