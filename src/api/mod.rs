//! The Hili PhotoEnhance API client: HTTP, multipart forms, the vendor's JSON and errnos, error
//! classes and clock-skew correction. It knows nothing of the queue or of files' fate.

pub mod client;
pub mod clock;
pub mod error;
pub mod token;
