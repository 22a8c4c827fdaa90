// Secrets that never enter the VM (issue #9), end to end on the qemu backend with real clients:
// curl (HTTP/1.1 and HTTP/2), Python urllib and http.client, and Node fetch in a Debian guest call
// HTTPS echo servers in a network namespace this test creates. Each case asserts what the server
// received (its own record of method, target and headers) and what the guest saw: the allowed host
// gets the real value, every other path (other host, SNI/Host mismatch, an address not resolved
// for the name, absolute-form target, second keep-alive request, HTTP/2 :authority, CONNECT
// tunnel, Basic auth) gets a 403 and the server never sees the value, and nothing the guest prints
// holds it (the echo reflecting it back is scrubbed, also when the guest decodes an echoed Basic
// credential). UDP to 443 (QUIC) is refused; a query placeholder stays literal without
// query: true. Afterwards the qemu process's memory (while running) and every file under MSB_HOME
// (after stopping) are searched for the value, each search shown to find a marker the guest made.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { closeSync, existsSync, openSync, readFileSync, readSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fixtureDir } from "../bench/image-fixture-debian";
import { importImage } from "./image";
import { sandboxDir } from "./paths";
import { Sandbox } from "./sandbox";
import { liveVmPid } from "./state";
import { createNamespace, type EchoRecord, makeTestCert, netnsUnavailable, readEchoRecords, startTestDns, type TestDns, type TestNamespace } from "./testnet";
import { bunPath, eventually, processesOf, removeHome, repoRoot, useTempHome } from "./testing";

const home = useTempHome();
const DEBIAN = join(fixtureDir(), "oci");
const IMAGE = "msb-test/debian-python3:secrets";
const ALLOWED = "api.allowed.test";
const OTHER = "other.test";

function unavailable(): string | undefined {
  const net = netnsUnavailable();
  if (net) return net;
  if (!Bun.which("grep") || !Bun.which("python3")) return "needs grep and python3 on the host";
  const stamp = join(fixtureDir(), "stamp");
  if (!existsSync(join(DEBIAN, "index.json")) || !existsSync(stamp) || Number(readFileSync(stamp, "utf8")) < 2) {
    return `needs the Debian fixture v2 (python3, curl, nodejs) at ${DEBIAN} (bun bench/image-fixture-debian.ts; scripts/setup.sh --test builds it)`;
  }
  return undefined;
}
const skip = unavailable();

const alnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const randomString = (n: number) => Array.from(crypto.getRandomValues(new Uint8Array(n)), (b) => alnum[b % alnum.length]).join("");
const SECRET = randomString(32);
const sha256 = (s: string) => new Bun.CryptoHasher("sha256").update(s).digest("hex");

/**
 * Every form of the value a leak could take: raw, percent-encoded, and base64 (and base64url) at each
 * of the three alignments (the part of the encoding that depends on the value alone, as inside `user:VALUE`).
 */
function leakForms(value: string): string[] {
  const forms = new Set([value, encodeURIComponent(value)]);
  for (const k of [0, 1, 2]) {
    const bytes = Buffer.concat([Buffer.alloc(k, 0x41), Buffer.from(value)]);
    const enc = bytes.toString("base64");
    const core = enc.slice(k === 0 ? 0 : 4, Math.floor(bytes.length / 3) * 4);
    forms.add(core);
    forms.add(core.replaceAll("+", "-").replaceAll("/", "_")); // base64url
  }
  return [...forms].filter((f) => f.length >= 16);
}
const FORMS = leakForms(SECRET);
const leaked = (text: string) => FORMS.filter((f) => text.includes(f));

let ns: TestNamespace | undefined;
let dns: TestDns | undefined;
let recordFile = "";
let caPem = "";

beforeAll(async () => {
  if (skip) return;
  ns = createNamespace("sec", 2);
  const cert = await makeTestCert([ALLOWED, OTHER]);
  caPem = cert.caPem;
  recordFile = join(home, "..", `msb-secrets-echo-${process.pid}.jsonl`);
  writeFileSync(recordFile, "");
  ns.spawn([bunPath, join(repoRoot, "src", "testnet.ts"), "echo", JSON.stringify({ listen: ns.addresses, port: 443, certPem: cert.certPem, keyPem: cert.keyPem, recordFile })], { env: { ...process.env, MSB_HOME: undefined } });
  const up = await eventually(() => ns!.exec(["python3", "-c", `import socket; socket.create_connection(('${ns!.addresses[1]}', 443), 1)`]).exitCode === 0, 15_000);
  if (!up) throw new Error("the echo server in the test namespace did not start");
  // UDP echo on 443 (QUIC's port, must be refused) and 7443 (the control: UDP itself works).
  ns.spawn(["python3", "-c", UDP_ECHO, ns.addresses[0]!], { env: { ...process.env, MSB_HOME: undefined } });
  dns = await startTestDns({ [ALLOWED]: [ns.addresses[0]!], [OTHER]: [ns.addresses[1]!] });
  process.env.MSB_TEST_DNS_UPSTREAM = dns.upstream;
  await importImage(DEBIAN, { tag: IMAGE });
}, 300_000);

