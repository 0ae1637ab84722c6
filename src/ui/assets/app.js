// Portcullis dashboard script (docs/dashboard.md). Plain JavaScript, no
// framework and no build step; embedded in the binary and served from
// /assets/app.js, the only script the Content-Security-Policy allows.
//
// The dashboard's pages talk to the JSON admin API (/v1/...) and members'
// pages on the public listener (/me) to /me/api/..., with the session
// cookie (the page names its tokens API in data-api); every
// state-changing call carries the X-CSRF-Token header from the page's
// <meta name="csrf-token">. A new token's secret is only ever held in the
// DOM of the dialog that shows it, and wiped when the dialog closes: it is
// never written to localStorage, sessionStorage, a cookie or a URL.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const data = {};
  document.querySelectorAll("#page-data span").forEach((s) => { data[s.dataset.key] = s.dataset.value; });
  const csrfMeta = document.querySelector('meta[name="csrf-token"]');
  const csrf = csrfMeta ? csrfMeta.content : "";
  const ws = data.ws;

  // ---- helpers -------------------------------------------------------------
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "text") e.textContent = v;
      else if (k === "testid") e.dataset.testid = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children) if (c !== null && c !== undefined) e.append(c);
    return e;
  }
  const SVG = "http://www.w3.org/2000/svg";
  function svg(tag, attrs, ...children) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) if (v !== null && v !== undefined) e.setAttribute(k, v);
    for (const c of children) if (c) e.append(c);
    return e;
  }
  function say(id, text, isError) {
    const p = $(id);
    if (!p) return;
    p.textContent = text || "";
    p.classList.toggle("error", !!isError);
  }
  function when(iso) {
    if (!iso) return "—";
    const d = new Date(iso);
    return isNaN(d) ? iso : d.toLocaleString();
  }
  function ago(iso) {
    if (!iso) return "never";
    const s = Math.round((Date.now() - new Date(iso).getTime()) / 1000);
    if (s < 60) return s <= 1 ? "just now" : s + " s ago";
    if (s < 3600) return Math.round(s / 60) + " min ago";
    if (s < 86400) return Math.round(s / 3600) + " h ago";
    return Math.round(s / 86400) + " d ago";
  }

  // Calls the admin API. Resolves to {status, body}; a 401 means the session
  // ended (signed out elsewhere, expired, or its admin token was revoked).
  async function api(method, path, body) {
    const headers = { Accept: "application/json" };
    if (method !== "GET") headers["X-CSRF-Token"] = csrf;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const r = await fetch(path, {
      method, headers, credentials: "same-origin", cache: "no-store",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let json = null;
    try { json = await r.json(); } catch (_) { json = null; }
    if (r.status === 401) {
      window.location.assign(data.home || "/");
      throw new Error("session ended");
    }
    return { status: r.status, body: json };
  }
  const errText = (r) => (r.body && r.body.error && r.body.error.message) || ("request failed (HTTP " + r.status + ")");
  const enc = encodeURIComponent;

  function download(name, type, text) {
    const url = URL.createObjectURL(new Blob([text], { type }));
    const a = el("a", { href: url, download: name });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  }

  // ---- Tokens tab ----------------------------------------------------------
  // The expiry presets of the contract (§9), in seconds.
  const EXPIRY_PRESETS = { "90d": 7776000, "30d": 2592000, "24h": 86400, "1h": 3600 };

  function tokensTab() {
    const body = $("tokens-body");
    // The admin API, or a member's own (/me/api/tokens), which has no
    // member filter, member field or server choice.
    const tokensApi = data.api || "/v1/workspaces/" + enc(ws) + "/tokens";
    const memberFilter = $("filter-member");
    const cursors = [null]; // cursor of each page shown so far
    let page = 0;
    let nextCursor = null;
    let rows = [];

    function statusCell(t) {
      return el("td", {}, el("span", { class: "status status-" + t.status, testid: "token-status-" + t.id, text: t.status }));
    }
    function render() {
      const status = $("filter-status").value;
      const member = memberFilter ? memberFilter.value.trim().toLowerCase() : "";
      body.replaceChildren();
      const shown = rows.filter((t) =>
        (!status || t.status === status) &&
        (!member || (t.member_id || "").toLowerCase().includes(member) || (t.email || "").toLowerCase().includes(member)));
      for (const t of shown) {
        const revoke = t.status === "active"
          ? el("button", { type: "button", class: "danger small", testid: "token-revoke-" + t.id,
              "aria-label": "Revoke " + t.name, onclick: () => askRevoke(t) }, "Revoke")
          : null;
        body.append(el("tr", { testid: "token-row-" + t.id, "data-id": t.id },
          el("td", {}, el("span", { class: "name", text: t.name }), el("br"), el("code", { class: "hint", text: t.hint + " · " + t.id })),
          statusCell(t),
          el("td", { text: t.member_id || t.email || "—" }),
          el("td", {}, el("span", { testid: "token-last-used-" + t.id, title: t.last_used_at || "", text: t.last_used_at ? ago(t.last_used_at) : "never" })),
          el("td", { text: t.expires_at ? when(t.expires_at) : "never" }),
          el("td", { text: when(t.created_at) }),
          el("td", {}, revoke)));
      }
      say("tokens-msg", rows.length === 0 ? "No tokens yet. Create one with “New token”."
        : (shown.length === rows.length ? "" : shown.length + " of " + rows.length + " tokens on this page match the filter."));
      $("page-prev").disabled = page === 0;
      $("page-next").disabled = !nextCursor;
    }
    async function load() {
      const c = cursors[page];
      const r = await api("GET", tokensApi + "?page_size=25" + (c ? "&cursor=" + enc(c) : ""));
      if (r.status !== 200) { say("tokens-msg", errText(r), true); return; }
      rows = r.body.tokens;
      nextCursor = r.body.next_cursor || null;
      render();
    }
    $("filter-status").addEventListener("change", render);
    if (memberFilter) memberFilter.addEventListener("input", render);
    $("page-next").addEventListener("click", () => { if (nextCursor) { cursors[page + 1] = nextCursor; page += 1; load(); } });
    $("page-prev").addEventListener("click", () => { if (page > 0) { page -= 1; load(); } });

    // Revoke, after confirmation; the row changes in place.
    const confirmDialog = $("confirm-dialog");
    let pending = null;
    function askRevoke(t) {
      pending = t;
      $("confirm-text").textContent = "“" + t.name + "” (" + t.id + ") stops working at once, for every client using it. This cannot be undone.";
      confirmDialog.showModal();
      $("confirm-cancel").focus();
    }
    $("confirm-cancel").addEventListener("click", () => { pending = null; confirmDialog.close(); });
    $("confirm").addEventListener("click", async () => {
      const t = pending;
      pending = null;
      confirmDialog.close();
      if (!t) return;
      const r = await api("DELETE", tokensApi + "/" + enc(t.id));
      if (r.status !== 200) { say("tokens-msg", errText(r), true); return; }
      const i = rows.findIndex((x) => x.id === t.id);
      if (i >= 0) rows[i] = r.body;
      render();
      say("tokens-msg", "Revoked “" + t.name + "”.");
    });

    // New token.
    const dialog = $("new-token-dialog");
    const form = $("new-token-form");
    const result = $("new-token-result");
    function wipeSecret() {
      // The only copies of the secret are these text nodes: gone on close.
      for (const id of ["token-secret", "token-mcp-json", "recipe-claude-desktop", "recipe-cursor", "recipe-claude-code", "recipe-vscode", "copy-status"]) $(id).textContent = "";
    }
    $("token-new").addEventListener("click", () => {
      form.reset();
      wipeSecret();
      form.hidden = false;
      result.hidden = true;
      $("custom-expiry").hidden = true;
      say("new-token-error", "");
      dialog.showModal();
      $("token-name").focus();
    });
    dialog.addEventListener("close", () => { wipeSecret(); result.hidden = true; form.hidden = false; });
    $("new-token-cancel").addEventListener("click", () => dialog.close());
    $("new-token-done").addEventListener("click", () => { wipeSecret(); dialog.close(); });
    $("token-expiry").addEventListener("change", () => { $("custom-expiry").hidden = $("token-expiry").value !== "custom"; });
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const name = $("token-name").value.trim();
      if (!name) { say("new-token-error", "Give the token a name.", true); $("token-name").focus(); return; }
      const req = { name };
      const exp = $("token-expiry").value;
      if (exp === "custom") {
        const at = new Date($("token-expiry-custom").value);
        const secs = Math.round((at.getTime() - Date.now()) / 1000);
        if (isNaN(secs) || secs <= 0) { say("new-token-error", "Pick an expiry date and time in the future.", true); $("token-expiry-custom").focus(); return; }
        req.expires_in = secs;
      } else if (exp !== "none") {
        req.expires_in = EXPIRY_PRESETS[exp];
      }
      const who = $("token-member") ? $("token-member").value.trim() : "";
      if (who) { if (who.includes("@")) req.email = who; else req.member_id = who; }
      const servers = $("token-servers") ? Array.from($("token-servers").selectedOptions).map((o) => o.value) : [];
      if (servers.length) req.allowed_servers = servers;
      const r = await api("POST", tokensApi, req);
      if (r.status !== 201) { say("new-token-error", errText(r), true); return; }
      showSecret(r.body);
      rows.unshift(r.body.info);
      if (page === 0) render();
    });
    function showSecret(created) {
      const token = created.token;
      const url = created.mcp_json.mcpServers[ws].url;
      $("token-secret").textContent = token;
      $("token-mcp-json").textContent = JSON.stringify(created.mcp_json, null, 2);
      $("recipe-claude-desktop").textContent = JSON.stringify({ mcpServers: { [ws]: {
        command: "npx", args: ["-y", "mcp-remote", url, "--header", "Authorization:${AUTH_HEADER}"],
        env: { AUTH_HEADER: "Bearer " + token } } } }, null, 2);
      $("recipe-cursor").textContent = "~/.cursor/mcp.json\n" + JSON.stringify({ mcpServers: { [ws]: {
        url, headers: { Authorization: "Bearer " + token } } } }, null, 2);
      $("recipe-claude-code").textContent = "claude mcp add --transport http " + ws + " " + url + " \\\n  --header \"Authorization: Bearer " + token + "\"";
      $("recipe-vscode").textContent = ".vscode/mcp.json\n" + JSON.stringify({ servers: { [ws]: {
        type: "http", url, headers: { Authorization: "Bearer " + token } } } }, null, 2);
      form.hidden = true;
      result.hidden = false;
      $("token-copy").focus();
    }
    $("token-copy").addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText($("token-secret").textContent);
        say("copy-status", "Copied to the clipboard.");
      } catch (_) {
        const range = document.createRange();
        range.selectNodeContents($("token-secret"));
        const sel = window.getSelection();
        sel.removeAllRanges();
        sel.addRange(range);
        say("copy-status", "Selected: press Ctrl+C (⌘C) to copy.");
      }
    });
    load();
  }

  // ---- Members tab ---------------------------------------------------------
  function membersTab() {
    const base = "/v1/workspaces/" + enc(ws) + "/members";
    const body = $("members-body");
    let rows = [];
    function render() {
      body.replaceChildren();
      for (const m of rows) {
        body.append(el("tr", { testid: "member-row-" + m.id, "data-id": m.id },
          el("td", {}, el("span", { class: "name", text: m.email }), el("br"), el("code", { class: "hint", text: m.id })),
          el("td", { text: m.name || "—" }),
          el("td", {}, el("span", { class: "status", testid: "member-role-" + m.id, text: m.role })),
          el("td", { text: when(m.created_at) }),
          el("td", {},
            el("button", { type: "button", class: "small secondary", testid: "member-link-" + m.id,
              "aria-label": "Make a sign-in link for " + m.email, onclick: () => invite(m.email, m.role) }, "Sign-in link"),
            " ",
            el("button", { type: "button", class: "danger small", testid: "member-remove-" + m.id,
              "aria-label": "Remove " + m.email, onclick: () => askRemove(m) }, "Remove"))));
      }
      if (!rows.length) say("members-msg", "No members yet. Add one above.");
    }
    async function load() {
      const r = await api("GET", base);
      if (r.status !== 200) { say("members-msg", errText(r), true); return; }
      rows = r.body.members;
      render();
    }
    function fields() {
      const email = $("member-email").value.trim();
      if (!email) { say("members-msg", "Enter an email address.", true); $("member-email").focus(); return null; }
      const req = { email, role: $("member-role").value };
      const name = $("member-name").value.trim();
      if (name) req.name = name;
      return req;
    }
    async function invite(email, role) {
      const r = await api("POST", base + "/invite", { email, role });
      if (r.status !== 201) { say("members-msg", errText(r), true); return; }
      $("invite-email").textContent = r.body.member.email;
      $("invite-link").textContent = r.body.url;
      $("invite-result").hidden = false;
      say("invite-copy-status", "");
      say("members-msg", r.body.created ? "Added " + r.body.member.email + "." : "");
      if (r.body.created) { rows.push(r.body.member); render(); }
      $("invite-copy").focus();
    }
    $("member-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const req = fields();
      if (!req) return;
      const r = await api("POST", base, req);
      if (r.status !== 201) { say("members-msg", errText(r), true); return; }
      rows.push(r.body);
      render();
      $("member-form").reset();
      say("members-msg", "Added " + r.body.email + ".");
    });
    $("member-invite").addEventListener("click", async () => {
      const req = fields();
      if (!req) return;
      await invite(req.email, req.role);
      $("member-form").reset();
    });
    $("invite-copy").addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText($("invite-link").textContent);
        say("invite-copy-status", "Copied to the clipboard.");
      } catch (_) {
        const range = document.createRange();
        range.selectNodeContents($("invite-link"));
        const sel = window.getSelection();
        sel.removeAllRanges();
        sel.addRange(range);
        say("invite-copy-status", "Selected: press Ctrl+C (⌘C) to copy.");
      }
    });
    const dialog = $("member-confirm-dialog");
    let pending = null;
    function askRemove(m) {
      pending = m;
      $("member-confirm-text").textContent = m.email + " (" + m.id + ") is removed: their tokens are revoked and their sessions end at once. This cannot be undone.";
      dialog.showModal();
      $("member-confirm-cancel").focus();
    }
    $("member-confirm-cancel").addEventListener("click", () => { pending = null; dialog.close(); });
    $("member-confirm").addEventListener("click", async () => {
      const m = pending;
      pending = null;
      dialog.close();
      if (!m) return;
      const r = await api("DELETE", base + "/" + enc(m.id));
      if (r.status !== 200) { say("members-msg", errText(r), true); return; }
      rows = rows.filter((x) => x.id !== m.id);
      render();
      say("members-msg", "Removed " + m.email + "; " + r.body.revoked_tokens + " token(s) revoked.");
    });
    load();
  }

  // ---- Connected apps tab (OAuth grants, docs/oauth.md) ---------------------
  function appsTab() {
    const base = "/v1/workspaces/" + enc(ws) + "/grants";
    const body = $("apps-body");
    let rows = [];
    function render() {
      body.replaceChildren();
      for (const g of rows) {
        const active = g.status === "active";
        body.append(el("tr", { testid: "app-row-" + g.id, "data-id": g.id },
          el("td", {}, el("span", { class: "name", testid: "app-name-" + g.id, text: g.client_name }), el("br"), el("code", { class: "hint", text: g.id })),
          el("td", { text: g.email || g.member_id }),
          el("td", { text: g.servers ? g.servers.join(", ") : "all" }),
          el("td", {}, el("span", { class: "status", testid: "app-status-" + g.id, text: g.status })),
          el("td", { text: g.last_used_at ? when(g.last_used_at) : "never" }),
          el("td", {}, active ? el("button", { type: "button", class: "danger small", testid: "app-revoke-" + g.id,
            "aria-label": "Disconnect " + g.client_name, onclick: () => ask(g) }, "Disconnect") : "")));
      }
      say("apps-msg", rows.length ? "" : "No connected apps. Apps appear here once someone allows one on the consent page.");
    }
    async function load() {
      const r = await api("GET", base);
      if (r.status !== 200) { say("apps-msg", errText(r), true); return; }
      rows = r.body.grants;
      render();
    }
    const dialog = $("app-confirm-dialog");
    let pending = null;
    function ask(g) {
      pending = g;
      $("app-confirm-text").textContent = g.client_name + " (" + g.id + ") loses access to this workspace: every token it holds is revoked at once.";
      dialog.showModal();
      $("app-confirm-cancel").focus();
    }
    $("app-confirm-cancel").addEventListener("click", () => { pending = null; dialog.close(); });
    $("app-confirm").addEventListener("click", async () => {
      const g = pending;
      pending = null;
      dialog.close();
      if (!g) return;
      const r = await api("DELETE", base + "/" + enc(g.id));
      if (r.status !== 200) { say("apps-msg", errText(r), true); return; }
      rows = rows.map((x) => (x.id === g.id ? r.body : x));
      render();
      say("apps-msg", "Disconnected " + g.client_name + ".");
    });
    load();
  }

  // ---- Usage tab -----------------------------------------------------------
  const RANGES = { "1h": [3600, "minute"], "24h": [86400, "hour"], "7d": [604800, "hour"], "30d": [2592000, "day"] };

  function usageTab() {
    async function fetchUsage(group) {
      const [secs, bucket] = RANGES[$("usage-range").value] || RANGES["24h"];
      const to = new Date();
      const from = new Date(to.getTime() - secs * 1000);
      return api("GET", "/v1/workspaces/" + enc(ws) + "/usage?from=" + enc(from.toISOString()) + "&to=" + enc(to.toISOString()) +
        "&bucket=" + bucket + "&group_by=" + group);
    }
    function totals(buckets) {
      const by = new Map();
      for (const b of buckets) {
        const t = by.get(b.key) || { key: b.key, requests: 0, errors: 0, rate_limited: 0 };
        t.requests += b.requests; t.errors += b.errors; t.rate_limited += b.rate_limited;
        by.set(b.key, t);
      }
      return Array.from(by.values()).sort((a, b) => b.requests - a.requests);
    }
    function table(id, list, empty) {
      const tb = $(id);
      tb.replaceChildren();
      if (!list.length) { tb.append(el("tr", {}, el("td", { colspan: "4", text: empty || "No requests in this period." }))); return; }
      for (const t of list) {
        tb.append(el("tr", { testid: "usage-row" }, el("th", { scope: "row", text: t.key || "(none)" }),
          el("td", { text: String(t.requests) }), el("td", { text: String(t.errors) }), el("td", { text: String(t.rate_limited) })));
      }
    }
    // Stacked bars per time bucket: successful requests solid, errors
    // hatched, 429s dotted; each bar has a <title>, and the legend and the
    // tables below carry the same figures, so nothing depends on colour.
    function chart(buckets, group, only) {
      const box = $("usage-chart");
      box.replaceChildren();
      const starts = Array.from(new Set(buckets.map((b) => b.start))).sort();
      const keys = totals(buckets).map((t) => t.key);
      const W = 720, H = 240, L = 48, B = 28, T = 10;
      const per = new Map(starts.map((s) => [s, { ok: 0, errors: 0, rate_limited: 0, byKey: {} }]));
      for (const b of buckets) {
        const p = per.get(b.start);
        const ok = Math.max(0, b.requests - b.errors - b.rate_limited);
        p.ok += ok; p.errors += b.errors; p.rate_limited += b.rate_limited;
        p.byKey[b.key] = (p.byKey[b.key] || 0) + b.requests;
      }
      const max = Math.max(1, ...Array.from(per.values()).map((p) => p.ok + p.errors + p.rate_limited));
      const total = buckets.reduce((n, b) => n + b.requests, 0);
      const s = svg("svg", { viewBox: "0 0 " + W + " " + H, role: "img", "aria-labelledby": "usage-svg-title usage-svg-desc", class: "chart" });
      s.append(svg("title", { id: "usage-svg-title" }, document.createTextNode("Requests over time" + (only ? " of " + group + " " + only : ", all " + group + "s"))));
      s.append(svg("desc", { id: "usage-svg-desc" }, document.createTextNode(total + " requests in " + starts.length + " buckets; the tables below list the figures.")));
      const defs = svg("defs");
      defs.append(svg("pattern", { id: "hatch", width: "6", height: "6", patternUnits: "userSpaceOnUse", patternTransform: "rotate(45)" },
        svg("rect", { width: "6", height: "6", class: "err-bg" }), svg("line", { x1: "0", y1: "0", x2: "0", y2: "6", class: "err-line" })));
      defs.append(svg("pattern", { id: "dots", width: "5", height: "5", patternUnits: "userSpaceOnUse" },
        svg("rect", { width: "5", height: "5", class: "rl-bg" }), svg("circle", { cx: "2.5", cy: "2.5", r: "1.2", class: "rl-dot" })));
      s.append(defs);
      s.append(svg("line", { x1: L, y1: T, x2: L, y2: H - B, class: "axis" }));
      s.append(svg("line", { x1: L, y1: H - B, x2: W, y2: H - B, class: "axis" }));
      s.append(svg("text", { x: L - 6, y: T + 8, "text-anchor": "end", class: "tick" }, document.createTextNode(String(max))));
      s.append(svg("text", { x: L - 6, y: H - B, "text-anchor": "end", class: "tick" }, document.createTextNode("0")));
      const n = Math.max(1, starts.length);
      const bw = (W - L - 8) / n;
      starts.forEach((st, i) => {
        const p = per.get(st);
        let y = H - B;
        const x = L + 4 + i * bw;
        const g = svg("g", { class: "bar" });
        const tops = Object.entries(p.byKey).sort((a, b) => b[1] - a[1]).slice(0, 3).map(([k, v]) => k + ": " + v).join(", ");
        g.append(svg("title", {}, document.createTextNode(new Date(st).toLocaleString() + " — " + (p.ok + p.errors + p.rate_limited) +
          " requests (" + p.errors + " errors, " + p.rate_limited + " rate-limited)" + (tops ? "; " + tops : ""))));
        for (const [v, cls, fill] of [[p.ok, "ok", null], [p.errors, "errors", "url(#hatch)"], [p.rate_limited, "limited", "url(#dots)"]]) {
          if (!v) continue;
          const h = (v / max) * (H - B - T);
          y -= h;
          g.append(svg("rect", { x: x.toFixed(1), y: y.toFixed(1), width: Math.max(1, bw - 2).toFixed(1), height: h.toFixed(1), class: "seg-" + cls, fill }));
        }
        s.append(g);
        if (n <= 12 || i % Math.ceil(n / 8) === 0) {
          const d = new Date(st);
          s.append(svg("text", { x: (x + bw / 2).toFixed(1), y: H - 8, "text-anchor": "middle", class: "tick" },
            document.createTextNode(RANGES[$("usage-range").value][1] === "day" ? d.toLocaleDateString() : d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }))));
        }
      });
      box.append(s);
      const legend = el("ul", { class: "legend" },
        el("li", {}, el("span", { class: "swatch seg-ok" }), " successful"),
        el("li", {}, el("span", { class: "swatch swatch-err" }), " errors (hatched)"),
        el("li", {}, el("span", { class: "swatch swatch-rl" }), " rate-limited, 429 (dotted)"));
      box.append(legend);
      $("usage-caption").textContent = total + " requests by " + keys.length + " " + group + (keys.length === 1 ? "" : "s") +
        (keys.length ? " (most: " + keys.slice(0, 3).join(", ") + ")" : "") + ".";
    }
    let lastBuckets = [];
    // A bucket's key is a string, "other" (folded) or null (does not
    // apply, e.g. a request refused before any tool was known): null gets
    // an option value no real key can have.
    const NONE = "\u0000none";
    const optionOf = (key) => (key === null ? NONE : key);
    function draw() {
      const key = $("usage-key").value;
      const label = key === NONE ? "(none)" : key;
      chart(key ? lastBuckets.filter((b) => optionOf(b.key) === key) : lastBuckets, $("usage-group").value, label);
    }
    async function load() {
      say("usage-msg", "Loading…");
      const group = $("usage-group").value;
      const r = await fetchUsage(group);
      if (r.status !== 200) { say("usage-msg", errText(r), true); return; }
      // One series at a time (a token, member, tool or server), or all.
      const keySel = $("usage-key");
      const chosen = keySel.value;
      keySel.replaceChildren(el("option", { value: "", text: "all " + group + "s" }),
        ...totals(r.body.buckets).map((t) => el("option", { value: optionOf(t.key), text: t.key === null ? "(none)" : t.key })));
      keySel.value = totals(r.body.buckets).some((t) => optionOf(t.key) === chosen) ? chosen : "";
      lastBuckets = r.body.buckets;
      draw();
      const [m, t] = await Promise.all([fetchUsage("member"), fetchUsage("tool")]);
      table("usage-members", m.status === 200 ? totals(m.body.buckets) : []);
      table("usage-tools", t.status === 200 ? totals(t.body.buckets).slice(0, 10) : []);
      say("usage-msg", r.body.folded ? r.body.folded + " less active series are folded into “other”." : "");
    }
    $("usage-range").addEventListener("change", load);
    $("usage-group").addEventListener("change", () => { $("usage-key").value = ""; load(); });
    $("usage-key").addEventListener("change", draw);
    $("usage-controls").addEventListener("submit", (e) => { e.preventDefault(); load(); });
    load();
  }

  // ---- Audit tab -----------------------------------------------------------
  const AUDIT_FIELDS = ["id", "at", "type", "actor", "workspace", "token_id", "member_id", "server", "tool", "method", "status", "duration_ms", "request_id"];

  function auditTab() {
    let events = [];
    let next = null;
    function query(cursor) {
      const q = new URLSearchParams();
      const v = (id) => $(id).value.trim();
      if (v("audit-type")) q.set("type", v("audit-type"));
      if (v("audit-token")) q.set("token_id", v("audit-token"));
      if (v("audit-member")) q.set("member_id", v("audit-member"));
      if (v("audit-from")) q.set("from", new Date(v("audit-from")).toISOString());
      if (v("audit-to")) q.set("to", new Date(v("audit-to")).toISOString());
      q.set("page_size", "100");
      if (cursor) q.set("cursor", cursor);
      return "/v1/workspaces/" + enc(ws) + "/audit?" + q.toString();
    }
    function row(e) {
      const c = (v) => el("td", { text: v === null || v === undefined || v === "" ? "—" : String(v) });
      return el("tr", { testid: "audit-row", "data-type": e.type },
        el("td", { title: e.at, text: when(e.at) }), el("td", {}, el("code", { text: e.type })), c(e.actor), c(e.token_id),
        c(e.member_id), c(e.server), c(e.tool), c(e.status), c(e.duration_ms === null || e.duration_ms === undefined ? null : e.duration_ms + " ms"), c(e.request_id));
    }
    async function load(more) {
      const r = await api("GET", query(more ? next : null));
      if (r.status !== 200) { say("audit-msg", errText(r), true); return; }
      if (!more) { events = []; $("audit-body").replaceChildren(); }
      events = events.concat(r.body.events);
      for (const e of r.body.events) $("audit-body").append(row(e));
      next = r.body.next_cursor || null;
      $("audit-more").hidden = !next;
      say("audit-msg", events.length ? events.length + " events shown." : "No events match.");
    }
    // The writer's counters (instance-wide): events dropped because the
    // queue was full are gaps in the trail, and the issue asks that they
    // be shown, not only counted in /metrics.
    async function stats() {
      const r = await api("GET", "/v1/audit/stats");
      const p = $("audit-stats");
      if (r.status !== 200) { p.textContent = "Audit writer counters unavailable: " + errText(r); p.classList.remove("warning"); return; }
      const s = r.body;
      p.dataset.dropped = String(s.dropped);
      p.textContent = "This gateway instance: " + s.written + " events written, " + s.dropped + " dropped (queue full)" +
        ", " + s.write_errors + " failed writes; " + s.queued + " of " + s.queue_capacity + " queued. Tool calls are " +
        (s.tool_calls ? "" : "not ") + "recorded." + (s.dropped || s.write_errors ? " The trail has gaps." : "");
      p.classList.toggle("warning", !!(s.dropped || s.write_errors));
    }
    $("audit-filters").addEventListener("submit", (e) => { e.preventDefault(); load(false); stats(); });
    $("audit-more").addEventListener("click", () => load(true));
    const stamp = () => new Date().toISOString().replace(/[:.]/g, "-");
    $("audit-export-json").addEventListener("click", () =>
      download("audit-" + ws + "-" + stamp() + ".json", "application/json", JSON.stringify(events, null, 2)));
    $("audit-export-csv").addEventListener("click", () => {
      const q = (v) => {
        let s = v === null || v === undefined ? "" : String(v);
        if (/^[=+\-@]/.test(s)) s = "'" + s; // no formula injection in spreadsheets
        return /[",\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
      };
      const lines = [AUDIT_FIELDS.join(",")].concat(events.map((e) => AUDIT_FIELDS.map((f) => q(e[f])).join(",")));
      download("audit-" + ws + "-" + stamp() + ".csv", "text/csv", lines.join("\n") + "\n");
    });
    load(false);
    stats();
  }

  // ---- Servers tab ---------------------------------------------------------
  async function serversTab() {
    const r = await api("GET", "/v1/workspaces/" + enc(ws) + "/servers");
    if (r.status !== 200) { say("servers-msg", errText(r), true); return; }
    const tb = $("servers-body");
    tb.replaceChildren();
    for (const s of r.body.servers) {
      tb.append(el("tr", { testid: "server-row-" + s.name },
        el("th", { scope: "row", text: s.name }), el("td", {}, el("code", { text: s.url })),
        el("td", {}, el("span", { class: "status health-" + s.health, testid: "server-health-" + s.name, text: s.health })),
        el("td", { testid: "server-tools-" + s.name, text: s.tools === null || s.tools === undefined ? "not known" : String(s.tools) }),
        el("td", { title: s.since || "", text: s.since ? when(s.since) : "—" }),
        el("td", { text: s.timeout_ms / 1000 + " s" })));
    }
  }

  if (data.page === "me") tokensTab();
  if (data.page === "workspace") {
    if (data.tab === "tokens") tokensTab();
    else if (data.tab === "members") membersTab();
    else if (data.tab === "usage") usageTab();
    else if (data.tab === "audit") auditTab();
    else if (data.tab === "servers") serversTab();
    else if (data.tab === "apps") appsTab();
  }
})();
