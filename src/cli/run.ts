// `msb run`: create a sandbox, run one command in it with live output, exit with its code.

import { defineCommand, parseArgs, type ArgsDef } from "citty";
import { MsbError } from "../errors";
import { Sandbox } from "../sandbox";
import { checkFlags, listOf, parseEnv, parsePositiveInt, splitCommand } from "./args";
import { commandFor, progressBars } from "../image";

function networkMode(value: unknown): "none" | "public" | "all" | undefined {
  if (value === undefined) return undefined;
  if (value === "none" || value === "public" || value === "all") return value;
  throw new MsbError("usage", `--network must be public, none or all, not "${String(value)}"`);
}

function pullPolicy(value: unknown): "always" | "if-missing" | "never" | undefined {
  if (value === undefined) return undefined;
  if (value === "always" || value === "if-missing" || value === "never") return value;
  throw new MsbError("usage", `--pull must be always, if-missing or never, not "${String(value)}"`);
}

const runArgs = {
  image: { type: "positional", required: false, description: "Image to run (default: the built-in busybox root)" },
  name: { type: "string", description: "Name the sandbox (default: a random name; removed when it stops)" },
  cpus: { type: "string", description: "Number of vCPUs (default 1)" },
  memory: { type: "string", alias: "m", description: "Memory in MiB (default 512)" },
  env: { type: "string", alias: "e", description: "Set an environment variable, NAME=VALUE (repeatable)" },
  workdir: { type: "string", alias: "w", description: "Working directory inside the sandbox" },
  backend: { type: "string", description: "VM backend: native or qemu (default: native with hardware KVM, else qemu)" },
  quiet: { type: "boolean", alias: "q", description: "Don't print the backend notice or pull progress" },
  network: { type: "string", description: "Network: public (default: the internet only), none (no NIC), all (also host and LAN)" },
  publish: { type: "string", alias: "p", description: "Publish a port, [IP:]HOST:GUEST[/udp] (repeatable)" },
  pull: { type: "string", description: "Pull policy: always, if-missing (default) or never" },
  insecure: { type: "boolean", description: "Allow a plain-HTTP registry" },
} satisfies ArgsDef;

export const run = defineCommand({
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
    const image = positionals[0];
    const sandbox = await Sandbox.create({
      image,
      name: args.name as string | undefined,
      cpus: parsePositiveInt(args.cpus, "--cpus"),
      memoryMiB: parsePositiveInt(args.memory, "--memory"),
      env: parseEnv(args.env),
      workdir: args.workdir as string | undefined,
      backend: backend as "qemu" | "native" | undefined,
      pull: pullPolicy(args.pull),
      network: networkMode(args.network),
      ports: listOf(args.publish),
      insecure: args.insecure === undefined ? undefined : Boolean(args.insecure),
    }, { onPullProgress: image && !args.quiet ? progressBars() : undefined });
    let argv: string[];
    try {
      argv = sandbox.image ? commandFor(sandbox.image.config, command, image) : command.length > 0 ? command : ["/bin/sh"];
    } catch (error) {
      await sandbox.stop();
      throw error;
    }
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
