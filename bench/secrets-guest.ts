// What TLS interception costs a real guest (issue #9 figures): from inside a qemu Debian sandbox,
// per-request latency on one keep-alive HTTPS connection (p50/p99) and bulk download throughput,
// intercepted (api.allowed.test, a secret substituted into every request) vs bypassed
// (bypass.test, `tls.bypass`, relayed opaquely) — the same echo server in a test network
// namespace, the same guest, the same run, rounds interleaved. A third mode, the same server on
// port 8443 (not an intercepted port), is the baseline with no relay at all (bypassed flows still
// pass through the relay's opaque copy after it reads the ClientHello). Prints figures and ratios.
//
//   node_modules/.bin/bun bench/secrets-guest.ts      # root (ip netns), the Debian fixture v2
//   ROUNDS=4 REQUESTS=100 BULK_MIB=32                  # defaults

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fixtureDir } from "./image-fixture-debian.ts";

const home = mkdtempSync(join(tmpdir(), "msb-bench-secrets-"));
process.env.MSB_HOME = home;
const { importImage } = await import("../src/image");
const { Sandbox } = await import("../src/sandbox");
const { createNamespace, makeTestCert, netnsUnavailable, startTestDns } = await import("../src/testnet");
const { bunPath, repoRoot } = await import("../src/testing");

const ROUNDS = Number(process.env.ROUNDS ?? 4);
const REQUESTS = Number(process.env.REQUESTS ?? 100);
const BULK_MIB = Number(process.env.BULK_MIB ?? 32);
const INTERCEPTED = "api.allowed.test";
const BYPASSED = "bypass.test";

const why = netnsUnavailable();
if (why) {
  console.error(`bench/secrets-guest.ts: ${why}`);
  process.exit(2);
}

// One guest-side client per measurement: Python http.client on one keep-alive connection (the
// guest trusts the msb CA through SSL_CERT_FILE, and the test CA for the bypassed host).
const CLIENT = String.raw`
import http.client, json, os, ssl, sys, time
host, port, requests, bulk = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
ctx = ssl.create_default_context()
ctx.load_verify_locations("/root/test-ca.pem")
auth = "Bearer " + os.environ["API_KEY"]
c = http.client.HTTPSConnection(host, port, context=ctx, timeout=120)
c.request("GET", "/bulk/64", headers={"Authorization": auth}); c.getresponse().read()  # handshake, warm-up
lat = []
for i in range(requests):
    t = time.perf_counter()
    c.request("GET", "/bulk/64", headers={"Authorization": auth})
    r = c.getresponse(); r.read()
    lat.append((time.perf_counter() - t) * 1000)
    assert r.status == 200, r.status
t = time.perf_counter()
c.request("GET", "/bulk/%d" % bulk, headers={"Authorization": auth})
r = c.getresponse(); n = 0
while True:
    d = r.read(1 << 20)
    if not d: break
    n += len(d)
secs = time.perf_counter() - t
assert n == bulk, n
print(json.dumps({"lat": lat, "bulkSecs": secs}))
`;

const pct = (v: number[], p: number) => [...v].sort((a, b) => a - b)[Math.min(v.length - 1, Math.floor((p / 100) * v.length))]!;

