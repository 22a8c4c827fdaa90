// Layer → EROFS conversion throughput, in MB/s of uncompressed tar, for a synthetic layer shaped
// like a distro (many small files, some large) and, when built, the Debian python3 fixture.
// Also times the same layers with gzip decompression in the path, as a pull sees them.
//
//   node_modules/.bin/bun bench/image-erofs.ts

import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { tarToErofs } from "../src/image/layer.ts";
import { convertBlob } from "../src/image/pull.ts";
import { writeTar, type TarWriteEntry } from "../src/image/tarwriter.ts";
import { fixtureDir } from "./image-fixture-debian.ts";

function synthetic(): Uint8Array<ArrayBuffer> {
  const entries: TarWriteEntry[] = [];
  let x = 12345;
  const rnd = () => ((x = (x * 1103515245 + 12345) >>> 0), x);
  for (let d = 0; d < 200; d++) {
    entries.push({ path: `usr/share/pkg${d}/`, type: "dir" });
    for (let f = 0; f < 100; f++) {
      const len = rnd() % 6000;
      const data = new Uint8Array(len);
      for (let i = 0; i < len; i++) data[i] = 97 + ((i * 7 + d + f) % 26);
      entries.push({ path: `usr/share/pkg${d}/file${f}.txt`, data });
    }
  }
  for (let b = 0; b < 12; b++) {
    const data = new Uint8Array(8 << 20);
    for (let i = 0; i < data.length; i += 4) data[i] = rnd() & 0xff;
    entries.push({ path: `usr/lib/big${b}.so`, data, mode: 0o755 });
  }
  return writeTar(entries);
}

/** The tar as 1 MiB views: Blob streams copy, and would be measured instead of the converter. */
function mem(b: Uint8Array, chunk = 1 << 20): ReadableStream<Uint8Array> {
  let o = 0;
  return new ReadableStream({
    pull(c) {
      if (o >= b.length) return c.close();
      c.enqueue(b.subarray(o, o + chunk));
      o += chunk;
    },
  });
}

async function time(label: string, tar: Uint8Array<ArrayBuffer>, dir: string) {
  const out = join(dir, "out.erofs");
  const runs: number[] = [];
  for (let i = 0; i < 3; i++) {
    const t0 = performance.now();
    await tarToErofs(mem(tar), out);
    runs.push(performance.now() - t0);
    rmSync(out, { force: true });
  }
  const best = Math.min(...runs);
  const gz = Bun.gzipSync(tar, { level: 6 });
  const g: number[] = [];
  for (let i = 0; i < 2; i++) {
    const t0 = performance.now();
    await convertBlob(mem(gz), { digest: undefined as unknown as string, size: -1, mediaType: "" }, undefined, out);
    g.push(performance.now() - t0);
    rmSync(out, { force: true });
  }
  const mb = tar.byteLength / 1e6;
  console.log(`${label}: ${mb.toFixed(1)} MB tar  tar→EROFS ${(mb / (best / 1000)).toFixed(0)} MB/s (best of 3, ${best.toFixed(0)} ms)  gzip+sha256+tar→EROFS ${(mb / (Math.min(...g) / 1000)).toFixed(0)} MB/s`);
}

const dir = mkdtempSync(join(tmpdir(), "msb-bench-erofs-"));
try {
  await time("synthetic (20k small files + 96 MiB in large files)", synthetic(), dir);
  const oci = join(fixtureDir(), "oci");
  if (existsSync(join(oci, "index.json"))) {
    // The fixture's single layer, decompressed once up front.
    const blobs = join(oci, "blobs/sha256");
    const biggest = readdirSync(blobs).map((f) => join(blobs, f)).sort((a, b) => Bun.file(b).size - Bun.file(a).size)[0]!;
    const tar = new Uint8Array(Bun.gunzipSync(readFileSync(biggest)));
    await time("debian bookworm minbase + python3", tar, dir);
  } else {
    console.log("debian fixture not built (bench/image-fixture-debian.ts); synthetic only");
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
