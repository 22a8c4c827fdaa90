// The record of what ran in a sandbox (exec.log, one JSON object per line): each command's argv,
// its output and how it ended, kept by the supervisor so `msb logs` works after the fact, even on
// a stopped sandbox. Bounded: output beyond a per-command cap is counted, not stored, and the
// file is rotated once it grows past a limit.

import { existsSync, renameSync, statSync } from "node:fs";
import type { FileSink } from "bun";

/** Output bytes stored per command; `msb logs` says how much more there was. */
const MAX_LOGGED_PER_EXEC = 1024 * 1024;
/** The log is rotated to exec.log.1 (one generation) past this size. */
const ROTATE_BYTES = 16 * 1024 * 1024;

export type ExecLogEntry =
  | { t: string; exec: number; event: "start"; argv: string[] }
  | { t: string; exec: number; event: "output"; fd: "stdout" | "stderr"; data: string }
  | { t: string; exec: number; event: "truncated"; bytes: number }
  | { t: string; exec: number; event: "exit"; code: number | null; signal: number | null; timedOut?: boolean };

interface ExecState {
  logged: number;
  dropped: number;
  decoder: { stdout: TextDecoder; stderr: TextDecoder };
}

export class ExecLog {
  private sink: FileSink;
  private size: number;
  private readonly execs = new Map<number, ExecState>();

  constructor(private readonly path: string) {
    this.size = existsSync(path) ? statSync(path).size : 0;
    this.sink = Bun.file(path).writer();
  }

  start(exec: number, argv: unknown): void {
    this.execs.set(exec, { logged: 0, dropped: 0, decoder: { stdout: new TextDecoder(), stderr: new TextDecoder() } });
    const args = Array.isArray(argv) ? argv.map(String) : [];
    this.write({ t: now(), exec, event: "start", argv: args });
  }

  output(exec: number, fd: "stdout" | "stderr", bytes: Uint8Array): void {
    const state = this.execs.get(exec);
    if (!state) return;
    const room = MAX_LOGGED_PER_EXEC - state.logged;
    if (room <= 0) {
      state.dropped += bytes.length;
      return;
    }
    const kept = bytes.length > room ? bytes.subarray(0, room) : bytes;
    state.dropped += bytes.length - kept.length;
    state.logged += kept.length;
    const data = state.decoder[fd].decode(kept, { stream: true });
    if (data) this.write({ t: now(), exec, event: "output", fd, data });
  }

  exit(exec: number, status: { code?: unknown; signal?: unknown; timedOut?: unknown }): void {
    const state = this.execs.get(exec);
    if (!state) return;
    this.execs.delete(exec);
    if (state.dropped > 0) this.write({ t: now(), exec, event: "truncated", bytes: state.dropped });
    this.write({
      t: now(),
      exec,
      event: "exit",
      code: typeof status.code === "number" ? status.code : null,
      signal: typeof status.signal === "number" ? status.signal : null,
      ...(status.timedOut === true ? { timedOut: true } : {}),
    });
  }

  async close(): Promise<void> {
    await this.sink.end();
  }

  private write(entry: ExecLogEntry): void {
    const line = `${JSON.stringify(entry)}\n`;
    if (this.size + line.length > ROTATE_BYTES && this.size > 0) this.rotate();
    this.sink.write(line);
    this.size += line.length;
  }

  private rotate(): void {
    this.sink.flush();
    void this.sink.end();
    try {
      renameSync(this.path, `${this.path}.1`);
    } catch {
      // Nothing to rotate yet.
    }
    this.sink = Bun.file(this.path).writer();
    this.size = 0;
  }
}

function now(): string {
  return new Date().toISOString();
}

