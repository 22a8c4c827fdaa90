// Checks the initramfs builder: the archive GNU cpio reads back has /init, the console nodes and
// the busybox default root, all owned by root, byte-identical across builds.

import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DEFAULT_BUSYBOX, InitramfsError, buildInitramfs, buildInitramfsGz, buildRootfsTarGz, checkInit, loadBusybox } from "./build";

const dir = mkdtempSync(join(tmpdir(), "msb-initramfs-test-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const REPO = join(import.meta.dir, "../..");
const BUN = process.execPath;

const haveTools = Bun.which("cpio") !== null && Bun.file(DEFAULT_BUSYBOX).size > 0;
const suffix = haveTools ? "" : " (skipped: needs cpio and busybox-static: apt-get install cpio busybox-static)";
const init = new TextEncoder().encode("#!/rootfs/bin/busybox sh\necho hello\n");

function list(gz: Uint8Array<ArrayBuffer>): string[][] {
  const r = Bun.spawnSync(["cpio", "-itv", "--numeric-uid-gid"], { stdin: Bun.gunzipSync(gz), env: { LC_ALL: "C", TZ: "UTC" } });
  expect(r.exitCode).toBe(0);
  return r.stdout.toString().trim().split("\n").map((l) => l.trim().split(/\s+/));
}
const nameOf = (f: string[]) => (f.includes("->") ? f[f.indexOf("->") - 1]! : f.at(-1)!);

describe.skipIf(!haveTools)(`initramfs builder${suffix}`, () => {
  test("the default root's tar (for the default image) holds the same tree as /rootfs; withoutRootfs leaves it out", () => {
    const busybox = loadBusybox();
    const initramfs = list(buildInitramfsGz({ init, ...busybox }));
    const tarPath = join(dir, "rootfs.tar.gz");
    writeFileSync(tarPath, buildRootfsTarGz(busybox));
    const r = Bun.spawnSync(["tar", "-tvzf", tarPath, "--numeric-owner"], { env: { LC_ALL: "C", TZ: "UTC" } });
    expect(r.exitCode).toBe(0);
    const tarred = r.stdout.toString().trim().split("\n").map((l) => l.trim().split(/\s+/));
    const tarNames = tarred.map((f) => (f.includes("->") ? f[f.indexOf("->") - 1]! : f.at(-1)!).replace(/\/$/, "")).filter((n) => n !== ".");
    const fromInitramfs = initramfs.map(nameOf).filter((n) => n.startsWith("rootfs/")).map((n) => n.slice("rootfs/".length));
    expect(tarNames.sort()).toEqual(fromInitramfs.sort());
    expect(tarred.every((f) => f[1] === "0/0")).toBe(true);
    expect(tarred.find((f) => f.at(-1) === "bin/busybox")![0]).toBe("-rwxr-xr-x");
    expect(tarred.find((f) => f.at(-1) === "tmp/")![0]).toBe("drwxrwxrwt");
    expect(Bun.hash(buildRootfsTarGz(busybox))).toBe(Bun.hash(readFileSync(tarPath)));
    const bare = list(buildInitramfsGz({ init, ...busybox, withoutRootfs: true })).map(nameOf);
    expect(bare.sort()).toEqual(["dev", "dev/console", "dev/null", "init"]);
  });


  test("the CLI writes a gzip newc archive with /init, console nodes and the default root", () => {
    const initPath = join(dir, "init.sh");
    writeFileSync(initPath, init);
    const out = join(dir, "out/initramfs.cpio.gz");
    const r = Bun.spawnSync([BUN, join(REPO, "guest/initramfs/build.ts"), "--init", initPath, "--out", out]);
    expect(r.stderr.toString()).toBe("");
    expect(r.exitCode).toBe(0);
    const entries = new Map(list(new Uint8Array(readFileSync(out))).map((f) => [nameOf(f), f]));

    expect(entries.get("init")!.slice(0, 5)).toEqual(["-rwxr-xr-x", "1", "0", "0", String(init.length)]);
    expect(entries.get("dev/console")!.slice(0, 6)).toEqual(["crw-------", "1", "0", "0", "5,", "1"]);
    expect(entries.get("dev/null")!.slice(0, 6)).toEqual(["crw-rw-rw-", "1", "0", "0", "1,", "3"]);
    expect(entries.get("rootfs/bin/busybox")![0]).toBe("-rwxr-xr-x");
    expect(entries.get("rootfs/tmp")![0]).toBe("drwxrwxrwt");
    expect(entries.get("rootfs/var/tmp")![0]).toBe("drwxrwxrwt");
    expect(entries.get("rootfs/root")![0]).toBe("drwx------");
    for (const d of ["proc", "sys", "dev", "run", "home", "etc", "usr/bin", "usr/sbin", "sbin", "mnt"]) {
      expect(entries.get(`rootfs/${d}`)?.[0]?.[0]).toBe("d");
    }
    for (const f of ["passwd", "group", "hosts", "os-release"]) expect(entries.get(`rootfs/etc/${f}`)?.[0]).toBe("-rw-r--r--");
    // Every entry root-owned whoever runs the build.
    expect([...entries.values()].filter((f) => f[2] !== "0" || f[3] !== "0")).toEqual([]);

    // One symlink to /bin/busybox per applet busybox itself lists.
    const { applets } = loadBusybox();
    expect(applets.length).toBeGreaterThan(200);
    for (const applet of applets.filter((a) => a !== "bin/busybox")) {
      const e = entries.get(`rootfs/${applet}`);
      expect(e?.slice(-2)).toEqual(["->", "/bin/busybox"]);
    }
    expect(entries.get("rootfs/bin/sh")?.slice(-2)).toEqual(["->", "/bin/busybox"]);
  });

  test("the default root's files say what it is and know root and nobody", () => {
    const out = mkdtempSync(join(dir, "extract-"));
    const gz = buildInitramfsGz({ init, ...loadBusybox() });
    const r = Bun.spawnSync(["cpio", "-id", "--quiet"], { stdin: Bun.gunzipSync(gz), cwd: out });
    expect(r.exitCode).toBe(0);
    expect(readFileSync(join(out, "rootfs/etc/os-release"), "utf8")).toContain("ID=msb");
    const passwd = readFileSync(join(out, "rootfs/etc/passwd"), "utf8");
    expect(passwd).toMatch(/^root:x:0:0:.*:\/root:\/bin\/sh$/m);
    expect(passwd).toMatch(/^nobody:x:65534:65534:/m);
    expect(readFileSync(join(out, "rootfs/etc/hosts"), "utf8")).toMatch(/^::1\s+localhost/m);
    expect(new Uint8Array(readFileSync(join(out, "rootfs/bin/busybox")))).toEqual(new Uint8Array(readFileSync(DEFAULT_BUSYBOX)));
    // The busybox we ship is the host's static one and runs as is.
    const echo = Bun.spawnSync([join(out, "rootfs/bin/busybox"), "echo", "works"]);
    expect(echo.stdout.toString()).toBe("works\n");
  });

  test("same inputs give the same bytes", () => {
    const bb = loadBusybox();
    const a = buildInitramfsGz({ init, ...bb });
    const b = buildInitramfsGz({ init, ...bb });
    expect(Buffer.from(a).equals(Buffer.from(b))).toBe(true);
    expect(buildInitramfs({ init, ...bb }).length).toBeGreaterThan(bb.busybox.length);
  });

  test("extra default-root files land under /rootfs with their parents", () => {
    const gz = buildInitramfsGz({ init, ...loadBusybox(), rootfsFiles: { "opt/x/tool": { data: new Uint8Array([1]), mode: 0o700 } } });
    const entries = new Map(list(gz).map((f) => [nameOf(f), f]));
    expect(entries.get("rootfs/opt/x")?.[0]).toBe("drwxr-xr-x");
    expect(entries.get("rootfs/opt/x/tool")?.[0]).toBe("-rwx------");
  });
});

describe("what may be /init", () => {
  test("a #! script or a static ELF is accepted", () => {
    expect(() => checkInit(init, "init.sh")).not.toThrow();
    expect(() => checkInit(new Uint8Array(readFileSync(DEFAULT_BUSYBOX)), DEFAULT_BUSYBOX)).not.toThrow();
  });

  test("a dynamically linked binary is refused with the reason", () => {
    expect(() => checkInit(new Uint8Array(readFileSync(BUN)), BUN)).toThrow(/dynamically linked.*crt-static/);
  });

  test("something that is neither is refused", () => {
    expect(() => checkInit(new TextEncoder().encode("hello"), "x")).toThrow(InitramfsError);
  });

  test("the CLI names a missing --agent", () => {
    const r = Bun.spawnSync([BUN, join(REPO, "guest/initramfs/build.ts"), "--agent", join(dir, "nope")]);
    expect(r.exitCode).toBe(1);
    expect(r.stderr.toString()).toContain(`init binary ${join(dir, "nope")} does not exist`);
  });
});
