// Starting, stopping, killing and removing sandboxes by name, from any process: the supervisor is
// the only owner of a running sandbox, and these functions talk to it through the state database,
// signals and its sockets.

import { closeSync, existsSync, openSync, rmSync, unlinkSync } from "node:fs";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { MsbError } from "./errors";
import { isCompiled, sandboxDir } from "./paths";
import {
  claimStart,
  deleteSandboxRecord,
  findSandbox,
  getSandboxRecord,
  liveSupervisorPid,
  liveVmPid,
  markEnded,
  recordSupervisor,
  retainLog,
  type SandboxRecord,
  type SandboxStatus,
} from "./state";
import type { ReadyMessage } from "./supervisor";
import { SecretSet } from "./secrets/substitute";

/** Signal that asks a supervisor to kill its VM at once (`msb kill`); SIGTERM asks for a clean stop. */
export const KILL_SIGNAL = "SIGUSR2";

const LIVE: readonly SandboxStatus[] = ["starting", "running", "stopping"];

export function isLive(record: Pick<SandboxRecord, "status">): boolean {
  return LIVE.includes(record.status);
}

/** The command line that starts a supervisor: this binary, or bun running this checkout. */
function supervisorCommand(name: string): string[] {
  if (isCompiled()) return [process.execPath, "__supervise", name];
  return [process.execPath, join(import.meta.dir, "main.ts"), "__supervise", name];
}

export interface StartedSupervisor {
  ready: Extract<ReadyMessage, { ready: true }>;
  process: Subprocess;
}

/**
 * Boots a recorded sandbox: starts its supervisor and waits for the guest agent. `attached`: the
 * sandbox stops when this process exits (the supervisor watches a pipe from us).
 */
export async function startSandbox(name: string, attached: boolean, secretValues: Record<string, string> = {}): Promise<StartedSupervisor> {
  const secrets = secretValuesFor(name, secretValues);
  if (!claimStart(name)) {
    const record = getSandboxRecord(name);
    throw new MsbError(
      isLive(record) ? "already_running" : "bad_state",
      `sandbox ${name} is ${record.status}; only a created or stopped sandbox can be started`,
    );
  }
  const dir = sandboxDir(name);
  const logFd = openSync(join(dir, "supervisor.log"), "a", 0o600);
  let supervisor: Subprocess<"pipe" | "ignore", "pipe", number>;
  try {
    supervisor = Bun.spawn(supervisorCommand(name), {
      // An attached sandbox's supervisor watches this pipe: when we exit, it closes, and the
      // sandbox stops. A detached one gets nothing to watch.
      // Secret values travel on this pipe too (one JSON line first), never in argv, env or a file.
      stdin: attached || secrets ? "pipe" : "ignore",
      stdout: "pipe",
      stderr: logFd,
      detached: true,
      env: secrets ? envWithout(Object.values(secrets)) : process.env,
    });
    if (secrets) {
      supervisor.stdin!.write(`${JSON.stringify({ secrets })}\n`);
      supervisor.stdin!.flush();
      if (!attached) supervisor.stdin!.end();
    }
  } catch (cause) {
    markEnded(name, "crashed", `could not start its supervisor: ${(cause as Error).message}`);
    throw new MsbError("spawn_failed", `could not start the supervisor of sandbox ${name}: ${(cause as Error).message}`, { cause });
  } finally {
    closeSync(logFd);
  }
  recordSupervisor(name, supervisor.pid);
  const ready = await readReadyLine(supervisor.stdout, name);
  supervisor.unref();
  if (!ready.ready) {
    await supervisor.exited;
    if (ready.code === "supervisor_died") {
      // It could not record why: keep its log where errors point, and record the crash.
      const log = retainLog(join(dir, "supervisor.log"), `${name}-${Date.now()}.supervisor.log`);
      const record = findSandbox(name);
      if (record?.ephemeral) removeSandboxFiles(name);
      else markEnded(name, "crashed", ready.message);
      throw new MsbError(ready.code, `${ready.message}${log ? `; its log: ${log}` : ""}`);
    }
    throw new MsbError(ready.code, ready.message);
  }
  return { ready, process: supervisor };
}

/**
 * The values of a sandbox's secrets for one start: those given, else the host environment variable
 * of the same name. Checked now, so a missing or bad value fails before anything boots.
 */
function secretValuesFor(name: string, given: Record<string, string>): Record<string, string> | undefined {
  const secrets = getSandboxRecord(name).config.secrets;
  if (secrets.length === 0) return undefined;
  const values: Record<string, string> = {};
  const missing: string[] = [];
  for (const s of secrets) {
    const value = given[s.name] ?? process.env[s.name];
    if (value) values[s.name] = value;
    else missing.push(s.name);
  }
  if (missing.length > 0) {
    throw new MsbError(
      "secret_missing",
      `sandbox ${name} needs the value of secret ${missing.join(", ")}: values are never stored, so every start needs them again; set ${missing.map((n) => `$${n}`).join(", ")} in the environment (or pass them to Sandbox.start)`,
    );
  }
  // Errors name the secret, never the value.
  new SecretSet(secrets.map((s) => ({ ...s, value: values[s.name]! })));
  return values;
}

/** This process's environment without variables holding any of `values` (the supervisor and its VM never carry them). */
function envWithout(values: string[]): Record<string, string | undefined> {
  return Object.fromEntries(Object.entries(process.env).filter(([, v]) => v === undefined || !values.includes(v)));
}

