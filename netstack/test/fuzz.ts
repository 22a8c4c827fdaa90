// Fuzz target over the frame parsers and the interface: mutated frames (bit flips, truncation,
// extension, length-field lies) built from valid seeds go through Interface.receive, which must
// never throw and never answer with a malformed frame. Deterministic for a given seed.
import { Interface } from "../iface/interface";
import { parseIpv4, parseIpv6, parseMac } from "../wire/address";
import { ArpRepr } from "../wire/arp";
import { buildQuery } from "../wire/dns";
import { EthernetFrame, EthernetRepr } from "../wire/ethernet";
import { Icmpv4Repr } from "../wire/icmpv4";
import { Icmpv6Repr } from "../wire/icmpv6";
import { Ipv4Packet, Ipv4Repr } from "../wire/ipv4";
import { Ipv6Repr } from "../wire/ipv6";
import { TcpRepr } from "../wire/tcp";
import { UdpRepr } from "../wire/udp";

export const GW_MAC = parseMac("5a:94:ef:e4:0c:dd");
export const GUEST_MAC = parseMac("52:54:00:12:34:56");
export const GUEST4 = parseIpv4("10.0.2.15"), GW4 = parseIpv4("10.0.2.2"), DNS4 = parseIpv4("10.0.2.3");
export const GUEST6 = parseIpv6("fd6d:7362::15"), GW6 = parseIpv6("fd6d:7362::2");

/** A small deterministic PRNG (mulberry32) so failures reproduce from the seed. */
export function rng(seed: number) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function eth(type: number, body: Uint8Array): Uint8Array {
  const f = new Uint8Array(14 + body.length);
  EthernetRepr.emit({ src: GUEST_MAC, dst: GW_MAC, etherType: type }, f);
  f.set(body, 14);
  return f;
}
function v4(proto: number, body: Uint8Array, dst = GW4): Uint8Array {
  const b = new Uint8Array(20 + body.length);
  Ipv4Repr.emit({ src: GUEST4, dst, protocol: proto, payloadLen: body.length, ttl: 64 }, b);
  b.set(body, 20);
  return eth(0x0800, b);
}
function v6(next: number, body: Uint8Array, hop = 64, dst = GW6): Uint8Array {
  const b = new Uint8Array(40 + body.length);
  Ipv6Repr.emit({ src: GUEST6, dst, nextHeader: next, payloadLen: body.length, hopLimit: hop }, b);
  b.set(body, 40);
  return eth(0x86dd, b);
}

/** Valid frames of every kind the interface handles: the seeds the mutator starts from. */
export function seedFrames(): Uint8Array[] {
  const out: Uint8Array[] = [];
  const arp = new Uint8Array(28);
  ArpRepr.emit({ op: 1, senderMac: GUEST_MAC, senderIp: GUEST4, targetMac: new Uint8Array(6), targetIp: GW4 }, arp);
  out.push(eth(0x0806, arp));
  const echo = { kind: "echoRequest" as const, ident: 1, seq: 1, data: new Uint8Array(16) };
  const icmp = new Uint8Array(Icmpv4Repr.bufferLen(echo)); Icmpv4Repr.emit(echo, icmp); out.push(v4(1, icmp));
  const tcp = (dst: Uint8Array, flags: number, opts = {}) => {
    const r: TcpRepr = { srcPort: 40000, dstPort: 53, seq: 100, ack: flags & 2 ? null : 1, flags, window: 1000, options: opts, payload: new Uint8Array(flags & 2 ? 0 : 20) };
    const b = new Uint8Array(TcpRepr.headerLen(r) + r.payload.length);
    TcpRepr.emit(r, b, 0, GUEST4, dst);
    return b;
  };
  out.push(v4(6, tcp(DNS4, 2, { mss: 1460, wscale: 7, sackPermitted: true }), DNS4));
  out.push(v4(6, tcp(DNS4, 0), DNS4));
  const q = buildQuery(7, "example.com", 1);
  const udp = new Uint8Array(8 + q.length); UdpRepr.emit({ srcPort: 5353, dstPort: 53, payload: q }, udp, 0, GUEST4, DNS4);
  out.push(v4(17, udp, DNS4));
  const ns = { kind: "neighborSolicit" as const, target: GW6, sourceMac: GUEST_MAC };
  const nsb = new Uint8Array(Icmpv6Repr.bufferLen(ns)); Icmpv6Repr.emit(ns, nsb, 0, GUEST6, GW6); out.push(v6(58, nsb, 255));
  const e6 = { kind: "echoRequest" as const, ident: 1, seq: 1, data: new Uint8Array(8) };
  const e6b = new Uint8Array(Icmpv6Repr.bufferLen(e6)); Icmpv6Repr.emit(e6, e6b, 0, GUEST6, GW6); out.push(v6(58, e6b));
  return out;
}

