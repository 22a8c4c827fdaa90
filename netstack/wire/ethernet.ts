// Ethernet II frames: a length-checked view and the validated header repr.
import { truncated } from "./error";
import type { Mac } from "./address";

export const ETH_DST = 0;
export const ETH_SRC = 6;
export const ETH_TYPE = 12;
export const ETH_HEADER_LEN = 14;

export const EtherType = { IPv4: 0x0800, ARP: 0x0806, IPv6: 0x86dd } as const;

/** A view over an Ethernet frame; `newChecked` guarantees the header is present. */
export class EthernetFrame {
  private constructor(readonly buf: Uint8Array) {}
  static checkLen(buf: Uint8Array): void {
    if (buf.length < ETH_HEADER_LEN) throw truncated("Ethernet frame", ETH_HEADER_LEN, buf.length);
  }
  static newChecked(buf: Uint8Array): EthernetFrame {
    EthernetFrame.checkLen(buf);
    return new EthernetFrame(buf);
  }
  get dst(): Mac { return this.buf.subarray(ETH_DST, ETH_DST + 6); }
  get src(): Mac { return this.buf.subarray(ETH_SRC, ETH_SRC + 6); }
  get etherType(): number { return (this.buf[ETH_TYPE]! << 8) | this.buf[ETH_TYPE + 1]!; }
  get payload(): Uint8Array { return this.buf.subarray(ETH_HEADER_LEN); }
}

export interface EthernetRepr { src: Mac; dst: Mac; etherType: number }

export const EthernetRepr = {
  parse(f: EthernetFrame): EthernetRepr {
    return { src: f.src, dst: f.dst, etherType: f.etherType };
  },
  bufferLen: ETH_HEADER_LEN,
  emit(r: EthernetRepr, buf: Uint8Array, off = 0): void {
    for (let i = 0; i < 6; i++) { buf[off + ETH_DST + i] = r.dst[i]!; buf[off + ETH_SRC + i] = r.src[i]!; }
    buf[off + ETH_TYPE] = r.etherType >> 8;
    buf[off + ETH_TYPE + 1] = r.etherType & 0xff;
  },
};

/** True if the 6 bytes at `buf[off]` equal `mac` (no view allocated: this runs per frame). */
export function macAt(buf: Uint8Array, off: number, mac: Mac): boolean {
  for (let i = 0; i < 6; i++) if (buf[off + i] !== mac[i]) return false;
  return true;
}

/** True for group (multicast or broadcast) destination addresses. */
export const isMulticastMac = (m: Mac) => (m[0]! & 1) === 1;
