// Lifecycle commands: msb create, start, stop, restart, kill, rm, ls/ps, inspect — thin layers over
// the SDK, with --json where they list or describe.

import { defineCommand, parseArgs, type ArgsDef } from "citty";
import { MsbError } from "../errors";
import { isLive, killSandbox, stopSandbox } from "../lifecycle";
import { progressBars } from "../image";
import { Sandbox, defineSandbox, sandboxInfo, type SandboxInfo } from "../sandbox";
import { getSandboxRecord } from "../state";
import { checkFlags, positionals, repeated } from "./args";
import { parseDuration, sandboxArgs, sandboxOptionsFrom } from "./options";

const createArgs = {
  image: { type: "positional", required: false, description: "Image (default: the built-in busybox root)" },
  ...sandboxArgs,
} satisfies ArgsDef;

export const create = defineCommand({
  meta: { name: "create", description: "Record a sandbox without starting it (the image is pulled now); prints its name" },
  args: createArgs,
  async run({ rawArgs }) {
    checkFlags(rawArgs, createArgs, "create");
    const args = parseArgs(rawArgs, createArgs);
    if (args._.length > 1) throw new MsbError("usage", `msb create takes one image, got "${args._.join(" ")}"`);
    const options = sandboxOptionsFrom(args, args._[0], rawArgs);
    const record = await defineSandbox(
      { ...options, detached: true },
      { onPullProgress: options.image && !args.quiet ? progressBars() : undefined, replace: Boolean(args.replace), ephemeral: false },
    );
    console.log(record.name);
  },
});

const namesArgs = {
  name: { type: "positional", required: false, description: "Sandbox name(s)" },
} satisfies ArgsDef;

/** Runs `action` for each named sandbox; reports each failure and carries on, exiting 1 if any failed. */
async function eachName(names: string[], action: (name: string) => Promise<void>): Promise<void> {
  let failed = 0;
  for (const name of names) {
    try {
      await action(name);
    } catch (error) {
      failed++;
      process.stderr.write(`msb: ${(error as Error).message}\n`);
    }
  }
  if (failed > 0) process.exitCode = 1;
}

export const start = defineCommand({
  meta: { name: "start", description: "Start created or stopped sandboxes in the background" },
  args: namesArgs,
  async run({ rawArgs }) {
    const names = positionals(rawArgs, namesArgs, "start", 1, "a sandbox name");
    await eachName(names, async (name) => {
      const sandbox = await Sandbox.start(name, { attached: false });
      sandbox.close();
      console.log(name);
    });
  },
});

const stopArgs = {
  name: { type: "positional", required: false, description: "Sandbox name(s)" },
  time: { type: "string", alias: "t", description: "Seconds to wait for a clean power-off before killing (default 10)" },
} satisfies ArgsDef;

function stopTimeoutMs(value: unknown): number {
  return (parseDuration(value, "--time") ?? 10) * 1000;
}

export const stop = defineCommand({
  meta: { name: "stop", description: "Stop sandboxes: the guest syncs and powers off; killed after --time" },
  args: stopArgs,
  async run({ rawArgs, args }) {
    const names = positionals(rawArgs, stopArgs, "stop", 1, "a sandbox name");
    const timeout = stopTimeoutMs(args.time);
    await eachName(names, async (name) => {
      await stopSandbox(name, timeout);
      console.log(name);
    });
  },
});

export const restart = defineCommand({
  meta: { name: "restart", description: "Stop sandboxes (if running) and start them again" },
  args: stopArgs,
  async run({ rawArgs, args }) {
    const names = positionals(rawArgs, stopArgs, "restart", 1, "a sandbox name");
    const timeout = stopTimeoutMs(args.time);
    await eachName(names, async (name) => {
      if (getSandboxRecord(name).ephemeral) {
        throw new MsbError("ephemeral", `sandbox ${name} is removed when it stops (it was run without --name), so it cannot be restarted`);
      }
      await stopSandbox(name, timeout);
      const sandbox = await Sandbox.start(name, { attached: false });
      sandbox.close();
      console.log(name);
    });
  },
});

export const kill = defineCommand({
  meta: { name: "kill", description: "Kill sandboxes at once (no sync; the writable layer keeps what was flushed)" },
  args: namesArgs,
  async run({ rawArgs }) {
    const names = positionals(rawArgs, namesArgs, "kill", 1, "a sandbox name");
    await eachName(names, async (name) => {
      await killSandbox(name);
      console.log(name);
    });
  },
});

const rmArgs = {
  name: { type: "positional", required: false, description: "Sandbox name(s)" },
  force: { type: "boolean", alias: "f", description: "Kill running sandboxes first" },
} satisfies ArgsDef;

