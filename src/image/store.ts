// The image cache under ${MSB_HOME}/images: layers as read-only EROFS files named by their
// uncompressed digest (diff_id), one record per image named by its manifest digest, and tags as
// one small file each. Everything is published by rename, so a reader sees an image completely
// or not at all, and a failed pull leaves the published cache as it was.
//
//   images/layers/<hex>.erofs       EROFS of the layer whose diff_id is sha256:<hex> (mode 0444)
//   state.db tables images, image_refs  ImageRecord by manifest digest, and the references to it
//                                       (SQLite, src/state.ts; earlier stores' records/ and refs/
//                                       files are moved in on first open)
//   images/flat/<hex>.erofs         all layers of image sha256:<hex> merged into one (made on first
//                                   use when an image has more layers than a VM has disks; flatten.ts)
//   images/flat/<hex>.json          what it was made from (diff_ids, formats) and its checksum
//   images/tmp/                     work in progress (pull staging dirs, kept for resuming)

import {
  chmodSync, closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, readSync, renameSync, rmSync, statSync, writeFileSync, writeSync,
} from "node:fs";
import { join } from "node:path";
import type { Database } from "bun:sqlite";
import { msbHome } from "../paths.ts";
import { stateDb } from "../state.ts";
import { ImageError } from "./errors.ts";
import { formatReference, isDigest, parseReference, type ImageRef } from "./reference.ts";
import { parseImageUser, type ResolvedUser } from "./user.ts";

/** Bumped when the EROFS writer's output changes meaning; older layers are then rebuilt. */
export const LAYER_FORMAT = 1;

export interface LayerRecord {
  /** Digest of the blob as distributed (compressed), when known. */
  digest?: string;
  mediaType?: string;
  /** Compressed size, when known. */
  size?: number;
  /** sha256 of the uncompressed tar. */
  diffId: string;
  /**
   * Bytes of the EROFS image and its checksum (see fileChecksum), to check that the cache was
   * never changed. Not a content address, so a fast non-cryptographic hash is enough: whoever
   * could rewrite a layer file could rewrite this record too.
   */
  erofsSize: number;
  erofsChecksum: string;
  tarBytes: number;
  format: number;
}

/** The parts of the OCI image config a sandbox honours. */
export interface RuntimeConfig {
  entrypoint?: string[];
  cmd?: string[];
  env?: string[];
  workingDir?: string;
  /** `User` as the image config writes it (user, uid, user:group, uid:gid); checked when read. */
  user?: string;
  /** `user` resolved against the image's /etc/passwd and /etc/group (set by ensureImage). */
  userIds?: ResolvedUser;
}

export interface ImageRecord {
  /** Manifest digest (for imports without a manifest, the digest of one we wrote). */
  id: string;
  configDigest: string;
  /** The raw image config JSON. */
  config: any;
  layers: LayerRecord[];
  /** Canonical references that pointed here when it was stored. */
  source: string;
  createdAt: string;
}

/** What the VM side needs to build the guest's root: layer disks bottom→top, and the config. */
export interface GuestRoot {
  id: string;
  /** Absolute paths of EROFS images, lowest layer first. Attach read-only. */
  layers: string[];
  config: RuntimeConfig;
}

export interface ImageSummary {
  id: string;
  references: string[];
  layers: number;
  /** Bytes of EROFS on disk for this image (shared layers counted in each image). */
  size: number;
  createdAt: string;
}

export interface RemoveOptions {
  /** Whether a sandbox uses the image (by id); such images are never deleted. */
  inUse?: (id: string) => boolean;
  /** With inUse: untag anyway (the image stays until prune finds it unused). */
  force?: boolean;
}

const hexOf = (digest: string) => {
  if (!isDigest(digest)) throw new ImageError("BAD_REFERENCE", `not a sha256 digest: ${JSON.stringify(digest)}`);
  return digest.slice(7);
};