afterAll(() => {
  delete process.env.MSB_TEST_DNS_UPSTREAM;
  dns?.close();
  ns?.close();
  if (recordFile) Bun.spawnSync(["rm", "-f", recordFile]);
  removeHome(home);
});

/** Requests the echo server recorded whose target is `path` (or ends with it, for absolute-form). */
const received = (path: string): EchoRecord[] => readEchoRecords(recordFile).filter((r) => r.target === path || r.target.endsWith(path));
const header = (r: EchoRecord | undefined, name: string): string[] => (r?.rawHeaders ?? []).flatMap((v, i) => (i % 2 === 0 && v.toLowerCase() === name ? [r!.rawHeaders[i + 1]!] : []));

const AUTH = `-H "Authorization: Bearer $API_KEY"`;

const UDP_ECHO = `
import socket, sys, threading
def serve(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((sys.argv[1], port))
    while True:
        d, a = s.recvfrom(2048); s.sendto(b"echo " + d, a)
for p in (443, 7443): threading.Thread(target=serve, args=(p,)).start()
`;
const PY_UDP = `
import socket
for port in (443, 7443):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)
    try:
        s.connect(("${ALLOWED}", port)); s.send(b"quic-ish"); print("UDP", port, s.recv(2048).decode())
    except socket.timeout: print("UDP", port, "timeout")
    except OSError as e: print("UDP", port, "error", e.strerror)
`;
const curl = (args: string) => `curl -sS -i --max-time 60 -w '\\nSTATUS %{http_code} VERSION %{http_version}\\n' ${args} 2>&1`;

const PY_URLLIB = (url: string, extra = "") => `
import os, urllib.request, urllib.error
req = urllib.request.Request("${url}", headers={"Authorization": "Bearer " + os.environ["API_KEY"]${extra}})
try:
    r = urllib.request.urlopen(req, timeout=60)
except urllib.error.HTTPError as e:
    r = e
print("STATUS", r.status)
for k, v in r.headers.items(): print(k + ": " + v)
print(r.read().decode())
`;
const PY_HTTPCLIENT = (host: string, path: string) => `
import os, http.client
c = http.client.HTTPSConnection("${host}", timeout=60)
c.request("GET", "${path}", headers={"Authorization": "Bearer " + os.environ["API_KEY"]})
r = c.getresponse()
print("STATUS", r.status)
for k, v in r.getheaders(): print(k + ": " + v)
print(r.read().decode())
`;
const NODE_FETCH = (url: string) =>
  `node -e 'fetch(process.argv[1], { headers: { authorization: "Bearer " + process.env.API_KEY } }).then(async (r) => { console.log("STATUS " + r.status); for (const [k, v] of r.headers) console.log(k + ": " + v); console.log(await r.text()); }).catch((e) => { console.log("ERROR", e, e.cause); process.exit(1); })' ${url} 2>&1`;

// A second request on the same keep-alive connection names another Host.
const PY_KEEPALIVE = `
import os, http.client
auth = "Bearer " + os.environ["API_KEY"]
c = http.client.HTTPSConnection("${ALLOWED}", timeout=60)
c.request("GET", "/c/keepalive-1", headers={"Authorization": auth})
r = c.getresponse()
print("STATUS", r.status); print(r.read().decode())
first = c.sock
c.putrequest("GET", "/c/keepalive-2", skip_host=True)
c.putheader("Host", "${OTHER}")
c.putheader("Authorization", auth)
c.endheaders()
print("SAME-CONNECTION", first is not None and c.sock is first)
r = c.getresponse()
print("STATUS", r.status)
for k, v in r.getheaders(): print(k + ": " + v)
print(r.read().decode())
`;

