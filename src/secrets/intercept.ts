// The TLS-terminating relay for one guest TCP flow: reads the ClientHello's server name, either
// relays the flow untouched (bypass) or answers the guest with a leaf certificate from the msb
// CA, opens its own verified TLS connection upstream, and passes the guest's requests through
// the HTTP/1 rewriter that puts secret values in. The netstack calls interceptTls per flow.

import { readFileSync } from "node:fs";
import { isIP } from "node:net";
import * as net from "node:net";
import { Duplex } from "node:stream";
import * as tls from "node:tls";
import { parseClientHello, MAX_CLIENT_HELLO_LEN } from "./clienthello.ts";
import { Http1RequestRewriter, type RequestLog, type Stop } from "./http1.ts";
import type { LeafIssuer } from "./leaf.ts";
import { hostAllowed, type SecretSet } from "./substitute.ts";
import { relayHttp2 } from "./http2.ts";
import { ResponseScrubber } from "./scrub.ts";

export interface InterceptPolicy {
  secrets: SecretSet;
  /** Leaf certificates for the guest, from `new LeafIssuer(await loadOrCreateCa())`. */
  issuer: LeafIssuer;
  /** Server names ("host" or "*.domain") relayed opaquely: no interception, no substitution. */
  bypass?: readonly string[];
  /** PEM CA certificates trusted upstream in addition to the host's store (see `upstreamTrust`). */
  extraCa?: readonly string[];
  /**
   * DNS pinning: true when `ip` was returned by this sandbox's resolver for `name`. Without it no
   * destination counts as pinned, so no secret is ever substituted.
   */
  resolvedFor?: (name: string, ip: string) => boolean;
  /** What a placeholder toward a host it is not allowed for does: "block" (default) or "pass". */
  onDisallowed?: "block" | "pass";
  /** Mask secret values the upstream sends back (an echo endpoint) before the guest sees them. Default true. */
  scrubResponses?: boolean;
  /** One line per event (flow mode, each request's substituted names, blocks). Never holds a value. */
  log?: (line: string) => void;
  /** How long the guest may take to send its ClientHello. */
  helloTimeoutMs?: number;
  /** Relay HTTP/2 when the guest offers it and the upstream speaks it (default true); false pins HTTP/1.1. */
  http2?: boolean;
  /** How long the upstream TLS handshake may take. */
  upstreamTimeoutMs?: number;
}

export interface Destination {
  ip: string;
  port: number;
}

export interface InterceptResult {
  mode: "intercepted" | "bypassed" | "refused";
  serverName?: string;
  /** Requests seen (the most recent 512 of a flow), with the names (never values) of secrets put in. */
  requests: RequestLog[];
  /** Why the relay stopped a request (block/refuse), if it did. */
  stop?: Stop;
  /** What went wrong with the flow itself (bad ClientHello, upstream failure). */
  error?: string;
}

/** Where the host keeps its CA bundle (OpenSSL's SSL_CERT_FILE first, then the usual distro paths). */
const HOST_BUNDLES = ["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/cert.pem"];

/** The host's own CA bundle as PEM blocks (CAs an administrator installed, e.g. a corporate root); empty if none. */
export function hostTrustStore(env: Record<string, string | undefined> = process.env): string[] {
  for (const path of [env.SSL_CERT_FILE, ...HOST_BUNDLES]) {
    if (!path) continue;
    let text: string;
    try {
      text = readFileSync(path, "utf8");
    } catch {
      continue;
    }
    return text.match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g) ?? [];
  }
  return [];
}

const trustByPolicy = new WeakMap<InterceptPolicy, tls.SecureContext>();

/**
 * What upstream certificates are verified against: the runtime's bundled roots, the host's
 * bundle and the policy's extra CAs. Built once per policy: a secure context parses every
 * certificate (~8 ms for the bundled roots alone), which per connection would be paid on each
 * new upstream connection.
 */
export function upstreamTrust(policy: InterceptPolicy): tls.SecureContext {
  let context = trustByPolicy.get(policy);
  if (!context) {
    context = tls.createSecureContext({ ca: [...tls.rootCertificates, ...hostTrustStore(), ...(policy.extraCa ?? [])] });
    trustByPolicy.set(policy, context);
  }
  return context;
}

