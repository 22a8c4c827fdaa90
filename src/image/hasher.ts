// SHA-256 on a worker thread, fed through a shared-memory ring, so that digest checks of a layer
// (the largest cost of a pull on CPUs without SHA instructions) overlap its decompression and
// EROFS writing instead of adding to them. Falls back to hashing inline if workers are missing.

const SLOT = 1 << 20;
const SLOTS = 16;
// Control words (Int32Array over shared memory).
const HEAD = 0; // slots written by the producer (monotonic)
const TAIL = 1; // slots hashed by the worker (monotonic)
const CLOSED = 2;

const WORKER_SOURCE = `
self.onmessage = (ev) => {
  const { data, lengths, ctl, slot, slots } = ev.data;
  const ring = new Uint8Array(data);
  const lens = new Int32Array(lengths);
  const c = new Int32Array(ctl);
  const h = new Bun.CryptoHasher("sha256");
  for (;;) {
    const tail = Atomics.load(c, ${TAIL});
    const head = Atomics.load(c, ${HEAD});
    if (tail === head) {
      if (Atomics.load(c, ${CLOSED})) break;
      Atomics.wait(c, ${HEAD}, head, 100);
      continue;
    }
    const i = tail % slots;
    h.update(ring.subarray(i * slot, i * slot + lens[i]));
    Atomics.store(c, ${TAIL}, tail + 1);
    Atomics.notify(c, ${TAIL});
  }
  postMessage(h.digest("hex"));
};
`;

let workerUrl: string | undefined;

export interface Sha256Stream {
  update(chunk: Uint8Array): void | Promise<void>;
  /** Hex digest; the hasher is finished afterwards. */
  digest(): Promise<string>;
  /** Stops early (on error); idempotent. */
  abort(): void;
}

class InlineSha256 implements Sha256Stream {
  private h = new Bun.CryptoHasher("sha256");
  update(chunk: Uint8Array) {
    this.h.update(chunk);
  }
  async digest() {
    return this.h.digest("hex");
  }
  abort() {}
}

class ThreadedSha256 implements Sha256Stream {
  private worker: Worker;
  private ring = new Uint8Array(new SharedArrayBuffer(SLOT * SLOTS));
  private lengths = new Int32Array(new SharedArrayBuffer(4 * SLOTS));
  private ctl = new Int32Array(new SharedArrayBuffer(16));
  private result: Promise<string>;
  private done = false;

  constructor() {
    workerUrl ??= URL.createObjectURL(new Blob([WORKER_SOURCE], { type: "application/javascript" }));
    this.worker = new Worker(workerUrl);
    this.result = new Promise((resolve, reject) => {
      this.worker.onmessage = (e) => resolve(e.data as string);
      this.worker.onerror = (e) => reject(new Error(`hash worker failed: ${e.message}`));
    });
    this.result.catch(() => {});
    this.worker.postMessage({ data: this.ring.buffer, lengths: this.lengths.buffer, ctl: this.ctl.buffer, slot: SLOT, slots: SLOTS });
  }

  /** Bytes in the slot being filled (not yet handed to the worker). */
  private fill = 0;

  async update(chunk: Uint8Array): Promise<void> {
    let off = 0;
    while (off < chunk.byteLength) {
      const head = Atomics.load(this.ctl, HEAD);
      if (this.fill === 0) {
        // Starting a slot: wait until the worker has freed it.
        while (head - Atomics.load(this.ctl, TAIL) >= SLOTS) await Bun.sleep(1);
      }
      const i = head % SLOTS;
      const n = Math.min(SLOT - this.fill, chunk.byteLength - off);
      this.ring.set(chunk.subarray(off, off + n), i * SLOT + this.fill);
      this.fill += n;
      off += n;
      if (this.fill === SLOT) this.publish();
    }
  }

  private publish() {
    const head = Atomics.load(this.ctl, HEAD);
    this.lengths[head % SLOTS] = this.fill;
    this.fill = 0;
    Atomics.store(this.ctl, HEAD, head + 1);
    Atomics.notify(this.ctl, HEAD);
  }

  async digest(): Promise<string> {
    if (this.fill > 0) this.publish();
    Atomics.store(this.ctl, CLOSED, 1);
    Atomics.notify(this.ctl, HEAD);
    try {
      return await this.result;
    } finally {
      this.abort();
    }
  }

  abort() {
    if (this.done) return;
    this.done = true;
    Atomics.store(this.ctl, CLOSED, 1);
    Atomics.notify(this.ctl, HEAD);
    this.worker.terminate();
  }
}

/** A SHA-256 stream hashed off the main thread when possible. */
export function sha256Stream(threaded = true): Sha256Stream {
  if (threaded && typeof Worker !== "undefined" && typeof SharedArrayBuffer !== "undefined") {
    try {
      return new ThreadedSha256();
    } catch {
      // fall through to inline hashing
    }
  }
  return new InlineSha256();
}
