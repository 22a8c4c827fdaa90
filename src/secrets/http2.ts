// HTTP/2 on an intercepted connection: the guest's HTTP/2 session is terminated here and each
// stream is re-issued on an HTTP/2 session to the upstream, with the same rules as HTTP/1: every
// stream's :authority (and Host, if sent) must equal the TLS server name before a secret goes in,
// and a placeholder bound elsewhere blocks that stream with 403.

import * as http2 from "node:http2";
import type { TLSSocket } from "node:tls";
import { hostMatches, MAX_LOGGED_REQUESTS, type RequestLog, type Stop, substituteHeader } from "./http1.ts";
import { ResponseScrubber } from "./scrub.ts";
import { type Decide, hostAllowed, type Secret, type SecretSet, StreamSubstituter, substitute } from "./substitute.ts";

export interface Http2Context {
  serverName: string;
  port: number;
  secrets: SecretSet;
  destPinned: boolean;
  onDisallowed?: "block" | "pass";
  scrub: boolean;
  log: (line: string) => void;
  /** Called for each blocked stream (the session goes on). */
  onStop: (s: Stop) => void;
  requests: RequestLog[];
}

// RFC 9113 8.2.2: connection-specific fields are malformed in HTTP/2; never forward them.
const HOP = new Set(["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "http2-settings", "te"]);
const MAX_STREAMS = 256;

/** Relays one guest HTTP/2 session (over `down`) to the upstream (`up`, ALPN h2) until either ends. */
export function relayHttp2(down: TLSSocket, up: TLSSocket, ctx: Http2Context): Promise<void> {
  return new Promise((resolve) => {
    const upstream = http2.connect(`https://${ctx.serverName}:${ctx.port}`, { createConnection: () => up });
    const server = http2.createServer({ settings: { maxConcurrentStreams: MAX_STREAMS } });
    let finished = false;
    const finish = () => {
      if (finished) return;
      finished = true;
      upstream.destroy();
      down.destroy();
      server.close();
      resolve();
    };
    upstream.on("error", (e) => ctx.log(`h2 ${ctx.serverName}: upstream session: ${e.message}`));
    upstream.on("close", finish);
    server.on("session", (session) => {
      session.on("close", finish);
      session.on("error", () => finish());
    });
    server.on("stream", (stream, headers) => handleStream(stream as http2.ServerHttp2Stream, headers, upstream, ctx));
    down.on("close", finish);
    down.on("error", () => finish());
    // The session starts once the guest's handshake is done (ALPN settled).
    const start = () => server.emit("connection", down);
    if ((down as TLSSocket & { _secureEstablished?: boolean })._secureEstablished) start();
    else down.once("secure", start);
  });
}

function handleStream(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, upstream: http2.ClientHttp2Session, ctx: Http2Context) {
  stream.on("error", () => {});
  const authority = String(headers[":authority"] ?? headers.host ?? "");
  const method = String(headers[":method"] ?? "");
  const hostOk = authority !== "" && hostMatches(authority, ctx.serverName, ctx.port) && (headers.host === undefined || hostMatches(String(headers.host), ctx.serverName, ctx.port));
  const log: RequestLog = { method, host: authority.slice(0, 255), substituted: [] };
  if (ctx.requests.length >= MAX_LOGGED_REQUESTS) ctx.requests.splice(0, MAX_LOGGED_REQUESTS / 2);
  ctx.requests.push(log);
  const decide: Decide = (s: Secret) => {
    let reason: string | undefined;
    if (!hostAllowed(s.allow, ctx.serverName)) reason = `secret ${s.name} is not allowed for host ${ctx.serverName}`;
    else if (!hostOk) reason = `secret ${s.name}: request :authority ${JSON.stringify(authority.slice(0, 255))} does not match TLS server name ${ctx.serverName}`;
    else if (!ctx.destPinned) reason = `secret ${s.name}: destination address was not resolved by this sandbox for ${ctx.serverName}`;
    return reason ? { ok: false, reason, leave: ctx.onDisallowed === "pass" } : { ok: true };
  };
  const block = (reason: string) => {
    const s: Stop = { kind: "block", status: 403, reason };
    ctx.onStop(s);
    ctx.log(`h2 ${ctx.serverName}: blocked: ${reason}`);
    if (!stream.headersSent && !stream.destroyed) {
      stream.respond({ ":status": 403, "content-type": "text/plain", "x-msb-blocked": "block" });
      stream.end(`msb: blocked: ${reason}\n`);
    } else stream.close(http2.constants.NGHTTP2_REFUSED_STREAM);
  };
  if (method === "CONNECT") {
    // A tunnel inside an intercepted connection would carry bytes no rule here can read.
    stream.respond({ ":status": 405, "content-type": "text/plain", "x-msb-blocked": "refuse" });
    stream.end("msb: refused: CONNECT inside an intercepted TLS connection is not supported\n");
    return;
  }
  const use = (names: string[]) => {
    for (const n of names) if (!log.substituted.includes(n)) log.substituted.push(n);
  };

  const out: http2.OutgoingHttpHeaders = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined || HOP.has(name)) continue;
    if (name === ":path") {
      const r = substitute(String(value), ctx.secrets, decide, "percent", (s) => !!s.query);
      if (r.blocked) return block(r.blocked);
      use(r.used);
      out[name] = r.text;
      continue;
    }
    if (name.startsWith(":") || name === "host") {
      out[name] = value;
      continue;
    }
    const values = Array.isArray(value) ? value : [value];
    const done: string[] = [];
    for (const v of values) {
      const r = substituteHeader(name, v, ctx.secrets, decide);
      if (r.blocked) return block(r.blocked);
      use(r.used);
      done.push(r.text);
    }
    out[name] = Array.isArray(value) ? done : done[0];
  }
  const bodySub = ctx.secrets.anyBody ? new StreamSubstituter(ctx.secrets, decide, (s) => !!s.body) : undefined;
  // A body that may change length cannot keep its declared length.
  if (bodySub) delete out["content-length"];
  if (log.substituted.length) ctx.log(`h2 ${ctx.serverName} ${method} host=${log.host} secrets=${log.substituted.join(",")}`);

  let req: http2.ClientHttp2Stream;
  try {
    req = upstream.request(out, { endStream: stream.readableEnded && !bodySub });
  } catch (e) {
    stream.respond({ ":status": 502, "content-type": "text/plain" });
    stream.end(`msb: upstream ${ctx.serverName}: ${(e as Error).message}\n`);
    return;
  }
  req.on("error", (e) => {
    if (!stream.headersSent && !stream.destroyed) {
      stream.respond({ ":status": 502, "content-type": "text/plain" });
      stream.end(`msb: upstream ${ctx.serverName}: ${e.message}\n`);
    } else if (!stream.destroyed) stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
  });
  stream.on("close", () => {
    if (!req.destroyed) req.close(http2.constants.NGHTTP2_CANCEL);
  });

  // Request body, guest → upstream.
  stream.on("data", (d: Buffer) => {
    let chunk: Buffer = d;
    if (bodySub) {
      chunk = Buffer.from(bodySub.push(d.toString("latin1")), "latin1");
      if (bodySub.blocked) {
        req.close(http2.constants.NGHTTP2_CANCEL);
        return block(bodySub.blocked);
      }
    }
    if (chunk.length && !req.write(chunk)) {
      stream.pause();
      req.once("drain", () => stream.resume());
    }
  });
  stream.on("end", () => {
    if (bodySub) {
      const rest = bodySub.end();
      use([...bodySub.used]);
      if (bodySub.blocked) {
        req.close(http2.constants.NGHTTP2_CANCEL);
        return block(bodySub.blocked);
      }
      if (rest.length) req.write(Buffer.from(rest, "latin1"));
    }
    if (!req.writableEnded) req.end();
  });

  // Response, upstream → guest.
  req.on("response", (h) => {
    const resp: http2.OutgoingHttpHeaders = {};
    for (const [n, v] of Object.entries(h)) if (v !== undefined && !HOP.has(n)) resp[n] = v;
    if (stream.destroyed) return;
    // Trailers (gRPC's status lives there) are passed on once the body is done.
    stream.respond(resp, { waitForTrailers: true });
  });
  let trailers: http2.IncomingHttpHeaders = {};
  req.on("trailers", (t) => {
    trailers = t;
  });
  stream.on("wantTrailers", () => {
    const t: http2.OutgoingHttpHeaders = {};
    for (const [n, v] of Object.entries(trailers)) if (v !== undefined && !n.startsWith(":") && !HOP.has(n)) t[n] = v;
    stream.sendTrailers(t);
  });
  const scrub = ctx.scrub
    ? new ResponseScrubber(ctx.secrets, (b) => {
        if (!stream.destroyed && !stream.write(b)) {
          req.pause();
          stream.once("drain", () => req.resume());
        }
      })
    : undefined;
  req.on("data", (d: Buffer) => {
    if (scrub) scrub.push(d);
    else if (!stream.destroyed && !stream.write(d)) {
      req.pause();
      stream.once("drain", () => req.resume());
    }
  });
  req.on("end", () => {
    scrub?.end();
    if (!stream.destroyed) stream.end();
  });
}
