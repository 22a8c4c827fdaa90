// End-to-end: sandbox.fs against a real guest (qemu backend): every operation, errors with codes
// naming the sandbox and path, a 1 GiB file both ways with checksums (streamed, never held in
// memory), and copyIn/copyOut of a directory tree keeping modes and symlinks.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { lstatSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, statSync, symlinkSync, writeFileSync, chmodSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Sandbox } from "./sandbox";
import { MsbError } from "./errors";
import { e2eBackends, removeHome, useTempHome } from "./testing";

const home = useTempHome();
const scratch = mkdtempSync(join(tmpdir(), "msb-fs-test-"));
afterAll(() => {
  removeHome(home);
  rmSync(scratch, { recursive: true, force: true });
});

async function rejection(promise: Promise<unknown>): Promise<MsbError> {
  const error = await promise.then(() => undefined, (e) => e);
  if (!(error instanceof MsbError)) throw new Error(`expected an MsbError, got ${error}`);
  return error;
}

const GiB = 1024 * 1024 * 1024;
const BLOCK = 1024 * 1024;

/** 1 GiB of deterministic, incompressible-looking bytes, produced block by block. */
async function* bigData(total: number, hasher: Bun.CryptoHasher): AsyncIterable<Uint8Array> {
  const seed = crypto.getRandomValues(new Uint8Array(BLOCK));
  for (let offset = 0, n = 0; offset < total; offset += BLOCK, n++) {
    const block = new Uint8Array(seed);
    new DataView(block.buffer).setUint32(0, n);
    hasher.update(block);
    yield block;
  }
}

