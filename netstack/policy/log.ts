// Denial logging without flooding: one line per denial, at most `perKey` lines per destination
// and `total` lines overall per window; what is held back is summed up once per window
// ("suppressed K more ...").
export interface DenialLogOptions {
  /** Sandbox name, at the start of every line. */
  name: string;
  write: (line: string) => void;
  /** Lines per destination per window (default 5). */
  perKey?: number;
  /** Lines per window across all destinations (default 100). */
  total?: number;
  windowMs?: number;
  /** Destinations tracked per window; beyond it lines count against `total` only. */
  maxKeys?: number;
  now?: () => number;
}

export class DenialLog {
  private counts = new Map<string, number>();
  private suppressed = new Map<string, number>();
  private overflow = 0;
  private lines = 0;
  private windowStart: number;
  private timer: ReturnType<typeof setInterval> | null = null;
  private readonly now: () => number;
  private readonly perKey: number;
  private readonly total: number;
  private readonly windowMs: number;
  private readonly maxKeys: number;
  /** Every denial, logged or not (tests and diagnostics). */
  denials = 0;

  constructor(private readonly o: DenialLogOptions) {
    this.now = o.now ?? Date.now;
    this.perKey = o.perKey ?? 5;
    this.total = o.total ?? 100;
    this.windowMs = o.windowMs ?? 60_000;
    this.maxKeys = o.maxKeys ?? 4096;
    this.windowStart = this.now();
  }

  /** `key` groups repeats (e.g. "tcp 10.0.0.1:80"); `line` is what gets written. */
  deny(key: string, line: string): void {
    this.denials++;
    if (this.now() - this.windowStart >= this.windowMs) this.flush();
    const n = this.counts.get(key);
    if (n === undefined && this.counts.size >= this.maxKeys) { this.overflow++; this.arm(); return; }
    if ((n ?? 0) >= this.perKey || this.lines >= this.total) {
      this.counts.set(key, (n ?? 0) + 1);
      this.suppressed.set(key, (this.suppressed.get(key) ?? 0) + 1);
      this.arm();
      return;
    }
    this.counts.set(key, (n ?? 0) + 1);
    this.lines++;
    this.o.write(`sandbox ${this.o.name}: denied ${line}`);
  }

  /** Writes the suppression summary of the window that ended and starts a new one. */
  flush(): void {
    let shown = 0;
    const entries = [...this.suppressed.entries()].sort((a, b) => b[1] - a[1]);
    for (const [key, k] of entries) {
      if (shown++ >= 10) break;
      this.o.write(`sandbox ${this.o.name}: suppressed ${k} more denials of ${key} in the last ${Math.round(this.windowMs / 1000)} s`);
    }
    const rest = entries.slice(10).reduce((n, [, k]) => n + k, 0) + this.overflow;
    if (rest > 0) this.o.write(`sandbox ${this.o.name}: suppressed ${rest} more denials of other destinations in the last ${Math.round(this.windowMs / 1000)} s`);
    this.counts.clear();
    this.suppressed.clear();
    this.overflow = 0;
    this.lines = 0;
    this.windowStart = this.now();
  }

  private arm(): void {
    if (this.timer) return;
    // The summary comes at the end of the window even if no further denial arrives.
    this.timer = setTimeout(() => { this.timer = null; this.flush(); }, Math.max(0, this.windowStart + this.windowMs - this.now()));
    (this.timer as { unref?: () => void }).unref?.();
  }

  close(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (this.suppressed.size > 0 || this.overflow > 0) this.flush();
  }
}