export class ImageStore {
  readonly root: string;
  readonly layersDir: string;
  readonly tmpDir: string;
  readonly flatDir: string;
  private readonly db: Database;

  constructor(home = msbHome()) {
    this.root = join(home, "images");
    this.layersDir = join(this.root, "layers");
    this.tmpDir = join(this.root, "tmp");
    this.flatDir = join(this.root, "flat");
    for (const d of [this.layersDir, this.tmpDir, this.flatDir]) mkdirSync(d, { recursive: true });
    this.db = stateDb(home);
    this.adoptFileIndex();
  }

  /** Moves an index kept in files by earlier versions (records/, refs/) into the database, once. */
  private adoptFileIndex(): void {
    const recordsDir = join(this.root, "records");
    const refsDir = join(this.root, "refs");
    if (!existsSync(recordsDir) && !existsSync(refsDir)) return;
    this.withLock(() => {
      this.db.transaction(() => {
        if (existsSync(recordsDir)) {
          for (const f of readdirSync(recordsDir)) {
            if (!f.endsWith(".json")) continue;
            const record = JSON.parse(readFileSync(join(recordsDir, f), "utf8")) as ImageRecord;
            this.insertRecord(record);
          }
        }
        if (existsSync(refsDir)) {
          for (const f of readdirSync(refsDir)) {
            if (f.endsWith(".tmp")) continue;
            this.db.query(`INSERT OR REPLACE INTO image_refs (ref, id) VALUES (?, ?)`).run(decodeURIComponent(f), readFileSync(join(refsDir, f), "utf8").trim());
          }
        }
      }).immediate();
      rmSync(recordsDir, { recursive: true, force: true });
      rmSync(refsDir, { recursive: true, force: true });
    });
  }

  private insertRecord(record: ImageRecord): void {
    this.db.query(`INSERT OR IGNORE INTO images (id, record, created_at) VALUES (?, ?, ?)`).run(record.id, JSON.stringify(record), record.createdAt);
  }

  /** Whether the store has a record for image `id` (a full sha256 digest). */
  hasRecord(id: string): boolean {
    return this.db.query(`SELECT 1 FROM images WHERE id = ?`).get(id) !== null;
  }

  private recordIds(): string[] {
    return (this.db.query(`SELECT id FROM images`).all() as { id: string }[]).map((r) => r.id);
  }

  /** Where the flattened form of image `id` lives (see flatten.ts). */
  flatPaths(id: string): { path: string; meta: string } {
    const hex = hexOf(id);
    return { path: join(this.flatDir, `${hex}.erofs`), meta: join(this.flatDir, `${hex}.json`) };
  }

  private flatSize(id: string): number {
    const { path, meta } = this.flatPaths(id);
    if (!existsSync(meta) || !existsSync(path)) return 0;
    return statSync(path).size;
  }

  layerPath(diffId: string): string {
    return join(this.layersDir, `${hexOf(diffId)}.erofs`);
  }

  hasLayer(diffId: string): boolean {
    return existsSync(this.layerPath(diffId));
  }

  /** A fresh private work directory under tmp/ (owned by this process until it exits). */
  makeTemp(prefix: string): string {
    const d = join(this.tmpDir, `${prefix}-${process.pid}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`);
    mkdirSync(d, { recursive: true });
    writeFileSync(join(d, "pid"), String(process.pid));
    return d;
  }

  /**
   * The staging directory for one image (by a stable key such as the manifest digest). It
   * survives a failed or interrupted pull, so the next pull of the same image reuses the layers
   * finished there. Refused while another live process owns it.
   */
  openStaging(key: string, what: string): string {
    const d = join(this.tmpDir, `staging-${key}`);
    mkdirSync(d, { recursive: true });
    return this.withLock(() => {
      let holder = 0;
      try { holder = Number(readFileSync(join(d, "pid"), "utf8")); } catch {}
      if (holder && holder !== process.pid && processAlive(holder))
        throw new ImageError("LOCKED", `${what} is being pulled by another msb process (pid ${holder}); wait for it to finish`);
      writeFileSync(join(d, "pid"), String(process.pid));
      return d;
    });
  }

