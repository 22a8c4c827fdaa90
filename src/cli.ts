// The msb command line: a thin layer over the SDK (citty for parsing and help).

import { defineCommand, parseArgs, renderUsage, runCommand, type ArgsDef, type CommandDef } from "citty";
import { MsbError } from "./errors";
import { Sandbox } from "./sandbox";
import { VERSION } from "./version";

/** Splits `msb run [opts] [IMAGE] -- CMD ARGS` at the first `--`. */
export function splitCommand(rawArgs: string[]): { own: string[]; command: string[] } {
  const dash = rawArgs.indexOf("--");
  if (dash < 0) return { own: rawArgs, command: [] };
  return { own: rawArgs.slice(0, dash), command: rawArgs.slice(dash + 1) };
}

/** citty ignores unknown flags; a typo must not silently change what runs. */
export function checkFlags(own: string[], args: ArgsDef, commandName: string): void {
  const known = new Set<string>(["help", "h"]);
  for (const [key, def] of Object.entries(args)) {
    if (def.type === "positional") continue;
    known.add(key);
    known.add(key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`));
    const aliases = "alias" in def && def.alias ? (Array.isArray(def.alias) ? def.alias : [def.alias]) : [];
    for (const alias of aliases) known.add(alias);
    if (def.type === "boolean") known.add(`no-${key}`);
  }
  for (const arg of own) {
    if (!arg.startsWith("-") || arg === "-") continue;
    const name = arg.replace(/^--?/, "").split("=")[0]!;
    const names = arg.startsWith("--") ? [name] : [...name];
    for (const n of names) {
      if (!known.has(n)) {
        throw new MsbError("usage", `unknown option ${arg.startsWith("--") ? `--${n}` : `-${n}`} for \`msb ${commandName}\`; see \`msb ${commandName} --help\``);
      }
    }
  }
}

function parseEnv(values: unknown): Record<string, string> {
  const list = values === undefined ? [] : Array.isArray(values) ? values : [values];
  const env: Record<string, string> = {};
  for (const item of list) {
    const text = String(item);
    const eq = text.indexOf("=");
    if (eq <= 0) throw new MsbError("usage", `-e expects NAME=VALUE, got "${text}"`);
    env[text.slice(0, eq)] = text.slice(eq + 1);
  }
  return env;
}

function parsePositiveInt(value: unknown, flag: string): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new MsbError("usage", `${flag} expects a positive whole number, got "${String(value)}"`);
  return n;
}

const runArgs = {
  image: { type: "positional", required: false, description: "Image to run (default: the built-in busybox root)" },
  name: { type: "string", description: "Name the sandbox (default: a random name; removed when it stops)" },
  cpus: { type: "string", description: "Number of vCPUs (default 1)" },
  memory: { type: "string", alias: "m", description: "Memory in MiB (default 512)" },
  env: { type: "string", alias: "e", description: "Set an environment variable, NAME=VALUE (repeatable)" },
  workdir: { type: "string", alias: "w", description: "Working directory inside the sandbox" },
  backend: { type: "string", description: "VM backend: native or qemu (default: native with hardware KVM, else qemu)" },
  quiet: { type: "boolean", alias: "q", description: "Don't print the backend notice" },
} satisfies ArgsDef;

const run = defineCommand({
  meta: { name: "run", description: "Run a command in a new sandbox and stream its output; exits with its exit code" },
  args: runArgs,
  async run({ rawArgs }) {
    const { own, command } = splitCommand(rawArgs);
    checkFlags(own, runArgs, "run");
    // Parse only what precedes `--`: everything after it belongs to the guest command.
    const args = parseArgs(own, runArgs);
    const positionals = args._;
    if (positionals.length > 1) throw new MsbError("usage", `unexpected argument "${positionals[1]}"; put the command after --, e.g. msb run -- echo hi`);
    const backend = args.backend as string | undefined;
    if (backend !== undefined && backend !== "qemu" && backend !== "native") {
      throw new MsbError("usage", `--backend must be "native" or "qemu", not "${backend}"`);
    }
    const argv = command.length > 0 ? command : ["/bin/sh"];
    const sandbox = await Sandbox.create({
      image: args.image as string | undefined,
      name: args.name as string | undefined,
      cpus: parsePositiveInt(args.cpus, "--cpus"),
      memoryMiB: parsePositiveInt(args.memory, "--memory"),
      env: parseEnv(args.env),
      workdir: args.workdir as string | undefined,
      backend: backend as "qemu" | "native" | undefined,
    });
    if (!args.quiet) process.stderr.write(`msb: ${sandbox.notice}\n`);
    let status;
    try {
      status = await streamCommand(sandbox, argv);
    } finally {
      await sandbox.stop();
    }
    process.exitCode = status.code ?? 128 + (status.signal ?? 0);
  },
});

/** Runs argv with live output on our stdout/stderr, our stdin forwarded when it is not a terminal. */
async function streamCommand(sandbox: Sandbox, argv: string[]) {
  const forwardStdin = !process.stdin.isTTY;
  const proc = sandbox.spawn(argv[0]!, argv.slice(1), { stdin: forwardStdin });
  const pump = async (source: AsyncIterable<Uint8Array>, target: NodeJS.WriteStream) => {
    for await (const chunk of source) {
      // Wait for each chunk to be flushed so a slow reader of our output slows the command.
      await new Promise<void>((resolve, reject) => target.write(chunk, (error) => (error ? reject(error) : resolve())));
    }
  };
  const input = forwardStdin
    ? (async () => {
        for await (const chunk of Bun.stdin.stream()) await proc.write(chunk);
        await proc.end();
      })().catch(() => {})
    : undefined;
  await Promise.all([pump(proc.stdout, process.stdout), pump(proc.stderr, process.stderr)]);
  const status = await proc.wait();
  void input;
  return status;
}

export const main = defineCommand({
  meta: { name: "msb", version: VERSION, description: "Run untrusted code in local microVMs" },
  subCommands: { run },
});

/** Runs the CLI; errors become one clear line on stderr and a non-zero exit. */
export async function runCli(argv: string[]): Promise<void> {
  const { own } = splitCommand(argv);
  const subCommands = main.subCommands as Record<string, CommandDef>;
  const sub = own[0] !== undefined && !own[0].startsWith("-") ? own[0] : undefined;
  try {
    if (sub !== undefined && !(sub in subCommands)) {
      throw new MsbError("usage", `unknown command "${sub}"; commands: ${Object.keys(subCommands).join(", ")}. See msb --help`);
    }
    // Only flags before `--` are ours: `msb run -- ls --help` runs ls.
    if (own.length === 0 || own.includes("--help") || own.includes("-h")) {
      console.log(sub ? await renderUsage(subCommands[sub]!, main as CommandDef) : await renderUsage(main as CommandDef));
      return;
    }
    if (own.length === 1 && (own[0] === "--version" || own[0] === "-v")) {
      console.log(VERSION);
      return;
    }
    if (sub === undefined) throw new MsbError("usage", `unknown option ${own[0]}; see msb --help`);
    await runCommand(main as CommandDef, { rawArgs: argv });
  } catch (error) {
    reportError(error);
  }
}

export function reportError(error: unknown): void {
  const message = error instanceof Error ? error.message : String(error);
  process.stderr.write(`msb: ${message}\n`);
  process.exitCode = error instanceof MsbError && error.code === "usage" ? 2 : 125;
}
