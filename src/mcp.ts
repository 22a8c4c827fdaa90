// `msb mcp`: a Model Context Protocol server over stdio (JSON-RPC 2.0, one message per line) that
// gives an agent host sandbox tools — create, exec, read/write files, list, stop, remove — backed by
// the SDK. Sandboxes it creates are attached to it: they stop (and unnamed ones are removed) when
// the server exits, unless created with `keep: true`.

import { z } from "zod";
import { MsbError } from "./errors";
import type { SandboxOptions } from "./config";
import { Sandbox } from "./sandbox";
import { VERSION } from "./version";
import { serveJsonLines } from "./jsonlines";

export const MCP_PROTOCOL_VERSION = "2025-06-18";
/** Output a tool returns inline; more is cut, saying how much. */
const MAX_TOOL_OUTPUT = 256 * 1024;
/** Largest file read_file returns. */
const MAX_READ_BYTES = 1024 * 1024;
/** Longest accepted request line: a hostile or broken client cannot make us buffer without end. */
export const MAX_MESSAGE_BYTES = 8 * 1024 * 1024;

const name = z.string().min(1).describe("Sandbox name");

const tools = {
  sandbox_create: {
    description:
      "Create and start a sandbox (a microVM). Returns its name. It stops when this MCP server exits unless keep is true; unnamed ones are then removed. Secrets the server was started with appear in its environment as $MSB_NAME placeholders, replaced with the real value only in HTTPS requests to the hosts each secret allows.",
    input: z
      .object({
        image: z.string().min(1).optional().describe("OCI image, e.g. python:3.12-slim (default: a small busybox root)"),
        name: z.string().optional().describe("Name (default: a random one)"),
        cpus: z.number().int().min(1).max(64).optional(),
        memoryMiB: z.number().int().min(64).optional(),
        env: z.record(z.string(), z.string()).optional(),
        network: z.enum(["none", "public", "all"]).optional().describe("none: no network; public (default): the internet only"),
        keep: z.boolean().optional().describe("Keep running after this server exits"),
      })
      .strict(),
  },
  sandbox_exec: {
    description: "Run a command in a sandbox and return its exit code, stdout and stderr.",
    input: z
      .object({
        name,
        command: z
          .union([z.array(z.string()).min(1), z.string().min(1)])
          .describe("argv array, or a string run with /bin/sh -c"),
        cwd: z.string().optional(),
        env: z.record(z.string(), z.string()).optional(),
        stdin: z.string().optional().describe("Text given to the command on stdin"),
        user: z.string().optional().describe("User name or UID[:GID]"),
        timeoutSeconds: z.number().positive().optional().describe("Kill the command after this long"),
      })
      .strict(),
  },
  sandbox_read_file: {
    description: `Read a file from a sandbox (UTF-8 text; at most ${MAX_READ_BYTES} bytes).`,
    input: z.object({ name, path: z.string().startsWith("/") }).strict(),
  },
  sandbox_write_file: {
    description: "Write a text file in a sandbox, creating or replacing it.",
    input: z
      .object({ name, path: z.string().startsWith("/"), content: z.string(), mode: z.number().int().min(0).max(0o7777).optional() })
      .strict(),
  },
  sandbox_list: {
    description: "List sandboxes with their status.",
    input: z.object({}).strict(),
  },
  sandbox_stop: {
    description: "Stop a sandbox (the guest syncs and powers off). A named one can be started again; an unnamed one is removed.",
    input: z.object({ name }).strict(),
  },
  sandbox_remove: {
    description: "Remove a sandbox and everything it owned; force stops a running one first.",
    input: z.object({ name, force: z.boolean().optional() }).strict(),
  },
} as const;

type ToolName = keyof typeof tools;

interface JsonRpcRequest {
  jsonrpc: "2.0";
  id?: string | number | null;
  method: string;
  params?: Record<string, unknown>;
}

type ToolResult = { content: { type: "text"; text: string }[]; isError?: boolean; structuredContent?: unknown };

function text(value: string, isError = false, structured?: unknown): ToolResult {
  return { content: [{ type: "text", text: value }], ...(isError ? { isError: true } : {}), ...(structured ? { structuredContent: structured } : {}) };
}

