// Cost of TLS interception with secret substitution: the same HTTPS client against the same
// local server, once directly and once through interceptTls, in one run. Prints requests/s,
// latency p50/p99 (HTTP/1.1 keep-alive, new connections, HTTP/2 streams) and bulk throughput.
//   node_modules/.bin/bun bench/secrets.ts [--requests N] [--mib M]

import * as https from "node:https";
import { GUEST_IP, startRig, UPSTREAM_IP } from "../src/secrets/harness.ts";

const args = process.argv.slice(2);
const arg = (k: string, d: number) => {
  const i = args.indexOf(k);
  return i >= 0 ? Number(args[i + 1]) : d;
};

if (args[0] === "--client") {
  // Load generator, run as a child process so it does not share an event loop with the relay.
  const [, ip, port, caFile, mode, nStr] = args;
  const ca = await Bun.file(caFile!).text();
  const n = Number(nStr);
  const agent = new https.Agent({ keepAlive: true, maxSockets: 1 });
  const base = { host: ip, port: Number(port), servername: "api.test", ca, headers: { host: `api.test:${port}`, "x-api-key": "$MSB_TOKEN" } };
  const req = (opts: https.RequestOptions, body?: Uint8Array) =>
    new Promise<number>((resolve, reject) => {
      const r = https.request({ ...base, ...opts, headers: { ...base.headers, ...opts.headers } }, (res) => {
        let bytes = 0;
        res.on("data", (d: Buffer) => (bytes += d.length));
        res.on("end", () => (res.statusCode === 200 ? resolve(bytes) : reject(new Error(`status ${res.statusCode}`))));
      });
      r.on("error", reject);
      r.end(body);
    });
  const out: Record<string, unknown> = {};
  if (mode === "h2") {
    // One HTTP/2 session, sequential streams.
    const http2 = await import("node:http2");
    const tls = await import("node:tls");
    const session = http2.connect(`https://api.test:${port}`, { createConnection: () => tls.connect({ host: ip, port: Number(port), servername: "api.test", ca, ALPNProtocols: ["h2"] }) });
    const get = () =>
      new Promise<void>((resolve, reject) => {
        const r = session.request({ ":path": "/small", "x-api-key": "$MSB_TOKEN" });
        r.on("response", (h) => h[":status"] !== 200 && reject(new Error(`status ${h[":status"]}`)));
        r.on("data", () => {});
        r.on("end", () => resolve());
        r.on("error", reject);
      });
    for (let i = 0; i < 20; i++) await get();
    const lat: number[] = [];
    const t0 = performance.now();
    for (let i = 0; i < n; i++) {
      const t = performance.now();
      await get();
      lat.push(performance.now() - t);
    }
    const total = performance.now() - t0;
    lat.sort((a, b) => a - b);
    out.h2 = { count: n, rps: n / (total / 1000), p50: lat[Math.floor(n * 0.5)], p99: lat[Math.floor(n * 0.99)] };
    session.close();
  } else if (mode === "latency") {
    for (const [name, opts] of [["keepalive", { agent }], ["newconn", { agent: false }]] as const) {
      const count = name === "newconn" ? Math.max(50, Math.floor(n / 10)) : n;
      const lat: number[] = [];
      for (let i = 0; i < 20; i++) await req({ path: "/small", ...opts });
      const t0 = performance.now();
      for (let i = 0; i < count; i++) {
        const t = performance.now();
        await req({ path: "/small", ...opts });
        lat.push(performance.now() - t);
      }
      const total = performance.now() - t0;
      lat.sort((a, b) => a - b);
      out[name] = { count, rps: count / (total / 1000), p50: lat[Math.floor(count * 0.5)], p99: lat[Math.floor(count * 0.99)] };
    }
  } else {
    const size = n * 1024 * 1024;
    let t = performance.now();
    const got = await req({ path: `/big?n=${size}`, agent });
    const down = performance.now() - t;
    if (got !== size) throw new Error(`downloaded ${got} of ${size}`);
    const body = new Uint8Array(size).fill(0x62);
    t = performance.now();
    await req({ path: "/sink", method: "POST", agent, headers: { "content-length": String(size) } }, body);
    const up = performance.now() - t;
    out.download = size / 1048576 / (down / 1000);
    out.upload = size / 1048576 / (up / 1000);
  }
  console.log(JSON.stringify(out));
  agent.destroy();
  process.exit(0);
}

