// Measures how long the guest kernel takes from launching QEMU (microvm, TCG) to running /init,
// per machine variant, and prints the medians. Not a test: figures for the README and bench/.
//
//   bun guest/kernel/boot-time.ts [--runs N] [--kernel PATH]

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { DEFAULT_KERNEL, INIT_MARKER, MACHINE, boot, prepareBootOnly } from "./testvm";

const { values } = parseArgs({ options: { runs: { type: "string", default: "7" }, kernel: { type: "string" } } });
const runs = Number(values.runs);
const kernel = values.kernel ?? process.env.MSB_KERNEL ?? DEFAULT_KERNEL;

const VARIANTS: Record<string, { machine: string; cmdline?: string[] }> = {
  "tests' machine": { machine: MACHINE },
  "tests' machine, quiet": { machine: MACHINE, cmdline: ["quiet"] },
  "+ pit=off": { machine: `${MACHINE},pit=off`, cmdline: ["quiet"] },
  "+ rtc=off": { machine: MACHINE.replace("rtc=on", "rtc=off"), cmdline: ["quiet"] },
  "microvm defaults (acpi on)": { machine: "microvm", cmdline: ["quiet"] },
};

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const dir = mkdtempSync(join(tmpdir(), "msb-boot-time-"));
try {
  const initrd = prepareBootOnly(dir);
  console.log(`kernel ${kernel}, ${runs} runs per variant, 1 vCPU, 256 MiB, TCG`);
  for (const [name, v] of Object.entries(VARIANTS)) {
    const toInit: number[] = [];
    const total: number[] = [];
    let failure = "";
    for (let i = 0; i < runs; i++) {
      const r = await boot({ kernel, initrd, cpus: 1, memoryMiB: 256, machine: v.machine, extraCmdline: v.cmdline, timeoutMs: 30_000 });
      if (r.initMs === undefined || r.exitCode !== 0) {
        failure = `no ${INIT_MARKER} or bad exit (${r.exitCode}${r.timedOut ? ", timed out" : ""}): ${r.output.split("\n").slice(-3).join(" | ")}`;
        break;
      }
      toInit.push(r.initMs);
      total.push(r.totalMs);
    }
    const figures = failure || `to /init median ${median(toInit).toFixed(0)} ms (min ${Math.min(...toInit).toFixed(0)}), to qemu exit ${median(total).toFixed(0)} ms`;
    console.log(`${name.padEnd(28)} ${figures}\n${"".padEnd(28)} -M ${v.machine} ${v.cmdline?.join(" ") ?? ""}`);
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
