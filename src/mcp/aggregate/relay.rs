//! Relayed event streams: forwarding a routed request and streaming its
//! answer, the client's `GET` stream fed by every upstream, server-to-client
//! request ids prefixed on the way out, answers rewritten (the stateless
//! revision's fields, a collided resource URI), and the resumption of a
//! stream an upstream closed before answering.

use super::*;

impl Aggregator {
    /// Sends a routed request and relays the answer as it arrives: JSON as
    /// is, an event stream message by message with server-to-client request
    /// ids prefixed.
    pub(super) async fn forward(
        &self,
        ctx: &Ctx<'_>,
        i: usize,
        msg: Value,
        rewrite: AnswerRewrite,
    ) -> Result<Response<Body>, GatewayError> {
        let body = Bytes::from(serde_json::to_vec(&msg).expect("serializable"));
        let routing = ctx.stateless.then_some(&msg);
        let mut u = self.upstream_session(ctx, i).await.map_err(CallError::into_gateway)?;
        let resp = match self.send_routed(ctx.state, i, &u, body.clone(), ctx.request_id, routing).await {
            Err(CallError::SessionLost) => {
                u = self.renew(ctx, i).await.map_err(CallError::into_gateway)?;
                self.send_routed(ctx.state, i, &u, body, ctx.request_id, routing).await
            }
            r => r,
        }
        .map_err(|e| {
            tracing::warn!(server = %self.name(i), error = %e, "routed request failed");
            e.into_gateway()
        })?;
        let (parts, incoming) = resp.into_parts();
        if !is_event_stream(&parts.headers) {
            let body = if rewrite.is_noop() {
                incoming.boxed()
            } else {
                // One JSON answer to rewrite: read it whole (bounded).
                let bytes = Limited::new(incoming, MAX_MESSAGE)
                    .collect()
                    .await
                    .map_err(|_| GatewayError::UpstreamUnavailable { upstream_status: None })?
                    .to_bytes();
                match serde_json::from_slice::<Value>(&bytes) {
                    Ok(mut v) => {
                        rewrite.apply(&mut v);
                        full(serde_json::to_vec(&v).expect("serializable"))
                    }
                    Err(_) => full(bytes),
                }
            };
            let mut out = Response::new(body);
            *out.status_mut() = parts.status;
            if let Some(ct) = parts.headers.get(CONTENT_TYPE) {
                out.headers_mut().insert(CONTENT_TYPE, ct.clone());
            }
            return Ok(out);
        }
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        let resume = msg.get("id").map(|id| Resume {
            upstream: self.upstreams[i].clone(),
            session: u.session.clone(),
            version: u.version.clone(),
            request_id: ctx.request_id.clone(),
            answer_id: id.clone(),
        });
        // The last event, should the stream be cut, answers the request.
        let id = msg.get("id").and_then(|id| serde_json::value::to_raw_value(id).ok());
        tokio::spawn(relay(incoming, self.name(i).to_owned(), rewrite, resume, tx));
        Ok(self.event_stream(ctx, rx, id))
    }

    /// The client's GET stream: every upstream's GET stream merged, plus
    /// `list_changed` notifications when an upstream goes down or comes back.
    pub(super) async fn open_stream(&self, ctx: &Ctx<'_>) -> Result<Response<Body>, GatewayError> {
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        for &i in &ctx.usable {
            let Ok(u) = self.upstream_session(ctx, i).await else { continue };
            let resp = self
                .send(
                    ctx.state,
                    i,
                    Method::GET,
                    u.session.as_deref(),
                    u.version.as_deref(),
                    Bytes::new(),
                    ctx.request_id,
                )
                .await;
            match resp {
                Ok(r) if r.status().is_success() && is_event_stream(r.headers()) => {
                    tokio::spawn(relay(
                        r.into_body(),
                        self.name(i).to_owned(),
                        AnswerRewrite::default(),
                        None,
                        tx.clone(),
                    ));
                }
                // 405: this upstream offers no stream; anything else: it has
                // nothing to say on one now. Neither ends the client's stream.
                Ok(_) => {}
                Err(e) => tracing::debug!(server = %self.name(i), error = %e, "no upstream event stream"),
            }
        }
        let mut changes = self.changed.subscribe();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tx.closed() => return,
                    r = changes.recv() => {
                        if matches!(r, Err(broadcast::error::RecvError::Closed)) {
                            return;
                        }
                        for m in ["notifications/tools/list_changed", "notifications/prompts/list_changed", "notifications/resources/list_changed"] {
                            let msg = serde_json::to_vec(&json!({"jsonrpc": "2.0", "method": m})).expect("serializable");
                            if tx.send(sse::encode(&msg)).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        });
        Ok(self.event_stream(ctx, rx, None))
    }

