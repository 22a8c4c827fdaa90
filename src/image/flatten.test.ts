// Flattening: six layers with whiteouts, opaque dirs, hardlinks, xattrs, devices and a large
// file merged into one EROFS. Checked by fsck.erofs, by an extracted tree against what OCI
// semantics say, and (as root with erofs+overlay) against the kernel's own overlayfs merge of the
// separate layers. Then the store side: ensureImage with a disk limit, caching, rmi.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { chmodSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync } from "node:fs";
import { ImageError } from "./errors.ts";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ErofsReader } from "./erofsread.ts";
import { cachedFlat, mergeLayers } from "./flatten.ts";
import { have, SIX_LAYERS, writeOciLayout, type LayoutLayer } from "./harness.ts";
import { importImage } from "./import.ts";
import { tarToErofs } from "./layer.ts";
import { ensureImage, pullImage } from "./pull.ts";
import { ImageStore } from "./store.ts";
import { writeTar, type TarWriteEntry } from "./tarwriter.ts";

const big = SIX_LAYERS[0]!.find((e) => e.path === "big.bin")!.data as Uint8Array;
const capability = SIX_LAYERS[0]!.find((e) => e.path === "cap")!.xattrs!["security.capability"] as Uint8Array;

const missing = ["fsck.erofs"].filter((c) => !have(c));
if (missing.length) test.skip(`flatten tests need fsck.erofs (apt install erofs-utils)`, () => {});
const d = describe.skipIf(missing.length > 0);

let dir: string;
let n = 0;
beforeAll(() => { dir = mkdtempSync(join(tmpdir(), "msb-flatten-test-")); });
afterAll(() => { rmSync(dir, { recursive: true, force: true }); }, 60_000);

function run(cmd: string[]): { code: number; out: string } {
  const p = Bun.spawnSync(cmd, { stdout: "pipe", stderr: "pipe" });
  return { code: p.exitCode ?? -1, out: p.stdout.toString() + p.stderr.toString() };
}

async function toErofs(entries: TarWriteEntry[]): Promise<string> {
  const out = join(dir, `layer${n++}.erofs`);
  await tarToErofs(new Blob([writeTar(entries)]).stream(), out);
  return out;
}

/** type/mode/owner/content of every path under root, for comparing two trees. */
function signature(root: string): string[] {
  const out: string[] = [];
  const walk = (d: string, rel: string) => {
    for (const name of readdirSync(d).sort()) {
      const p = join(d, name);
      const r = rel ? `${rel}/${name}` : name;
      const st = lstatSync(p);
      let what = "";
      if (st.isFile()) what = `file ${st.size} ${Bun.hash(readFileSync(p)).toString(16)} nlink-ok`;
      else if (st.isSymbolicLink()) what = `link ${readlinkSync(p)}`;
      else if (st.isDirectory()) what = "dir";
      else if (st.isCharacterDevice()) what = `char ${st.rdev}`;
      else if (st.isFIFO()) what = "fifo";
      out.push(`${r}: ${what} ${(st.mode & 0o7777).toString(8)} ${st.uid}:${st.gid}`);
      if (st.isDirectory()) walk(p, r);
    }
  };
  walk(root, "");
  return out;
}

