// Locates the guest kernel and initramfs: embedded in the compiled binary (extracted once into
// the cache, since QEMU and the VMM need real files), or built in this checkout when run from source.

import { existsSync, mkdirSync, renameSync, statSync } from "node:fs";
import { join } from "node:path";
import { MsbError } from "./errors";
import { cacheDir, isCompiled, sourceRoot } from "./paths";

export interface GuestAssets {
  kernel: string;
  initrd: string;
}

const KERNEL_NAME = "vmlinux";
const INITRD_NAME = "initramfs.cpio.gz";
const ROOTFS_NAME = "default-rootfs.tar.gz";

export async function guestAssets(): Promise<GuestAssets> {
  return {
    kernel: process.env.MSB_KERNEL ?? (await locate(KERNEL_NAME, "guest kernel")),
    initrd: process.env.MSB_INITRD ?? (await locate(INITRD_NAME, "guest initramfs")),
  };
}

/** The default root as a gzipped tar (the default image is made from it; see image/default.ts). */
export async function defaultRootfs(): Promise<string> {
  return process.env.MSB_DEFAULT_ROOTFS ?? (await locate(ROOTFS_NAME, "default root filesystem"));
}

/**
 * A file embedded in the compiled binary, as a real file in the cache (QEMU, the VMM and dlopen
 * need paths). `prefix` is the file's name before Bun's content hash.
 */
export async function embeddedAsset(prefix: string, what: string): Promise<string> {
  const embedded = (Bun.embeddedFiles as Blob[]).find((file) => embeddedName(file).startsWith(prefix));
  if (!embedded) throw new MsbError("missing_asset", `this msb binary was built without its ${what} (${prefix}); rebuild it with scripts/build.ts`);
  return extract(embedded, prefix);
}

async function locate(name: string, what: string): Promise<string> {
  if (isCompiled()) return embeddedAsset(name.split(".")[0]!, what);
  const path = join(sourceRoot()!, "build", "guest", name);
  if (!existsSync(path)) {
    throw new MsbError("missing_asset", `${what} not found at ${path}; build it with scripts/setup.sh (or run ./msb, which builds what is missing)`);
  }
  return path;
}

function embeddedName(file: Blob): string {
  return (file as Blob & { name?: string }).name ?? "";
}

/** Writes an embedded file into the cache once; Bun's embedded names carry a content hash. */
async function extract(file: Blob, name: string): Promise<string> {
  const dir = join(cacheDir(), "assets");
  const path = join(dir, embeddedName(file).replace(/[^A-Za-z0-9._-]/g, "_") || name);
  if (existsSync(path) && statSync(path).size === file.size) return path;
  mkdirSync(dir, { recursive: true });
  const temp = `${path}.${process.pid}.tmp`;
  await Bun.write(temp, file);
  renameSync(temp, path);
  return path;
}
