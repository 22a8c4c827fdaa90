// Measures how long the guest kernel takes from launching QEMU (microvm, TCG) to running /init,
// per machine variant, and prints the medians. Figures, not a test (see bench/ for the rest).
//
//   bun guest/kernel/boot-time.ts [--runs N] [--kernel PATH] [--cpus N]

import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { DEFAULT_KERNEL, INIT_MARKER, MACHINE, boot, prepareBootOnly, tcgClockArgs } from "./testvm";

const { values } = parseArgs({
  options: { runs: { type: "string", default: "9" }, kernel: { type: "string" }, cpus: { type: "string", default: "1" } },
});
const runs = Number(values.runs);
const cpus = Number(values.cpus);
const kernel = values.kernel ?? process.env.MSB_KERNEL ?? DEFAULT_KERNEL;

interface Variant {
  machine: string;
  cmdline: string[];
  /** Boot the uncompressed archive instead of the gzip one. */
  raw?: boolean;
}
const clock = tcgClockArgs();
const VARIANTS: Record<string, Variant> = {
  "recommended": { machine: MACHINE, cmdline: ["quiet", ...clock] },
  "recommended, uncompressed initrd": { machine: MACHINE, cmdline: ["quiet", ...clock], raw: true },
  "recommended, rtc=off": { machine: MACHINE.replace("rtc=on", "rtc=off"), cmdline: ["quiet", ...clock] },
  "without quiet (full log on ttyS0)": { machine: MACHINE, cmdline: clock },
  "without TSC hints (jiffies clock)": { machine: MACHINE, cmdline: ["quiet"] },
};

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const dir = mkdtempSync(join(tmpdir(), "msb-boot-time-"));
try {
  const initrd = prepareBootOnly(dir);
  const raw = join(dir, "boot-only.cpio");
  writeFileSync(raw, Bun.gunzipSync(new Uint8Array(await Bun.file(initrd).arrayBuffer())));
  console.log(`kernel ${kernel}; ${runs} boots per variant, ${cpus} vCPU, 256 MiB, TCG; load average ${(await Bun.file("/proc/loadavg").text()).split(" ")[0]}`);
  // Round-robin over the variants so that load from other processes on the host (which moves
  // TCG timings a lot) hits every variant alike.
  const names = Object.keys(VARIANTS);
  const toInit = new Map<string, number[]>(names.map((n) => [n, []]));
  const total = new Map<string, number[]>(names.map((n) => [n, []]));
  const failures = new Map<string, string>();
  for (let i = 0; i < runs; i++) {
    for (const name of names) {
      if (failures.has(name)) continue;
      const v = VARIANTS[name]!;
      const r = await boot({ kernel, initrd: v.raw ? raw : initrd, cpus, memoryMiB: 256, machine: v.machine, extraCmdline: v.cmdline, timeoutMs: 30_000 });
      if (r.initMs === undefined || r.exitCode !== 0) {
        failures.set(name, `FAILED: no ${INIT_MARKER} or bad exit (${r.exitCode}${r.timedOut ? ", timed out" : ""}): ${r.output.split("\n").slice(-3).join(" | ")}`);
        continue;
      }
      toInit.get(name)!.push(r.initMs);
      total.get(name)!.push(r.totalMs);
    }
  }
  for (const [name, v] of Object.entries(VARIANTS)) {
    const t = toInit.get(name)!;
    console.log(`${name}\n  -M ${v.machine} -append "... ${v.cmdline.join(" ")}"`);
    console.log(failures.has(name) ? `  ${failures.get(name)}` : `  launch to /init: median ${median(t).toFixed(0)} ms, min ${Math.min(...t).toFixed(0)} ms; launch to qemu exit: median ${median(total.get(name)!).toFixed(0)} ms`);
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
