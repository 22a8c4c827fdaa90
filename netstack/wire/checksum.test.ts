// The Internet checksum: the word-at-a-time fast path must agree with a byte-wise reference everywhere.
import { expect, test } from "bun:test";
import { checksum, sumWords, fold } from "./checksum";

/** Byte-at-a-time reference (RFC 1071). */
function reference(b: Uint8Array, s: number, e: number) {
  let sum = 0;
  for (let i = s; i < e; i += 2) sum += (b[i]! << 8) | (i + 1 < e ? b[i + 1]! : 0);
  return fold(sum);
}

test("the word-at-a-time path agrees with the reference at every alignment and length", () => {
  const buf = new Uint8Array(70000);
  let x = 7;
  for (let i = 0; i < buf.length; i++) { x = (Math.imul(x, 1103515245) + 12345) >>> 0; buf[i] = x >>> 24; }
  for (const start of [0, 1, 2, 3, 4, 6]) for (const len of [0, 1, 127, 128, 129, 130, 1500, 65535, 65536]) {
    expect([start, len, checksum(buf, start, start + len)]).toEqual([start, len, reference(buf, start, start + len)]);
  }
  const sub = buf.subarray(2);
  expect(fold(sumWords(sub, 0, 4000))).toBe(reference(buf, 2, 4002));
  expect(checksum(new Uint8Array(200).fill(0xff))).toBe(0);
});
