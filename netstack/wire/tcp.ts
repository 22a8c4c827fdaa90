// TCP segments (RFC 9293): view with data-offset checks, option parsing that refuses overruns, and a repr.
import { fold, pseudoSum, sumWords } from "./checksum";
import { badChecksum, malformed, truncated } from "./error";
import { IpProto } from "./ipv4";

export const TCP_SRC_PORT = 0;
export const TCP_DST_PORT = 2;
export const TCP_SEQ = 4;
export const TCP_ACK = 8;
export const TCP_DATA_OFF = 12;
export const TCP_FLAGS = 13;
export const TCP_WINDOW = 14;
export const TCP_CHECKSUM = 16;
export const TCP_URGENT = 18;
export const TCP_HEADER_LEN = 20;
export const TCP_MAX_HEADER_LEN = 60;

export const TcpFlag = { FIN: 0x01, SYN: 0x02, RST: 0x04, PSH: 0x08, ACK: 0x10, URG: 0x20 } as const;

export const TcpOpt = { END: 0, NOP: 1, MSS: 2, WSCALE: 3, SACK_PERMITTED: 4, SACK: 5, TIMESTAMP: 8 } as const;

export class TcpPacket {
  private constructor(readonly buf: Uint8Array) {}
  static checkLen(buf: Uint8Array): void {
    if (buf.length < TCP_HEADER_LEN) throw truncated("TCP header", TCP_HEADER_LEN, buf.length);
    const off = (buf[TCP_DATA_OFF]! >> 4) * 4;
    if (off < TCP_HEADER_LEN) throw malformed("TCP header", `data offset ${off} < 20`);
    if (off > buf.length) throw truncated("TCP header with options", off, buf.length);
  }
  static newChecked(buf: Uint8Array): TcpPacket {
    TcpPacket.checkLen(buf);
    return new TcpPacket(buf);
  }
  private u16(o: number) { return (this.buf[o]! << 8) | this.buf[o + 1]!; }
  private u32(o: number) { return ((this.buf[o]! << 24) | (this.buf[o + 1]! << 16) | (this.buf[o + 2]! << 8) | this.buf[o + 3]!) >>> 0; }
  get srcPort() { return this.u16(TCP_SRC_PORT); }
  get dstPort() { return this.u16(TCP_DST_PORT); }
  get seq() { return this.u32(TCP_SEQ); }
  get ack() { return this.u32(TCP_ACK); }
  get headerLen() { return (this.buf[TCP_DATA_OFF]! >> 4) * 4; }
  get flags() { return this.buf[TCP_FLAGS]! & 0x3f; }
  get window() { return this.u16(TCP_WINDOW); }
  get options() { return this.buf.subarray(TCP_HEADER_LEN, this.headerLen); }
  get payload() { return this.buf.subarray(this.headerLen); }
}

export interface TcpOptions {
  mss?: number;
  wscale?: number;
  sackPermitted?: boolean;
  sack?: Array<[number, number]>;
}

/** Parses the option list; any option whose length runs past the header is an error, not a guess. */
export function parseTcpOptions(opts: Uint8Array): TcpOptions {
  const out: TcpOptions = {};
  let i = 0;
  while (i < opts.length) {
    const kind = opts[i]!;
    if (kind === TcpOpt.END) break;
    if (kind === TcpOpt.NOP) { i++; continue; }
    if (i + 1 >= opts.length) throw malformed("TCP options", `option ${kind} has no length byte`);
    const len = opts[i + 1]!;
    if (len < 2) throw malformed("TCP options", `option ${kind} has length ${len} < 2`);
    if (i + len > opts.length) throw malformed("TCP options", `option ${kind} of length ${len} overruns the header`);
    const body = opts.subarray(i + 2, i + len);
    switch (kind) {
      case TcpOpt.MSS:
        if (len !== 4) throw malformed("TCP options", `MSS option length ${len} != 4`);
        out.mss = (body[0]! << 8) | body[1]!;
        break;
      case TcpOpt.WSCALE:
        if (len !== 3) throw malformed("TCP options", `window scale option length ${len} != 3`);
        out.wscale = Math.min(body[0]!, 14); // RFC 7323 §2.3: larger shifts are treated as 14
        break;
      case TcpOpt.SACK_PERMITTED:
        if (len !== 2) throw malformed("TCP options", `SACK-permitted option length ${len} != 2`);
        out.sackPermitted = true;
        break;
      case TcpOpt.SACK: {
        if ((len - 2) % 8 !== 0) throw malformed("TCP options", `SACK option length ${len} is not 2+8n`);
        out.sack = [];
        for (let j = 0; j < body.length; j += 8) {
          const l = ((body[j]! << 24) | (body[j + 1]! << 16) | (body[j + 2]! << 8) | body[j + 3]!) >>> 0;
          const r = ((body[j + 4]! << 24) | (body[j + 5]! << 16) | (body[j + 6]! << 8) | body[j + 7]!) >>> 0;
          out.sack.push([l, r]);
        }
        break;
      }
      default: // unknown options (timestamps included) are skipped by their length
    }
    i += len;
  }
  return out;
}

const NO_OPTIONS: TcpOptions = Object.freeze({}) as TcpOptions;

export interface TcpRepr {
  srcPort: number;
  dstPort: number;
  seq: number;
  /** Present exactly when the ACK flag is set. */
  ack: number | null;
  flags: number; // SYN | FIN | RST | PSH (ACK is implied by `ack`)
  window: number;
  options: TcpOptions;
  payload: Uint8Array;
}

