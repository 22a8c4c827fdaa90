// Test and bench rig for the relay on loopback: an HTTPS echo upstream on 127.0.0.1:P (its own
// test CA, as a public site would have), and a "guest side" listener on 127.0.0.2:P whose
// accepted sockets go to interceptTls with 127.0.0.1:P as the destination. Using the same port on
// two loopback addresses keeps the Host header's port equal to the destination port, as in a VM.

import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import * as http2 from "node:http2";
import * as net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadOrCreateCa } from "./ca.ts";
import { type InterceptPolicy, type InterceptResult, interceptTls } from "./intercept.ts";
import { LeafIssuer } from "./leaf.ts";
import { type Secret, SecretSet } from "./substitute.ts";
import { EC_ALG, randomSerial, toPem, x509 } from "./x509.ts";

export const GUEST_IP = "127.0.0.2";
export const UPSTREAM_IP = "127.0.0.1";

export interface SeenRequest {
  method: string;
  path: string;
  headers: Record<string, string>;
  body: string;
}

export interface Rig {
  port: number;
  dir: string;
  /** PEM file of the msb CA (what the guest trusts). */
  msbCaFile: string;
  /** PEM file of the upstream's CA (what a bypassed flow must verify against). */
  upstreamCaFile: string;
  upstreamCaPem: string;
  issuer: LeafIssuer;
  seen: SeenRequest[];
  results: InterceptResult[];
  logs: string[];
  policy: InterceptPolicy;
  stop(): Promise<void>;
}

/** A certificate for several names signed by a fresh CA: the upstream's "public" certificate. */
async function upstreamCert(names: string[]) {
  const alg = EC_ALG;
  const caKeys = (await crypto.subtle.generateKey(alg, true, ["sign", "verify"])) as CryptoKeyPair;
  const ca = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomSerial(),
    name: "CN=msb test public CA",
    notBefore: new Date(Date.now() - 3600_000),
    notAfter: new Date(Date.now() + 24 * 3600_000),
    signingAlgorithm: alg,
    keys: caKeys,
    extensions: [new x509.BasicConstraintsExtension(true, undefined, true), new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign, true)],
  });
  const keys = (await crypto.subtle.generateKey(alg, true, ["sign", "verify"])) as CryptoKeyPair;
  const leaf = await x509.X509CertificateGenerator.create({
    serialNumber: randomSerial(),
    subject: `CN=${names[0]}`,
    issuer: ca.subject,
    notBefore: new Date(Date.now() - 3600_000),
    notAfter: new Date(Date.now() + 24 * 3600_000),
    signingAlgorithm: alg,
    publicKey: keys.publicKey,
    signingKey: caKeys.privateKey,
    extensions: [new x509.SubjectAlternativeNameExtension(names.map((value) => ({ type: "dns" as const, value }))), new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth])],
  });
  return { caPem: ca.toString("pem") + "\n", certPem: leaf.toString("pem") + "\n", keyPem: toPem("PRIVATE KEY", await crypto.subtle.exportKey("pkcs8", keys.privateKey)) };
}

/**
 * `upstream: "h2"` serves the echo over node:http2 (ALPN h2 only) instead of Bun.serve (HTTP/1.1).
 */
