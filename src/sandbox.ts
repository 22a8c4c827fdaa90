// The SDK's sandbox: creates a sandbox (or finds one by name), runs commands in it, stops it.
// The CLI is a thin layer over this class.

import { existsSync, mkdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { AgentClient, type ExecProcess, type ExitStatus } from "./agent/client";
import { parseSandboxOptions, type SandboxConfig, type SandboxOptions } from "./config";
import { SecretSet } from "./secrets/substitute";
import { MsbError } from "./errors";
import { SandboxFs } from "./fs";
import { sandboxDir } from "./paths";
import { findSandbox, getSandboxRecord, insertSandbox, listSandboxRecords, type SandboxImage, type SandboxRecord } from "./state";
import { DEFAULT_IMAGE, ensureDefaultImage, ensureImage, type PullEvent } from "./image";
import { MAX_IMAGE_LAYERS, type BootTimings } from "./supervisor";
import { killSandbox, removeSandbox, startSandbox, stopSandbox, waitUntilStopped } from "./lifecycle";

interface CommandOptions {
  env?: Record<string, string>;
  cwd?: string;
  /** Run as a user: a name from the sandbox's /etc/passwd, `uid`, `uid:gid` or `name:group`. */
  user?: string;
  /** Kill the command (its whole process group) after this many ms; the result says `timedOut`. */
  timeoutMs?: number;
}

export interface ExecOptions extends CommandOptions {
  /** Input for the command; without it the command reads /dev/null. */
  stdin?: string | Uint8Array;
}

export interface SpawnOptions extends CommandOptions {
  /** Stream input with write()/end(); otherwise the command reads /dev/null. */
  stdin?: boolean;
  /** Run on a pseudo-terminal of this size: output all on stdout, resize() applies. */
  tty?: { cols: number; rows: number };
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
  /** Remove a sandbox of the same name first (stopping it if it runs). */
  replace?: boolean;
  /** Remove the sandbox entirely when it stops (default: when it has no name). */
  ephemeral?: boolean;
}

/** What `Sandbox.list()` reports about each recorded sandbox. */
export type SandboxInfo = Pick<
  SandboxRecord,
  "name" | "status" | "ephemeral" | "createdAt" | "startedAt" | "stoppedAt" | "exitReason" | "supervisorPid" | "vmPid"
> & { image?: string; imageId?: string; labels: Record<string, string>; config: SandboxConfig };

export function sandboxInfo(record: SandboxRecord): SandboxInfo {
  return {
    name: record.name,
    status: record.status,
    ephemeral: record.ephemeral,
    image: record.image?.reference,
    imageId: record.image?.id,
    labels: record.config.labels ?? {},
    createdAt: record.createdAt,
    startedAt: record.startedAt,
    stoppedAt: record.stoppedAt,
    exitReason: record.exitReason,
    supervisorPid: record.supervisorPid,
    vmPid: record.vmPid,
    config: record.config,
  };
}

/** Makes sure the image is in the store (pulling per the pull policy) and describes its root. */
async function resolveImage(config: SandboxConfig, hooks: CreateHooks): Promise<SandboxImage> {
  const reference = config.image!;
  // More layers than the VM has disks for: ensureImage merges them into one (cached) EROFS.
  const root = await ensureImage(reference, {
    policy: config.pull,
    insecure: config.insecure,
    onProgress: hooks.onPullProgress,
    maxLayers: MAX_IMAGE_LAYERS,
  });
  return { reference, id: root.id, layers: root.layers, config: root.config };
}

/** The built-in busybox root, as the image msb.local/default:latest (made locally on first use). */
async function defaultImage(): Promise<SandboxImage> {
  const root = await ensureDefaultImage();
  return { reference: DEFAULT_IMAGE, id: root.id, layers: root.layers, config: root.config };
}

function randomName(): string {
  return `msb-${crypto.randomUUID().slice(0, 8)}`;
}

/** Secrets given with values are checked before anything is recorded; errors name the secret, never the value. */
function checkSecrets(config: SandboxConfig): void {
  new SecretSet(config.secrets.filter((s) => s.value !== undefined).map((s) => ({ ...s, value: s.value! })));
}

/**
 * Records a sandbox without starting it (`msb create`): the image is pulled and resolved now, so a
 * later start needs no registry.
 */
export async function defineSandbox(options: SandboxOptions = {}, hooks: CreateHooks = {}): Promise<SandboxRecord> {
  const config = parseSandboxOptions(options);
  checkSecrets(config);
  const image = config.image ? await resolveImage(config, hooks) : await defaultImage();
  const ephemeral = hooks.ephemeral ?? config.name === undefined;
  const name = config.name ?? randomName();
  if (hooks.replace && findSandbox(name)) await removeSandbox(name, true);
  const dir = sandboxDir(name);
  const record = insertSandbox({ name, config, image, ephemeral });
  // A directory without a row is what a crash between the two leaves; it is ours now.
  if (existsSync(dir)) rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  return record;
}

/**
 * A running sandbox.
 *
 * @example
 * await using sandbox = await Sandbox.create();
 * const { stdout, exitCode } = await sandbox.exec("echo", ["hello"]);
 */
export class Sandbox {
  private closed = false;

  private constructor(
    readonly name: string,
    readonly config: SandboxConfig,
    /** The image the root is made of; undefined for the built-in root. */
    readonly image: SandboxImage | undefined,
    private readonly client: AgentClient,
    /** Which backend runs it, and why (one line); empty for a sandbox found with get(). */
    readonly notice: string,
    /** Boot timings; undefined for a sandbox found with get(). */
    readonly timings: BootTimings | undefined,
    /** Whether disposing of this object stops the sandbox (it was created attached here). */
    private readonly owned: boolean,
  ) {
    this.fs = new SandboxFs(client);
  }

  /** Files in the sandbox: streaming read/write, stat, list, mkdir, remove, copyIn/copyOut. */
  readonly fs: SandboxFs;

  /**
   * Creates and starts a sandbox. It stops when this process exits unless `detached`; unnamed
   * sandboxes are removed entirely when they stop.
   */
  static async create(options: SandboxOptions = {}, hooks: CreateHooks = {}): Promise<Sandbox> {
    const record = await defineSandbox(options, hooks);
    // The record keeps no secret values; this first start gets them from the options.
    const secrets = Object.fromEntries(record.config.secrets.flatMap((s) => (s.value === undefined ? [] : [[s.name, s.value]])));
    try {
      return await Sandbox.start(record.name, { attached: !record.config.detached, secrets });
    } catch (error) {
      // A start refused before booting (a secret without a value) leaves an unnamed sandbox nobody can reach.
      if (record.ephemeral && findSandbox(record.name)?.status === "created") await removeSandbox(record.name, true);
      throw error;
    }
  }

  /**
   * Starts a recorded (created or stopped) sandbox. `attached` (default: as it was created):
   * it stops when this process exits.
   */
  static async start(name: string, options: { attached?: boolean; secrets?: Record<string, string> } = {}): Promise<Sandbox> {
    const record = getSandboxRecord(name);
    const attached = options.attached ?? !record.config.detached;
    const { ready } = await startSandbox(name, attached, options.secrets);
    const client = await AgentClient.connect(join(sandboxDir(name), "agent.sock"), `sandbox ${name}`);
    return new Sandbox(name, record.config, record.image, client, ready.notice, ready.timings, attached);
  }

  /** Connects to a running sandbox by name, from any process. Disposing of it only disconnects. */
  static async get(name: string): Promise<Sandbox> {
    let record = getSandboxRecord(name);
    if (record.status === "starting") {
      const deadline = Date.now() + record.config.bootTimeoutSeconds * 1000;
      while (record.status === "starting" && Date.now() < deadline) {
        await Bun.sleep(100);
        record = getSandboxRecord(name);
      }
    }
    if (record.status !== "running") {
      const why = record.exitReason ? ` (${record.exitReason})` : "";
      throw new MsbError("not_running", `sandbox ${name} is ${record.status}${why}; start it with \`msb start ${name}\``);
    }
    const client = await AgentClient.connect(join(sandboxDir(name), "agent.sock"), `sandbox ${name}`);
    return new Sandbox(name, record.config, record.image, client, "", undefined, false);
  }

  /** Every recorded sandbox, with its status checked against its processes. */
  static async list(): Promise<SandboxInfo[]> {
    return listSandboxRecords().map(sandboxInfo);
  }

  /** Removes a sandbox and everything it owned; a running one only with `force`. */
  static async remove(name: string, options: { force?: boolean } = {}): Promise<void> {
    await removeSandbox(name, options.force ?? false);
  }

  /** The sandbox's current record (status, times, exit reason). */
  info(): SandboxInfo {
    return sandboxInfo(getSandboxRecord(this.name));
  }

  /** Starts a command and returns it while it runs (streaming output, stdin, signals). */
  spawn(command: string, args: string[] = [], options: SpawnOptions = {}): ExecProcess {
    return this.client.spawn({
      argv: [command, ...args],
      env: options.env,
      cwd: options.cwd ?? this.config.workdir ?? (this.image?.config.workingDir || undefined),
      stdin: options.stdin ?? false,
      // Who runs it: this exec's choice, else the sandbox's (-u), else the image's User.
      user: options.user ?? this.config.user ?? (this.image?.config.user || undefined),
      timeoutMs: options.timeoutMs,
      tty: options.tty,
    });
  }

  /** Runs a command to completion and collects its output. */
  async exec(command: string, args: string[] = [], options: ExecOptions = {}): Promise<ExecResult> {
    const { stdin, ...rest } = options;
    const process = this.spawn(command, args, { ...rest, stdin: stdin !== undefined });
    const input = options.stdin === undefined ? undefined : (async () => {
      await process.write(options.stdin!);
      await process.end();
    })();
    // If the command fails first, its error is the one reported: not an unhandled input error.
    input?.catch(() => {});
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

  /**
   * Stops the sandbox: the guest syncs and powers off; after `timeoutMs` it is killed. Resolves
   * when it has stopped. An unnamed sandbox is then removed.
   */
  async stop(options: { timeoutMs?: number } = {}): Promise<void> {
    this.close();
    await stopSandbox(this.name, options.timeoutMs).catch((error: MsbError) => {
      // An unnamed sandbox removes itself when it stops; that is success.
      if (error.code !== "not_found") throw error;
    });
  }

  /** Kills the VM at once, without letting the guest sync. */
  async kill(): Promise<void> {
    this.close();
    await killSandbox(this.name).catch((error: MsbError) => {
      if (error.code !== "not_found") throw error;
    });
  }

  /** Resolves when the sandbox has stopped, whoever stopped it. */
  async waitUntilStopped(): Promise<void> {
    await waitUntilStopped(this.name);
  }

  /** Disconnects this object from the sandbox, leaving it running. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.client.close();
  }

  /** Stops a sandbox this object created attached; otherwise only disconnects. */
  async [Symbol.asyncDispose](): Promise<void> {
    if (this.owned) await this.stop();
    else this.close();
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