const requests = arg("--requests", 2000);
const mib = arg("--mib", 128);
const rig = await startRig([{ name: "TOKEN", value: "bench-secret-value-0123456789", allow: ["api.test"] }]);
async function client(ip: string, caFile: string, mode: string, n: number) {
  const p = Bun.spawn([process.execPath, import.meta.path, "--client", ip, String(rig.port), caFile, mode, String(n)], { stdout: "pipe", stderr: "inherit" });
  const text = await new Response(p.stdout).text();
  if ((await p.exited) !== 0) throw new Error(`client failed: ${text}`);
  return JSON.parse(text);
}
const f = (x: number) => x.toFixed(x < 10 ? 2 : 0);
try {
  const direct = await client(UPSTREAM_IP, rig.upstreamCaFile, "latency", requests);
  const relay = await client(GUEST_IP, rig.msbCaFile, "latency", requests);
  if (rig.seen.at(-1)?.headers["x-api-key"] !== "bench-secret-value-0123456789") throw new Error("relay did not substitute the secret");
  console.log(`secrets bench: ${requests} sequential GETs on one keep-alive connection, ${Math.max(50, Math.floor(requests / 10))} on new connections; client node:https in a child process`);
  for (const k of ["keepalive", "newconn"]) {
    const d = direct[k], r = relay[k];
    console.log(`${k.padEnd(9)}  direct ${f(d.rps)} req/s p50 ${f(d.p50)} ms p99 ${f(d.p99)} ms | via relay ${f(r.rps)} req/s p50 ${f(r.p50)} ms p99 ${f(r.p99)} ms | added p50 ${f(r.p50 - d.p50)} ms p99 ${f(r.p99 - d.p99)} ms`);
  }
  const bd = await client(UPSTREAM_IP, rig.upstreamCaFile, "bulk", mib);
  const br = await client(GUEST_IP, rig.msbCaFile, "bulk", mib);
  console.log(`bulk ${mib} MiB  download direct ${f(bd.download)} MiB/s, via relay ${f(br.download)} MiB/s | upload direct ${f(bd.upload)} MiB/s, via relay ${f(br.upload)} MiB/s`);
} finally {
  await rig.stop();
}

// HTTP/2 on both sides (node:http2 echo upstream; the relay negotiates h2 with both).
const rig2 = await startRig([{ name: "TOKEN", value: "bench-secret-value-0123456789", allow: ["api.test"] }], {}, undefined, "h2");
try {
  const run = async (ip: string, caFile: string) => {
    const p = Bun.spawn([process.execPath, import.meta.path, "--client", ip, String(rig2.port), caFile, "h2", String(requests)], { stdout: "pipe", stderr: "inherit" });
    const text = await new Response(p.stdout).text();
    if ((await p.exited) !== 0) throw new Error(`h2 client failed: ${text}`);
    return JSON.parse(text).h2;
  };
  const d = await run(UPSTREAM_IP, rig2.upstreamCaFile);
  const r = await run(GUEST_IP, rig2.msbCaFile);
  if (rig2.seen.at(-1)?.headers["x-api-key"] !== "bench-secret-value-0123456789") throw new Error("h2 relay did not substitute the secret");
  console.log(`h2 stream  direct ${f(d.rps)} req/s p50 ${f(d.p50)} ms p99 ${f(d.p99)} ms | via relay ${f(r.rps)} req/s p50 ${f(r.p50)} ms p99 ${f(r.p99)} ms | added p50 ${f(r.p50 - d.p50)} ms p99 ${f(r.p99 - d.p99)} ms`);
} finally {
  await rig2.stop();
}
