//! MCP protocol pieces: the JSON-RPC envelope.

pub mod jsonrpc;
