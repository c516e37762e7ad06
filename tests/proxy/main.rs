//! Integration tests: real servers on ephemeral loopback ports.

mod support;

mod budget;
mod cache;
mod forwarding;
mod pacing;
mod process;
mod retry;
mod tls;
