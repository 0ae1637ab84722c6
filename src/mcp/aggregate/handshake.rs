//! The handshake: `initialize` answered by the gateway itself, each
//! upstream initialised on the token's behalf (forwarding the client's
//! capabilities), upstream sessions sealed into the gateway's, re-established
//! when lost and ended on `DELETE`; and the union of the upstreams'
//! capabilities.

use super::*;

impl Aggregator {
    /// The capabilities the usable upstreams announced, from their last
    /// handshake on this instance (one is made when none was).
    pub(super) async fn capabilities(&self, ctx: &Ctx<'_>) -> Vec<Value> {
        let mut out = Vec::new();
        for &i in &ctx.usable {
            if self.capabilities[i].get().is_none() {
                let _ = self.upstream_session(ctx, i).await;
            }
            if let Some(c) = self.capabilities[i].get() {
                out.push(c.clone());
            }
        }
        out
    }

    pub(super) async fn initialize(
        &self,
        state: &AppState,
        token: &CachedToken,
        msg: Value,
        request_id: &HeaderValue,
    ) -> Result<Response<Body>, GatewayError> {
        let id = msg.get("id").cloned().ok_or(GatewayError::InvalidRequest)?;
        let params = msg.get("params").cloned().unwrap_or_else(|| json!({}));
        let requested = params.get("protocolVersion").and_then(Value::as_str).unwrap_or_default();
        let version = SUPPORTED_VERSIONS
            .iter()
            .find(|v| **v == requested)
            .unwrap_or(&SUPPORTED_VERSIONS[0]);
        let mut client = json!({
            "capabilities": params.get("capabilities").cloned().unwrap_or_else(|| json!({})),
            "clientInfo": params.get("clientInfo").cloned().unwrap_or_else(|| json!({"name": "unknown", "version": "0"})),
        });
        if serde_json::to_vec(&client).map_or(0, |v| v.len()) > MAX_CLIENT_PARAMS {
            client = json!({"capabilities": {}, "clientInfo": {"name": "portcullis", "version": env!("CARGO_PKG_VERSION")}});
        }
        let usable: Vec<usize> = (0..self.upstreams.len()).filter(|&i| Self::allowed(token, self.name(i))).collect();
        let results = join_all(usable.iter().map(|&i| self.init_upstream(state, i, &client, version, request_id))).await;
        let mut upstreams = Vec::new();
        let mut caps: Vec<Value> = Vec::new();
        let mut instructions = Vec::new();
        for (&i, r) in usable.iter().zip(results) {
            match r {
                Ok((u, result)) => {
                    caps.push(result.get("capabilities").cloned().unwrap_or(Value::Null));
                    if let Some(text) = result.get("instructions").and_then(Value::as_str) {
                        instructions.push(format!("[{}] {text}", self.name(i)));
                    }
                    upstreams.push(u);
                }
                Err(e) => {
                    tracing::warn!(server = %self.name(i), error = %e, "upstream initialisation failed");
                    if self.workspace.failure_mode == FailureMode::FailClosed {
                        return Err(e.into_gateway());
                    }
                    upstreams.push(UpstreamSession {
                        server: self.name(i).to_owned(),
                        session: None,
                        version: None,
                        ready: false,
                    });
                }
            }
        }
        let session = SessionState {
            token_id: token.session_owner().to_string(),
            version: (*version).to_owned(),
            client: Some(client),
            upstreams,
        };
        let sealed = self.sealer.seal(&self.workspace.slug, &session);
        let mut result = json!({
            "protocolVersion": version,
            "capabilities": merge_capabilities(&caps),
            "serverInfo": {"name": "portcullis", "title": format!("Portcullis workspace {}", self.workspace.slug), "version": env!("CARGO_PKG_VERSION")},
        });
        if !instructions.is_empty() {
            result["instructions"] = Value::String(instructions.join("\n\n"));
        }
        let mut resp = json_response(StatusCode::OK, &json!({"jsonrpc": "2.0", "id": id, "result": result}));
        resp.headers_mut().insert(
            "mcp-session-id",
            HeaderValue::from_str(&sealed).expect("base64url is a valid header value"),
        );
        Ok(resp)
    }

