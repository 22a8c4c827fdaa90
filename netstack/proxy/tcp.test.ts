// Guards an assumption the zero-copy path relies on: Bun gives every `data` callback its own buffer.
import { expect, test } from "bun:test";

test("Bun socket data callbacks get fresh, never reused buffers", async () => {
  const chunks: Uint8Array[] = [];
  const srv = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { binaryType: "uint8array", data(_s, d: Uint8Array) { chunks.push(d); } } });
  const c = await Bun.connect({ hostname: "127.0.0.1", port: srv.port, socket: { data() {} } });
  for (let i = 0; i < 50; i++) { c.write(new Uint8Array(70000).fill(i)); await Bun.sleep(1); }
  for (let i = 0; i < 100 && chunks.reduce((n, x) => n + x.length, 0) < 50 * 70000; i++) await Bun.sleep(10);
  let pos = 0, bad = 0;
  for (const ch of chunks) for (const b of ch) { if (b !== Math.floor(pos / 70000)) bad++; pos++; }
  expect(pos).toBe(50 * 70000);
  expect(bad).toBe(0);
  c.end();
  srv.stop(true);
});
