//! racknap-proxy: a rate-limit-aware egress sidecar for the RackNap API.
#![warn(missing_docs)]

pub mod body;
pub mod clock;
pub mod envelope;
pub mod mock;
pub mod secret;
