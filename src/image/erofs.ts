// Writes uncompressed EROFS images (the read-only filesystem the guest mounts for each layer).
//
// Layout, chosen so that file data can be streamed straight from a tar without buffering:
//   block 0            superblock at byte 1024
//   blocks 1..D        file data (full blocks, plus tails that could not be inlined), in tar order
//   blocks D+1..M      metadata area (meta_blkaddr = D+1): extended inodes, each followed by its
//                      inline xattrs and inline data tail; root inode first (nid 0)
//   blocks M+1..       out-of-line directory and symlink blocks
// Every inode is the 64-byte extended form, so sizes, uids and mtimes never need a fallback.
// Output is deterministic: same tree in, same bytes out (no uuid, build time 0).

import { closeSync, fstatSync, ftruncateSync, openSync, readSync, unlinkSync, writeSync } from "node:fs";
import { ImageError } from "./errors.ts";

export const BLOCK_SIZE = 4096;
const BLKSZBITS = 12;
export const EROFS_MAGIC = 0xe0f5e1e2;
const SB_OFFSET = 1024;
// Superblock field offsets (struct erofs_super_block).
const SB_MAGIC = 0, SB_BLKSZBITS = 12, SB_ROOT_NID = 14, SB_INOS = 16, SB_BUILD_TIME = 24;
const SB_BLOCKS = 36, SB_META_BLKADDR = 40, SB_XATTR_BLKADDR = 44, SB_SIZE = 128;
// Extended inode field offsets (struct erofs_inode_extended).
const I_FORMAT = 0, I_XATTR_ICOUNT = 2, I_MODE = 4, I_SIZE = 8, I_U = 16, I_INO = 20;
const I_UID = 24, I_GID = 28, I_MTIME = 32, I_MTIME_NSEC = 40, I_NLINK = 44;
const INODE_SIZE = 64;
const NID_SLOT = 32; // nids count 32-byte slots from meta_blkaddr
const LAYOUT_FLAT_PLAIN = 0, LAYOUT_FLAT_INLINE = 2;
const DIRENT_SIZE = 12; // nid u64, nameoff u16, file_type u8, reserved u8
const XATTR_IBODY_HEADER = 12;
export const MAX_NAME = 255;
/** Inline xattrs per inode are capped so inode + xattrs always fit in one block. */
export const MAX_XATTR_BYTES = 2048;

export const S_IFMT = 0o170000, S_IFSOCK = 0o140000, S_IFLNK = 0o120000, S_IFREG = 0o100000;
export const S_IFBLK = 0o060000, S_IFDIR = 0o040000, S_IFCHR = 0o020000, S_IFIFO = 0o010000;

const FT: Record<number, number> = {
  [S_IFREG]: 1, [S_IFDIR]: 2, [S_IFCHR]: 3, [S_IFBLK]: 4, [S_IFIFO]: 5, [S_IFSOCK]: 6, [S_IFLNK]: 7,
};

// xattr name prefixes EROFS can store (erofs_xattr_entry.e_name_index).
const XATTR_PREFIXES: [string, number][] = [
  ["system.posix_acl_access", 2],
  ["system.posix_acl_default", 3],
  ["user.", 1],
  ["trusted.", 4],
  ["security.", 6],
];

/** One inode. Directories hold children; a hardlinked file is one Node under several names. */
export interface Node {
  mode: number; // full st_mode
  uid: number;
  gid: number;
  mtime: number;
  mtimeNsec: number;
  /** Regular files: data length. */
  size: number;
  /** Char/block devices: major/minor. */
  rdevMajor: number;
  rdevMinor: number;
  /** Symlink target bytes. */
  target?: Uint8Array;
  children?: Map<string, Node>;
  /** Name (byte string) → value; sorted on output. */
  xattrs: Map<string, Uint8Array>;
  // Where a regular file's data went (set by writeFile).
  dataBlock: number;
  tailInline: boolean;
  tailOffset: number; // into the tails scratch file
  tailLength: number;
  // Assigned at finish.
  nid: number;
  ino: number;
  nlink: number;
}

