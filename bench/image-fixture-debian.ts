// Builds (once) the Debian test image: `debootstrap --variant=minbase --include=python3,curl,
// ca-certificates,nodejs bookworm` (real HTTPS clients for the secrets tests; nodejs 18 has fetch)
// from the configured Debian mirror, packed as a one-layer OCI layout (gzip) in a cache outside
// the repo. Used by the pull benchmark and by end-to-end `msb run` tests. Prints the layout path.
//
//   node_modules/.bin/bun bench/image-fixture-debian.ts      # needs root and debootstrap
//   MSB_FIXTURES=/somewhere  overrides ~/.cache/msb/fixtures

import { existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { writeOciLayout } from "../src/image/harness.ts";

const MIRROR = process.env.MSB_DEBIAN_MIRROR ?? aptMirror();

/** The Debian archive this machine's apt already uses (deb822 or one-line sources). */
function aptMirror(): string {
  const files = ["/etc/apt/sources.list.d/debian.sources", "/etc/apt/sources.list"];
  for (const file of files) {
    if (!existsSync(file)) continue;
    const text = readFileSync(file, "utf8");
    const uri = /^URIs:\s*(\S+\/debian)\s*$/m.exec(text)?.[1] ?? /^deb\s+(?:\[[^\]]*\]\s+)?(\S+\/debian)\s+bookworm\s/m.exec(text)?.[1];
    if (uri) return uri;
  }
  throw new Error("no Debian archive found in the apt sources; set MSB_DEBIAN_MIRROR");
}
const SUITE = "bookworm";
const PACKAGES = ["python3", "curl", "ca-certificates", "nodejs"];
const VERSION = "2"; // bump when the recipe changes (2: + curl, ca-certificates, nodejs)

export function fixtureDir(): string {
  return join(process.env.MSB_FIXTURES ?? join(homedir(), ".cache", "msb", "fixtures"), "debian-python3");
}

function sh(cmd: string[], what: string) {
  const p = Bun.spawnSync(cmd, { stdout: "inherit", stderr: "inherit" });
  if (p.exitCode !== 0) throw new Error(`${what} failed (exit ${p.exitCode}): ${cmd.join(" ")}`);
}

/** Returns the OCI layout directory, building it first if needed. */
export function ensureDebianFixture(): string {
  const dir = fixtureDir();
  const oci = join(dir, "oci");
  const stamp = join(dir, "stamp");
  if (existsSync(stamp) && readFileSync(stamp, "utf8") === VERSION && existsSync(join(oci, "index.json"))) return oci;
  if (process.getuid?.() !== 0) throw new Error("building the Debian fixture needs root (debootstrap)");
  if (!Bun.which("debootstrap")) throw new Error("debootstrap is not installed (apt install debootstrap)");
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const rootfs = join(dir, "rootfs");
  const t0 = performance.now();
  sh(["debootstrap", "--variant=minbase", `--include=${PACKAGES.join(",")}`, SUITE, rootfs, MIRROR], "debootstrap");
  const t1 = performance.now();
  // apt caches and logs are not part of the image.
  for (const p of ["var/cache/apt/archives", "var/lib/apt/lists", "var/log"]) sh(["find", join(rootfs, p), "-type", "f", "-delete"], "cleanup");
  const tarPath = join(dir, "layer.tar");
  sh(["tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "--sort=name", "-C", rootfs, "-cf", tarPath, "."], "tar");
  const tar = new Uint8Array(readFileSync(tarPath));
  writeOciLayout(oci, [{ entries: tar, compression: "gzip" }], {
    Env: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"],
    Cmd: ["python3"],
    WorkingDir: "/root",
  }, "bookworm-python3");
  rmSync(rootfs, { recursive: true, force: true });
  rmSync(tarPath, { force: true });
  const t2 = performance.now();
  writeFileSync(join(dir, "build.txt"), `debootstrap ${((t1 - t0) / 1000).toFixed(1)} s, pack ${((t2 - t1) / 1000).toFixed(1)} s, tar ${tar.byteLength} bytes\n`);
  writeFileSync(stamp, VERSION);
  return oci;
}

if (import.meta.main) {
  const oci = ensureDebianFixture();
  console.log(oci);
  const info = join(fixtureDir(), "build.txt");
  if (existsSync(info)) console.error(readFileSync(info, "utf8").trim(), `(layout ${statSync(oci).isDirectory() ? "ok" : "missing"})`);
}
