// The embedded default root (static busybox) as an image like any other: msb.local/default:latest,
// made on first use from the root filesystem tar embedded in msb (default-rootfs.tar.gz, built by
// guest/initramfs/build.ts next to the initramfs), listed by `msb images`, and run as an overlay
// of its EROFS layer under a private writable layer, like every image.

import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { defaultRootfs } from "../assets.ts";
import { importRootfs } from "./import.ts";
import { atomicWrite, fileChecksum, ImageStore, type GuestRoot, type RuntimeConfig } from "./store.ts";

export const DEFAULT_IMAGE = "msb.local/default:latest";

/** What the default root runs with: a shell, the usual PATH, cwd /. */
export const DEFAULT_RUNTIME: RuntimeConfig = {
  cmd: ["/bin/sh"],
  env: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
  workingDir: "/",
};

/** Marks which embedded tar the store's default image was made from: "<checksum> <image id>". */
const MARKER = "default-image";

const inflight = new Map<string, Promise<GuestRoot>>();

/** The default image's reference, for `Sandbox.create()` without an image. */
export function defaultImageReference(): string {
  return DEFAULT_IMAGE;
}

/**
 * Makes sure the store holds the default image made from this msb's embedded root, importing it
 * the first time (and again when msb's embedded root changed, or after msb rmi), and returns its
 * root as ensureImage does.
 *
 *   const root = await ensureDefaultImage();   // { id, layers: [ ….erofs ], config }
 */
export async function ensureDefaultImage(opts: { store?: ImageStore; rootfs?: string } = {}): Promise<GuestRoot> {
  const store = opts.store ?? new ImageStore();
  const key = store.root;
  const running = inflight.get(key);
  if (running) return running;
  const work = ensure(store, opts.rootfs);
  inflight.set(key, work);
  try {
    return await work;
  } finally {
    inflight.delete(key);
  }
}

async function ensure(store: ImageStore, rootfsPath?: string): Promise<GuestRoot> {
  const tar = rootfsPath ?? (await defaultRootfs());
  // xxHash3 of the ~1 MB gzip: under a millisecond, so every sandbox start can afford it.
  const checksum = fileChecksum(tar);
  const marker = join(store.root, MARKER);
  const current = store.resolve(DEFAULT_IMAGE);
  if (current && existsSync(marker) && readFileSync(marker, "utf8") === `${checksum} ${current}`) {
    try {
      return store.guestRoot(current);
    } catch {
      // A layer went missing: import again below.
    }
  }
  const gunzip = Bun.file(tar).stream().pipeThrough(new DecompressionStream("gzip") as unknown as TransformStream<Uint8Array, Uint8Array>);
  const rec = await importRootfs(gunzip, DEFAULT_IMAGE, DEFAULT_RUNTIME, { store, source: `embedded:${tar}` });
  atomicWrite(marker, `${checksum} ${rec.id}`);
  return store.guestRoot(rec.id);
}
