// The frame stream between the VM backend and the stack: each Ethernet frame as a u32 big-endian
// length followed by the frame (qemu `-netdev stream` and the native VMM's socketpair both use it).
// Outgoing frames are batched into one write per tick and whatever the socket does not take is kept
// and resent on drain, so no frame is ever silently lost.

/** The sink the framed bytes go to; `write` returns how many bytes it accepted (Bun socket semantics). */
export interface ByteSink {
  write(data: Uint8Array): number;
  end(): void;
}

export const FRAME_LEN_BYTES = 4;
/** Largest frame accepted from the guest: a 65535-byte IP packet plus Ethernet and VLAN headers. */
export const MAX_FRAME_LEN = 65535 + 18;

const COALESCE_LIMIT = 16 << 10;
const BATCH_BYTES = 256 << 10;

export class FrameStreamError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "FrameStreamError";
  }
}

/** Splits a byte stream into frames; frames are views into the received chunks (copy to keep). */
export class FrameDecoder {
  /** Bytes of an incomplete frame, kept as received chunks so a 64 KiB frame is copied once, not per read. */
  private parts: Uint8Array[] = [];
  private partsLen = 0;
  private need = -1; // total bytes (length prefix + frame) of the frame being collected
  constructor(private readonly maxFrame = MAX_FRAME_LEN) {}

  private frameLen(b: Uint8Array, off: number): number {
    const len = ((b[off]! << 24) | (b[off + 1]! << 16) | (b[off + 2]! << 8) | b[off + 3]!) >>> 0;
    if (len === 0 || len > this.maxFrame)
      throw new FrameStreamError(`frame length ${len} is outside 1..${this.maxFrame}: the net stream is corrupt or not u32-BE framed`);
    return len;
  }

  /** Feeds a chunk; calls `onFrame` for each complete frame. Throws on a length no guest may send. */
  push(chunk: Uint8Array, onFrame: (frame: Uint8Array) => void): void {
    let buf = chunk;
    if (this.parts.length) {
      if (this.need < 0 && this.partsLen + chunk.length >= FRAME_LEN_BYTES) {
        const head = this.concat(chunk, FRAME_LEN_BYTES);
        this.need = FRAME_LEN_BYTES + this.frameLen(head, 0);
      }
      if (this.need < 0 || this.partsLen + chunk.length < this.need) {
        this.parts.push(chunk.slice());
        this.partsLen += chunk.length;
        return;
      }
      // Complete the straddling frame with a copy of just its bytes; the rest of the chunk is parsed in place.
      const whole = this.concat(chunk, this.need);
      const used = this.need - this.partsLen;
      this.parts = [];
      this.partsLen = 0;
      this.need = -1;
      onFrame(whole.subarray(FRAME_LEN_BYTES));
      buf = chunk.subarray(used);
    }
    let off = 0;
    while (buf.length - off >= FRAME_LEN_BYTES) {
      const len = this.frameLen(buf, off);
      if (buf.length - off - FRAME_LEN_BYTES < len) break;
      onFrame(buf.subarray(off + FRAME_LEN_BYTES, off + FRAME_LEN_BYTES + len));
      off += FRAME_LEN_BYTES + len;
    }
    // Copy the tail: the caller's chunk may be reused once we return.
    if (off < buf.length) {
      const tail = buf.slice(off);
      this.parts = [tail];
      this.partsLen = tail.length;
      this.need = tail.length >= FRAME_LEN_BYTES ? FRAME_LEN_BYTES + this.frameLen(tail, 0) : -1;
    }
  }

  /** The first `n` bytes of parts + chunk as one buffer. */
  private concat(chunk: Uint8Array, n: number): Uint8Array {
    const out = new Uint8Array(n);
    let o = 0;
    for (const p of this.parts) { const k = Math.min(p.length, n - o); out.set(k === p.length ? p : p.subarray(0, k), o); o += k; if (o >= n) return out; }
    out.set(chunk.subarray(0, n - o), o);
    return out;
  }
}

/** Batches outgoing frames and keeps what the sink could not take. */
export class FrameEncoder {
  private queue: Uint8Array[] = [];
  private queuedBytes = 0;
  private backlog: Uint8Array | null = null;
  private scheduled = false;
  private closed = false;
  /** Called when the backlog has gone (the stack may send more). */
  onWritable: () => void = () => {};