export function newNode(mode: number): Node {
  return {
    mode, uid: 0, gid: 0, mtime: 0, mtimeNsec: 0, size: 0, rdevMajor: 0, rdevMinor: 0,
    children: (mode & S_IFMT) === S_IFDIR ? new Map() : undefined,
    xattrs: new Map(), dataBlock: 0, tailInline: false, tailOffset: 0, tailLength: 0, nid: -1, ino: 0, nlink: 0,
  };
}

export interface ErofsStats {
  bytes: number;
  blocks: number;
  inodes: number;
}

function xattrEncode(name: string): [number, string] {
  for (const [prefix, index] of XATTR_PREFIXES) {
    if (name.startsWith(prefix)) return [index, name.slice(prefix.length)];
  }
  throw new ImageError("EROFS_LIMIT", `extended attribute ${JSON.stringify(name)} has a namespace EROFS cannot store (only user., trusted., security. and POSIX ACLs)`);
}

/** Whether an xattr name can be stored (so callers can decide to drop or reject it). */
export function xattrStorable(name: string): boolean {
  return XATTR_PREFIXES.some(([p]) => name.startsWith(p));
}

function xattrBodySize(node: Node): number {
  if (node.xattrs.size === 0) return 0;
  let n = XATTR_IBODY_HEADER;
  for (const [name, value] of node.xattrs) {
    const [, suffix] = xattrEncode(name);
    n += align(4 + suffix.length + value.byteLength, 4);
  }
  return n;
}

function align(n: number, a: number): number {
  return Math.ceil(n / a) * a;
}

/** Byte-string compare: EROFS keeps each directory sorted by raw name bytes (strcmp order). */
function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * Builds one EROFS image file. Add nodes to `root`, stream regular-file data with `writeFile`
 * as it arrives, then `finish()`.
 *
 *   const w = new ErofsWriter("/tmp/layer.erofs");
 *   const f = newNode(S_IFREG | 0o644); w.root.children!.set("hello", f);
 *   await w.writeFile(f, 5, [new TextEncoder().encode("hello")]);
 *   w.finish();
 */
export class ErofsWriter {
  readonly root: Node;
  private fd: number;
  private tailsFd: number;
  private tailsPath: string;
  private tailsLen = 0;
  private nextBlock = 1; // data area starts after the superblock's block
  private closed = false;

  constructor(readonly path: string) {
    this.fd = openSync(path, "w", 0o644);
    this.tailsPath = path + ".tails";
    this.tailsFd = openSync(this.tailsPath, "w+", 0o600);
    this.root = newNode(S_IFDIR | 0o755);
  }

  /** Bytes of data written so far (for progress). */
  get dataBytes(): number {
    return (this.nextBlock - 1) * BLOCK_SIZE + this.tailsLen;
  }

  /**
   * Streams a regular file's data. Full blocks go straight to the data area; the tail is kept
   * aside to sit inline after the inode when it fits there, else padded into the data area.
   * The node's xattrs must be set before this call (they decide whether the tail fits inline).
   */
  async writeFile(node: Node, size: number, chunks: AsyncIterable<Uint8Array> | Iterable<Uint8Array>): Promise<void> {
    node.size = size;
    const full = Math.floor(size / BLOCK_SIZE);
    const tail = size % BLOCK_SIZE;
    const xsize = xattrBodySize(node);
    node.tailInline = tail > 0 && INODE_SIZE + xsize + tail <= BLOCK_SIZE;
    node.dataBlock = full > 0 || (tail > 0 && !node.tailInline) ? this.nextBlock : 0;
    const fullBytes = full * BLOCK_SIZE;
    let pos = 0;
    let dataPos = this.nextBlock * BLOCK_SIZE;
    node.tailOffset = this.tailsLen;
    node.tailLength = node.tailInline ? tail : 0;
    for await (const chunk of chunks) {
      if (pos + chunk.byteLength > size) throw new ImageError("TAR_INVALID", "file body longer than its declared size");
      let c = chunk;
      if (pos < fullBytes || !node.tailInline) {
        const n = node.tailInline ? Math.min(c.byteLength, fullBytes - pos) : c.byteLength;
        writeAll(this.fd, c.subarray(0, n), dataPos);
        dataPos += n;
        pos += n;
        c = c.subarray(n);
      }
      if (c.byteLength) {
        writeAll(this.tailsFd, c, this.tailsLen);
        this.tailsLen += c.byteLength;
        pos += c.byteLength;
      }
    }
    if (pos !== size) throw new ImageError("TRUNCATED", `file body is ${pos} bytes, ${size} declared`);
    const blocks = full + (tail > 0 && !node.tailInline ? 1 : 0);
    this.nextBlock += blocks;
  }

