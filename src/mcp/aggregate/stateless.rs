//! The stateless revision: no handshake and no session, `_meta` on every
//! request, and the routing headers that must agree with the body.

use super::*;

impl Aggregator {
    /// A request without a session: of the stateless revision (2026-07-28)
    /// when `revision`, else from a client that does not keep sessions.
    /// `server/discover` is answered here (stateless revision only);
    /// everything else goes through the same routing as a session's requests,
    /// over upstream sessions this instance opens on the token's behalf
    /// (keyed by token, renewed when an upstream forgets one): the upstreams
    /// may speak only the handshake revisions.
    pub(super) async fn stateless(
        &self,
        state: &AppState,
        token: &CachedToken,
        headers: &HeaderMap,
        msg: Value,
        request_id: &HeaderValue,
        revision: bool,
    ) -> Result<Response<Body>, GatewayError> {
        if revision {
            check_routing_headers(headers, &msg)?;
        }
        let meta = msg.pointer("/params/_meta");
        let field = |k: &str| meta.and_then(|m| m.get(k)).cloned();
        let client = json!({
            "capabilities": field("io.modelcontextprotocol/clientCapabilities").unwrap_or_else(|| json!({})),
            "clientInfo": field("io.modelcontextprotocol/clientInfo").unwrap_or_else(|| json!({"name": "unknown", "version": "0"})),
        });
        let session = SessionState {
            token_id: token.session_owner().to_string(),
            version: SUPPORTED_VERSIONS[0].to_owned(),
            client: Some(client),
            upstreams: Vec::new(),
        };
        let key = format!("stateless/{}", token.session_owner());
        let ctx = Ctx {
            state,
            token,
            sealed: &key,
            session: &session,
            request_id,
            usable: (0..self.upstreams.len()).filter(|&i| Self::allowed(token, self.name(i))).collect(),
            stateless: revision,
        };
        if revision && msg.get("method").and_then(Value::as_str) == Some("server/discover") {
            let id = msg.get("id").cloned().ok_or(GatewayError::InvalidRequest)?;
            let mut versions = vec![STATELESS_VERSION];
            versions.extend(SUPPORTED_VERSIONS);
            let result = json!({
                "supportedVersions": versions,
                "capabilities": merge_capabilities(&self.capabilities(&ctx).await),
                "serverInfo": {"name": "portcullis", "title": format!("Portcullis workspace {}", self.workspace.slug), "version": env!("CARGO_PKG_VERSION")},
            });
            let mut answer = json!({"jsonrpc": "2.0", "id": id, "result": result});
            AnswerRewrite::for_request(&ctx, "server/discover").apply(&mut answer);
            return Ok(json_response(StatusCode::OK, &answer));
        }
        if msg.get("method").is_none() {
            // No server-to-client requests exist in this revision to answer.
            return Err(GatewayError::InvalidRequest);
        }
        self.message(&ctx, token, msg).await
    }
}

/// Does this sessionless request speak the stateless revision? Its header,
/// or the version its `_meta` names.
pub(super) fn is_stateless(headers: &HeaderMap, msg: &Value) -> bool {
    headers.get("mcp-protocol-version").is_some_and(|v| v == STATELESS_VERSION)
        || msg
            .pointer("/params/_meta/io.modelcontextprotocol~1protocolVersion")
            .and_then(Value::as_str)
            == Some(STATELESS_VERSION)
}

/// The stateless revision mirrors the method and the name in headers, for
/// routing without parsing; they must agree with the body (-32020 otherwise).
pub(super) fn check_routing_headers(headers: &HeaderMap, msg: &Value) -> Result<(), GatewayError> {
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    if let Some(method) = msg.get("method").and_then(Value::as_str)
        && header("mcp-method") != Some(method)
    {
        return Err(GatewayError::HeaderMismatch);
    }
    if let Some(name) = routed_name(msg)
        && header("mcp-name") != Some(name)
    {
        return Err(GatewayError::HeaderMismatch);
    }
    Ok(())
}
