// Merges an image's layers into one EROFS image, for images with more layers than a VM has disk
// slots (QEMU microvm: 8 virtio-mmio transports in all). The merge applies OCI layer semantics
// on the host, as overlayfs would in the guest: a whiteout deletes the name below it, an opaque
// directory hides everything below it, a directory over a directory merges, anything else
// replaces. The result has no whiteouts or opaque markers left.
//
// Source: the layers' EROFS files already in the store, not the layer tars. They were checked
// against their digests when pulled, need no network or decompression, and keep each file's
// bytes contiguous, so file data is copied by range straight from them (1 MiB at a time) into
// the new image: only the merged directory tree is held in memory, never file contents.
//
// Cached as images/flat/<image id hex>.erofs with a record beside it, published by rename
// under the store lock like everything else; deterministic, so two processes racing to make the
// same one produce the same bytes.

import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync } from "node:fs";
import { join } from "node:path";
import { ErofsWriter, newNode, S_IFCHR, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG, type Node } from "./erofs.ts";
import { ErofsReader, MAX_DEPTH, type ErofsInode } from "./erofsread.ts";
import { ImageError, withContext } from "./errors.ts";
import { OVERLAY_OPAQUE_XATTR } from "./layer.ts";
import { atomicWrite, fileChecksum, LAYER_FORMAT, type ImageStore } from "./store.ts";

/** Bumped when the flattened output changes meaning; older flat images are then rebuilt. */
export const FLAT_FORMAT = 1;

export interface FlatRecord {
  id: string;
  /** The layers merged, lowest first. */
  diffIds: string[];
  erofsSize: number;
  erofsChecksum: string;
  format: number;
  layerFormat: number;
}

export interface FlattenStats {
  bytes: number;
  inodes: number;
  ms: number;
}

interface Source {
  reader: ErofsReader;
  inode: ErofsInode;
}

const inflight = new Map<string, Promise<string>>();
const YIELD_EVERY = 16 << 20;

/**
 * The path of the image's layers merged into one EROFS file, making it if it is not cached.
 *
 *   const path = await flattenImage(store, "sha256:…");
 */
export async function flattenImage(store: ImageStore, id: string, onStats?: (s: FlattenStats) => void): Promise<string> {
  const key = `${store.root}\0${id}`;
  const running = inflight.get(key);
  if (running) return running;
  const work = flattenOnce(store, id, onStats);
  inflight.set(key, work);
  try {
    return await work;
  } finally {
    inflight.delete(key);
  }
}

/** The cached flat image of `id`, if one matching its current layers exists. */
export function cachedFlat(store: ImageStore, id: string): string | undefined {
  const { path, meta } = store.flatPaths(id);
  if (!existsSync(path) || !existsSync(meta)) return undefined;
  try {
    const rec: FlatRecord = JSON.parse(readFileSync(meta, "utf8"));
    const layers = store.record(id).layers.map((l) => l.diffId);
    if (rec.format !== FLAT_FORMAT || rec.layerFormat !== LAYER_FORMAT || rec.diffIds.join() !== layers.join()) return undefined;
  } catch {
    return undefined;
  }
  return path;
}

