// The image config's `User` ("name", "uid", "name:group", "uid:gid", …): checked when the image is
// read (a malformed one is refused naming the image), and resolved to numbers against the image's
// own /etc/passwd and /etc/group, read from its EROFS layers on the host (top layer first,
// whiteouts and opaque directories honoured), so the guest agent is given plain uid/gid.

import { S_IFCHR, S_IFDIR, S_IFMT, S_IFREG } from "./erofs.ts";
import { ErofsReader } from "./erofsread.ts";
import { ImageError } from "./errors.ts";
import { OVERLAY_OPAQUE_XATTR } from "./layer.ts";

export interface ImageUser {
  /** User name or decimal uid, as written in the config. */
  user: string;
  /** Group name or decimal gid, when the config gives one. */
  group?: string;
}

export interface ResolvedUser {
  uid: number;
  gid: number;
  /** Home directory from /etc/passwd (for HOME), when the user is listed there. */
  home?: string;
}

const NAME = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}\$?$/;
const ID = /^\d+$/;
const MAX_ID = 0xfffffffe; // (uid_t)-1 means "no change" to the kernel

function validPart(s: string): boolean {
  return ID.test(s) ? s.length <= 10 && Number(s) <= MAX_ID : NAME.test(s);
}

/** Parses and checks a config `User`; throws MANIFEST_INVALID naming the image. */
export function parseImageUser(value: string, image = "the image"): ImageUser {
  const bad = (why: string) =>
    new ImageError("MANIFEST_INVALID", `${image}: its config's User ${JSON.stringify(value.slice(0, 80))} ${why}; expected user, uid, user:group or uid:gid`);
  if (value.length > 80) throw bad("is too long");
  const parts = value.split(":");
  if (parts.length > 2) throw bad("has more than one ':'");
  const [user, group] = parts as [string, string | undefined];
  if (!validPart(user)) throw bad(ID.test(user) ? `has a uid beyond ${MAX_ID}` : "is not a valid user name or uid");
  if (group !== undefined && !validPart(group)) throw bad(ID.test(group) ? `has a gid beyond ${MAX_ID}` : "is not a valid group name or gid");
  return group === undefined ? { user } : { user, group };
}

/**
 * A small file (≤ 1 MiB) from a stack of EROFS layers (lowest first), as overlayfs would show it;
 * undefined when absent or not a regular file.
 */
export function readFromLayers(layers: string[], path: string): Uint8Array | undefined {
  const parts = path.split("/").filter(Boolean);
  for (let i = layers.length - 1; i >= 0; i--) {
    const r = new ErofsReader(layers[i]!);
    try {
      let n = r.root();
      let hidesBelow = false;
      let found = true;
      for (const p of parts) {
        if ((n.mode & S_IFMT) !== S_IFDIR) { found = false; hidesBelow = true; break; }
        const child = r.readDir(n).get(p);
        if (!child) { found = false; break; }
        if ((child.mode & S_IFMT) === S_IFCHR && child.rdevMajor === 0 && child.rdevMinor === 0) { found = false; hidesBelow = true; break; }
        const opaque = child.xattrs.get(OVERLAY_OPAQUE_XATTR);
        if ((child.mode & S_IFMT) === S_IFDIR && opaque?.length === 1 && opaque[0] === 0x79) hidesBelow = true;
        n = child;
      }
      if (found) return (n.mode & S_IFMT) === S_IFREG ? r.content(n) : undefined;
      if (hidesBelow) return undefined;
    } finally {
      r.close();
    }
  }
  return undefined;
}

function table(layers: string[], path: string): string[][] {
  const data = readFromLayers(layers, path);
  if (!data) return [];
  return new TextDecoder().decode(data).split("\n").filter((l) => l && !l.startsWith("#")).map((l) => l.split(":"));
}

/**
 * Resolves a config `User` against the image's /etc/passwd and /etc/group, Docker's way: a
 * name must be listed; a uid need not be (its gid is then 0 unless given); a group given by
 * name must be in /etc/group.
 *
 *   resolveImageUser(root.layers, "app:staff", "myimage:1")   // { uid: 1000, gid: 50, home: "/home/app" }
 */
export function resolveImageUser(layers: string[], value: string, image = "the image"): ResolvedUser {
  const { user, group } = parseImageUser(value, image);
  const passwd = table(layers, "etc/passwd");
  let uid: number;
  let gid = 0;
  let home: string | undefined;
  const byName = ID.test(user) ? passwd.find((f) => f[2] === user) : passwd.find((f) => f[0] === user);
  if (ID.test(user)) uid = Number(user);
  else if (!byName) throw new ImageError("MANIFEST_INVALID", `${image}: its config's User ${JSON.stringify(value)} names user ${JSON.stringify(user)}, who is not in the image's /etc/passwd`);
  else uid = Number(byName[2]);
  if (byName) {
    if (!ID.test(byName[2] ?? "") || !ID.test(byName[3] ?? ""))
      throw new ImageError("MANIFEST_INVALID", `${image}: its /etc/passwd entry for ${JSON.stringify(user)} has no valid uid/gid`);
    gid = Number(byName[3]);
    home = byName[5] || undefined;
  }
  if (group !== undefined) {
    if (ID.test(group)) gid = Number(group);
    else {
      const g = table(layers, "etc/group").find((f) => f[0] === group);
      if (!g || !ID.test(g[2] ?? ""))
        throw new ImageError("MANIFEST_INVALID", `${image}: its config's User ${JSON.stringify(value)} names group ${JSON.stringify(group)}, which is not in the image's /etc/group`);
      gid = Number(g[2]);
    }
  }
  if (uid > MAX_ID || gid > MAX_ID) throw new ImageError("MANIFEST_INVALID", `${image}: uid/gid beyond ${MAX_ID}`);
  return home === undefined ? { uid, gid } : { uid, gid, home };
}
