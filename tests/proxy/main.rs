//! Integration tests: real servers on ephemeral loopback ports.

mod support;

mod budget;
mod cache;
mod echo;
mod faults;
mod forwarding;
mod h2c;
mod hygiene;
mod limits;
mod pacing;
mod process;
mod raw;
mod retry;
mod rotation;
mod security;
mod shutdown;
mod tls;
