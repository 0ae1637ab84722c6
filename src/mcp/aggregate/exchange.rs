//! One exchange with one upstream: the HTTP request in a session (MCP
//! headers, the server's credentials, the request id), sending it with one
//! renewal of a lost session, and reading the answer (JSON, or an event
//! stream up to the wanted id).

use super::*;

impl Aggregator {
    /// A routed POST in a session; with `routing`, the stateless revision's
    /// `Mcp-Method` / `Mcp-Name` headers are set from the rewritten message.
    pub(super) async fn send_routed(
        &self,
        state: &AppState,
        i: usize,
        u: &UpstreamSession,
        body: Bytes,
        request_id: &HeaderValue,
        routing: Option<&Value>,
    ) -> Result<Response<UpstreamBody>, CallError> {
        let mut extra = Vec::new();
        if let Some(msg) = routing {
            if let Some(m) = msg
                .get("method")
                .and_then(Value::as_str)
                .and_then(|m| HeaderValue::from_str(m).ok())
            {
                extra.push(("mcp-method", m));
            }
            if let Some(n) = routed_name(msg).and_then(|n| HeaderValue::from_str(n).ok()) {
                extra.push(("mcp-name", n));
            }
        }
        self.send_with(
            state,
            i,
            Method::POST,
            u.session.as_deref(),
            u.version.as_deref(),
            body,
            request_id,
            &extra,
        )
        .await
    }

    /// One HTTP request to upstream `i`.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn send(
        &self,
        state: &AppState,
        i: usize,
        method: Method,
        session: Option<&str>,
        version: Option<&str>,
        body: Bytes,
        request_id: &HeaderValue,
    ) -> Result<Response<UpstreamBody>, CallError> {
        self.send_with(state, i, method, session, version, body, request_id, &[]).await
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn send_with(
        &self,
        state: &AppState,
        i: usize,
        method: Method,
        session: Option<&str>,
        version: Option<&str>,
        body: Bytes,
        request_id: &HeaderValue,
        extra: &[(&'static str, HeaderValue)],
    ) -> Result<Response<UpstreamBody>, CallError> {
        let req = upstream_request(&self.workspace.servers[i], method, session, version, body, request_id, extra);
        let started = Instant::now();
        match self.upstreams[i].send(req).await {
            Ok(resp) => {
                state.metrics.upstream_latency(self.workspace.index, i, started.elapsed());
                self.set_up(i, true);
                if matches!(resp.status().as_u16(), 401 | 407) {
                    state.metrics.upstream_failure(self.workspace.index, UpstreamFailure::Unavailable);
                    tracing::error!(server = %self.name(i), status = resp.status().as_u16(), "upstream refused the gateway's credentials; check the server's configured headers");
                    return Err(CallError::Refused(resp.status().as_u16()));
                }
                if resp.status() == StatusCode::NOT_FOUND && session.is_some() {
                    return Err(CallError::SessionLost);
                }
                Ok(resp)
            }
            Err(UpstreamError::Timeout) => {
                state.metrics.upstream_failure(self.workspace.index, UpstreamFailure::Timeout);
                Err(CallError::Timeout)
            }
            Err(UpstreamError::Unavailable(d)) => {
                state.metrics.upstream_failure(self.workspace.index, UpstreamFailure::Unavailable);
                self.set_up(i, false);
                Err(CallError::Down(d))
            }
        }
    }

    /// Sends one message and reads the one answer to it (JSON or the matching
    /// message of an event stream). A notification's answer is `Null`.
    pub(super) async fn exchange(
        &self,
        state: &AppState,
        i: usize,
        session: Option<&str>,
        version: Option<&str>,
        msg: &Value,
        request_id: &HeaderValue,
    ) -> Result<(HeaderMap, Value), CallError> {
        let body = Bytes::from(serde_json::to_vec(msg).expect("serializable"));
        let resp = self.send(state, i, Method::POST, session, version, body, request_id).await?;
        let timeout = self.workspace.servers[i].timeout;
        let want = msg.get("id");
        match tokio::time::timeout(timeout, read_answer(resp, want)).await {
            Err(_) => {
                state.metrics.upstream_failure(self.workspace.index, UpstreamFailure::Timeout);
                Err(CallError::Timeout)
            }
            Ok(r) => r,
        }
    }

    /// [`Self::exchange`] inside the session, re-initialising the upstream
    /// once if it forgot the session.
    pub(super) async fn call(&self, ctx: &Ctx<'_>, i: usize, msg: &Value) -> Result<Value, CallError> {
        let u = self.upstream_session(ctx, i).await?;
        match self
            .exchange(ctx.state, i, u.session.as_deref(), u.version.as_deref(), msg, ctx.request_id)
            .await
        {
            Err(CallError::SessionLost) => {
                let u = self.renew(ctx, i).await?;
                let (_, v) = self
                    .exchange(ctx.state, i, u.session.as_deref(), u.version.as_deref(), msg, ctx.request_id)
                    .await?;
                Ok(v)
            }
            r => r.map(|(_, v)| v),
        }
    }
}

/// Reads the answer to a message: JSON, or an event stream up to the response
/// with the wanted id. Non-2xx answers that carry a JSON-RPC error are
/// returned as that error.
pub(super) async fn read_answer(resp: Response<UpstreamBody>, want: Option<&Value>) -> Result<(HeaderMap, Value), CallError> {
    let (parts, body) = resp.into_parts();
    if parts.status == StatusCode::ACCEPTED || want.is_none() {
        return if parts.status.is_success() {
            Ok((parts.headers, Value::Null))
        } else {
            Err(CallError::Protocol(format!("status {}", parts.status)))
        };
    }
    if is_event_stream(&parts.headers) && parts.status.is_success() {
        let mut body = body;
        let mut parser = sse::Parser::new(MAX_MESSAGE);
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| CallError::Down(e.to_string()))?;
            let Some(data) = frame.data_ref() else { continue };
            for event in parser.feed(data).map_err(|_| CallError::Protocol("event too large".into()))? {
                let Ok(v) = serde_json::from_str::<Value>(&event.data) else {
                    continue;
                };
                if v.get("method").is_none() && v.get("id") == want {
                    return Ok((parts.headers, v));
                }
            }
        }
        return Err(CallError::Protocol("event stream ended without an answer".into()));
    }
    let bytes = Limited::new(body, MAX_MESSAGE)
        .collect()
        .await
        .map_err(|e| CallError::Down(e.to_string()))?
        .to_bytes();
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(v) if v.get("result").is_some() || v.get("error").is_some() => Ok((parts.headers, v)),
        _ => Err(CallError::Protocol(format!("status {} without a JSON-RPC answer", parts.status))),
    }
}

