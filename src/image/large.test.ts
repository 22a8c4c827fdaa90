// A file larger than 4 GiB (sizes past 32 bits in the tar and in the EROFS inode), streamed
// through the converter without being held in memory, then checked by fsck.erofs and, where the
// host can mount EROFS, read back at its end.

import { afterAll, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, openSync, readSync, closeSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { tarToErofs } from "./layer.ts";
import { writeTar } from "./tarwriter.ts";

const SIZE = 4 * 2 ** 30 + 12345;
const dir = mkdtempSync(join(tmpdir(), "msb-large-test-"));
afterAll(() => {
  Bun.spawnSync(["umount", join(dir, "m")]);
  rmSync(dir, { recursive: true, force: true });
}, 120_000);

function hugeTar(): ReadableStream<Uint8Array> {
  const head = writeTar([{ path: "big/file", data: new Uint8Array(0), declaredSize: SIZE }], { endMarker: false });
  const zeros = new Uint8Array(8 << 20);
  const tail = new TextEncoder().encode("END-MARKER");
  let sent = 0;
  let stage = 0;
  return new ReadableStream({
    pull(c) {
      if (stage === 0) { c.enqueue(head); stage = 1; return; }
      if (stage === 1) {
        const n = Math.min(zeros.length, SIZE - tail.length - sent);
        if (n > 0) { c.enqueue(zeros.subarray(0, n)); sent += n; return; }
        c.enqueue(tail);
        stage = 2;
        return;
      }
      c.enqueue(new Uint8Array((512 - (SIZE % 512)) % 512 + 1024));
      c.close();
    },
  });
}

test("a 4 GiB + 12345 byte file converts, passes fsck.erofs and reads back", async () => {
  const out = join(dir, "large.erofs");
  const stats = await tarToErofs(hugeTar(), out);
  expect(stats.tarBytes).toBeGreaterThan(SIZE);
  expect(statSync(out).size).toBeGreaterThan(SIZE);
  const fsck = Bun.spawnSync(["fsck.erofs", out], { stderr: "pipe" });
  expect(fsck.exitCode).toBe(0);
  const canMount = process.getuid?.() === 0 && readFileSync("/proc/filesystems", "utf8").includes("erofs");
  if (!canMount) return; // fsck above already read every block; the mount check needs root
  mkdirSync(join(dir, "m"));
  expect(Bun.spawnSync(["mount", "-t", "erofs", "-o", "loop,ro", out, join(dir, "m")]).exitCode).toBe(0);
  const f = join(dir, "m/big/file");
  expect(statSync(f).size).toBe(SIZE);
  const fd = openSync(f, "r");
  const buf = new Uint8Array(20);
  readSync(fd, buf, 0, 20, SIZE - 20);
  closeSync(fd);
  expect(new TextDecoder().decode(buf.subarray(10))).toBe("END-MARKER");
  expect([...buf.subarray(0, 10)]).toEqual(new Array(10).fill(0));
}, 600_000);