export async function startRig(secrets: Secret[], over: Partial<InterceptPolicy> = {}, names = ["api.test", "evil.test", "bypass.test", "a.corp.test"], upstream: "h1" | "h2" = "h1"): Promise<Rig> {
  const dir = mkdtempSync(join(tmpdir(), "msb-secrets-"));
  const ca = await loadOrCreateCa(dir);
  const issuer = new LeafIssuer(ca);
  const up = await upstreamCert(names);
  const msbCaFile = join(dir, "msb-ca.pem");
  const upstreamCaFile = join(dir, "upstream-ca.pem");
  writeFileSync(msbCaFile, ca.certPem);
  writeFileSync(upstreamCaFile, up.caPem);
  const seen: SeenRequest[] = [];
  const server = upstream === "h2" ? await startH2Echo(up.certPem, up.keyPem, seen) : Bun.serve({
    hostname: UPSTREAM_IP,
    port: 0,
    tls: { cert: up.certPem, key: up.keyPem },
    async fetch(req) {
      const url = new URL(req.url);
      if (url.pathname === "/sink") {
        // Counts an upload without keeping it (bench bulk upload).
        let n = 0;
        for await (const c of req.body ?? []) n += (c as Uint8Array).byteLength;
        return new Response(String(n));
      }
      const body = await req.text();
      const r: SeenRequest = { method: req.method, path: url.pathname + url.search, headers: Object.fromEntries(req.headers), body };
      seen.push(r);
      if (url.pathname === "/big") return new Response(new Uint8Array(Number(url.searchParams.get("n") ?? "0")).fill(0x61));
      if (url.pathname === "/small") return new Response("ok");
      return Response.json(r);
    },
  });
  const port = server.port!;
  const results: InterceptResult[] = [];
  const logs: string[] = [];
  const policy: InterceptPolicy = {
    secrets: new SecretSet(secrets),
    issuer,
    extraCa: [up.caPem],
    resolvedFor: (name, ip) => ip === UPSTREAM_IP && names.includes(name),
    log: (l) => logs.push(l),
    ...over,
  };
  const pending = new Set<Promise<unknown>>();
  const guestSide = net.createServer((sock) => {
    sock.setNoDelay(true);
    const p = interceptTls(sock, { ip: UPSTREAM_IP, port }, policy).then((r) => results.push(r));
    pending.add(p);
    p.finally(() => pending.delete(p));
  });
  await new Promise<void>((resolve, reject) => {
    guestSide.once("error", reject);
    guestSide.listen(port, GUEST_IP, () => resolve());
  });
  return {
    port,
    dir,
    msbCaFile,
    upstreamCaFile,
    upstreamCaPem: up.caPem,
    issuer,
    seen,
    results,
    logs,
    policy,
    async stop() {
      guestSide.close();
      await Promise.race([Promise.all(pending), Bun.sleep(3000)]);
      server.stop(true);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** An HTTP/2-only echo on 127.0.0.1 (what the Bun.serve echo does, over node:http2). */
async function startH2Echo(cert: string, key: string, seen: SeenRequest[]) {
  const srv = http2.createSecureServer({ cert, key, allowHTTP1: false });
  srv.on("stream", (s, headers) => {
    const stream = s as http2.ServerHttp2Stream;
    const chunks: Buffer[] = [];
    stream.on("data", (d: Buffer) => chunks.push(d));
    stream.on("end", () => {
      const h: Record<string, string> = {};
      for (const [k, v] of Object.entries(headers)) if (v !== undefined) h[k] = Array.isArray(v) ? v.join(", ") : String(v);
      const r: SeenRequest = { method: h[":method"]!, path: h[":path"]!, headers: h, body: Buffer.concat(chunks).toString() };
      seen.push(r);
      stream.respond({ ":status": 200, "content-type": "application/json" }, { waitForTrailers: true });
      stream.once("wantTrailers", () => stream.sendTrailers({ "x-echo-status": "done" }));
      stream.end(JSON.stringify(r));
    });
    stream.on("error", () => {});
  });
  await new Promise<void>((r) => srv.listen(0, UPSTREAM_IP, () => r()));
  return {
    port: (srv.address() as net.AddressInfo).port,
    stop: (_force?: boolean) => srv.close(),
  };
}

/** Flow results land when both sides have closed, a moment after the client exits: wait for one. */
export async function waitForResult(rig: Rig, pred: (r: Rig["results"][number]) => boolean, ms = 5000): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (rig.results.some(pred)) return true;
    await Bun.sleep(20);
  }
  return false;
}
