// Imports images from local files: OCI image layout directories, OCI layout archives
// (oci-archive tars), `docker save` archives, and plain root-filesystem tars (how the embedded
// default root becomes an image like any other). Archives are read in place by offset, never
// unpacked; every blob is checked against its digest and every layer against its diff_id.

import { existsSync, rmSync, statSync } from "node:fs";
import { basename, join, posix } from "node:path";
import { ImageError, withContext } from "./errors.ts";
import { convertBlob, parseConfig, type PullEvent } from "./pull.ts";
import { formatReference, isDigest, parseReference, type ImageRef } from "./reference.ts";
import { LAYER_MEDIA_TYPES, MediaType, selectPlatform, sha256Hex, type Descriptor } from "./registry.ts";
import { ImageStore, type ImageRecord, type LayerRecord, type RuntimeConfig } from "./store.ts";
import { DEFAULT_TAR_LIMITS, TarReader, type TarLimits } from "./tar.ts";

export interface ImportOptions {
  store?: ImageStore;
  /** Reference to tag the image with (overrides names found in the archive). */
  tag?: string;
  onProgress?: (e: PullEvent) => void;
  limits?: TarLimits;
}

export interface ImportResult {
  record: ImageRecord;
  references: string[];
}

const MAX_JSON = 8 << 20;

/** Random access to the files of a layout directory or an (uncompressed) tar archive. */
interface Source {
  name: string;
  has(path: string): boolean;
  size(path: string): number;
  stream(path: string): ReadableStream<Uint8Array>;
}

function dirSource(dir: string): Source {
  const full = (p: string) => {
    const n = posix.normalize(p);
    if (n.startsWith("../") || n.startsWith("/")) throw new ImageError("IMPORT_INVALID", `${dir}: path ${JSON.stringify(p)} escapes the layout`);
    return join(dir, n);
  };
  return {
    name: dir,
    has: (p) => existsSync(full(p)),
    size: (p) => statSync(full(p)).size,
    stream: (p) => Bun.file(full(p)).stream(),
  };
}

