// Converts one OCI layer (a tar stream) into an EROFS image, applying OCI layer semantics on the
// way: whiteouts become overlayfs whiteouts, opaque markers become the overlayfs opaque xattr,
// and any entry that would land outside the root is refused.
//
// What the guest's overlayfs sees in each layer image:
//   - `.wh.NAME`        → NAME as a character device 0/0 (an overlayfs whiteout)
//   - `.wh..wh..opq`    → the directory gets xattr trusted.overlay.opaque = "y"
//   - tar-supplied trusted.overlay.* xattrs are dropped, so a layer cannot forge overlay metadata.

import {
  ErofsWriter, newNode, xattrStorable, MAX_NAME,
  S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFMT, S_IFREG,
  type ErofsStats, type Node,
} from "./erofs.ts";
import { ImageError } from "./errors.ts";
import { bytesOf, DEFAULT_TAR_LIMITS, TarReader, type TarEntry, type TarLimits } from "./tar.ts";

export const WHITEOUT_PREFIX = ".wh.";
export const OPAQUE_MARKER = ".wh..wh..opq";
export const OVERLAY_OPAQUE_XATTR = "trusted.overlay.opaque";

export interface LayerStats extends ErofsStats {
  entries: number;
  /** Bytes of uncompressed tar consumed. */
  tarBytes: number;
  /** xattrs dropped because EROFS or our policy cannot keep them (names). */
  droppedXattrs: string[];
}

export interface ConvertOptions {
  limits?: TarLimits;
  /** Called now and then with the tar bytes consumed so far. */
  onProgress?: (tarBytes: number) => void;
}

/**
 * Splits and validates an archive path. Leading "./" and trailing "/" are fine; absolute paths,
 * ".." components and over-long names are refused with a message naming the entry.
 */
export function splitPath(raw: string, what = "entry"): string[] {
  if (raw.startsWith("/"))
    throw new ImageError("TAR_UNSAFE_PATH", `tar ${what} ${JSON.stringify(raw)} is an absolute path; layer entries must be relative to the root`);
  const parts: string[] = [];
  for (const p of raw.split("/")) {
    if (p === "" || p === ".") continue;
    if (p === "..")
      throw new ImageError("TAR_UNSAFE_PATH", `tar ${what} ${JSON.stringify(raw)} contains "..", which would escape the root`);
    if (p.length > MAX_NAME)
      throw new ImageError("TAR_LIMIT", `tar ${what} ${JSON.stringify(raw)} has a component longer than ${MAX_NAME} bytes`);
    if (p.includes("\0")) throw new ImageError("TAR_INVALID", `tar ${what} name contains a NUL byte`);
    parts.push(p);
  }
  return parts;
}

/** Reads a layer tar from `stream` and writes the EROFS image to `outPath`. */
export async function tarToErofs(
  stream: ReadableStream<Uint8Array>,
  outPath: string,
  options: ConvertOptions = {},
): Promise<LayerStats> {
  const tar = new TarReader(stream, options.limits ?? DEFAULT_TAR_LIMITS);
  const w = new ErofsWriter(outPath);
  const dropped = new Set<string>();
  let entries = 0;
  let lastProgress = 0;
  try {
    for (let e: TarEntry | null; (e = await tar.next()); ) {
      entries++;
      await applyEntry(w, tar, e, dropped);
      if (options.onProgress && tar.position - lastProgress > 1 << 20) {
        lastProgress = tar.position;
        options.onProgress(tar.position);
      }
    }
    options.onProgress?.(tar.position);
    const stats = w.finish();
    return { ...stats, entries, tarBytes: tar.position, droppedXattrs: [...dropped] };
  } catch (err) {
    w.abort();
    throw err;
  }
}

/** Walks to the parent directory of `parts`, creating missing directories (mode 0755). */
function parentDir(w: ErofsWriter, parts: string[], raw: string): Node {
  let dir = w.root;
  for (let i = 0; i < parts.length - 1; i++) {
    const name = parts[i]!;
    let next = dir.children!.get(name);
    if (!next) {
      next = newNode(S_IFDIR | 0o755);
      dir.children!.set(name, next);
    } else if ((next.mode & S_IFMT) !== S_IFDIR) {
      const kind = (next.mode & S_IFMT) === S_IFLNK ? "a symlink" : "not a directory";
      throw new ImageError("TAR_UNSAFE_PATH", `tar entry ${JSON.stringify(raw)} goes through ${JSON.stringify(parts.slice(0, i + 1).join("/"))}, which is ${kind}; writing through it is refused`);
    }
    dir = next;
  }
  return dir;
}

