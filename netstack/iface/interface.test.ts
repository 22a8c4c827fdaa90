// Interface (gateway) tests with hand-built frames: ARP, NDP, ping, ICMP errors, RST for refused
// and unknown connections, source checks, and what must be dropped silently.
import { expect, test } from "bun:test";
import { DNS4, GUEST4, GUEST6, GUEST_MAC, GW4, GW6, GW_MAC } from "../test/fuzz";
import { parseIpv4, parseIpv6 } from "../wire/address";
import { ArpPacket, ArpRepr } from "../wire/arp";
import { EthernetFrame, EthernetRepr } from "../wire/ethernet";
import { Icmpv4Packet, Icmpv4Repr } from "../wire/icmpv4";
import { Icmpv6Packet, Icmpv6Repr, type Icmpv6Repr as Icmpv6ReprT } from "../wire/icmpv6";
import { Ipv4Packet, Ipv4Repr } from "../wire/ipv4";
import { Ipv6Packet, Ipv6Repr } from "../wire/ipv6";
import { TcpFlag, TcpPacket, TcpRepr } from "../wire/tcp";
import { UdpRepr } from "../wire/udp";
import { Interface } from "./interface";

function setup(opts: { udp?: boolean; tcp?: boolean } = {}) {
  const sent: Uint8Array[] = [];
  const udpSeen: string[] = [];
  const iface = new Interface({
    gatewayMac: GW_MAC, gatewayIPv4: GW4, dnsIPv4: DNS4, guestIPv4: GUEST4, guestPrefixV4: 24,
    gatewayIPv6: GW6, dnsIPv6: parseIpv6("fd6d:7362::3"), guestIPv6: GUEST6, guestPrefixV6: 64, mtu: 1500,
    tcp: { rcvBuf: 65536, sndBuf: 65536, timeWaitMs: 1000, maxRetries: 3 }, maxTcpConnections: 8,
  }, {
    tcpConnect: () => opts.tcp ?? false,
    udp: (_f, _s, _sp, d, dp) => { udpSeen.push(`${d.join(".")}:${dp}`); return opts.udp ?? false; },
    linkSend: (framed) => sent.push(framed.slice(4)),
    linkFull: () => false,
  });
  return { iface, sent, udpSeen };
}

const eth = (type: number, body: Uint8Array, dst = GW_MAC, src = GUEST_MAC) => {
  const f = new Uint8Array(14 + body.length);
  EthernetRepr.emit({ src, dst, etherType: type }, f);
  f.set(body, 14);
  return f;
};
const v4 = (proto: number, body: Uint8Array, dst: Uint8Array, src = GUEST4) => {
  const b = new Uint8Array(20 + body.length);
  Ipv4Repr.emit({ src, dst, protocol: proto, payloadLen: body.length, ttl: 64 }, b);
  b.set(body, 20);
  return eth(0x0800, b);
};
const v6 = (body: Uint8Array, dst: Uint8Array, hop: number) => {
  const b = new Uint8Array(40 + body.length);
  Ipv6Repr.emit({ src: GUEST6, dst, nextHeader: 58, payloadLen: body.length, hopLimit: hop }, b);
  b.set(body, 40);
  return eth(0x86dd, b);
};
const udp = (dst: Uint8Array, port: number) => {
  const b = new Uint8Array(12);
  UdpRepr.emit({ srcPort: 5000, dstPort: port, payload: new Uint8Array([1, 2, 3, 4]) }, b, 0, GUEST4, dst);
  return v4(17, b, dst);
};
const tcp = (dst: Uint8Array, flags: number, ack: number | null) => {
  const r: TcpRepr = { srcPort: 40000, dstPort: 80, seq: 100, ack, flags, window: 1000, options: {}, payload: new Uint8Array(0) };
  const b = new Uint8Array(TcpRepr.headerLen(r));
  TcpRepr.emit(r, b, 0, GUEST4, dst);
  return v4(6, b, dst);
};
const ipOf = (f: Uint8Array) => Ipv4Packet.newChecked(EthernetFrame.newChecked(f).payload);
const icmp6 = (r: Icmpv6ReprT, dst: Uint8Array, hop = 255) => {
  const b = new Uint8Array(Icmpv6Repr.bufferLen(r));
  Icmpv6Repr.emit(r, b, 0, GUEST6, dst);
  return v6(b, dst, hop);
};

test("ARP: answers for the gateway and DNS addresses only", () => {
  const { iface, sent } = setup();
  for (const target of [GW4, DNS4, parseIpv4("10.0.2.77")]) {
    const a = new Uint8Array(28);
    ArpRepr.emit({ op: 1, senderMac: GUEST_MAC, senderIp: GUEST4, targetMac: new Uint8Array(6), targetIp: target }, a);
    iface.receive(eth(0x0806, a, new Uint8Array(6).fill(0xff)));
  }
  expect(sent.length).toBe(2);
  const r = ArpRepr.parse(ArpPacket.newChecked(EthernetFrame.newChecked(sent[1]!).payload));
  expect(r).toMatchObject({ op: 2 });
  expect([...r.senderIp]).toEqual([...DNS4]);
  expect([...r.senderMac]).toEqual([...GW_MAC]);
});

