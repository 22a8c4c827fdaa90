// End-to-end: the SDK against real VMs on the qemu backend (real kernel, real agent).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { guestAssets } from "./assets";
import { KERNEL_CMDLINE } from "./supervisor";
import { QemuBackend } from "./vm/qemu";
import { join } from "node:path";
import { Sandbox } from "./sandbox";
import { MsbError } from "./errors";
import { e2eBackends, eventually, leftoverSandboxes, processesOf, removeHome, repoRoot, useTempHome } from "./testing";

const home = useTempHome();
afterAll(() => removeHome(home));

for (const { backend, skip } of await e2eBackends()) describe.skipIf(skip !== undefined)(`a running sandbox on ${backend}${skip ? ` (skipped: ${skip})` : ""}`, () => {
  let sandbox: Sandbox;
  beforeAll(async () => {
    sandbox = await Sandbox.create({ backend });
  });
  afterAll(async () => {
    await sandbox?.stop();
  });

  test("echo hello prints hello", async () => {
    const result = await sandbox.exec("echo", ["hello"]);
    expect(result.stdout).toBe("hello\n");
    expect(result.stderr).toBe("");
    expect(result.exitCode).toBe(0);
  });

  test("the exit code comes back", async () => {
    const result = await sandbox.exec("sh", ["-c", "exit 7"]);
    expect(result.exitCode).toBe(7);
    expect(result.code).toBe(7);
    expect(result.signal).toBeNull();
  });

  test("stderr stays separate from stdout", async () => {
    const result = await sandbox.shell("echo out; echo err >&2; echo out2");
    expect(result.stdout).toBe("out\nout2\n");
    expect(result.stderr).toBe("err\n");
  });

  test("env and cwd are honoured", async () => {
    const result = await sandbox.exec("sh", ["-c", 'echo "$GREETING $(pwd)"'], { env: { GREETING: "hi there" }, cwd: "/tmp" });
    expect(result.stdout).toBe("hi there /tmp\n");
  });

  test("a missing command exits 127 with a message naming it", async () => {
    const result = await sandbox.exec("no-such-command-xyz");
    expect(result.exitCode).toBe(127);
    expect(result.stderr).toContain("no-such-command-xyz");
    expect(result.error).toContain("no-such-command-xyz");
  });

  test("a missing working directory is reported by name", async () => {
    const result = await sandbox.exec("true", [], { cwd: "/no/such/dir" });
    expect(result.exitCode).toBe(125);
    expect(result.stderr).toContain("/no/such/dir");
  });

  test("a signal death is reported as a signal", async () => {
    const result = await sandbox.shell("kill -9 $$");
    expect(result.signal).toBe(9);
    expect(result.code).toBeNull();
    expect(result.exitCode).toBe(137);
  });

  test("stdin reaches the command", async () => {
    const result = await sandbox.exec("cat", [], { stdin: "through the guest\n" });
    expect(result.stdout).toBe("through the guest\n");
  });

  test("the guest is a real Linux VM with its own kernel", async () => {
    const result = await sandbox.exec("uname", ["-r"]);
    expect(result.stdout.trim()).toMatch(/^6\.1\./);
    const bootId = await sandbox.exec("cat", ["/proc/sys/kernel/random/boot_id"]);
    expect(bootId.stdout.trim()).not.toBe(readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim());
  });

  test("concurrent commands share the channel", async () => {
    const results = await Promise.all(
      Array.from({ length: 8 }, (_, i) => sandbox.shell(`echo start ${i}; sleep 0.$((${i} % 3)); echo end ${i}`)),
    );
    results.forEach((result, i) => expect(result.stdout).toBe(`start ${i}\nend ${i}\n`));
  });
});

describe("lifecycle", () => {
  test("await using stops the sandbox and leaves nothing behind", async () => {
    let name: string;
    {
      await using sandbox = await Sandbox.create({ backend: "qemu" });
      name = sandbox.name;
      expect(existsSync(join(home, "sandboxes", name))).toBe(true);
      expect((await sandbox.exec("true")).exitCode).toBe(0);
    }
    expect(await eventually(() => processesOf(home).length === 0)).toBe(true);
    expect(leftoverSandboxes(home)).toEqual([]);
  });

  test("an attached sandbox stops when its creator is killed", async () => {
    const script = `
      import { Sandbox } from ${JSON.stringify(join(repoRoot, "src/sandbox.ts"))};
      const sandbox = await Sandbox.create({ backend: "qemu" });
      console.log(sandbox.name);
      await Bun.sleep(600_000);
    `;
    const creator = Bun.spawn([process.execPath, "-e", script], { stdout: "pipe", stderr: "inherit", env: process.env });
    const reader = creator.stdout.getReader();
    const { value } = await reader.read();
    const name = new TextDecoder().decode(value).trim();
    expect(name).toMatch(/^msb-/);
    expect(processesOf(home).length).toBeGreaterThan(1);
    creator.kill("SIGKILL");
    await creator.exited;
    expect(await eventually(() => processesOf(home).length === 0, 30_000)).toBe(true);
    expect(leftoverSandboxes(home)).toEqual([]);
  });
});

