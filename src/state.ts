// msb's state: one SQLite database under MSB_HOME (WAL, schema-versioned) recording every sandbox
// — its configuration, status, supervisor and VM processes, and why it stopped — so any process
// can find a sandbox by name and `msb ls` can tell the truth after a crash.

import { Database } from "bun:sqlite";
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, statSync } from "node:fs";
import { join } from "node:path";
import type { SandboxConfig } from "./config";
import type { RuntimeConfig } from "./image";
import { MsbError } from "./errors";
import { msbHome, retainedLogsDir } from "./paths";

/** The image a sandbox's root is made of, resolved when it was created. */
export interface SandboxImage {
  /** As the user gave it. */
  reference: string;
  id: string;
  /** EROFS layer files, lowest first, attached read-only. */
  layers: string[];
  config: RuntimeConfig;
}

/**
 * created: recorded, never started · starting: a supervisor is booting it · running · stopping ·
 * stopped: ended cleanly (a named sandbox can be started again) · crashed: ended otherwise; see
 * `exitReason`.
 */
export type SandboxStatus = "created" | "starting" | "running" | "stopping" | "stopped" | "crashed";

const LIVE_STATUSES: readonly SandboxStatus[] = ["starting", "running", "stopping"];

export interface SandboxRecord {
  name: string;
  config: SandboxConfig;
  image?: SandboxImage;
  /** Removed entirely when it stops (`msb run` without --name). */
  ephemeral: boolean;
  status: SandboxStatus;
  /** The supervisor process while it is live. */
  supervisorPid?: number;
  /** The VM process (qemu), when the backend runs one. */
  vmPid?: number;
  createdAt: string;
  startedAt?: string;
  stoppedAt?: string;
  /** Why it last stopped or crashed, in words. */
  exitReason?: string;
}

/**
 * Schema migrations, in order; `PRAGMA user_version` is how many have run. Append only: a released
 * migration never changes, so every existing database reaches the same schema.
 */
const MIGRATIONS: readonly string[] = [
  `CREATE TABLE sandboxes (
     name TEXT PRIMARY KEY,
     config TEXT NOT NULL,
     image TEXT,
     ephemeral INTEGER NOT NULL,
     status TEXT NOT NULL,
     supervisor_pid INTEGER,
     supervisor_start INTEGER,
     vm_pid INTEGER,
     vm_start INTEGER,
     created_at TEXT NOT NULL,
     started_at TEXT,
     stopped_at TEXT,
     exit_reason TEXT
   );
   CREATE TABLE volumes (
     name TEXT PRIMARY KEY,
     created_at TEXT NOT NULL,
     labels TEXT NOT NULL DEFAULT '{}'
   );`,
  // The image store's index: image records by manifest digest, and the references naming them.
  // The layer files themselves stay content-addressed files under images/layers.
  `CREATE TABLE images (
     id TEXT PRIMARY KEY,
     record TEXT NOT NULL,
     created_at TEXT NOT NULL
   );
   CREATE TABLE image_refs (
     ref TEXT PRIMARY KEY,
     id TEXT NOT NULL
   );
   CREATE INDEX image_refs_by_id ON image_refs (id);`,
];

export const SCHEMA_VERSION = MIGRATIONS.length;

const opened = new Map<string, Database>();

/** The state database of an MSB_HOME (default: the current one), created and migrated on first use. */
export function stateDb(home = msbHome()): Database {
  const cached = opened.get(home);
  if (cached) return cached;
  mkdirSync(home, { recursive: true, mode: 0o700 });
  const path = join(home, "state.db");
  let db: Database;
  try {
    db = new Database(path, { create: true, strict: true });
    // Other msb processes hold the database for milliseconds at a time; wait for them.
    db.exec("PRAGMA busy_timeout = 10000");
    db.exec("PRAGMA journal_mode = WAL");
    db.exec("PRAGMA synchronous = NORMAL");
    migrate(db, path);
  } catch (cause) {
    if (cause instanceof MsbError) throw cause;
    throw new MsbError("corrupt_state", `cannot open msb's state database ${path}: ${(cause as Error).message}`, { cause });
  }
  opened.set(home, db);
  return db;
}

function migrate(db: Database, path: string): void {
  const version = () => (db.query("PRAGMA user_version").get() as { user_version: number }).user_version;
  if (version() > SCHEMA_VERSION) {
    throw new MsbError(
      "state_version",
      `the state database ${path} has schema version ${version()}, newer than this msb understands (${SCHEMA_VERSION}); upgrade msb`,
    );
  }
  // IMMEDIATE takes the write lock first, so two processes opening a new database migrate once.
  db.transaction(() => {
    for (let next = version(); next < SCHEMA_VERSION; next++) {
      db.exec(MIGRATIONS[next]!);
      db.exec(`PRAGMA user_version = ${next + 1}`);
    }
  }).immediate();
}

