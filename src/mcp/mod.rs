//! MCP protocol pieces: the JSON-RPC envelope, and the aggregating mode of
//! workspaces with several servers (sealed sessions, event-stream relay),
//! and the wrappers every relayed event stream gets, whether the
//! pass-through forwarder (`gateway`) or the aggregator sends it: SSE
//! keep-alive comments (`keepalive`) and the end of a stream when its token
//! is revoked or shutdown's grace ends (`revocable`). They live here, next
//! to the SSE code they frame, so that `mcp` needs nothing from `gateway`.

pub mod aggregate;
pub mod jsonrpc;
mod keepalive;
mod revocable;
pub mod session;
pub mod sse;

pub(crate) use keepalive::KeepAlive;
pub(crate) use revocable::Revocable;