async function flattenOnce(store: ImageStore, id: string, onStats?: (s: FlattenStats) => void): Promise<string> {
  const cached = cachedFlat(store, id);
  if (cached) return cached;
  const rec = store.record(id);
  const name = rec.source || id;
  const started = performance.now();
  const work = store.makeTemp("flatten");
  const out = join(work, "flat.erofs");
  try {
    const layers = rec.layers.map((l) => {
      const p = store.layerPath(l.diffId);
      if (!existsSync(p)) throw new ImageError("NOT_IN_STORE", `layer ${l.diffId} is missing from the store; run msb pull again`);
      return p;
    });
    const stats = await mergeLayers(layers, out);
    const { path, meta } = store.flatPaths(id);
    const flat: FlatRecord = {
      id, diffIds: rec.layers.map((l) => l.diffId), erofsSize: stats.bytes, erofsChecksum: fileChecksum(out),
      format: FLAT_FORMAT, layerFormat: LAYER_FORMAT,
    };
    store.withLock(() => {
      mkdirSync(store.flatDir, { recursive: true });
      chmodSync(out, 0o444);
      renameSync(out, path);
      atomicWrite(meta, JSON.stringify(flat));
    });
    onStats?.({ bytes: stats.bytes, inodes: stats.inodes, ms: performance.now() - started });
    return path;
  } catch (err) {
    throw withContext(err, `flattening the ${rec.layers.length} layers of image ${name}`);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/**
 * Merges EROFS layer files (lowest first) into one EROFS file at `out`.
 * Exported for tests; callers use flattenImage.
 */
export async function mergeLayers(layers: string[], out: string): Promise<{ bytes: number; inodes: number }> {
  const readers: ErofsReader[] = [];
  const w = new ErofsWriter(out);
  try {
    const sources = new Map<Node, Source>();
    for (const path of layers) {
      const reader = new ErofsReader(path);
      readers.push(reader);
      const root = reader.root();
      setAttrs(w.root, root);
      mergeDir(reader, root, w.root, new Map(), sources, 0);
    }
    // File data in a fixed walk order (sorted names, depth first), so output is deterministic.
    const written = new Set<Node>();
    const files: Node[] = [];
    const walk = (dir: Node) => {
      for (const key of [...dir.children!.keys()].sort()) {
        const n = dir.children!.get(key)!;
        if ((n.mode & S_IFMT) === S_IFDIR) walk(n);
        else if ((n.mode & S_IFMT) === S_IFREG && !written.has(n)) {
          written.add(n);
          files.push(n);
        }
      }
    };
    walk(w.root);
    let sinceYield = 0;
    for (const n of files) {
      const src = sources.get(n)!;
      await w.writeFile(n, src.inode.size, src.reader.chunks(src.inode));
      // The copy is synchronous I/O; let the process's other work (e.g. running sandboxes' output
      // in an SDK host) run between files now and then.
      sinceYield += src.inode.size;
      if (sinceYield > YIELD_EVERY) {
        sinceYield = 0;
        await new Promise((resolve) => setImmediate(resolve));
      }
    }
    const stats = w.finish();
    return { bytes: stats.bytes, inodes: stats.inodes };
  } catch (err) {
    w.abort();
    throw err;
  } finally {
    for (const r of readers) r.close();
  }
}

function isWhiteout(n: ErofsInode): boolean {
  return (n.mode & S_IFMT) === S_IFCHR && n.rdevMajor === 0 && n.rdevMinor === 0;
}

function setAttrs(dst: Node, src: ErofsInode) {
  dst.mode = src.mode;
  dst.uid = src.uid;
  dst.gid = src.gid;
  dst.mtime = src.mtime;
  dst.mtimeNsec = src.mtimeNsec;
  dst.xattrs = new Map([...src.xattrs].filter(([k]) => !k.startsWith("trusted.overlay.")));
}

/**
 * Applies one layer's directory onto the merged one. `byNid` maps this layer's inodes to merged
 * nodes so hardlinks stay hardlinks.
 */
function mergeDir(reader: ErofsReader, dir: ErofsInode, into: Node, byNid: Map<number, Node>, sources: Map<Node, Source>, depth: number) {
  if (depth > MAX_DEPTH) throw new ImageError("EROFS_LIMIT", `directories nested deeper than ${MAX_DEPTH} in ${reader.path}`);
  for (const [name, child] of reader.readDir(dir)) {
    const type = child.mode & S_IFMT;
    if (isWhiteout(child)) {
      into.children!.delete(name);
      continue;
    }
    if (type === S_IFDIR) {
      const existing = into.children!.get(name);
      const opaque = child.xattrs.get(OVERLAY_OPAQUE_XATTR);
      const isOpaque = opaque !== undefined && opaque.length === 1 && opaque[0] === 0x79; // "y"
      let target: Node;
      if (existing && (existing.mode & S_IFMT) === S_IFDIR && !isOpaque) {
        target = existing;
      } else {
        target = newNode(S_IFDIR | 0o755);
        into.children!.set(name, target);
      }
      setAttrs(target, child);
      mergeDir(reader, child, target, byNid, sources, depth + 1);
      continue;
    }
    let n = byNid.get(child.nid);
    if (!n) {
      n = newNode(child.mode);
      setAttrs(n, child);
      if (type === S_IFLNK) n.target = reader.content(child, 1 << 16);
      else if (type === S_IFREG) sources.set(n, { reader, inode: child });
      else {
        n.rdevMajor = child.rdevMajor;
        n.rdevMinor = child.rdevMinor;
      }
      byNid.set(child.nid, n);
    }
    into.children!.set(name, n);
  }
}
