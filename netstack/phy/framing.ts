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

export class FrameStreamError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "FrameStreamError";
  }
}

/** Splits a byte stream into frames; frames are views into the received chunks (copy to keep). */
export class FrameDecoder {
  private pending: Uint8Array | null = null;
  constructor(private readonly maxFrame = MAX_FRAME_LEN) {}

  /** Feeds a chunk; calls `onFrame` for each complete frame. Throws on a length no guest may send. */
  push(chunk: Uint8Array, onFrame: (frame: Uint8Array) => void): void {
    let buf = chunk;
    if (this.pending) {
      const merged = new Uint8Array(this.pending.length + chunk.length);
      merged.set(this.pending);
      merged.set(chunk, this.pending.length);
      buf = merged;
      this.pending = null;
    }
    let off = 0;
    while (buf.length - off >= FRAME_LEN_BYTES) {
      const len = ((buf[off]! << 24) | (buf[off + 1]! << 16) | (buf[off + 2]! << 8) | buf[off + 3]!) >>> 0;
      if (len === 0 || len > this.maxFrame)
        throw new FrameStreamError(`frame length ${len} is outside 1..${this.maxFrame}: the net stream is corrupt or not u32-BE framed`);
      if (buf.length - off - FRAME_LEN_BYTES < len) break;
      onFrame(buf.subarray(off + FRAME_LEN_BYTES, off + FRAME_LEN_BYTES + len));
      off += FRAME_LEN_BYTES + len;
    }
    // Copy the tail: the caller's chunk may be reused once we return.
    if (off < buf.length) this.pending = buf.slice(off);
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
    let data: Uint8Array;
    if (this.queue.length === 1) data = this.queue[0]!;
    else {
      data = new Uint8Array(this.queuedBytes);
      let o = 0;
      for (const f of this.queue) { data.set(f, o); o += f.length; }
    }
    this.queue = [];
    this.queuedBytes = 0;
    const n = this.sink.write(data);
    if (n < data.length) this.backlog = data.subarray(Math.max(0, n));
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

/** A zeroed buffer for one outgoing frame of `len` bytes with the length prefix's headroom in front. */
export function allocFrame(len: number): { framed: Uint8Array; frame: Uint8Array } {
  const framed = new Uint8Array(FRAME_LEN_BYTES + len);
  return { framed, frame: framed.subarray(FRAME_LEN_BYTES) };
}
