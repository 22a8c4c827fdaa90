// ARP for IPv4 over Ethernet (RFC 826): view and repr; other hardware/protocol types are rejected.
import { malformed, truncated, unsupported } from "./error";

export const ARP_HTYPE = 0;
export const ARP_PTYPE = 2;
export const ARP_HLEN = 4;
export const ARP_PLEN = 5;
export const ARP_OPER = 6;
export const ARP_SHA = 8;
export const ARP_SPA = 14;
export const ARP_THA = 18;
export const ARP_TPA = 24;
export const ARP_LEN = 28;

export const ArpOp = { Request: 1, Reply: 2 } as const;

export class ArpPacket {
  private constructor(readonly buf: Uint8Array) {}
  static checkLen(buf: Uint8Array): void {
    if (buf.length < ARP_LEN) throw truncated("ARP packet", ARP_LEN, buf.length);
  }
  static newChecked(buf: Uint8Array): ArpPacket {
    ArpPacket.checkLen(buf);
    return new ArpPacket(buf);
  }
  private u16(o: number) { return (this.buf[o]! << 8) | this.buf[o + 1]!; }
  get htype() { return this.u16(ARP_HTYPE); }
  get ptype() { return this.u16(ARP_PTYPE); }
  get hlen() { return this.buf[ARP_HLEN]!; }
  get plen() { return this.buf[ARP_PLEN]!; }
  get oper() { return this.u16(ARP_OPER); }
  get sha() { return this.buf.subarray(ARP_SHA, ARP_SHA + 6); }
  get spa() { return this.buf.subarray(ARP_SPA, ARP_SPA + 4); }
  get tha() { return this.buf.subarray(ARP_THA, ARP_THA + 6); }
  get tpa() { return this.buf.subarray(ARP_TPA, ARP_TPA + 4); }
}

export interface ArpRepr {
  op: 1 | 2;
  senderMac: Uint8Array;
  senderIp: Uint8Array;
  targetMac: Uint8Array;
  targetIp: Uint8Array;
}

export const ArpRepr = {
  parse(p: ArpPacket): ArpRepr {
    if (p.htype !== 1 || p.ptype !== 0x0800) throw unsupported("ARP packet", `htype ${p.htype} ptype 0x${p.ptype.toString(16)}`);
    if (p.hlen !== 6 || p.plen !== 4) throw malformed("ARP packet", `hlen ${p.hlen} plen ${p.plen} (want 6/4)`);
    const op = p.oper;
    if (op !== 1 && op !== 2) throw unsupported("ARP packet", `operation ${op}`);
    return { op, senderMac: p.sha, senderIp: p.spa, targetMac: p.tha, targetIp: p.tpa };
  },
  bufferLen: ARP_LEN,
  emit(r: ArpRepr, buf: Uint8Array): void {
    buf.set([0, 1, 0x08, 0x00, 6, 4, 0, r.op], 0);
    buf.set(r.senderMac, ARP_SHA);
    buf.set(r.senderIp, ARP_SPA);
    buf.set(r.targetMac, ARP_THA);
    buf.set(r.targetIp, ARP_TPA);
  },
};