// A CONNECT proxy inside the guest on 127.0.0.1:8888; curl -x tunnels through it.
const PY_CONNECT = `
import os, socket, subprocess, threading
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 8888)); srv.listen(16)
def pipe(a, b):
    try:
        while True:
            d = a.recv(65536)
            if not d: break
            b.sendall(d)
    except OSError: pass
    finally:
        try: b.shutdown(socket.SHUT_WR)
        except OSError: pass
def handle(c):
    head = b""
    while b"\\r\\n\\r\\n" not in head:
        d = c.recv(4096)
        if not d: return c.close()
        head += d
    method, target, _ = head.split(b"\\r\\n")[0].decode().split(" ")
    host, port = target.rsplit(":", 1)
    u = socket.create_connection((host, int(port)), timeout=60)
    c.sendall(b"HTTP/1.1 200 Connection established\\r\\n\\r\\n")
    threading.Thread(target=pipe, args=(u, c), daemon=True).start()
    pipe(c, u)
def accept():
    while True:
        c, _ = srv.accept()
        threading.Thread(target=handle, args=(c,), daemon=True).start()
threading.Thread(target=accept, daemon=True).start()
for host, path in (("${ALLOWED}", "/c/connect-allowed"), ("${OTHER}", "/c/connect-other")):
    r = subprocess.run(["curl", "-sS", "-i", "--http1.1", "--max-time", "60", "-x", "http://127.0.0.1:8888",
                        "-H", "Authorization: Bearer " + os.environ["API_KEY"], "-w", "\\nSTATUS %{http_code}\\n", "https://" + host + path],
                       capture_output=True, text=True, timeout=90)
    print("CASE " + path); print(r.stdout + r.stderr)
`;

const py = (script: string) => `python3 -c '${script.replaceAll("'", `'"'"'`)}' 2>&1`;

interface Case {
  name: string;
  /** Shell command run in the guest (its stdout+stderr is what the guest saw). */
  cmd: string;
}
const CASES: Case[] = [
  { name: "curl-allowed", cmd: curl(`--http1.1 ${AUTH} https://${ALLOWED}/c/curl-allowed`) },
  { name: "curl-h2-allowed", cmd: curl(`--http2 ${AUTH} https://${ALLOWED}/c/curl-h2-allowed`) },
  { name: "urllib-allowed", cmd: py(PY_URLLIB(`https://${ALLOWED}/c/urllib-allowed`)) },
  { name: "httpclient-allowed", cmd: py(PY_HTTPCLIENT(ALLOWED, "/c/httpclient-allowed")) },
  { name: "node-fetch-allowed", cmd: NODE_FETCH(`https://${ALLOWED}/c/node-fetch-allowed`) },
  { name: "basic-allowed", cmd: curl(`--http1.1 -u "user:$API_KEY" https://${ALLOWED}/c/basic-allowed`) },
  // What a guest would do with an echoed Basic credential: decode it.
  { name: "basic-decoded", cmd: `${curl(`--http1.1 -u "user:$API_KEY" https://${ALLOWED}/c/basic-decoded`)} | ${py(`
import base64, re, sys
text = sys.stdin.read()
print(text)
for b in re.findall(r"Basic ([A-Za-z0-9+/=]+)", text):
    print("DECODED", base64.b64decode(b + "==").decode("latin1"))
`).replace(" 2>&1", "")}` },
  { name: "curl-other", cmd: curl(`--http1.1 ${AUTH} https://${OTHER}/c/curl-other`) },
  { name: "curl-h2-other", cmd: curl(`--http2 ${AUTH} https://${OTHER}/c/curl-h2-other`) },
  { name: "urllib-other", cmd: py(PY_URLLIB(`https://${OTHER}/c/urllib-other`)) },
  { name: "httpclient-other", cmd: py(PY_HTTPCLIENT(OTHER, "/c/httpclient-other")) },
  { name: "node-fetch-other", cmd: NODE_FETCH(`https://${OTHER}/c/node-fetch-other`) },
  { name: "basic-other", cmd: curl(`--http1.1 -u "user:$API_KEY" https://${OTHER}/c/basic-other`) },
  { name: "sni-host-mismatch", cmd: curl(`--http1.1 ${AUTH} -H 'Host: ${OTHER}' https://${ALLOWED}/c/sni-host-mismatch`) },
  { name: "absolute-form", cmd: curl(`--http1.1 ${AUTH} --request-target https://${OTHER}/c/absolute-form https://${ALLOWED}/`) },
  { name: "h2-authority", cmd: curl(`--http2 ${AUTH} -H 'Host: ${OTHER}' https://${ALLOWED}/c/h2-authority`) },
  { name: "keepalive", cmd: py(PY_KEEPALIVE) },
  // The right name and SNI, but sent to an address this sandbox never resolved for it.
  { name: "pin-mismatch", cmd: curl(`--http1.1 ${AUTH} --resolve ${ALLOWED}:443:PIN_ADDRESS https://${ALLOWED}/c/pin-mismatch`) },
  // A placeholder in the query of an allowed request: substituted only with query: true (not set).
  { name: "query-literal", cmd: curl(`--http1.1 "https://${ALLOWED}/c/query-literal?key=$API_KEY"`) },
  { name: "udp-443", cmd: py(PY_UDP) },
  { name: "connect", cmd: py(PY_CONNECT) },
];

