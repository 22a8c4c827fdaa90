// `msb api`: the local API other languages speak (docs/api.md). The SDK in a child process, driven
// by one JSON object per line on stdin, answering one per line on stdout: requests with an id get
// a result or an error; running processes send events. No daemon, no network service: the
// client's SDK starts `msb api`, and sandboxes it creates attach to that process.

import { z } from "zod";
import type { ExecProcess } from "./agent/client";
import { parseSandboxOptions } from "./config";
import { MsbError } from "./errors";
import { Sandbox } from "./sandbox";
import { VERSION } from "./version";
import { serveJsonLines } from "./jsonlines";

export const API_PROTOCOL = 1;
/** Longest request line accepted; longer input is an error, never an unbounded buffer. */
export const MAX_REQUEST_BYTES = 64 * 1024 * 1024;

const b64 = z.string().regex(/^[A-Za-z0-9+/]*={0,2}$/, "must be base64");
const name = z.string().min(1);
const command = {
  name,
  argv: z.array(z.string()).min(1),
  env: z.record(z.string(), z.string()).optional(),
  cwd: z.string().optional(),
  user: z.string().optional(),
  timeoutMs: z.number().positive().optional(),
};

const methods = {
  hello: z.object({ protocol: z.number().int(), client: z.string().optional() }).strict(),
  create: z.object({ options: z.record(z.string(), z.unknown()).default({}) }).strict(),
  get: z.object({ name }).strict(),
  list: z.object({}).strict(),
  stop: z.object({ name, timeoutMs: z.number().positive().optional() }).strict(),
  kill: z.object({ name }).strict(),
  remove: z.object({ name, force: z.boolean().optional() }).strict(),
  exec: z.object({ ...command, stdin: b64.optional() }).strict(),
  spawn: z.object({ ...command, stdin: z.boolean().optional() }).strict(),
  write: z.object({ process: z.number().int(), data: b64 }).strict(),
  end: z.object({ process: z.number().int() }).strict(),
  signal: z.object({ process: z.number().int(), signal: z.number().int().min(1).max(64) }).strict(),
  read_file: z.object({ name, path: z.string() }).strict(),
  write_file: z.object({ name, path: z.string(), data: b64, mode: z.number().int().min(0).max(0o7777).optional() }).strict(),
  stat: z.object({ name, path: z.string() }).strict(),
  exists: z.object({ name, path: z.string() }).strict(),
  list_dir: z.object({ name, path: z.string() }).strict(),
  mkdir: z.object({ name, path: z.string(), parents: z.boolean().optional() }).strict(),
  remove_path: z.object({ name, path: z.string(), recursive: z.boolean().optional() }).strict(),
  rename: z.object({ name, from: z.string(), to: z.string() }).strict(),
  chmod: z.object({ name, path: z.string(), mode: z.number().int().min(0).max(0o7777) }).strict(),
} as const;

type Method = keyof typeof methods;
type Params<M extends Method> = z.infer<(typeof methods)[M]>;

export interface ApiError {
  code: string;
  message: string;
}

const toB64 = (bytes: Uint8Array) => Buffer.from(bytes).toString("base64");
const fromB64 = (text: string) => new Uint8Array(Buffer.from(text, "base64"));

export class ApiServer {
  private greeted = false;
  private readonly sandboxes = new Map<string, Sandbox>();
  private readonly processes = new Map<number, ExecProcess>();
  private nextProcess = 1;

  /** `emit` writes one message line; it resolves when the line is written (backpressure). */
  constructor(private readonly emit: (message: object) => Promise<void>) {}

  async handle(line: string): Promise<void> {
    let request: { id?: unknown; method?: unknown; params?: unknown };
    try {
      request = JSON.parse(line);
    } catch {
      await this.emit({ id: null, error: { code: "parse", message: "each line must be one JSON object" } });
      return;
    }
    const id = request?.id ?? null;
    try {
      const result = await this.dispatch(request);
      await this.emit({ id, result });
    } catch (error) {
      const err = error as MsbError;
      await this.emit({ id, error: { code: err.code ?? "internal", message: err.message } satisfies ApiError });
    }
  }

