//! One integration-test binary (so the crate links once); each module covers one room.

mod chaos;
mod cli;
mod client;
mod client_sim;
mod convert;
mod crash;
mod daemon;
mod dispose;
mod environment;
mod fixity;
mod helpers;
mod hostile_input;
mod hostile_server;
mod incomplete_input;
mod media;
mod metadata;
mod package;
mod pipeline;
mod promises;
mod requests;
mod room;
mod sim;
mod store;
mod superseded;
mod watch;
mod watch_symlink;
