// IPv6 fixed headers (RFC 8200): view with payload-length checks and a repr. Extension headers are
// rejected by the repr (the guest has no reason to send them to its gateway, except MLD, which we ignore).
import { malformed, truncated } from "./error";

export const IPV6_VER_TC_FLOW = 0;
export const IPV6_PAYLOAD_LEN = 4;
export const IPV6_NEXT_HEADER = 6;
export const IPV6_HOP_LIMIT = 7;
export const IPV6_SRC = 8;
export const IPV6_DST = 24;
export const IPV6_HEADER_LEN = 40;

export class Ipv6Packet {
  private constructor(readonly buf: Uint8Array) {}
  static checkLen(buf: Uint8Array): void {
    if (buf.length < IPV6_HEADER_LEN) throw truncated("IPv6 header", IPV6_HEADER_LEN, buf.length);
    const plen = (buf[IPV6_PAYLOAD_LEN]! << 8) | buf[IPV6_PAYLOAD_LEN + 1]!;
    if (buf.length < IPV6_HEADER_LEN + plen) throw truncated("IPv6 packet", IPV6_HEADER_LEN + plen, buf.length);
  }
  static newChecked(buf: Uint8Array): Ipv6Packet {
    Ipv6Packet.checkLen(buf);
    return new Ipv6Packet(buf);
  }
  get version() { return this.buf[IPV6_VER_TC_FLOW]! >> 4; }
  get payloadLen() { return (this.buf[IPV6_PAYLOAD_LEN]! << 8) | this.buf[IPV6_PAYLOAD_LEN + 1]!; }
  get nextHeader() { return this.buf[IPV6_NEXT_HEADER]!; }
  get hopLimit() { return this.buf[IPV6_HOP_LIMIT]!; }
  get src() { return this.buf.subarray(IPV6_SRC, IPV6_SRC + 16); }
  get dst() { return this.buf.subarray(IPV6_DST, IPV6_DST + 16); }
  get payload() { return this.buf.subarray(IPV6_HEADER_LEN, IPV6_HEADER_LEN + this.payloadLen); }
}

export interface Ipv6Repr { src: Uint8Array; dst: Uint8Array; nextHeader: number; payloadLen: number; hopLimit: number }

export const Ipv6Repr = {
  parse(p: Ipv6Packet): Ipv6Repr {
    if (p.version !== 6) throw malformed("IPv6 header", `version ${p.version}`);
    return { src: p.src, dst: p.dst, nextHeader: p.nextHeader, payloadLen: p.payloadLen, hopLimit: p.hopLimit };
  },
  bufferLen: IPV6_HEADER_LEN,
  emit(r: Ipv6Repr, buf: Uint8Array, off = 0): void {
    buf[off] = 0x60;
    buf[off + 1] = 0;
    buf[off + 2] = 0;
    buf[off + 3] = 0;
    buf[off + IPV6_PAYLOAD_LEN] = r.payloadLen >> 8;
    buf[off + IPV6_PAYLOAD_LEN + 1] = r.payloadLen & 0xff;
    buf[off + IPV6_NEXT_HEADER] = r.nextHeader;
    buf[off + IPV6_HOP_LIMIT] = r.hopLimit;
    buf.set(r.src, off + IPV6_SRC);
    buf.set(r.dst, off + IPV6_DST);
  },
};