/// An HTTP request to an upstream in a session: MCP headers, the server's
/// configured headers (its credentials), the request id.
pub(super) fn upstream_request(
    server: &UpstreamServer,
    method: Method,
    session: Option<&str>,
    version: Option<&str>,
    body: Bytes,
    request_id: &HeaderValue,
    extra: &[(&'static str, HeaderValue)],
) -> Request<Bytes> {
    let mut req = Request::new(body);
    let get = method == Method::GET;
    *req.method_mut() = method;
    *req.uri_mut() = server.url.clone();
    let h = req.headers_mut();
    h.insert(
        ACCEPT,
        HeaderValue::from_static(if get {
            "text/event-stream"
        } else {
            "application/json, text/event-stream"
        }),
    );
    if !get {
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    if let Some(s) = session.and_then(|s| HeaderValue::from_str(s).ok()) {
        h.insert("mcp-session-id", s);
    }
    if let Some(v) = version.and_then(|v| HeaderValue::from_str(v).ok()) {
        h.insert("mcp-protocol-version", v);
    }
    for (name, v) in &server.headers {
        h.insert(name.clone(), v.clone());
    }
    h.insert("x-request-id", request_id.clone());
    for (name, v) in extra {
        h.insert(*name, v.clone());
    }
    req
}

/// A fresh id for a request the gateway itself sends upstream. Unique per
/// process, so that concurrent internal requests in one upstream session can
/// never be confused (a fixed id made one of two concurrent lists hang).
pub(super) fn internal_id() -> Value {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    Value::String(format!("portcullis-{}", NEXT.fetch_add(1, Ordering::Relaxed)))
}
