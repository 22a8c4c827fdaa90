// Test-only network rig for end-to-end tests that must never send a packet off this machine: a
// network namespace with public-looking addresses routed into it from the host (routes checked
// before any traffic), a test DNS server for the supervisor's resolver (MSB_TEST_DNS_UPSTREAM),
// and an HTTPS echo server (HTTP/1.1 keep-alive and HTTP/2) run inside the namespace that answers
// and records exactly what it received. Run as a script, this file is that echo server.
//
// Needs root (ip netns). The echo server is this file run by Bun inside the namespace:
//   ip netns exec NS bun src/testnet.ts echo '<EchoConfig JSON>'

import { appendFileSync, readFileSync, existsSync } from "node:fs";
import * as http2 from "node:http2";
import { buildResponse, DnsMessageRepr, DnsPacket } from "../netstack/wire/dns";
import { parseIp } from "../netstack/wire/address";
import { EC_ALG, randomSerial, toPem, x509 } from "./secrets/x509";

function sh(cmd: string[], okToFail = false): string {
  const r = Bun.spawnSync(cmd, { stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0 && !okToFail) throw new Error(`${cmd.join(" ")}: ${r.stderr.toString()}`);
  return r.stdout.toString();
}

/** Why a namespace test cannot run here, or undefined when it can. */
export function netnsUnavailable(): string | undefined {
  if (process.getuid?.() !== 0) return "needs root to create a network namespace";
  if (!Bun.which("ip")) return "needs ip (iproute2) on the host";
  return undefined;
}

export interface TestNamespace {
  name: string;
  /** The host's veth address and the namespace's, on a private /24 between them. */
  hostSide: string;
  nsSide: string;
  /** Public-looking addresses the namespace owns, each routed from the host into it. */
  addresses: string[];
  /** Runs a command inside the namespace (argv form). */
  exec(cmd: string[]): ReturnType<typeof Bun.spawnSync>;
  /** Starts a long-running process inside the namespace; it is killed by close(). */
  spawn(cmd: string[], options?: { stdout?: "inherit" | "ignore" | "pipe"; stderr?: "inherit" | "ignore" | "pipe"; env?: Record<string, string | undefined> }): ReturnType<typeof Bun.spawn>;
  close(): void;
}

/**
 * Creates namespace `msb<tag><pid>` owning `count` addresses 44.44.N.1.. (N from the pid, never 44,
 * which src/egress.test.ts uses), with a veth pair on 172.29.N.0/24 and host routes into it. Throws
 * before any traffic if a route does not lead into the namespace.
 */
export function createNamespace(tag: string, count = 2): TestNamespace {
  const N = (process.pid % 150) + 100;
  const name = `msb${tag}${process.pid % 100000}`.slice(0, 15);
  const veth = `${name}h`.slice(0, 15);
  const hostSide = `172.29.${N}.1`;
  const nsSide = `172.29.${N}.2`;
  const addresses = Array.from({ length: count }, (_, i) => `44.44.${N}.${i + 1}`);
  const children: ReturnType<typeof Bun.spawn>[] = [];
  const close = () => {
    for (const c of children) c.kill();
    for (const a of addresses) sh(["ip", "route", "del", `${a}/32`], true);
    sh(["ip", "netns", "del", name], true);
    sh(["ip", "link", "del", veth], true);
  };
  close(); // a namespace left by an earlier crashed run with the same pid
  try {
    sh(["ip", "netns", "add", name]);
    sh(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", name]);
    sh(["ip", "addr", "add", `${hostSide}/24`, "dev", veth]);
    sh(["ip", "link", "set", veth, "up"]);
    sh(["ip", "-n", name, "addr", "add", `${nsSide}/24`, "dev", "eth0"]);
    sh(["ip", "-n", name, "link", "set", "eth0", "up"]);
    sh(["ip", "-n", name, "link", "set", "lo", "up"]);
    for (const a of addresses) sh(["ip", "-n", name, "addr", "add", `${a}/32`, "dev", "lo"]);
    sh(["ip", "-n", name, "route", "add", "default", "via", hostSide]);
    for (const a of addresses) sh(["ip", "route", "add", `${a}/32`, "via", nsSide, "dev", veth]);
    for (const a of addresses) {
      const route = sh(["ip", "route", "get", a]);
      if (!route.includes(`dev ${veth}`)) throw new Error(`route to ${a} does not go into the test namespace ${name}: ${route}`);
    }
  } catch (e) {
    close();
    throw e;
  }
  return {
    name, hostSide, nsSide, addresses, close,
    exec: (cmd) => Bun.spawnSync(["ip", "netns", "exec", name, ...cmd], { stdout: "pipe", stderr: "pipe" }),
    spawn(cmd, options = {}) {
      const child = Bun.spawn(["ip", "netns", "exec", name, ...cmd], { stdout: options.stdout ?? "inherit", stderr: options.stderr ?? "inherit", env: options.env ?? process.env });
      children.push(child);
      return child;
    },
  };
}

// ---- the test DNS server ----

export interface TestDns {
  /** host:port, the value for MSB_TEST_DNS_UPSTREAM. */
  upstream: string;
  /** Names asked, in order, lower-case. */
  seen: string[];
  close(): void;
}

/**
 * A UDP DNS server on 127.0.0.1 answering A queries from `zone` (name → IPv4 addresses, TTL 300);
 * a name in the zone gets an empty answer for other types, any other name NXDOMAIN.
 */
export async function startTestDns(zone: Record<string, string[]>): Promise<TestDns> {
  const seen: string[] = [];
  const answer = (query: Uint8Array): Uint8Array | undefined => {
    let q;
    try { q = DnsMessageRepr.parse(DnsPacket.newChecked(query)).questions[0]; } catch { return undefined; }
    if (!q) return undefined;
    const name = q.name.toLowerCase();
    seen.push(name);
    const ips = zone[name];
    if (!ips) return buildResponse(query, q, 3);
    return buildResponse(query, q, 0, q.type === 1 ? ips.map((ip) => ({ type: 1, ttl: 300, rdata: parseIp(ip) })) : []);
  };
  const socket = await Bun.udpSocket({
    binaryType: "uint8array", hostname: "127.0.0.1",
    socket: { data(s, buf, port, addr) { const r = answer(buf); if (r) s.send(r, port, addr); } },
  });
  return { upstream: `127.0.0.1:${socket.port}`, seen, close: () => socket.close() };
}

// ---- a test CA and a server certificate ----

export interface TestCert {
  caPem: string;
  certPem: string;
  keyPem: string;
}

/** A fresh CA ("msb test public CA") and a leaf for `names` it signed: what a public site has. */
export async function makeTestCert(names: string[]): Promise<TestCert> {
  const caKeys = (await crypto.subtle.generateKey(EC_ALG, true, ["sign", "verify"])) as CryptoKeyPair;
  const validity = { notBefore: new Date(Date.now() - 3600_000), notAfter: new Date(Date.now() + 2 * 24 * 3600_000) };
  const ca = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomSerial(), name: "CN=msb e2e test public CA", ...validity, signingAlgorithm: EC_ALG, keys: caKeys,
    extensions: [new x509.BasicConstraintsExtension(true, undefined, true), new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign, true)],
  });
  const keys = (await crypto.subtle.generateKey(EC_ALG, true, ["sign", "verify"])) as CryptoKeyPair;
  const leaf = await x509.X509CertificateGenerator.create({
    serialNumber: randomSerial(), subject: `CN=${names[0]}`, issuer: ca.subject, ...validity,
    signingAlgorithm: EC_ALG, publicKey: keys.publicKey, signingKey: caKeys.privateKey,
    extensions: [
      new x509.SubjectAlternativeNameExtension(names.map((value) => ({ type: "dns" as const, value }))),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
    ],
  });
  return { caPem: `${ca.toString("pem")}\n`, certPem: `${leaf.toString("pem")}\n`, keyPem: toPem("PRIVATE KEY", await crypto.subtle.exportKey("pkcs8", keys.privateKey)) };
}

