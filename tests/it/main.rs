//! One integration-test binary: the gateway, its upstreams and its clients on
//! real loopback sockets.

mod admin_api;
mod aggregate;
mod cli;
mod cluster;
mod data_plane;
mod fast_path;
mod harness;
mod lb;
mod lifecycle;
mod store;
mod stream_revocation;