test("ping to the gateway is answered; beyond it, admin-prohibited", () => {
  const { iface, sent } = setup();
  const echo = { kind: "echoRequest" as const, ident: 3, seq: 4, data: new Uint8Array([9, 9]) };
  const b = new Uint8Array(Icmpv4Repr.bufferLen(echo)); Icmpv4Repr.emit(echo, b);
  iface.receive(v4(1, b, GW4));
  iface.receive(v4(1, b, parseIpv4("1.1.1.1")));
  const reply = Icmpv4Repr.parse(Icmpv4Packet.newChecked(ipOf(sent[0]!).payload));
  expect(reply).toMatchObject({ kind: "echoReply", ident: 3, seq: 4 });
  expect(Icmpv4Repr.parse(Icmpv4Packet.newChecked(ipOf(sent[1]!).payload))).toMatchObject({ kind: "destUnreachable", code: 13 });
});

test("denied UDP gets ICMP admin-prohibited; multicast and broadcast are dropped without a word", () => {
  const { iface, sent, udpSeen } = setup({ udp: false });
  iface.receive(udp(parseIpv4("8.8.8.8"), 53));
  expect(sent.length).toBe(1);
  const err = Icmpv4Repr.parse(Icmpv4Packet.newChecked(ipOf(sent[0]!).payload));
  expect(err).toMatchObject({ kind: "destUnreachable", code: 13 });
  expect([...ipOf(sent[0]!).src]).toEqual([8, 8, 8, 8]);
  iface.receive(udp(parseIpv4("224.0.0.251"), 5353));
  iface.receive(udp(parseIpv4("255.255.255.255"), 67));
  iface.receive(udp(parseIpv4("10.0.2.255"), 137));
  expect(sent.length).toBe(1);
  expect(udpSeen).toEqual(["8.8.8.8:53"]);
});

test("refused SYNs and segments of unknown connections get RSTs; spoofed sources and foreign MACs are dropped", () => {
  const { iface, sent } = setup({ tcp: false });
  iface.receive(tcp(parseIpv4("1.2.3.4"), TcpFlag.SYN, null));
  const rst = TcpRepr.parse(TcpPacket.newChecked(ipOf(sent[0]!).payload), parseIpv4("1.2.3.4"), GUEST4);
  expect(rst.flags & TcpFlag.RST).toBeTruthy();
  expect(rst.ack).toBe(101);
  iface.receive(tcp(parseIpv4("1.2.3.4"), 0, 5555));
  const rst2 = TcpRepr.parse(TcpPacket.newChecked(ipOf(sent[1]!).payload), parseIpv4("1.2.3.4"), GUEST4);
  expect(rst2).toMatchObject({ seq: 5555, flags: TcpFlag.RST });
  iface.receive(tcp(parseIpv4("1.2.3.4"), TcpFlag.RST, 5555)); // never answer a RST
  const before = iface.stats.dropped;
  const spoof = tcp(parseIpv4("1.2.3.4"), TcpFlag.SYN, null);
  spoof.set(parseIpv4("10.0.2.16"), 14 + 12); // other source: checksum now wrong too, either way dropped
  iface.receive(spoof);
  iface.receive(tcp(parseIpv4("1.2.3.4"), TcpFlag.SYN, null).map((b, i) => (i < 6 ? 0x02 : b)));
  expect(sent.length).toBe(2);
  expect(iface.stats.dropped).toBe(before + 2);
});

test("the connection limit answers further SYNs with RST instead of growing", () => {
  const { iface, sent } = setup({ tcp: true });
  for (let i = 0; i < 10; i++) {
    const r: TcpRepr = { srcPort: 40000 + i, dstPort: 80, seq: 1, ack: null, flags: TcpFlag.SYN, window: 1000, options: {}, payload: new Uint8Array(0) };
    const b = new Uint8Array(20); TcpRepr.emit(r, b, 0, GUEST4, parseIpv4("1.2.3.4"));
    iface.receive(v4(6, b, parseIpv4("1.2.3.4")));
  }
  expect(iface.tcp.size).toBe(8);
  expect(sent.length).toBe(2);
  expect(iface.stats.drops["tcp-connection-limit"]).toBe(2);
  iface.close();
});

test("NDP: neighbor solicitations for the gateway are answered (hop limit 255 only); router solicitations get an RA", () => {
  const { iface, sent } = setup();
  iface.receive(icmp6({ kind: "neighborSolicit", target: GW6, sourceMac: GUEST_MAC }, GW6));
  iface.receive(icmp6({ kind: "neighborSolicit", target: GW6, sourceMac: GUEST_MAC }, GW6, 64)); // routed: ignored
  iface.receive(icmp6({ kind: "neighborSolicit", target: parseIpv6("fd6d:7362::99"), sourceMac: GUEST_MAC }, GW6));
  expect(sent.length).toBe(1);
  const p = Ipv6Packet.newChecked(EthernetFrame.newChecked(sent[0]!).payload);
  const na = Icmpv6Repr.parse(Icmpv6Packet.newChecked(p.payload), p.src, p.dst);
  expect(na).toMatchObject({ kind: "neighborAdvert", solicited: true, router: true });
  expect(p.hopLimit).toBe(255);
  iface.receive(icmp6({ kind: "routerSolicit", sourceMac: GUEST_MAC }, parseIpv6("ff02::2")));
  const p2 = Ipv6Packet.newChecked(EthernetFrame.newChecked(sent[1]!).payload);
  expect(p2.buf[40]).toBe(134);
});
