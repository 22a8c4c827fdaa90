// The msb command line: a thin layer over the SDK (citty for parsing and help).

import { defineCommand, renderUsage, runCommand, type CommandDef } from "citty";
import { MsbError } from "../errors";
import { VERSION } from "../version";
import { splitCommand } from "./args";
import { doctor } from "./doctor";
import { image, images, loginCommand, logoutCommand, pull, rmi } from "./image";
import { run } from "./run";
import { create, inspect, kill, ls, ps, restart, rm, start, stop } from "./sandboxes";
import { exec } from "./exec";
import { cp } from "./cp";
import { mcp } from "./mcp";
import { api } from "./api";
import { logs } from "./logs";
import { metrics } from "./metrics";
import { completionsCommand } from "./completions";
import { volume } from "./volume";

// citty's CommandDef is generic in its args; the table only needs the erased form.
const subCommands = {
  run,
  exec,
  cp,
  create,
  start,
  stop,
  restart,
  kill,
  rm,
  ls,
  ps,
  inspect,
  logs,
  metrics,
  pull,
  images,
  rmi,
  image,
  login: loginCommand,
  logout: logoutCommand,
  doctor,
  volume,
  mcp,
  api,
} as unknown as Record<string, CommandDef>;
subCommands.completions = completionsCommand(() => subCommands) as unknown as CommandDef;

export const main = defineCommand({
  meta: { name: "msb", version: VERSION, description: "Run untrusted code in local microVMs" },
  subCommands,
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
  // citty's own argument errors (a missing positional) are usage errors too.
  const usage = (error instanceof MsbError && error.code === "usage") || (error instanceof Error && error.name === "CLIError");
  process.exitCode = usage ? 2 : 125;
}