const ns = createNamespace("bsg", 1);
const dns = await startTestDns({ [INTERCEPTED]: [ns.addresses[0]!], [BYPASSED]: [ns.addresses[0]!] });
let sandbox: Awaited<ReturnType<typeof Sandbox.create>> | undefined;
try {
  const cert = await makeTestCert([INTERCEPTED, BYPASSED]);
  const recordFile = join(home, "echo.jsonl");
  ns.spawn([bunPath, join(repoRoot, "src", "testnet.ts"), "echo", JSON.stringify({ listen: ns.addresses, port: 443, certPem: cert.certPem, keyPem: cert.keyPem, recordFile })], { env: { ...process.env, MSB_HOME: undefined } });
  ns.spawn([bunPath, join(repoRoot, "src", "testnet.ts"), "echo", JSON.stringify({ listen: ns.addresses, port: 8443, certPem: cert.certPem, keyPem: cert.keyPem, recordFile })], { env: { ...process.env, MSB_HOME: undefined } });
  for (let i = 0; i < 150 && ns.exec(["python3", "-c", `import socket; socket.create_connection(('${ns.addresses[0]}', 443), 1)`]).exitCode !== 0; i++) await Bun.sleep(100);
  process.env.MSB_TEST_DNS_UPSTREAM = dns.upstream;
  await importImage(join(fixtureDir(), "oci"), { tag: "bench/debian:secrets" });
  sandbox = await Sandbox.create({
    image: "bench/debian:secrets", pull: "never", backend: "qemu", memoryMiB: 512, diskSizeMiB: 1024,
    secrets: [{ name: "API_KEY", value: crypto.randomUUID().replaceAll("-", ""), allow: [INTERCEPTED] }],
    tls: { ca: [cert.caPem], bypass: [BYPASSED] },
  } as Parameters<typeof Sandbox.create>[0]);
  await sandbox.exec("sh", ["-c", "cat > /root/test-ca.pem"], { stdin: cert.caPem });
  const modes = [
    { label: "intercept", host: INTERCEPTED, port: 443 },
    { label: "bypass", host: BYPASSED, port: 443 },
    { label: "direct:8443", host: INTERCEPTED, port: 8443 },
  ];
  const lat = modes.map(() => [] as number[]);
  const bulk = modes.map(() => [] as number[]);
  for (let round = 0; round < ROUNDS; round++) {
    // Rotate which goes first so drift on a loaded machine hits every mode alike.
    for (let j = 0; j < modes.length; j++) {
      const i = (j + round) % modes.length;
      const m = modes[i]!;
      const r = await sandbox.exec("python3", ["-c", CLIENT, m.host, String(m.port), String(REQUESTS), String(BULK_MIB << 20)]);
      if (r.exitCode !== 0) throw new Error(`guest client for ${m.label} failed (exit ${r.exitCode}): ${r.stderr}${r.stdout}`);
      const got = JSON.parse(r.stdout.trim().split("\n").pop()!) as { lat: number[]; bulkSecs: number };
      lat[i]!.push(...got.lat);
      bulk[i]!.push(BULK_MIB / got.bulkSecs);
    }
  }
  const load = (await Bun.file("/proc/loadavg").text()).split(" ").slice(0, 3).join(" ");
  console.log(`secrets-guest: qemu TCG guest (Python http.client), ${ROUNDS} rounds x ${REQUESTS} keep-alive GETs (64-byte body) + ${BULK_MIB} MiB download per mode; load average ${load}`);
  const cols = (v: string[]) => v.map((x) => x.padStart(12)).join("");
  console.log(`  ${"".padEnd(32)}${cols(modes.map((m) => m.label))}${cols(["int/bypass", "int/direct"])}`);
  const row = (label: string, v: number[]) => console.log(`  ${label.padEnd(32)}${cols(v.map((x) => x.toFixed(2)))}${cols([`x${(v[0]! / v[1]!).toFixed(2)}`, `x${(v[0]! / v[2]!).toFixed(2)}`])}`);
  row("keep-alive request p50 (ms)", lat.map((v) => pct(v, 50)));
  row("keep-alive request p99 (ms)", lat.map((v) => pct(v, 99)));
  row("bulk download, median (MiB/s)", bulk.map((v) => pct(v, 50)));
  console.log(`  bulk runs (MiB/s): ${modes.map((m, i) => `${m.label} ${bulk[i]!.map((x) => x.toFixed(1)).join(" ")}`).join(" / ")}`);
} finally {
  await sandbox?.stop().catch(() => {});
  if (sandbox) await Sandbox.remove(sandbox.name, { force: true }).catch(() => {});
  delete process.env.MSB_TEST_DNS_UPSTREAM;
  dns.close();
  ns.close();
  rmSync(home, { recursive: true, force: true });
}
