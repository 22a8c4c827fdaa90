// The --secret and --tls-* flags of commands that create a sandbox: secrets the guest sees only as
// placeholders, and how its TLS is intercepted. Values come from the host environment; a value on
// the command line needs its own flag, because it ends up in shell history and `ps`.

import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import type { ArgsDef } from "citty";
import type { SandboxOptions } from "../config";
import { MsbError } from "../errors";
import { flagValues } from "./args";

export const secretArgs = {
  secret: {
    type: "string",
    description:
      "A secret the guest sees only as $MSB_NAME: NAME@HOST[,HOST] takes the value from $NAME here and puts it into TLS requests to those hosts only (*.domain for subdomains; repeatable)",
  },
  "secret-inline": {
    type: "string",
    description: "NAME=VALUE@HOST[,HOST]: a secret whose value is on the command line (shell history and ps show it; prefer --secret)",
  },
  "secret-query": { type: "string", description: "Also put secret NAME into request URLs, not only headers (repeatable)" },
  "secret-body": { type: "string", description: "Also put secret NAME into request bodies (repeatable)" },
  "tls-intercept": { type: "boolean", description: "Intercept the guest's TLS even without secrets (on whenever --secret is given)" },
  "tls-bypass": { type: "string", description: "Relay TLS to this server name untouched: HOST or *.domain (repeatable)" },
  "tls-ports": { type: "string", description: "Ports whose TLS is intercepted, comma-separated (default 443)" },
  "tls-ca": { type: "string", description: "Also trust this CA certificate (PEM file) for upstream connections (repeatable)" },
} satisfies ArgsDef;

type Secret = NonNullable<SandboxOptions["secrets"]>[number];

function hostsOf(text: string, flag: string, spec: string): string[] {
  const hosts = text.split(",").map((h) => h.trim()).filter(Boolean);
  if (hosts.length === 0) throw new MsbError("usage", `${flag} ${spec}: name the hosts the secret may go to after '@', e.g. NAME@api.example.com`);
  return hosts;
}

/** `NAME@HOST[,HOST]`, the value read from the environment variable NAME. */
export function parseSecretFlag(spec: string, env: Record<string, string | undefined> = process.env): Secret {
  const at = spec.indexOf("@");
  const name = at < 0 ? spec : spec.slice(0, at);
  if (name.includes("=")) {
    throw new MsbError(
      "usage",
      `--secret takes NAME@HOST and reads the value from $NAME; to put a value on the command line use --secret-inline NAME=VALUE@HOST (shell history and ps show it)`,
    );
  }
  if (at < 0) throw new MsbError("usage", `--secret ${spec}: name the hosts the secret may go to, e.g. --secret ${spec}@api.example.com`);
  const value = env[name];
  if (!value) throw new MsbError("usage", `--secret ${name}: $${name} is not set in this environment; export it first (its value is what the allowed hosts receive)`);
  return { name, value, allow: hostsOf(spec.slice(at + 1), "--secret", name) };
}

/** `NAME=VALUE@HOST[,HOST]`; the value may itself contain '@' (the hosts follow the last one). */
export function parseInlineSecretFlag(spec: string): Secret {
  const eq = spec.indexOf("=");
  const at = spec.lastIndexOf("@");
  if (eq <= 0 || at < eq) throw new MsbError("usage", `--secret-inline expects NAME=VALUE@HOST[,HOST]`);
  const name = spec.slice(0, eq);
  return { name, value: spec.slice(eq + 1, at), allow: hostsOf(spec.slice(at + 1), "--secret-inline", name) };
}

function parsePorts(text: string): number[] {
  return text.split(",").map((p) => {
    const port = Number(p.trim());
    if (!Number.isInteger(port) || port < 1 || port > 65535) throw new MsbError("usage", `--tls-ports expects ports like 443,8443, got "${text}"`);
    return port;
  });
}

function readCa(path: string): string {
  const full = resolve(path);
  let pem: string;
  try {
    pem = readFileSync(full, "utf8");
  } catch (cause) {
    throw new MsbError("usage", `--tls-ca ${full}: ${(cause as Error).message}`);
  }
  if (!pem.includes("-----BEGIN CERTIFICATE-----")) throw new MsbError("usage", `--tls-ca ${full} holds no PEM certificate (-----BEGIN CERTIFICATE-----)`);
  return pem;
}

/** Adds the secret and TLS flags in `own` (the raw flags) to `options`, after any from a config file. */
export function withSecretFlags(options: SandboxOptions, own: string[]): SandboxOptions {
  const secrets = [...(options.secrets ?? []), ...flagValues(own, ["secret"]).map((s) => parseSecretFlag(s)), ...flagValues(own, ["secret-inline"]).map(parseInlineSecretFlag)];
  for (const [flag, key] of [["secret-query", "query"], ["secret-body", "body"]] as const) {
    for (const name of flagValues(own, [flag])) {
      const secret = secrets.find((s) => s.name === name);
      if (!secret) throw new MsbError("usage", `--${flag} ${name}: no secret named ${name} (give it with --secret ${name}@HOST)`);
      secret[key] = true;
    }
  }
  const tls = { ...options.tls };
  if (own.includes("--tls-intercept")) tls.intercept = true;
  if (own.includes("--no-tls-intercept")) tls.intercept = false;
  const bypass = flagValues(own, ["tls-bypass"]);
  if (bypass.length > 0) tls.bypass = [...(tls.bypass ?? []), ...bypass];
  const ports = flagValues(own, ["tls-ports"]);
  if (ports.length > 0) tls.ports = ports.flatMap(parsePorts);
  const ca = flagValues(own, ["tls-ca"]);
  if (ca.length > 0) tls.ca = [...(tls.ca ?? []), ...ca.map(readCa)];
  const out: SandboxOptions = { ...options };
  if (secrets.length > 0) out.secrets = secrets;
  if (Object.keys(tls).length > 0) out.tls = tls;
  return out;
}
