// Volumes: host directories, single host files, named volumes (directories under
// MSB_HOME/volumes) and tmpfs mounts, from `-v`/`--tmpfs`/config to the VM's virtio-fs shares and
// the agent's INIT.mounts. Host paths are made absolute when the options are parsed (at create
// time) and never re-resolved.

import { existsSync, mkdirSync, readdirSync, realpathSync, rmSync, statSync } from "node:fs";
import { homedir } from "node:os";
import { basename, isAbsolute, join, resolve } from "node:path";
import { z } from "zod";
import { MsbError } from "./errors";
import { msbHome } from "./paths";
import type { ShareSpec } from "./vm/backend";

export const VOLUME_NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$/;

const guestPath = z
  .string()
  .startsWith("/", "must be an absolute path inside the sandbox")
  .refine((p) => !p.split("/").some((c) => c === "." || c === ".."), "must not contain . or .. components")
  .refine((p) => p.replace(/\/+$/, "") !== "", "cannot mount over the sandbox root");

/** Makes a host path absolute (relative to the current directory, `~` to the home directory). */
export function absoluteHostPath(source: string): string {
  if (source === "~" || source.startsWith("~/")) return join(homedir(), source.slice(1));
  return isAbsolute(source) ? resolve(source) : resolve(process.cwd(), source);
}

/** Whether a -v source names a volume (a bare name) rather than a host path. */
export function isVolumeName(source: string): boolean {
  return VOLUME_NAME.test(source) && source !== "." && source !== "..";
}

/**
 * One entry of the config's `volumes`: a host path or named volume at `target`, or a tmpfs.
 * Host paths come out absolute.
 */
export const volumeSchema = z
  .object({
    /** A host path (directory or file), or the name of a volume under MSB_HOME/volumes. */
    source: z.string().min(1).optional(),
    /** Where it appears in the sandbox (absolute). */
    target: guestPath,
    readonly: z.boolean().default(false),
    /** A private tmpfs instead of a source. */
    tmpfs: z.boolean().optional(),
    sizeMiB: z.number().int().positive().optional(),
  })
  .strict()
  .superRefine((v, ctx) => {
    if ((v.source === undefined) === !v.tmpfs) {
      ctx.addIssue({ code: "custom", message: `give either source (a host path or volume name) or tmpfs: true for ${v.target}` });
    }
    if (v.sizeMiB !== undefined && !v.tmpfs) ctx.addIssue({ code: "custom", message: "sizeMiB applies to tmpfs volumes only" });
  })
  .transform((v) => (v.source === undefined ? v : { ...v, source: isVolumeName(v.source) ? v.source : absoluteHostPath(v.source) }));
export type VolumeOption = z.input<typeof volumeSchema>;
export type Volume = z.output<typeof volumeSchema>;

/** Parses `-v SOURCE:TARGET[:ro|rw]`. */
export function parseVolumeFlag(spec: string): VolumeOption {
  const parts = spec.split(":");
  let readonly = false;
  if (parts.length === 3 && (parts[2] === "ro" || parts[2] === "rw")) {
    readonly = parts.pop() === "ro";
  }
  if (parts.length !== 2 || !parts[0] || !parts[1]) {
    throw new MsbError("usage", `-v ${spec}: expected HOST_PATH:GUEST_PATH[:ro] or VOLUME_NAME:GUEST_PATH[:ro]`);
  }
  return { source: parts[0], target: parts[1], readonly };
}

/** Parses `--tmpfs PATH[:SIZE]`; SIZE in MiB, or with a k/m/g suffix. */
export function parseTmpfsFlag(spec: string): VolumeOption {
  const [target, size, extra] = spec.split(":");
  if (!target || extra !== undefined) throw new MsbError("usage", `--tmpfs ${spec}: expected GUEST_PATH[:SIZE] (e.g. /scratch:256m)`);
  if (size === undefined || size === "") return { tmpfs: true, target };
  const m = /^(\d+)([kmg]?)i?b?$/i.exec(size);
  if (!m) throw new MsbError("usage", `--tmpfs ${spec}: size ${size} is not a size (e.g. 64m, 1g, or MiB as a number)`);
  const n = Number(m[1]);
  const unit = (m[2] ?? "").toLowerCase();
  const mib = unit === "g" ? n * 1024 : unit === "k" ? Math.ceil(n / 1024) : n;
  if (mib < 1) throw new MsbError("usage", `--tmpfs ${spec}: size must be at least 1 MiB`);
  return { tmpfs: true, target, sizeMiB: mib };
}

// Named volumes.

export function volumesDir(): string {
  return join(msbHome(), "volumes");
}

export interface VolumeInfo {
  name: string;
  /** The host directory holding the volume's files. */
  path: string;
  createdAt: string;
  /** Sandboxes whose configuration mounts it. */
  usedBy: string[];
}

function checkName(name: string): void {
  if (!isVolumeName(name)) {
    throw new MsbError("invalid_volume", `volume name ${JSON.stringify(name)} is not valid: use letters, digits, '_', '.', '-' (up to 63, starting with a letter or digit)`);
  }
}

function volumeDataPath(name: string): string {
  return join(volumesDir(), name, "data");
}

/**
 * The sandboxes whose configuration mounts volume `name`. The one place volume bookkeeping asks
 * "who uses this"; `sandboxVolumes` supplies (sandbox, volume sources) pairs.
 */
export function volumeUsers(name: string, sandboxVolumes: () => Iterable<[string, Volume[]]> = defaultSandboxVolumes): string[] {
  const users: string[] = [];
  for (const [sandbox, volumes] of sandboxVolumes()) {
    if (volumes.some((v) => v.source === name)) users.push(sandbox);
  }
  return users.sort();
}

