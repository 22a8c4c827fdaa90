// Real peers through the stack: the namespace "guest" (Linux's own TCP/IP stack on a TAP device)
// talks through a NetStack to servers on host loopback, with curl, iperf3 and Python sockets.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import type { Socket } from "bun";
import { allowLoopbackPorts, harnessUnavailable, startGuest, waitForPort, type Guest } from "./harness";
import { forwardingResolver } from "../dns/resolver";
import { buildResponse, DnsMessageRepr, DnsPacket } from "../wire/dns";

const why = harnessUnavailable();
const missing = ["curl", "python3", "iperf3", "ping"].filter((t) => !Bun.which(t));
const skip = why ?? (missing.length ? `needs ${missing.join(", ")}` : null);
const suite = skip ? describe.skip : describe;
if (skip) test.skip(`TAP harness tests skipped: ${skip}`, () => {});

/** Deterministic payload so both ends can check integrity. */
function pattern(n: number): Uint8Array {
  const b = new Uint8Array(n);
  let x = 12345;
  for (let i = 0; i < n; i++) { x = (Math.imul(x, 1103515245) + 12345) >>> 0; b[i] = x >>> 24; }
  return b;
}
const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

const BIG = pattern(64 << 20);
const BIG_SHA = sha(BIG);

suite("namespace guest through the stack (MTU 1500)", () => {
  let g: Guest;
  let http: ReturnType<typeof Bun.serve>;
  let http6: ReturnType<typeof Bun.serve>;
  let dnsQueries = 0;
  let dnsSock: { port: number; close(): void };
  const tcpServers: Array<{ stop(force?: boolean): void; port: number }> = [];
  let udpEcho: { port: number; close(): void };
  let publishedHostPort = 0;

  /** A raw TCP server on loopback with the given handlers; returns its port. */
  // Handlers are typed loosely on purpose: each server keeps its own per-socket state shape.
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  function tcpServer(handlers: Record<string, (...a: any[]) => void>): number {
    const l = Bun.listen({ hostname: "127.0.0.1", port: 0, allowHalfOpen: true, socket: handlers });
    tcpServers.push(l);
    return l.port;
  }

  let echoHalfClosePort = 0, resetPort = 0, sinkPort = 0, slowPort = 0, blobPort = 0;
  const sinkResults: string[] = [];

  beforeAll(async () => {
    http = Bun.serve({
      hostname: "127.0.0.1", port: 0,
      fetch: (req) => new URL(req.url).pathname === "/big" ? new Response(BIG) : new Response(`hello ${new URL(req.url).pathname}\n`),
    });
    http6 = Bun.serve({ hostname: "::1", port: 0, fetch: () => new Response("hello over v6\n") });
    // Reads until the guest half-closes, then answers with the byte count and closes.
    echoHalfClosePort = tcpServer({
      data(s: Socket<{ n: number }>, d: Uint8Array) { s.data = { n: (s.data?.n ?? 0) + d.length }; },
      end(s: Socket<{ n: number }>) { s.write(`got ${s.data?.n ?? 0}\n`); s.end(); },
    });
    resetPort = tcpServer({ open(s: Socket) { s.terminate(); }, data() {} });
    // Hashes everything the guest uploads.
    sinkPort = tcpServer({
      open(s: Socket<{ h: ReturnType<typeof createHash> }>) { s.data = { h: createHash("sha256") }; },
      data(s: Socket<{ h: ReturnType<typeof createHash> }>, d: Uint8Array) { s.data.h.update(d); },
      end(s: Socket<{ h: ReturnType<typeof createHash> }>) { const h = s.data.h.digest("hex"); sinkResults.push(h); s.write(h + "\n"); s.end(); },
    });
    // Sends 64 MiB as fast as the stack takes it (for the slow-reader backpressure test).
    blobPort = tcpServer({
      open(s: Socket<{ off: number }>) { s.data = { off: 0 }; push(s); },
      data() {},
      drain(s: Socket<{ off: number }>) { push(s); },
    });
    function push(s: Socket<{ off: number }>) {
      while (s.data.off < BIG.length) {
        const n = s.write(BIG.subarray(s.data.off, Math.min(BIG.length, s.data.off + (1 << 20))));
        s.data.off += n;
        if (n === 0) return;
      }
      s.end();
    }
    // Accepts but never reads (slow remote).
    slowPort = tcpServer({ open(s: Socket) { s.pause(); }, data() {} });
    udpEcho = await Bun.udpSocket({ hostname: "127.0.0.1", socket: { data(s, b, port, addr) { s.send(b, port, addr); } } });
    // A test DNS server on loopback: web.test → 10.0.2.2 (the host alias), TTL 300; counts queries.
    dnsSock = await Bun.udpSocket({
      hostname: "127.0.0.1",
      socket: {
        data(s, b, port, addr) {
          dnsQueries++;
          const q = DnsMessageRepr.parse(DnsPacket.newChecked(b)).questions[0]!;
          const answers = q.name === "web.test" && q.type === 1 ? [{ type: 1, ttl: 300, rdata: new Uint8Array([10, 0, 2, 2]) }]
            : q.name === "txt.test" && q.type === 16 ? [{ type: 16, ttl: 300, rdata: new Uint8Array([5, ...new TextEncoder().encode("hello")]) }] : [];
          s.send(buildResponse(b, q, answers.length || q.name.endsWith(".test") ? 0 : 3, answers), port, addr);
        },
      },
    });
    // The published port's host side: pick a free port.
    const probe = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    publishedHostPort = probe.port;
    probe.stop(true);
    g = await startGuest({
      policy: allowLoopbackPorts(http.port!, http6.port!, echoHalfClosePort, resetPort, sinkPort, slowPort, blobPort, udpEcho.port, 5201),
      resolver: forwardingResolver({ servers: [{ host: "127.0.0.1", port: dnsSock.port }] }),
      publishedPorts: [`${publishedHostPort}:8000`, `${publishedHostPort}:9000/udp`],
      tcp: { sndBuf: 1 << 20, rcvBuf: 1 << 20 },
    });
    // `ip netns exec` bind-mounts /etc/netns/<ns>/resolv.conf over /etc/resolv.conf.
    mkdirSync(`/etc/netns/${g.ns}`, { recursive: true });
    writeFileSync(`/etc/netns/${g.ns}/resolv.conf`, "nameserver 10.0.2.3\n");
  });

  afterAll(async () => {
    await g?.close();
    if (g) rmSync(`/etc/netns/${g.ns}`, { recursive: true, force: true });
    http?.stop(true); http6?.stop(true);
    for (const s of tcpServers) s.stop(true);
    udpEcho?.close(); dnsSock?.close();
  });

  const py = (code: string, timeoutMs = 60_000) => g.exec(["python3", "-c", code], { timeoutMs }).then((r) => r.stdout.trim());

  test("ping the gateway over IPv4 and IPv6", async () => {
    expect((await g.exec(["ping", "-c", "2", "-i", "0.2", "-W", "2", "10.0.2.2"])).stdout).toContain("2 received");
    expect((await g.exec(["ping", "-6", "-c", "2", "-i", "0.2", "-W", "2", "fd6d:7362::2"])).stdout).toContain("2 received");
  });

  test("curl to a host server by IP over IPv4 and IPv6", async () => {
    expect((await g.exec(["curl", "-sS", "-m", "10", `http://10.0.2.2:${http.port}/a`])).stdout).toBe("hello /a\n");
    expect((await g.exec(["curl", "-sS", "-m", "10", `http://[fd6d:7362::2]:${http6.port}/`])).stdout).toBe("hello over v6\n");
  });

  test("curl by name through the gateway's DNS, answered from cache the second time", async () => {
    const before = dnsQueries;
    expect((await g.exec(["curl", "-sS", "-4", "-m", "10", `http://web.test:${http.port}/named`])).stdout).toBe("hello /named\n");
    const after1 = dnsQueries;
    expect(after1).toBeGreaterThan(before);
    await g.exec(["curl", "-sS", "-4", "-m", "10", `http://web.test:${http.port}/named`]);
    expect(dnsQueries).toBe(after1); // TTL 300: the second lookup never reached the test server
    expect(g.stack.dns.stats.cacheHits).toBeGreaterThan(0);
  });

  test("DNS over UDP and TCP, IPv4 and IPv6: any record type passes through; host alias and NXDOMAIN", async () => {
    const out = await py(`
import socket, struct
def q(name, t, tcp=False):
    m = struct.pack(">HHHHHH", 0x4242, 0x0100, 1, 0, 0, 0) + b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\\0" + struct.pack(">HH", t, 1)
    if tcp:
        s = socket.create_connection(("10.0.2.3", 53), timeout=5); s.sendall(struct.pack(">H", len(m)) + m)
        n = struct.unpack(">H", s.recv(2))[0]; r = b""
        while len(r) < n: r += s.recv(n - len(r))
        s.close()
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(5); s.sendto(m, ("10.0.2.3", 53)); r = s.recv(4096)
    return r
r = q("txt.test", 16); print(r[:2].hex(), r[3] & 15, struct.unpack(">H", r[6:8])[0], b"hello" in r)
r = q("txt.test", 16, tcp=True); print(r[3] & 15, b"hello" in r)
r = q("host.msb.internal", 1); print(r[-4:] == bytes([10,0,2,2]))
r = q("nope.example", 1); print(r[3] & 15)
s6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); s6.settimeout(5)
s6.sendto(struct.pack(">HHHHHH", 7, 0x0100, 1, 0, 0, 0) + b"\\x03web\\x04test\\0" + struct.pack(">HH", 1, 1), ("fd6d:7362::3", 53))
r = s6.recv(512); print(r[:2] == b"\\0\\x07", r[-4:] == bytes([10,0,2,2]))
`);
    expect(out.split("\n")).toEqual(["4242 0 1 True", "0 True", "True", "3", "True True"]);
  });

  test("64 MiB download and upload with matching SHA-256", async () => {
    const down = await g.exec(["sh", "-c", `curl -sS -m 60 http://10.0.2.2:${http.port}/big | sha256sum`], { timeoutMs: 90_000 });
    expect(down.stdout.split(" ")[0]).toBe(BIG_SHA);
    const file = `${tmpdir()}/msb-netstack-upload-${process.pid}`;
    writeFileSync(file, BIG); // the namespace shares this filesystem
    const up = await py(`
import socket
data = open("${file}", "rb").read()
s = socket.create_connection(("10.0.2.2", ${sinkPort}), timeout=30)
s.sendall(data); s.shutdown(socket.SHUT_WR)
print(s.makefile().readline().strip())
`, 120_000);
    rmSync(file);
    expect(up).toBe(BIG_SHA);
  }, 180_000);

  test("half-close: the guest's FIN reaches the host, the host still answers", async () => {
    const out = await py(`
import socket
s = socket.create_connection(("10.0.2.2", ${echoHalfClosePort}), timeout=10)
s.sendall(b"x" * 100000); s.shutdown(socket.SHUT_WR)
print(s.makefile().readline().strip()); print(s.recv(10) == b"")
`);
    expect(out).toBe("got 100000\nTrue");
  });

  test("resets both ways; denied destinations are refused at once", async () => {
    const out = await py(`
import socket, struct, time
try:
    s = socket.create_connection(("10.0.2.2", ${resetPort}), timeout=10); s.recv(10); print("no-reset")
except (ConnectionResetError, ConnectionRefusedError, BrokenPipeError) as e: print("reset")
for addr in [("10.0.2.2", 1), ("192.168.77.1", 80), ("10.0.2.2", 22)]:
    t = time.time()
    try: socket.create_connection(addr, timeout=5); print("connected")
    except ConnectionRefusedError: print("refused", time.time() - t < 2)
# the guest aborts (SO_LINGER 0): the stack must drop the flow and reset the host side
s = socket.create_connection(("10.0.2.2", ${slowPort}), timeout=10)
s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)); s.close(); print("aborted")
`);
    expect(out.split("\n")).toEqual(["reset", "refused True", "refused True", "refused True", "aborted"]);
    await Bun.sleep(200);
    for (const c of g.stack.iface.tcp.values()) expect(c.ep.localPort).not.toBe(slowPort);
  });

  test("UDP to a host socket and back; denied UDP gets an ICMP error", async () => {
    const out = await py(`
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(5)
s.sendto(b"ping-udp", ("10.0.2.2", ${udpEcho.port})); print(s.recvfrom(100))
d = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); d.settimeout(5); d.connect(("192.168.77.1", 9))
d.send(b"x")
try: d.recv(10); print("answer")
except ConnectionRefusedError: print("refused")
except OSError as e: print("error", e.errno)
`);
    expect(out.split("\n")).toEqual([`(b'ping-udp', ('10.0.2.2', ${udpEcho.port}))`, "error 113"]);
  });

  test("200 parallel connections each get their answer", async () => {
    const out = await py(`
import socket, threading
ok = []
def one(i):
    s = socket.create_connection(("10.0.2.2", ${http.port}), timeout=30)
    s.sendall(b"GET /c%d HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n" % i)
    r = b""
    while True:
        d = s.recv(65536)
        if not d: break
        r += d
    if (b"hello /c%d" % i) in r: ok.append(i)
ts = [threading.Thread(target=one, args=(i,)) for i in range(200)]
[t.start() for t in ts]; [t.join() for t in ts]; print(len(ok))
`);
    expect(out).toBe("200");
  });

  test("a slow guest reader and a slow remote keep memory bounded", async () => {
    // Slow reader: the host pushes 64 MiB, the guest reads nothing for a while.
    const reader = g.spawn(["python3", "-c", `
import socket, time
s = socket.create_connection(("10.0.2.2", ${blobPort}), timeout=30)
time.sleep(1.5)
n = 0
while True:
    d = s.recv(1 << 20)
    if not d: break
    n += len(d)
print(n)
`]);
    const blobConns = () => [...g.stack.iface.tcp.values()].filter((c) => c.ep.localPort === blobPort);
    for (let i = 0; i < 200 && blobConns().length === 0; i++) await Bun.sleep(50);
    await Bun.sleep(500); // the host pushes as fast as it can while the guest does not read
    const held = blobConns().map((c) => c.heldBytes);
    expect(held.length).toBe(1);
    expect(held[0]!).toBeLessThanOrEqual((1 << 20) + (2 << 20)); // sndBuf plus at most one host read burst
    expect((await new Response(reader.stdout).text()).trim()).toBe(String(BIG.length));
    // Slow remote: the guest sends 32 MiB to a server that never reads.
    const writer = g.spawn(["python3", "-c", `
import socket
s = socket.create_connection(("10.0.2.2", ${slowPort}), timeout=30); s.settimeout(3)
n = 0
try:
    while True: n += s.send(b"y" * 65536)
except Exception: pass
print(n)
`]);
    const sent = Number((await new Response(writer.stdout).text()).trim());
    const conn = [...g.stack.iface.tcp.values()].find((c) => c.ep.localPort === slowPort);
    expect(conn).toBeDefined();
    expect(conn!.heldBytes).toBeLessThanOrEqual(1 << 20); // at most the receive buffer is held for a stuck remote
    expect(conn!.rcvWindow()).toBeLessThan(1460); // and the guest sees a window too small to send into
    expect(sent).toBeGreaterThan(1 << 20);
  }, 60_000);

  test("a published port reaches a server in the guest", async () => {
    const srv = g.spawn(["python3", "-c", `
import socket
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); l.bind(("0.0.0.0", 8000)); l.listen()
print("listening", flush=True)
for _ in range(2):
    c, a = l.accept(); d = c.recv(100); c.sendall(b"guest says " + d + b" from " + a[0].encode()); c.close()
`]);
    const rd = srv.stdout.getReader();
    await rd.read();
    for (let i = 0; i < 2; i++) {
      const { promise, resolve } = Promise.withResolvers<string>();
      let got = "";
      await Bun.connect({ hostname: "127.0.0.1", port: publishedHostPort, socket: {
        open(s) { s.write("hi"); }, data(_s, d) { got += new TextDecoder().decode(d); }, close() { resolve(got); },
      } });
      expect(await promise).toBe("guest says hi from 10.0.2.2");
    }
    await srv.exited;
    // Nobody listening in the guest: its RST closes the host connection instead of leaving it hanging.
    const { promise: closed, resolve: onClose } = Promise.withResolvers<string>();
    let got = "";
    await Bun.connect({ hostname: "127.0.0.1", port: publishedHostPort, socket: {
      data(_s, d) { got += new TextDecoder().decode(d); }, close() { onClose(got); },
    } });
    expect(await closed).toBe("");
  });

  test("a published UDP port reaches a server in the guest and its replies come back", async () => {
    const srv = g.spawn(["python3", "-c", `
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", 9000))
print("listening", flush=True)
for _ in range(2):
    d, a = s.recvfrom(100); s.sendto(b"udp guest says " + d, a)
`]);
    await srv.stdout.getReader().read();
    const { promise, resolve } = Promise.withResolvers<string[]>();
    const got: string[] = [];
    const sock = await Bun.udpSocket({ socket: { data(_s, d) { got.push(new TextDecoder().decode(d)); if (got.length === 2) resolve(got); } } });
    sock.send("one", publishedHostPort, "127.0.0.1");
    await Bun.sleep(50);
    sock.send("two", publishedHostPort, "127.0.0.1");
    expect(await promise).toEqual(["udp guest says one", "udp guest says two"]);
    sock.close();
    await srv.exited;
  });

  test("iperf3 both directions", async () => {
    const srv = Bun.spawn(["iperf3", "-s", "-B", "127.0.0.1", "-p", "5201"], { stdout: "ignore", stderr: "ignore" });
    try {
      await waitForPort(5201);
      const r = JSON.parse((await g.exec(["iperf3", "-c", "10.0.2.2", "-p", "5201", "-t", "2", "-J"], { timeoutMs: 30_000 })).stdout);
      expect(r.end.sum_received.bytes).toBeGreaterThan(10 << 20);
      const r2 = JSON.parse((await g.exec(["iperf3", "-c", "10.0.2.2", "-p", "5201", "-t", "2", "-R", "-J"], { timeoutMs: 30_000 })).stdout);
      expect(r2.end.sum_received.bytes).toBeGreaterThan(10 << 20);
    } finally {
      srv.kill();
      await srv.exited;
    }
  }, 60_000);
});

