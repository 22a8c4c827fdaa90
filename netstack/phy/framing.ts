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
  /** Frames queued since the last flush. */
  private queue: Uint8Array[] = [];
  private queuedBytes = 0;
  /** Packed writes not yet (fully) accepted by the sink, in order; the first may be partly written. */
  private backlog: Array<{ data: Uint8Array; frames: Uint8Array[] }> = [];
  private backlogBytes = 0;
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
    return this.queuedBytes + this.backlogBytes;
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

  /** Packs the queued frames into as few writes as possible and writes them. */
  flush(): void {
    this.scheduled = false;
    if (this.closed || this.queue.length === 0) return;
    const queue = this.queue;
    this.queue = [];
    this.queuedBytes = 0;
    let i = 0;
    while (i < queue.length) {
      const first = queue[i]!;
      // Frames that follow each other in the same slab go out as one view, without copying.
      let j = i + 1, end = first.byteOffset + first.length, n = first.length;
      while (j < queue.length && n < BATCH_BYTES) {
        const f = queue[j]!;
        if (f.buffer !== first.buffer || f.byteOffset !== end) break;
        end += f.length; n += f.length; j++;
      }
      if (j > i + 1) {
        this.pushBacklog(new Uint8Array(first.buffer, first.byteOffset, n), queue.slice(i, j));
        i = j;
      } else if (first.length >= COALESCE_LIMIT) {
        this.pushBacklog(first, [first]);
        i++;
      } else {
        // Small frames from different places: one copy buys one syscall for the lot.
        let k = i, m = 0;
        while (k < queue.length && queue[k]!.length < COALESCE_LIMIT && m < BATCH_BYTES) m += queue[k++]!.length;
        if (k === i + 1) this.pushBacklog(first, [first]);
        else {
          const data = new Uint8Array(m);
          let o = 0;
          for (let q = i; q < k; q++) { data.set(queue[q]!, o); o += queue[q]!.length; releaseFrame(queue[q]!); }
          this.pushBacklog(data, []);
        }
        i = k;
      }
    }
    this.writeBacklog();
  }

  private pushBacklog(data: Uint8Array, frames: Uint8Array[]): void {
    this.backlog.push({ data, frames });
    this.backlogBytes += data.length;
  }

  /** Writes until the sink stops taking; returns true when everything went. */
  private writeBacklog(): boolean {
    while (this.backlog.length) {
      const b = this.backlog[0]!;
      const w = Math.max(0, this.sink.write(b.data));
      this.backlogBytes -= Math.min(w, b.data.length);
      if (w < b.data.length) { b.data = b.data.subarray(w); return false; }
      this.backlog.shift();
      for (const f of b.frames) releaseFrame(f);
    }
    return true;
  }

  /** The sink can take more: resend the backlog, then whatever queued meanwhile. */
  drain(): void {
    if (this.closed) return;
    if (!this.writeBacklog()) return;
    this.flush();
    if (!this.full) this.onWritable();
  }

  close(): void {
    this.closed = true;
    this.queue = [];
    this.backlog = [];
    this.backlogBytes = 0;
  }
}

/**
 * Outgoing frames are carved one after another out of shared slabs: a cheap `.buffer` for the
 * checksum's word view, and frames sent in a row sit back to back in memory so the encoder writes
 * them with one call and no copy. A slab goes back to a small pool once the sink has taken every
 * frame carved from it (fresh memory costs page faults at 64 KiB per frame); a frame that never
 * reaches the sink just keeps its slab out of the pool until the GC frees it.
 */
const SLAB_BYTES = 4 << 20;
const POOL_SLABS = 4;
interface Slab { buf: ArrayBuffer; used: number; outstanding: number }
const slabOf = new WeakMap<ArrayBuffer, Slab>();
const pool: Slab[] = [];
let slab = newSlab();

function newSlab(): Slab {
  const s = { buf: new ArrayBuffer(SLAB_BYTES), used: 0, outstanding: 0 };
  slabOf.set(s.buf, s);
  return s;
}

/**
 * A buffer for one outgoing frame of `len` bytes; the frame starts at FRAME_LEN_BYTES (room for the
 * length prefix). Memory may be recycled: small frames are zeroed, large ones (data segments) are
 * fully overwritten by their emitters.
 */
export function allocFrame(len: number): Uint8Array {
  const n = FRAME_LEN_BYTES + len;
  if (n > SLAB_BYTES / 4) return new Uint8Array(n);
  if (slab.used + n > SLAB_BYTES) {
    const old = slab;
    slab = pool.pop() ?? newSlab();
    slab.used = 0;
    if (old.outstanding === 0 && pool.length < POOL_SLABS) pool.push(old);
  }
  // Keep frames 2-byte aligned so the checksum's 16-bit view applies.
  const f = new Uint8Array(slab.buf, slab.used, n);
  slab.used += (n + 1) & ~1;
  slab.outstanding++;
  if (n < 512) f.fill(0);
  return f;
}

/** The sink has taken `f`: its slab space may be reused once all its neighbours are gone too. */
export function releaseFrame(f: Uint8Array): void {
  const s = slabOf.get(f.buffer as ArrayBuffer);
  if (!s) return;
  s.outstanding--;
  if (s.outstanding === 0 && s !== slab && pool.length < POOL_SLABS && !pool.includes(s)) { s.used = 0; pool.push(s); }
}
