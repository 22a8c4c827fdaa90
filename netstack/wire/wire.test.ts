// Wire-layer tests: every parser is fed truncated, mis-sized, badly-checksummed and option-overrunning
// input and must reject it with a WireError; valid packets round-trip through emit and parse.
import { describe, expect, test } from "bun:test";
import { parseIpv4, parseIpv6, ipv6ToString, parseCidr, inPrefix } from "./address";
import { ArpPacket, ArpRepr } from "./arp";
import { checksum } from "./checksum";
import { DnsMessageRepr, DnsPacket, buildQuery, buildResponse, readName } from "./dns";
import { WireError } from "./error";
import { EthernetFrame, EthernetRepr } from "./ethernet";
import { Icmpv4Packet, Icmpv4Repr } from "./icmpv4";
import { Icmpv6Packet, Icmpv6Repr, parseNdpOptions } from "./icmpv6";
import { Ipv4Packet, Ipv4Repr } from "./ipv4";
import { Ipv6Packet, Ipv6Repr } from "./ipv6";
import { TcpPacket, TcpRepr, parseTcpOptions } from "./tcp";
import { UdpPacket, UdpRepr } from "./udp";

const code = (f: () => unknown) => {
  try { f(); } catch (e) { if (e instanceof WireError) return e.code; throw e; }
  return "ok";
};
const A = parseIpv4("10.0.2.15"), B = parseIpv4("93.184.216.34");
const A6 = parseIpv6("fd6d:7362::15"), B6 = parseIpv6("2001:4860::8888");

function ipv4Datagram(proto: number, payload: Uint8Array) {
  const b = new Uint8Array(20 + payload.length);
  Ipv4Repr.emit({ src: A, dst: B, protocol: proto, payloadLen: payload.length, ttl: 64 }, b);
  b.set(payload, 20);
  return b;
}
function tcpSegment(r: Partial<TcpRepr> = {}, src = A, dst = B) {
  const repr: TcpRepr = { srcPort: 1234, dstPort: 80, seq: 1, ack: 5, flags: 0, window: 100, options: {}, payload: new Uint8Array([1, 2, 3]), ...r };
  const b = new Uint8Array(TcpRepr.headerLen(repr) + repr.payload.length);
  TcpRepr.emit(repr, b, 0, src, dst);
  return b;
}

describe("addresses", () => {
  test("IPv6 parse/format round-trips and compresses the longest zero run", () => {
    expect(ipv6ToString(parseIpv6("fd6d:7362:0:0:0:0:0:15"))).toBe("fd6d:7362::15");
    expect(ipv6ToString(parseIpv6("::ffff:1.2.3.4"))).toBe("::ffff:102:304");
    expect(ipv6ToString(parseIpv6("::"))).toBe("::");
    expect(code(() => parseIpv6("1::2::3"))).toBe("malformed");
    expect(code(() => parseIpv4("1.2.3.256"))).toBe("malformed");
  });
  test("prefix matching", () => {
    const n = parseCidr("10.0.0.0/8");
    expect(inPrefix(parseIpv4("10.9.9.9"), n.addr, n.prefix)).toBe(true);
    expect(inPrefix(parseIpv4("11.0.0.1"), n.addr, n.prefix)).toBe(false);
  });
});

describe("ethernet", () => {
  test("truncated header is rejected before any field access", () => {
    expect(code(() => EthernetFrame.newChecked(new Uint8Array(13)))).toBe("truncated");
  });
  test("round-trip", () => {
    const b = new Uint8Array(14);
    EthernetRepr.emit({ src: new Uint8Array([2, 0, 0, 0, 0, 1]), dst: new Uint8Array(6).fill(0xff), etherType: 0x0800 }, b);
    const r = EthernetRepr.parse(EthernetFrame.newChecked(b));
    expect(r.etherType).toBe(0x0800);
    expect([...r.src]).toEqual([2, 0, 0, 0, 0, 1]);
  });
});

