// ICMPv6 (RFC 4443) with Neighbor Discovery (RFC 4861): echo, errors, neighbor solicitation and
// advertisement, router solicitation and advertisement. Checksums cover the IPv6 pseudo-header.
import { fold, pseudoSumV6, sumWords } from "./checksum";
import { badChecksum, malformed, truncated, unsupported } from "./error";
import { IpProto } from "./ipv4";

export const ICMPV6_TYPE = 0;
export const ICMPV6_CODE = 1;
export const ICMPV6_CHECKSUM = 2;
export const ICMPV6_HEADER_LEN = 4;
export const ICMPV6_ECHO_IDENT = 4;
export const ICMPV6_ECHO_SEQ = 6;
export const ICMPV6_ECHO_DATA = 8;
export const NDP_NS_TARGET = 8; // after 4 reserved bytes
export const NDP_NS_OPTIONS = 24;
export const NDP_NA_FLAGS = 4;
export const NDP_RA_OPTIONS = 16;
export const NDP_OPT_SOURCE_LLADDR = 1;
export const NDP_OPT_TARGET_LLADDR = 2;
export const NDP_OPT_PREFIX_INFO = 3;
export const NDP_OPT_MTU = 5;

export const Icmpv6Type = {
  DestUnreachable: 1, PacketTooBig: 2, TimeExceeded: 3, ParamProblem: 4,
  EchoRequest: 128, EchoReply: 129,
  RouterSolicit: 133, RouterAdvert: 134, NeighborSolicit: 135, NeighborAdvert: 136,
} as const;

export class Icmpv6Packet {
  private constructor(readonly buf: Uint8Array) {}
  static checkLen(buf: Uint8Array): void {
    if (buf.length < ICMPV6_HEADER_LEN) throw truncated("ICMPv6 message", ICMPV6_HEADER_LEN, buf.length);
    const t = buf[ICMPV6_TYPE]!;
    const need = t === Icmpv6Type.NeighborSolicit || t === Icmpv6Type.NeighborAdvert ? NDP_NS_OPTIONS
      : t === Icmpv6Type.RouterAdvert ? NDP_RA_OPTIONS : 8;
    if (buf.length < need) throw truncated(`ICMPv6 type ${t}`, need, buf.length);
  }
  static newChecked(buf: Uint8Array): Icmpv6Packet {
    Icmpv6Packet.checkLen(buf);
    return new Icmpv6Packet(buf);
  }
  get type() { return this.buf[ICMPV6_TYPE]!; }
  get code() { return this.buf[ICMPV6_CODE]!; }
}

export interface NdpOptions { sourceMac?: Uint8Array; targetMac?: Uint8Array }

/** NDP options are length-in-8-octet units; zero length is invalid (RFC 4861 §4.6) and would loop. */
export function parseNdpOptions(b: Uint8Array): NdpOptions {
  const out: NdpOptions = {};
  let i = 0;
  while (i < b.length) {
    if (i + 2 > b.length) throw malformed("NDP options", "option header truncated");
    const type = b[i]!, len = b[i + 1]! * 8;
    if (len === 0) throw malformed("NDP options", `option ${type} has length 0`);
    if (i + len > b.length) throw malformed("NDP options", `option ${type} of ${len} bytes overruns the message`);
    if (type === NDP_OPT_SOURCE_LLADDR && len === 8) out.sourceMac = b.subarray(i + 2, i + 8);
    if (type === NDP_OPT_TARGET_LLADDR && len === 8) out.targetMac = b.subarray(i + 2, i + 8);
    i += len;
  }
  return out;
}

export type Icmpv6Repr =
  | { kind: "echoRequest" | "echoReply"; ident: number; seq: number; data: Uint8Array }
  | { kind: "destUnreachable" | "timeExceeded"; code: number; data: Uint8Array }
  | { kind: "packetTooBig"; mtu: number; data: Uint8Array }
  | { kind: "neighborSolicit"; target: Uint8Array; sourceMac?: Uint8Array }
  | { kind: "neighborAdvert"; target: Uint8Array; router: boolean; solicited: boolean; override: boolean; targetMac?: Uint8Array }
  | { kind: "routerSolicit"; sourceMac?: Uint8Array }
  | { kind: "routerAdvert"; hopLimit: number; lifetime: number; sourceMac: Uint8Array; mtu: number; prefix?: { addr: Uint8Array; len: number } };

const u32 = (b: Uint8Array, o: number) => ((b[o]! << 24) | (b[o + 1]! << 16) | (b[o + 2]! << 8) | b[o + 3]!) >>> 0;

