// UDP datagrams (RFC 768): view with length checks, repr with checksum verification over the pseudo-header.
import { fold, pseudoSum, sumWords } from "./checksum";
import { badChecksum, malformed, truncated } from "./error";
import { IpProto } from "./ipv4";

export const UDP_SRC_PORT = 0;
export const UDP_DST_PORT = 2;
export const UDP_LENGTH = 4;
export const UDP_CHECKSUM = 6;
export const UDP_HEADER_LEN = 8;

export class UdpPacket {
  private constructor(readonly buf: Uint8Array) {}
  static checkLen(buf: Uint8Array): void {
    if (buf.length < UDP_HEADER_LEN) throw truncated("UDP header", UDP_HEADER_LEN, buf.length);
    const len = (buf[UDP_LENGTH]! << 8) | buf[UDP_LENGTH + 1]!;
    if (len < UDP_HEADER_LEN) throw malformed("UDP header", `length field ${len} < 8`);
    if (len > buf.length) throw truncated("UDP datagram", len, buf.length);
  }
  static newChecked(buf: Uint8Array): UdpPacket {
    UdpPacket.checkLen(buf);
    return new UdpPacket(buf);
  }
  get srcPort() { return (this.buf[UDP_SRC_PORT]! << 8) | this.buf[UDP_SRC_PORT + 1]!; }
  get dstPort() { return (this.buf[UDP_DST_PORT]! << 8) | this.buf[UDP_DST_PORT + 1]!; }
  get length() { return (this.buf[UDP_LENGTH]! << 8) | this.buf[UDP_LENGTH + 1]!; }
  get checksum() { return (this.buf[UDP_CHECKSUM]! << 8) | this.buf[UDP_CHECKSUM + 1]!; }
  get payload() { return this.buf.subarray(UDP_HEADER_LEN, this.length); }
}

export interface UdpRepr { srcPort: number; dstPort: number; payload: Uint8Array }

export const UdpRepr = {
  parse(p: UdpPacket, src: Uint8Array, dst: Uint8Array, verifyChecksum = true): UdpRepr {
    const len = p.length;
    // A zero checksum means "none" over IPv4 only; IPv6 requires it (RFC 8200 §8.1).
    if (verifyChecksum && (p.checksum !== 0 || src.length === 16)) {
      if (fold(sumWords(p.buf, 0, len, pseudoSum(src, dst, IpProto.UDP, len))) !== 0) throw badChecksum("UDP datagram");
    }
    if (p.srcPort === 0 || p.dstPort === 0) throw malformed("UDP datagram", "port 0");
    return { srcPort: p.srcPort, dstPort: p.dstPort, payload: p.payload };
  },
  bufferLen: (r: UdpRepr) => UDP_HEADER_LEN + r.payload.length,
  emit(r: UdpRepr, buf: Uint8Array, off: number, src: Uint8Array, dst: Uint8Array): void {
    const len = UDP_HEADER_LEN + r.payload.length;
    buf[off] = r.srcPort >> 8;
    buf[off + 1] = r.srcPort & 0xff;
    buf[off + 2] = r.dstPort >> 8;
    buf[off + 3] = r.dstPort & 0xff;
    buf[off + 4] = len >> 8;
    buf[off + 5] = len & 0xff;
    buf[off + 6] = 0;
    buf[off + 7] = 0;
    buf.set(r.payload, off + UDP_HEADER_LEN);
    let c = fold(sumWords(buf, off, off + len, pseudoSum(src, dst, IpProto.UDP, len)));
    if (c === 0) c = 0xffff;
    buf[off + 6] = c >> 8;
    buf[off + 7] = c & 0xff;
  },
};