describe("arp", () => {
  const good = () => {
    const b = new Uint8Array(28);
    ArpRepr.emit({ op: 1, senderMac: new Uint8Array(6).fill(2), senderIp: A, targetMac: new Uint8Array(6), targetIp: B }, b);
    return b;
  };
  test("round-trip", () => expect(ArpRepr.parse(ArpPacket.newChecked(good())).op).toBe(1));
  test("truncated, wrong lengths, unknown op", () => {
    expect(code(() => ArpPacket.newChecked(good().subarray(0, 27)))).toBe("truncated");
    const b = good(); b[4] = 8;
    expect(code(() => ArpRepr.parse(ArpPacket.newChecked(b)))).toBe("malformed");
    const c = good(); c[7] = 9;
    expect(code(() => ArpRepr.parse(ArpPacket.newChecked(c)))).toBe("unsupported");
  });
});

describe("ipv4", () => {
  test("round-trip and checksum", () => {
    const d = ipv4Datagram(17, new Uint8Array(8));
    expect(checksum(d, 0, 20)).toBe(0);
    const r = Ipv4Repr.parse(Ipv4Packet.newChecked(d));
    expect(r.payloadLen).toBe(8);
  });
  test("short buffer, IHL < 5, total length beyond buffer, total < IHL", () => {
    expect(code(() => Ipv4Packet.newChecked(new Uint8Array(19)))).toBe("truncated");
    const d = ipv4Datagram(17, new Uint8Array(8));
    const ihl = d.slice(); ihl[0] = 0x44;
    expect(code(() => Ipv4Packet.newChecked(ihl))).toBe("malformed");
    const big = d.slice(); big[3] = 200;
    expect(code(() => Ipv4Packet.newChecked(big))).toBe("truncated");
    const small = d.slice(); small[2] = 0; small[3] = 10;
    expect(code(() => Ipv4Packet.newChecked(small))).toBe("malformed");
  });
  test("bad checksum, wrong version, fragments", () => {
    const d = ipv4Datagram(17, new Uint8Array(8));
    const bad = d.slice(); bad[8] = bad[8]! ^ 1;
    expect(code(() => Ipv4Repr.parse(Ipv4Packet.newChecked(bad)))).toBe("checksum");
    const frag = ipv4Datagram(17, new Uint8Array(8));
    frag[6] = 0x20; frag[10] = frag[11] = 0;
    const c = checksum(frag, 0, 20); frag[10] = c >> 8; frag[11] = c & 0xff;
    expect(code(() => Ipv4Repr.parse(Ipv4Packet.newChecked(frag)))).toBe("unsupported");
  });
  test("Ethernet padding is excluded from the payload", () => {
    const d = ipv4Datagram(17, new Uint8Array(8));
    const padded = new Uint8Array(d.length + 18); padded.set(d);
    expect(Ipv4Packet.newChecked(padded).payload.length).toBe(8);
  });
});

describe("ipv6", () => {
  test("payload length beyond buffer is rejected", () => {
    const b = new Uint8Array(48);
    Ipv6Repr.emit({ src: A6, dst: B6, nextHeader: 17, payloadLen: 8, hopLimit: 64 }, b);
    expect(Ipv6Repr.parse(Ipv6Packet.newChecked(b)).payloadLen).toBe(8);
    expect(code(() => Ipv6Packet.newChecked(b.subarray(0, 47)))).toBe("truncated");
    expect(code(() => Ipv6Packet.newChecked(b.subarray(0, 39)))).toBe("truncated");
    const v = b.slice(); v[0] = 0x40;
    expect(code(() => Ipv6Repr.parse(Ipv6Packet.newChecked(v)))).toBe("malformed");
  });
});