function defaultSandboxVolumes(): Iterable<[string, Volume[]]> {
  // Imported lazily: state pulls in sqlite, which the pure parsing above does not need.
  const { listSandboxRecords } = require("./state") as typeof import("./state");
  return listSandboxRecords().map((r) => [r.name, ((r.config as { volumes?: Volume[] }).volumes ?? [])] as [string, Volume[]]);
}

/** The volumes table of the state database (src/state.ts); loaded lazily like the sandbox records. */
function volumesTable() {
  const { stateDb } = require("./state") as typeof import("./state");
  return stateDb();
}

/**
 * The volume's row, adopting a data directory that has none (made by an earlier version, or by a
 * create that died between its two steps).
 */
function volumeRow(name: string): { name: string; created_at: string } | undefined {
  const db = volumesTable();
  const row = db.query(`SELECT name, created_at FROM volumes WHERE name = ?`).get(name) as { name: string; created_at: string } | null;
  if (row) return row;
  if (!existsSync(volumeDataPath(name))) return undefined;
  const createdAt = statSync(join(volumesDir(), name)).birthtime.toISOString();
  db.query(`INSERT OR IGNORE INTO volumes (name, created_at) VALUES (?, ?)`).run(name, createdAt);
  return { name, created_at: createdAt };
}

export function createVolume(name: string, options: { existOk?: boolean } = {}): VolumeInfo {
  checkName(name);
  if (volumeRow(name)) {
    if (options.existOk) return inspectVolume(name);
    throw new MsbError("volume_exists", `volume ${name} already exists (${join(volumesDir(), name)})`);
  }
  // The row first: of two processes creating one name, exactly one inserts it.
  const inserted = volumesTable().query(`INSERT OR IGNORE INTO volumes (name, created_at) VALUES (?, ?)`).run(name, new Date().toISOString());
  if (inserted.changes === 0 && !options.existOk) throw new MsbError("volume_exists", `volume ${name} already exists`);
  mkdirSync(volumeDataPath(name), { recursive: true, mode: 0o755 });
  return inspectVolume(name);
}

export function inspectVolume(name: string): VolumeInfo {
  checkName(name);
  const row = volumeRow(name);
  if (!row || !existsSync(volumeDataPath(name))) {
    throw new MsbError("no_volume", `no volume named ${name}; create it with \`msb volume create ${name}\``);
  }
  return { name, path: volumeDataPath(name), createdAt: row.created_at, usedBy: volumeUsers(name) };
}

export function listVolumes(): VolumeInfo[] {
  // Data directories without a row are adopted by volumeRow (inside inspectVolume).
  const names = new Set((volumesTable().query(`SELECT name FROM volumes`).all() as { name: string }[]).map((r) => r.name));
  if (existsSync(volumesDir())) for (const n of readdirSync(volumesDir())) if (isVolumeName(n) && existsSync(volumeDataPath(n))) names.add(n);
  return [...names].filter((n) => existsSync(volumeDataPath(n))).sort().map(inspectVolume);
}

/** Deletes a volume and its files; refused while a sandbox mounts it unless `force`. */
export function removeVolume(name: string, options: { force?: boolean } = {}): void {
  const info = inspectVolume(name);
  if (info.usedBy.length > 0 && !options.force) {
    throw new MsbError(
      "volume_in_use",
      `volume ${name} is used by sandbox${info.usedBy.length > 1 ? "es" : ""} ${info.usedBy.join(", ")}; remove ${info.usedBy.length > 1 ? "them" : "it"} first or use --force`,
    );
  }
  rmSync(join(volumesDir(), name), { recursive: true, force: true });
  volumesTable().query(`DELETE FROM volumes WHERE name = ?`).run(name);
}

// From a sandbox's volumes to the VM and the agent.

export interface GuestMounts {
  shares: ShareSpec[];
  /** INIT.mounts (docs/protocol.md). */
  mounts: Record<string, unknown>[];
}

/**
 * Turns a sandbox's volumes into virtio-fs shares and INIT mounts. Named volumes are created on
 * first use; a host path must exist (a directory or a regular file).
 */
export function guestMounts(volumes: Volume[], sandbox: string): GuestMounts {
  const shares: ShareSpec[] = [];
  const mounts: Record<string, unknown>[] = [];
  for (const v of volumes) {
    if (v.tmpfs || v.source === undefined) {
      mounts.push({ kind: "tmpfs", path: v.target, ...(v.sizeMiB ? { sizeMiB: v.sizeMiB } : {}) });
      continue;
    }
    let hostPath: string;
    if (isVolumeName(v.source)) {
      hostPath = createVolume(v.source, { existOk: true }).path;
    } else {
      if (!existsSync(v.source)) throw new MsbError("invalid_volume", `sandbox ${sandbox}: volume source ${v.source} does not exist on the host`);
      // Symlinks in the user's own path are resolved once, here; inside the share none is followed.
      hostPath = realpathSync(v.source);
    }
    const st = statSync(hostPath);
    if (!st.isDirectory() && !st.isFile()) {
      throw new MsbError("invalid_volume", `sandbox ${sandbox}: volume source ${v.source} is neither a directory nor a regular file`);
    }
    const tag = `msbfs${shares.length}`;
    shares.push({ tag, hostPath, readOnly: v.readonly });
    mounts.push({ kind: "virtiofs", tag, path: v.target, readonly: v.readonly, ...(st.isFile() ? { file: basename(hostPath) } : {}) });
  }
  return { shares, mounts };
}