interface SandboxRow {
  name: string;
  config: string;
  image: string | null;
  ephemeral: number;
  status: SandboxStatus;
  supervisor_pid: number | null;
  supervisor_start: number | null;
  vm_pid: number | null;
  vm_start: number | null;
  created_at: string;
  started_at: string | null;
  stopped_at: string | null;
  exit_reason: string | null;
}

function fromRow(row: SandboxRow): SandboxRecord {
  return {
    name: row.name,
    config: withCurrentDefaults(JSON.parse(row.config) as SandboxConfig),
    image: row.image ? (JSON.parse(row.image) as SandboxImage) : undefined,
    ephemeral: row.ephemeral === 1,
    status: row.status,
    supervisorPid: row.supervisor_pid ?? undefined,
    vmPid: row.vm_pid ?? undefined,
    createdAt: row.created_at,
    startedAt: row.started_at ?? undefined,
    stoppedAt: row.stopped_at ?? undefined,
    exitReason: row.exit_reason ?? undefined,
  };
}

/** The config as stored: secret values removed (they live in supervisor memory only, never on disk). */
function storableConfig(config: SandboxConfig): SandboxConfig {
  return { ...config, secrets: (config.secrets ?? []).map(({ value: _value, ...rest }) => rest) };
}

/** Records written before a config field existed get its default. */
function withCurrentDefaults(config: SandboxConfig): SandboxConfig {
  config.secrets ??= [];
  config.tls ??= { ports: [443], bypass: [], ca: [], onDisallowed: "block" };
  return config;
}

/** Records a new sandbox as `created`; exactly one of several processes creating a name wins. */
export function insertSandbox(record: Pick<SandboxRecord, "name" | "config" | "image" | "ephemeral">): SandboxRecord {
  const createdAt = new Date().toISOString();
  try {
    stateDb()
      .query(
        `INSERT INTO sandboxes (name, config, image, ephemeral, status, created_at) VALUES (?, ?, ?, ?, 'created', ?)`,
      )
      .run(record.name, JSON.stringify(storableConfig(record.config)), record.image ? JSON.stringify(record.image) : null, record.ephemeral ? 1 : 0, createdAt);
  } catch (cause) {
    if (/UNIQUE constraint/.test((cause as Error).message)) {
      const existing = findSandbox(record.name);
      throw new MsbError(
        "already_exists",
        `a sandbox named ${record.name} already exists (${existing?.status ?? "being created"}); pick another name, remove it with \`msb rm ${record.name}\`, or pass --replace`,
      );
    }
    throw cause;
  }
  return { ...record, status: "created", createdAt };
}

/** The sandbox's record with its status checked against the processes it names; undefined if none. */
export function findSandbox(name: string): SandboxRecord | undefined {
  const row = stateDb().query(`SELECT * FROM sandboxes WHERE name = ?`).get(name) as SandboxRow | null;
  return row ? reconcile(row) : undefined;
}

export function getSandboxRecord(name: string): SandboxRecord {
  const record = findSandbox(name);
  if (!record) throw new MsbError("not_found", `no sandbox named ${name}; \`msb ls -a\` lists them`);
  return record;
}

export function listSandboxRecords(): SandboxRecord[] {
  const rows = stateDb().query(`SELECT * FROM sandboxes ORDER BY created_at, name`).all() as SandboxRow[];
  return rows.map(reconcile);
}

/**
 * A live status whose supervisor is gone is a crash nobody recorded (kill -9, OOM, power loss):
 * record it, so every reader sees the same truth.
 */
function reconcile(row: SandboxRow): SandboxRecord {
  if (!LIVE_STATUSES.includes(row.status)) return fromRow(row);
  if (row.supervisor_pid === null) {
    // Between claiming the start and recording the supervisor's pid: only a few milliseconds,
    // unless the starting process died right there.
    const claimed = Date.parse(row.started_at ?? row.created_at);
    if (Date.now() - claimed < 60_000) return fromRow(row);
  } else if (processIs(row.supervisor_pid, row.supervisor_start)) {
    return fromRow(row);
  }
  const reason =
    row.supervisor_pid === null
      ? "the process starting it exited before its supervisor ran"
      : `its supervisor (pid ${row.supervisor_pid}) exited without recording why (killed?)`;
  const stoppedAt = new Date().toISOString();
  const changed = stateDb()
    .query(
      `UPDATE sandboxes SET status = 'crashed', exit_reason = ?, stopped_at = ?
       WHERE name = ? AND status = ? AND supervisor_pid IS ?`,
    )
    .run(reason, stoppedAt, row.name, row.status, row.supervisor_pid).changes;
  if (changed === 0) {
    // Someone else updated it meanwhile; theirs is the newer truth.
    const fresh = stateDb().query(`SELECT * FROM sandboxes WHERE name = ?`).get(row.name) as SandboxRow | null;
    return fresh ? fromRow(fresh) : fromRow({ ...row, status: "crashed", exit_reason: reason, stopped_at: stoppedAt });
  }
  return fromRow({ ...row, status: "crashed", exit_reason: reason, stopped_at: stoppedAt });
}

