// `msb metrics`: a running sandbox's resource use sampled on the host — CPU and memory of its VM
// and supervisor processes from /proc, its writable layer's disk use, and the network counters
// only its supervisor sees (asked over control.sock).

import { existsSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { defineCommand, type ArgsDef } from "citty";
import { MsbError } from "../errors";
import { sandboxDir } from "../paths";
import { getSandboxRecord, liveSupervisorPid, liveVmPid, procStatFields } from "../state";
import { askSupervisor } from "../lifecycle";
import { positionals } from "./args";

const CLOCK_TICKS_PER_SECOND = 100;

/** utime + stime (fields 14 and 15 of /proc/PID/stat). */
function cpuTicks(pid: number | undefined): number | undefined {
  const fields = pid === undefined ? undefined : procStatFields(pid);
  return fields ? Number(fields[11]) + Number(fields[12]) : undefined;
}

function rssBytes(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined;
  try {
    const match = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return match ? Number(match[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

function allocatedBytes(path: string): number | undefined {
  return existsSync(path) ? statSync(path).blocks * 512 : undefined;
}

export interface SandboxMetrics {
  name: string;
  status: string;
  /** Percent of one CPU over the sampling interval. */
  cpuPercent: { vm: number | null; supervisor: number | null };
  memoryBytes: { vm: number | null; supervisor: number | null };
  /** Host disk the writable layer takes (sparse: only what was written). */
  writableLayerBytes: number | null;
  network: Record<string, unknown> | null;
  execsRunning: number | null;
  sampledOverMs: number;
}

export async function sampleMetrics(name: string, intervalMs = 500): Promise<SandboxMetrics> {
  const record = getSandboxRecord(name);
  if (record.status !== "running") {
    throw new MsbError("not_running", `sandbox ${name} is ${record.status}; metrics are sampled from a running sandbox`);
  }
  const vm = liveVmPid(name);
  const supervisor = liveSupervisorPid(name);
  const before = { vm: cpuTicks(vm), supervisor: cpuTicks(supervisor), at: performance.now() };
  const [control] = await Promise.all([askSupervisor(name, { op: "metrics" }), Bun.sleep(intervalMs)]);
  const elapsed = performance.now() - before.at;
  const percent = (start: number | undefined, pid: number | undefined) => {
    const end = cpuTicks(pid);
    if (start === undefined || end === undefined) return null;
    return Math.round(((end - start) / CLOCK_TICKS_PER_SECOND / (elapsed / 1000)) * 1000) / 10;
  };
  return {
    name,
    status: record.status,
    cpuPercent: { vm: percent(before.vm, vm), supervisor: percent(before.supervisor, supervisor) },
    memoryBytes: { vm: rssBytes(vm) ?? null, supervisor: rssBytes(supervisor) ?? null },
    writableLayerBytes: allocatedBytes(join(sandboxDir(name), "upper.ext4")) ?? null,
    network: (control?.network as Record<string, unknown> | null | undefined) ?? null,
    execsRunning: typeof control?.execsRunning === "number" ? control.execsRunning : null,
    sampledOverMs: Math.round(elapsed),
  };
}

const metricsArgs = {
  name: { type: "positional", required: false, description: "Sandbox name(s)" },
  json: { type: "boolean", description: "Print JSON" },
} satisfies ArgsDef;

function mib(bytes: number | null): string {
  return bytes === null ? "-" : `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

export const metrics = defineCommand({
  meta: { name: "metrics", description: "CPU, memory, disk and network use of running sandboxes, sampled on the host" },
  args: metricsArgs,
  async run({ rawArgs, args }) {
    const names = positionals(rawArgs, metricsArgs, "metrics", 1, "a sandbox name");
    const samples = await Promise.all(names.map((name) => sampleMetrics(name)));
    if (args.json) {
      console.log(JSON.stringify(names.length === 1 ? samples[0] : samples, null, 2));
      return;
    }
    for (const m of samples) {
      const net = m.network as { rxFrames?: number; txFrames?: number; dropped?: number } | null;
      console.log(
        [
          `${m.name}:`,
          `  cpu      vm ${m.cpuPercent.vm ?? "-"} %  supervisor ${m.cpuPercent.supervisor ?? "-"} %  (over ${m.sampledOverMs} ms)`,
          `  memory   vm ${mib(m.memoryBytes.vm)}  supervisor ${mib(m.memoryBytes.supervisor)}`,
          `  disk     writable layer ${m.writableLayerBytes === null ? "tmpfs (in guest memory)" : mib(m.writableLayerBytes)}`,
          `  network  ${net ? `rx ${net.rxFrames} frames, tx ${net.txFrames} frames, dropped ${net.dropped}` : "none"}`,
          `  execs    ${m.execsRunning ?? "-"} running`,
        ].join("\n"),
      );
    }
  },
});
