// Layer tar → EROFS: every image is checked by Debian's fsck.erofs, extracted with
// `fsck.erofs --extract` and compared with the source entries; where the host lets root
// loop-mount EROFS, xattrs, hardlinks and overlayfs whiteouts are checked on a real mount.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, readFileSync, lstatSync, readlinkSync, readdirSync, mkdirSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { tarToErofs } from "./layer.ts";
import { writeTar, type TarWriteEntry } from "./tarwriter.ts";
import { ImageError } from "./errors.ts";

let dir: string;
beforeAll(() => { dir = mkdtempSync(join(tmpdir(), "msb-layer-test-")); });
afterAll(() => { rmSync(dir, { recursive: true, force: true }); }, 60_000);

function stream(b: Uint8Array): ReadableStream<Uint8Array> {
  // Small uneven chunks exercise header/body boundaries across reads.
  let off = 0;
  return new ReadableStream({
    pull(c) {
      if (off >= b.length) return c.close();
      const n = 1 + ((off * 7919) % 3001);
      c.enqueue(b.slice(off, off + n));
      off += n;
    },
  });
}

function run(cmd: string[]): { code: number; out: string } {
  const p = Bun.spawnSync(cmd, { stdout: "pipe", stderr: "pipe" });
  return { code: p.exitCode ?? -1, out: p.stdout.toString() + p.stderr.toString() };
}

let n = 0;
async function convert(entries: TarWriteEntry[] | Uint8Array) {
  const tar = entries instanceof Uint8Array ? entries : writeTar(entries);
  const out = join(dir, `l${n++}.erofs`);
  const stats = await tarToErofs(stream(tar), out);
  return { out, stats, tar };
}

function fsck(img: string) {
  const r = run(["fsck.erofs", img]);
  expect(r.out).not.toContain("ERR");
  expect(r.code).toBe(0);
}

function extract(img: string): string {
  const d = join(dir, `x${n++}`);
  const r = run(["fsck.erofs", `--extract=${d}`, img]);
  expect(r.code).toBe(0);
  return d;
}

function rand(len: number, seed: number): Uint8Array {
  const b = new Uint8Array(len);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < len; i++) { x ^= x << 13; x ^= x >>> 17; x ^= x << 5; b[i] = x & 0xff; }
  return b;
}

