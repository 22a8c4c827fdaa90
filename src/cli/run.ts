// `msb run`: create a sandbox and run one command in it with live output, exiting with its code;
// or, with -d, start it in the background and print its name.

import { defineCommand, parseArgs, type ArgsDef } from "citty";
import { MsbError } from "../errors";
import { Sandbox, type SpawnOptions } from "../sandbox";
import { checkFlags, splitCommand } from "./args";
import { commandFor, progressBars } from "../image";
import { sandboxArgs, sandboxOptionsFrom } from "./options";
import { isInteractiveTerminal, runOnTerminal } from "./terminal";
import { askSupervisor } from "../lifecycle";

/** --tty / --no-tty / auto: a terminal when both ends are one. */
export function wantsTerminal(flag: unknown): boolean {
  if (flag === undefined) return isInteractiveTerminal();
  if (flag && !isInteractiveTerminal()) throw new MsbError("usage", "--tty needs a terminal on stdin and stdout; without one, leave it out");
  return Boolean(flag);
}

const runArgs = {
  image: { type: "positional", required: false, description: "Image to run (default: the built-in busybox root)" },
  detach: {
    type: "boolean",
    alias: "d",
    description: "Start in the background and print the name. A command after -- runs as the main process (the sandbox stops when it exits; msb logs shows its output); without one the sandbox waits for msb exec",
  },
  tty: {
    type: "boolean",
    alias: "t",
    description: "Give the command a terminal (default when stdin and stdout are one; --no-tty for pipes). Ctrl-P Ctrl-Q detaches",
  },
  ...sandboxArgs,
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
    const image = positionals[0];
    const options = sandboxOptionsFrom(args, image ?? undefined, own);
    const hooks = { onPullProgress: options.image && !args.quiet ? progressBars() : undefined, replace: Boolean(args.replace) };

    if (args.detach) {
      const sandbox = await Sandbox.create(
        { ...options, detached: true, command: command.length > 0 ? command : undefined },
        { ...hooks, ephemeral: false },
      );
      sandbox.close();
      console.log(sandbox.name);
      return;
    }

    const sandbox = await Sandbox.create(options, hooks);
    let argv: string[];
    try {
      argv = sandbox.image ? commandFor(sandbox.image.config, command, sandbox.image.reference) : command.length > 0 ? command : ["/bin/sh"];
    } catch (error) {
      await sandbox.stop();
      throw error;
    }
    if (!args.quiet) process.stderr.write(`msb: ${sandbox.notice}\n`);
    let status;
    try {
      if (wantsTerminal(args.tty)) {
        const result = await runOnTerminal(sandbox, argv);
        if (result.detached) {
          // Let the sandbox outlive us: it is stopped (and, if unnamed, removed) when asked.
          await askSupervisor(sandbox.name, { op: "release" });
          sandbox.close();
          process.stderr.write(`\r\nmsb: detached; sandbox ${sandbox.name} keeps running (msb exec|logs|stop ${sandbox.name})\n`);
          return;
        }
        status = result.status;
      } else {
        status = await streamCommand(sandbox, argv);
      }
    } catch (error) {
      await sandbox.stop();
      throw error;
    }
    await sandbox.stop();
    process.exitCode = status.code ?? 128 + (status.signal ?? 0);
  },
});

/** Runs argv with live output on our stdout/stderr, our stdin forwarded when it is not a terminal. */
export async function streamCommand(sandbox: Sandbox, argv: string[], options: Omit<SpawnOptions, "stdin"> = {}) {
  const forwardStdin = !process.stdin.isTTY;
  const proc = sandbox.spawn(argv[0]!, argv.slice(1), { ...options, stdin: forwardStdin });
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