const statuses = (out: string) => [...out.matchAll(/^STATUS (\d{3})/gm)].map((m) => Number(m[1]));
const blockedHeader = (out: string) => /^x-msb-blocked:\s*block\s*$/im.test(out);

/** Searches every readable mapping of `pid` (via /proc/PID/mem) for each needle; returns the found ones and bytes read. */
function scanProcessMemory(pid: number, needles: string[]): { found: Set<string>; bytes: number; regions: number; unreadable: number } {
  const found = new Set<string>();
  const pats = needles.map((n) => Buffer.from(n));
  const overlap = Math.max(...pats.map((p) => p.length)) - 1;
  const fd = openSync(`/proc/${pid}/mem`, "r");
  const chunk = Buffer.alloc(16 << 20);
  let bytes = 0, regions = 0, unreadable = 0;
  try {
    for (const line of readFileSync(`/proc/${pid}/maps`, "utf8").split("\n")) {
      const m = /^([0-9a-f]+)-([0-9a-f]+) (\S{4})/.exec(line);
      if (!m || m[3]![0] !== "r" || line.endsWith("[vsyscall]") || line.endsWith("[vvar]")) continue;
      const start = Number.parseInt(m[1]!, 16), end = Number.parseInt(m[2]!, 16);
      regions++;
      let pos = start;
      let carry = Buffer.alloc(0);
      while (pos < end) {
        const want = Math.min(chunk.length, end - pos);
        let n: number;
        try {
          n = readSync(fd, chunk, 0, want, pos);
        } catch {
          unreadable++;
          break;
        }
        if (n <= 0) break;
        const view = carry.length ? Buffer.concat([carry, chunk.subarray(0, n)]) : chunk.subarray(0, n);
        for (let i = 0; i < pats.length; i++) if (!found.has(needles[i]!) && view.indexOf(pats[i]!) >= 0) found.add(needles[i]!);
        carry = Buffer.from(view.subarray(Math.max(0, view.length - overlap)));
        bytes += n;
        pos += n;
      }
    }
  } finally {
    closeSync(fd);
  }
  return { found, bytes, regions, unreadable };
}

/** Files under `dir` containing any of `needles` (grep reads everything, skipping sparse holes). */
function filesContaining(dir: string, needles: string[]): string[] {
  const r = Bun.spawnSync(["grep", "-r", "-l", "-a", "-F", ...needles.flatMap((n) => ["-e", n]), dir], { stdout: "pipe", stderr: "pipe" });
  if (r.exitCode === 2) throw new Error(`grep over ${dir} failed: ${r.stderr.toString()}`);
  return r.stdout.toString().split("\n").filter(Boolean);
}