  private async dispatch(request: { method?: unknown; params?: unknown }): Promise<unknown> {
    const method = request.method;
    if (typeof method !== "string" || !(method in methods)) {
      throw new MsbError("unknown_method", `unknown method ${JSON.stringify(method)}; docs/api.md lists them`);
    }
    const parsed = methods[method as Method].safeParse(request.params ?? {});
    if (!parsed.success) {
      const problems = parsed.error.issues.map((issue) => `${issue.path.join(".") || "(params)"}: ${issue.message}`);
      throw new MsbError("invalid_params", `${method}: ${problems.join("; ")}`);
    }
    if (method !== "hello" && !this.greeted) throw new MsbError("protocol", "send hello first (with the protocol version you speak)");
    return this.run(method as Method, parsed.data as never);
  }

  private async sandbox(sandboxName: string): Promise<Sandbox> {
    const held = this.sandboxes.get(sandboxName);
    if (held) return held;
    const found = await Sandbox.get(sandboxName);
    this.sandboxes.set(sandboxName, found);
    return found;
  }

  private process(id: number): ExecProcess {
    const proc = this.processes.get(id);
    if (!proc) throw new MsbError("not_found", `no running process ${id} (it may have exited)`);
    return proc;
  }

  private async run<M extends Method>(method: M, params: Params<M>): Promise<unknown> {
    const p = params as Record<string, never> & Params<M>;
    switch (method) {
      case "hello": {
        const hello = p as Params<"hello">;
        if (hello.protocol !== API_PROTOCOL) {
          throw new MsbError("version", `this msb speaks API protocol ${API_PROTOCOL}, the client ${hello.protocol}; upgrade the older side`);
        }
        this.greeted = true;
        return { protocol: API_PROTOCOL, msb: VERSION };
      }
      case "create": {
        const options = parseSandboxOptions((p as Params<"create">).options as never);
        const sandbox = await Sandbox.create(options);
        this.sandboxes.set(sandbox.name, sandbox);
        return { name: sandbox.name };
      }
      case "get":
        return { name: (await this.sandbox((p as Params<"get">).name)).name };
      case "list":
        return {
          sandboxes: (await Sandbox.list()).map(({ config: _, ...info }) => info),
        };
      case "stop": {
        const a = p as Params<"stop">;
        const sandbox = await this.sandbox(a.name);
        this.sandboxes.delete(a.name);
        await sandbox.stop({ timeoutMs: a.timeoutMs });
        return {};
      }
      case "kill": {
        const a = p as Params<"kill">;
        const sandbox = await this.sandbox(a.name);
        this.sandboxes.delete(a.name);
        await sandbox.kill();
        return {};
      }
      case "remove": {
        const a = p as Params<"remove">;
        this.sandboxes.get(a.name)?.close();
        this.sandboxes.delete(a.name);
        await Sandbox.remove(a.name, { force: a.force ?? false });
        return {};
      }
      case "exec": {
        const a = p as Params<"exec">;
        const sandbox = await this.sandbox(a.name);
        const result = await sandbox.exec(a.argv[0]!, a.argv.slice(1), {
          env: a.env,
          cwd: a.cwd,
          user: a.user,
          timeoutMs: a.timeoutMs,
          stdin: a.stdin === undefined ? undefined : fromB64(a.stdin),
        });
        return {
          exitCode: result.exitCode,
          code: result.code,
          signal: result.signal,
          timedOut: result.timedOut ?? false,
          stdout: toB64(result.stdoutBytes),
          stderr: toB64(result.stderrBytes),
        };
      }
      case "spawn": {
        const a = p as Params<"spawn">;
        const sandbox = await this.sandbox(a.name);
        const proc = sandbox.spawn(a.argv[0]!, a.argv.slice(1), {
          env: a.env,
          cwd: a.cwd,
          user: a.user,
          timeoutMs: a.timeoutMs,
          stdin: a.stdin ?? false,
        });
        const id = this.nextProcess++;
        this.processes.set(id, proc);
        void this.pump(id, proc);
        return { process: id };
      }
      case "write": {
        const a = p as Params<"write">;
        await this.process(a.process).write(fromB64(a.data));
        return {};
      }
      case "end":
        await this.process((p as Params<"end">).process).end();
        return {};
      case "signal": {
        const a = p as Params<"signal">;
        this.process(a.process).kill(a.signal);
        return {};
      }
      case "read_file": {
        const a = p as Params<"read_file">;
        return { data: toB64(await (await this.sandbox(a.name)).fs.readFile(a.path)) };
      }
      case "write_file": {
        const a = p as Params<"write_file">;
        const bytes = await (await this.sandbox(a.name)).fs.write(a.path, fromB64(a.data), a.mode === undefined ? {} : { mode: a.mode });
        return { bytes };
      }
      case "stat": {
        const a = p as Params<"stat">;
        return await (await this.sandbox(a.name)).fs.stat(a.path);
      }
      case "exists": {
        const a = p as Params<"exists">;
        return { exists: await (await this.sandbox(a.name)).fs.exists(a.path) };
      }
      case "list_dir": {
        const a = p as Params<"list_dir">;
        return { entries: await (await this.sandbox(a.name)).fs.list(a.path) };
      }
      case "mkdir": {
        const a = p as Params<"mkdir">;
        await (await this.sandbox(a.name)).fs.mkdir(a.path, { parents: a.parents });
        return {};
      }
      case "remove_path": {
        const a = p as Params<"remove_path">;
        await (await this.sandbox(a.name)).fs.remove(a.path, { recursive: a.recursive });
        return {};
      }
      case "rename": {
        const a = p as Params<"rename">;
        await (await this.sandbox(a.name)).fs.rename(a.from, a.to);
        return {};
      }
      case "chmod": {
        const a = p as Params<"chmod">;
        await (await this.sandbox(a.name)).fs.chmod(a.path, a.mode);
        return {};
      }
    }
    throw new MsbError("unknown_method", `unknown method ${method}`);
  }

