//! Tests of the mock: pure limiter maths under paused time, and real-socket API tests.

mod api;
mod limiter;
mod limits;
mod support;
mod tls;
mod writes;