function clip(value: string): string {
  if (value.length <= MAX_TOOL_OUTPUT) return value;
  return `${value.slice(0, MAX_TOOL_OUTPUT)}\n[msb: ${value.length - MAX_TOOL_OUTPUT} more characters cut]`;
}

export class McpServer {
  /** Sandboxes this server holds open, by name. */
  private readonly open = new Map<string, Sandbox>();

  /**
   * `preset`: options every sandbox this server creates gets, chosen by whoever started the
   * server and out of the agent's reach — secrets above all: the agent sees only their names, the
   * guest only placeholders.
   */
  constructor(private readonly preset: Pick<SandboxOptions, "secrets" | "tls"> = {}) {}

  listTools() {
    return Object.entries(tools).map(([toolName, tool]) => ({
      name: toolName,
      description: tool.description,
      inputSchema: (() => {
        const { $schema: _, ...schema } = z.toJSONSchema(tool.input) as Record<string, unknown>;
        return schema;
      })(),
    }));
  }

  /** Handles one message; returns the response, or undefined for notifications. */
  async handle(message: unknown): Promise<object | undefined> {
    const request = message as JsonRpcRequest;
    if (!request || typeof request !== "object" || request.jsonrpc !== "2.0" || typeof request.method !== "string") {
      return { jsonrpc: "2.0", id: (request as { id?: unknown })?.id ?? null, error: { code: -32600, message: "not a JSON-RPC 2.0 request" } };
    }
    const isNotification = request.id === undefined;
    const reply = (result: unknown) => (isNotification ? undefined : { jsonrpc: "2.0", id: request.id, result });
    const fail = (code: number, error: string) => (isNotification ? undefined : { jsonrpc: "2.0", id: request.id, error: { code, message: error } });
    switch (request.method) {
      case "initialize":
        return reply({
          protocolVersion: MCP_PROTOCOL_VERSION,
          capabilities: { tools: { listChanged: false } },
          serverInfo: { name: "msb", version: VERSION },
          instructions: "Each sandbox is a microVM with its own kernel. Create one, run commands with sandbox_exec, and remove it when done.",
        });
      case "notifications/initialized":
      case "notifications/cancelled":
        return undefined;
      case "ping":
        return reply({});
      case "tools/list":
        return reply({ tools: this.listTools() });
      case "tools/call": {
        const params = request.params ?? {};
        const toolName = params.name;
        if (typeof toolName !== "string" || !(toolName in tools)) {
          return fail(-32602, `unknown tool ${JSON.stringify(toolName)}; tools/list names them`);
        }
        return reply(await this.callTool(toolName as ToolName, params.arguments ?? {}));
      }
      default:
        return fail(-32601, `method ${request.method} is not supported`);
    }
  }

  /** Runs a tool; bad arguments and failures come back as tool errors (isError), never as crashes. */
  async callTool(toolName: ToolName, args: unknown): Promise<ToolResult> {
    const parsed = tools[toolName].input.safeParse(args);
    if (!parsed.success) {
      const problems = parsed.error.issues.map((issue) => `${issue.path.join(".") || "(arguments)"}: ${issue.message}`);
      return text(`invalid arguments for ${toolName}: ${problems.join("; ")}`, true);
    }
    try {
      return await this.run(toolName, parsed.data);
    } catch (error) {
      return text(`${toolName} failed: ${(error as Error).message}`, true);
    }
  }

  private async sandbox(sandboxName: string): Promise<Sandbox> {
    const held = this.open.get(sandboxName);
    if (held) return held;
    const found = await Sandbox.get(sandboxName);
    this.open.set(sandboxName, found);
    return found;
  }