  /**
   * Streams a spawned process's output as events, then its exit. Each event is written before
   * the next chunk is taken, so a client that stops reading pauses the command (flow control
   * reaches the guest) instead of growing our memory.
   */
  private async pump(id: number, proc: ExecProcess): Promise<void> {
    const forward = async (fd: "stdout" | "stderr", source: AsyncIterable<Uint8Array>) => {
      for await (const chunk of source) await this.emit({ event: "output", process: id, fd, data: toB64(chunk) });
    };
    try {
      await Promise.all([forward("stdout", proc.stdout), forward("stderr", proc.stderr)]);
      const status = await proc.wait();
      await this.emit({
        event: "exit",
        process: id,
        exitCode: status.code ?? 128 + (status.signal ?? 0),
        code: status.code,
        signal: status.signal,
        timedOut: status.timedOut ?? false,
      });
    } catch (error) {
      const err = error as MsbError;
      await this.emit({ event: "error", process: id, error: { code: err.code ?? "internal", message: err.message } });
    } finally {
      this.processes.delete(id);
    }
  }

  close(): void {
    for (const sandbox of this.sandboxes.values()) sandbox.close();
    this.sandboxes.clear();
  }
}

/** Serves the API on stdin/stdout until stdin ends. */
export async function serveApi(): Promise<void> {
  const emit = (message: object) =>
    new Promise<void>((resolve) => {
      if (process.stdout.write(`${JSON.stringify(message)}\n`)) resolve();
      else process.stdout.once("drain", () => resolve());
    });
  const server = new ApiServer(emit);
  // Requests run concurrently; each answers with its id when done.
  await serveJsonLines(Bun.stdin.stream(), {
    maxLineBytes: MAX_REQUEST_BYTES,
    onTooLong: () => emit({ id: null, error: { code: "too_large", message: `a request line is longer than ${MAX_REQUEST_BYTES} bytes` } }),
    onLine: (line) => server.handle(line),
  });
  server.close();
}