  /**
   * Publishes a finished image: layer files (moved from staging, unless already present), then
   * the record, then the references. Each step is a rename, in an order such that whatever a
   * reader finds published is complete.
   */
  publish(record: ImageRecord, staged: Map<string, string>, refs: ImageRef[]): void {
    this.withLock(() => {
      for (const layer of record.layers) {
        const dst = this.layerPath(layer.diffId);
        if (existsSync(dst)) continue;
        const src = staged.get(layer.diffId);
        if (!src) throw new ImageError("NOT_IN_STORE", `layer ${layer.diffId} is neither staged nor in the store`);
        chmodSync(src, 0o444);
        renameSync(src, dst);
      }
      // Record and references in one transaction: a reader sees both or neither.
      this.db.transaction(() => {
        this.insertRecord(record);
        for (const ref of refs) this.setRef(ref, record.id);
      }).immediate();
    });
  }

  setRef(ref: ImageRef, id: string): void {
    this.db.query(`INSERT OR REPLACE INTO image_refs (ref, id) VALUES (?, ?)`).run(formatReference(ref), id);
  }

  /** The image id for a reference (tag, digest reference, or an id/prefix of one). */
  resolve(input: string): string | undefined {
    const byId = this.findById(input);
    if (byId) return byId;
    let ref: ImageRef;
    try {
      ref = parseReference(input);
    } catch {
      return undefined;
    }
    const row = this.db.query(`SELECT id FROM image_refs WHERE ref = ?`).get(formatReference(ref)) as { id: string } | null;
    if (row && this.hasRecord(row.id)) return row.id;
    if (ref.digest && this.hasRecord(ref.digest)) return ref.digest;
    return undefined;
  }

  private findById(input: string): string | undefined {
    const hex = input.replace(/^sha256:/, "");
    if (!/^[a-f0-9]{12,64}$/.test(hex)) return undefined;
    const matches = this.db.query(`SELECT id FROM images WHERE id LIKE ? LIMIT 2`).all(`sha256:${hex}%`) as { id: string }[];
    return matches.length === 1 ? matches[0]!.id : undefined;
  }

  record(id: string): ImageRecord {
    const row = this.db.query(`SELECT record FROM images WHERE id = ?`).get(id) as { record: string } | null;
    if (!row) throw new ImageError("NOT_IN_STORE", `image ${id} is not in the local store`);
    return JSON.parse(row.record);
  }

  /** Record for a reference or id, with an error that says how to get it. */
  get(input: string): ImageRecord {
    const id = this.resolve(input);
    if (!id) throw new ImageError("NOT_IN_STORE", `image ${input} is not in the local store; run msb pull ${input}`);
    return this.record(id);
  }

  references(): Map<string, string[]> {
    const out = new Map<string, string[]>();
    for (const { ref, id } of this.db.query(`SELECT ref, id FROM image_refs`).all() as { ref: string; id: string }[]) {
      const list = out.get(id) ?? [];
      list.push(ref);
      out.set(id, list);
    }
    return out;
  }

  list(): ImageSummary[] {
    const refs = this.references();
    const out: ImageSummary[] = [];
    for (const { record } of this.db.query(`SELECT record FROM images`).all() as { record: string }[]) {
      const rec: ImageRecord = JSON.parse(record);
      out.push({
        id: rec.id,
        references: (refs.get(rec.id) ?? []).sort(),
        layers: rec.layers.length,
        size: rec.layers.reduce((s, l) => s + l.erofsSize, 0) + this.flatSize(rec.id),
        createdAt: rec.createdAt,
      });
    }
    return out.sort((a, b) => b.createdAt.localeCompare(a.createdAt));
  }

