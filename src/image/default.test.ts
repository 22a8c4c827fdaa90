// The default root as an image: made on first use from the embedded root tar, reused after that
// (a checksum of the tar, no re-import), re-made when the tar changes or the image was removed.

import { afterAll, beforeAll, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, readlinkSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { buildRootfsTarGz, loadBusybox } from "../../guest/initramfs/build.ts";
import { DEFAULT_IMAGE, ensureDefaultImage } from "./default.ts";
import { have } from "./harness.ts";
import { listImages } from "./index.ts";
import { ensureImage } from "./pull.ts";
import { ImageStore } from "./store.ts";

let dir: string;
let rootfs: string;
const busybox = loadBusybox();
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "msb-default-image-"));
  rootfs = join(dir, "default-rootfs.tar.gz");
  writeFileSync(rootfs, buildRootfsTarGz(busybox));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

test("made on first use, listed, reused after; re-made after rmi or when msb's root changes", async () => {
  const store = new ImageStore(mkdtempSync(join(dir, "home-")));
  let t = performance.now();
  const first = await ensureDefaultImage({ store, rootfs });
  const importMs = performance.now() - t;
  expect(first.layers).toHaveLength(1);
  expect(first.config).toEqual({ cmd: ["/bin/sh"], env: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], workingDir: "/", entrypoint: undefined, user: undefined });
  expect(listImages({ store }).map((i) => i.references)).toEqual([[DEFAULT_IMAGE]]);
  expect(listImages({ store })[0]!.displayReferences).toEqual([DEFAULT_IMAGE]);
  if (have("fsck.erofs")) {
    const x = join(dir, "x");
    expect(Bun.spawnSync(["fsck.erofs", `--extract=${x}`, first.layers[0]!]).exitCode).toBe(0);
    expect(readFileSync(join(x, "bin/busybox")).equals(Buffer.from(busybox.busybox))).toBe(true);
    expect(readlinkSync(join(x, "bin/sh"))).toBe("/bin/busybox");
    expect(readFileSync(join(x, "etc/passwd"), "utf8")).toStartWith("root:x:0:0:");
  }
  const layerBefore = Bun.hash(readFileSync(first.layers[0]!));

  t = performance.now();
  const again = await ensureDefaultImage({ store, rootfs });
  const warmMs = performance.now() - t;
  expect(again).toEqual(first);
  console.log(`default image: first use ${importMs.toFixed(1)} ms (import), then ${warmMs.toFixed(2)} ms`);
  expect(Bun.hash(readFileSync(first.layers[0]!))).toBe(layerBefore);

  store.remove(DEFAULT_IMAGE);
  expect(listImages({ store })).toEqual([]);
  expect((await ensureDefaultImage({ store, rootfs })).id).toBe(first.id);
  // Asked for by name (msb run msb.local/default), it is made locally, never pulled.
  process.env.MSB_DEFAULT_ROOTFS = rootfs;
  try {
    store.remove(DEFAULT_IMAGE);
    expect((await ensureImage(DEFAULT_IMAGE, { store, policy: "always" })).id).toBe(first.id);
  } finally {
    delete process.env.MSB_DEFAULT_ROOTFS;
  }

  // A different msb (its root has one more file) brings a different default image.
  const other = join(dir, "other-rootfs.tar.gz");
  writeFileSync(other, buildRootfsTarGz({ ...busybox, rootfsFiles: { "etc/motd": { data: new TextEncoder().encode("hi\n"), mode: 0o644 } } }));
  const changed = await ensureDefaultImage({ store, rootfs: other });
  expect(changed.id).not.toBe(first.id);
  expect(store.resolve(DEFAULT_IMAGE)).toBe(changed.id);
  // The old one is untagged and goes with prune.
  expect(store.prune().images).toEqual([first.id]);
});