export const rm = defineCommand({
  meta: { name: "rm", description: "Remove sandboxes and everything they own (writable layer, logs, sockets)" },
  args: rmArgs,
  async run({ rawArgs, args }) {
    const names = positionals(rawArgs, rmArgs, "rm", 1, "a sandbox name");
    await eachName(names, async (name) => {
      await Sandbox.remove(name, { force: Boolean(args.force) });
      console.log(name);
    });
  },
});

const lsArgs = {
  all: { type: "boolean", alias: "a", description: "Include sandboxes that are not running (msb ls always does)" },
  json: { type: "boolean", description: "Print JSON" },
  quiet: { type: "boolean", alias: "q", description: "Print names only" },
  label: { type: "string", alias: "l", description: "Only sandboxes with this label, KEY or KEY=VALUE (repeatable)" },
} satisfies ArgsDef;

function matchesLabels(info: SandboxInfo, filters: string[]): boolean {
  return filters.every((filter) => {
    const eq = filter.indexOf("=");
    if (eq < 0) return filter in info.labels;
    return info.labels[filter.slice(0, eq)] === filter.slice(eq + 1);
  });
}

/** "3 minutes ago"-style age for tables. */
export function ago(iso: string | undefined, now = Date.now()): string {
  if (!iso) return "-";
  const seconds = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  if (seconds < 60) return `${seconds}s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)}h ago`;
  return `${Math.floor(seconds / 86400)}d ago`;
}

function statusText(info: SandboxInfo): string {
  switch (info.status) {
    case "running":
      return `running (${ago(info.startedAt).replace(" ago", "")})`;
    case "stopped":
    case "crashed":
      return `${info.status} ${ago(info.stoppedAt)}${info.exitReason ? `: ${info.exitReason}` : ""}`;
    default:
      return info.status;
  }
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, col) => Math.max(...rows.map((row) => row[col]!.length)));
  // The last column (status and reason) is left unpadded: it can be long.
  return rows.map((row) => row.map((cell, col) => (col === row.length - 1 ? cell : cell.padEnd(widths[col]!))).join("  ")).join("\n");
}

function listCommand(name: "ls" | "ps", description: string, runningOnly: boolean) {
  return defineCommand({
    meta: { name, description },
    args: lsArgs,
    async run({ rawArgs, args }) {
      checkFlags(rawArgs, lsArgs, name);
      const filters = repeated(rawArgs, lsArgs, "label");
      const extra = rawArgs.filter((arg) => !arg.startsWith("-") && !filters.includes(arg));
      if (extra.length > 0) throw new MsbError("usage", `msb ${name} takes no arguments, got "${extra.join(" ")}"`);
      const all = await Sandbox.list();
      const shown = all.filter((info) => (!runningOnly || args.all || isLive(info)) && matchesLabels(info, filters));
      if (args.json) {
        console.log(JSON.stringify(shown, null, 2));
        return;
      }
      if (args.quiet) {
        for (const info of shown) console.log(info.name);
        return;
      }
      if (shown.length === 0) {
        const hidden = all.length - shown.length;
        console.log(hidden > 0 ? `no sandboxes shown (${hidden} not running; msb ${name} -a lists them)` : "no sandboxes");
        return;
      }
      const rows = [["NAME", "IMAGE", "CPUS", "MEMORY", "CREATED", "STATUS"]];
      for (const info of shown) {
        rows.push([
          info.name,
          info.image ?? "(built-in)",
          String(info.config.cpus),
          `${info.config.memoryMiB} MiB`,
          ago(info.createdAt),
          statusText(info),
        ]);
      }
      console.log(table(rows));
    },
  });
}

export const ls = listCommand("ls", "List sandboxes with their status (crashed ones with the reason)", false);
export const ps = listCommand("ps", "List running sandboxes (-a: all)", true);

const inspectArgs = {
  name: { type: "positional", required: false, description: "Sandbox name(s)" },
  json: { type: "boolean", description: "Print JSON (the default; kept for symmetry with other commands)" },
} satisfies ArgsDef;

export const inspect = defineCommand({
  meta: { name: "inspect", description: "Describe sandboxes as JSON: configuration, image, status, processes, times" },
  args: inspectArgs,
  async run({ rawArgs }) {
    const names = positionals(rawArgs, inspectArgs, "inspect", 1, "a sandbox name");
    const infos = names.map((name) => sandboxInfo(getSandboxRecord(name)));
    console.log(JSON.stringify(names.length === 1 ? infos[0] : infos, null, 2));
  },
});