/** Expected tree from entries (last write wins), compared with an extracted directory. */
function compareTree(entries: TarWriteEntry[], root: string) {
  const expected = new Map<string, TarWriteEntry>();
  for (const e of entries) {
    const p = e.path.replace(/^\.\//, "").replace(/\/$/, "");
    if (p) expected.set(p, e);
  }
  for (const [p, e] of expected) {
    const full = join(root, p);
    const st = lstatSync(full);
    const type = e.type ?? "file";
    if (type === "file" || type === "hardlink") {
      expect(st.isFile()).toBe(true);
      const src = type === "hardlink" ? expected.get(e.linkname!)! : e;
      const want = typeof src.data === "string" ? new TextEncoder().encode(src.data) : (src.data ?? new Uint8Array(0));
      const got = readFileSync(full);
      expect(got.length).toBe(want.length);
      expect(Buffer.compare(got, Buffer.from(want))).toBe(0);
      // fsck.erofs chowns after chmod, which clears setuid; the mount test checks those bits.
      expect(st.mode & 0o777).toBe((src.mode ?? 0o644) & 0o777);
    } else if (type === "dir") {
      expect(st.isDirectory()).toBe(true);
      expect(st.mode & 0o7777).toBe(e.mode ?? 0o755);
    } else if (type === "symlink") {
      expect(st.isSymbolicLink()).toBe(true);
      expect(readlinkSync(full)).toBe(e.linkname!);
    } else if (type === "char" || type === "block") {
      expect(type === "char" ? st.isCharacterDevice() : st.isBlockDevice()).toBe(true);
      expect(Math.floor(st.rdev / 256) & 0xfff).toBe(e.devmajor!);
      expect((st.rdev & 0xff) | ((st.rdev >> 12) & ~0xff)).toBe(e.devminor!);
    } else if (type === "fifo") {
      expect(st.isFIFO()).toBe(true);
    }
    if (e.uid !== undefined) expect(st.uid).toBe(e.uid);
    if (type !== "symlink" && type !== "dir" && e.mtime !== undefined) expect(Math.floor(st.mtimeMs / 1000)).toBe(e.mtime);
  }
  // Nothing extra appeared (implicit parents are the only additions allowed).
  const walk = (d: string, rel: string) => {
    for (const name of readdirSync(d)) {
      const r = rel ? `${rel}/${name}` : name;
      const isImplicitParent = [...expected.keys()].some((k) => k.startsWith(r + "/"));
      expect(expected.has(r) || isImplicitParent).toBe(true);
      if (lstatSync(join(d, name)).isDirectory()) walk(join(d, name), r);
    }
  };
  walk(root, "");
}

const capability = new Uint8Array([0, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);

const rich: TarWriteEntry[] = [
  { path: "./", type: "dir", mode: 0o755 },
  { path: "bin/", type: "dir", mode: 0o755 },
  { path: "bin/tool", data: rand(3 * 4096 + 17, 1), mode: 0o755, xattrs: { "security.capability": capability } },
  { path: "bin/setuid", data: "#!/bin/sh\n", mode: 0o4755, uid: 0, gid: 0 },
  { path: "etc/", type: "dir", mode: 0o750, uid: 12, gid: 34 },
  { path: "etc/empty", data: "", mtime: 1234567890 },
  { path: "etc/one", data: "1" },
  { path: "etc/exact-block", data: rand(4096, 2) },
  { path: "etc/block-minus-one", data: rand(4095, 3) },
  { path: "etc/block-plus-one", data: rand(4097, 4), uid: 1000, gid: 1000 },
  { path: "etc/tail-too-big-for-inline", data: rand(4096 + 4050, 5), xattrs: { "user.note": "x".repeat(100) } },
  { path: "large/file", data: rand(6 * 1024 * 1024 + 5, 6) },
  { path: "links/rel", type: "symlink", linkname: "../etc/one" },
  { path: "links/abs", type: "symlink", linkname: "/etc/one" },
  { path: "links/long-target", type: "symlink", linkname: "t/".repeat(2040) + "x" },
  { path: "links/hard", type: "hardlink", linkname: "etc/one" },
  { path: "dev/null", type: "char", devmajor: 1, devminor: 3, mode: 0o666 },
  { path: "dev/sda", type: "block", devmajor: 8, devminor: 0, mode: 0o660 },
  { path: "dev/big-minor", type: "char", devmajor: 250, devminor: 70000, mode: 0o600 },
  { path: "dev/pipe", type: "fifo", mode: 0o644 },
  { path: "deep/" + "d".repeat(120) + "/" + "e".repeat(250), data: "pax long name" },
  { path: "gnu/" + "g".repeat(180) + "/f", data: "gnu long name", gnuLongNames: true },
  { path: "gnu/longlink", type: "symlink", linkname: "L".repeat(300), gnuLongNames: true },
  { path: "utf8/caf\u00e9-\u65e5\u672c", data: "unicode name" },
  { path: "etc/two", data: "2" },
  { path: "etc/two", data: "2 replaced" },
];

describe("tar → EROFS", () => {
  test("a layer with every entry type passes fsck.erofs and extracts to the same tree", async () => {
    const { out, stats } = await convert(rich);
    expect(stats.droppedXattrs).toEqual([]);
    fsck(out);
    compareTree(rich, extract(out));
  });

  test("a directory spanning several blocks keeps every entry, in order", async () => {
    const entries: TarWriteEntry[] = [];
    for (let i = 0; i < 1500; i++) entries.push({ path: `many/file-${String(i).padStart(5, "0")}-${"n".repeat(i % 40)}`, data: String(i) });
    entries.push({ path: "many/!first", data: "sorts before ." });
    const { out } = await convert(entries);
    fsck(out);
    const x = extract(out);
    expect(readdirSync(join(x, "many")).length).toBe(1501);
    compareTree(entries, x);
  });

  test("output is deterministic", async () => {
    const a = await convert(rich);
    const b = await convert(rich);
    expect(Bun.hash(readFileSync(a.out))).toBe(Bun.hash(readFileSync(b.out)));
  });

  test("whiteouts become 0/0 char devices and opaque markers an xattr; overlay markers from the tar are dropped", async () => {
    const entries: TarWriteEntry[] = [
      { path: "a/.wh.removed", data: "" },
      { path: "b/.wh..wh..opq", data: "" },
      { path: "b/", type: "dir", mode: 0o700 },
      { path: "b/kept", data: "k" },
      { path: "c", data: "c", xattrs: { "trusted.overlay.redirect": "/x", "user.ok": "1" } },
    ];
    const { out, stats } = await convert(entries);
    expect(stats.droppedXattrs).toEqual(["trusted.overlay.redirect"]);
    fsck(out);
    const x = extract(out);
    const wh = lstatSync(join(x, "a/removed"));
    expect(wh.isCharacterDevice()).toBe(true);
    expect(wh.rdev).toBe(0);
    expect(lstatSync(join(x, "b")).mode & 0o777).toBe(0o700);
    expect(readFileSync(join(x, "b/kept"), "utf8")).toBe("k");
  });
});

describe("hostile layers are refused with a clear error", () => {
  const cases: [string, TarWriteEntry[] | (() => Uint8Array), string, RegExp][] = [
    ["parent traversal", [{ path: "../evil", data: "x" }], "TAR_UNSAFE_PATH", /"\.\.\/evil".*escape the root/],
    ["nested traversal", [{ path: "a/../../evil", data: "x" }], "TAR_UNSAFE_PATH", /escape the root/],
    ["absolute path", [{ path: "/etc/passwd", data: "x" }], "TAR_UNSAFE_PATH", /absolute path/],
    ["write through a symlink", [{ path: "lnk", type: "symlink", linkname: "/etc" }, { path: "lnk/passwd", data: "x" }], "TAR_UNSAFE_PATH", /goes through "lnk", which is a symlink/],
    ["hardlink escaping", [{ path: "h", type: "hardlink", linkname: "../../etc/shadow" }], "TAR_UNSAFE_PATH", /hardlink target/],
    ["hardlink to nothing", [{ path: "h", type: "hardlink", linkname: "nope" }], "TAR_INVALID", /not earlier in this layer/],
    ["whiteout of ..", [{ path: "a/.wh...", data: "" }], "TAR_UNSAFE_PATH", /whiteout of an invalid name/],
    ["truncated body", () => writeTar([{ path: "f", data: "abc", declaredSize: 100000 }], { endMarker: false }), "TRUNCATED", /ends in the middle of a file body/],
    ["truncated header", () => writeTar([{ path: "f", data: "abc" }, { path: "g", data: "" }], { endMarker: false }).subarray(0, 1024 + 100), "TRUNCATED", /ends in the middle of a tar header/],
    ["bad checksum", () => { const t = writeTar([{ path: "f", data: "abc" }]); t[0]! ^= 1; return t; }, "TAR_INVALID", /bad checksum/],
    ["absurd size", () => writeTar([{ path: "f", data: "", declaredSize: 2 ** 40 * 100 }]), "TAR_LIMIT", /over the .*-byte limit/],
    ["absurd PAX header", () => writeTar([{ path: "f", data: "", pax: { comment: "x".repeat(2 << 20) } }]), "TAR_LIMIT", /extended header/],
    ["uid beyond 32 bits", [{ path: "f", data: "", pax: { uid: "4294967296" } }], "TAR_INVALID", /uid\/gid beyond 32 bits/],
    ["device number out of range", [{ path: "d", type: "char", devmajor: 5000, devminor: 1 }], "TAR_INVALID", /beyond Linux's 12-bit major/],
    ["not a tar at all", () => new TextEncoder().encode("<html>" + " ".repeat(600)), "TAR_INVALID", /not a tar archive/],
  ];
  for (const [name, input, code, msg] of cases) {
    test(name, async () => {
      const tar = typeof input === "function" ? input() : writeTar(input);
      const out = join(dir, `bad${n++}.erofs`);
      let err: unknown;
      try { await tarToErofs(stream(tar), out); } catch (e) { err = e; }
      expect(err).toBeInstanceOf(ImageError);
      expect((err as ImageError).code).toBe(code as ImageError["code"]);
      expect((err as Error).message).toMatch(msg);
      expect(existsSync(out)).toBe(false);
      expect(existsSync(out + ".tails")).toBe(false);
    });
  }
});

// Loop-mounting needs root and a kernel with EROFS; where that is missing the tests say so.
const canMount = (() => {
  if (process.getuid?.() !== 0) return false;
  return readFileSync("/proc/filesystems", "utf8").includes("erofs") && readFileSync("/proc/filesystems", "utf8").includes("overlay");
})();

describe.skipIf(!canMount)("on a real kernel mount (needs root + erofs/overlay; skipped otherwise)", () => {
  const mounts: string[] = [];
  afterAll(() => { for (const m of mounts.reverse()) run(["umount", m]); }, 60_000);
  function mount(img: string): string {
    const m = join(dir, `m${n++}`);
    mkdirSync(m);
    const r = run(["mount", "-t", "erofs", "-o", "loop,ro", img, m]);
    if (r.code !== 0) throw new Error(`mount failed: ${r.out}`);
    mounts.push(m);
    return m;
  }
  const py = (code: string) => run(["python3", "-c", code]).out.trim();

  test("xattrs (security.capability) and hardlinks survive", async () => {
    const { out } = await convert(rich);
    const m = mount(out);
    expect(py(`import os;print(os.getxattr('${m}/bin/tool','security.capability').hex())`)).toBe(Buffer.from(capability).toString("hex"));
    expect(py(`import os;print(os.getxattr('${m}/etc/tail-too-big-for-inline','user.note').decode())`)).toBe("x".repeat(100));
    const a = lstatSync(join(m, "etc/one"));
    const b = lstatSync(join(m, "links/hard"));
    expect(a.ino).toBe(b.ino);
    expect(a.nlink).toBe(2);
    expect(readFileSync(join(m, "links/hard"), "utf8")).toBe("1");
    expect(readFileSync(join(m, "etc/two"), "utf8")).toBe("2 replaced");
    expect(lstatSync(join(m, "bin/setuid")).mode & 0o7777).toBe(0o4755);
    expect(lstatSync(join(m, "etc")).uid).toBe(12);
  });

  test("overlayfs honours our whiteouts and opaque dirs across two layers, and writes go to the upper dir only", async () => {
    const lower = await convert([
      { path: "keep", data: "lower keep" },
      { path: "del", data: "to be deleted" },
      { path: "dir/old1", data: "1" },
      { path: "dir/old2", data: "2" },
      { path: "mixed/a", data: "a" },
    ]);
    const upper = await convert([
      { path: ".wh.del", data: "" },
      { path: "dir/.wh..wh..opq", data: "" },
      { path: "dir/new", data: "new" },
      { path: "mixed/b", data: "b" },
    ]);
    const l1 = mount(lower.out);
    const l2 = mount(upper.out);
    const rw = join(dir, `rw${n++}`);
    mkdirSync(join(rw, "upper"), { recursive: true });
    mkdirSync(join(rw, "work"));
    const merged = join(dir, `merged${n++}`);
    mkdirSync(merged);
    const r = run(["mount", "-t", "overlay", "overlay", "-o", `lowerdir=${l2}:${l1},upperdir=${rw}/upper,workdir=${rw}/work`, merged]);
    expect(r.out).toBe("");
    mounts.push(merged);
    expect(readdirSync(merged).sort()).toEqual(["dir", "keep", "mixed"]);
    expect(readdirSync(join(merged, "dir"))).toEqual(["new"]);
    expect(readdirSync(join(merged, "mixed")).sort()).toEqual(["a", "b"]);
    const before = Bun.hash(readFileSync(lower.out));
    await Bun.write(join(merged, "keep"), "changed");
    expect(readFileSync(join(l1, "keep"), "utf8")).toBe("lower keep");
    expect(readFileSync(join(rw, "upper/keep"), "utf8")).toBe("changed");
    expect(Bun.hash(readFileSync(lower.out))).toBe(before);
  });
});
