// The SDK's sandbox: creates a sandbox by starting its supervisor, runs commands in it, stops it.
// The CLI is a thin layer over this class.

import { existsSync, openSync, closeSync, rmSync } from "node:fs";
import { join } from "node:path";
import { AgentClient, type ExecProcess, type ExitStatus } from "./agent/client";
import { parseSandboxOptions, type SandboxConfig, type SandboxOptions } from "./config";
import { MsbError } from "./errors";
import { isCompiled, sandboxDir } from "./paths";
import { retainLog, writeSandboxRecord, type SandboxImage } from "./state";
import { ensureImage, type PullEvent } from "./image";
import { MAX_IMAGE_LAYERS, type BootTimings, type ReadyMessage } from "./supervisor";

export interface ExecOptions {
  env?: Record<string, string>;
  cwd?: string;
  /** Input for the command; without it the command reads /dev/null. */
  stdin?: string | Uint8Array;
}

export interface SpawnOptions {
  env?: Record<string, string>;
  cwd?: string;
  /** Stream input with write()/end(); otherwise the command reads /dev/null. */
  stdin?: boolean;
}

export interface ExecResult extends ExitStatus {
  /** Exit code as a shell reports it: the code, or 128 + signal number. */
  exitCode: number;
  stdout: string;
  stderr: string;
  stdoutBytes: Uint8Array;
  stderrBytes: Uint8Array;
}

export interface CreateHooks {
  /** Progress of pulling the image (per layer), e.g. `progressBars()` from the image module. */
  onPullProgress?: (event: PullEvent) => void;
}

/** Makes sure the image is in the store (pulling per the pull policy) and describes its root. */
async function resolveImage(config: SandboxConfig, hooks: CreateHooks): Promise<SandboxImage> {
  const reference = config.image!;
  const root = await ensureImage(reference, { policy: config.pull, insecure: config.insecure, onProgress: hooks.onPullProgress });
  if (root.layers.length > MAX_IMAGE_LAYERS) {
    throw new MsbError(
      "too_many_layers",
      `image ${reference} has ${root.layers.length} layers; this version attaches at most ${MAX_IMAGE_LAYERS} (one disk each)`,
    );
  }
  return { reference, id: root.id, layers: root.layers, config: root.config };
}

/** The command line that starts a supervisor: this binary, or bun running this checkout. */
function supervisorCommand(name: string): string[] {
  if (isCompiled()) return [process.execPath, "__supervise", name];
  return [process.execPath, join(import.meta.dir, "main.ts"), "__supervise", name];
}

function randomName(): string {
  return `msb-${crypto.randomUUID().slice(0, 8)}`;
}

/**
 * A running sandbox.
 *
 * @example
 * await using sandbox = await Sandbox.create();
 * const { stdout, exitCode } = await sandbox.exec("echo", ["hello"]);
 */
export class Sandbox {
  private stopped = false;

  private constructor(
    readonly name: string,
    readonly config: SandboxConfig,
    /** The image the root is made of; undefined for the built-in root. */
    readonly image: SandboxImage | undefined,
    private readonly client: AgentClient,
    /** Which backend runs it, and why (one line). */
    readonly notice: string,
    readonly timings: BootTimings,
  ) {}

  static async create(options: SandboxOptions = {}, hooks: CreateHooks = {}): Promise<Sandbox> {
    const config = parseSandboxOptions(options);
    const image = config.image ? await resolveImage(config, hooks) : undefined;
    const ephemeral = config.name === undefined;
    const name = config.name ?? randomName();
    const dir = sandboxDir(name);
    if (existsSync(join(dir, "sandbox.json"))) {
      throw new MsbError("already_exists", `a sandbox named ${name} already exists (${dir}); pick another name or remove it`);
    }
    writeSandboxRecord({ name, config, image, ephemeral, createdAt: new Date().toISOString() });

    const logFd = openSync(join(dir, "supervisor.log"), "a", 0o600);
    let supervisor;
    try {
      supervisor = Bun.spawn(supervisorCommand(name), {
        // An attached sandbox's supervisor watches this pipe: when we exit, it closes, and the
        // sandbox stops. A detached one gets nothing to watch.
        stdin: config.detached ? "ignore" : "pipe",
        stdout: "pipe",
        stderr: logFd,
        detached: true,
        env: process.env,
      });
    } catch (cause) {
      rmSync(dir, { recursive: true, force: true });
      throw new MsbError("spawn_failed", `could not start the supervisor of sandbox ${name}: ${(cause as Error).message}`, { cause });
    } finally {
      closeSync(logFd);
    }

    const ready = await readReadyLine(supervisor.stdout, name);
    supervisor.unref();
    if (!ready.ready) {
      await supervisor.exited;
      if (ready.code === "supervisor_died") {
        // It could not clean up after itself: keep its log where errors point, drop the rest.
        const log = retainLog(join(dir, "supervisor.log"), `${name}-${Date.now()}.supervisor.log`);
        if (ephemeral) rmSync(dir, { recursive: true, force: true });
        throw new MsbError(ready.code, `${ready.message}${log ? `; its log: ${log}` : ""}`);
      }
      throw new MsbError(ready.code, ready.message);
    }
    const client = await AgentClient.connect(join(dir, "agent.sock"), `sandbox ${name}`);
    return new Sandbox(name, config, image, client, ready.notice, ready.timings);
  }

  /** Starts a command and returns it while it runs (streaming output, stdin, signals). */
  spawn(command: string, args: string[] = [], options: SpawnOptions = {}): ExecProcess {
    return this.client.spawn({
      argv: [command, ...args],
      env: options.env,
      cwd: options.cwd ?? this.config.workdir ?? (this.image?.config.workingDir || undefined),
      stdin: options.stdin ?? false,
    });
  }

  /** Runs a command to completion and collects its output. */
  async exec(command: string, args: string[] = [], options: ExecOptions = {}): Promise<ExecResult> {
    const process = this.spawn(command, args, { env: options.env, cwd: options.cwd, stdin: options.stdin !== undefined });
    const input = options.stdin === undefined ? undefined : (async () => {
      await process.write(options.stdin!);
      await process.end();
    })();
    const [stdoutBytes, stderrBytes] = await Promise.all([collect(process.stdout), collect(process.stderr)]);
    const status = await process.wait();
    await input;
    const decoder = new TextDecoder();
    return {
      ...status,
      exitCode: status.code ?? 128 + (status.signal ?? 0),
      stdout: decoder.decode(stdoutBytes),
      stderr: decoder.decode(stderrBytes),
      stdoutBytes,
      stderrBytes,
    };
  }

  /** Runs a shell script with the sandbox's /bin/sh. */
  shell(script: string, options: ExecOptions = {}): Promise<ExecResult> {
    return this.exec("/bin/sh", ["-c", script], options);
  }

  /** Stops the sandbox: the guest syncs and powers off. Resolves when it has stopped. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    await this.client.shutdown();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }
}

async function collect(stream: AsyncIterable<Uint8Array>): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of stream) {
    chunks.push(chunk);
    size += chunk.length;
  }
  const out = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.length;
  }
  return out;
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