/** Indexes a tar by scanning its headers once; file bodies are then read by offset. */
async function tarSource(path: string): Promise<Source> {
  const entries = new Map<string, { offset: number; size: number } | { link: string }>();
  const tar = new TarReader(Bun.file(path).stream(), { ...DEFAULT_TAR_LIMITS, maxEntries: 1_000_000 });
  for (let e; (e = await tar.next()); ) {
    const name = posix.normalize(e.path).replace(/^\.\//, "").replace(/\/$/, "");
    if (e.type === "file") entries.set(name, { offset: tar.position, size: e.size });
    else if (e.type === "symlink") entries.set(name, { link: posix.normalize(posix.join(posix.dirname(name), e.linkname)) });
    else if (e.type === "hardlink") entries.set(name, { link: posix.normalize(e.linkname) });
  }
  const resolve = (p: string) => {
    let key = posix.normalize(p).replace(/^\.\//, "");
    for (let hops = 0; hops < 16; hops++) {
      const e = entries.get(key);
      if (!e) return undefined;
      if ("offset" in e) return e;
      key = e.link;
    }
    return undefined;
  };
  const file = Bun.file(path);
  return {
    name: path,
    has: (p) => resolve(p) !== undefined,
    size: (p) => resolve(p)?.size ?? 0,
    stream: (p) => {
      const e = resolve(p);
      if (!e) throw new ImageError("IMPORT_INVALID", `${path}: archive has no ${p}`);
      return file.slice(e.offset, e.offset + e.size).stream();
    },
  };
}

async function readJson(src: Source, path: string): Promise<{ bytes: Uint8Array; json: any }> {
  if (!src.has(path)) throw new ImageError("IMPORT_INVALID", `${src.name}: ${path} is missing`);
  if (src.size(path) > MAX_JSON) throw new ImageError("IMPORT_INVALID", `${src.name}: ${path} is larger than ${MAX_JSON} bytes`);
  const bytes = new Uint8Array(await new Response(src.stream(path)).arrayBuffer());
  try {
    return { bytes, json: JSON.parse(new TextDecoder().decode(bytes)) };
  } catch {
    throw new ImageError("IMPORT_INVALID", `${src.name}: ${path} is not valid JSON`);
  }
}

const blobPath = (digest: string) => {
  if (!isDigest(digest)) throw new ImageError("IMPORT_INVALID", `invalid digest ${JSON.stringify(digest)}`);
  return `blobs/sha256/${digest.slice(7)}`;
};

async function readBlobJson(src: Source, d: Descriptor): Promise<{ bytes: Uint8Array; json: any }> {
  const r = await readJson(src, blobPath(d.digest));
  if (`sha256:${sha256Hex(r.bytes)}` !== d.digest)
    throw new ImageError("DIGEST_MISMATCH", `${src.name}: blob ${d.digest} does not match its digest`);
  return r;
}

/**
 * Imports an OCI layout directory, an OCI archive or a `docker save` archive.
 *
 *   const { record } = await importImage("./image.tar", { tag: "myapp:dev" });
 */
export async function importImage(path: string, opts: ImportOptions = {}): Promise<ImportResult> {
  const store = opts.store ?? new ImageStore();
  if (!existsSync(path)) throw new ImageError("IMPORT_INVALID", `${path} does not exist`);
  const tagRef = opts.tag ? parseReference(opts.tag) : undefined;
  let cleanup: string | undefined;
  try {
    let src: Source;
    if (statSync(path).isDirectory()) src = dirSource(path);
    else {
      let tarPath = path;
      const head = new Uint8Array(await Bun.file(path).slice(0, 4).arrayBuffer());
      if ((head[0] === 0x1f && head[1] === 0x8b) || (head[0] === 0x28 && head[1] === 0xb5 && head[2] === 0x2f && head[3] === 0xfd)) {
        // A compressed archive cannot be read by offset: decompress it once into tmp/.
        cleanup = store.makeTemp("import");
        tarPath = join(cleanup, "archive.tar");
        const fmt = head[0] === 0x1f ? "gzip" : ("zstd" as ConstructorParameters<typeof DecompressionStream>[0]);
        await Bun.write(tarPath, new Response(Bun.file(path).stream().pipeThrough(new DecompressionStream(fmt) as unknown as TransformStream<Uint8Array, Uint8Array>)));
      }
      src = await tarSource(tarPath);
    }
    try {
      if (src.has("manifest.json")) return await importDockerSave(src, store, tagRef, opts);
      if (src.has("index.json")) return await importOciLayout(src, store, tagRef, opts);
    } catch (err) {
      throw withContext(err, `importing ${path}`);
    }
    throw new ImageError("IMPORT_INVALID", `${path} is neither an OCI image layout (no index.json) nor a docker save archive (no manifest.json)`);
  } finally {
    if (cleanup) rmSync(cleanup, { recursive: true, force: true });
  }
}

async function importOciLayout(src: Source, store: ImageStore, tagRef: ImageRef | undefined, opts: ImportOptions): Promise<ImportResult> {
  const { json: index } = await readJson(src, "index.json");
  const entries: any[] = Array.isArray(index.manifests) ? index.manifests : [];
  if (entries.length === 0) throw new ImageError("IMPORT_INVALID", `${src.name}: index.json lists no images`);
  let desc: Descriptor & { annotations?: Record<string, string> } = entries[0];
  if (entries.length > 1) {
    const wanted = tagRef?.tag;
    const named = entries.find((e) => {
      const n = e.annotations?.["org.opencontainers.image.ref.name"];
      return n && wanted && (n === wanted || n.endsWith(`:${wanted}`));
    });
    const amd = entries.filter((e) => !e.platform || (e.platform.os === "linux" && e.platform.architecture === "amd64"));
    if (named) desc = named;
    else if (amd.length === 1) desc = amd[0];
    else throw new ImageError("IMPORT_INVALID", `${src.name}: the layout holds ${entries.length} images; pick one with --tag <name:tag> matching its org.opencontainers.image.ref.name`);
  }
  const refName = desc.annotations?.["org.opencontainers.image.ref.name"];
  for (let depth = 0; desc.mediaType === MediaType.OciIndex || desc.mediaType === MediaType.DockerList; depth++) {
    if (depth > 4) throw new ImageError("IMPORT_INVALID", `${src.name}: indexes nested too deep`);
    const { json } = await readBlobJson(src, desc);
    desc = selectPlatform(json, src.name);
  }
  const { bytes: mbytes, json: manifest } = await readBlobJson(src, desc);
  const { bytes: cbytes } = await readBlobJson(src, manifest.config);
  const config = parseConfig(cbytes, src.name);
  const layers: Descriptor[] = manifest.layers ?? [];
  if (layers.length !== config.rootfs.diff_ids.length)
    throw new ImageError("MANIFEST_INVALID", `${src.name}: manifest has ${layers.length} layers, config ${config.rootfs.diff_ids.length} diff_ids`);
  for (const l of layers) if (!LAYER_MEDIA_TYPES.has(l.mediaType)) throw new ImageError("UNSUPPORTED_MEDIA_TYPE", `${src.name}: layer ${l.digest} has media type ${l.mediaType}`);
  const refs: ImageRef[] = [];
  if (tagRef) refs.push(tagRef);
  else if (refName) {
    try {
      refs.push(parseReference(refName.includes("/") || refName.includes(":") ? refName : `localhost/${basename(src.name).replace(/\.tar$/, "").toLowerCase().replace(/[^a-z0-9._-]/g, "-")}:${refName}`));
    } catch {}
  }
  const record = await convertLayers(src, store, `sha256:${sha256Hex(mbytes)}`, manifest.config.digest, config, layers.map((l, i) => ({
    path: blobPath(l.digest), desc: l, diffId: config.rootfs.diff_ids[i],
  })), refs, opts);
  return { record, references: refs.map(formatReference) };
}

async function importDockerSave(src: Source, store: ImageStore, tagRef: ImageRef | undefined, opts: ImportOptions): Promise<ImportResult> {
  const { json: list } = await readJson(src, "manifest.json");
  if (!Array.isArray(list) || list.length === 0) throw new ImageError("IMPORT_INVALID", `${src.name}: manifest.json lists no images`);
  let entry = list[0];
  if (list.length > 1) {
    const want = tagRef ? formatReference(tagRef) : undefined;
    entry = list.find((e: any) => (e.RepoTags ?? []).some((t: string) => { try { return formatReference(parseReference(t)) === want; } catch { return false; } }));
    if (!entry) throw new ImageError("IMPORT_INVALID", `${src.name}: the archive holds ${list.length} images; pick one with --tag matching one of its RepoTags`);
  }
  if (typeof entry.Config !== "string" || !Array.isArray(entry.Layers)) throw new ImageError("IMPORT_INVALID", `${src.name}: manifest.json entry lacks Config or Layers`);
  const { bytes: cbytes } = await readJson(src, entry.Config);
  const config = parseConfig(cbytes, src.name);
  const configDigest = `sha256:${sha256Hex(cbytes)}`;
  if (entry.Layers.length !== config.rootfs.diff_ids.length)
    throw new ImageError("MANIFEST_INVALID", `${src.name}: manifest.json has ${entry.Layers.length} layers, config ${config.rootfs.diff_ids.length} diff_ids`);
  const refs: ImageRef[] = tagRef ? [tagRef] : [];
  if (!tagRef) for (const t of entry.RepoTags ?? []) { try { refs.push(parseReference(t)); } catch {} }
  // docker save has no manifest; the id is the digest of the OCI manifest that would describe it.
  const layers = entry.Layers.map((p: string, i: number) => ({
    path: p,
    desc: { mediaType: "application/vnd.oci.image.layer.v1.tar", digest: undefined as unknown as string, size: -1 },
    diffId: config.rootfs.diff_ids[i] as string,
  }));
  const manifest = JSON.stringify({
    schemaVersion: 2,
    mediaType: MediaType.OciManifest,
    config: { mediaType: MediaType.OciConfig, digest: configDigest, size: cbytes.byteLength },
    layers: layers.map((l: any, i: number) => ({ mediaType: "application/vnd.oci.image.layer.v1.tar", digest: l.diffId, size: src.size(entry.Layers[i]) })),
  });
  const record = await convertLayers(src, store, `sha256:${sha256Hex(new TextEncoder().encode(manifest))}`, configDigest, config, layers, refs, opts);
  return { record, references: refs.map(formatReference) };
}

async function convertLayers(
  src: Source, store: ImageStore, id: string, configDigest: string, config: any,
  layers: { path: string; desc: Descriptor; diffId: string }[], refs: ImageRef[], opts: ImportOptions,
): Promise<ImageRecord> {
  const name = refs[0] ? formatReference(refs[0]) : id;
  opts.onProgress?.({ kind: "resolved", image: name, id, layers: layers.length, totalBytes: layers.reduce((s, l) => s + Math.max(0, l.desc.size), 0) });
  const staging = store.makeTemp("import");
  try {
    const staged = new Map<string, string>();
    const records: LayerRecord[] = [];
    for (const [i, l] of layers.entries()) {
      const where = `layer ${i + 1}/${layers.length} (${l.path})`;
      if (!src.has(l.path)) throw new ImageError("IMPORT_INVALID", `${src.name}: ${where} is missing from the archive`);
      if (store.hasLayer(l.diffId) && store.list().some((s) => store.record(s.id).layers.some((x) => x.diffId === l.diffId))) {
        const existing = store.list().flatMap((s) => store.record(s.id).layers).find((x) => x.diffId === l.diffId)!;
        records.push({ ...existing, digest: l.desc.digest, mediaType: l.desc.mediaType, size: l.desc.size >= 0 ? l.desc.size : undefined });
        opts.onProgress?.({ kind: "layer", image: name, index: i, digest: l.diffId, status: "cached", downloaded: 0, total: 0 });
        continue;
      }
      const out = join(staging, `${i}.erofs`);
      try {
        const rec = await convertBlob(src.stream(l.path), l.desc, l.diffId, out, opts.limits, (n) =>
          opts.onProgress?.({ kind: "layer", image: name, index: i, digest: l.desc.digest ?? l.diffId, status: "downloading", downloaded: n, total: l.desc.size }));
        if (rec.digest === undefined) delete rec.digest;
        if (rec.size === -1) delete rec.size;
        records.push(rec);
        staged.set(rec.diffId, out);
      } catch (err) {
        throw withContext(err, where);
      }
      opts.onProgress?.({ kind: "layer", image: name, index: i, digest: l.desc.digest ?? l.diffId, status: "done", downloaded: 0, total: 0 });
    }
    const record: ImageRecord = { id, configDigest, config, layers: records, source: `import:${src.name}`, createdAt: new Date().toISOString() };
    store.publish(record, staged, refs);
    opts.onProgress?.({ kind: "done", image: name, id, reused: false });
    return record;
  } finally {
    rmSync(staging, { recursive: true, force: true });
  }
}

/**
 * Makes a one-layer image from a plain root-filesystem tar (for the embedded default root).
 *
 *   await importRootfs(Bun.file("rootfs.tar").stream(), "msb/default:1", { cmd: ["/bin/sh"] });
 */
export async function importRootfs(
  tar: ReadableStream<Uint8Array>, tag: string, runtime: RuntimeConfig = {}, opts: Omit<ImportOptions, "tag"> & { source?: string } = {},
): Promise<ImageRecord> {
  const store = opts.store ?? new ImageStore();
  const ref = parseReference(tag);
  const staging = store.makeTemp("rootfs");
  try {
    const out = join(staging, "layer.erofs");
    const layer = await convertBlob(tar, { mediaType: "application/vnd.oci.image.layer.v1.tar", digest: undefined as unknown as string, size: -1 }, undefined, out, opts.limits);
    delete layer.digest;
    delete layer.size;
    const config = {
      architecture: "amd64",
      os: "linux",
      config: {
        ...(runtime.entrypoint ? { Entrypoint: runtime.entrypoint } : {}),
        ...(runtime.cmd ? { Cmd: runtime.cmd } : {}),
        ...(runtime.env ? { Env: runtime.env } : {}),
        ...(runtime.workingDir ? { WorkingDir: runtime.workingDir } : {}),
        ...(runtime.user ? { User: runtime.user } : {}),
      },
      rootfs: { type: "layers", diff_ids: [layer.diffId] },
    };
    const cbytes = new TextEncoder().encode(JSON.stringify(config));
    const configDigest = `sha256:${sha256Hex(cbytes)}`;
    const manifest = JSON.stringify({
      schemaVersion: 2, mediaType: MediaType.OciManifest,
      config: { mediaType: MediaType.OciConfig, digest: configDigest, size: cbytes.byteLength },
      layers: [{ mediaType: "application/vnd.oci.image.layer.v1.tar", digest: layer.diffId, size: layer.tarBytes }],
    });
    const record: ImageRecord = {
      id: `sha256:${sha256Hex(new TextEncoder().encode(manifest))}`,
      configDigest, config, layers: [layer], source: opts.source ?? `rootfs:${formatReference(ref)}`, createdAt: new Date().toISOString(),
    };
    store.publish(record, new Map([[layer.diffId, out]]), [ref]);
    return record;
  } finally {
    rmSync(staging, { recursive: true, force: true });
  }
}