d("merging layers", () => {
  let layers: string[];
  let flat: string;
  beforeAll(async () => {
    layers = [];
    for (const l of SIX_LAYERS) layers.push(await toErofs(l));
    flat = join(dir, "flat.erofs");
    await mergeLayers(layers, flat);
  });

  test("the reader reads back what the writer wrote", () => {
    const r = new ErofsReader(layers[0]!);
    try {
      const cap = r.lookup(["cap"])!;
      expect(new TextDecoder().decode(r.content(cap))).toBe("capable");
      expect(cap.xattrs.get("security.capability")).toEqual(capability);
      expect(r.lookup(["hard1"])!.nid).toBe(r.lookup(["hard2"])!.nid);
      const bigNode = r.lookup(["big.bin"])!;
      expect(bigNode.size).toBe(big.length);
      expect(Buffer.concat([...r.chunks(bigNode, 100_000)]).equals(Buffer.from(big))).toBe(true);
      expect(r.lookup(["dev", "null"])).toMatchObject({ rdevMajor: 1, rdevMinor: 3 });
      expect(r.lookup(["nope"])).toBeUndefined();
    } finally {
      r.close();
    }
  });

  test("fsck.erofs accepts the flattened image, and its tree is the OCI merge of the six layers", () => {
    const fsck = run(["fsck.erofs", flat]);
    expect(fsck.out).not.toContain("ERR");
    expect(fsck.code).toBe(0);
    const x = join(dir, "extracted");
    expect(run(["fsck.erofs", `--extract=${x}`, flat]).code).toBe(0);
    const text = (p: string) => readFileSync(join(x, p), "utf8");
    expect(readdirSync(x).sort()).toEqual(["a", "b", "big.bin", "c", "cap", "d", "dev", "e", "hard2", "link", "private", "top"]);
    expect(readdirSync(join(x, "a")).sort()).toEqual(["gone", "keep"]);
    expect(text("a/gone")).toBe("reborn in layer 3");
    expect(statSync(join(x, "a")).mode & 0o777).toBe(0o750);
    expect(readdirSync(join(x, "b"))).toEqual(["new"]);
    expect(text("c")).toBe("c is a file now");
    expect(readdirSync(join(x, "e"))).toEqual(["inner"]);
    expect(readdirSync(join(x, "d")).length).toBe(300);
    expect(existsSync(join(x, "d/f7-" + "n".repeat(20)))).toBe(false);
    expect(text("d/added")).toBe("added in layer 5");
    expect(text("d/f299-" + "n".repeat(20))).toBe("file 299");
    expect(readlinkSync(join(x, "link"))).toBe("b/new");
    expect(text("hard2")).toBe("linked");
    expect(statSync(join(x, "hard2")).uid).toBe(7);
    expect(readFileSync(join(x, "big.bin")).equals(Buffer.from(big.subarray(0, 4096 * 3 + 5)))).toBe(true);
    expect(readdirSync(join(x, "dev"))).toEqual(["null"]);
    expect(statSync(join(x, "private")).uid).toBe(12);
    // No whiteouts or opaque markers remain.
    const r = new ErofsReader(flat);
    try {
      expect(r.lookup(["b"])!.xattrs.size).toBe(0);
      expect(r.lookup(["e"])!.xattrs.size).toBe(0);
      expect(r.lookup(["cap"])!.xattrs.get("security.capability")).toEqual(capability);
    } finally {
      r.close();
    }
  });

  test("output is deterministic", async () => {
    const again = join(dir, "flat-again.erofs");
    await mergeLayers(layers, again);
    expect(Bun.hash(readFileSync(again))).toBe(Bun.hash(readFileSync(flat)));
  });

  const canMount = process.getuid?.() === 0 && /\berofs\b/.test(readFileSync("/proc/filesystems", "utf8")) && /\boverlay\b/.test(readFileSync("/proc/filesystems", "utf8"));
  test.skipIf(!canMount)("the same tree as the kernel's overlayfs over the six layers (needs root + erofs/overlay mounts; skipped otherwise)", () => {
    const mounts: string[] = [];
    const mount = (args: string[], target: string) => {
      mkdirSync(target, { recursive: true });
      const r = run(["mount", ...args, target]);
      if (r.code !== 0) throw new Error(`mount ${args.join(" ")} failed: ${r.out}`);
      mounts.push(target);
      return target;
    };
    try {
      const lowers = layers.map((l, i) => mount(["-t", "erofs", "-o", "loop,ro", l], join(dir, `m${i}`)));
      const merged = mount(["-t", "overlay", "overlay", "-o", `lowerdir=${[...lowers].reverse().join(":")}`], join(dir, "merged"));
      const flatMount = mount(["-t", "erofs", "-o", "loop,ro", flat], join(dir, "flatmount"));
      const want = signature(merged);
      expect(want.length).toBeGreaterThan(300);
      expect(signature(flatMount)).toEqual(want);
      const xattr = (p: string) => run(["python3", "-c", `import os;print(os.getxattr(${JSON.stringify(p)},"security.capability").hex())`]).out.trim();
      expect(xattr(join(flatMount, "cap"))).toBe(Buffer.from(capability).toString("hex"));
    } finally {
      for (const m of mounts.reverse()) run(["umount", m]);
    }
  });
});

