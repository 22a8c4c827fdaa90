// Cost of TLS interception on the whole host-side path a guest's HTTPS request takes: guest TCP
// (Linux's own stack in a network namespace, on a TAP device) → NetStack → either the host socket
// to the server (direct TLS, end to end) or the stack's Duplex → interceptTls → the server (with
// a secret put in). Same client, same server, one run; prints p50/p99 per request and bulk
// throughput, and the ratio. The guest kernel runs natively here, so these are the host-side
// costs a VM on hardware KVM would see (a TCG guest would drown them in emulation).
//   node_modules/.bin/bun bench/secrets-netstack.ts [--requests N] [--mib M]    (root: netns + TAP)

import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { interceptTls } from "../src/secrets/intercept.ts";
import { startRig } from "../src/secrets/harness.ts";
import { allowLoopbackPorts, harnessUnavailable, startGuest, type Guest } from "../netstack/test/harness.ts";

const why = harnessUnavailable();
if (why) {
  console.error(`bench/secrets-netstack.ts: ${why}`);
  process.exit(2);
}
const args = process.argv.slice(2);
const arg = (k: string, d: number) => {
  const i = args.indexOf(k);
  return i >= 0 ? Number(args[i + 1]) : d;
};
const requests = arg("--requests", 1000);
const mib = arg("--mib", 64);
const SECRET = "bench-secret-value-0123456789";

const rig = await startRig([{ name: "TOKEN", value: SECRET, allow: ["api.test"] }]);
// The server's names resolve to its loopback address in the rig's pinning; the guest reaches it through the gateway.
const policy = { ...rig.policy, resolvedFor: (name: string, ip: string) => ip === "127.0.0.1" && name === "api.test" };
const bothCas = join(rig.dir, "both-ca.pem");
writeFileSync(bothCas, `${await Bun.file(rig.upstreamCaFile).text()}\n${await Bun.file(rig.msbCaFile).text()}`);

const direct = await startGuest({ policy: allowLoopbackPorts(rig.port) });
const intercepted = await startGuest({
  policy: allowLoopbackPorts(rig.port),
  intercept: { ports: [rig.port], handle: (guest, dest) => void interceptTls(guest, dest, policy) },
});

async function client(g: Guest, mode: "latency" | "bulk", n: number) {
  const r = await g.exec([process.execPath, join(import.meta.dir, "secrets.ts"), "--client", "10.0.2.2", String(rig.port), bothCas, mode, String(n)], { timeoutMs: 600_000 });
  return JSON.parse(r.stdout);
}

const f = (x: number) => x.toFixed(x < 10 ? 2 : 0);
try {
  console.log(`secrets through the netstack: namespace guest → NetStack → server on host loopback; ${requests} keep-alive GETs, ${Math.max(50, Math.floor(requests / 10))} on new connections, ${mib} MiB bulk; node:https client`);
  const dl = await client(direct, "latency", requests);
  const il = await client(intercepted, "latency", requests);
  if (rig.seen.at(-1)?.headers["x-api-key"] !== SECRET) throw new Error("the intercepted path did not put the secret in");
  for (const k of ["keepalive", "newconn"]) {
    const d = dl[k], r = il[k];
    console.log(`${k.padEnd(9)}  direct TLS p50 ${f(d.p50)} ms p99 ${f(d.p99)} ms (${f(d.rps)} req/s) | intercepted p50 ${f(r.p50)} ms p99 ${f(r.p99)} ms (${f(r.rps)} req/s) | added p50 ${f(r.p50 - d.p50)} ms p99 ${f(r.p99 - d.p99)} ms, ${f(r.p50 / d.p50)}x`);
  }
  const db = await client(direct, "bulk", mib);
  const ib = await client(intercepted, "bulk", mib);
  console.log(`bulk       download direct ${f(db.download)} MiB/s, intercepted ${f(ib.download)} MiB/s (${f(ib.download / db.download)}x) | upload direct ${f(db.upload)} MiB/s, intercepted ${f(ib.upload)} MiB/s (${f(ib.upload / db.upload)}x)`);
} finally {
  await direct.close();
  await intercepted.close();
  await rig.stop();
}