    /// Initialises one upstream: `initialize`, then `notifications/initialized`.
    pub(super) async fn init_upstream(
        &self,
        state: &AppState,
        i: usize,
        client: &Value,
        version: &str,
        request_id: &HeaderValue,
    ) -> Result<(UpstreamSession, Value), CallError> {
        let mut params = client.clone();
        params["protocolVersion"] = Value::String(version.to_owned());
        let msg = json!({"jsonrpc": "2.0", "id": internal_id(), "method": "initialize", "params": params});
        let (headers, answer) = self.exchange(state, i, None, None, &msg, request_id).await?;
        let result = answer
            .get("result")
            .cloned()
            .ok_or_else(|| CallError::Protocol(format!("initialize failed: {}", answer.get("error").unwrap_or(&Value::Null))))?;
        let session = headers.get("mcp-session-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let _ = self.capabilities[i].set(result.get("capabilities").cloned().unwrap_or_else(|| json!({})));
        let chosen = result.get("protocolVersion").and_then(Value::as_str).unwrap_or(version).to_owned();
        let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        self.exchange(state, i, session.as_deref(), Some(&chosen), &note, request_id)
            .await?;
        Ok((
            UpstreamSession {
                server: self.name(i).to_owned(),
                session,
                version: Some(chosen),
                ready: true,
            },
            result,
        ))
    }

    /// This session's state for upstream `i`, initialising it first when it
    /// never was (it was down at `initialize`).
    pub(super) async fn upstream_session(&self, ctx: &Ctx<'_>, i: usize) -> Result<UpstreamSession, CallError> {
        if let Some(u) = self.renewed.get(&(Box::from(ctx.sealed), i)) {
            return Ok(u.clone());
        }
        let sealed = ctx.session.upstreams.iter().find(|u| u.server == self.name(i));
        match sealed {
            Some(u) if u.ready => Ok(u.clone()),
            _ => self.renew(ctx, i).await,
        }
    }

    pub(super) async fn renew(&self, ctx: &Ctx<'_>, i: usize) -> Result<UpstreamSession, CallError> {
        if !self.up[i].load(Ordering::Relaxed) {
            return Err(CallError::Down("marked down".into()));
        }
        let client = ctx
            .session
            .client
            .clone()
            .unwrap_or_else(|| json!({"capabilities": {}, "clientInfo": {"name": "portcullis", "version": env!("CARGO_PKG_VERSION")}}));
        let (u, _) = self
            .init_upstream(ctx.state, i, &client, &ctx.session.version, ctx.request_id)
            .await?;
        tracing::info!(server = %self.name(i), "upstream session (re-)established");
        if self.renewed.len() >= MAP_CAP {
            self.renewed.clear();
        }
        self.renewed.insert((Box::from(ctx.sealed), i), u.clone());
        Ok(u)
    }

    pub(super) async fn end_session(&self, ctx: &Ctx<'_>, i: usize) {
        let Ok(u) = self.upstream_session(ctx, i).await else { return };
        if u.session.is_some() {
            let _ = self
                .send(
                    ctx.state,
                    i,
                    Method::DELETE,
                    u.session.as_deref(),
                    u.version.as_deref(),
                    Bytes::new(),
                    ctx.request_id,
                )
                .await;
        }
        self.renewed.remove(&(Box::from(ctx.sealed), i));
    }
}

/// The union of the upstreams' capabilities. `listChanged` is always
/// announced: the gateway itself sends it when an upstream comes or goes.
pub(super) fn merge_capabilities(caps: &[Value]) -> Value {
    let has = |k: &str| caps.iter().any(|c| c.get(k).is_some());
    let mut out = json!({"tools": {"listChanged": true}});
    if has("prompts") {
        out["prompts"] = json!({"listChanged": true});
    }
    if has("resources") {
        let subscribe = caps.iter().any(|c| c.pointer("/resources/subscribe") == Some(&Value::Bool(true)));
        out["resources"] = json!({"listChanged": true, "subscribe": subscribe});
    }
    if has("logging") {
        out["logging"] = json!({});
    }
    if has("completions") {
        out["completions"] = json!({});
    }
    out
}
