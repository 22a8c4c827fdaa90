// `msb logs`: what a sandbox's commands printed (the exec log), its kernel console and its
// supervisor's log — merged by time, filtered by --since/--tail, followed with -f. Works on
// stopped sandboxes: the logs live in the sandbox's directory until it is removed.

import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { defineCommand, type ArgsDef } from "citty";
import { MsbError } from "../errors";
import { readExecLog } from "../exec-log";
import { isLive } from "../lifecycle";
import { sandboxDir } from "../paths";
import { findSandbox, getSandboxRecord } from "../state";
import { positionals } from "./args";
import { parseDuration } from "./options";

export type LogSource = "exec" | "console" | "supervisor";

export interface LogLine {
  /** Milliseconds since the epoch. */
  time: number;
  source: LogSource;
  stream: "stdout" | "stderr";
  text: string;
}

/** The sandbox's log lines from the chosen sources, oldest first. */
export function readLogs(name: string, sources: readonly LogSource[]): LogLine[] {
  const record = getSandboxRecord(name);
  const dir = sandboxDir(name);
  const lines: LogLine[] = [];
  if (sources.includes("exec")) {
    for (const entry of readExecLog(join(dir, "exec.log"))) {
      const time = Date.parse(entry.t);
      if (entry.event === "output") {
        lines.push({ time, source: "exec", stream: entry.fd, text: entry.data });
      } else if (entry.event === "truncated") {
        lines.push({ time, source: "exec", stream: "stderr", text: `[msb: ${entry.bytes} more bytes of output were not logged]\n` });
      }
    }
  }
  if (sources.includes("supervisor")) {
    for (const line of readLines(join(dir, "supervisor.log"))) {
      const stamp = /^(\d{4}-\d\d-\d\dT[\d:.]+Z) /.exec(line);
      lines.push({ time: stamp ? Date.parse(stamp[1]!) : 0, source: "supervisor", stream: "stdout", text: `${line}\n` });
    }
  }
  if (sources.includes("console")) {
    // Kernel lines carry seconds since boot; the boot began about when the sandbox started.
    const boot = Date.parse(record.startedAt ?? record.createdAt);
    let last = boot;
    for (const line of readLines(join(dir, "console.log"))) {
      const uptime = /^\[\s*(\d+\.\d+)\]/.exec(line);
      if (uptime) last = boot + Number(uptime[1]) * 1000;
      lines.push({ time: last, source: "console", stream: "stdout", text: `${line}\n` });
    }
  }
  // A stable sort keeps each source's own order among equal times.
  return lines.sort((a, b) => a.time - b.time);
}

function readLines(path: string): string[] {
  if (!existsSync(path)) return [];
  const text = readFileSync(path, "utf8");
  return text ? text.replace(/\n$/, "").split("\n") : [];
}

/** --since: an ISO time, or a duration meaning that long ago (10m, 2h). */
export function parseSince(value: unknown, now = Date.now()): number | undefined {
  if (value === undefined) return undefined;
  const text = String(value);
  if (/^\d{4}-\d\d-\d\d/.test(text)) {
    const time = Date.parse(text);
    if (Number.isNaN(time)) throw new MsbError("usage", `--since: "${text}" is not a valid time`);
    return time;
  }
  return now - parseDuration(text, "--since")! * 1000;
}

/** The last `count` lines of the output (lines, not chunks: one chunk may hold many). */
export function tailLines(lines: LogLine[], count: number): LogLine[] {
  const out: LogLine[] = [];
  let remaining = count;
  for (let i = lines.length - 1; i >= 0 && remaining > 0; i--) {
    const line = lines[i]!;
    const parts = line.text.replace(/\n$/, "").split("\n");
    const kept = parts.slice(Math.max(0, parts.length - remaining));
    remaining -= kept.length;
    out.unshift({ ...line, text: `${kept.join("\n")}${line.text.endsWith("\n") ? "\n" : ""}` });
  }
  return out;
}

const logsArgs = {
  name: { type: "positional", required: false, description: "Sandbox name" },
  follow: { type: "boolean", alias: "f", description: "Keep printing new output until the sandbox stops" },
  tail: { type: "string", alias: "n", description: "Only the last N lines" },
  since: { type: "string", description: "Only output since a time (ISO 8601) or for a duration (10m, 2h)" },
  source: { type: "string", description: "exec (default: what commands printed), console (kernel), supervisor, or all; comma-separated" },
  timestamps: { type: "boolean", alias: "t", description: "Prefix each line with its time" },
} satisfies ArgsDef;

function parseSources(value: unknown): LogSource[] {
  if (value === undefined) return ["exec"];
  const all: LogSource[] = ["exec", "console", "supervisor"];
  const chosen = String(value).split(",").map((s) => s.trim());
  if (chosen.includes("all")) return all;
  for (const source of chosen) {
    if (!all.includes(source as LogSource)) throw new MsbError("usage", `--source must be exec, console, supervisor or all, not "${source}"`);
  }
  return chosen as LogSource[];
}

function print(line: LogLine, timestamps: boolean, sourceTags: boolean): void {
  const target = line.stream === "stderr" ? process.stderr : process.stdout;
  if (!timestamps && !sourceTags) {
    target.write(line.text);
    return;
  }
  const prefix = `${timestamps ? `${new Date(line.time).toISOString()} ` : ""}${sourceTags ? `[${line.source}] ` : ""}`;
  const body = line.text.endsWith("\n") ? line.text.slice(0, -1) : line.text;
  target.write(`${body.split("\n").map((l) => prefix + l).join("\n")}${line.text.endsWith("\n") ? "\n" : ""}`);
}

export const logs = defineCommand({
  meta: { name: "logs", description: "Show what a sandbox's commands printed, its kernel console or its supervisor log (also when stopped)" },
  args: logsArgs,
  async run({ rawArgs, args }) {
    const [name, ...extra] = positionals(rawArgs, logsArgs, "logs", 1, "a sandbox name");
    if (extra.length > 0) throw new MsbError("usage", `msb logs takes one sandbox name, got "${[name, ...extra].join(" ")}"`);
    const sources = parseSources(args.source);
    const since = parseSince(args.since);
    const tail = args.tail === undefined ? undefined : Number(args.tail);
    if (tail !== undefined && !(Number.isInteger(tail) && tail >= 0)) throw new MsbError("usage", `--tail expects a whole number, got "${args.tail}"`);
    const tags = sources.length > 1;
    let lines = readLogs(name!, sources).filter((line) => since === undefined || line.time >= since);
    if (tail !== undefined) lines = tailLines(lines, tail);
    for (const line of lines) print(line, Boolean(args.timestamps), tags);
    if (!args.follow) return;

    // Follow: re-read and print what is new, until the sandbox is no longer live.
    let seen = readLogs(name!, sources).length;
    for (;;) {
      const record = findSandbox(name!);
      const current = record ? readLogs(name!, sources) : [];
      for (const line of current.slice(seen)) print(line, Boolean(args.timestamps), tags);
      seen = Math.max(seen, current.length);
      if (!record || !isLive(record)) return;
      await Bun.sleep(250);
    }
  },
});
