// IPv4 headers (RFC 791): view with length/IHL/total-length checks and a repr without options.
import { checksum } from "./checksum";
import { badChecksum, malformed, truncated, unsupported } from "./error";

export const IPV4_VER_IHL = 0;
export const IPV4_TOS = 1;
export const IPV4_TOTAL_LEN = 2;
export const IPV4_IDENT = 4;
export const IPV4_FLAGS_FRAG = 6;
export const IPV4_TTL = 8;
export const IPV4_PROTO = 9;
export const IPV4_CHECKSUM = 10;
export const IPV4_SRC = 12;
export const IPV4_DST = 16;
export const IPV4_HEADER_LEN = 20;

export const IpProto = { ICMP: 1, TCP: 6, UDP: 17, ICMPv6: 58, HopByHop: 0 } as const;

export class Ipv4Packet {
  private constructor(readonly buf: Uint8Array) {}
  /** Checks that the fixed header, the options and the whole datagram (total length) are present. */
  static checkLen(buf: Uint8Array): void {
    if (buf.length < IPV4_HEADER_LEN) throw truncated("IPv4 header", IPV4_HEADER_LEN, buf.length);
    const ihl = (buf[IPV4_VER_IHL]! & 0x0f) * 4;
    if (ihl < IPV4_HEADER_LEN) throw malformed("IPv4 header", `header length ${ihl} < 20`);
    const total = (buf[IPV4_TOTAL_LEN]! << 8) | buf[IPV4_TOTAL_LEN + 1]!;
    if (total < ihl) throw malformed("IPv4 header", `total length ${total} < header length ${ihl}`);
    if (buf.length < total) throw truncated("IPv4 datagram", total, buf.length);
  }
  static newChecked(buf: Uint8Array): Ipv4Packet {
    Ipv4Packet.checkLen(buf);
    return new Ipv4Packet(buf);
  }
  get version() { return this.buf[IPV4_VER_IHL]! >> 4; }
  get headerLen() { return (this.buf[IPV4_VER_IHL]! & 0x0f) * 4; }
  get totalLen() { return (this.buf[IPV4_TOTAL_LEN]! << 8) | this.buf[IPV4_TOTAL_LEN + 1]!; }
  get moreFrags() { return (this.buf[IPV4_FLAGS_FRAG]! & 0x20) !== 0; }
  get fragOffset() { return ((this.buf[IPV4_FLAGS_FRAG]! & 0x1f) << 8) | this.buf[IPV4_FLAGS_FRAG + 1]!; }
  get ttl() { return this.buf[IPV4_TTL]!; }
  get protocol() { return this.buf[IPV4_PROTO]!; }
  get src() { return this.buf.subarray(IPV4_SRC, IPV4_SRC + 4); }
  get dst() { return this.buf.subarray(IPV4_DST, IPV4_DST + 4); }
  verifyChecksum() { return checksum(this.buf, 0, this.headerLen) === 0; }
  /** The payload, bounded by total length (Ethernet padding excluded). */
  get payload() { return this.buf.subarray(this.headerLen, this.totalLen); }
}

export interface Ipv4Repr { src: Uint8Array; dst: Uint8Array; protocol: number; payloadLen: number; ttl: number }

export const Ipv4Repr = {
  parse(p: Ipv4Packet): Ipv4Repr {
    if (p.version !== 4) throw malformed("IPv4 header", `version ${p.version}`);
    if (!p.verifyChecksum()) throw badChecksum("IPv4 header");
    if (p.moreFrags || p.fragOffset !== 0) throw unsupported("IPv4 datagram", "fragments are not reassembled");
    return { src: p.src, dst: p.dst, protocol: p.protocol, payloadLen: p.totalLen - p.headerLen, ttl: p.ttl };
  },
  bufferLen: IPV4_HEADER_LEN,
  emit(r: Ipv4Repr, buf: Uint8Array, off = 0): void {
    const total = IPV4_HEADER_LEN + r.payloadLen;
    buf[off + IPV4_VER_IHL] = 0x45;
    buf[off + IPV4_TOS] = 0;
    buf[off + IPV4_TOTAL_LEN] = total >> 8;
    buf[off + IPV4_TOTAL_LEN + 1] = total & 0xff;
    buf[off + IPV4_IDENT] = 0;
    buf[off + IPV4_IDENT + 1] = 0;
    buf[off + IPV4_FLAGS_FRAG] = 0x40; // DF: we never fragment; the guest's MTU is known
    buf[off + IPV4_FLAGS_FRAG + 1] = 0;
    buf[off + IPV4_TTL] = r.ttl;
    buf[off + IPV4_PROTO] = r.protocol;
    buf[off + IPV4_CHECKSUM] = 0;
    buf[off + IPV4_CHECKSUM + 1] = 0;
    for (let i = 0; i < 4; i++) { buf[off + IPV4_SRC + i] = r.src[i]!; buf[off + IPV4_DST + i] = r.dst[i]!; }
    const c = checksum(buf, off, off + IPV4_HEADER_LEN);
    buf[off + IPV4_CHECKSUM] = c >> 8;
    buf[off + IPV4_CHECKSUM + 1] = c & 0xff;
  },
};
