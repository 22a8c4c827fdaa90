// Registry credentials: what `msb login` saved (${MSB_HOME}/auth.json) and, failing that, Docker's
// config.json: a credential helper named for the registry (credHelpers) or for all (credsStore),
// run the way docker runs it (`docker-credential-<name> get`, server on stdin), then `auths`.

import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import { dirname, join } from "node:path";
import { DOCKER_HUB } from "./reference.ts";
import { msbHome } from "../paths.ts";

export interface Credentials {
  username: string;
  password: string;
}

/** The file `msb login` writes. */
export function msbAuthPath(home = msbHome()): string {
  return join(home, "auth.json");
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
  credHelpers?: Record<string, string>;
  credsStore?: string;
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
  return readAuths(msbAuthPath(home)).get(key) ?? fromHelper(key) ?? readAuths(dockerConfigPath()).get(key);
}

function fromHelper(key: string): Credentials | undefined {
  const path = dockerConfigPath();
  if (!existsSync(path)) return undefined;
  let cfg: AuthFile;
  try {
    cfg = JSON.parse(readFileSync(path, "utf8"));
  } catch {
    return undefined; // readAuths reports the broken file
  }
  let helper: string | undefined;
  for (const [k, v] of Object.entries(cfg.credHelpers ?? {})) if (registryKey(k) === key) helper = v;
  helper ??= cfg.credsStore;
  if (!helper) return undefined;
  if (!/^[A-Za-z0-9._-]+$/.test(helper)) throw new Error(`${path}: credential helper name ${JSON.stringify(helper)} is not valid`);
  const exe = Bun.which(`docker-credential-${helper}`, { PATH: process.env.PATH ?? "" });
  if (!exe) return undefined;
  // Docker Hub's credentials are stored under its legacy index URL.
  const server = key === DOCKER_HUB ? "https://index.docker.io/v1/" : key;
  const p = Bun.spawnSync([exe, "get"], { stdin: new TextEncoder().encode(server), stdout: "pipe", stderr: "pipe", timeout: 30_000 });
  if (p.exitCode !== 0) return undefined; // "credentials not found" is a non-zero exit
  try {
    const j = JSON.parse(p.stdout.toString());
    if (typeof j.Username === "string" && typeof j.Secret === "string" && j.Secret) return { username: j.Username, password: j.Secret };
  } catch {}
  return undefined;
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
