// Registry credentials: what `msb login` saved (${MSB_HOME}/auth.json) and, failing that, the
// `auths` section of Docker's config.json. Credential helpers (credsStore/credHelpers) are not
// run: they are external programs, and msb does not execute them.

import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import { dirname, join } from "node:path";
import { DOCKER_HUB } from "./reference.ts";

export interface Credentials {
  username: string;
  password: string;
}

/** The file `msb login` writes. */
export function msbAuthPath(home = msbHome()): string {
  return join(home, "auth.json");
}

export function msbHome(): string {
  return process.env.MSB_HOME || join(homedir(), ".msb");
}

export function dockerConfigPath(): string {
  return join(process.env.DOCKER_CONFIG || join(homedir(), ".docker"), "config.json");
}

/** Normalises an `auths` key (which may be a URL like https://index.docker.io/v1/) to a registry. */
export function registryKey(key: string): string {
  let k = key.trim().replace(/^[a-z]+:\/\//i, "");
  k = k.replace(/\/.*$/, "");
  if (k === "index.docker.io" || k === "registry-1.docker.io") k = DOCKER_HUB;
  return k;
}

interface AuthFile {
  auths?: Record<string, { auth?: string; username?: string; password?: string; identitytoken?: string }>;
}

function readAuths(path: string): Map<string, Credentials> {
  const out = new Map<string, Credentials>();
  if (!existsSync(path)) return out;
  let parsed: AuthFile;
  try {
    parsed = JSON.parse(readFileSync(path, "utf8"));
  } catch (err) {
    throw new Error(`cannot read registry credentials from ${path}: ${(err as Error).message}`);
  }
  for (const [key, v] of Object.entries(parsed.auths ?? {})) {
    let username = v.username;
    let password = v.password;
    if (v.auth) {
      const decoded = Buffer.from(v.auth, "base64").toString("utf8");
      const i = decoded.indexOf(":");
      if (i > 0) {
        username = decoded.slice(0, i);
        password = decoded.slice(i + 1);
      }
    }
    if (username && password !== undefined) out.set(registryKey(key), { username, password });
  }
  return out;
}

/** Credentials for a registry (host[:port] as in references), or undefined for anonymous. */
export function findCredentials(registry: string, home = msbHome()): Credentials | undefined {
  const key = registryKey(registry);
  return readAuths(msbAuthPath(home)).get(key) ?? readAuths(dockerConfigPath()).get(key);
}

/** Saves credentials for `msb login` (file mode 0600, atomic replace). */
export function saveCredentials(registry: string, creds: Credentials, home = msbHome()): void {
  const path = msbAuthPath(home);
  const current: AuthFile = existsSync(path) ? JSON.parse(readFileSync(path, "utf8")) : {};
  current.auths ??= {};
  current.auths[registryKey(registry)] = { auth: Buffer.from(`${creds.username}:${creds.password}`).toString("base64") };
  writeSecret(path, JSON.stringify(current, null, 2) + "\n");
}

/** Removes saved credentials (`msb logout`); returns whether there were any. */
export function removeCredentials(registry: string, home = msbHome()): boolean {
  const path = msbAuthPath(home);
  if (!existsSync(path)) return false;
  const current: AuthFile = JSON.parse(readFileSync(path, "utf8"));
  const key = registryKey(registry);
  if (!current.auths?.[key]) return false;
  delete current.auths[key];
  writeSecret(path, JSON.stringify(current, null, 2) + "\n");
  return true;
}

function writeSecret(path: string, text: string) {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, text, { mode: 0o600 });
  chmodSync(tmp, 0o600);
  renameSync(tmp, path);
}
