// The sandbox options `msb run` and `msb create` share: their flags, and how flags and a config
// file (--config, YAML or JSON, in the SDK's option names) become the SDK's options.

import { existsSync, readFileSync } from "node:fs";
import { resolve } from "node:path";
import type { ArgsDef } from "citty";
import { parseSandboxOptions, type SandboxOptions } from "../config";
import { MsbError } from "../errors";
import { parseEnv, parsePositiveInt, repeated } from "./args";
import { secretArgs, withSecretFlags } from "./secrets";
import { volumeArgs, withVolumeFlags } from "./volume";

export const sandboxArgs = {
  name: { type: "string", description: "Name the sandbox (msb run: kept, stopped, after the command; default: a random name, removed)" },
  config: { type: "string", description: "Options from a YAML or JSON file (SDK option names); flags override it" },
  cpus: { type: "string", description: "Number of vCPUs (default 1)" },
  memory: { type: "string", alias: "m", description: "Memory in MiB (default 512)" },
  env: { type: "string", alias: "e", description: "Set an environment variable, NAME=VALUE (repeatable)" },
  workdir: { type: "string", alias: "w", description: "Working directory inside the sandbox" },
  user: { type: "string", alias: "u", description: "Run commands as this user: a name from the image, or UID[:GID]" },
  hostname: { type: "string", description: "The guest's host name (default: the sandbox name)" },
  label: { type: "string", alias: "l", description: "Attach a label, KEY=VALUE (repeatable; msb ls --label filters)" },
  replace: { type: "boolean", description: "Remove a sandbox of the same name first (stopping it if it runs)" },
  timeout: { type: "string", description: "Stop the sandbox after this long, e.g. 90, 30s, 5m, 2h (alias of --max-duration)" },
  "max-duration": { type: "string", description: "Stop the sandbox after this long (same as --timeout)" },
  "idle-timeout": { type: "string", description: "Stop the sandbox after this long with no client and no command running" },
  backend: { type: "string", description: "VM backend: native or qemu (default: native with hardware KVM, else qemu)" },
  network: { type: "string", alias: "net", description: "Network: public (default: the internet only), none (no NIC), all (also host and LAN)" },
  allow: { type: "string", description: "Allow egress, e.g. tcp:api.example.com:443, cidr:10.1.0.0/16, group:host (repeatable; see netstack/README.md)" },
  deny: { type: "string", description: "Deny egress, e.g. *.example.org, udp:any:123, group:public; --deny any: only --allow passes (repeatable)" },
  publish: { type: "string", alias: "p", description: "Publish a port, [IP:]HOST:GUEST[/udp] (repeatable)" },
  pull: { type: "string", description: "Pull policy: always, if-missing (default) or never" },
  insecure: { type: "boolean", description: "Allow a plain-HTTP registry" },
  quiet: { type: "boolean", alias: "q", description: "Don't print the backend notice or pull progress" },
  ...volumeArgs,
  ...secretArgs,
} satisfies ArgsDef;

type Parsed = Record<string, unknown>;

function oneOf<T extends string>(value: unknown, flag: string, allowed: readonly T[]): T | undefined {
  if (value === undefined) return undefined;
  if ((allowed as readonly unknown[]).includes(value)) return value as T;
  throw new MsbError("usage", `${flag} must be ${allowed.join(", ")}, not "${String(value)}"`);
}

/** A duration flag in seconds: a plain number of seconds, or with a unit (ms, s, m, h, d). */
export function parseDuration(value: unknown, flag: string): number | undefined {
  if (value === undefined) return undefined;
  const match = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$/.exec(String(value).trim());
  const unit = { ms: 0.001, s: 1, m: 60, h: 3600, d: 86400 } as const;
  const seconds = match ? Number(match[1]) * unit[(match[2] ?? "s") as keyof typeof unit] : NaN;
  if (!(seconds > 0)) throw new MsbError("usage", `${flag} expects a duration like 90, 30s, 5m or 2h, got "${String(value)}"`);
  return seconds;
}