export const TcpRepr = {
  parse(p: TcpPacket, src: Uint8Array, dst: Uint8Array, verifyChecksum = true): TcpRepr {
    if (verifyChecksum) {
      const len = p.buf.length;
      if (fold(sumWords(p.buf, 0, len, pseudoSum(src, dst, IpProto.TCP, len))) !== 0) throw badChecksum("TCP segment");
    }
    const flags = p.flags;
    if (p.srcPort === 0 || p.dstPort === 0) throw malformed("TCP segment", "port 0");
    if (flags & TcpFlag.SYN && flags & TcpFlag.FIN) throw malformed("TCP segment", "SYN and FIN together");
    if (flags & TcpFlag.SYN && flags & TcpFlag.RST) throw malformed("TCP segment", "SYN and RST together");
    return {
      srcPort: p.srcPort,
      dstPort: p.dstPort,
      seq: p.seq,
      ack: flags & TcpFlag.ACK ? p.ack : null,
      flags: flags & (TcpFlag.SYN | TcpFlag.FIN | TcpFlag.RST | TcpFlag.PSH),
      window: p.window,
      options: p.headerLen > TCP_HEADER_LEN ? parseTcpOptions(p.options) : NO_OPTIONS,
      payload: p.payload,
    };
  },
  headerLen(r: Pick<TcpRepr, "options">): number {
    let n = TCP_HEADER_LEN;
    if (r.options.mss !== undefined) n += 4;
    if (r.options.wscale !== undefined) n += 4; // NOP + 3
    if (r.options.sackPermitted) n += 4; // NOP NOP + 2
    if (r.options.sack?.length) n += 4 + 8 * r.options.sack.length; // NOP NOP + 2 + 8n
    return n;
  },
  /**
   * Writes header and checksum (or, with `partialChecksum`, the pseudo-header seed an offloading
   * device completes). With `inPlaceLen` the payload (that many bytes) is already at
   * `off + headerLen` and `r.payload` is ignored; otherwise `r.payload` is copied there.
   */
  emit(r: TcpRepr, buf: Uint8Array, off: number, src: Uint8Array, dst: Uint8Array, inPlaceLen = -1, partialChecksum = false): number {
    const hl = TcpRepr.headerLen(r);
    const b = buf;
    b[off] = r.srcPort >> 8; b[off + 1] = r.srcPort & 0xff;
    b[off + 2] = r.dstPort >> 8; b[off + 3] = r.dstPort & 0xff;
    b[off + 4] = r.seq >>> 24; b[off + 5] = (r.seq >>> 16) & 0xff; b[off + 6] = (r.seq >>> 8) & 0xff; b[off + 7] = r.seq & 0xff;
    const a = r.ack ?? 0;
    b[off + 8] = a >>> 24; b[off + 9] = (a >>> 16) & 0xff; b[off + 10] = (a >>> 8) & 0xff; b[off + 11] = a & 0xff;
    b[off + TCP_DATA_OFF] = (hl / 4) << 4;
    b[off + TCP_FLAGS] = r.flags | (r.ack !== null ? TcpFlag.ACK : 0);
    b[off + TCP_WINDOW] = r.window >> 8; b[off + TCP_WINDOW + 1] = r.window & 0xff;
    b[off + TCP_CHECKSUM] = 0; b[off + TCP_CHECKSUM + 1] = 0;
    b[off + TCP_URGENT] = 0; b[off + TCP_URGENT + 1] = 0;
    let o = off + TCP_HEADER_LEN;
    if (r.options.mss !== undefined) { b[o] = TcpOpt.MSS; b[o + 1] = 4; b[o + 2] = r.options.mss >> 8; b[o + 3] = r.options.mss & 0xff; o += 4; }
    if (r.options.wscale !== undefined) { b[o] = TcpOpt.NOP; b[o + 1] = TcpOpt.WSCALE; b[o + 2] = 3; b[o + 3] = r.options.wscale; o += 4; }
    if (r.options.sackPermitted) { b[o] = TcpOpt.NOP; b[o + 1] = TcpOpt.NOP; b[o + 2] = TcpOpt.SACK_PERMITTED; b[o + 3] = 2; o += 4; }
    if (r.options.sack?.length) {
      b[o] = TcpOpt.NOP; b[o + 1] = TcpOpt.NOP; b[o + 2] = TcpOpt.SACK; b[o + 3] = 2 + 8 * r.options.sack.length; o += 4;
      for (const [l, rr] of r.options.sack) {
        b[o] = l >>> 24; b[o + 1] = (l >>> 16) & 0xff; b[o + 2] = (l >>> 8) & 0xff; b[o + 3] = l & 0xff;
        b[o + 4] = rr >>> 24; b[o + 5] = (rr >>> 16) & 0xff; b[o + 6] = (rr >>> 8) & 0xff; b[o + 7] = rr & 0xff;
        o += 8;
      }
    }
    if (inPlaceLen < 0 && r.payload.length) b.set(r.payload, o);
    const len = hl + (inPlaceLen < 0 ? r.payload.length : inPlaceLen);
    // Partial (checksum offload): only the pseudo-header sum, uncomplemented; the device finishes it.
    const c = partialChecksum ? ~fold(pseudoSum(src, dst, IpProto.TCP, len)) & 0xffff : fold(sumWords(b, off, off + len, pseudoSum(src, dst, IpProto.TCP, len)));
    b[off + TCP_CHECKSUM] = c >> 8; b[off + TCP_CHECKSUM + 1] = c & 0xff;
    return len;
  },
};
