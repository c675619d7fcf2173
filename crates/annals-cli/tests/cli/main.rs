//! Whole-program tests of the `annals` binary, in one test binary so it builds once: command
//! round trips, serve's signal handling, a real-process crash test (SIGKILL during concurrent
//! durable appends, then every acknowledged append must be found), and that each bench prints
//! its JSON figures.

mod bench;
mod clients;
mod crash;
mod roundtrip;
mod serve;
mod support;