const HELLO_TIMEOUT_MS = 10_000;
const UPSTREAM_TIMEOUT_MS = 15_000;
/** After the upstream closes, how long the guest side may take to read what is left. */
const CLOSE_GRACE_MS = 5_000;
/** Guest bytes held while the upstream handshake is still running. */
const PENDING_MAX = 1024 * 1024;

/**
 * Handles one guest TCP flow to `dest` until both sides are closed. Never throws for anything
 * the guest or upstream does; the outcome is in the result (and in `policy.log`).
 */
export async function interceptTls(guest: Duplex, dest: Destination, policy: InterceptPolicy): Promise<InterceptResult> {
  const log = policy.log ?? (() => {});
  const where = `${dest.ip}:${dest.port}`;
  const first = await readHello(guest, policy.helloTimeoutMs ?? HELLO_TIMEOUT_MS);
  if ("error" in first) {
    log(`tls ${where}: refused: ${first.error}`);
    guest.destroy();
    return { mode: "refused", requests: [], error: first.error };
  }
  // From here until the relay has its own handlers, a guest reset must not become an unhandled
  // 'error' event (which would take the supervisor down); the close that follows is handled.
  guest.on("error", () => {});
  const serverName = first.hello.serverName ?? dest.ip;
  if (policy.bypass && hostAllowed(policy.bypass, serverName)) {
    log(`tls ${where} ${serverName}: bypass (relayed opaquely)`);
    const error = await relayOpaque(guest, first.bytes, dest);
    return { mode: "bypassed", serverName, requests: [], error };
  }
  let leaf;
  try {
    leaf = await policy.issuer.get(serverName);
  } catch (e) {
    const error = `no certificate for server name: ${(e as Error).message}`;
    log(`tls ${where}: refused: ${error}`);
    guest.destroy();
    return { mode: "refused", serverName, requests: [], error };
  }
  const destPinned = !!first.hello.serverName && !isIP(serverName) && !!policy.resolvedFor?.(serverName, dest.ip);
  const rewriter = new Http1RequestRewriter({ serverName, port: dest.port, secrets: policy.secrets, destPinned, onDisallowed: policy.onDisallowed });
  const result: InterceptResult = { mode: "intercepted", serverName, requests: rewriter.log };
  log(`tls ${where} ${serverName}: intercepted${destPinned ? "" : " (address not pinned to this name: no substitution)"}`);

  const wantH2 = policy.http2 !== false && first.hello.alpn.includes("h2");
  const up = tls.connect({
    host: dest.ip,
    port: dest.port,
    servername: isIP(serverName) ? undefined : serverName,
    secureContext: upstreamTrust(policy),
    ALPNProtocols: wantH2 ? ["h2", "http/1.1"] : ["http/1.1"],
  });
  up.on("error", () => {}); // reported through the handlers below; never unhandled
  // Handshakes and request heads are small writes: Nagle would hold them for delayed ACKs.
  up.setNoDelay(true);
  up.setTimeout(policy.upstreamTimeoutMs ?? UPSTREAM_TIMEOUT_MS, () => up.destroy(new Error("upstream TLS handshake timed out")));
  // The guest may only be offered a protocol the upstream speaks: with h2 on the table, the
  // upstream handshake goes first. Otherwise both handshakes run at once.
  let upEarly: Error | "ok" | undefined;
  if (wantH2) {
    upEarly = await new Promise<Error | "ok">((r) => {
      up.once("secureConnect", () => r("ok"));
      up.once("error", (e) => r(e));
    });
  }
  const h2 = upEarly === "ok" && up.alpnProtocol === "h2";
  const down = new tls.TLSSocket(replay(guest, first.bytes), { isServer: true, secureContext: leaf.context, ALPNProtocols: h2 ? ["h2"] : ["http/1.1"] });
  if (h2) {
    up.setTimeout(0);
    log(`tls ${where} ${serverName}: HTTP/2`);
    down.on("error", (e) => {
      if (!result.error) result.error = `guest TLS: ${e.message}`;
    });
    await relayHttp2(down, up, {
      serverName,
      port: dest.port,
      secrets: policy.secrets,
      destPinned,
      onDisallowed: policy.onDisallowed,
      scrub: policy.scrubResponses !== false,
      log,
      onStop: (s) => (result.stop ??= s),
      requests: result.requests,
    });
    return result;
  }
  const scrub = policy.scrubResponses === false ? undefined : new ResponseScrubber(policy.secrets, (b) => writeDown(b));

  let downSecure = false;
  down.once("secure", () => (downSecure = true));
  let upReady = false;
  let upError: string | undefined;
  let stopped = false;
  const pendingUp: Uint8Array[] = [];
  let logged = 0;

  // Backpressure both ways: a side that cannot take more pauses the other until it drains.
  let downFull = false;
  let upFull = false;
  let pendingBytes = 0;
  function writeDown(b: Uint8Array) {
    if (!down.destroyed && !stopped && !down.write(b) && !downFull) {
      downFull = true;
      up.pause();
      down.once("drain", () => {
        downFull = false;
        up.resume();
      });
    }
  }
  function flushLogs() {
    for (; logged < rewriter.dropped + rewriter.log.length; logged++) {
      const r = rewriter.log[logged - rewriter.dropped];
      if (!r) continue; // let go before it could be logged (hundreds pipelined in one read)
      log(`https ${serverName} ${r.method} host=${r.host}${r.substituted.length ? ` secrets=${r.substituted.join(",")}` : ""}`);
    }
  }
  function stop(s: Stop) {
    stopped = true;
    result.stop = s;
    flushLogs();
    log(`https ${serverName}: ${s.kind === "block" ? "blocked" : "refused"}: ${s.reason}`);
    up.destroy();
    const body = `msb: ${s.kind === "block" ? "blocked" : "refused"}: ${s.reason}\n`;
    const text = s.status === 403 ? "Forbidden" : "Bad Request";
    down.end(`HTTP/1.1 ${s.status} ${text}\r\nContent-Type: text/plain\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\nX-Msb-Blocked: ${s.kind}\r\n\r\n${body}`);
  }
  function toUp(bufs: Uint8Array[]) {
    for (const b of bufs) {
      if (!upReady) {
        // Until the upstream handshake is done, hold what the guest sends, within a bound.
        pendingUp.push(b);
        pendingBytes += b.byteLength;
        if (pendingBytes > PENDING_MAX) down.pause();
      } else if (!up.write(b) && !upFull) {
        upFull = true;
        down.pause();
        up.once("drain", () => {
          upFull = false;
          down.resume();
        });
      }
    }
  }

  down.on("data", (d: Buffer) => {
    if (stopped) return;
    let r: ReturnType<Http1RequestRewriter["push"]>;
    try {
      r = rewriter.push(d);
    } catch (e) {
      // A bug here must cost this flow, never the supervisor.
      return stop({ kind: "refuse", status: 400, reason: `internal error reading the request: ${(e as Error).message}` });
    }
    if (r.stop) return stop(r.stop);
    flushLogs();
    toUp(r.out);
  });
  down.on("end", () => {
    if (stopped) return;
    const r = rewriter.end();
    if (r.stop) return stop(r.stop);
    toUp(r.out);
    if (upReady) up.end();
    else pendingUp.push(new Uint8Array(0)); // marker: end once connected
  });
  const onUpSecure = () => {
    up.setTimeout(0);
    upReady = true;
    let ended = false;
    for (const b of pendingUp.splice(0)) {
      if (b.length === 0) ended = true;
      else up.write(b);
    }
    if (ended) up.end();
    pendingBytes = 0;
    if (!upFull) down.resume();
  };
  up.on("data", (d: Buffer) => {
    if (stopped) return;
    if (scrub) scrub.push(d);
    else writeDown(d);
  });
  up.on("end", () => {
    if (stopped) return;
    scrub?.end();
    down.end();
  });
  const onUpError = (e: Error) => {
    if (stopped) return;
    upError = `upstream ${serverName} (${where}): ${e.message}`;
    log(`tls ${where} ${serverName}: ${upError}`);
    if (!upReady && !down.destroyed) {
      // The guest gets an answer it can show instead of a bare reset.
      const body = `msb: ${upError}\n`;
      stopped = true;
      const send = () => down.end(`HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
      if (downSecure) send();
      else down.once("secure", send);
      setTimeout(() => down.destroy(), 5000).unref();
    } else down.destroy();
  };
  up.on("error", onUpError);
  if (upEarly === undefined) up.once("secureConnect", onUpSecure);
  else if (upEarly === "ok") onUpSecure();
  else onUpError(upEarly);
  down.on("error", (e) => {
    if (!result.error) result.error = `guest TLS: ${e.message}`;
    up.destroy();
  });
  up.on("close", () => {
    if (!stopped && !down.destroyed && !down.writableEnded) down.end();
    // A guest that never closes must not keep the flow alive once the upstream is gone.
    setTimeout(() => down.destroy(), CLOSE_GRACE_MS).unref();
  });
  // Once the guest side is fully closed nothing more can be delivered: drop the upstream.
  down.once("close", () => up.destroy());

  await Promise.all([closed(down), closed(up)]);
  flushLogs();
  if (upError && !result.error) result.error = upError;
  return result;
}

function closed(s: Duplex): Promise<void> {
  return s.destroyed && s.closed ? Promise.resolve() : new Promise((r) => s.once("close", () => r()));
}

/** Collects the guest's first bytes until a whole ClientHello (or a reason to give up) is there. */
function readHello(guest: Duplex, timeoutMs: number): Promise<{ hello: NonNullable<ReturnType<typeof parseOk>>; bytes: Buffer } | { error: string }> {
  return new Promise((resolve) => {
    let buf = Buffer.alloc(0);
    const done = (v: Parameters<typeof resolve>[0]) => {
      clearTimeout(timer);
      guest.off("data", onData);
      guest.off("end", onEnd);
      guest.off("error", onErr);
      guest.pause();
      resolve(v);
    };
    const onData = (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      const r = parseClientHello(buf);
      if (r.status === "ok") done({ hello: r.hello, bytes: buf });
      else if (r.status === "invalid") done({ error: r.reason });
      else if (buf.length > MAX_CLIENT_HELLO_LEN + 4096) done({ error: "ClientHello too large" });
    };
    const onEnd = () => done({ error: "guest closed the connection before a complete ClientHello" });
    const onErr = (e: Error) => done({ error: `guest connection failed: ${e.message}` });
    const timer = setTimeout(() => done({ error: `no ClientHello within ${timeoutMs} ms` }), timeoutMs);
    guest.on("data", onData);
    guest.once("end", onEnd);
    guest.once("error", onErr);
    guest.resume();
  });
}

function parseOk(b: Uint8Array) {
  const r = parseClientHello(b);
  return r.status === "ok" ? r.hello : undefined;
}

/** A Duplex over `src` that first yields `first` (bytes already read while sniffing). */
function replay(src: Duplex, first: Buffer): Duplex {
  const d = new Duplex({
    read() {
      src.resume();
    },
    write(chunk, _enc, cb) {
      if (src.destroyed) return cb(new Error("guest connection closed"));
      src.write(chunk, (e) => cb(e ?? null));
    },
    final(cb) {
      src.end();
      cb();
    },
    destroy(err, cb) {
      src.destroy();
      cb(err);
    },
  });
  d.push(first);
  src.on("data", (c: Buffer) => {
    if (!d.push(c)) src.pause();
  });
  src.once("end", () => d.push(null));
  src.once("error", (e) => d.destroy(e));
  src.once("close", () => {
    if (!d.destroyed) d.destroy();
  });
  // The guest may already be gone (reset while the relay was busy): then so is this stream.
  if (src.destroyed) queueMicrotask(() => d.destroy());
  return d;
}

/** Bypass: the guest's bytes go to the destination as they are, both ways. */
function relayOpaque(guest: Duplex, first: Buffer, dest: Destination): Promise<string | undefined> {
  return new Promise((resolve) => {
    let error: string | undefined;
    const up = net.connect({ host: dest.ip, port: dest.port });
    up.write(first);
    guest.pipe(up);
    up.pipe(guest);
    guest.resume();
    up.on("error", (e) => {
      error ??= `upstream ${dest.ip}:${dest.port}: ${e.message}`;
      guest.destroy();
    });
    guest.on("error", (e) => {
      error ??= `guest: ${e.message}`;
      up.destroy();
    });
    let n = 0;
    const one = () => {
      if (++n === 2) resolve(error);
    };
    up.once("close", () => {
      one();
      setTimeout(() => guest.destroy(), CLOSE_GRACE_MS).unref();
    });
    guest.once("close", () => {
      one();
      up.destroy();
    });
  });
}
