// msb cp: operand parsing, and copies both ways through dist/msb on the qemu backend.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseCopyOperand } from "./cp";
import { removeHome, repoRoot, useTempHome } from "../testing";

describe("cp operands", () => {
  test("NAME:/path is a sandbox path; host paths stay host paths", () => {
    expect(parseCopyOperand("box:/etc/hosts")).toEqual({ sandbox: "box", path: "/etc/hosts" });
    expect(parseCopyOperand("./a:b")).toBe("./a:b");
    expect(parseCopyOperand("/tmp/x:y")).toBe("/tmp/x:y");
    expect(parseCopyOperand("plain.txt")).toBe("plain.txt");
    expect(() => parseCopyOperand("box:relative")).toThrow(/must be absolute, e\.g\. box:\/root\/relative/);
  });
});

const home = useTempHome();
const binary = join(repoRoot, "dist", "msb");
const work = mkdtempSync(join(tmpdir(), "msb-cp-"));

function msb(args: string[]) {
  const result = Bun.spawnSync([binary, ...args], { cwd: work, env: { ...process.env, MSB_HOME: home }, stdin: "ignore" });
  return { code: result.exitCode, stdout: result.stdout.toString(), stderr: result.stderr.toString() };
}

beforeAll(() => {
  expect(msb(["run", "-d", "--name", "files", "--backend", "qemu"]).code).toBe(0);
});

afterAll(() => {
  msb(["rm", "-f", "files"]);
  removeHome(home);
  rmSync(work, { recursive: true, force: true });
});

describe("msb cp", () => {
  test("a directory tree in and back out keeps contents and modes; an existing directory receives it by name", () => {
    const tree = join(work, "tree");
    mkdirSync(join(tree, "bin"), { recursive: true });
    writeFileSync(join(tree, "notes.txt"), "some notes\n");
    writeFileSync(join(tree, "bin", "tool"), "#!/bin/sh\necho tool ran\n");
    chmodSync(join(tree, "bin", "tool"), 0o755);
    chmodSync(join(tree, "notes.txt"), 0o640);
    chmodSync(join(tree, "bin"), 0o750);

    const copyIn = msb(["cp", "tree", "files:/root"]);
    expect(copyIn.stderr).toContain("copied");
    expect(copyIn.code).toBe(0);
    const ran = msb(["exec", "files", "--", "sh", "-c", "/root/tree/bin/tool; stat -c '%a %n' /root/tree/notes.txt /root/tree/bin"]);
    expect(ran.stdout).toBe("tool ran\n640 /root/tree/notes.txt\n750 /root/tree/bin\n");

    const out = join(work, "out");
    mkdirSync(out);
    expect(msb(["cp", "files:/root/tree", "out"]).code).toBe(0);
    expect(readFileSync(join(out, "tree", "notes.txt"), "utf8")).toBe("some notes\n");
    expect(statSync(join(out, "tree", "bin", "tool")).mode & 0o777).toBe(0o755);
    expect(statSync(join(out, "tree", "notes.txt")).mode & 0o777).toBe(0o640);
    expect(statSync(join(out, "tree", "bin")).mode & 0o777).toBe(0o750);
  });

  test("a single file to a new name, both ways", () => {
    writeFileSync(join(work, "one.bin"), new Uint8Array(300_000).map((_, i) => i % 251));
    expect(msb(["cp", "one.bin", "files:/tmp/renamed.bin"]).code).toBe(0);
    expect(msb(["exec", "files", "--", "sh", "-c", "wc -c < /tmp/renamed.bin"]).stdout.trim()).toBe("300000");
    expect(msb(["cp", "files:/tmp/renamed.bin", "back.bin"]).code).toBe(0);
    expect(Bun.hash(readFileSync(join(work, "back.bin")))).toBe(Bun.hash(readFileSync(join(work, "one.bin"))));
  });

  test("errors name what is wrong", () => {
    const both = msb(["cp", "a", "b"]);
    expect(both.code).toBe(2);
    expect(both.stderr).toContain("exactly one of the two paths must be NAME:/path");
    const missingHost = msb(["cp", "no-such-file", "files:/tmp/x"]);
    expect(missingHost.stderr).toContain("no-such-file does not exist on the host");
    const missingGuest = msb(["cp", "files:/no/such/path", "x"]);
    expect(missingGuest.code).toBe(125);
    expect(missingGuest.stderr).toContain("/no/such/path");
    const missingSandbox = msb(["cp", "ghost:/etc/hosts", "x"]);
    expect(missingSandbox.stderr).toContain("no sandbox named ghost");
  });
});