suite("namespace guest at MTU 65520", () => {
  test("64 MiB download in 64 KiB frames, checksum matches", async () => {
    const http = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response(BIG) });
    const g = await startGuest({ mtu: 65520, policy: allowLoopbackPorts(http.port!) });
    try {
      const down = await g.exec(["sh", "-c", `curl -sS -m 60 http://10.0.2.2:${http.port}/ | sha256sum`], { timeoutMs: 90_000 });
      expect(down.stdout.split(" ")[0]).toBe(BIG_SHA);
      expect(g.stack.stats.txFrames).toBeLessThan(BIG.length / 8000); // far fewer frames than at 1500
    } finally {
      await g.close();
      http.stop(true);
    }
  }, 120_000);
});

suite("namespace guest over a lossy, duplicating, reordering link", () => {
  test("16 MiB each way survive 2% loss, 1% duplication and 2% reordering in both directions; pcap written", async () => {
    const data = BIG.subarray(0, 16 << 20);
    const want = sha(data);
    const http = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response(data) });
    let upHash = "";
    const sink = Bun.listen({ hostname: "127.0.0.1", port: 0, allowHalfOpen: true, socket: {
      open(s: Socket<{ h: ReturnType<typeof createHash> }>) { s.data = { h: createHash("sha256") }; },
      data(s: Socket<{ h: ReturnType<typeof createHash> }>, d: Uint8Array) { s.data.h.update(d); },
      end(s: Socket<{ h: ReturnType<typeof createHash> }>) { upHash = s.data.h.digest("hex"); s.write(upHash + "\n"); s.end(); },
    } });
    const pcapPath = `${tmpdir()}/msb-netstack-lossy-${process.pid}.pcap`;
    const g = await startGuest({ policy: allowLoopbackPorts(http.port!, sink.port), faults: { drop: 0.02, duplicate: 0.01, reorder: 0.02, seed: 7 }, pcapPath });
    const file = `${tmpdir()}/msb-netstack-lossy-up-${process.pid}`;
    writeFileSync(file, data);
    try {
      const down = await g.exec(["sh", "-c", `curl -sS -m 120 http://10.0.2.2:${http.port}/ | sha256sum`], { timeoutMs: 150_000 });
      expect(down.stdout.split(" ")[0]).toBe(want);
      const up = await g.exec(["python3", "-c", `
import socket
s = socket.create_connection(("10.0.2.2", ${sink.port}), timeout=60)
s.sendall(open("${file}", "rb").read()); s.shutdown(socket.SHUT_WR)
print(s.makefile().readline().strip())
`], { timeoutMs: 150_000 });
      expect(up.stdout.trim()).toBe(want);
      expect(upHash).toBe(want);
      expect(Bun.file(pcapPath).size).toBeGreaterThan(32 << 20);
    } finally {
      await g.close();
      http.stop(true);
      sink.stop(true);
      rmSync(file, { force: true });
      rmSync(pcapPath, { force: true });
    }
  }, 300_000);
});

