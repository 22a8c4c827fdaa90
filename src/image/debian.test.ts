// End to end on the host, without a VM: the Debian python3 image (built once by
// bench/image-fixture-debian.ts) is pushed with skopeo to a loopback docker-registry, pulled by
// msb, and its EROFS layers mounted the way the guest will (read-only erofs + overlayfs with a
// private upper dir); python3 then runs chrooted in the merged root. Two "sandboxes" from the
// same image do not see each other's writes, and the cached layer files keep their digests.

import { afterAll, beforeAll, expect, test } from "bun:test";
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fixtureDir } from "../../bench/image-fixture-debian.ts";
import { have, SIX_LAYERS, skopeoPush, startRegistry, writeLayoutOver, type TestRegistry } from "./harness.ts";
import { ensureImage, pullImage } from "./pull.ts";
import { ImageStore, sha256File } from "./store.ts";

const oci = join(fixtureDir(), "oci");
const fs = existsSync("/proc/filesystems") ? readFileSync("/proc/filesystems", "utf8") : "";
const why = !existsSync(join(oci, "index.json"))
  ? "the Debian fixture is not built (run bench/image-fixture-debian.ts, ~3 min, needs root + debootstrap)"
  : process.getuid?.() !== 0 || !fs.includes("erofs") || !fs.includes("overlay")
    ? "needs root and a host kernel with erofs + overlay to mount the layers"
    : !have("docker-registry") || !have("skopeo")
      ? "needs docker-registry and skopeo"
      : undefined;

let reg: TestRegistry;
let work: string;
const mounts: string[] = [];

function run(cmd: string[]) {
  const p = Bun.spawnSync(cmd, { stdout: "pipe", stderr: "pipe" });
  return { code: p.exitCode, out: p.stdout.toString(), err: p.stderr.toString() };
}

function sandboxRoot(layers: string[], name: string): string {
  const lowers = layers.map((l, i) => {
    const m = join(work, `${name}-l${i}`);
    mkdirSync(m);
    const r = run(["mount", "-t", "erofs", "-o", "loop,ro", l, m]);
    if (r.code !== 0) throw new Error(r.err);
    mounts.push(m);
    return m;
  });
  const rw = join(work, `${name}-rw`);
  mkdirSync(join(rw, "upper"), { recursive: true });
  mkdirSync(join(rw, "work"));
  const merged = join(work, `${name}-root`);
  mkdirSync(merged);
  const r = run(["mount", "-t", "overlay", "overlay", "-o", `lowerdir=${lowers.reverse().join(":")},upperdir=${rw}/upper,workdir=${rw}/work`, merged]);
  if (r.code !== 0) throw new Error(r.err);
  mounts.push(merged);
  return merged;
}

if (why) test.skip(`Debian python3 image end to end: skipped, ${why}`, () => {});
else {
  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), "msb-debian-test-"));
    reg = await startRegistry("token");
    await skopeoPush(oci, "bookworm-python3", reg, "debian/python3");
  }, 120_000);
  afterAll(async () => {
    for (const m of mounts.reverse()) run(["umount", m]);
    await reg?.stop();
    rmSync(work, { recursive: true, force: true });
  }, 60_000);

  test("pull → EROFS → overlay → chroot python3 -c 'print(2**100)'; sandboxes isolated; cache unchanged", async () => {
    const store = new ImageStore(join(work, "home"));
    await pullImage(`${reg.host}/debian/python3:bookworm-python3`, { store });
    const root = store.guestRoot(`${reg.host}/debian/python3:bookworm-python3`);
    expect(root.config.cmd).toEqual(["python3"]);
    for (const l of root.layers) expect(run(["fsck.erofs", l]).code).toBe(0);
    const digests = root.layers.map(sha256File);
    const a = sandboxRoot(root.layers, "a");
    const b = sandboxRoot(root.layers, "b");
    const py = run(["chroot", a, "/usr/bin/env", "-i", ...root.config.env!, "python3", "-c", "print(2**100)"]);
    expect(py.err).toBe("");
    expect(py.out.trim()).toBe(String(2n ** 100n));
    expect(run(["chroot", a, "/bin/sh", "-c", "echo secret > /etc/written-by-a && rm /etc/hostname"]).code).toBe(0);
    expect(existsSync(join(a, "etc/written-by-a"))).toBe(true);
    expect(existsSync(join(b, "etc/written-by-a"))).toBe(false);
    // a deleted /etc/hostname (rm would have failed had it been missing): a whiteout in a's upper only.
    expect(existsSync(join(a, "etc/hostname"))).toBe(false);
    expect(existsSync(join(b, "etc/hostname"))).toBe(true);
    await store.verify(root.id);
    expect(root.layers.map(sha256File)).toEqual(digests);
  }, 120_000);

  test("Debian + six layers (7) flattened: fsck.erofs clean, same tree as overlayfs over the separate layers, python3 runs", async () => {
    const layout = writeLayoutOver(join(work, "debian-plus"), oci, SIX_LAYERS.map((entries) => ({ compression: "zstd" as const, entries })));
    await skopeoPush(layout.dir, "latest", reg, "debian/plus");
    const store = new ImageStore(join(work, "home-plus"));
    const ref = `${reg.host}/debian/plus:latest`;
    const layers = (await ensureImage(ref, { store })).layers;
    expect(layers).toHaveLength(7);
    const flat = await ensureImage(ref, { store, maxLayers: 4 });
    expect(flat.layers).toHaveLength(1);
    const fsck = run(["fsck.erofs", flat.layers[0]!]);
    expect(fsck.err + fsck.out).not.toContain("ERR");
    expect(fsck.code).toBe(0);
    const separate = sandboxRoot(layers, "sep");
    const merged = sandboxRoot(flat.layers, "flat");
    const want = signature(separate);
    expect(want.length).toBeGreaterThan(5000);
    expect(signature(merged)).toEqual(want);
    const py = run(["chroot", merged, "/usr/bin/env", "-i", ...flat.config.env!, "python3", "-c", "import os; print(2**100, os.path.exists('/c/x'), open('/a/gone').read())"]);
    expect(py.err).toBe("");
    expect(py.out.trim()).toBe(`${2n ** 100n} False reborn in layer 3`);
  }, 300_000);
}

/** Every path under root with type, mode, owner and a content hash, for comparing two trees. */
function signature(root: string): string[] {
  const out: string[] = [];
  const walk = (d: string, rel: string) => {
    for (const name of readdirSync(d).sort()) {
      const p = join(d, name);
      const r = rel ? `${rel}/${name}` : name;
      const st = lstatSync(p);
      let what = "other";
      if (st.isFile()) what = `file ${st.size} ${Bun.hash(readFileSync(p)).toString(16)}`;
      else if (st.isSymbolicLink()) what = `link ${readlinkSync(p)}`;
      else if (st.isDirectory()) what = "dir";
      else if (st.isCharacterDevice() || st.isBlockDevice()) what = `dev ${st.rdev}`;
      else if (st.isFIFO()) what = "fifo";
      out.push(`${r}: ${what} ${(st.mode & 0o7777).toString(8)} ${st.uid}:${st.gid} ${st.isDirectory() ? "" : Math.floor(st.mtimeMs / 1000)}`);
      if (st.isDirectory()) walk(p, r);
    }
  };
  walk(root, "");
  return out;
}
