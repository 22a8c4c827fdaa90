// Masks secret values in what the upstream sends back, so an endpoint that echoes a request
// (a debug route, an error page quoting the Authorization header) cannot hand the value to the
// guest. Same-length masking keeps Content-Length and chunk sizes valid without parsing HTTP.
// Best effort: a value compressed, re-encoded otherwise or split by chunk framing is not recognised.

import type { SecretSet } from "./substitute.ts";

/** Bytes held back while they could be the start of a value; flushed after this much quiet. */
export const SCRUB_FLUSH_MS = 20;
const MASK = 0x2a; // '*'

/**
 * The byte strings a value shows up as in an echo: raw, percent-encoded, JSON-escaped, and
 * base64/base64url.
 * Inside a longer encoded string (Basic credentials are base64 of `user:VALUE`) the value can
 * start at any offset modulo 3, so for each alignment the characters that encode only the value's
 * own whole 3-byte groups are a form too; masking them leaves at most 2 bytes at each end of the
 * value recoverable.
 */
export function encodedForms(value: string): Buffer[] {
  const raw = Buffer.from(value, "utf8");
  // Echoes often come back as JSON: quotes and backslashes escaped, and '/' as '\/' in PHP's style.
  const json = JSON.stringify(value).slice(1, -1);
  const forms = [raw, Buffer.from(encodeURIComponent(value)), Buffer.from(json), Buffer.from(json.replaceAll("/", "\\/"))];
  for (const alphabet of ["base64", "base64url"] as const) {
    forms.push(Buffer.from(raw.toString(alphabet).replace(/=+$/, "")));
    for (let shift = 0; shift < 3; shift++) {
      const groups = Math.floor((raw.length - shift) / 3);
      if (groups > 0) forms.push(Buffer.from(raw.subarray(shift, shift + 3 * groups).toString(alphabet)));
    }
  }
  return forms.filter((f, i) => f.length >= 4 && forms.findIndex((g) => g.equals(f)) === i);
}

const formsBySet = new WeakMap<SecretSet, Buffer[]>();

/** Every form of every value in `set`, longest first (a form containing a shorter one is masked whole); made once per set, not per flow or stream. */
function formsOf(set: SecretSet): Buffer[] {
  let forms = formsBySet.get(set);
  if (!forms) {
    forms = [...set.byName.values()].flatMap((s) => encodedForms(s.value)).sort((a, b) => b.length - a.length);
    formsBySet.set(set, forms);
  }
  return forms;
}

export class ResponseScrubber {
  private values: Buffer[];
  private maxLen: number;
  private held: Buffer = Buffer.alloc(0);
  private timer?: ReturnType<typeof setTimeout>;
  /** How many values were masked (for tests and logs). */
  masked = 0;

  constructor(set: SecretSet, private emit: (b: Uint8Array) => void) {
    this.values = formsOf(set);
    this.maxLen = Math.max(0, ...this.values.map((v) => v.length));
  }

  push(chunk: Uint8Array) {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    if (this.values.length === 0) return this.emit(chunk);
    const b = this.held.length ? Buffer.concat([this.held, chunk]) : Buffer.from(chunk);
    // Hold back a tail that is a proper prefix of some form (even one that is itself a shorter
    // form): the next piece may complete the longer one. Only matches starting before it are
    // masked now, so the output does not depend on where the pieces were cut.
    let hold = 0;
    for (let k = Math.min(this.maxLen - 1, b.length); k > 0 && !hold; k--) {
      const tail = b.subarray(b.length - k);
      if (this.values.some((v) => v.length > k && v.subarray(0, k).equals(tail))) hold = k;
    }
    this.mask(b, b.length - hold);
    this.held = Buffer.from(b.subarray(b.length - hold));
    if (b.length - hold > 0) this.emit(b.subarray(0, b.length - hold));
    if (hold) this.timer = setTimeout(() => this.end(), SCRUB_FLUSH_MS);
  }

  end() {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    if (this.held.length) {
      this.mask(this.held, this.held.length);
      this.emit(this.held);
    }
    this.held = Buffer.alloc(0);
  }

  /** Masks every form found starting before `limit`. */
  private mask(b: Buffer, limit: number) {
    for (const v of this.values) {
      let i = b.indexOf(v);
      while (i >= 0 && i < limit) {
        b.fill(MASK, i, i + v.length);
        this.masked++;
        i = b.indexOf(v, i + v.length);
      }
    }
  }
}
