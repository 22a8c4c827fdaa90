// Lifecycle figures: how long `msb ls` and `msb inspect` take with 200 sandboxes recorded (against
// the same commands with none, in the same run), the host memory an idle sandbox costs (its
// supervisor, and how much of that is the Bun runtime; its VM process), and how many idle
// 128 MiB sandboxes this machine holds while `exec true` stays under 100 ms.
//
//   bun bench/lifecycle.ts [--max-idle N]     (default 24; uses dist/msb and the qemu backend)

import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

const root = resolve(import.meta.dir, "..");
const binary = join(root, "dist", "msb");
const home = mkdtempSync(join(tmpdir(), "msb-bench-lifecycle-"));
process.env.MSB_HOME = home;
const maxIdle = Number(process.argv[process.argv.indexOf("--max-idle") + 1] ?? 24) || 24;

const { defineSandbox, Sandbox } = await import("../src/sandbox");

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

function timeCommand(args: string[], runs = 10): number {
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    const start = performance.now();
    const result = Bun.spawnSync([binary, ...args], { env: { ...process.env, MSB_HOME: home }, stdout: "pipe", stderr: "pipe" });
    times.push(performance.now() - start);
    if (result.exitCode !== 0) throw new Error(`msb ${args.join(" ")} failed: ${result.stderr.toString()}`);
  }
  return median(times);
}

function rssKiB(pid: number): number {
  const match = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return match ? Number(match[1]) : NaN;
}

try {
  // --- ls / inspect with 0 and 200 sandboxes --------------------------------------------------
  const lsEmpty = timeCommand(["ls"]);
  const inspectMissing = timeCommand(["--version"]);
  for (let i = 0; i < 200; i++) await defineSandbox({ name: `rec-${String(i).padStart(3, "0")}` }, { ephemeral: false });
  const ls200 = timeCommand(["ls"]);
  const lsJson200 = timeCommand(["ls", "--json"]);
  const inspect200 = timeCommand(["inspect", "rec-137"]);
  console.log("msb ls / inspect (median of 10 runs, each a fresh process)");
  console.log(`  msb --version (process start floor)   ${inspectMissing.toFixed(1)} ms`);
  console.log(`  msb ls, 0 sandboxes                   ${lsEmpty.toFixed(1)} ms`);
  console.log(`  msb ls, 200 sandboxes                 ${ls200.toFixed(1)} ms  (${(ls200 / lsEmpty).toFixed(2)}x the empty ls)`);
  console.log(`  msb ls --json, 200 sandboxes          ${lsJson200.toFixed(1)} ms`);
  console.log(`  msb inspect NAME, 200 sandboxes       ${inspect200.toFixed(1)} ms`);
  for (const { name } of await Sandbox.list()) await Sandbox.remove(name);

  // --- memory of an idle sandbox --------------------------------------------------------------
  // The Bun runtime alone: the same binary, idle in an event loop, doing nothing of msb's.
  const runtime = Bun.spawn([process.execPath, "-e", "setInterval(() => {}, 1 << 30)"], { stdout: "ignore" });
  await Bun.sleep(1500);
  const runtimeKiB = rssKiB(runtime.pid);
  runtime.kill();

  const idle: string[] = [];
  const samples: { count: number; p50: number; p99: number; supervisorKiB: number; vmKiB: number }[] = [];
  for (let count = 1; count <= maxIdle; count++) {
    const name = `idle-${count}`;
    const sandbox = await Sandbox.create({ name, backend: "qemu", memoryMiB: 128, detached: true, bootTimeoutSeconds: 300 });
    sandbox.close();
    idle.push(name);
    await Bun.sleep(1000);
    // exec true on a sandbox that has been idle, while all the others idle too.
    const probe = await Sandbox.get(idle[0]!);
    const times: number[] = [];
    for (let i = 0; i < 30; i++) {
      const start = performance.now();
      await probe.exec("true");
      times.push(performance.now() - start);
    }
    probe.close();
    const info = (await Sandbox.list()).find((s) => s.name === name)!;
    const sample = {
      count,
      p50: percentile(times, 50),
      p99: percentile(times, 99),
      supervisorKiB: rssKiB(info.supervisorPid!),
      vmKiB: rssKiB(info.vmPid!),
    };
    samples.push(sample);
    if (sample.p50 > 100) break;
  }
  console.log("\nidle sandboxes (128 MiB each, qemu backend), exec true on the oldest one");
  console.log("  count  exec-true p50   p99      supervisor RSS  VM RSS");
  for (const s of samples) {
    console.log(
      `  ${String(s.count).padStart(5)}  ${s.p50.toFixed(1).padStart(8)} ms  ${s.p99.toFixed(1).padStart(7)} ms  ${(s.supervisorKiB / 1024).toFixed(1).padStart(8)} MiB  ${(s.vmKiB / 1024).toFixed(1).padStart(6)} MiB`,
    );
  }
  const under = samples.filter((s) => s.p50 <= 100);
  const last = samples[samples.length - 1]!;
  console.log(`\nBun runtime alone (bun -e idle loop): ${(runtimeKiB / 1024).toFixed(1)} MiB RSS`);
  console.log(
    `supervisor RSS per idle sandbox: ${(median(samples.map((s) => s.supervisorKiB)) / 1024).toFixed(1)} MiB median, of which the runtime is ~${(runtimeKiB / 1024).toFixed(1)} MiB`,
  );
  console.log(`VM (qemu) RSS per idle sandbox: ${(median(samples.map((s) => s.vmKiB)) / 1024).toFixed(1)} MiB median`);
  console.log(
    `held ${under.length} idle sandboxes with exec true p50 <= 100 ms${last.p50 > 100 ? ` (at ${last.count} it was ${last.p50.toFixed(0)} ms)` : ` (stopped at the --max-idle cap of ${maxIdle})`}`,
  );
  for (const name of idle) await Sandbox.remove(name, { force: true });
} finally {
  for (const { name } of await Sandbox.list().catch(() => [])) await Sandbox.remove(name, { force: true }).catch(() => {});
  rmSync(home, { recursive: true, force: true });
}