    /// The client's side of relayed streams. It ends when the token stops
    /// being valid (see `mcp::Revocable`; the relays then see their
    /// channel closed and stop), with a last error event answering `id`.
    pub(super) fn event_stream(&self, ctx: &Ctx<'_>, rx: mpsc::Receiver<Bytes>, id: Option<Box<RawValue>>) -> Response<Body> {
        let body = ChannelBody(rx);
        let body: Body = if self.keepalive.is_zero() {
            Revocable::new(body, ctx.token, &ctx.state.streams_cutoff, id)
                .map_err(|never| match never {})
                .boxed()
        } else {
            let body = crate::mcp::KeepAlive::new(body, self.keepalive);
            Revocable::new(body, ctx.token, &ctx.state.streams_cutoff, id)
                .map_err(|never| match never {})
                .boxed()
        };
        let mut resp = Response::new(body);
        let h = resp.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        resp
    }
}

/// Messages queued towards one client stream.
pub(super) const STREAM_QUEUE: usize = 64;

/// How to pick up a routed request's stream again when the upstream closes
/// it before answering (SEP-1699 polling: the server ends the stream and the
/// client resumes with `GET` + `Last-Event-ID`). The gateway does it itself,
/// so the client sees one uninterrupted stream.
pub(super) struct Resume {
    pub(super) upstream: Upstream,
    pub(super) session: Option<String>,
    pub(super) version: Option<String>,
    pub(super) request_id: HeaderValue,
    /// The id of the request whose answer ends the stream.
    pub(super) answer_id: Value,
}

/// Upper bounds on resuming one stream: attempts, and the wait between them
/// (the upstream's `retry:` within this cap, else 1 s).
pub(super) const MAX_RESUMES: u32 = 100;
pub(super) const MAX_RESUME_WAIT: Duration = Duration::from_secs(10);

/// What the gateway changes in an upstream's answer on its way to the client.
#[derive(Clone, Default)]
pub(super) struct AnswerRewrite {
    /// The request was of the stateless revision: results carry `resultType`
    /// (and cache hints, for cacheable methods) even from older upstreams.
    pub(super) stateless: bool,
    pub(super) cacheable: bool,
    /// (URI the upstream knows, URI the client asked for): a resource whose
    /// URI was rewritten on collision is read back under the client's URI.
    pub(super) uri: Option<(String, String)>,
}

impl AnswerRewrite {
    pub(super) fn for_request(ctx: &Ctx<'_>, method: &str) -> Self {
        AnswerRewrite {
            stateless: ctx.stateless,
            cacheable: matches!(
                method,
                "tools/list" | "prompts/list" | "resources/list" | "resources/templates/list" | "resources/read" | "server/discover"
            ),
            uri: None,
        }
    }

    pub(super) fn is_noop(&self) -> bool {
        !self.stateless && self.uri.is_none()
    }

    /// Applies to answers (messages with a `result`), nothing else.
    pub(super) fn apply(&self, msg: &mut Value) {
        if msg.get("method").is_some() {
            return;
        }
        let Some(result) = msg.get_mut("result").and_then(Value::as_object_mut) else {
            return;
        };
        if let Some((upstream_uri, client_uri)) = &self.uri
            && let Some(contents) = result.get_mut("contents").and_then(Value::as_array_mut)
        {
            for c in contents {
                if c.get("uri").and_then(Value::as_str) == Some(upstream_uri) {
                    c["uri"] = Value::String(client_uri.clone());
                }
            }
        }
        if self.stateless {
            result.entry("resultType").or_insert_with(|| json!("complete"));
            if self.cacheable {
                // Lists depend on the token's scope and on upstream health:
                // never fresh, never shared.
                result.entry("ttlMs").or_insert_with(|| json!(0));
                result.entry("cacheScope").or_insert_with(|| json!("private"));
            }
        }
    }
}

