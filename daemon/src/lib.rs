//! stratad and strata: the daemon that owns a Strata store and serves it as HTTP+JSON on a
//! unix socket, and the docker-like CLI that talks to it.

pub mod api;
pub mod cli;
pub mod client;
pub mod config;
pub mod copyup;
pub mod fdpass;
pub mod metrics;
pub mod probe;