describe("host going away", () => {
  test("the guest powers off when its supervisor is killed", async () => {
    const sandbox = await Sandbox.create({ backend: "qemu" });
    const running = processesOf(home);
    const supervisor = running.find((p) => p.includes("__supervise"));
    const vm = running.find((p) => p.includes("qemu-system"));
    expect(supervisor).toBeDefined();
    expect(vm).toBeDefined();
    process.kill(Number(supervisor!.split(":")[0]), "SIGKILL");
    // Nothing kills qemu for us: only the agent noticing the closed channel and resetting the VM ends it.
    expect(await eventually(() => processesOf(home).length === 0, 30_000)).toBe(true);
    await expect(sandbox.exec("true")).rejects.toThrow(/lost the connection|sandbox/);
    // The supervisor had no chance to clean up: its record says so, and remove() cleans up.
    const [record] = await Sandbox.list();
    expect(record).toMatchObject({ name: sandbox.name, status: "crashed" });
    expect(record!.exitReason).toContain("supervisor");
    await Sandbox.remove(sandbox.name);
    expect(leftoverSandboxes(home)).toEqual([]);
  });
});

describe("a host that dies before the handshake", () => {
  test("the guest powers off by itself when no INIT comes in time", async () => {
    const dir = mkdtempSync(join(tmpdir(), "msb-noinit-"));
    try {
      // A host that accepts the agent channel and then never answers HELLO, as a supervisor
      // killed mid-boot would leave it.
      const listener = Bun.listen({ unix: join(dir, "agent.sock"), socket: { data() {} } });
      const assets = await guestAssets();
      const vm = await new QemuBackend().start({
        kernel: assets.kernel,
        initrd: assets.initrd,
        cmdline: [...KERNEL_CMDLINE, "msb_init_timeout=3"].join(" "),
        cpus: 1,
        memoryMiB: 256,
        disks: [],
        agentSocket: join(dir, "agent.sock"),
        consoleLog: join(dir, "console.log"),
      });
      const outcome = await Promise.race([vm.exited, Bun.sleep(60_000).then(() => undefined)]);
      vm.kill();
      listener.stop(true);
      expect(outcome?.reason).toBe("reset");
      expect(readFileSync(join(dir, "console.log"), "utf8")).toContain("no INIT from the host in time");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 90_000);
});

describe("boot failures", () => {
  test("a broken kernel path fails fast with a clear error and leaves nothing behind", async () => {
    const started = Date.now();
    const error = await Sandbox.create({ backend: "qemu", kernel: "/no/such/vmlinux" }).catch((e) => e);
    expect(error).toBeInstanceOf(MsbError);
    expect(error.message).toContain("/no/such/vmlinux");
    expect(Date.now() - started).toBeLessThan(30_000);
    expect(await eventually(() => processesOf(home).length === 0)).toBe(true);
    expect(leftoverSandboxes(home)).toEqual([]);
  });

  test("a kernel panic ends with an error that points at the kernel log", async () => {
    const started = Date.now();
    const error = await Sandbox.create({ backend: "qemu", kernelArgs: ["rdinit=/no-such-init"] }).catch((e) => e);
    expect(error).toBeInstanceOf(MsbError);
    expect(error.message).toMatch(/stopped before the guest agent started/);
    const log = /kernel log: (\S+)/.exec(error.message)?.[1];
    expect(log).toBeDefined();
    expect(readFileSync(log!, "utf8")).toContain("Kernel panic");
    expect(error.message).toContain("Kernel panic");
    expect(Date.now() - started).toBeLessThan(60_000);
    expect(await eventually(() => processesOf(home).length === 0)).toBe(true);
    expect(leftoverSandboxes(home)).toEqual([]);
  });

  test("a missing qemu says how to install it", async () => {
    process.env.MSB_QEMU = "/no/such/qemu-system-x86_64";
    try {
      const error = await Sandbox.create({ backend: "qemu" }).catch((e) => e);
      expect(error).toBeInstanceOf(MsbError);
      expect(error.message).toContain("apt-get install qemu-system-x86");
    } finally {
      delete process.env.MSB_QEMU;
    }
    expect(await eventually(() => processesOf(home).length === 0)).toBe(true);
    expect(leftoverSandboxes(home)).toEqual([]);
  });
});
