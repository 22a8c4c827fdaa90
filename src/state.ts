// The on-disk record of a sandbox (sandboxes/<name>/sandbox.json): what its supervisor needs to
// start it, and what other processes need to find it.

import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { SandboxConfig } from "./config";
import type { RuntimeConfig } from "./image";
import { MsbError } from "./errors";
import { retainedLogsDir, sandboxDir, sandboxesDir } from "./paths";

/** The image a sandbox's root is made of, resolved when it was created. */
export interface SandboxImage {
  /** As the user gave it. */
  reference: string;
  id: string;
  /** EROFS layer files, lowest first, attached read-only. */
  layers: string[];
  config: RuntimeConfig;
}

export interface SandboxRecord {
  name: string;
  config: SandboxConfig;
  image?: SandboxImage;
  /** Removed entirely when it stops (`msb run` without --name). */
  ephemeral: boolean;
  createdAt: string;
}

const RECORD_FILE = "sandbox.json";

export function writeSandboxRecord(record: SandboxRecord): void {
  const dir = sandboxDir(record.name);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const path = join(dir, RECORD_FILE);
  const temp = `${path}.${process.pid}.tmp`;
  writeFileSync(temp, `${JSON.stringify(record, null, 2)}\n`, { mode: 0o600 });
  renameSync(temp, path);
}

export function readSandboxRecord(name: string): SandboxRecord {
  const path = join(sandboxDir(name), RECORD_FILE);
  if (!existsSync(path)) throw new MsbError("not_found", `no sandbox named ${name} (looked for ${path})`);
  try {
    return JSON.parse(readFileSync(path, "utf8")) as SandboxRecord;
  } catch (cause) {
    throw new MsbError("corrupt_state", `the record of sandbox ${name} at ${path} is unreadable: ${(cause as Error).message}`, { cause });
  }
}

/** How many logs of sandboxes that are gone are kept. */
const RETAINED_LOGS = 20;

/**
 * Moves a log of a sandbox that is going away to MSB_HOME/logs, so an error can point at it after
 * the sandbox's directory is removed; keeps only the newest few. Returns the new path, if any.
 */
export function retainLog(path: string, as: string): string | undefined {
  if (!existsSync(path) || statSync(path).size === 0) return undefined;
  const dir = retainedLogsDir();
  mkdirSync(dir, { recursive: true });
  const target = join(dir, as);
  renameSync(path, target);
  const logs = readdirSync(dir)
    .map((name) => ({ path: join(dir, name), mtime: statSync(join(dir, name)).mtimeMs }))
    .sort((a, b) => b.mtime - a.mtime);
  for (const old of logs.slice(RETAINED_LOGS)) rmSync(old.path, { force: true });
  return target;
}

/** Ids of the images that sandboxes on this host were created from; such images are not deleted. */
export function imagesInUse(): Set<string> {
  const ids = new Set<string>();
  if (!existsSync(sandboxesDir())) return ids;
  for (const name of readdirSync(sandboxesDir())) {
    try {
      const id = readSandboxRecord(name).image?.id;
      if (id) ids.add(id);
    } catch {
      // A half-written or foreign directory names no image.
    }
  }
  return ids;
}