  /** The guest-facing description of an image's root filesystem. */
  guestRoot(input: string): GuestRoot {
    const rec = this.get(input);
    const layers = rec.layers.map((l) => {
      const p = this.layerPath(l.diffId);
      if (!existsSync(p)) throw new ImageError("NOT_IN_STORE", `image ${input}: layer ${l.diffId} is missing from the store; run msb pull ${input} again`);
      return p;
    });
    const config = runtimeConfig(rec.config);
    if (config.user !== undefined) parseImageUser(config.user, `image ${input}`);
    return { id: rec.id, layers, config };
  }

  /** Re-hashes an image's layer files against the digests recorded when they were written. */
  async verify(input: string): Promise<void> {
    const rec = this.get(input);
    for (const l of rec.layers) {
      const p = this.layerPath(l.diffId);
      const got = fileChecksum(p);
      if (got !== l.erofsChecksum)
        throw new ImageError("DIGEST_MISMATCH", `image ${input}: cached layer ${p} has changed (checksum ${got}, recorded ${l.erofsChecksum}); remove it with msb rmi and pull again`);
    }
    const { path, meta } = this.flatPaths(rec.id);
    if (existsSync(meta) && existsSync(path)) {
      const want = JSON.parse(readFileSync(meta, "utf8")).erofsChecksum;
      const got = fileChecksum(path);
      if (got !== want)
        throw new ImageError("DIGEST_MISMATCH", `image ${input}: its flattened layers ${path} have changed (checksum ${got}, recorded ${want}); remove it with msb rmi and pull again`);
    }
  }

  /**
   * Removes a reference (or, given an id, all references to it). The image record and any
   * layers no other image uses go too once nothing points at the image.
   */
  remove(input: string, opts: RemoveOptions = {}): { untagged: string[]; deleted: string[] } {
    return this.withLock(() => {
      const id = this.resolve(input);
      if (!id) throw new ImageError("NOT_IN_STORE", `image ${input} is not in the local store`);
      const untagged: string[] = [];
      const refs = this.references().get(id) ?? [];
      const byId = this.findById(input) === id;
      let target: string[] = refs;
      if (!byId) {
        const canonical = formatReference(parseReference(input));
        target = refs.includes(canonical) ? [canonical] : [];
      }
      const lastRef = target.length === refs.length;
      if (lastRef && opts.inUse?.(id) && !opts.force)
        throw new ImageError("IN_USE", `image ${input} (${id}) is used by a sandbox; remove the sandbox first, or force to untag it only`);
      for (const r of target) {
        this.db.query(`DELETE FROM image_refs WHERE ref = ?`).run(r);
        untagged.push(r);
      }
      const deleted: string[] = [];
      if ((this.references().get(id) ?? []).length === 0 && !opts.inUse?.(id)) {
        this.db.query(`DELETE FROM images WHERE id = ?`).run(id);
        deleted.push(id);
        deleted.push(...this.removeUnusedLayers());
      }
      return { untagged, deleted };
    });
  }

  /** Removes images nothing refers to, unused layers, and abandoned work in tmp/. */
  prune(opts: Pick<RemoveOptions, "inUse"> = {}): { images: string[]; layers: string[]; tmp: string[] } {
    return this.withLock(() => {
      const refs = this.references();
      const images: string[] = [];
      for (const id of this.recordIds()) {
        if (!refs.has(id) && !opts.inUse?.(id)) {
          this.db.query(`DELETE FROM images WHERE id = ?`).run(id);
          images.push(id);
        }
      }
      const layers = this.removeUnusedLayers();
      const tmp: string[] = [];
      for (const f of readdirSync(this.tmpDir)) {
        let pid = 0;
        try { pid = Number(readFileSync(join(this.tmpDir, f, "pid"), "utf8")); } catch {}
        if (pid && pid !== process.pid && processAlive(pid)) continue;
        rmSync(join(this.tmpDir, f), { recursive: true, force: true });
        tmp.push(f);
      }
      return { images, layers, tmp };
    });
  }