  /** Lays out metadata, writes inodes, directories and the superblock, and closes the file. */
  finish(): ErofsStats {
    if (this.closed) throw new Error("ErofsWriter.finish called twice");
    try {
      return this.layout();
    } finally {
      this.close();
    }
  }

  /** Closes and deletes the partial output (on error). */
  abort(): void {
    if (!this.closed) this.close();
    try { unlinkSync(this.path); } catch {}
  }

  private close() {
    this.closed = true;
    closeSync(this.fd);
    closeSync(this.tailsFd);
    try { unlinkSync(this.tailsPath); } catch {}
  }

  private layout(): ErofsStats {
    // 1. Order inodes: breadth-first from the root so the root is nid 0 and siblings sit together.
    const order: Node[] = [];
    const parentOf = new Map<Node, Node>();
    const queue: Node[] = [this.root];
    this.root.nlink = 0;
    parentOf.set(this.root, this.root);
    const seen = new Set<Node>([this.root]);
    for (let qi = 0; qi < queue.length; qi++) {
      const n = queue[qi]!;
      order.push(n);
      n.nlink = (n.mode & S_IFMT) === S_IFDIR ? 2 : n.nlink;
      if (!n.children) continue;
      for (const name of [...n.children.keys()].sort(cmp)) {
        if (name.length === 0 || name.length > MAX_NAME || name.includes("/") || name === "." || name === "..")
          throw new ImageError("EROFS_LIMIT", `invalid file name ${JSON.stringify(name)} (EROFS names are 1-255 bytes)`);
        const c = n.children.get(name)!;
        if ((c.mode & S_IFMT) === S_IFDIR) {
          if (seen.has(c)) throw new ImageError("EROFS_LIMIT", "a directory appears twice in the tree");
          n.nlink++;
          parentOf.set(c, n);
        } else if (!seen.has(c)) {
          c.nlink = 0;
        }
        if (!seen.has(c)) {
          seen.add(c);
          queue.push(c);
        }
        if ((c.mode & S_IFMT) !== S_IFDIR) c.nlink++;
      }
    }

    // 2. Sizes: directory contents, inline parts.
    const dirBytes = new Map<Node, number>();
    const inlineLen = new Map<Node, number>();
    const xsizes = new Map<Node, number>();
    for (const n of order) {
      const xs = xattrBodySize(n);
      if (xs > MAX_XATTR_BYTES) throw new ImageError("EROFS_LIMIT", `extended attributes of one file total ${xs} bytes, over the ${MAX_XATTR_BYTES}-byte limit`);
      xsizes.set(n, xs);
      const type = n.mode & S_IFMT;
      let il = 0;
      if (type === S_IFDIR) {
        const d = dirSize(n);
        dirBytes.set(n, d);
        const tail = d % BLOCK_SIZE;
        if (tail > 0 && INODE_SIZE + xs + tail <= BLOCK_SIZE) il = tail;
      } else if (type === S_IFLNK) {
        const len = n.target!.byteLength;
        if (INODE_SIZE + xs + len <= BLOCK_SIZE) il = len;
      } else if (type === S_IFREG && n.tailInline) {
        il = n.tailLength;
      }
      inlineLen.set(n, il);
    }

    // 3. Place inodes in the metadata area; an inode carrying inline data must not let that data
    //    cross a block boundary, so such inodes start a new block when they would.
    const metaStart = this.nextBlock;
    let pos = 0;
    for (const n of order) {
      const total = INODE_SIZE + xsizes.get(n)! + inlineLen.get(n)!;
      if (Math.floor(pos / BLOCK_SIZE) !== Math.floor((pos + total - 1) / BLOCK_SIZE)) pos = align(pos, BLOCK_SIZE);
      n.nid = pos / NID_SLOT;
      pos = align(pos + total, NID_SLOT);
    }
    if (this.root.nid !== 0) throw new Error("root must be nid 0");
    const metaBlocks = Math.max(1, Math.ceil(pos / BLOCK_SIZE));
    const meta = new Uint8Array(metaBlocks * BLOCK_SIZE);
    const mv = new DataView(meta.buffer);
    let extraBlock = metaStart + metaBlocks;

    // 4. Emit inodes (and out-of-line directory/symlink blocks after the metadata area).
    let ino = 0;
    for (const n of order) {
      n.ino = ++ino;
      const type = n.mode & S_IFMT;
      const off = n.nid * NID_SLOT;
      const xs = xsizes.get(n)!;
      const il = inlineLen.get(n)!;
      let size = 0;
      let layout = LAYOUT_FLAT_PLAIN;
      let iu = 0;
      let inlineData: Uint8Array | undefined;
      if (type === S_IFREG) {
        size = n.size;
        layout = n.tailInline ? LAYOUT_FLAT_INLINE : LAYOUT_FLAT_PLAIN;
        iu = n.dataBlock;
        if (n.tailInline) {
          inlineData = new Uint8Array(n.tailLength);
          readAll(this.tailsFd, inlineData, n.tailOffset);
        }
      } else if (type === S_IFDIR) {
        const data = dirContent(n, parentOf.get(n)!);
        size = data.byteLength;
        const full = il > 0 ? size - il : size;
        if (full > 0) {
          iu = extraBlock;
          writeAll(this.fd, data.subarray(0, full), extraBlock * BLOCK_SIZE);
          extraBlock += Math.ceil(full / BLOCK_SIZE);
        }
        if (il > 0) {
          layout = LAYOUT_FLAT_INLINE;
          inlineData = data.subarray(full);
        }
      } else if (type === S_IFLNK) {
        size = n.target!.byteLength;
        if (il > 0) {
          layout = LAYOUT_FLAT_INLINE;
          inlineData = n.target!;
        } else {
          iu = extraBlock;
          writeAll(this.fd, n.target!, extraBlock * BLOCK_SIZE);
          extraBlock += 1;
        }
      } else if (type === S_IFCHR || type === S_IFBLK) {
        // new_encode_dev: the kernel decodes i_u with new_decode_dev.
        iu = ((n.rdevMinor & 0xff) | (n.rdevMajor << 8) | ((n.rdevMinor & ~0xff) << 12)) >>> 0;
      }
      mv.setUint16(off + I_FORMAT, 1 | (layout << 1), true);
      mv.setUint16(off + I_XATTR_ICOUNT, xs === 0 ? 0 : (xs - XATTR_IBODY_HEADER) / 4 + 1, true);
      mv.setUint16(off + I_MODE, n.mode, true);
      mv.setBigUint64(off + I_SIZE, BigInt(size), true);
      mv.setUint32(off + I_U, iu, true);
      mv.setUint32(off + I_INO, n.ino, true);
      mv.setUint32(off + I_UID, n.uid >>> 0, true);
      mv.setUint32(off + I_GID, n.gid >>> 0, true);
      mv.setBigUint64(off + I_MTIME, BigInt(Math.max(0, Math.floor(n.mtime))), true);
      mv.setUint32(off + I_MTIME_NSEC, n.mtimeNsec, true);
      mv.setUint32(off + I_NLINK, n.nlink, true);
      let p = off + INODE_SIZE;
      if (xs > 0) {
        p += XATTR_IBODY_HEADER; // name filter 0, no shared xattrs
        for (const name of [...n.xattrs.keys()].sort(cmp)) {
          const value = n.xattrs.get(name)!;
          const [index, suffix] = xattrEncode(name);
          if (suffix.length > 255 || value.byteLength > 0xffff)
            throw new ImageError("EROFS_LIMIT", `extended attribute ${JSON.stringify(name)} is too large`);
          meta[p] = suffix.length;
          meta[p + 1] = index;
          mv.setUint16(p + 2, value.byteLength, true);
          for (let i = 0; i < suffix.length; i++) meta[p + 4 + i] = suffix.charCodeAt(i);
          meta.set(value, p + 4 + suffix.length);
          p += align(4 + suffix.length + value.byteLength, 4);
        }
      }
      if (inlineData) meta.set(inlineData, p);
    }
    writeAll(this.fd, meta, metaStart * BLOCK_SIZE);

    // 5. Superblock.
    const blocks = extraBlock;
    const sb = new Uint8Array(SB_SIZE);
    const sv = new DataView(sb.buffer);
    sv.setUint32(SB_MAGIC, EROFS_MAGIC, true);
    sb[SB_BLKSZBITS] = BLKSZBITS;
    sv.setUint16(SB_ROOT_NID, this.root.nid, true);
    sv.setBigUint64(SB_INOS, BigInt(order.length), true);
    sv.setBigUint64(SB_BUILD_TIME, 0n, true);
    sv.setUint32(SB_BLOCKS, blocks, true);
    sv.setUint32(SB_META_BLKADDR, metaStart, true);
    sv.setUint32(SB_XATTR_BLKADDR, 0, true);
    writeAll(this.fd, sb, SB_OFFSET);
    ftruncateSync(this.fd, blocks * BLOCK_SIZE);
    if (fstatSync(this.fd).size !== blocks * BLOCK_SIZE) throw new Error("EROFS image size mismatch");
    return { bytes: blocks * BLOCK_SIZE, blocks, inodes: order.length };
  }
}

