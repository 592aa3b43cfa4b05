//! One integration-test binary (so the crate links once); each module covers one room.

mod helpers;