/// Copies an upstream event stream to a client, message by message, with the
/// ids of server-to-client requests prefixed and answers rewritten. Ends
/// when the client goes, or when the upstream stream ends — unless `resume`
/// is set and the answer has not come yet: then the stream is picked up
/// again from the last event id.
pub(super) async fn relay(mut body: UpstreamBody, server: String, rewrite: AnswerRewrite, resume: Option<Resume>, tx: mpsc::Sender<Bytes>) {
    let mut parser = sse::Parser::new(MAX_MESSAGE);
    let mut last_id: Option<String> = None;
    let mut resumes = 0;
    loop {
        let frame = tokio::select! {
            _ = tx.closed() => return,
            f = body.frame() => f,
        };
        let Some(Ok(frame)) = frame else {
            // The upstream ended (or broke) the stream.
            let Some(r) = &resume else { return };
            let Some(event_id) = &last_id else { return };
            resumes += 1;
            if resumes > MAX_RESUMES {
                tracing::warn!(server, "upstream stream closed too often before answering; giving up");
                return;
            }
            let wait = parser
                .retry_ms
                .map_or(Duration::from_secs(1), Duration::from_millis)
                .min(MAX_RESUME_WAIT);
            tokio::select! {
                _ = tx.closed() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            let Ok(last) = HeaderValue::from_str(event_id) else { return };
            let req = upstream_request(
                &r.upstream.server,
                Method::GET,
                r.session.as_deref(),
                r.version.as_deref(),
                Bytes::new(),
                &r.request_id,
                &[("last-event-id", last)],
            );
            match r.upstream.send(req).await {
                Ok(resp) if resp.status().is_success() && is_event_stream(resp.headers()) => {
                    body = resp.into_body();
                    parser = sse::Parser::new(MAX_MESSAGE);
                    continue;
                }
                Ok(resp) => tracing::warn!(server, status = resp.status().as_u16(), "upstream refused to resume its stream"),
                Err(e) => tracing::warn!(server, error = %e, "could not resume the upstream stream"),
            }
            return;
        };
        let Some(data) = frame.data_ref() else { continue };
        let Ok(events) = parser.feed(data) else {
            tracing::warn!(server, "upstream event larger than the bound; stream cut");
            return;
        };
        for event in events {
            if event.id.is_some() {
                last_id = event.id;
            }
            let Ok(mut msg) = serde_json::from_str::<Value>(&event.data) else {
                continue; // e.g. a priming event with empty data
            };
            let answered = resume
                .as_ref()
                .is_some_and(|r| msg.get("method").is_none() && msg.get("id") == Some(&r.answer_id));
            prefix_server_request(&server, &mut msg);
            rewrite.apply(&mut msg);
            let bytes = serde_json::to_vec(&msg).expect("serializable");
            if tx.send(sse::encode(&bytes)).await.is_err() {
                return;
            }
            if answered {
                // The stream's purpose is served; do not wait for the upstream
                // to close it.
                return;
            }
        }
    }
}

/// Server-to-client requests (and the upstream's cancellations of them) get
/// ids the client can answer and the gateway can route: `<server>__<id>`.
pub(super) fn prefix_server_request(server: &str, msg: &mut Value) {
    let Some(method) = msg.get("method").and_then(Value::as_str) else {
        return;
    };
    if method == "notifications/cancelled" {
        if let Some(id) = msg.pointer_mut("/params/requestId") {
            *id = Value::String(format!("{server}__{id}"));
        }
        return;
    }
    if let Some(id) = msg.get_mut("id") {
        *id = Value::String(format!("{server}__{id}"));
    }
}

/// A response body fed by a channel; the sender sees `closed()` when the
/// client goes away, which ends the relays feeding it.
pub(super) struct ChannelBody(mpsc::Receiver<Bytes>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}
