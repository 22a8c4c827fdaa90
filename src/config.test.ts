import { expect, test } from "bun:test";
import { parseSandboxOptions } from "./config";

test("defaults fill in what the caller left out", () => {
  const config = parseSandboxOptions({});
  expect(config.cpus).toBe(1);
  expect(config.memoryMiB).toBe(512);
  expect(config.detached).toBe(false);
});

test("errors name the key and the problem", () => {
  expect(() => parseSandboxOptions({ cpus: 0 })).toThrow(/cpus: .*>=1/);
  expect(() => parseSandboxOptions({ name: "../x" })).toThrow(/name: must be 1-63 letters/);
  expect(() => parseSandboxOptions({ workdir: "tmp" })).toThrow(/workdir: must be an absolute path/);
  expect(() => parseSandboxOptions({ memory: 5 } as never)).toThrow(/memory/);
});
