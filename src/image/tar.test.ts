import { expect, test } from "bun:test";
import { ImageError } from "./errors.ts";
import { bytesOf, TarReader, type TarEntry } from "./tar.ts";
import { writeTar } from "./tarwriter.ts";

async function readAll(tar: Uint8Array<ArrayBuffer>): Promise<{ e: TarEntry; body: Uint8Array }[]> {
  const r = new TarReader(new Blob([tar]).stream());
  const out = [];
  for (let e; (e = await r.next()); ) {
    const parts: Uint8Array[] = [];
    for await (const c of r.body()) parts.push(c.slice());
    out.push({ e, body: new Uint8Array(Buffer.concat(parts)) });
  }
  return out;
}

function setChecksum(h: Uint8Array, off = 0) {
  for (let i = 148; i < 156; i++) h[off + i] = 0x20;
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += h[off + i]!;
  const s = sum.toString(8).padStart(6, "0");
  for (let i = 0; i < 6; i++) h[off + 148 + i] = s.charCodeAt(i);
  h[off + 154] = 0;
}

test("base-256 (GNU) numeric fields are read", async () => {
  const tar = writeTar([{ path: "f", data: "hello" }]);
  tar.fill(0, 124, 136);
  tar[124] = 0x80;
  tar[135] = 5;
  setChecksum(tar);
  const [f] = await readAll(tar);
  expect(f!.e.size).toBe(5);
  expect(new TextDecoder().decode(f!.body)).toBe("hello");
});

test("PAX records: path, mtime with fraction, uid/gid, xattrs; global headers apply to later entries", async () => {
  const tar = writeTar([
    { path: "a", data: "1", pax: { mtime: "1700000000.123456789", uid: "4000000000", gid: "7" }, xattrs: { "user.k": new Uint8Array([0, 255, 1]) } },
  ]);
  const [a] = await readAll(tar);
  expect(a!.e.mtime).toBe(1700000000);
  expect(a!.e.mtimeNsec).toBe(123456789);
  expect(a!.e.uid).toBe(4000000000);
  expect(a!.e.gid).toBe(7);
  expect([...a!.e.xattrs.get("user.k")!]).toEqual([0, 255, 1]);
  // A global header ('g') sets defaults for what follows.
  const g = writeTar([{ path: "g", data: "", pax: { uid: "42" } }], { endMarker: false });
  g[156] = "g".charCodeAt(0);
  setChecksum(g);
  // Turn the 'x' record into a 'g' record: it is the first header of the archive.
  const rest = writeTar([{ path: "b", data: "2" }]);
  const entries = await readAll(new Uint8Array([...g.subarray(0, 1024), ...rest]));
  expect(entries.map((x) => [x.e.path, x.e.uid])).toEqual([["b", 42]]);
});

test("names keep their bytes (non-UTF-8 included)", async () => {
  const tar = writeTar([{ path: "x", data: "" }]);
  tar[0] = 0xe9; // latin1 é, invalid as UTF-8 on its own
  setChecksum(tar);
  const [x] = await readAll(tar);
  expect([...bytesOf(x!.e.path)]).toEqual([0xe9]);
});

test("an archive ending without zero blocks is accepted; an extended header with no entry is not", async () => {
  const noEnd = writeTar([{ path: "f", data: "x" }], { endMarker: false });
  expect((await readAll(noEnd)).length).toBe(1);
  const dangling = writeTar([{ path: "p".repeat(150), data: "" }], { endMarker: false }).subarray(0, 1024);
  await expect(readAll(dangling)).rejects.toThrow(/extended header with no entry/);
});

test("sparse and unknown entry types are refused by name", async () => {
  const tar = writeTar([{ path: "sparse", data: "" }]);
  tar[156] = "S".charCodeAt(0);
  setChecksum(tar);
  let err: unknown;
  try { await readAll(tar); } catch (e) { err = e; }
  expect(err).toBeInstanceOf(ImageError);
  expect((err as Error).message).toMatch(/"sparse" has unsupported type 'S'/);
});

test("limits: too many entries, oversized names", async () => {
  const many = writeTar(Array.from({ length: 5 }, (_, i) => ({ path: `f${i}`, data: "" })));
  const r = new TarReader(new Blob([many]).stream(), { maxFileSize: 1e9, maxMetaSize: 1 << 20, maxPathLength: 4096, maxTotalSize: 1e12, maxEntries: 3 });
  await expect((async () => { while (await r.next()); })()).rejects.toThrow(/more than 3 entries/);
  const long = writeTar([{ path: "x/".repeat(3000) + "f", data: "" }]);
  await expect(readAll(long)).rejects.toThrow(/exceeds the 4096-byte limit/);
});
