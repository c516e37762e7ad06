//! Integration tests: real servers on ephemeral loopback ports.

mod support;

mod cache;
mod faults;
mod forwarding;
mod pacing;
mod process;
mod retry;
mod shutdown;
mod tls;
