// `msb exec NAME -- CMD`: run a command in a running sandbox with live output, exiting with its
// exit code.

import { defineCommand, parseArgs, type ArgsDef } from "citty";
import { MsbError } from "../errors";
import { Sandbox } from "../sandbox";
import { checkFlags, parseEnv, repeated, splitCommand } from "./args";
import { streamCommand, wantsTerminal } from "./run";
import { runOnTerminal } from "./terminal";
import { parseDuration } from "./options";
import type { ExitStatus } from "../agent/client";

/** The shell's exit code for a status; a timeout is 124, as timeout(1) reports it, with a note. */
function exitCodeOf(status: ExitStatus, name: string, timeoutMs: number | undefined): number {
  if (status.timedOut) {
    process.stderr.write(`msb: the command in ${name} ran longer than ${(timeoutMs ?? 0) / 1000} s and was killed\n`);
    return 124;
  }
  return status.code ?? 128 + (status.signal ?? 0);
}

const execArgs = {
  name: { type: "positional", required: false, description: "Sandbox name" },
  env: { type: "string", alias: "e", description: "Set an environment variable, NAME=VALUE (repeatable)" },
  workdir: { type: "string", alias: "w", description: "Working directory inside the sandbox" },
  user: { type: "string", alias: "u", description: "Run as this user: a name from the image, or UID[:GID]" },
  tty: {
    type: "boolean",
    alias: "t",
    description: "Give the command a terminal (default when stdin and stdout are one; --no-tty for pipes). Ctrl-P Ctrl-Q detaches",
  },
  timeout: { type: "string", description: "Kill the command after this long (90, 30s, 5m); exit code 124 like timeout(1)" },
} satisfies ArgsDef;

export const exec = defineCommand({
  meta: { name: "exec", description: "Run a command in a running sandbox: msb exec NAME -- CMD [ARGS]" },
  args: execArgs,
  async run({ rawArgs }) {
    const { own, command } = splitCommand(rawArgs);
    checkFlags(own, execArgs, "exec");
    const args = parseArgs(own, execArgs);
    if (args._.length !== 1) throw new MsbError("usage", `msb exec needs one sandbox name before --, e.g. msb exec NAME -- ls /`);
    if (command.length === 0) throw new MsbError("usage", "msb exec needs a command after --, e.g. msb exec NAME -- ls /");
    const sandbox = await Sandbox.get(args._[0]!);
    const options = {
      env: parseEnv(repeated(own, execArgs, "env")),
      cwd: args.workdir as string | undefined,
      user: args.user as string | undefined,
      timeoutMs: args.timeout === undefined ? undefined : parseDuration(args.timeout, "--timeout")! * 1000,
    };
    try {
      if (wantsTerminal(args.tty)) {
        const result = await runOnTerminal(sandbox, command, options);
        if (result.detached) {
          process.stderr.write(`\r\nmsb: detached; the command keeps running in ${sandbox.name} (its output: msb logs ${sandbox.name})\n`);
          return;
        }
        process.exitCode = exitCodeOf(result.status, sandbox.name, options.timeoutMs);
      } else {
        process.exitCode = exitCodeOf(await streamCommand(sandbox, command, options), sandbox.name, options.timeoutMs);
      }
    } finally {
      sandbox.close();
    }
  },
});
