//! racknap-proxy: a rate-limit-aware egress sidecar for the RackNap API.
//!
//! ```text
//! downstream ─HTTP/1.1|h2c─▶ admission ─▶ cache ─▶ retry ─▶ pace ─▶ forward ─HTTPS─▶ RackNap
//!                             (not an    (GET,     (429 →   (Budget  (key, strip,
//!                              open proxy) coalesce) reset)  permit)  observe)
//! ```
//! See `stack.rs` for the assembly and README.md for the picture with reasons.
#![warn(missing_docs)]

pub mod admin;
pub mod admission;
pub mod app;
pub mod body;
pub mod budget;
pub mod cache;
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod context;
pub mod envelope;
pub mod error;
pub mod forward;
pub mod metrics;
pub mod mock;
pub mod pace;
pub mod retry;
pub mod secret;
pub mod server;
pub mod stack;
pub mod telemetry;

pub use app::App;
pub use config::Config;