suite("namespace guest with virtio-net header offload (TSO + checksum offload) at MTU 1500", () => {
  test("64 MiB each way in 64 KiB segments with matching checksums; ping and UDP still work", async () => {
    const http = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response(BIG) });
    let upHash = "";
    const sink = Bun.listen({ hostname: "127.0.0.1", port: 0, allowHalfOpen: true, socket: {
      open(s: Socket<{ h: ReturnType<typeof createHash> }>) { s.data = { h: createHash("sha256") }; },
      data(s: Socket<{ h: ReturnType<typeof createHash> }>, d: Uint8Array) { s.data.h.update(d); },
      end(s: Socket<{ h: ReturnType<typeof createHash> }>) { upHash = s.data.h.digest("hex"); s.write(upHash + "\n"); s.end(); },
    } });
    const echo = await Bun.udpSocket({ hostname: "127.0.0.1", socket: { data(s, b, port, addr) { s.send(b, port, addr); } } });
    const g = await startGuest({ vnetHdr: true, policy: allowLoopbackPorts(http.port!, sink.port, echo.port) });
    const file = `${tmpdir()}/msb-netstack-vnet-up-${process.pid}`;
    writeFileSync(file, BIG);
    try {
      const down = await g.exec(["sh", "-c", `curl -sS -m 60 http://10.0.2.2:${http.port}/ | sha256sum`], { timeoutMs: 90_000 });
      expect(down.stdout.split(" ")[0]).toBe(BIG_SHA);
      const txAfterDown = g.stack.stats.txFrames;
      expect(txAfterDown).toBeLessThan(BIG.length / 8000); // segments crossed as 64 KiB frames, not 1500-byte ones
      const up = await g.exec(["python3", "-c", `
import socket
s = socket.create_connection(("10.0.2.2", ${sink.port}), timeout=60)
s.sendall(open("${file}", "rb").read()); s.shutdown(socket.SHUT_WR)
print(s.makefile().readline().strip())
`], { timeoutMs: 90_000 });
      expect(up.stdout.trim()).toBe(BIG_SHA);
      expect(g.stack.stats.rxFrames).toBeLessThan(BIG.length / 8000 + 20000);
      expect((await g.exec(["ping", "-c", "1", "-W", "2", "10.0.2.2"])).stdout).toContain("1 received");
      const udp = await g.exec(["python3", "-c", `
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(5)
s.sendto(b"x" * 1000, ("10.0.2.2", ${echo.port})); print(len(s.recv(2000)))
`]);
      expect(udp.stdout.trim()).toBe("1000");
    } finally {
      await g.close();
      http.stop(true);
      sink.stop(true);
      echo.close();
      rmSync(file, { force: true });
    }
  }, 180_000);
});
