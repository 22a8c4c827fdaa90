// A FIFO of byte chunks with random-access copying, used as the send buffer toward the guest:
// bytes stay until the guest acknowledges them, so retransmission reads from the same queue.
export class ByteQueue {
  private chunks: Uint8Array[] = [];
  private head = 0; // offset into chunks[0]
  length = 0;

  push(chunk: Uint8Array): void {
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.length += chunk.length;
  }

  /** Drops `n` bytes from the front. */
  consume(n: number): void {
    n = Math.min(n, this.length);
    this.length -= n;
    while (n > 0) {
      const c = this.chunks[0]!;
      const left = c.length - this.head;
      if (n < left) { this.head += n; return; }
      n -= left;
      this.chunks.shift();
      this.head = 0;
    }
  }

  /** Copies `len` bytes starting `from` bytes after the front into `dst` at `dstOff`. */
  copyTo(dst: Uint8Array, dstOff: number, from: number, len: number): void {
    let i = 0;
    let skip = from + this.head;
    while (i < this.chunks.length && skip >= this.chunks[i]!.length) { skip -= this.chunks[i]!.length; i++; }
    while (len > 0 && i < this.chunks.length) {
      const c = this.chunks[i]!;
      const n = Math.min(len, c.length - skip);
      dst.set(skip === 0 && n === c.length ? c : c.subarray(skip, skip + n), dstOff);
      dstOff += n; len -= n; skip = 0; i++;
    }
  }

  clear(): void {
    this.chunks = [];
    this.head = 0;
    this.length = 0;
  }
}