// ---- the HTTPS echo server (runs inside the namespace) ----

export interface EchoConfig {
  /** Addresses to listen on (port 443 each). */
  listen: string[];
  port: number;
  certPem: string;
  keyPem: string;
  /** JSON lines, one per request received (`EchoRecord`), appended as they arrive. */
  recordFile: string;
}

/** What the echo server received for one request; also the response body (JSON). */
export interface EchoRecord {
  /** Server address and port the connection reached, and the client's source port (one per connection). */
  local: string;
  remotePort: number;
  /** TLS server name the client sent (SNI) and the negotiated HTTP version ("1.1" or "2.0"). */
  sni: string | null;
  httpVersion: string;
  method: string;
  /** The request-target (HTTP/1) or :path (HTTP/2), as received. */
  target: string;
  /** Header names and values as received, in order (HTTP/2 pseudo-headers included). */
  rawHeaders: string[];
  body: string;
}

/**
 * Serves the echo on each address. `/bulk/<bytes>` answers that many bytes (for benchmarks) and
 * records nothing; every other request is recorded and answered with its EchoRecord.
 */
export function serveEcho(config: EchoConfig): http2.Http2SecureServer[] {
  return config.listen.map((address) => {
    const server = http2.createSecureServer({ cert: config.certPem, key: config.keyPem, allowHTTP1: true }, (req, res) => {
      const bulk = /^\/bulk\/(\d{1,10})$/.exec(req.url);
      if (bulk) {
        const total = Number(bulk[1]);
        res.writeHead(200, { "content-type": "application/octet-stream", "content-length": String(total) });
        const chunk = Buffer.alloc(Math.min(total, 256 * 1024), 120);
        let left = total;
        const pump = () => {
          while (left > 0) {
            const piece = left >= chunk.length ? chunk : chunk.subarray(0, left);
            left -= piece.length;
            if (!res.write(piece)) return void res.once("drain", pump);
          }
          res.end();
        };
        return pump();
      }
      const parts: Buffer[] = [];
      let size = 0;
      req.on("data", (d: Buffer) => { if (size < 1 << 20) parts.push(d); size += d.length; });
      req.on("end", () => {
        const socket = req.socket as unknown as { servername?: string; localAddress?: string; localPort?: number; remotePort?: number };
        const record: EchoRecord = {
          local: `${socket.localAddress?.replace("::ffff:", "")}:${socket.localPort}`,
          remotePort: socket.remotePort ?? 0,
          sni: socket.servername || null,
          httpVersion: req.httpVersion,
          method: req.method,
          target: req.url,
          rawHeaders: req.rawHeaders,
          body: Buffer.concat(parts).toString("latin1"),
        };
        const line = JSON.stringify(record);
        appendFileSync(config.recordFile, `${line}\n`);
        res.writeHead(200, { "content-type": "application/json" });
        res.end(`${line}\n`);
      });
    });
    server.listen(config.port, address);
    return server;
  });
}

/** The records the echo server has written so far. */
export function readEchoRecords(file: string): EchoRecord[] {
  if (!existsSync(file)) return [];
  return readFileSync(file, "utf8").split("\n").filter(Boolean).map((l) => JSON.parse(l) as EchoRecord);
}

if (import.meta.main && process.argv[2] === "echo") {
  const config = JSON.parse(process.argv[3]!) as EchoConfig;
  serveEcho(config);
}
