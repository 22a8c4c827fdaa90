// `msb exec NAME -- CMD`: run a command in a running sandbox with live output, exiting with its
// exit code.

import { defineCommand, parseArgs, type ArgsDef } from "citty";
import { MsbError } from "../errors";
import { Sandbox } from "../sandbox";
import { checkFlags, parseEnv, splitCommand } from "./args";
import { streamCommand } from "./run";

const execArgs = {
  name: { type: "positional", required: false, description: "Sandbox name" },
  env: { type: "string", alias: "e", description: "Set an environment variable, NAME=VALUE (repeatable)" },
  workdir: { type: "string", alias: "w", description: "Working directory inside the sandbox" },
  user: { type: "string", alias: "u", description: "Run as this user: a name from the image, or UID[:GID]" },
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
    try {
      const status = await streamCommand(sandbox, command, {
        env: parseEnv(args.env),
        cwd: args.workdir as string | undefined,
        user: args.user as string | undefined,
      });
      process.exitCode = status.code ?? 128 + (status.signal ?? 0);
    } finally {
      sandbox.close();
    }
  },
});