for (const { backend, skip } of await e2eBackends()) describe.skipIf(skip !== undefined)(`sandbox.fs on ${backend}${skip ? ` (skipped: ${skip})` : ""}`, () => {
  let sandbox: Sandbox;
  beforeAll(async () => {
    // The default root lives in guest RAM: room for the 1 GiB file.
    sandbox = await Sandbox.create({ backend, memoryMiB: 3072 });
  });
  afterAll(async () => {
    await sandbox?.stop();
  });

  test("write then read back text, bytes and a stream; the mode is exact", async () => {
    expect(await sandbox.fs.write("/tmp/hello.txt", "hello\n", { mode: 0o640 })).toBe(6);
    expect(await sandbox.fs.readText("/tmp/hello.txt")).toBe("hello\n");
    expect((await sandbox.shell("stat -c %a /tmp/hello.txt; cat /tmp/hello.txt")).stdout).toBe("640\nhello\n");
    const bytes = Uint8Array.from({ length: 300_000 }, (_, i) => (i * 31) & 0xff);
    await sandbox.fs.write("/tmp/bytes", new Blob([bytes]).stream());
    expect(Buffer.from(await sandbox.fs.readFile("/tmp/bytes")).equals(Buffer.from(bytes))).toBe(true);
    // Truncates an existing file; an empty write gives an empty file.
    await sandbox.fs.write("/tmp/bytes", new Uint8Array(0));
    expect((await sandbox.fs.stat("/tmp/bytes")).size).toBe(0);
  });

  test("stat describes files, directories and symlinks", async () => {
    const file = await sandbox.fs.stat("/tmp/hello.txt");
    expect(file).toMatchObject({ type: "file", size: 6, mode: 0o640, uid: 0, gid: 0 });
    expect(Math.abs(file.mtimeMs - Date.now())).toBeLessThan(120_000);
    expect((await sandbox.fs.stat("/tmp")).type).toBe("directory");
    await sandbox.fs.symlink("hello.txt", "/tmp/link");
    expect(await sandbox.fs.stat("/tmp/link", { follow: false })).toMatchObject({ type: "symlink", target: "hello.txt" });
    expect((await sandbox.fs.stat("/tmp/link")).type).toBe("file");
  });

  test("list gives every entry with type, size and mode", async () => {
    await sandbox.fs.mkdir("/tmp/many", { parents: true });
    await sandbox.shell("cd /tmp/many && for i in $(seq 1 2000); do echo $i > file-$i; done && mkdir sub && chmod 700 sub");
    const entries = await sandbox.fs.list("/tmp/many");
    expect(entries.length).toBe(2001);
    const byName = new Map(entries.map((e) => [e.name, e]));
    expect(byName.get("file-1234")).toMatchObject({ type: "file", size: 5, mode: 0o644 });
    expect(byName.get("sub")).toMatchObject({ type: "directory", mode: 0o700 });
  });

  test("mkdir with and without parents; exists; rename; chmod; remove (recursive)", async () => {
    await sandbox.fs.mkdir("/tmp/a/b/c", { parents: true });
    await sandbox.fs.mkdir("/tmp/a/b/c", { parents: true });
    expect((await rejection(sandbox.fs.mkdir("/tmp/a"))).code).toBe("exists");
    expect((await rejection(sandbox.fs.mkdir("/tmp/x/y"))).code).toBe("not_found");
    expect(await sandbox.fs.exists("/tmp/a/b/c")).toBe(true);
    expect(await sandbox.fs.exists("/tmp/a/nope")).toBe(false);
    await sandbox.fs.write("/tmp/a/b/c/f", "x");
    await sandbox.fs.rename("/tmp/a/b/c/f", "/tmp/a/g");
    expect(await sandbox.fs.exists("/tmp/a/g")).toBe(true);
    await sandbox.fs.chmod("/tmp/a/g", 0o4755);
    expect((await sandbox.fs.stat("/tmp/a/g")).mode).toBe(0o4755);
    const notEmpty = await rejection(sandbox.fs.remove("/tmp/a"));
    expect(notEmpty.code).toBe("not_empty");
    expect(notEmpty.message).toContain("recursive");
    await sandbox.fs.remove("/tmp/a/g");
    await sandbox.fs.remove("/tmp/a", { recursive: true });
    expect(await sandbox.fs.exists("/tmp/a")).toBe(false);
  });

  test("errors carry a code and name the sandbox and the path", async () => {
    const missing = await rejection(sandbox.fs.readText("/no/such/file"));
    expect(missing.code).toBe("not_found");
    expect(missing.message).toContain(`sandbox ${sandbox.name}`);
    expect(missing.message).toContain("/no/such/file");
    expect((await rejection(sandbox.fs.readFile("/tmp"))).code).toBe("is_directory");
    expect((await rejection(sandbox.fs.write("/tmp", "x"))).code).toBe("is_directory");
    expect((await rejection(sandbox.fs.stat("/tmp/hello.txt/under"))).code).toBe("not_directory");
    expect((await rejection(sandbox.fs.remove("/", { recursive: true }))).code).toBe("invalid");
    const longName = await rejection(sandbox.fs.stat(`/tmp/${"n".repeat(300)}`));
    expect(longName.code).toBe("invalid");
    expect(longName.message).toContain("at most 255");
    await expect(sandbox.fs.stat("relative/path")).rejects.toThrow("absolute");
    await expect(sandbox.fs.stat("")).rejects.toThrow("empty");
    await expect(sandbox.fs.write("/tmp/a\0b", "x")).rejects.toThrow("NUL");
  });

  test("a 1 GiB file goes in and comes back out, streamed, with matching sha256", async () => {
    const hasher = new Bun.CryptoHasher("sha256");
    let started = performance.now();
    const written = await sandbox.fs.write("/tmp/big", bigData(GiB, hasher));
    const inSeconds = (performance.now() - started) / 1000;
    const expected = hasher.digest("hex");
    expect(written).toBe(GiB);
    const guestSum = await sandbox.exec("sha256sum", ["/tmp/big"]);
    expect(guestSum.stdout.split(" ")[0]).toBe(expected);

    const back = new Bun.CryptoHasher("sha256");
    let size = 0;
    started = performance.now();
    for await (const chunk of sandbox.fs.read("/tmp/big")) {
      back.update(chunk);
      size += chunk.length;
    }
    const outSeconds = (performance.now() - started) / 1000;
    expect(size).toBe(GiB);
    expect(back.digest("hex")).toBe(expected);
    console.log(`1 GiB: in ${(1024 / inSeconds).toFixed(1)} MB/s (${inSeconds.toFixed(1)} s), out ${(1024 / outSeconds).toFixed(1)} MB/s (${outSeconds.toFixed(1)} s)`);
    await sandbox.fs.remove("/tmp/big");
  }, 600_000);

  test("copyIn and copyOut of a directory tree keep modes and symlinks", async () => {
    const src = join(scratch, "src");
    mkdirSync(join(src, "bin"), { recursive: true });
    mkdirSync(join(src, "empty"));
    writeFileSync(join(src, "bin", "tool"), "#!/bin/sh\necho tool ran\n");
    chmodSync(join(src, "bin", "tool"), 0o755);
    writeFileSync(join(src, "secret"), "s3cret");
    chmodSync(join(src, "secret"), 0o600);
    writeFileSync(join(src, "big"), new Uint8Array(3 * 1024 * 1024).fill(7));
    symlinkSync("bin/tool", join(src, "link"));
    chmodSync(join(src, "empty"), 0o750);

    const copiedIn = await sandbox.fs.copyIn(src, "/tmp/tree");
    expect(copiedIn).toBe(3 * 1024 * 1024 + 6 + 24);
    const listing = await sandbox.shell("cd /tmp/tree && stat -c '%n %a %F' bin bin/tool secret empty link big && readlink link && ./link");
    expect(listing.stdout).toBe(
      ["bin 755 directory", "bin/tool 755 regular file", "secret 600 regular file", "empty 750 directory", "link 777 symbolic link", "big 644 regular file", "bin/tool", "tool ran", ""].join("\n"),
    );

    const out = join(scratch, "out");
    const copiedOut = await sandbox.fs.copyOut("/tmp/tree", out);
    expect(copiedOut).toBe(copiedIn);
    expect(statSync(join(out, "bin", "tool")).mode & 0o7777).toBe(0o755);
    expect(statSync(join(out, "secret")).mode & 0o7777).toBe(0o600);
    expect(statSync(join(out, "empty")).mode & 0o7777).toBe(0o750);
    expect(readFileSync(join(out, "secret"), "utf8")).toBe("s3cret");
    expect(readFileSync(join(out, "big")).equals(readFileSync(join(src, "big")))).toBe(true);
    expect(lstatSync(join(out, "link")).isSymbolicLink()).toBe(true);
    expect(readlinkSync(join(out, "link"))).toBe("bin/tool");

    // Single files both ways.
    await sandbox.fs.copyIn(join(src, "secret"), "/tmp/one");
    expect((await sandbox.fs.stat("/tmp/one")).mode).toBe(0o600);
    await sandbox.fs.copyOut("/tmp/one", join(scratch, "one"));
    expect(readFileSync(join(scratch, "one"), "utf8")).toBe("s3cret");
  });

  test("many transfers at once share the connection", async () => {
    const files = Array.from({ length: 40 }, (_, i) => `/tmp/par-${i}`);
    await Promise.all(files.map((f, i) => sandbox.fs.write(f, `${i}`.repeat(100_000))));
    const texts = await Promise.all(files.map((f) => sandbox.fs.readText(f)));
    texts.forEach((t, i) => expect(t).toBe(`${i}`.repeat(100_000)));
  });
});
