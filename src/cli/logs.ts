// `msb logs`: what a sandbox's commands printed (the exec log), its kernel console and its
// supervisor's log — merged by time, filtered by --since/--tail, followed with -f. Works on
// stopped sandboxes: the logs live in the sandbox's directory until it is removed.

import { closeSync, openSync, readSync, statSync } from "node:fs";
import { join } from "node:path";
import { defineCommand, type ArgsDef } from "citty";
import { MsbError } from "../errors";
import type { ExecLogEntry } from "../exec-log";
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

/** Turns one line of a source's file into a log line (null: nothing to show). */
type LineParser = (line: string) => LogLine | null;

function execParser(): LineParser {
  return (line) => {
    let entry: ExecLogEntry;
    try {
      entry = JSON.parse(line) as ExecLogEntry;
    } catch {
      return null; // a line cut short by a crash
    }
    const time = Date.parse(entry.t);
    if (entry.event === "output") return { time, source: "exec", stream: entry.fd, text: entry.data };
    if (entry.event === "truncated") return { time, source: "exec", stream: "stderr", text: `[msb: ${entry.bytes} more bytes of output were not logged]\n` };
    return null;
  };
}

function supervisorParser(): LineParser {
  return (line) => {
    const stamp = /^(\d{4}-\d\d-\d\dT[\d:.]+Z) /.exec(line);
    return { time: stamp ? Date.parse(stamp[1]!) : 0, source: "supervisor", stream: "stdout", text: `${line}\n` };
  };
}

/** Kernel lines carry seconds since boot; the boot began about when the sandbox started. */
function consoleParser(name: string): LineParser {
  const record = getSandboxRecord(name);
  const boot = Date.parse(record.startedAt ?? record.createdAt);
  let last = boot;
  return (line) => {
    const uptime = /^\[\s*(\d+\.\d+)\]/.exec(line);
    if (uptime) last = boot + Number(uptime[1]) * 1000;
    return { time: last, source: "console", stream: "stdout", text: `${line}\n` };
  };
}

/** Each chosen source's file (the exec log rotates once, to `.1`) and its line parser. */
function sourceFiles(name: string, sources: readonly LogSource[]): Array<{ path: string; parse: LineParser }> {
  const dir = sandboxDir(name);
  const files: Array<{ path: string; parse: LineParser }> = [];
  if (sources.includes("exec")) files.push({ path: join(dir, "exec.log"), parse: execParser() });
  if (sources.includes("supervisor")) files.push({ path: join(dir, "supervisor.log"), parse: supervisorParser() });
  if (sources.includes("console")) files.push({ path: join(dir, "console.log"), parse: consoleParser(name) });
  return files;
}

function byTime(lines: LogLine[]): LogLine[] {
  // A stable sort keeps each source's own order among equal times.
  return lines.sort((a, b) => a.time - b.time);
}

type SourceTail = { tail: LogFileTail; parse: LineParser };

/** A tail per chosen source, at the start of its files. */
function openTails(name: string, sources: readonly LogSource[]): SourceTail[] {
  return sourceFiles(name, sources).map(({ path, parse }) => ({ tail: new LogFileTail(path), parse }));
}

/** What the tails have gained since the last call, merged by time. */
function drain(tails: SourceTail[]): LogLine[] {
  const lines: LogLine[] = [];
  for (const { tail, parse } of tails) {
    for (const text of tail.poll()) {
      const line = text ? parse(text) : null;
      if (line) lines.push(line);
    }
  }
  return byTime(lines);
}

/**
 * Reads one log file incrementally: each `poll` reads only the bytes added since the last and
 * returns the complete lines among them. It starts at the rotated generation (`.1`) if there is
 * one, and follows a rotation (a new file under the name, the old one now `.1`): the rest of the
 * old file first, then the new one from its start.
 */
export class LogFileTail {
  private inode = -1;
  private offset = 0;
  private partial = "";
  private readonly decoder = new TextDecoder();

  constructor(private readonly path: string) {
    const start = statOrNull(`${path}.1`) ?? statOrNull(path);
    if (start) this.inode = start.ino;
  }

  poll(): string[] {
    const now = statOrNull(this.path);
    if (!now) return [];
    const lines: string[] = [];
    if (now.ino !== this.inode) {
      const rotated = statOrNull(`${this.path}.1`);
      if (this.inode !== -1 && rotated?.ino === this.inode) lines.push(...this.take(`${this.path}.1`, rotated.size));
      this.inode = now.ino;
      this.offset = 0;
      this.partial = "";
    } else if (now.size < this.offset) {
      this.offset = 0; // truncated
      this.partial = "";
    }
    lines.push(...this.take(this.path, now.size));
    return lines;
  }

  private take(path: string, size: number): string[] {
    if (size <= this.offset) return [];
    const bytes = new Uint8Array(size - this.offset);
    let fd: number;
    try {
      fd = openSync(path, "r");
    } catch {
      return [];
    }
    try {
      const n = readSync(fd, bytes, 0, bytes.length, this.offset);
      this.offset += n;
      const pieces = (this.partial + this.decoder.decode(bytes.subarray(0, n), { stream: true })).split("\n");
      this.partial = pieces.pop()!;
      return pieces;
    } finally {
      closeSync(fd);
    }
  }
}

function statOrNull(path: string): { ino: number; size: number } | null {
  try {
    const s = statSync(path);
    return { ino: s.ino, size: s.size };
  } catch {
    return null;
  }
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
    const tails = openTails(name!, sources);
    let lines = drain(tails).filter((line) => since === undefined || line.time >= since);
    if (tail !== undefined) lines = tailLines(lines, tail);
    for (const line of lines) print(line, Boolean(args.timestamps), tags);
    if (!args.follow) return;

    // Follow: print what each file gains, until the sandbox is no longer live (then once more).
    for (;;) {
      const record = findSandbox(name!);
      for (const line of drain(tails)) print(line, Boolean(args.timestamps), tags);
      if (!record || !isLive(record)) return;
      await Bun.sleep(200);
    }
  },
});