export const Icmpv6Repr = {
  parse(p: Icmpv6Packet, src: Uint8Array, dst: Uint8Array): Icmpv6Repr {
    const b = p.buf;
    if (fold(sumWords(b, 0, b.length, pseudoSumV6(src, dst, IpProto.ICMPv6, b.length))) !== 0) throw badChecksum("ICMPv6 message");
    switch (p.type) {
      case Icmpv6Type.EchoRequest:
      case Icmpv6Type.EchoReply:
        return { kind: p.type === Icmpv6Type.EchoRequest ? "echoRequest" : "echoReply",
          ident: (b[4]! << 8) | b[5]!, seq: (b[6]! << 8) | b[7]!, data: b.subarray(ICMPV6_ECHO_DATA) };
      case Icmpv6Type.DestUnreachable: return { kind: "destUnreachable", code: p.code, data: b.subarray(8) };
      case Icmpv6Type.TimeExceeded: return { kind: "timeExceeded", code: p.code, data: b.subarray(8) };
      case Icmpv6Type.PacketTooBig: return { kind: "packetTooBig", mtu: u32(b, 4), data: b.subarray(8) };
      case Icmpv6Type.NeighborSolicit: {
        const o = parseNdpOptions(b.subarray(NDP_NS_OPTIONS));
        return { kind: "neighborSolicit", target: b.subarray(NDP_NS_TARGET, NDP_NS_TARGET + 16), sourceMac: o.sourceMac };
      }
      case Icmpv6Type.NeighborAdvert: {
        const o = parseNdpOptions(b.subarray(NDP_NS_OPTIONS));
        const f = b[NDP_NA_FLAGS]!;
        return { kind: "neighborAdvert", target: b.subarray(NDP_NS_TARGET, NDP_NS_TARGET + 16),
          router: (f & 0x80) !== 0, solicited: (f & 0x40) !== 0, override: (f & 0x20) !== 0, targetMac: o.targetMac };
      }
      case Icmpv6Type.RouterSolicit:
        return { kind: "routerSolicit", sourceMac: parseNdpOptions(b.subarray(8)).sourceMac };
      default:
        throw unsupported("ICMPv6 message", `type ${p.type}`);
    }
  },
  bufferLen(r: Icmpv6Repr): number {
    switch (r.kind) {
      case "echoRequest": case "echoReply": case "destUnreachable": case "timeExceeded": case "packetTooBig":
        return 8 + r.data.length;
      case "neighborSolicit": return NDP_NS_OPTIONS + (r.sourceMac ? 8 : 0);
      case "neighborAdvert": return NDP_NS_OPTIONS + (r.targetMac ? 8 : 0);
      case "routerSolicit": return 8 + (r.sourceMac ? 8 : 0);
      case "routerAdvert": return NDP_RA_OPTIONS + 8 + 8 + (r.prefix ? 32 : 0);
    }
  },
  emit(r: Icmpv6Repr, buf: Uint8Array, off: number, src: Uint8Array, dst: Uint8Array): void {
    const len = Icmpv6Repr.bufferLen(r);
    const b = buf.subarray(off, off + len);
    b.fill(0);
    const lladdr = (o: number, type: number, mac: Uint8Array) => { b[o] = type; b[o + 1] = 1; b.set(mac, o + 2); };
    switch (r.kind) {
      case "echoRequest": case "echoReply":
        b[0] = r.kind === "echoRequest" ? 128 : 129;
        b[4] = r.ident >> 8; b[5] = r.ident & 0xff; b[6] = r.seq >> 8; b[7] = r.seq & 0xff;
        b.set(r.data, 8);
        break;
      case "destUnreachable": case "timeExceeded":
        b[0] = r.kind === "destUnreachable" ? 1 : 3; b[1] = r.code; b.set(r.data, 8);
        break;
      case "packetTooBig":
        b[0] = 2; b[4] = r.mtu >>> 24; b[5] = (r.mtu >>> 16) & 0xff; b[6] = (r.mtu >>> 8) & 0xff; b[7] = r.mtu & 0xff; b.set(r.data, 8);
        break;
      case "neighborSolicit":
        b[0] = 135; b.set(r.target, NDP_NS_TARGET);
        if (r.sourceMac) lladdr(NDP_NS_OPTIONS, NDP_OPT_SOURCE_LLADDR, r.sourceMac);
        break;
      case "neighborAdvert":
        b[0] = 136; b[NDP_NA_FLAGS] = (r.router ? 0x80 : 0) | (r.solicited ? 0x40 : 0) | (r.override ? 0x20 : 0);
        b.set(r.target, NDP_NS_TARGET);
        if (r.targetMac) lladdr(NDP_NS_OPTIONS, NDP_OPT_TARGET_LLADDR, r.targetMac);
        break;
      case "routerSolicit":
        b[0] = 133;
        if (r.sourceMac) lladdr(8, NDP_OPT_SOURCE_LLADDR, r.sourceMac);
        break;
      case "routerAdvert": {
        b[0] = 134; b[4] = r.hopLimit; b[5] = 0; b[6] = r.lifetime >> 8; b[7] = r.lifetime & 0xff;
        let o = NDP_RA_OPTIONS;
        lladdr(o, NDP_OPT_SOURCE_LLADDR, r.sourceMac); o += 8;
        b[o] = NDP_OPT_MTU; b[o + 1] = 1; b[o + 4] = r.mtu >>> 24; b[o + 5] = (r.mtu >>> 16) & 0xff; b[o + 6] = (r.mtu >>> 8) & 0xff; b[o + 7] = r.mtu & 0xff; o += 8;
        if (r.prefix) {
          b[o] = NDP_OPT_PREFIX_INFO; b[o + 1] = 4; b[o + 2] = r.prefix.len; b[o + 3] = 0xc0; // on-link + autonomous
          b.fill(0xff, o + 4, o + 12); // valid and preferred lifetimes: infinite
          b.set(r.prefix.addr.subarray(0, 16), o + 16);
        }
        break;
      }
    }
    const c = fold(sumWords(b, 0, len, pseudoSumV6(src, dst, IpProto.ICMPv6, len)));
    b[ICMPV6_CHECKSUM] = c >> 8; b[ICMPV6_CHECKSUM + 1] = c & 0xff;
  },
};
