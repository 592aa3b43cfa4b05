//! The pipeline: workers that move jobs through the store's state machine. Stages never call
//! each other; each reads the jobs it owns from the store, acts, and records the next state,
//! so a crash between any two lines leaves a state that start-up recovery knows how to
//! continue.

pub mod gate;