interface Dirent {
  name: string;
  node: Node;
}

function dirEntries(n: Node, parent: Node): Dirent[] {
  const list: Dirent[] = [{ name: ".", node: n }, { name: "..", node: parent }];
  for (const [name, node] of n.children!) list.push({ name, node });
  return list.sort((a, b) => cmp(a.name, b.name));
}

/** Splits sorted entries into blocks; each block holds dirents then names, never straddling. */
function packDir(entries: Dirent[]): Dirent[][] {
  const blocks: Dirent[][] = [];
  let cur: Dirent[] = [];
  let used = 0;
  for (const e of entries) {
    const need = DIRENT_SIZE + e.name.length;
    if (used + need > BLOCK_SIZE) {
      blocks.push(cur);
      cur = [];
      used = 0;
    }
    cur.push(e);
    used += need;
  }
  if (cur.length) blocks.push(cur);
  return blocks;
}

function dirSize(n: Node): number {
  const names = [".", "..", ...n.children!.keys()].map((name) => ({ name, node: n }));
  names.sort((a, b) => cmp(a.name, b.name));
  const blocks = packDir(names);
  const last = blocks[blocks.length - 1]!;
  return (blocks.length - 1) * BLOCK_SIZE + last.reduce((s, e) => s + DIRENT_SIZE + e.name.length, 0);
}

