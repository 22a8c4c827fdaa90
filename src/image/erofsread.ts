// Reads back the EROFS images our writer makes (uncompressed, 4 KiB blocks, flat layouts, inline
// xattrs), so that an image's layers can be merged into one (flatten.ts) and files looked up in
// them (the image's /etc/passwd for `User`). File data is never loaded: a regular file is
// described by where its bytes lie in the image, for the caller to copy by range.
//
// The files read are the store's own (written by us, mode 0444, checksummed at pull time), but
// every offset is still checked against the file size so a damaged file gives an error, not a
// crash or a runaway read.

import { closeSync, fstatSync, openSync, readSync } from "node:fs";
import { BLOCK_SIZE, EROFS_MAGIC, S_IFCHR, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG, S_IFBLK } from "./erofs.ts";
import { ImageError } from "./errors.ts";

// Offsets mirror erofs.ts (struct erofs_super_block / erofs_inode_extended / compact).
const SB_OFFSET = 1024;
const SB_MAGIC = 0, SB_BLKSZBITS = 12, SB_ROOT_NID = 14, SB_BUILD_TIME = 24, SB_BUILD_TIME_NSEC = 32;
const SB_BLOCKS = 36, SB_META_BLKADDR = 40;
const I_FORMAT = 0, I_XATTR_ICOUNT = 2, I_MODE = 4;
// extended
const IE_SIZE = 8, IE_U = 16, IE_UID = 24, IE_GID = 28, IE_MTIME = 32, IE_MTIME_NSEC = 40;
const INODE_EXTENDED = 64;
// compact
const IC_SIZE = 8, IC_U = 16, IC_UID = 24, IC_GID = 26;
const INODE_COMPACT = 32;
const NID_SLOT = 32;
const LAYOUT_FLAT_PLAIN = 0, LAYOUT_FLAT_INLINE = 2;
const DIRENT_SIZE = 12;
const XATTR_IBODY_HEADER = 12;
const XATTR_PREFIX_NAMES: Record<number, string> = {
  1: "user.", 2: "system.posix_acl_access", 3: "system.posix_acl_default", 4: "trusted.", 6: "security.",
};
/** Deepest directory nesting accepted (a loop in a damaged image must end). */
const MAX_DEPTH = 2048;

/** One inode as read from an image. */
export interface ErofsInode {
  nid: number;
  mode: number;
  uid: number;
  gid: number;
  mtime: number;
  mtimeNsec: number;
  size: number;
  rdevMajor: number;
  rdevMinor: number;
  xattrs: Map<string, Uint8Array>;
  /** Regular files: bytes [dataOffset, dataOffset + fullBytes) hold the block-aligned part … */
  dataOffset: number;
  fullBytes: number;
  /** … and [tailOffset, tailOffset + tailLength) the rest (inline after the inode, or in a block). */
  tailOffset: number;
  tailLength: number;
}

/**
 *   const r = new ErofsReader(path);
 *   for (const [name, inode] of r.readDir(r.root())) …
 *   r.close();
 */
export class ErofsReader {
  private fd: number;
  private fileSize: number;
  private metaBase: number;
  private buildTime: number;
  private buildTimeNsec: number;
  readonly rootNid: number;

  constructor(readonly path: string) {
    this.fd = openSync(path, "r");
    try {
      this.fileSize = fstatSync(this.fd).size;
      const sb = this.read(SB_OFFSET, 128, "superblock");
      const v = view(sb);
      if (v.getUint32(SB_MAGIC, true) !== EROFS_MAGIC) throw this.bad("no EROFS superblock");
      if (sb[SB_BLKSZBITS] !== 12) throw this.bad(`block size 2^${sb[SB_BLKSZBITS]} (only 4096 is read)`);
      if (v.getUint32(SB_BLOCKS, true) * BLOCK_SIZE > this.fileSize) throw this.bad("file is shorter than its superblock says");
      this.metaBase = v.getUint32(SB_META_BLKADDR, true) * BLOCK_SIZE;
      this.rootNid = v.getUint16(SB_ROOT_NID, true);
      this.buildTime = Number(v.getBigUint64(SB_BUILD_TIME, true));
      this.buildTimeNsec = v.getUint32(SB_BUILD_TIME_NSEC, true);
    } catch (err) {
      closeSync(this.fd);
      throw err;
    }
  }

