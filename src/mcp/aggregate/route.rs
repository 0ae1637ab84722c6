//! Routing a client's message: which upstream a request goes to (by the
//! `<server>__` prefix of a tool or prompt name, by the owner of a resource
//! URI or template), notifications to all, and answers to server-to-client
//! requests back to the server whose prefixed id they carry.

use super::*;

impl Aggregator {
    pub(super) async fn message(&self, ctx: &Ctx<'_>, token: &CachedToken, msg: Value) -> Result<Response<Body>, GatewayError> {
        let id = msg.get("id").cloned();
        let Some(method) = msg.get("method").and_then(Value::as_str).map(str::to_owned) else {
            // A response: the client answering a request an upstream sent.
            return self.client_response(ctx, msg).await;
        };
        let Some(id) = id else {
            self.client_notification(ctx, &method, &msg).await;
            return Ok(accepted());
        };
        let params = msg.get("params").cloned().unwrap_or_else(|| json!({}));
        let method = method.as_str();
        let result = match method {
            "ping" => json!({}),
            "tools/list" => self.list(ctx, ListKind::Tools, &params).await?,
            "prompts/list" => self.list(ctx, ListKind::Prompts, &params).await?,
            "resources/list" => self.list(ctx, ListKind::Resources, &params).await?,
            "resources/templates/list" => self.list(ctx, ListKind::Templates, &params).await?,
            "logging/setLevel" => {
                let results = join_all(ctx.usable.iter().map(|&i| self.call(ctx, i, &msg))).await;
                for (&i, r) in ctx.usable.iter().zip(results) {
                    if let Err(e) = r {
                        tracing::warn!(server = %self.name(i), error = %e, "logging/setLevel failed");
                    }
                }
                json!({})
            }
            "tools/call" | "prompts/get" => {
                let kind = if method == "tools/call" {
                    ListKind::Tools
                } else {
                    ListKind::Prompts
                };
                let name = params.get("name").and_then(Value::as_str).ok_or(GatewayError::InvalidParams)?;
                let (i, original) = self.route_name(ctx, token, kind, name).await?;
                let mut msg = msg;
                msg["params"]["name"] = Value::String(original);
                return self.forward(ctx, i, msg, AnswerRewrite::for_request(ctx, method)).await;
            }
            "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
                let uri = params.get("uri").and_then(Value::as_str).ok_or(GatewayError::InvalidParams)?;
                let (i, original) = self.resource_owner(ctx, token, uri).await?;
                let mut rewrite = AnswerRewrite::for_request(ctx, method);
                if original != uri {
                    rewrite.uri = Some((original.clone(), uri.to_owned()));
                }
                let mut msg = msg;
                msg["params"]["uri"] = Value::String(original);
                return self.forward(ctx, i, msg, rewrite).await;
            }
            "completion/complete" => {
                let r = params.get("ref").ok_or(GatewayError::InvalidParams)?;
                let mut msg = msg.clone();
                let i = match r.get("type").and_then(Value::as_str) {
                    Some("ref/prompt") => {
                        let name = r.get("name").and_then(Value::as_str).ok_or(GatewayError::InvalidParams)?;
                        let (i, original) = self.route_name(ctx, token, ListKind::Prompts, name).await?;
                        msg["params"]["ref"]["name"] = Value::String(original);
                        i
                    }
                    Some("ref/resource") => {
                        let uri = r.get("uri").and_then(Value::as_str).ok_or(GatewayError::InvalidParams)?;
                        self.template_owner(ctx, uri).await?
                    }
                    _ => return Err(GatewayError::InvalidParams),
                };
                return self.forward(ctx, i, msg, AnswerRewrite::for_request(ctx, method)).await;
            }
            _ => return Err(GatewayError::MethodNotFound),
        };
        let mut answer = json!({"jsonrpc": "2.0", "id": id, "result": result});
        AnswerRewrite::for_request(ctx, method).apply(&mut answer);
        Ok(json_response(StatusCode::OK, &answer))
    }

    /// Notifications from the client go to every upstream of the session
    /// (`notifications/initialized` was already sent at `initialize`).
    /// Cancellation needs no routing: the cancelled id was sent to exactly
    /// one upstream, and the others ignore ids they do not know.
    pub(super) async fn client_notification(&self, ctx: &Ctx<'_>, method: &str, msg: &Value) {
        if method == "notifications/initialized" {
            return;
        }
        join_all(ctx.usable.iter().map(|&i| async move {
            if let Err(e) = self.call(ctx, i, msg).await {
                tracing::debug!(server = %self.name(i), error = %e, method, "notification not delivered");
            }
        }))
        .await;
    }

    /// The client's answer to a server-to-client request: back to the
    /// upstream named in its id, with the upstream's own id.
    pub(super) async fn client_response(&self, ctx: &Ctx<'_>, mut msg: Value) -> Result<Response<Body>, GatewayError> {
        let (i, original) = msg
            .get("id")
            .and_then(|id| self.unprefix_id(id))
            .filter(|(i, _)| ctx.usable.contains(i))
            .ok_or(GatewayError::InvalidParams)?;
        msg["id"] = original;
        self.call(ctx, i, &msg).await.map_err(CallError::into_gateway)?;
        Ok(accepted())
    }

    pub(super) fn unprefix_id(&self, id: &Value) -> Option<(usize, Value)> {
        let (i, rest) = self.split_prefixed(id.as_str()?)?;
        Some((i, serde_json::from_str(rest).ok()?))
    }

    /// `<server>__<name>` → (server, upstream name). A shortened name unknown
    /// to this instance (listed on another) is learnt by listing that server.
    pub(super) async fn route_name(
        &self,
        ctx: &Ctx<'_>,
        token: &CachedToken,
        kind: ListKind,
        exposed: &str,
    ) -> Result<(usize, String), GatewayError> {
        let unknown = || GatewayError::UnknownName {
            kind: if kind == ListKind::Tools { "tool" } else { "prompt" },
            name: exposed.to_owned(),
        };
        let (i, rest) = self.split_prefixed(exposed).ok_or_else(unknown)?;
        let server = self.name(i);
        if !Self::allowed(token, server) {
            return Err(GatewayError::Forbidden);
        }
        if !ctx.usable.contains(&i) {
            return Err(unknown());
        }
        let lookup = |s: &Self| -> Option<String> {
            if let Some(o) = s.mangled[i].get(rest) {
                return Some(o.clone());
            }
            (expose(server, rest) == exposed).then(|| rest.to_owned())
        };
        if let Some(o) = lookup(self) {
            return Ok((i, o));
        }
        self.list_one(ctx, i, kind)
            .await
            .map_err(CallError::into_gateway)?
            .iter()
            .for_each(|item| {
                if let Some(name) = item.get("name").and_then(Value::as_str) {
                    let e = expose(server, name);
                    if e.len() != server.len() + 2 + name.len() {
                        self.remember_mangled(i, &e, name);
                    }
                }
            });
        lookup(self).map(|o| (i, o)).ok_or_else(unknown)
    }

    /// Which server a resource URI belongs to, and the URI it knows it by.
    pub(super) async fn resource_owner(&self, ctx: &Ctx<'_>, token: &CachedToken, uri: &str) -> Result<(usize, String), GatewayError> {
        if let Some((server, original)) = uri.strip_prefix("portcullis://").and_then(|r| r.split_once('/')) {
            let i = self.index_of(server).ok_or(GatewayError::InvalidParams)?;
            if !Self::allowed(token, server) {
                return Err(GatewayError::Forbidden);
            }
            return Ok((i, original.to_owned()));
        }
        if let Some(i) = self.known_owner(ctx, uri) {
            return Ok((i, uri.to_owned()));
        }
        // Not known (yet): list this session's servers afresh and take the
        // owner from that very list.
        let (_, owners) = self.list_owned(ctx, ListKind::Resources, &json!({})).await?;
        if let Some(&i) = owners.get(uri) {
            return Ok((i, uri.to_owned()));
        }
        // Not listed: a URI built from a template.
        Ok((self.template_owner(ctx, uri).await?, uri.to_owned()))
    }

    /// The server whose resource template matches `uri` best (longest
    /// literal prefix). None matching: -32602 (a guess would send the URI
    /// to a server that never offered it).
    pub(super) async fn template_owner(&self, ctx: &Ctx<'_>, uri: &str) -> Result<usize, GatewayError> {
        let results = join_all(ctx.usable.iter().map(|&i| self.list_one(ctx, i, ListKind::Templates))).await;
        let mut best: Option<(usize, usize)> = None;
        for (&i, r) in ctx.usable.iter().zip(results) {
            for t in r.unwrap_or_default() {
                let Some(template) = t.get("uriTemplate").and_then(Value::as_str) else {
                    continue;
                };
                let literal = template.split('{').next().unwrap_or_default();
                let exact = template == uri;
                if (exact || uri.starts_with(literal)) && best.is_none_or(|(_, len)| literal.len() > len || exact) {
                    best = Some((i, if exact { usize::MAX } else { literal.len() }));
                }
            }
        }
        best.map(|(i, _)| i).ok_or(GatewayError::InvalidParams)
    }
}

/// The name a routed request is addressed to: a tool or prompt name, or a URI.
pub(super) fn routed_name(msg: &Value) -> Option<&str> {
    match msg.get("method").and_then(Value::as_str)? {
        "tools/call" | "prompts/get" => msg.pointer("/params/name")?.as_str(),
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => msg.pointer("/params/uri")?.as_str(),
        _ => None,
    }
}
