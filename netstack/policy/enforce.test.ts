// The policy as the stack enforces it, with hand-built guest frames: denial lines (rate-limited),
// the half-open, connection and UDP flow limits (each refusing only the new flow, logged), pings,
// fragments, other protocols and multicast reported, the DNS address's other ports refused.
import { afterEach, describe, expect, test } from "bun:test";
import { NetStack } from "../stack";
import { GUEST4, GUEST_MAC, GW4, GW_MAC, DNS4 } from "../test/fuzz";
import { parseIpv4 } from "../wire/address";
import { EthernetRepr } from "../wire/ethernet";
import { Icmpv4Repr } from "../wire/icmpv4";
import { Ipv4Repr } from "../wire/ipv4";
import { TcpFlag, TcpRepr } from "../wire/tcp";
import { UdpRepr } from "../wire/udp";
import { DenialLog } from "./log";
import { compilePolicy } from "./rules";

const eth = (body: Uint8Array) => {
  const f = new Uint8Array(14 + body.length);
  EthernetRepr.emit({ src: GUEST_MAC, dst: GW_MAC, etherType: 0x0800 }, f);
  f.set(body, 14);
  return f;
};
const v4 = (proto: number, body: Uint8Array, dst: Uint8Array, frag = 0) => {
  const b = new Uint8Array(20 + body.length);
  Ipv4Repr.emit({ src: GUEST4, dst, protocol: proto, payloadLen: body.length, ttl: 64 }, b);
  if (frag) { b[6] = 0x20; } // MF
  b.set(body, 20);
  return eth(b);
};
const syn = (dst: Uint8Array, dstPort: number, srcPort: number) => {
  const r: TcpRepr = { srcPort, dstPort, seq: 1000, ack: null, flags: TcpFlag.SYN, window: 65535, options: { mss: 1460 }, payload: new Uint8Array(0) };
  const b = new Uint8Array(TcpRepr.headerLen(r));
  TcpRepr.emit(r, b, 0, GUEST4, dst);
  return v4(6, b, dst);
};
const udp = (dst: Uint8Array, dstPort: number, srcPort: number) => {
  const b = new Uint8Array(12);
  UdpRepr.emit({ srcPort, dstPort, payload: new Uint8Array([1, 2, 3, 4]) }, b, 0, GUEST4, dst);
  return v4(17, b, dst);
};

let stacks: NetStack[] = [];
afterEach(() => { for (const s of stacks) s.close(); stacks = []; });

function setup(o: ConstructorParameters<typeof NetStack>[0] = {}) {
  const lines: string[] = [];
  const out: Uint8Array[] = [];
  const stack = new NetStack({ name: "t1", guestMac: "52:54:00:12:34:56", log: (l) => lines.push(l), ...o });
  stacks.push(stack);
  stack.attach({ write: (d) => { out.push(d.slice()); return d.length; }, end: () => {} });
  const send = (f: Uint8Array) => stack.iface.receive(f);
  const frames = () => {
    const all: Uint8Array[] = [];
    for (const chunk of out) for (let o = 0; o + 4 <= chunk.length;) {
      const len = ((chunk[o]! << 24) | (chunk[o + 1]! << 16) | (chunk[o + 2]! << 8) | chunk[o + 3]!) >>> 0;
      all.push(chunk.subarray(o + 4, o + 4 + len));
      o += 4 + len;
    }
    return all;
  };
  const rsts = async () => {
    await Bun.sleep(5); // the encoder flushes in a microtask
    return frames().filter((f) => f.length >= 14 + 40 && f[14 + 9] === 6 && (f[14 + 20 + 13]! & TcpFlag.RST) !== 0).length;
  };
  return { stack, lines, send, rsts, out };
}

describe("denials are logged with the sandbox, destination and rule", () => {
  test("tcp, udp, the host via the gateway, the DNS address's other ports", () => {
    const { send, lines } = setup({ policy: compilePolicy({ hostAddresses: [] }) });
    send(syn(parseIpv4("169.254.169.254"), 80, 40001));
    send(udp(parseIpv4("10.1.2.3"), 9999, 40002));
    send(syn(GW4, 22, 40003));
    send(syn(DNS4, 80, 40004));
    send(udp(parseIpv4("8.8.8.8"), 53, 40005));
    expect(lines).toEqual([
      "netstack: sandbox t1: denied tcp 169.254.169.254:80 by deny group:metadata (preset public)",
      "netstack: sandbox t1: denied udp 10.1.2.3:9999 by deny group:private (preset public)",
      "netstack: sandbox t1: denied tcp 10.0.2.2:22 (host loopback via the gateway) by deny group:host (preset public)",
      "netstack: sandbox t1: denied tcp 10.0.2.3:80 by the DNS address serves only port 53",
      "netstack: sandbox t1: denied udp 8.8.8.8:53 by deny udp:any:53,853,5353,5355 (preset public)",
    ]);
  });

  test("pings beyond the gateway, other protocols, fragments and multicast are reported", () => {
    const { send, lines } = setup({ policy: compilePolicy({ hostAddresses: [] }) });
    const echo = new Uint8Array(Icmpv4Repr.bufferLen({ kind: "echoRequest", ident: 1, seq: 1, data: new Uint8Array(8) }));
    Icmpv4Repr.emit({ kind: "echoRequest", ident: 1, seq: 1, data: new Uint8Array(8) }, echo, 0);
    send(v4(1, echo, parseIpv4("169.254.169.254")));
    send(v4(1, echo, parseIpv4("1.1.1.1")));
    send(v4(47, new Uint8Array(8), parseIpv4("1.1.1.1")));
    send(v4(17, new Uint8Array(16), parseIpv4("1.1.1.1"), 1));
    send(udp(parseIpv4("224.0.0.251"), 5353, 5353));
    expect(lines.join("\n")).toMatch(/denied icmp 169\.254\.169\.254 by deny group:metadata/);
    expect(lines.join("\n")).toMatch(/denied icmp 1\.1\.1\.1 by echo beyond the gateway is not forwarded/);
    expect(lines.join("\n")).toMatch(/denied ip proto 47 1\.1\.1\.1 by only TCP, UDP and ICMP/);
    expect(lines.join("\n")).toMatch(/denied ipv4 fragment 1\.1\.1\.1 by fragments are not reassembled/);
    expect(lines.join("\n")).toMatch(/denied udp 224\.0\.0\.251:5353 by multicast/);
  });

  test("a flood of denials is rate-limited and summed up", () => {
    const { send, lines, stack } = setup({ policy: compilePolicy({ hostAddresses: [] }), denialLog: { perKey: 3, total: 10 } });
    for (let i = 0; i < 500; i++) send(syn(parseIpv4("10.0.0.1"), 80, 20000 + i));
    for (let i = 0; i < 50; i++) send(syn(parseIpv4(`10.0.1.${i}`), 80, 30000 + i));
    expect(lines.length).toBe(10);
    expect(stack.denials.denials).toBe(550);
    stack.denials.flush();
    expect(lines).toContain("netstack: sandbox t1: suppressed 497 more denials of tcp 10.0.0.1:80 in the last 60 s");
    expect(lines.some((l) => /suppressed \d+ more denials of tcp 10\.0\.1\./.test(l))).toBe(true);
  });
});

