//! MCP protocol pieces: the JSON-RPC envelope, and the aggregating mode of
//! workspaces with several servers (sealed sessions, event-stream relay).

pub mod aggregate;
pub mod jsonrpc;
pub mod session;
pub mod sse;
