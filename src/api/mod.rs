//! The Hili PhotoEnhance API client: HTTP, multipart forms, the vendor's JSON and errnos, error
//! classes and clock-skew correction. It knows nothing of the queue or of files' fate. The
//! vendor's API, and how hili reads each of its ambiguities, is described in
//! `docs/hili-api.md`.
//!
//! Rooms: `client` (the four endpoints, and the names callers use), `transport` (the
//! [`client::ApiClient`] handle: one request, its token, its answer), `envelope` (the answer's
//! shape and the checks on what it carries), `upload_body` (the streamed, hashed photo),
//! `error` (every failure and its class), `observe` (the hook the metrics listen on), `clock`
//! and `token`.

pub mod client;
pub mod clock;
mod envelope;
pub mod error;
pub mod observe;
pub mod token;
mod transport;
mod upload_body;
