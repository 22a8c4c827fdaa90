// Builds the single binary dist/msb with the guest kernel, initramfs and native VMM embedded in it.

import { existsSync, mkdirSync } from "node:fs";
import { join, resolve } from "node:path";

const root = resolve(import.meta.dir, "..");
const assets = [
  "build/guest/vmlinux", "build/guest/initramfs.cpio.gz", "build/guest/default-rootfs.tar.gz", "native/target/release/libmsbvmm.so",
];
for (const asset of assets) {
  if (!existsSync(join(root, asset))) {
    console.error(`build: ${asset} is missing; run scripts/setup.sh, which builds it first`);
    process.exit(1);
  }
}
mkdirSync(join(root, "dist"), { recursive: true });
const build = Bun.spawnSync(
  [process.execPath, "build", "--compile", "src/main.ts", ...assets, "--outfile", "dist/msb"],
  { cwd: root, stdout: "inherit", stderr: "inherit" },
);
process.exit(build.exitCode ?? 1);
