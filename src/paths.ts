// Where msb keeps its state (MSB_HOME) and caches, and where a build of this checkout puts its
// artifacts when running from source.

import { homedir } from "node:os";
import { join, resolve } from "node:path";

export function msbHome(): string {
  return resolve(process.env.MSB_HOME ?? join(homedir(), ".msb"));
}

export function sandboxesDir(): string {
  return join(msbHome(), "sandboxes");
}

export function sandboxDir(name: string): string {
  return join(sandboxesDir(), name);
}

/** Logs of sandboxes that are gone, kept so an error can point at them. */
export function retainedLogsDir(): string {
  return join(msbHome(), "logs");
}

export function cacheDir(): string {
  return resolve(process.env.MSB_CACHE_DIR ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), ".cache"), "msb"));
}

/** Root of this checkout when running from source; undefined inside a compiled binary. */
export function sourceRoot(): string | undefined {
  if (isCompiled()) return undefined;
  return resolve(import.meta.dir, "..");
}

export function isCompiled(): boolean {
  return import.meta.path.startsWith("/$bunfs/") || import.meta.path.startsWith("B:\\~BUN\\");
}
