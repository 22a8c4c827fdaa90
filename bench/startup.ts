// Start-up benchmark: Sandbox.create() to the first byte of `echo` output, the whole
// `msb run -- true` process, and where the time goes (kernel boot, agent, host), next to a bare
// QEMU boot of the same kernel and initramfs measured in the same run as the floor.
//
//   bun bench/startup.ts [runs]        (default 10 runs each)

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { Sandbox } from "../src/sandbox";
import { guestAssets } from "../src/assets";
import { QemuBackend, findQemu } from "../src/vm/qemu";
import { KERNEL_CMDLINE } from "../src/supervisor";

const runs = Number(process.argv[2] ?? 10);
const root = resolve(import.meta.dir, "..");
const binary = join(root, "dist", "msb");
const home = mkdtempSync(join(tmpdir(), "msb-bench-"));
process.env.MSB_HOME = home;

function summary(label: string, values: number[]): string {
  const sorted = [...values].sort((a, b) => a - b);
  const median = sorted[Math.floor(sorted.length / 2)]!;
  return `${label.padEnd(44)} min ${sorted[0]!.toFixed(0).padStart(6)} ms  median ${median.toFixed(0).padStart(6)} ms  max ${sorted.at(-1)!.toFixed(0).padStart(6)} ms`;
}
const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;

/** Bare QEMU: same machine options, kernel and initramfs, but /init is told to reset at once. */
async function bareQemuBoot(): Promise<number> {
  const assets = await guestAssets();
  const dir = mkdtempSync(join(tmpdir(), "msb-bench-qemu-"));
  try {
    const backend = new QemuBackend();
    const args = backend.buildArgs({
      kernel: assets.kernel,
      initrd: assets.initrd,
      // rdinit=/bin/false-like: a missing init panics and resets at once (panic=-1), which is the
      // earliest point a guest can hand control back; it bounds kernel boot from below.
      cmdline: [...KERNEL_CMDLINE.filter((a) => !a.startsWith("rdinit=")), "rdinit=/no-init-bench"].join(" "),
      cpus: 1,
      memoryMiB: 512,
      disks: [],
      agentSocket: join(dir, "agent.sock"),
      consoleLog: join(dir, "console.log"),
    });
    const listener = Bun.listen({ unix: join(dir, "agent.sock"), socket: { data() {} } });
    const started = performance.now();
    const child = Bun.spawn([findQemu(), ...args], { stdout: "ignore", stderr: "ignore" });
    await child.exited;
    const elapsed = performance.now() - started;
    listener.stop(true);
    return elapsed;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const firstByte: number[] = [];
const boot: number[] = [];
const init: number[] = [];
const guestUptime: number[] = [];
const create: number[] = [];
for (let i = 0; i < runs; i++) {
  const started = performance.now();
  const sandbox = await Sandbox.create({ backend: "qemu" });
  const created = performance.now();
  const proc = sandbox.spawn("echo", ["x"]);
  const iterator = proc.stdout[Symbol.asyncIterator]();
  await iterator.next();
  firstByte.push(performance.now() - started);
  create.push(created - started);
  boot.push(sandbox.timings!.bootMs);
  init.push(sandbox.timings!.initMs);
  guestUptime.push(sandbox.timings!.guestUptimeMs);
  await proc.wait();
  await sandbox.stop();
}

const wholeRun: number[] = [];
for (let i = 0; i < runs; i++) {
  const started = performance.now();
  const result = Bun.spawnSync([binary, "run", "-q", "--", "true"], { env: process.env });
  if (result.exitCode !== 0) throw new Error(`msb run failed: ${result.stderr.toString()}`);
  wholeRun.push(performance.now() - started);
}

const bare: number[] = [];
for (let i = 0; i < runs; i++) bare.push(await bareQemuBoot());

console.log(`msb start-up, ${runs} runs each, ${new QemuBackend().describe()}`);
console.log(summary("Sandbox.create() → first byte of echo", firstByte));
console.log(summary("  of which Sandbox.create()", create));
console.log(summary("  qemu start → agent HELLO (kernel boot)", boot));
console.log(summary("  HELLO → READY (agent sets up the root)", init));
console.log(summary("  guest uptime at READY (guest's own clock)", guestUptime));
console.log(summary("`msb run -- true`, whole process", wholeRun));
console.log(summary("peer: bare qemu boot to reset, same kernel", bare));
const total = median(firstByte);
const kernel = median(boot);
const agent = median(init);
console.log(
  `share of the median first-byte time: kernel boot ${((kernel / total) * 100).toFixed(0)}%, ` +
    `agent ${((agent / total) * 100).toFixed(0)}%, host (supervisor spawn, sockets, exec) ${(((total - kernel - agent) / total) * 100).toFixed(0)}%`,
);
console.log(`ratio: msb first byte / bare qemu boot = ${(total / median(bare)).toFixed(2)}x`);
rmSync(home, { recursive: true, force: true });
