//! One integration-test binary: the gateway, its upstreams and its clients on
//! real loopback sockets.

// Clippy's layout queries of the larger test futures (a store connection
// now holds a Cluster or Sentinel client too) exceed the default depth 128.
#![recursion_limit = "256"]

mod admin_api;
mod aggregate;
mod audit;
mod cli;
mod cluster;
mod dashboard;
mod data_plane;
mod docs;
mod fast_path;
mod framing;
mod harness;
mod isolation;
mod layout;
mod lb;
mod lifecycle;
mod limits_headers;
mod members;
mod members_redis;
mod oauth;
mod openapi;
mod redis_ha;
mod store;
mod stream_revocation;
mod usage;
