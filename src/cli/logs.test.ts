import { expect, test } from "bun:test";
import { appendFileSync, mkdtempSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { LogFileTail } from "./logs";

test("LogFileTail reads only what was added, whole lines only, across a rotation and a truncation", () => {
  const dir = mkdtempSync(join(tmpdir(), "msb-logtail-"));
  const path = join(dir, "exec.log");
  try {
    const tail = new LogFileTail(path);
    expect(tail.poll()).toEqual([]); // no file yet
    writeFileSync(path, "one\ntw");
    expect(tail.poll()).toEqual(["one"]);
    appendFileSync(path, "o\nthree\n");
    expect(tail.poll()).toEqual(["two", "three"]);
    expect(tail.poll()).toEqual([]);
    // Rotation: the rest of the old file, then the new one from its start.
    appendFileSync(path, "four\n");
    renameSync(path, `${path}.1`);
    writeFileSync(path, "five\n");
    expect(tail.poll()).toEqual(["four", "five"]);
    // Truncation starts over.
    writeFileSync(path, "six\n");
    expect(tail.poll()).toEqual(["six"]);
    // A new reader starts at the rotated generation.
    expect(new LogFileTail(path).poll()).toEqual(["one", "two", "three", "four", "six"]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