function lookup(w: ErofsWriter, parts: string[]): Node | undefined {
  let n: Node | undefined = w.root;
  for (const p of parts) {
    if (!n?.children) return undefined;
    n = n.children.get(p);
  }
  return n;
}

function setAttrs(n: Node, e: TarEntry, dropped: Set<string>) {
  if (e.uid > 0xffffffff || e.gid > 0xffffffff)
    throw new ImageError("TAR_INVALID", `tar entry ${JSON.stringify(e.path)} has a uid/gid beyond 32 bits (${e.uid}:${e.gid})`);
  n.uid = e.uid;
  n.gid = e.gid;
  n.mtime = e.mtime;
  n.mtimeNsec = e.mtimeNsec;
  n.xattrs = new Map();
  for (const [name, value] of e.xattrs) {
    if (name.startsWith("trusted.overlay.") || !xattrStorable(name)) {
      dropped.add(name);
      continue;
    }
    n.xattrs.set(name, value);
  }
}

async function applyEntry(w: ErofsWriter, tar: TarReader, e: TarEntry, dropped: Set<string>) {
  const parts = splitPath(e.path);
  if (parts.length === 0) {
    // The root itself ("./"): take its attributes.
    if (e.type !== "dir") throw new ImageError("TAR_INVALID", `tar entry ${JSON.stringify(e.path)} names the root but is not a directory`);
    w.root.mode = S_IFDIR | e.mode;
    setAttrs(w.root, e, dropped);
    return;
  }
  const dir = parentDir(w, parts, e.path);
  const name = parts[parts.length - 1]!;

  if (name === OPAQUE_MARKER) {
    dir.xattrs.set(OVERLAY_OPAQUE_XATTR, bytesOf("y"));
    return;
  }
  if (name.startsWith(WHITEOUT_PREFIX)) {
    const hidden = name.slice(WHITEOUT_PREFIX.length);
    if (!hidden || hidden === "." || hidden === "..")
      throw new ImageError("TAR_UNSAFE_PATH", `tar entry ${JSON.stringify(e.path)} is a whiteout of an invalid name`);
    const wh = newNode(S_IFCHR); // 0/0 char device: overlayfs's whiteout
    wh.mtime = e.mtime;
    dir.children!.set(hidden, wh);
    return;
  }

  const existing = dir.children!.get(name);
  switch (e.type) {
    case "dir": {
      if (existing && (existing.mode & S_IFMT) === S_IFDIR) {
        // A repeated directory entry updates attributes and keeps what is inside.
        const opaque = existing.xattrs.get(OVERLAY_OPAQUE_XATTR);
        existing.mode = S_IFDIR | e.mode;
        setAttrs(existing, e, dropped);
        if (opaque) existing.xattrs.set(OVERLAY_OPAQUE_XATTR, opaque);
        return;
      }
      const n = newNode(S_IFDIR | e.mode);
      setAttrs(n, e, dropped);
      dir.children!.set(name, n);
      return;
    }
    case "file": {
      const n = newNode(S_IFREG | e.mode);
      setAttrs(n, e, dropped);
      dir.children!.set(name, n);
      await w.writeFile(n, e.size, tar.body());
      return;
    }
    case "symlink": {
      if (e.linkname.length === 0) throw new ImageError("TAR_INVALID", `symlink ${JSON.stringify(e.path)} has an empty target`);
      const n = newNode(S_IFLNK | 0o777);
      setAttrs(n, e, dropped);
      n.target = bytesOf(e.linkname);
      dir.children!.set(name, n);
      return;
    }
    case "hardlink": {
      const targetParts = splitPath(e.linkname, "hardlink target");
      const target = lookup(w, targetParts);
      if (!target)
        throw new ImageError("TAR_INVALID", `hardlink ${JSON.stringify(e.path)} points to ${JSON.stringify(e.linkname)}, which is not earlier in this layer`);
      if ((target.mode & S_IFMT) === S_IFDIR)
        throw new ImageError("TAR_INVALID", `hardlink ${JSON.stringify(e.path)} points to a directory`);
      if (target === existing) return;
      dir.children!.set(name, target);
      return;
    }
    case "char":
    case "block":
    case "fifo": {
      const fmt = e.type === "char" ? S_IFCHR : e.type === "block" ? S_IFBLK : S_IFIFO;
      if (e.devmajor > 0xfff || e.devminor > 0xfffff)
        throw new ImageError("TAR_INVALID", `device ${JSON.stringify(e.path)} has numbers ${e.devmajor}:${e.devminor} beyond Linux's 12-bit major / 20-bit minor`);
      const n = newNode(fmt | e.mode);
      setAttrs(n, e, dropped);
      n.rdevMajor = e.devmajor;
      n.rdevMinor = e.devminor;
      dir.children!.set(name, n);
      return;
    }
  }
}
