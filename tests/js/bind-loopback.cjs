// Preload (node --require ./bind-loopback.cjs ...) that makes every TCP listener which
// was given a port but no host bind to 127.0.0.1 instead of all interfaces.
// @modelcontextprotocol/server-everything calls app.listen(PORT) with no host, and the
// tests must not expose it (its get-env tool prints its environment) beyond loopback.
"use strict";
const net = require("node:net");
const origListen = net.Server.prototype.listen;
const isPort = (v) =>
  typeof v === "number" || (typeof v === "string" && v !== "" && /^\d+$/.test(v));
net.Server.prototype.listen = function (...args) {
  if (args.length > 0 && isPort(args[0]) && typeof args[1] !== "string") {
    args.splice(1, 0, "127.0.0.1");
  } else if (args.length > 0 && args[0] && typeof args[0] === "object" && !Array.isArray(args[0])
             && args[0].port !== undefined && args[0].host === undefined && args[0].path === undefined) {
    args[0] = { ...args[0], host: "127.0.0.1" };
  }
  return origListen.apply(this, args);
};