  close(): void {
    closeSync(this.fd);
  }

  private bad(why: string): ImageError {
    return new ImageError("IMPORT_INVALID", `cached layer ${this.path} is damaged: ${why}; remove the image with msb rmi and pull it again`);
  }

  /** Bytes at [offset, offset + length), bounds-checked against the file. */
  read(offset: number, length: number, what: string): Uint8Array {
    if (offset < 0 || length < 0 || offset + length > this.fileSize) throw this.bad(`${what} lies outside the file`);
    const out = new Uint8Array(length);
    let got = 0;
    while (got < length) {
      const n = readSync(this.fd, out, got, length - got, offset + got);
      if (n === 0) throw this.bad(`short read of ${what}`);
      got += n;
    }
    return out;
  }

  root(): ErofsInode {
    return this.inode(this.rootNid);
  }

  inode(nid: number): ErofsInode {
    const off = this.metaBase + nid * NID_SLOT;
    const head = this.read(off, INODE_COMPACT, `inode ${nid}`);
    const hv = view(head);
    const format = hv.getUint16(I_FORMAT, true);
    const extended = (format & 1) === 1;
    const layout = (format >> 1) & 0x7;
    const isize = extended ? INODE_EXTENDED : INODE_COMPACT;
    const raw = extended ? this.read(off, INODE_EXTENDED, `inode ${nid}`) : head;
    const v = view(raw);
    const icount = v.getUint16(I_XATTR_ICOUNT, true);
    const xsize = icount === 0 ? 0 : (icount - 1) * 4 + XATTR_IBODY_HEADER;
    const mode = v.getUint16(I_MODE, true);
    const size = extended ? Number(v.getBigUint64(IE_SIZE, true)) : v.getUint32(IC_SIZE, true);
    const iu = v.getUint32(extended ? IE_U : IC_U, true);
    const node: ErofsInode = {
      nid, mode,
      uid: extended ? v.getUint32(IE_UID, true) : v.getUint16(IC_UID, true),
      gid: extended ? v.getUint32(IE_GID, true) : v.getUint16(IC_GID, true),
      mtime: extended ? Number(v.getBigUint64(IE_MTIME, true)) : this.buildTime,
      mtimeNsec: extended ? v.getUint32(IE_MTIME_NSEC, true) : this.buildTimeNsec,
      size, rdevMajor: 0, rdevMinor: 0,
      xattrs: xsize ? this.xattrs(off + isize, xsize, nid) : new Map(),
      dataOffset: 0, fullBytes: 0, tailOffset: 0, tailLength: 0,
    };
    const type = mode & S_IFMT;
    if (type === S_IFCHR || type === S_IFBLK) {
      // new_decode_dev
      node.rdevMajor = (iu & 0xfff00) >>> 8;
      node.rdevMinor = (iu & 0xff) | ((iu >>> 12) & 0xfff00);
    } else if (type === S_IFREG || type === S_IFDIR || type === S_IFLNK) {
      if (layout === LAYOUT_FLAT_PLAIN) {
        node.dataOffset = iu * BLOCK_SIZE;
        node.fullBytes = size;
      } else if (layout === LAYOUT_FLAT_INLINE) {
        node.fullBytes = Math.floor(size / BLOCK_SIZE) * BLOCK_SIZE;
        node.dataOffset = node.fullBytes > 0 ? iu * BLOCK_SIZE : 0;
        node.tailOffset = off + isize + xsize;
        node.tailLength = size - node.fullBytes;
        if (Math.floor(node.tailOffset / BLOCK_SIZE) !== Math.floor((node.tailOffset + Math.max(node.tailLength, 1) - 1) / BLOCK_SIZE))
          throw this.bad(`inode ${nid}'s inline data crosses a block boundary`);
      } else {
        throw this.bad(`inode ${nid} uses data layout ${layout} (compressed or chunked), which msb does not write`);
      }
      if (node.dataOffset + node.fullBytes > this.fileSize || node.tailOffset + node.tailLength > this.fileSize)
        throw this.bad(`inode ${nid}'s data lies outside the file`);
    }
    return node;
  }

