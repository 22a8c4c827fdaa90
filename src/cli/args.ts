// Argument handling shared by the msb commands: what belongs to msb and what to the guest
// command, strict flag checking, and value parsing with errors that name the flag.

import type { ArgsDef } from "citty";
import { MsbError } from "../errors";

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

/**
 * Every value of a repeatable string flag, read from the raw arguments: citty keeps only the
 * last of `-v a -v b`.
 */
export function flagValues(own: string[], names: string[]): string[] {
  const values: string[] = [];
  for (let i = 0; i < own.length; i++) {
    const arg = own[i]!;
    for (const name of names) {
      const flag = name.length === 1 ? `-${name}` : `--${name}`;
      if (arg === flag && i + 1 < own.length) values.push(own[++i]!);
      else if (arg.startsWith(`${flag}=`)) values.push(arg.slice(flag.length + 1));
    }
  }
  return values;
}

/** Every value of the repeatable flag `key` of `args` (by its name or aliases) in the raw flags. */
export function repeated(own: string[], args: ArgsDef, key: string): string[] {
  const def = args[key];
  const aliases = def && "alias" in def && def.alias ? (Array.isArray(def.alias) ? def.alias : [def.alias]) : [];
  return flagValues(own, [key, ...aliases]);
}

export function parseEnv(values: string[]): Record<string, string> {
  const env: Record<string, string> = {};
  for (const item of values) {
    const text = String(item);
    const eq = text.indexOf("=");
    if (eq <= 0) throw new MsbError("usage", `-e expects NAME=VALUE, got "${text}"`);
    env[text.slice(0, eq)] = text.slice(eq + 1);
  }
  return env;
}

export function parsePositiveInt(value: unknown, flag: string): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new MsbError("usage", `${flag} expects a positive whole number, got "${String(value)}"`);
  return n;
}

/** Checks the flags of a command that takes no `--`, and returns its positional arguments. */
export function positionals(rawArgs: string[], args: ArgsDef, command: string, min: number, what: string): string[] {
  checkFlags(rawArgs, args, command);
  const values: string[] = [];
  for (let i = 0; i < rawArgs.length; i++) {
    const arg = rawArgs[i]!;
    if (arg.startsWith("-")) {
      const name = arg.replace(/^--?/, "").split("=")[0]!;
      const def = Object.entries(args).find(([key, d]) => key === name || ("alias" in d && d.alias === name))?.[1];
      if (def && def.type === "string" && !arg.includes("=")) i++;
      continue;
    }
    values.push(arg);
  }
  if (values.length < min) throw new MsbError("usage", `msb ${command} needs ${what}; see msb ${command} --help`);
  return values;
}