/**
 * Claims a sandbox for starting: only from created/stopped/crashed, and only one claimant wins.
 * Returns false when it was not in a startable state.
 */
export function claimStart(name: string): boolean {
  const startedAt = new Date().toISOString();
  return (
    stateDb()
      .query(
        `UPDATE sandboxes SET status = 'starting', started_at = ?, stopped_at = NULL, exit_reason = NULL,
           supervisor_pid = NULL, supervisor_start = NULL, vm_pid = NULL, vm_start = NULL
         WHERE name = ? AND status IN ('created', 'stopped', 'crashed')`,
      )
      .run(startedAt, name).changes === 1
  );
}

export function recordSupervisor(name: string, pid: number): void {
  stateDb()
    .query(`UPDATE sandboxes SET supervisor_pid = ?, supervisor_start = ? WHERE name = ?`)
    .run(pid, processStartTime(pid) ?? null, name);
}

export function markRunning(name: string, vmPid: number | undefined): void {
  stateDb()
    .query(`UPDATE sandboxes SET status = 'running', vm_pid = ?, vm_start = ? WHERE name = ? AND status = 'starting'`)
    .run(vmPid ?? null, vmPid ? (processStartTime(vmPid) ?? null) : null, name);
}

export function markStopping(name: string): void {
  stateDb().query(`UPDATE sandboxes SET status = 'stopping' WHERE name = ? AND status IN ('starting', 'running')`).run(name);
}

/** Records the end of a run: `stopped` after a clean power-off, `crashed` otherwise. */
export function markEnded(name: string, status: "stopped" | "crashed", reason: string): void {
  stateDb()
    .query(
      `UPDATE sandboxes SET status = ?, exit_reason = ?, stopped_at = ?, supervisor_pid = NULL,
         supervisor_start = NULL, vm_pid = NULL, vm_start = NULL WHERE name = ?`,
    )
    .run(status, reason, new Date().toISOString(), name);
}

export function deleteSandboxRecord(name: string): void {
  stateDb().query(`DELETE FROM sandboxes WHERE name = ?`).run(name);
}

/** The VM process of a live sandbox, if it is still that process (pids get reused). */
export function liveVmPid(name: string): number | undefined {
  const row = stateDb().query(`SELECT vm_pid, vm_start FROM sandboxes WHERE name = ?`).get(name) as
    | Pick<SandboxRow, "vm_pid" | "vm_start">
    | null;
  return row?.vm_pid && processIs(row.vm_pid, row.vm_start) ? row.vm_pid : undefined;
}

/** The supervisor of a live sandbox, if it is still that process. */
export function liveSupervisorPid(name: string): number | undefined {
  const row = stateDb().query(`SELECT supervisor_pid, supervisor_start FROM sandboxes WHERE name = ?`).get(name) as
    | Pick<SandboxRow, "supervisor_pid" | "supervisor_start">
    | null;
  return row?.supervisor_pid && processIs(row.supervisor_pid, row.supervisor_start) ? row.supervisor_pid : undefined;
}

/**
 * The fields of /proc/PID/stat after the command name, so `fields[0]` is field 3 (state); undefined
 * when the process is gone.
 */
export function procStatFields(pid: number): string[] | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // The command name (field 2) may contain spaces and parentheses; fields after it are plain.
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  } catch {
    return undefined;
  }
}

/** A process's start time in clock ticks since boot (field 22 of /proc/PID/stat): with the pid, its identity. */
export function processStartTime(pid: number): number | undefined {
  const fields = procStatFields(pid);
  if (!fields || fields[0] === "Z" || fields[0] === "X") return undefined;
  return Number(fields[19]);
}

function processIs(pid: number, start: number | null): boolean {
  const now = processStartTime(pid);
  return now !== undefined && (start === null || now === start);
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
  for (const record of listSandboxRecords()) if (record.image?.id) ids.add(record.image.id);
  return ids;
}