describe.skipIf(skip !== undefined)(`secrets: real clients in a qemu guest${skip ? ` (skipped: ${skip})` : ""}`, () => {
  const name = `secrets-${process.pid}`;
  let sandbox: Sandbox;
  const out: Record<string, string> = {};
  let env = "";
  let log = "";
  let memory: ReturnType<typeof scanProcessMemory> | undefined;
  let memoryMarker = "";
  let diskMarker = "";
  let vmPid: number | undefined;
  let disk: { secretFiles: string[]; markerFiles: string[] } | undefined;

  beforeAll(async () => {
    sandbox = await Sandbox.create({
      image: IMAGE, pull: "never", backend: "qemu", name, memoryMiB: 512, diskSizeMiB: 1024,
      secrets: [{ name: "API_KEY", value: SECRET, allow: [ALLOWED] }],
      tls: { ca: [caPem] },
    } as Parameters<typeof Sandbox.create>[0]);
    env = (await sandbox.shell("echo \"API_KEY=$API_KEY\"; env")).stdout;
    for (const c of CASES) {
      const r = await sandbox.shell(c.cmd.replace("PIN_ADDRESS", ns!.addresses[1]!));
      out[c.name] = r.stdout + r.stderr;
    }
    // Keep what the clients saw on the guest's disk, too (the disk scan must not find the value there).
    await sandbox.exec("sh", ["-c", "cat > /root/client-output.txt; sync"], { stdin: Object.values(out).join("\n") });
    // Markers the guest computes itself (the host sends only the seeds), so finding them shows the
    // scans read the guest's RAM and disk, not copies of what the host sent.
    const memSeed = randomString(24), diskSeed = randomString(24);
    memoryMarker = `${sha256(memSeed)}${sha256(`${memSeed}2`)}`;
    diskMarker = sha256(diskSeed);
    await sandbox.shell(
      `setsid python3 -c 'import hashlib, time; h = lambda s: hashlib.sha256(s.encode()).hexdigest(); m = h("${memSeed}") + h("${memSeed}2"); time.sleep(3600)' </dev/null >/dev/null 2>&1 &
       python3 -c 'import hashlib; open("/root/disk-marker", "w").write(hashlib.sha256(b"${diskSeed}").hexdigest())'; sync`,
    );
    await Bun.sleep(1000);
    vmPid = liveVmPid(name);
    if (vmPid) memory = scanProcessMemory(vmPid, [memoryMarker, ...FORMS]);
    await sandbox.stop();
    log = existsSync(join(sandboxDir(name), "supervisor.log")) ? readFileSync(join(sandboxDir(name), "supervisor.log"), "utf8") : "";
    disk = { secretFiles: filesContaining(home, FORMS), markerFiles: filesContaining(home, [diskMarker]) };
  }, 600_000);

  afterAll(async () => {
    await Sandbox.remove(name, { force: true }).catch(() => {});
  });

  test("the guest's environment has API_KEY=$MSB_API_KEY and not the value", () => {
    expect(env).toContain("API_KEY=$MSB_API_KEY\n");
    expect(leaked(env)).toEqual([]);
  });

  // The allowed host: the real value arrives; the echo of it is masked before the guest sees it.
  for (const [c, path, version, want] of [
    ["curl-allowed", "/c/curl-allowed", "1.1", `Bearer ${SECRET}`],
    ["curl-h2-allowed", "/c/curl-h2-allowed", "2.0", `Bearer ${SECRET}`],
    ["urllib-allowed", "/c/urllib-allowed", "1.1", `Bearer ${SECRET}`],
    ["httpclient-allowed", "/c/httpclient-allowed", "1.1", `Bearer ${SECRET}`],
    ["node-fetch-allowed", "/c/node-fetch-allowed", undefined, `Bearer ${SECRET}`],
    ["basic-allowed", "/c/basic-allowed", "1.1", `Basic ${Buffer.from(`user:${SECRET}`).toString("base64")}`],
    ["basic-decoded", "/c/basic-decoded", "1.1", `Basic ${Buffer.from(`user:${SECRET}`).toString("base64")}`],
  ] as const) {
    test(`${c}: ${ALLOWED} receives the real value; the guest gets 200 and never the value`, () => {
      const seen = received(path);
      expect(seen.map((r) => [r.sni, r.local])).toEqual([[ALLOWED, `${ns!.addresses[0]}:443`]]);
      if (version) expect(seen[0]!.httpVersion).toBe(version);
      expect(header(seen[0], "authorization")).toEqual([want]);
      expect(out[c]).toContain(path); // the echo came back ...
      expect(statuses(out[c]!)).toEqual([200]);
      expect(leaked(out[c]!)).toEqual([]); // ... without the value in any form
    });
  }
  test("the echo reflected the header back masked (the scrubber ran, not just an empty reply)", () => {
    expect(out["curl-allowed"]).toContain(`Bearer ${"*".repeat(SECRET.length)}`);
  });

  // Every other path: the server sees nothing of the request, the guest a 403 from msb.
  for (const [c, path] of [
    ["curl-other", "/c/curl-other"], ["curl-h2-other", "/c/curl-h2-other"], ["urllib-other", "/c/urllib-other"],
    ["httpclient-other", "/c/httpclient-other"], ["node-fetch-other", "/c/node-fetch-other"], ["basic-other", "/c/basic-other"],
    ["sni-host-mismatch", "/c/sni-host-mismatch"], ["pin-mismatch", "/c/pin-mismatch"], ["absolute-form", "/c/absolute-form"], ["h2-authority", "/c/h2-authority"],
  ] as const) {
    test(`${c}: blocked with 403 x-msb-blocked; the server never sees the request`, () => {
      expect(received(path)).toEqual([]);
      expect(statuses(out[c]!)).toEqual([403]);
      expect(blockedHeader(out[c]!)).toBe(true);
      expect(leaked(out[c]!)).toEqual([]);
    });
  }
  test("h2-authority: the guest really spoke HTTP/2", () => {
    expect(out["h2-authority"]).toMatch(/VERSION 2\b/);
  });

  test("pin-mismatch: refused because the address was not resolved for the name (logged as such)", () => {
    expect(log).toMatch(/tls: .*blocked: secret API_KEY: destination address was not resolved by this sandbox for api\.allowed\.test/);
  });

  test("query-literal: without query: true the placeholder in the target is not replaced", () => {
    const seen = readEchoRecords(recordFile).filter((r) => r.target.startsWith("/c/query-literal?"));
    expect(seen.map((r) => r.target)).toEqual(["/c/query-literal?key=$MSB_API_KEY"]);
    expect(leaked(out["query-literal"]!)).toEqual([]);
  });

  test("UDP to the intercepted port 443 (QUIC) is refused and logged; UDP to 7443 is echoed", () => {
    expect(out["udp-443"]).toContain("UDP 7443 echo quic-ish");
    expect(out["udp-443"]).toMatch(/UDP 443 (timeout|error)/);
    expect(log).toContain(`denied udp ${ns!.addresses[0]}:443 by TLS interception`);
  });

  test("keep-alive: the first request gets the value, the second on the same connection to another Host is blocked", () => {
    const o = out.keepalive!;
    expect(header(received("/c/keepalive-1")[0], "authorization")).toEqual([`Bearer ${SECRET}`]);
    expect(o).toContain("SAME-CONNECTION True");
    expect(statuses(o)).toEqual([200, 403]);
    expect(blockedHeader(o)).toBe(true);
    expect(received("/c/keepalive-2")).toEqual([]);
    expect(readEchoRecords(recordFile).filter((r) => header(r, "host").includes(OTHER) && r.sni === ALLOWED)).toEqual([]);
    expect(leaked(o)).toEqual([]);
  });

  test("CONNECT through a guest-side proxy: substituted for the allowed host only", () => {
    const o = out.connect!;
    const [allowed, other] = o.split("CASE /c/connect-other");
    expect(header(received("/c/connect-allowed")[0], "authorization")).toEqual([`Bearer ${SECRET}`]);
    expect(statuses(allowed!)).toEqual([200]);
    expect(received("/c/connect-other")).toEqual([]);
    expect(statuses(other ?? "")).toEqual([403]);
    expect(blockedHeader(other ?? "")).toBe(true);
    expect(leaked(o)).toEqual([]);
  });

  test("no request to other.test ever carried the value; the blocks are logged as tls: lines", () => {
    const all = readEchoRecords(recordFile);
    expect(all.filter((r) => r.sni === OTHER || r.local.startsWith(`${ns!.addresses[1]}:`))).toEqual([]);
    expect(all.filter((r) => r.sni !== ALLOWED).length).toBe(0);
    expect(log).toMatch(/tls: .*blocked.*API_KEY.*other\.test/);
    expect(leaked(log)).toEqual([]);
  });

  test("guest memory: the scan of the qemu process finds the guest's own marker and not the value", () => {
    expect(vmPid).toBeGreaterThan(0);
    expect(memory!.bytes).toBeGreaterThan(256 * 2 ** 20);
    console.log(`secrets: scanned ${(memory!.bytes / 2 ** 20).toFixed(0)} MiB in ${memory!.regions} mappings of qemu pid ${vmPid} (${memory!.unreadable} unreadable)`);
    expect(memory!.found.has(memoryMarker)).toBe(true);
    expect(FORMS.filter((f) => memory!.found.has(f))).toEqual([]);
  });

  test("MSB_HOME after the run (state.db, logs, the sandbox's disk): the value is nowhere; the guest's disk marker is found", () => {
    expect(disk!.markerFiles.length).toBeGreaterThan(0);
    expect(disk!.secretFiles).toEqual([]);
  });
});

test.skipIf(skip !== undefined)("nothing is left running", async () => {
  expect(await eventually(() => processesOf(home).length === 0, 30_000)).toBe(true);
});