function parseLabels(values: string[]): Record<string, string> {
  const labels: Record<string, string> = {};
  for (const text of values) {
    const eq = text.indexOf("=");
    if (eq <= 0) throw new MsbError("usage", `--label expects KEY=VALUE, got "${text}"`);
    labels[text.slice(0, eq)] = text.slice(eq + 1);
  }
  return labels;
}

/** Reads a --config file: YAML or JSON (by extension, else tried as YAML, which JSON is part of). */
export function readConfigFile(path: string): SandboxOptions {
  const full = resolve(path);
  if (!existsSync(full)) throw new MsbError("usage", `config file ${full} does not exist`);
  const text = readFileSync(full, "utf8");
  let data: unknown;
  try {
    data = full.endsWith(".json") ? JSON.parse(text) : Bun.YAML.parse(text);
  } catch (cause) {
    throw new MsbError("invalid_config", `config file ${full} is not valid ${full.endsWith(".json") ? "JSON" : "YAML"}: ${(cause as Error).message}`);
  }
  if (data === null || typeof data !== "object" || Array.isArray(data)) {
    throw new MsbError("invalid_config", `config file ${full} must hold a mapping of options (name, image, cpus, memoryMiB, env, ...)`);
  }
  try {
    parseSandboxOptions(data as SandboxOptions);
  } catch (error) {
    throw new MsbError("invalid_config", `config file ${full}: ${(error as Error).message.replace(/^invalid sandbox options: /, "")}`);
  }
  return data as SandboxOptions;
}

/**
 * The SDK options the shared flags (and --config) describe; flags win over the file. `own` is the
 * raw flags: repeatable flags are read from it, since citty keeps only the last `-e`.
 */
export function sandboxOptionsFrom(args: Parsed, image: string | undefined, own: string[]): SandboxOptions {
  const file: SandboxOptions = typeof args.config === "string" ? readConfigFile(args.config) : {};
  const flags: SandboxOptions = {
    image,
    name: args.name as string | undefined,
    cpus: parsePositiveInt(args.cpus, "--cpus"),
    memoryMiB: parsePositiveInt(args.memory, "--memory"),
    workdir: args.workdir as string | undefined,
    user: args.user as string | undefined,
    hostname: args.hostname as string | undefined,
    backend: oneOf(args.backend, "--backend", ["qemu", "native"] as const),
    pull: oneOf(args.pull, "--pull", ["always", "if-missing", "never"] as const),
    network: oneOf(args.network, "--network", ["public", "none", "all"] as const),
    insecure: args.insecure === undefined ? undefined : Boolean(args.insecure),
    maxDurationSeconds: parseDuration(args.timeout ?? args["max-duration"], args.timeout !== undefined ? "--timeout" : "--max-duration"),
    idleTimeoutSeconds: parseDuration(args["idle-timeout"], "--idle-timeout"),
  };
  const options: SandboxOptions = { ...file };
  for (const [key, value] of Object.entries(flags)) if (value !== undefined) (options as Parsed)[key] = value;
  const env = parseEnv(repeated(own, sandboxArgs, "env"));
  if (Object.keys(env).length > 0) options.env = { ...file.env, ...env };
  const labels = parseLabels(repeated(own, sandboxArgs, "label"));
  if (Object.keys(labels).length > 0) options.labels = { ...file.labels, ...labels };
  // Rule strings are checked by the config schema (parseSandboxOptions), which names the bad one.
  const allow = repeated(own, sandboxArgs, "allow");
  if (allow.length > 0) options.allow = [...(file.allow ?? []), ...allow];
  const deny = repeated(own, sandboxArgs, "deny");
  if (deny.length > 0) options.deny = [...(file.deny ?? []), ...deny];
  const ports = repeated(own, sandboxArgs, "publish");
  if (ports.length > 0) options.ports = [...(file.ports ?? []), ...ports];
  return withSecretFlags(withVolumeFlags(options, own), own);
}
