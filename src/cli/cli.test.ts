// End-to-end: the compiled single binary dist/msb, as a user runs it.
import { afterAll, describe, expect, test } from "bun:test";
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { checkFlags, splitCommand } from "./args";
import { eventually, leftoverSandboxes, processesOf, removeHome, repoRoot, useTempHome } from "../testing";
import { VERSION } from "../version";

const home = useTempHome();
const binary = join(repoRoot, "dist", "msb");
afterAll(() => removeHome(home));

function msb(args: string[], options: { cwd?: string; env?: Record<string, string>; bin?: string } = {}) {
  if (!existsSync(options.bin ?? binary)) throw new Error(`${binary} is missing: run scripts/setup.sh first`);
  const result = Bun.spawnSync([options.bin ?? binary, ...args], {
    cwd: options.cwd ?? tmpdir(),
    env: { ...process.env, MSB_HOME: home, ...options.env },
    stdin: "ignore",
  });
  return { code: result.exitCode, stdout: result.stdout.toString(), stderr: result.stderr.toString() };
}

describe("argument handling", () => {
  test("splitCommand keeps everything after -- for the guest", () => {
    expect(splitCommand(["--cpus", "2", "--", "ls", "--help", "--"])).toEqual({ own: ["--cpus", "2"], command: ["ls", "--help", "--"] });
  });

  test("checkFlags rejects unknown flags and accepts aliases", () => {
    const args = { memory: { type: "string", alias: "m" }, quiet: { type: "boolean" } } as const;
    expect(() => checkFlags(["-m", "256", "--quiet", "--no-quiet"], args, "run")).not.toThrow();
    expect(() => checkFlags(["--memroy", "256"], args, "run")).toThrow(/unknown option --memroy for `msb run`/);
  });

  test("repeatable flags keep every value (citty alone keeps only the last)", () => {
    const run = msb(["run", "-q", "--backend", "qemu", "-e", "A=1", "-e", "B=2", "--env=C=3", "--", "sh", "-c", "echo $A $B $C"]);
    expect(run.stderr).toBe("");
    expect(run.stdout).toBe("1 2 3\n");
  });

  test("--version and --help", () => {
    expect(msb(["--version"]).stdout.trim()).toBe(VERSION);
    const help = msb(["--help"]);
    expect(help.code).toBe(0);
    expect(help.stdout).toContain("run");
    expect(msb(["run", "--help"]).stdout).toContain("--memory");
  });

  test("an unknown flag is a usage error that names it", () => {
    const result = msb(["run", "--frobnicate", "--", "true"]);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain("unknown option --frobnicate");
    expect(result.stderr).toContain("msb run --help");
  });

  test("an unknown command is a usage error", () => {
    const result = msb(["runn"]);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('unknown command "runn"');
  });
});

describe("msb run", () => {
  test("streams stdout and stderr separately and exits with the command's code", () => {
    const result = msb(["run", "-q", "--", "sh", "-c", "echo out; echo err >&2; exit 7"]);
    expect(result.stdout).toBe("out\n");
    expect(result.stderr).toBe("err\n");
    expect(result.code).toBe(7);
  });

  test("prints one notice line saying which accelerator and why", () => {
    const result = msb(["run", "--", "true"]);
    expect(result.code).toBe(0);
    expect(result.stderr).toMatch(/^msb: qemu backend with (KVM acceleration|TCG software emulation, because .+)\n$/);
  });

  test("a missing command exits 127 and names it", () => {
    const result = msb(["run", "-q", "--", "nosuchcmd", "arg"]);
    expect(result.code).toBe(127);
    expect(result.stderr).toContain("nosuchcmd");
  });

  test("100 MB through cat arrives intact", () => {
    const dir = mkdtempSync(join(tmpdir(), "msb-cat-"));
    try {
      const input = join(dir, "in");
      const output = join(dir, "out");
      const data = new Uint8Array(100 * 1024 * 1024);
      for (let offset = 0; offset < data.length; offset += 65536) crypto.getRandomValues(data.subarray(offset, offset + 65536));
      writeFileSync(input, data);
      const run = Bun.spawnSync(["sh", "-c", `"$0" run -q -- cat < "$1" > "$2"`, binary, input, output], {
        env: { ...process.env, MSB_HOME: home },
        stderr: "pipe",
      });
      expect(run.stderr.toString()).toBe("");
      expect(run.exitCode).toBe(0);
      const hash = (path: string) => new Bun.CryptoHasher("sha256").update(readFileSync(path)).digest("hex");
      expect(Bun.file(output).size).toBe(data.length);
      expect(hash(output)).toBe(hash(input));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 300_000);

  test("the binary runs from any directory with no checkout around it", () => {
    const dir = mkdtempSync(join(tmpdir(), "msb-bin-"));
    try {
      const copy = join(dir, "msb");
      copyFileSync(binary, copy);
      const result = msb(["run", "-q", "--", "echo", "hi"], { bin: copy, cwd: "/" });
      expect(result.stdout).toBe("hi\n");
      expect(result.code).toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("the copied binary loads its embedded native VMM and guest, with no checkout around it", () => {
    const dir = mkdtempSync(join(tmpdir(), "msb-doctor-"));
    try {
      const copy = join(dir, "msb");
      copyFileSync(binary, copy);
      const cache = join(dir, "cache");
      const result = msb(["doctor", "--json"], { bin: copy, cwd: "/", env: { MSB_CACHE_DIR: cache } });
      const checks = JSON.parse(result.stdout) as { name: string; ok: boolean; detail: string }[];
      const native = checks.find((c) => c.name === "native VMM")!;
      expect(native.ok).toBe(true);
      expect(native.detail).toStartWith(join(cache, "assets", "libmsbvmm"));
      expect(native.detail).toContain("ABI 2");
      const guest = checks.find((c) => c.name === "guest")!;
      expect(guest.detail).toContain(join(cache, "assets", "vmlinux"));
      expect(result.code).toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("without qemu it says how to install it", () => {
    const result = msb(["run", "--backend", "qemu", "--", "true"], { env: { PATH: "/nonexistent" } });
    expect(result.code).toBe(125);
    expect(result.stderr).toContain("qemu-system-x86_64 was not found");
    expect(result.stderr).toContain("apt-get install qemu-system-x86");
  });

  test("nothing is left running or on disk after the runs", async () => {
    expect(await eventually(() => processesOf(home).length === 0)).toBe(true);
    expect(leftoverSandboxes(home)).toEqual([]);
  });
});
