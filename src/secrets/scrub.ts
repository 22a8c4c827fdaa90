// Masks secret values in what the upstream sends back, so an endpoint that echoes a request
// (a debug route, an error page quoting the Authorization header) cannot hand the value to the
// guest. Same-length masking keeps Content-Length and chunk sizes valid without parsing HTTP.
// Best effort: a value compressed, re-encoded or split by chunk framing is not recognised.

import type { SecretSet } from "./substitute.ts";

/** Bytes held back while they could be the start of a value; flushed after this much quiet. */
export const SCRUB_FLUSH_MS = 20;
const MASK = 0x2a; // '*'

export class ResponseScrubber {
  private values: Buffer[];
  private maxLen: number;
  private held: Buffer = Buffer.alloc(0);
  private timer?: ReturnType<typeof setTimeout>;
  /** How many values were masked (for tests and logs). */
  masked = 0;

  constructor(set: SecretSet, private emit: (b: Uint8Array) => void) {
    this.values = [...set.byName.values()].flatMap((s) => {
      const raw = Buffer.from(s.value, "utf8");
      const forms = [raw, Buffer.from(encodeURIComponent(s.value)), Buffer.from(s.value, "utf8").toString("base64").replace(/=+$/, "")].map((f) => Buffer.from(f));
      return forms.filter((f, i) => f.length >= 4 && forms.findIndex((g) => g.equals(f)) === i);
    });
    this.maxLen = Math.max(0, ...this.values.map((v) => v.length));
  }

  push(chunk: Uint8Array) {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    if (this.values.length === 0) return this.emit(chunk);
    const b = this.held.length ? Buffer.concat([this.held, chunk]) : Buffer.from(chunk);
    this.mask(b);
    // Hold back a tail that is a proper prefix of some value: the next piece may complete it.
    let hold = 0;
    for (let k = Math.min(this.maxLen - 1, b.length); k > 0 && !hold; k--) {
      const tail = b.subarray(b.length - k);
      if (this.values.some((v) => v.length > k && v.subarray(0, k).equals(tail))) hold = k;
    }
    this.held = Buffer.from(b.subarray(b.length - hold));
    if (b.length - hold > 0) this.emit(b.subarray(0, b.length - hold));
    if (hold) this.timer = setTimeout(() => this.end(), SCRUB_FLUSH_MS);
  }

  end() {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    if (this.held.length) this.emit(this.held);
    this.held = Buffer.alloc(0);
  }

  private mask(b: Buffer) {
    for (const v of this.values) {
      let i = b.indexOf(v);
      while (i >= 0) {
        b.fill(MASK, i, i + v.length);
        this.masked++;
        i = b.indexOf(v, i + v.length);
      }
    }
  }
}