async function readReadyLine(stdout: ReadableStream<Uint8Array>, name: string): Promise<ReadyMessage> {
  const reader = stdout.getReader();
  let text = "";
  const decoder = new TextDecoder();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (value) text += decoder.decode(value, { stream: true });
      const newline = text.indexOf("\n");
      if (newline >= 0) return JSON.parse(text.slice(0, newline)) as ReadyMessage;
      if (done) break;
    }
  } finally {
    reader.releaseLock();
    stdout.cancel().catch(() => {});
  }
  return {
    ready: false,
    code: "supervisor_died",
    message: `the supervisor of sandbox ${name} exited without reporting${text ? `: ${text.trim()}` : ""}`,
  };
}

/** Resolves when the sandbox is no longer live (stopped, crashed, or removed). */
export async function waitUntilStopped(name: string, timeoutMs = Infinity): Promise<SandboxRecord | undefined> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const record = findSandbox(name);
    if (!record || !isLive(record)) return record;
    if (Date.now() >= deadline) {
      throw new MsbError("timeout", `sandbox ${name} is still ${record.status} after ${Math.round(timeoutMs / 1000)} s`);
    }
    await Bun.sleep(100);
  }
}

/**
 * Stops a sandbox cleanly: the supervisor asks the guest to sync and power off. If it has not
 * stopped after `timeoutMs`, it is killed. Stopping a stopped sandbox does nothing.
 */
export async function stopSandbox(name: string, timeoutMs = 10_000): Promise<SandboxRecord | undefined> {
  const record = getSandboxRecord(name);
  if (!isLive(record)) return record;
  signalSupervisor(name, "SIGTERM");
  try {
    return await waitUntilStopped(name, timeoutMs);
  } catch {
    return forceStop(name, `did not stop within ${Math.round(timeoutMs / 1000)} s and was killed`);
  }
}

/** Kills a sandbox's VM at once (no sync); the supervisor records it as stopped. */
export async function killSandbox(name: string): Promise<SandboxRecord | undefined> {
  const record = getSandboxRecord(name);
  if (!isLive(record)) return record;
  signalSupervisor(name, KILL_SIGNAL);
  try {
    return await waitUntilStopped(name, 5_000);
  } catch {
    return forceStop(name, "killed (msb kill)");
  }
}

function signalSupervisor(name: string, signal: NodeJS.Signals): void {
  const pid = liveSupervisorPid(name);
  if (pid === undefined) return;
  try {
    process.kill(pid, signal);
  } catch {
    // It exited meanwhile; waiting sees that.
  }
}

/** SIGKILLs whatever is left of a sandbox's processes and records why. */
async function forceStop(name: string, reason: string): Promise<SandboxRecord | undefined> {
  for (const pid of [liveVmPid(name), liveSupervisorPid(name)]) {
    if (pid === undefined) continue;
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // Already gone.
    }
  }
  removeSockets(name);
  const record = findSandbox(name);
  if (record?.ephemeral) {
    removeSandboxFiles(name);
    return undefined;
  }
  markEnded(name, "stopped", reason);
  return findSandbox(name);
}

/**
 * Removes a sandbox and everything it owned (writable layer, logs, sockets, its row). A live one
 * is refused unless `force`, which kills it first.
 */
export async function removeSandbox(name: string, force = false): Promise<void> {
  const record = getSandboxRecord(name);
  if (isLive(record)) {
    if (!force) {
      throw new MsbError("running", `sandbox ${name} is ${record.status}; stop it first (msb stop ${name}) or remove it with -f`);
    }
    await forceStop(name, "removed while running");
  }
  // A VM whose supervisor was killed may outlive it; it would hold the layer files.
  const vm = liveVmPid(name);
  if (vm !== undefined) {
    try {
      process.kill(vm, "SIGKILL");
    } catch {
      // Gone.
    }
  }
  removeSandboxFiles(name);
}

function removeSandboxFiles(name: string): void {
  rmSync(sandboxDir(name), { recursive: true, force: true });
  deleteSandboxRecord(name);
}

/** Removes the sockets a sandbox's supervisor listens on (it may have died without doing so). */
export function removeSockets(name: string): void {
  for (const socket of ["agent.sock", "vm-agent.sock", "net.sock", "control.sock"]) {
    const path = join(sandboxDir(name), socket);
    if (!existsSync(path)) continue;
    try {
      unlinkSync(path);
    } catch {
      // Gone meanwhile.
    }
  }
}

/** One request over a running sandbox's control socket (see Supervisor.listenControl); undefined if it does not answer. */
export async function askSupervisor(name: string, request: object): Promise<Record<string, unknown> | undefined> {
  const path = join(sandboxDir(name), "control.sock");
  if (!existsSync(path)) return undefined;
  let text = "";
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(undefined), 2000);
    Bun.connect({
      unix: path,
      socket: {
        open: (socket) => void socket.write(`${JSON.stringify(request)}\n`),
        data: (_socket, data) => void (text += data.toString()),
        close: () => {
          clearTimeout(timer);
          try {
            resolve(JSON.parse(text) as Record<string, unknown>);
          } catch {
            resolve(undefined);
          }
        },
        error: () => {
          clearTimeout(timer);
          resolve(undefined);
        },
      },
    }).catch(() => resolve(undefined));
  });
}
