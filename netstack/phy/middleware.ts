// Middleware between the frame stream and the interface, as smoltcp's phy "devices": a pcap
// writer for debugging and a fault injector (loss, duplication, reordering) for hostile testing.
import { openSync, writeSync, closeSync } from "node:fs";
import { FRAME_LEN_BYTES } from "./framing";

/** Writes every frame to a pcap file (readable by tcpdump/wireshark). */
export class PcapWriter {
  private fd: number;
  constructor(path: string) {
    this.fd = openSync(path, "w");
    const h = new DataView(new ArrayBuffer(24));
    h.setUint32(0, 0xa1b2c3d4, true); // magic, microsecond timestamps
    h.setUint16(4, 2, true); h.setUint16(6, 4, true);
    h.setUint32(16, 262144, true); // snaplen
    h.setUint32(20, 1, true); // LINKTYPE_ETHERNET
    writeSync(this.fd, new Uint8Array(h.buffer));
  }
  write(frame: Uint8Array): void {
    if (this.fd < 0) return;
    const now = Date.now() * 1000 + Math.floor((performance.now() % 1) * 1000);
    const h = new DataView(new ArrayBuffer(16));
    h.setUint32(0, Math.floor(now / 1e6), true); h.setUint32(4, now % 1e6, true);
    h.setUint32(8, frame.length, true); h.setUint32(12, frame.length, true);
    writeSync(this.fd, new Uint8Array(h.buffer));
    writeSync(this.fd, frame);
  }
  close(): void {
    if (this.fd >= 0) closeSync(this.fd);
    this.fd = -1;
  }
}

export interface FaultOptions {
  /** Probability of dropping a frame, 0..1. */
  drop?: number;
  /** Probability of delivering a frame twice. */
  duplicate?: number;
  /** Probability of holding a frame back until after the next one. */
  reorder?: number;
  /** Seed for reproducible runs. */
  seed?: number;
}

/** Loses, duplicates and reorders frames on one direction of the link. Deterministic per seed. */
export class FaultInjector {
  private state: number;
  private held: Uint8Array | null = null;
  readonly counts = { dropped: 0, duplicated: 0, reordered: 0 };
  constructor(private readonly o: FaultOptions) {
    this.state = (o.seed ?? 1) >>> 0;
  }
  private rand(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  /** Passes `frame` on to `deliver` zero, one or two times, possibly after the next frame. `copy` keeps a held frame valid. */
  pass(frame: Uint8Array, deliver: (f: Uint8Array) => void, copy = true): void {
    if (this.rand() < (this.o.drop ?? 0)) { this.counts.dropped++; return; }
    if (!this.held && this.rand() < (this.o.reorder ?? 0)) {
      this.counts.reordered++;
      this.held = copy ? frame.slice() : frame;
      return;
    }
    deliver(frame);
    if (this.rand() < (this.o.duplicate ?? 0)) { this.counts.duplicated++; deliver(copy ? frame.slice() : frame); }
    if (this.held) { const h = this.held; this.held = null; deliver(h); }
  }
}

/** The frame inside a framed buffer (skips the length-prefix headroom). */
export const unframed = (framed: Uint8Array) => framed.subarray(FRAME_LEN_BYTES);