  constructor(
    private readonly sink: ByteSink,
    /** Above this many unsent bytes the link reports itself full and senders hold back. */
    readonly highWater = 4 << 20,
  ) {}

  get bufferedBytes(): number {
    return this.queuedBytes + (this.backlog?.length ?? 0);
  }
  get full(): boolean {
    return this.bufferedBytes >= this.highWater;
  }

  /** Queues a frame; `frame` must have FRAME_LEN_BYTES of headroom at the front (see allocFrame). */
  send(framed: Uint8Array): void {
    if (this.closed) return;
    const len = framed.length - FRAME_LEN_BYTES;
    framed[0] = len >>> 24; framed[1] = (len >>> 16) & 0xff; framed[2] = (len >>> 8) & 0xff; framed[3] = len & 0xff;
    this.queue.push(framed);
    this.queuedBytes += framed.length;
    if (!this.scheduled) {
      this.scheduled = true;
      queueMicrotask(() => this.flush());
    }
  }

  flush(): void {
    this.scheduled = false;
    if (this.closed || this.backlog || this.queue.length === 0) return;
    const queue = this.queue;
    this.queue = [];
    this.queuedBytes = 0;
    // Small frames are coalesced into one write (one syscall for a burst of ACKs or 1500-byte
    // segments); large frames go out as they are, sparing a copy.
    let i = 0;
    while (i < queue.length) {
      let data: Uint8Array;
      const first = queue[i]!;
      // Frames that follow each other in the same slab go out as one view, without copying.
      let j = i + 1, end = first.byteOffset + first.length, n = first.length;
      while (j < queue.length && n < BATCH_BYTES) {
        const f = queue[j]!;
        if (f.buffer !== first.buffer || f.byteOffset !== end) break;
        end += f.length; n += f.length; j++;
      }
      if (j > i + 1) { data = new Uint8Array(first.buffer, first.byteOffset, n); i = j; }
      else if (first.length >= COALESCE_LIMIT) data = queue[i++]!;
      else {
        let j = i, n = 0;
        while (j < queue.length && queue[j]!.length < COALESCE_LIMIT && n < BATCH_BYTES) n += queue[j++]!.length;
        if (j === i + 1) data = queue[i]!;
        else {
          data = new Uint8Array(n);
          let o = 0;
          for (let k = i; k < j; k++) { data.set(queue[k]!, o); o += queue[k]!.length; }
        }
        i = j;
      }
      const w = this.sink.write(data);
      if (w < data.length) {
        // Keep the unsent rest and everything after it, in order.
        const rest = [data.subarray(Math.max(0, w)), ...queue.slice(i)];
        let total = 0;
        for (const r of rest) total += r.length;
        const b = new Uint8Array(total);
        let o = 0;
        for (const r of rest) { b.set(r, o); o += r.length; }
        this.backlog = b;
        return;
      }
    }
  }

  /** The sink can take more: resend the backlog, then whatever queued meanwhile. */
  drain(): void {
    if (this.closed) return;
    if (this.backlog) {
      const n = this.sink.write(this.backlog);
      if (n < this.backlog.length) { this.backlog = this.backlog.subarray(Math.max(0, n)); return; }
      this.backlog = null;
    }
    this.flush();
    if (!this.full) this.onWritable();
  }

  close(): void {
    this.closed = true;
    this.queue = [];
    this.backlog = null;
  }
}

/**
 * Outgoing frames are carved one after another out of shared slabs: no per-frame zeroing, a cheap
 * `.buffer` for the checksum's word view, and frames sent in a row sit back to back in memory so the
 * encoder writes them with one call and no copy. A slab is never reused; it is freed with its last frame.
 */
const SLAB_BYTES = 4 << 20;
let slab = new ArrayBuffer(SLAB_BYTES);
let slabUsed = 0;

/** A zeroed buffer for one outgoing frame of `len` bytes; the frame starts at FRAME_LEN_BYTES (room for the length prefix). */
export function allocFrame(len: number): Uint8Array {
  const n = FRAME_LEN_BYTES + len;
  if (n > SLAB_BYTES / 4) return new Uint8Array(n);
  if (slabUsed + n > SLAB_BYTES) { slab = new ArrayBuffer(SLAB_BYTES); slabUsed = 0; }
  // Keep frames 2-byte aligned so the checksum's 16-bit view applies.
  const f = new Uint8Array(slab, slabUsed, n);
  slabUsed += (n + 1) & ~1;
  return f;
}