describe("limits refuse only the new flow, and say so", () => {
  test("half-open connections: beyond the limit, SYNs are reset", async () => {
    const server = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    try {
      const { send, lines, rsts } = setup({ policy: compilePolicy({ hostAddresses: [], allow: ["group:host"] }), tcp: { maxHalfOpen: 8 } });
      for (let i = 0; i < 12; i++) send(syn(GW4, server.port, 41000 + i));
      expect(await rsts()).toBe(4);
      expect(lines.filter((l) => l.includes("half-open connection limit (8 connecting at once)")).length).toBe(4);
    } finally { server.stop(true); }
  });

  test("connections: beyond maxConnections, SYNs are reset", async () => {
    const server = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    try {
      const { send, lines, rsts } = setup({ policy: compilePolicy({ hostAddresses: [], allow: ["group:host"] }), tcp: { maxConnections: 5, maxHalfOpen: 100 } });
      for (let i = 0; i < 7; i++) send(syn(GW4, server.port, 42000 + i));
      expect(await rsts()).toBe(2);
      expect(lines.filter((l) => l.includes("the connection limit (5 at once)")).length).toBe(2);
    } finally { server.stop(true); }
  });

  test("UDP flows: beyond maxFlows, a new flow is refused; existing flows keep working", () => {
    const { send, lines, stack } = setup({ policy: compilePolicy({ hostAddresses: [], allow: ["group:host"] }), udp: { maxFlows: 4 } });
    for (let i = 0; i < 6; i++) send(udp(GW4, 9, 43000 + i));
    expect(stack.udp.size).toBe(4);
    send(udp(GW4, 9, 43000));
    expect(lines.filter((l) => l.includes("the UDP flow limit (4 flows)")).length).toBe(2);
  });
});

test("DenialLog: per destination, in total, and the window summary", () => {
  const now = { t: 0 };
  const lines: string[] = [];
  const log = new DenialLog({ name: "x", write: (l) => lines.push(l), perKey: 2, total: 5, windowMs: 1000, now: () => now.t });
  for (let i = 0; i < 4; i++) log.deny("a", "a");
  for (let i = 0; i < 4; i++) log.deny(`k${i}`, `k${i}`);
  expect(lines).toEqual(["sandbox x: denied a", "sandbox x: denied a", "sandbox x: denied k0", "sandbox x: denied k1", "sandbox x: denied k2"]);
  now.t = 1000;
  log.deny("a", "a");
  expect(lines.slice(5)).toEqual([
    "sandbox x: suppressed 2 more denials of a in the last 1 s",
    "sandbox x: suppressed 1 more denials of k3 in the last 1 s",
    "sandbox x: denied a",
  ]);
  log.close();
});

describe("ingress rules on published ports", () => {
  test("a peer an ingress rule denies is cut off and logged; an allowed one gets through to the guest", async () => {
    const port = 20000 + Math.floor(Math.random() * 20000);
    const denyAll = setup({ policy: compilePolicy({ hostAddresses: [], deny: ["ingress:any"] }), publishedPorts: [`${port}:8080`] });
    await denyAll.stack.start();
    const closed = Promise.withResolvers<void>();
    await Bun.connect({ hostname: "127.0.0.1", port, socket: { data() {}, close() { closed.resolve(); } } });
    await closed.promise;
    expect(denyAll.lines.join("\n")).toMatch(/denied ingress tcp 127\.0\.0\.1 → guest:8080 by default/);
    denyAll.stack.close();

    const port2 = port + 1;
    const allowLocal = setup({ policy: compilePolicy({ hostAddresses: [], deny: ["ingress:any"], allow: ["ingress:tcp:127.0.0.1:8080"] }), publishedPorts: [`${port2}:8080`] });
    await allowLocal.stack.start();
    const s = await Bun.connect({ hostname: "127.0.0.1", port: port2, socket: { data() {} } });
    // Let the stack open its side toward the guest (a SYN out of the gateway).
    await Bun.sleep(50);
    expect(allowLocal.stack.iface.tcp.size).toBe(1);
    expect(allowLocal.lines.filter((l) => l.includes("denied"))).toEqual([]);
    s.end();
  });
});