  private removeUnusedLayers(): string[] {
    const used = new Set<string>();
    for (const id of this.recordIds()) {
      for (const l of this.record(id).layers) used.add(`${hexOf(l.diffId)}.erofs`);
    }
    const recorded = new Set(this.recordIds().map(hexOf));
    const removed: string[] = [];
    // Flattened images go with their record.
    for (const f of readdirSync(this.flatDir)) {
      const hex = f.replace(/\.(erofs|json)$/, "");
      if (!recorded.has(hex)) rmSync(join(this.flatDir, f), { force: true });
    }
    for (const f of readdirSync(this.layersDir)) {
      if (!used.has(f)) {
        rmSync(join(this.layersDir, f), { force: true });
        removed.push(`sha256:${f.replace(/\.erofs$/, "")}`);
      }
    }
    return removed;
  }

  /** Serialises publish/remove/prune between msb processes (a lock directory holding a pid). */
  withLock<T>(fn: () => T): T {
    const lock = join(this.root, "lock");
    const deadline = Date.now() + 30_000;
    for (;;) {
      try {
        mkdirSync(lock);
        writeFileSync(join(lock, "pid"), String(process.pid));
        break;
      } catch (err: any) {
        if (err.code !== "EEXIST") throw err;
        let holder = 0;
        try { holder = Number(readFileSync(join(lock, "pid"), "utf8")); } catch {}
        let age = 0;
        try { age = Date.now() - statSync(lock).mtimeMs; } catch {}
        if ((holder && !processAlive(holder)) || (!holder && age > 5000)) {
          rmSync(lock, { recursive: true, force: true });
          continue;
        }
        if (Date.now() > deadline) throw new ImageError("LOCKED", `the image store ${this.root} is locked by process ${holder}; if no msb is running, remove ${lock}`);
        Bun.sleepSync(20);
      }
    }
    try {
      return fn();
    } finally {
      rmSync(lock, { recursive: true, force: true });
    }
  }
}

/** sha256 of a file, hex, read in large blocks (much faster than a Blob stream here). */
export function sha256File(path: string): string {
  const h = new Bun.CryptoHasher("sha256");
  const buf = new Uint8Array(4 << 20);
  const fd = openSync(path, "r");
  try {
    for (let n; (n = readSync(fd, buf, 0, buf.length, null)) > 0; ) h.update(buf.subarray(0, n));
  } finally {
    closeSync(fd);
  }
  return h.digest("hex");
}

/**
 * Fast whole-file checksum: xxHash3 over 4 MiB blocks, each seeded with the previous result.
 * About 8x cheaper than sha256 on machines without SHA instructions.
 */
export function fileChecksum(path: string): string {
  let h = 0n;
  const buf = new Uint8Array(4 << 20);
  const fd = openSync(path, "r");
  try {
    for (let n; (n = readSync(fd, buf, 0, buf.length, null)) > 0; ) h = BigInt(Bun.hash.xxHash3(buf.subarray(0, n), h));
  } finally {
    closeSync(fd);
  }
  return `xxh3c4m:${h.toString(16).padStart(16, "0")}`;
}

export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err: any) {
    return err.code === "EPERM";
  }
}

export function atomicWrite(path: string, text: string): void {
  const tmp = `${path}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`;
  const fd = openSync(tmp, "w", 0o644);
  try {
    writeSync(fd, text);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
}

/** Entrypoint, Cmd, Env, WorkingDir, User from an OCI/Docker image config. */
export function runtimeConfig(config: any): RuntimeConfig {
  const c = config?.config ?? {};
  const strs = (v: unknown) => (Array.isArray(v) && v.every((x) => typeof x === "string") ? (v as string[]) : undefined);
  return {
    entrypoint: strs(c.Entrypoint),
    cmd: strs(c.Cmd),
    env: strs(c.Env),
    workingDir: typeof c.WorkingDir === "string" && c.WorkingDir ? c.WorkingDir : undefined,
    user: typeof c.User === "string" && c.User ? c.User : undefined,
  };
}
