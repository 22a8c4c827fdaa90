// Checks the newc writer against GNU cpio: what we write must list and extract exactly as built.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { lstatSync, mkdtempSync, readFileSync, readlinkSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CpioError, CpioWriter } from "./cpio";

const hasCpio = Bun.which("cpio") !== null;
const isRoot = process.getuid?.() === 0;
const MTIME = 1_700_000_000;

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "msb-cpio-test-"));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function cpio(args: string[], input: Uint8Array, cwd: string) {
  const result = Bun.spawnSync(["cpio", ...args], { stdin: input, cwd, env: { ...process.env, LC_ALL: "C", TZ: "UTC" } });
  return { code: result.exitCode, stdout: result.stdout.toString(), stderr: result.stderr.toString() };
}

// Contents of odd lengths exercise the 4-byte padding after names and data.
const binary = Uint8Array.from({ length: 4099 }, (_, i) => (i * 31 + 7) & 0xff);
function sample(): Uint8Array {
  const w = new CpioWriter({ mtime: MTIME });
  w.add({ type: "dir", path: "/etc", mode: 0o755 });
  w.add({ type: "file", path: "etc/hosts", mode: 0o644, data: new TextEncoder().encode("127.0.0.1 localhost\n") });
  w.add({ type: "file", path: "etc/empty", mode: 0o600, data: new Uint8Array(0) });
  w.add({ type: "dir", path: "bin", mode: 0o755 });
  w.add({ type: "file", path: "bin/tool", mode: 0o4755, data: binary });
  w.add({ type: "symlink", path: "bin/sh", target: "/bin/tool" });
  w.add({ type: "symlink", path: "bin/rel", target: "tool" });
  w.add({ type: "dir", path: "tmp", mode: 0o1777 });
  w.add({ type: "dir", path: "dev", mode: 0o755 });
  w.add({ type: "char", path: "dev/console", mode: 0o600, major: 5, minor: 1 });
  w.add({ type: "char", path: "dev/null", mode: 0o666, major: 1, minor: 3 });
  w.add({ type: "block", path: "dev/vda", mode: 0o660, major: 254, minor: 0, gid: 6 });
  w.add({ type: "fifo", path: "dev/initctl", mode: 0o600 });
  w.add({ type: "file", path: "owned", mode: 0o640, uid: 1000, gid: 100, data: new TextEncoder().encode("x") });
  return w.finish();
}

const cpioSuite = "newc archive read back by GNU cpio" + (hasCpio ? "" : " (skipped: cpio not installed; apt-get install cpio)");
describe.skipIf(!hasCpio)(cpioSuite, () => {
  test("cpio -itv lists every entry with its type, mode, owner, size and link target", () => {
    const { code, stdout, stderr } = cpio(["-itv", "--numeric-uid-gid"], sample(), dir);
    expect(stderr).not.toContain("junk");
    expect(code).toBe(0);
    const lines = stdout.trim().split("\n").map((l) => l.trim().split(/\s+/));
    // GNU cpio: mode nlink uid gid size|major,minor month day year name [-> target]
    const nameOf = (f: string[]) => (f.includes("->") ? f[f.indexOf("->") - 1]! : f.at(-1)!);
    const byName = new Map(lines.map((f) => [nameOf(f), f]));
    expect([...byName.keys()]).toEqual([
      "etc", "etc/hosts", "etc/empty", "bin", "bin/tool", "bin/sh", "bin/rel", "tmp", "dev",
      "dev/console", "dev/null", "dev/vda", "dev/initctl", "owned",
    ]);
    expect(byName.get("etc")![0]).toBe("drwxr-xr-x");
    expect(byName.get("etc/hosts")!.slice(0, 5)).toEqual(["-rw-r--r--", "1", "0", "0", "20"]);
    expect(byName.get("bin/tool")!.slice(0, 5)).toEqual(["-rwsr-xr-x", "1", "0", "0", "4099"]);
    expect(byName.get("bin/sh")![0]).toBe("lrwxrwxrwx");
    expect(byName.get("bin/sh")!.slice(-2)).toEqual(["->", "/bin/tool"]);
    expect(byName.get("bin/rel")!.slice(-2)).toEqual(["->", "tool"]);
    expect(byName.get("tmp")![0]).toBe("drwxrwxrwt");
    expect(byName.get("dev/console")!.slice(0, 5)).toEqual(["crw-------", "1", "0", "0", "5,"]);
    expect(byName.get("dev/console")![5]).toBe("1");
    expect(byName.get("dev/vda")!.slice(0, 6)).toEqual(["brw-rw----", "1", "0", "6", "254,", "0"]);
    expect(byName.get("dev/initctl")![0]).toBe("prw-------");
    expect(byName.get("owned")!.slice(0, 4)).toEqual(["-rw-r-----", "1", "1000", "100"]);
    expect(stdout).toContain("Nov 14  2023"); // MTIME, in UTC
  });

  test("cpio -id extracts identical content, modes, links and mtimes", () => {
    const out = mkdtempSync(join(dir, "extract-"));
    const { code, stderr } = cpio(["-id", "--no-absolute-filenames", "--preserve-modification-time"], sample(), out);
    expect(stderr).not.toContain("junk");
    expect(code).toBe(0);
    expect(readFileSync(join(out, "etc/hosts"), "utf8")).toBe("127.0.0.1 localhost\n");
    expect(readFileSync(join(out, "etc/empty")).length).toBe(0);
    expect(new Uint8Array(readFileSync(join(out, "bin/tool")))).toEqual(binary);
    expect(lstatSync(join(out, "etc/hosts")).mode & 0o7777).toBe(0o644);
    expect(lstatSync(join(out, "etc/hosts")).mtimeMs / 1000).toBe(MTIME);
    expect(lstatSync(join(out, "bin/tool")).mode & 0o7777).toBe(0o4755);
    expect(lstatSync(join(out, "bin/sh")).isSymbolicLink()).toBe(true);
    expect(readlinkSync(join(out, "bin/sh"))).toBe("/bin/tool");
    expect(readlinkSync(join(out, "bin/rel"))).toBe("tool");
    expect(lstatSync(join(out, "tmp")).mode & 0o7777).toBe(0o1777);
    expect(lstatSync(join(out, "dev/initctl")).isFIFO()).toBe(true);
  });

  test.skipIf(!isRoot)(`cpio -id as root creates device nodes with the right numbers and owners${isRoot ? "" : " (skipped: needs root)"}`, () => {
    const out = mkdtempSync(join(dir, "extract-dev-"));
    const { code, stderr } = cpio(["-id"], sample(), out);
    expect(stderr.trim()).toMatch(/^\d+ blocks?$/);
    expect(code).toBe(0);
    const console = lstatSync(join(out, "dev/console"));
    expect(console.isCharacterDevice()).toBe(true);
    expect(console.rdev).toBe(5 * 256 + 1);
    expect(console.mode & 0o7777).toBe(0o600);
    const vda = lstatSync(join(out, "dev/vda"));
    expect(vda.isBlockDevice()).toBe(true);
    expect(vda.rdev).toBe(254 * 256);
    expect(vda.gid).toBe(6);
    expect(lstatSync(join(out, "owned")).uid).toBe(1000);
  });

  test("a large minor number round-trips (encoded apart from the major in newc)", () => {
    const w = new CpioWriter();
    w.add({ type: "char", path: "big", mode: 0o600, major: 10, minor: 232 });
    const { code, stdout } = cpio(["-itv"], w.finish(), dir);
    expect(code).toBe(0);
    expect(stdout).toMatch(/^crw------- +1 root +root +10, +232 /);
  });
});

