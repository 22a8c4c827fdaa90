import { expect, test } from "bun:test";
import { sha256Stream } from "./hasher.ts";

function data(n: number): Uint8Array {
  const b = new Uint8Array(n);
  let x = 7;
  for (let i = 0; i < n; i++) { x = (x * 1103515245 + 12345) >>> 0; b[i] = x >>> 24; }
  return b;
}

test("the threaded hasher gives the same digests as hashing inline, for any chunking", async () => {
  const d = data(12 << 20);
  const want = new Bun.CryptoHasher("sha256").update(d).digest("hex");
  for (const chunk of [1, 4095, 65536, 1 << 20, 3 << 20, d.length]) {
    const h = sha256Stream();
    const sizes = chunk === 1 ? [1, 2, 3, 1000, 70000] : [chunk];
    let off = 0;
    for (let k = 0; off < d.length; k++) {
      const n = sizes[k % sizes.length]!;
      await h.update(d.subarray(off, off + n));
      off += n;
    }
    const t0 = performance.now();
    expect(await h.digest()).toBe(want);
    if (process.env.DBG) console.log(chunk, performance.now() - t0);
  }
  const inline = sha256Stream(false);
  inline.update(d);
  expect(await inline.digest()).toBe(want);
}, 60_000);

test("empty input and abort", async () => {
  const h = sha256Stream();
  expect(await h.digest()).toBe("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  const a = sha256Stream();
  await a.update(data(100));
  a.abort();
  a.abort();
});