function dirContent(n: Node, parent: Node): Uint8Array {
  const blocks = packDir(dirEntries(n, parent));
  const lastUsed = blocks[blocks.length - 1]!.reduce((s, e) => s + DIRENT_SIZE + e.name.length, 0);
  const out = new Uint8Array((blocks.length - 1) * BLOCK_SIZE + lastUsed);
  const v = new DataView(out.buffer);
  blocks.forEach((entries, bi) => {
    const base = bi * BLOCK_SIZE;
    let nameoff = entries.length * DIRENT_SIZE;
    entries.forEach((e, i) => {
      const d = base + i * DIRENT_SIZE;
      v.setBigUint64(d, BigInt(e.node.nid), true);
      v.setUint16(d + 8, nameoff, true);
      out[d + 10] = FT[e.node.mode & S_IFMT] ?? 0;
      for (let k = 0; k < e.name.length; k++) out[base + nameoff + k] = e.name.charCodeAt(k);
      nameoff += e.name.length;
    });
  });
  return out;
}

function writeAll(fd: number, data: Uint8Array, position: number) {
  let off = 0;
  while (off < data.byteLength) {
    off += writeSync(fd, data, off, data.byteLength - off, position + off);
  }
}

function readAll(fd: number, into: Uint8Array, position: number) {
  let off = 0;
  while (off < into.byteLength) {
    const n = readSync(fd, into, off, into.byteLength - off, position + off);
    if (n === 0) throw new Error("short read from EROFS tails file");
    off += n;
  }
}