describe("udp", () => {
  const dgram = (src = A, dst = B) => {
    const b = new Uint8Array(12);
    UdpRepr.emit({ srcPort: 5000, dstPort: 53, payload: new Uint8Array([1, 2, 3, 4]) }, b, 0, src, dst);
    return b;
  };
  test("round-trip over both families", () => {
    expect(UdpRepr.parse(UdpPacket.newChecked(dgram()), A, B).payload.length).toBe(4);
    expect(UdpRepr.parse(UdpPacket.newChecked(dgram(A6, B6)), A6, B6).dstPort).toBe(53);
  });
  test("length field larger than buffer or smaller than header", () => {
    const b = dgram(); b[5] = 40;
    expect(code(() => UdpPacket.newChecked(b))).toBe("truncated");
    const c = dgram(); c[5] = 4;
    expect(code(() => UdpPacket.newChecked(c))).toBe("malformed");
    expect(code(() => UdpPacket.newChecked(new Uint8Array(7)))).toBe("truncated");
  });
  test("bad checksum; zero checksum allowed over IPv4 only", () => {
    const b = dgram(); b[9] = b[9]! ^ 0xff;
    expect(code(() => UdpRepr.parse(UdpPacket.newChecked(b), A, B))).toBe("checksum");
    const z = dgram(); z[6] = z[7] = 0;
    expect(code(() => UdpRepr.parse(UdpPacket.newChecked(z), A, B))).toBe("ok");
    const z6 = dgram(A6, B6); z6[6] = z6[7] = 0;
    expect(code(() => UdpRepr.parse(UdpPacket.newChecked(z6), A6, B6))).toBe("checksum");
  });
});

describe("tcp", () => {
  test("round-trip with options", () => {
    const b = tcpSegment({ flags: 2, ack: null, options: { mss: 1460, wscale: 7, sackPermitted: true } });
    const r = TcpRepr.parse(TcpPacket.newChecked(b), A, B);
    expect(r.options).toEqual({ mss: 1460, wscale: 7, sackPermitted: true });
    expect(r.ack).toBeNull();
    expect([...r.payload]).toEqual([1, 2, 3]);
  });
  test("data offset below 20 or beyond the buffer", () => {
    const b = tcpSegment(); b[12] = 0x40;
    expect(code(() => TcpPacket.newChecked(b))).toBe("malformed");
    const c = tcpSegment(); c[12] = 0xf0;
    expect(code(() => TcpPacket.newChecked(c))).toBe("truncated");
    expect(code(() => TcpPacket.newChecked(new Uint8Array(19)))).toBe("truncated");
  });
  test("bad checksum and illegal flag combinations", () => {
    const b = tcpSegment(); b[20] = b[20]! ^ 1;
    expect(code(() => TcpRepr.parse(TcpPacket.newChecked(b), A, B))).toBe("checksum");
    expect(code(() => TcpRepr.parse(TcpPacket.newChecked(tcpSegment({ flags: 3 })), A, B))).toBe("malformed");
    expect(code(() => TcpRepr.parse(TcpPacket.newChecked(tcpSegment({ flags: 6 })), A, B))).toBe("malformed");
  });
  test("options that overrun, lack a length, have length < 2 or wrong fixed lengths", () => {
    expect(code(() => parseTcpOptions(new Uint8Array([2, 4, 5])))).toBe("malformed");
    expect(code(() => parseTcpOptions(new Uint8Array([1, 1, 2])))).toBe("malformed");
    expect(code(() => parseTcpOptions(new Uint8Array([8, 0, 0, 0])))).toBe("malformed");
    expect(code(() => parseTcpOptions(new Uint8Array([2, 3, 5, 0])))).toBe("malformed");
    expect(code(() => parseTcpOptions(new Uint8Array([5, 7, 0, 0, 0, 0, 0])))).toBe("malformed");
    expect(parseTcpOptions(new Uint8Array([3, 3, 30, 0])).wscale).toBe(14);
    expect(parseTcpOptions(new Uint8Array([8, 10, 0, 0, 0, 0, 0, 0, 0, 0, 2, 4, 5, 0])).mss).toBe(1280);
  });
});