d("damaged layer files", () => {
  test("a truncated or garbage layer file is refused naming it, and nothing is left behind", async () => {
    const good = await toErofs([{ path: "a/b", data: "x".repeat(10000) }, { path: "c", data: "y" }]);
    const truncated = join(dir, "truncated.erofs");
    writeFileSync(truncated, readFileSync(good).subarray(0, 4096 * 2));
    const garbage = join(dir, "garbage.erofs");
    writeFileSync(garbage, new Uint8Array(8192).fill(7));
    for (const [bad, why] of [[truncated, /shorter than its superblock says|outside the file/], [garbage, /no EROFS superblock/]] as const) {
      const out = join(dir, `out${n++}.erofs`);
      let err: unknown;
      try { await mergeLayers([good, bad], out); } catch (e) { err = e; }
      expect(err).toBeInstanceOf(ImageError);
      expect((err as Error).message).toContain(`cached layer ${bad} is damaged`);
      expect((err as Error).message).toMatch(why);
      expect(existsSync(out)).toBe(false);
      expect(existsSync(out + ".tails")).toBe(false);
    }
  });
});

d("images with more layers than disks", () => {
  test("ensureImage flattens on first use, caches by image id, and rmi removes the flat image", async () => {
    const home = mkdtempSync(join(dir, "home-"));
    const store = new ImageStore(home);
    const layoutLayers: LayoutLayer[] = SIX_LAYERS.map((entries, i) => ({ entries, compression: i % 2 ? "zstd" : "gzip" }));
    const layout = writeOciLayout(join(dir, "six"), layoutLayers, { Cmd: ["/bin/sh"] }, "six");
    const { record } = await importImage(layout.dir, { store, tag: "local/six:1" });
    expect(record.layers).toHaveLength(6);
    // Within the limit: the layers as they are.
    expect((await ensureImage("local/six:1", { store, policy: "never", maxLayers: 8 })).layers).toHaveLength(6);
    let made = 0;
    const root = await ensureImage("local/six:1", { store, policy: "never", maxLayers: 4, onFlatten: () => made++ });
    expect(made).toBe(1);
    expect(root.layers).toEqual([store.flatPaths(record.id).path]);
    expect(statSync(root.layers[0]!).mode & 0o777).toBe(0o444);
    expect(run(["fsck.erofs", root.layers[0]!]).code).toBe(0);
    const again = await ensureImage("local/six:1", { store, policy: "never", maxLayers: 4, onFlatten: () => made++ });
    expect(again.layers).toEqual(root.layers);
    expect(made).toBe(0 + 1);
    expect(cachedFlat(store, record.id)).toBe(root.layers[0]);
    await store.verify(record.id);
    expect(store.list()[0]!.size).toBeGreaterThan(statSync(root.layers[0]!).size);
    expect(readdirSync(store.tmpDir)).toEqual([]);
    // A changed flat image is caught by verify, naming the file.
    chmodSync(root.layers[0]!, 0o644);
    const bytes = readFileSync(root.layers[0]!);
    bytes[bytes.length - 1]! ^= 0xff;
    writeFileSync(root.layers[0]!, bytes);
    await expect(store.verify(record.id)).rejects.toThrow(/flattened layers .*flat.*\.erofs have changed/);
    store.remove("local/six:1");
    // pullImage with maxLayers makes the flat image right away (msb pull, so the first run does not wait).
    await importImage(layout.dir, { store, tag: "local/six:2" });
    expect(cachedFlat(store, record.id)).toBeUndefined();
    let atPull = 0;
    await pullImage("local/six:2", { store, policy: "never", maxLayers: 4, onFlatten: () => atPull++ });
    expect(atPull).toBe(1);
    expect(cachedFlat(store, record.id)).toBe(root.layers[0]);
    store.remove("local/six:2");
    expect(readdirSync(store.flatDir)).toEqual([]);
    expect(readdirSync(store.layersDir)).toEqual([]);
  });
});
