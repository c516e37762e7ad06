//! Integration tests: real servers on ephemeral loopback ports.

mod support;

mod cache;
mod forwarding;
mod h2c;
mod pacing;
mod process;
mod retry;
mod tls;
