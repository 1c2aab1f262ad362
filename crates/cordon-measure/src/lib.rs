//! Reference values computed from images: the launch measurements a TEE will report for a given
//! firmware, so that a policy can pin them before any guest has run.
//!
//! Pure computation on bytes: no I/O, no clock, no network. One module per platform.

pub mod tdx;
