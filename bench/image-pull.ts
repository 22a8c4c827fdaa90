// Pull of the Debian python3 fixture (~64 MB compressed, ~175 MB unpacked) from a loopback
// docker-registry: msb's pull (download + verify + decompress + EROFS) against `skopeo copy` of
// the same image into an OCI directory (download + verify only), in the same run, as a ratio.
//
//   node_modules/.bin/bun bench/image-pull.ts [runs]

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { skopeo, skopeoPush, startRegistry } from "../src/image/harness.ts";
import { pullImage } from "../src/image/pull.ts";
import { ImageStore } from "../src/image/store.ts";
import { ensureDebianFixture } from "./image-fixture-debian.ts";

const runs = Number(process.argv[2] ?? 3);
const oci = ensureDebianFixture();
const reg = await startRegistry("none");
const work = mkdtempSync(join(tmpdir(), "msb-bench-pull-"));
try {
  await skopeoPush(oci, "bookworm-python3", reg, "debian/python3", { creds: false });
  const ref = `${reg.host}/debian/python3:bookworm-python3`;
  const ours: number[] = [];
  const theirs: number[] = [];
  let bytes = 0;
  let unpacked = 0;
  for (let i = 0; i < runs; i++) {
    const home = mkdtempSync(join(work, "home-"));
    let t0 = performance.now();
    const rec = await pullImage(ref, { store: new ImageStore(home), concurrency: 3 });
    ours.push(performance.now() - t0);
    bytes = rec.layers.reduce((s, l) => s + (l.size ?? 0), 0);
    unpacked = rec.layers.reduce((s, l) => s + l.tarBytes, 0);
    rmSync(home, { recursive: true, force: true });
    const dest = join(work, `skopeo-${i}`);
    t0 = performance.now();
    await skopeo(["copy", "--quiet", "--src-tls-verify=false", `docker://${ref}`, `oci:${dest}:x`], reg.dir);
    theirs.push(performance.now() - t0);
    rmSync(dest, { recursive: true, force: true });
  }
  const med = (a: number[]) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)]!;
  const o = med(ours);
  const t = med(theirs);
  console.log(`image: ${(bytes / 1e6).toFixed(1)} MB compressed, ${(unpacked / 1e6).toFixed(1)} MB tar, ${runs} runs (median)`);
  console.log(`msb pull (→ EROFS):       ${(o / 1000).toFixed(2)} s  ${(bytes / 1e6 / (o / 1000)).toFixed(1)} MB/s compressed  [${ours.map((x) => (x / 1000).toFixed(2)).join(", ")}]`);
  console.log(`skopeo copy (→ OCI dir):  ${(t / 1000).toFixed(2)} s  ${(bytes / 1e6 / (t / 1000)).toFixed(1)} MB/s compressed  [${theirs.map((x) => (x / 1000).toFixed(2)).join(", ")}]`);
  console.log(`ratio msb/skopeo: ${(o / t).toFixed(2)}  (load average now: ${(await Bun.file("/proc/loadavg").text()).split(" ").slice(0, 3).join(" ")})`);
} finally {
  await reg.stop();
  rmSync(work, { recursive: true, force: true });
}