describe("writer invariants", () => {
  test("same entries give the same bytes", () => {
    expect(Buffer.from(sample()).equals(Buffer.from(sample()))).toBe(true);
  });

  test("header fields and alignment follow the newc layout", () => {
    const w = new CpioWriter({ mtime: 0x10 });
    w.add({ type: "file", path: "a", mode: 0o644, data: new Uint8Array([1, 2, 3]) });
    const bytes = w.finish();
    const header = new TextDecoder().decode(bytes.subarray(0, 110));
    expect(header.slice(0, 6)).toBe("070701");
    const field = (i: number) => parseInt(header.slice(6 + i * 8, 14 + i * 8), 16);
    expect(field(1)).toBe(0o100644); // mode
    expect(field(5)).toBe(0x10); // mtime
    expect(field(6)).toBe(3); // filesize
    expect(field(11)).toBe(2); // namesize includes the NUL
    // 110 + "a\0" = 112 (aligned), data 3 + 1 pad, then the trailer header.
    expect(new TextDecoder().decode(bytes.subarray(116, 122))).toBe("070701");
    expect(bytes.length % 4).toBe(0);
    expect(new TextDecoder().decode(bytes)).toContain("TRAILER!!!\0");
  });

  test("refuses entries it cannot represent, naming them", () => {
    const w = new CpioWriter();
    expect(() => w.add({ type: "file", path: "a/b", mode: 0o644, data: new Uint8Array() })).toThrow(
      /entry a\/b comes before its parent directory a/,
    );
    w.add({ type: "dir", path: "a", mode: 0o755 });
    expect(() => w.add({ type: "dir", path: "/a/", mode: 0o755 })).toThrow(/duplicate entry a/);
    expect(() => w.add({ type: "file", path: "a/../x", mode: 0o644, data: new Uint8Array() })).toThrow(CpioError);
    expect(() => w.add({ type: "file", path: "", mode: 0o644, data: new Uint8Array() })).toThrow(/empty path/);
    expect(() => w.add({ type: "file", path: "m", mode: 0o10000, data: new Uint8Array() })).toThrow(/mode/);
    expect(() => w.add({ type: "char", path: "c", mode: 0o600, major: -1, minor: 0 })).toThrow(/major -1/);
    expect(() => w.add({ type: "symlink", path: "l", target: "" })).toThrow(/target/);
    expect(() => w.add({ type: "file", path: "TRAILER!!!", mode: 0o644, data: new Uint8Array() })).toThrow(/reserved/);
    w.finish();
    expect(() => w.add({ type: "dir", path: "late", mode: 0o755 })).toThrow(/already finished/);
  });
});

