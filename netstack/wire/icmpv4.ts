// ICMPv4 (RFC 792): echo request/reply and the error messages the gateway sends back to the guest.
import { checksum } from "./checksum";
import { badChecksum, truncated, unsupported } from "./error";

export const ICMP_TYPE = 0;
export const ICMP_CODE = 1;
export const ICMP_CHECKSUM = 2;
export const ICMP_IDENT = 4; // echo
export const ICMP_SEQ = 6; // echo
export const ICMP_HEADER_LEN = 8;

export const Icmpv4Type = { EchoReply: 0, DestUnreachable: 3, EchoRequest: 8, TimeExceeded: 11 } as const;
export const Icmpv4Unreach = { Net: 0, Host: 1, Protocol: 2, Port: 3, AdminProhibited: 13 } as const;

export class Icmpv4Packet {
  private constructor(readonly buf: Uint8Array) {}
  static checkLen(buf: Uint8Array): void {
    if (buf.length < ICMP_HEADER_LEN) throw truncated("ICMPv4 message", ICMP_HEADER_LEN, buf.length);
  }
  static newChecked(buf: Uint8Array): Icmpv4Packet {
    Icmpv4Packet.checkLen(buf);
    return new Icmpv4Packet(buf);
  }
  get type() { return this.buf[ICMP_TYPE]!; }
  get code() { return this.buf[ICMP_CODE]!; }
  get ident() { return (this.buf[ICMP_IDENT]! << 8) | this.buf[ICMP_IDENT + 1]!; }
  get seq() { return (this.buf[ICMP_SEQ]! << 8) | this.buf[ICMP_SEQ + 1]!; }
  get data() { return this.buf.subarray(ICMP_HEADER_LEN); }
}

export type Icmpv4Repr =
  | { kind: "echoRequest" | "echoReply"; ident: number; seq: number; data: Uint8Array }
  | { kind: "destUnreachable"; code: number; /** the offending datagram, truncated */ data: Uint8Array }
  | { kind: "timeExceeded"; code: number; data: Uint8Array };

export const Icmpv4Repr = {
  parse(p: Icmpv4Packet): Icmpv4Repr {
    if (checksum(p.buf) !== 0) throw badChecksum("ICMPv4 message");
    switch (p.type) {
      case Icmpv4Type.EchoRequest: return { kind: "echoRequest", ident: p.ident, seq: p.seq, data: p.data };
      case Icmpv4Type.EchoReply: return { kind: "echoReply", ident: p.ident, seq: p.seq, data: p.data };
      case Icmpv4Type.DestUnreachable: return { kind: "destUnreachable", code: p.code, data: p.data };
      case Icmpv4Type.TimeExceeded: return { kind: "timeExceeded", code: p.code, data: p.data };
      default: throw unsupported("ICMPv4 message", `type ${p.type}`);
    }
  },
  bufferLen: (r: Icmpv4Repr) => ICMP_HEADER_LEN + r.data.length,
  emit(r: Icmpv4Repr, buf: Uint8Array, off = 0): void {
    const type = { echoRequest: 8, echoReply: 0, destUnreachable: 3, timeExceeded: 11 }[r.kind];
    buf[off + ICMP_TYPE] = type;
    buf[off + ICMP_CODE] = r.kind === "destUnreachable" || r.kind === "timeExceeded" ? r.code : 0;
    buf.fill(0, off + 2, off + 8);
    if (r.kind === "echoRequest" || r.kind === "echoReply") {
      buf[off + ICMP_IDENT] = r.ident >> 8; buf[off + ICMP_IDENT + 1] = r.ident & 0xff;
      buf[off + ICMP_SEQ] = r.seq >> 8; buf[off + ICMP_SEQ + 1] = r.seq & 0xff;
    }
    buf.set(r.data, off + ICMP_HEADER_LEN);
    const c = checksum(buf, off, off + ICMP_HEADER_LEN + r.data.length);
    buf[off + ICMP_CHECKSUM] = c >> 8; buf[off + ICMP_CHECKSUM + 1] = c & 0xff;
  },
};