export function mutate(frame: Uint8Array, r: () => number): Uint8Array {
  let f = frame.slice();
  const n = 1 + Math.floor(r() * 4);
  for (let i = 0; i < n; i++) {
    const k = r();
    if (k < 0.4) f[Math.floor(r() * f.length)]! ^= 1 << Math.floor(r() * 8);
    else if (k < 0.55) f = f.subarray(0, Math.floor(r() * f.length));
    else if (k < 0.65) { const g = new Uint8Array(f.length + Math.floor(r() * 64)); g.set(f); f = g; }
    else if (k < 0.85 && f.length > 20) {
      // Lie in a length-ish field: IPv4 total length, IHL, UDP length, TCP data offset, option lengths.
      const at = [16, 17, 14, 38, 39, 46, 47, 54, 55, 18, 19, 58, 59][Math.floor(r() * 13)]!;
      if (at < f.length) f[at] = Math.floor(r() * 256);
    } else if (f.length) f[Math.floor(r() * f.length)] = Math.floor(r() * 256);
  }
  return f;
}

/** Runs `iterations` mutated frames through a fresh interface; returns what came out for checking. */
export function fuzzInterface(seed: number, iterations: number, vnetHdr = false) {
  const r = rng(seed);
  // With the virtio-net header, each seed gets one (checksum-offload flags included) for the mutator to attack too.
  const seeds = seedFrames().map((f) => {
    if (!vnetHdr) return f;
    const g = new Uint8Array(12 + f.length);
    g[0] = 1; g[1] = 1; g[4] = 0xa8; g[5] = 0x05; g[6] = 34; g[8] = 16;
    g.set(f, 12);
    return g;
  });
  const sent: Uint8Array[] = [];
  const iface = new Interface({
    gatewayMac: GW_MAC, gatewayIPv4: GW4, dnsIPv4: DNS4, guestIPv4: GUEST4, guestPrefixV4: 24,
    gatewayIPv6: GW6, dnsIPv6: parseIpv6("fd6d:7362::3"), guestIPv6: GUEST6, guestPrefixV6: 64, mtu: 1500,
    tcp: { rcvBuf: 1 << 16, sndBuf: 1 << 16, timeWaitMs: 1000, maxRetries: 3 }, maxTcpConnections: 64, vnetHdr,
  }, {
    tcpConnect: () => false, // refuse: exercises the RST path without host sockets
    udp: () => false,
    linkSend: (framed) => sent.push(framed.subarray(vnetHdr ? 16 : 4)),
    linkFull: () => false,
  });
  for (let i = 0; i < iterations; i++) {
    iface.receive(mutate(seeds[Math.floor(r() * seeds.length)]!, r));
    iface.endOfBatch();
  }
  iface.close();
  return { stats: iface.stats, sent };
}

/** Checks that an emitted frame parses cleanly (the stack must never send garbage). */
export function checkEmitted(f: Uint8Array): void {
  const e = EthernetFrame.newChecked(f);
  if (e.etherType === 0x0800) Ipv4Repr.parse(Ipv4Packet.newChecked(e.payload));
}

if (import.meta.main) {
  const seed = Number(process.argv[2] ?? Date.now() % 1e9);
  const n = Number(process.argv[3] ?? 1_000_000);
  const t = performance.now();
  const { stats } = fuzzInterface(seed, n);
  console.log(`fuzz seed ${seed}: ${n} frames in ${((performance.now() - t) / 1000).toFixed(1)} s, dropped ${stats.dropped}`, stats.drops);
}