  private async run(toolName: ToolName, args: unknown): Promise<ToolResult> {
    switch (toolName) {
      case "sandbox_create": {
        const a = args as z.infer<(typeof tools)["sandbox_create"]["input"]>;
        const sandbox = await Sandbox.create({
          image: a.image,
          name: a.name,
          cpus: a.cpus,
          memoryMiB: a.memoryMiB,
          env: a.env,
          network: a.network,
          detached: a.keep ?? false,
          ...this.preset,
        });
        this.open.set(sandbox.name, sandbox);
        return text(`created sandbox ${sandbox.name}`, false, { name: sandbox.name });
      }
      case "sandbox_exec": {
        const a = args as z.infer<(typeof tools)["sandbox_exec"]["input"]>;
        const sandbox = await this.sandbox(a.name);
        const argv = typeof a.command === "string" ? ["/bin/sh", "-c", a.command] : a.command;
        const result = await sandbox.exec(argv[0]!, argv.slice(1), {
          cwd: a.cwd,
          env: a.env,
          stdin: a.stdin,
          user: a.user,
          timeoutMs: a.timeoutSeconds === undefined ? undefined : a.timeoutSeconds * 1000,
        });
        const summary = result.timedOut ? `timed out after ${a.timeoutSeconds} s and was killed` : `exit code ${result.exitCode}`;
        const body = [`${summary}`, `--- stdout ---`, clip(result.stdout), `--- stderr ---`, clip(result.stderr)].join("\n");
        return text(body, result.exitCode !== 0, {
          exitCode: result.exitCode,
          timedOut: result.timedOut ?? false,
          stdout: clip(result.stdout),
          stderr: clip(result.stderr),
        });
      }
      case "sandbox_read_file": {
        const a = args as z.infer<(typeof tools)["sandbox_read_file"]["input"]>;
        const sandbox = await this.sandbox(a.name);
        const stat = await sandbox.fs.stat(a.path);
        if (stat.type !== "file") throw new MsbError("not_a_file", `${a.path} is a ${stat.type}, not a file`);
        if (stat.size > MAX_READ_BYTES) throw new MsbError("too_large", `${a.path} is ${stat.size} bytes; read_file returns at most ${MAX_READ_BYTES}`);
        return text(await sandbox.fs.readText(a.path));
      }
      case "sandbox_write_file": {
        const a = args as z.infer<(typeof tools)["sandbox_write_file"]["input"]>;
        const sandbox = await this.sandbox(a.name);
        const bytes = await sandbox.fs.write(a.path, a.content, a.mode === undefined ? {} : { mode: a.mode });
        return text(`wrote ${bytes} bytes to ${a.path}`);
      }
      case "sandbox_list": {
        const list = (await Sandbox.list()).map((s) => ({ name: s.name, status: s.status, image: s.image ?? null, exitReason: s.exitReason ?? null }));
        return text(JSON.stringify(list, null, 2), false, { sandboxes: list });
      }
      case "sandbox_stop": {
        const a = args as z.infer<(typeof tools)["sandbox_stop"]["input"]>;
        const held = this.open.get(a.name);
        this.open.delete(a.name);
        if (held) await held.stop();
        else await (await Sandbox.get(a.name)).stop();
        return text(`stopped sandbox ${a.name}`);
      }
      case "sandbox_remove": {
        const a = args as z.infer<(typeof tools)["sandbox_remove"]["input"]>;
        this.open.get(a.name)?.close();
        this.open.delete(a.name);
        await Sandbox.remove(a.name, { force: a.force ?? false });
        return text(`removed sandbox ${a.name}`);
      }
    }
  }

  /** Disconnects from everything; attached sandboxes then stop as their creator (us) goes away. */
  close(): void {
    for (const sandbox of this.open.values()) sandbox.close();
    this.open.clear();
  }
}

/** Serves MCP on stdin/stdout until stdin ends. Diagnostics go to stderr, never stdout. */
export async function serveStdio(preset: Pick<SandboxOptions, "secrets" | "tls"> = {}): Promise<void> {
  const server = new McpServer(preset);
  const write = (message: object): void => void process.stdout.write(`${JSON.stringify(message)}\n`);
  await serveJsonLines(Bun.stdin.stream(), {
    maxLineBytes: MAX_MESSAGE_BYTES,
    onTooLong: () => write({ jsonrpc: "2.0", id: null, error: { code: -32600, message: `message longer than ${MAX_MESSAGE_BYTES} bytes` } }),
    // Requests run concurrently (a long exec must not block a ping); each answers when done.
    onLine: async (line) => {
      let message: unknown;
      try {
        message = JSON.parse(line);
      } catch {
        write({ jsonrpc: "2.0", id: null, error: { code: -32700, message: "parse error: each line must be one JSON-RPC message" } });
        return;
      }
      try {
        const response = await server.handle(message);
        if (response) write(response);
      } catch (error) {
        process.stderr.write(`msb mcp: ${(error as Error).message}\n`);
      }
    },
  });
  server.close();
}
