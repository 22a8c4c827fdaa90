// A memory budget shared by all TCP connections of one stack: the bytes held for the guest (send
// queues) and for the host (data not yet taken, out-of-order segments) count against one limit, so
// many connections to a stuck peer cannot add up to unbounded host memory.
export class MemoryBudget {
  used = 0;
  private waiters = new Set<() => boolean>();
  constructor(readonly limit: number) {}

  get room(): number {
    return Math.max(0, this.limit - this.used);
  }
  get exhausted(): boolean {
    return this.used >= this.limit;
  }

  /** Adjusts usage; when it falls back under 3/4 of the limit, paused connections get to retry. */
  add(delta: number): void {
    this.used += delta;
    if (delta < 0 && this.waiters.size && this.used < this.limit * 0.75) {
      for (const w of [...this.waiters]) if (w()) this.waiters.delete(w);
    }
  }

  /** Registers a retry callback (returns true once it no longer needs waking). */
  wait(fn: () => boolean): void {
    this.waiters.add(fn);
  }
  cancel(fn: () => boolean): void {
    this.waiters.delete(fn);
  }
}