describe("icmp", () => {
  test("v4 echo round-trip, bad checksum, truncated", () => {
    const b = new Uint8Array(12);
    Icmpv4Repr.emit({ kind: "echoRequest", ident: 7, seq: 9, data: new Uint8Array([1, 2, 3, 4]) }, b);
    const r = Icmpv4Repr.parse(Icmpv4Packet.newChecked(b));
    expect(r).toMatchObject({ kind: "echoRequest", ident: 7, seq: 9 });
    b[9] = b[9]! ^ 1;
    expect(code(() => Icmpv4Repr.parse(Icmpv4Packet.newChecked(b)))).toBe("checksum");
    expect(code(() => Icmpv4Packet.newChecked(new Uint8Array(7)))).toBe("truncated");
  });
  test("v6 neighbor solicitation round-trip; truncated NS; zero-length NDP option", () => {
    const r = { kind: "neighborSolicit" as const, target: parseIpv6("fd6d:7362::2"), sourceMac: new Uint8Array([2, 0, 0, 0, 0, 9]) };
    const b = new Uint8Array(Icmpv6Repr.bufferLen(r));
    Icmpv6Repr.emit(r, b, 0, A6, B6);
    const p = Icmpv6Repr.parse(Icmpv6Packet.newChecked(b), A6, B6);
    expect(p.kind).toBe("neighborSolicit");
    expect(code(() => Icmpv6Packet.newChecked(b.subarray(0, 20)))).toBe("truncated");
    expect(code(() => Icmpv6Repr.parse(Icmpv6Packet.newChecked(b), A6, A6))).toBe("checksum");
    expect(code(() => parseNdpOptions(new Uint8Array([1, 0, 0, 0, 0, 0, 0, 0])))).toBe("malformed");
    expect(code(() => parseNdpOptions(new Uint8Array([1, 2, 0, 0, 0, 0, 0, 0])))).toBe("malformed");
  });
});

describe("dns", () => {
  test("query round-trip", () => {
    const q = buildQuery(0x1234, "Example.COM", 28);
    const r = DnsMessageRepr.parse(DnsPacket.newChecked(q));
    expect(r.questions).toEqual([{ name: "example.com", type: 28, class: 1 }]);
  });
  test("compression loops, forward pointers and over-long names are rejected", () => {
    const loop = new Uint8Array([...new Uint8Array(12), 0xc0, 12]);
    expect(code(() => readName(loop, 12))).toBe("malformed");
    const fwd = new Uint8Array([...new Uint8Array(12), 0xc0, 20, 0, 0, 0, 0, 0, 0, 1, 0x61, 0]);
    expect(code(() => readName(fwd, 12))).toBe("malformed");
    const long: number[] = [];
    for (let i = 0; i < 5; i++) long.push(63, ...new Array(63).fill(0x61));
    long.push(0);
    expect(code(() => readName(new Uint8Array(long), 0))).toBe("malformed");
    expect(code(() => readName(new Uint8Array([5, 0x61]), 0))).toBe("truncated");
  });
  test("counts that promise more records than present", () => {
    const q = buildQuery(1, "a.b", 1);
    q[7] = 3; // ancount 3, nothing there
    expect(code(() => DnsMessageRepr.parse(DnsPacket.newChecked(q)))).toBe("truncated");
    expect(code(() => DnsPacket.newChecked(new Uint8Array(11)))).toBe("truncated");
  });
  test("response records expose TTL offsets and the minimum TTL", () => {
    const q = buildQuery(1, "a.b", 1);
    const r = buildResponse(q, { name: "a.b", type: 1, class: 1 }, 0, [
      { type: 1, ttl: 300, rdata: new Uint8Array([1, 2, 3, 4]) },
      { type: 1, ttl: 60, rdata: new Uint8Array([5, 6, 7, 8]) },
    ]);
    const m = DnsMessageRepr.parse(DnsPacket.newChecked(r));
    expect(m.minTtl).toBe(60);
    expect(m.ttlOffsets.length).toBe(2);
    expect(m.answers[1]!.rdata).toEqual(new Uint8Array([5, 6, 7, 8]));
  });
});