  private xattrs(off: number, size: number, nid: number): Map<string, Uint8Array> {
    const body = this.read(off, size, `xattrs of inode ${nid}`);
    const shared = body[4]!;
    if (shared) throw this.bad(`inode ${nid} has shared xattrs, which msb does not write`);
    const out = new Map<string, Uint8Array>();
    for (let p = XATTR_IBODY_HEADER; p + 4 <= size; ) {
      const nameLen = body[p]!;
      const index = body[p + 1]!;
      const valueLen = view(body).getUint16(p + 2, true);
      const end = p + 4 + nameLen + valueLen;
      if (end > size) throw this.bad(`inode ${nid}'s xattrs overrun their space`);
      const prefix = XATTR_PREFIX_NAMES[index];
      if (prefix === undefined) throw this.bad(`inode ${nid} has an xattr with unknown prefix index ${index}`);
      let suffix = "";
      for (let i = 0; i < nameLen; i++) suffix += String.fromCharCode(body[p + 4 + i]!);
      out.set(prefix + suffix, body.slice(p + 4 + nameLen, end));
      p += Math.ceil((4 + nameLen + valueLen) / 4) * 4;
    }
    return out;
  }

  /** A regular file's or symlink's whole content (small things only: symlinks, /etc/passwd). */
  content(n: ErofsInode, max = 1 << 20): Uint8Array {
    if (n.size > max) throw this.bad(`inode ${n.nid} is ${n.size} bytes, more than the ${max} read whole`);
    const out = new Uint8Array(n.size);
    if (n.fullBytes) out.set(this.read(n.dataOffset, n.fullBytes, `data of inode ${n.nid}`), 0);
    if (n.tailLength) out.set(this.read(n.tailOffset, n.tailLength, `data of inode ${n.nid}`), n.fullBytes);
    return out;
  }

  /** A file's data in chunks of at most `chunk` bytes, read as they are consumed. */
  *chunks(n: ErofsInode, chunk = 1 << 20): Generator<Uint8Array> {
    for (let p = 0; p < n.fullBytes; p += chunk) yield this.read(n.dataOffset + p, Math.min(chunk, n.fullBytes - p), `data of inode ${n.nid}`);
    if (n.tailLength) yield this.read(n.tailOffset, n.tailLength, `data of inode ${n.nid}`);
  }

  /** A directory's entries (without "." and ".."), name → inode, in on-disk (sorted) order. */
  readDir(dir: ErofsInode): Map<string, ErofsInode> {
    if ((dir.mode & S_IFMT) !== S_IFDIR) throw this.bad(`inode ${dir.nid} is not a directory`);
    const data = this.content(dir, 256 << 20);
    const out = new Map<string, ErofsInode>();
    for (let base = 0; base < data.length; base += BLOCK_SIZE) {
      const end = Math.min(base + BLOCK_SIZE, data.length);
      const v = view(data);
      const first = v.getUint16(base + 8, true);
      if (first < DIRENT_SIZE || first % DIRENT_SIZE || base + first > end) throw this.bad(`directory inode ${dir.nid} has a bad entry table`);
      const count = first / DIRENT_SIZE;
      for (let i = 0; i < count; i++) {
        const d = base + i * DIRENT_SIZE;
        const nid = Number(v.getBigUint64(d, true));
        const nameoff = v.getUint16(d + 8, true);
        let nameEnd = i + 1 < count ? base + v.getUint16(d + 8 + DIRENT_SIZE, true) : end;
        if (i + 1 === count) while (nameEnd > base + nameoff && data[nameEnd - 1] === 0) nameEnd--;
        if (base + nameoff > nameEnd || nameEnd > end) throw this.bad(`directory inode ${dir.nid} has a bad name offset`);
        let name = "";
        for (let k = base + nameoff; k < nameEnd; k++) name += String.fromCharCode(data[k]!);
        if (name === "." || name === "..") continue;
        if (!name || name.includes("/")) throw this.bad(`directory inode ${dir.nid} has an invalid name`);
        out.set(name, this.inode(nid));
      }
    }
    return out;
  }

  /** The inode at a path (components, no symlinks followed), or undefined. */
  lookup(parts: string[]): ErofsInode | undefined {
    if (parts.length > MAX_DEPTH) return undefined;
    let n = this.root();
    for (const p of parts) {
      if ((n.mode & S_IFMT) !== S_IFDIR) return undefined;
      const next = this.readDir(n).get(p);
      if (!next) return undefined;
      n = next;
    }
    return n;
  }
}

function view(b: Uint8Array): DataView {
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}

export { MAX_DEPTH };
