// Pulls an image from a registry into the store: resolve the reference to a linux/amd64
// manifest, fetch and check the config, then stream every layer (several at once) through
// digest check → decompression → diff_id check → EROFS writer, into a staging directory that is
// published by rename only when every layer is good.

import { closeSync, existsSync, fstatSync, openSync, readFileSync, renameSync, rmSync, statSync, writeFileSync, writeSync } from "node:fs";
import { join } from "node:path";
import { findCredentials, type Credentials } from "./auth.ts";
import { ImageError, withContext } from "./errors.ts";
import { sha256Stream, type Sha256Stream } from "./hasher.ts";
import { DEFAULT_IMAGE, ensureDefaultImage } from "./default.ts";
import { flattenImage, type FlattenStats } from "./flatten.ts";
import { tarToErofs } from "./layer.ts";
import { resolveImageUser } from "./user.ts";
import { formatReference, isDigest, parseReference, type ImageRef } from "./reference.ts";
import {
  contentRangeStart, LAYER_MEDIA_TYPES, MediaType, readBounded, RegistryClient, selectPlatform, sha256Hex,
  type Descriptor, type RegistryOptions,
} from "./registry.ts";
import { ImageStore, LAYER_FORMAT, fileChecksum, type GuestRoot, type ImageRecord, type LayerRecord } from "./store.ts";
import { DEFAULT_TAR_LIMITS, type TarLimits } from "./tar.ts";

export type PullPolicy = "always" | "if-missing" | "never";
export const PULL_POLICIES: readonly PullPolicy[] = ["always", "if-missing", "never"];

export type PullEvent =
  | { kind: "resolved"; image: string; id: string; layers: number; totalBytes: number }
  | { kind: "layer"; image: string; index: number; digest: string; status: "cached" | "downloading" | "done"; downloaded: number; total: number }
  | { kind: "retry"; image: string; index: number; digest: string; attempt: number; error: string }
  | { kind: "resume"; image: string; index: number; digest: string; from: number; total: number }
  | { kind: "done"; image: string; id: string; reused: boolean };

export interface PullOptions {
  store?: ImageStore;
  policy?: PullPolicy;
  /** Plain HTTP (see RegistryOptions.insecure). */
  insecure?: boolean;
  /** Overrides the saved credentials. */
  credentials?: Credentials;
  /** Layers downloaded at once. */
  concurrency?: number;
  onProgress?: (e: PullEvent) => void;
  /** Retries/timeouts of the registry client. */
  registry?: Pick<RegistryOptions, "attempts" | "backoffMs" | "timeoutMs">;
  limits?: TarLimits;
  /** Largest compressed layer accepted. */
  maxLayerBytes?: number;
  /**
   * Most layer disks the VM can take. An image with more has its layers merged into one EROFS
   * (see flatten.ts), cached by image id: pullImage makes it right after the pull (so the first
   * run does not wait for it), ensureImage on first use if it is not there yet and returns it.
   */
  maxLayers?: number;
  /** Called when a flattened image had to be made (not when it was cached). */
  onFlatten?: (s: FlattenStats) => void;
}

const MAX_CONFIG_BYTES = 8 << 20;
export const DEFAULT_MAX_LAYER_BYTES = 32 * 2 ** 30;
const GZIP = [0x1f, 0x8b];
const ZSTD = [0x28, 0xb5, 0x2f, 0xfd];

/**
 * Makes an image available locally according to the pull policy and returns its record.
 *
 *   const rec = await pullImage("python:3.12-slim", { onProgress: (e) => console.log(e) });
 */
export async function pullImage(input: string, opts: PullOptions = {}): Promise<ImageRecord> {
  const store = opts.store ?? new ImageStore();
  const rec = await pullRecord(input, store, opts);
  if (opts.maxLayers !== undefined && rec.layers.length > Math.max(1, opts.maxLayers)) {
    try {
      await flattenImage(store, rec.id, opts.onFlatten);
    } catch (err) {
      throw withContext(err, `pulling ${formatReference(parseReference(input))}`);
    }
  }
  return rec;
}

async function pullRecord(input: string, store: ImageStore, opts: PullOptions): Promise<ImageRecord> {
  const policy = opts.policy ?? "always";
  const ref = parseReference(input);
  const name = formatReference(ref);
  const local = store.resolve(input);
  if (policy === "never") {
    if (!local) throw new ImageError("NOT_IN_STORE", `image ${name} is not in the local store and the pull policy is never; run msb pull ${input}`);
    return store.record(local);
  }
  if (local && (policy === "if-missing" || ref.digest)) {
    opts.onProgress?.({ kind: "done", image: name, id: local, reused: true });
    return store.record(local);
  }

  const client = new RegistryClient(ref.registry, ref.repository, {
    insecure: opts.insecure,
    credentials: opts.credentials ?? findCredentials(ref.registry),
    ...opts.registry,
  });
  try {
    return await pullFrom(client, ref, name, store, opts);
  } catch (err) {
    throw withContext(err, `pulling ${name}`);
  }
}

/** With `maxLayers`, an image with more layers comes back with one: all of them merged. */
export type EnsureOptions = PullOptions;

/** Pull-policy aware lookup of what the guest needs to boot an image. */
export async function ensureImage(input: string, opts: EnsureOptions = {}): Promise<GuestRoot> {
  const store = opts.store ?? new ImageStore();
  // The default image is never pulled: it is made from msb's embedded root (again after an rmi).
  if (formatReference(parseReference(input)) === DEFAULT_IMAGE) return ensureDefaultImage({ store });
  const rec = await pullImage(input, { ...opts, store, policy: opts.policy ?? "if-missing", maxLayers: undefined });
  const root = store.guestRoot(rec.id);
  if (root.config.user !== undefined) root.config.userIds = resolveImageUser(root.layers, root.config.user, `image ${input}`);
  if (opts.maxLayers !== undefined && root.layers.length > Math.max(1, opts.maxLayers))
    return { ...root, layers: [await flattenImage(store, rec.id, opts.onFlatten)] };
  return root;
}

async function pullFrom(client: RegistryClient, ref: ImageRef, name: string, store: ImageStore, opts: PullOptions): Promise<ImageRecord> {
  let m = await client.manifest(ref.digest ?? ref.tag!);
  if (m.mediaType === MediaType.OciIndex || m.mediaType === MediaType.DockerList || (!m.mediaType && Array.isArray(m.json.manifests))) {
    const desc = selectPlatform(m.json, name);
    if (!isDigest(desc.digest)) throw new ImageError("MANIFEST_INVALID", `${name}: index entry has an invalid digest`);
    m = await client.manifest(desc.digest);
  }
  if (m.mediaType !== MediaType.OciManifest && m.mediaType !== MediaType.DockerManifest && !(m.json.config && m.json.layers))
    throw new ImageError("UNSUPPORTED_MEDIA_TYPE", `${name}: manifest media type ${JSON.stringify(m.mediaType)} is not an image manifest`);
  const manifest = m.json;
  const id = m.digest;
  const refs = [ref.digest ? { ...ref, tag: undefined } : ref];

  if (store.hasRecord(id)) {
    const rec = store.record(id);
    if (rec.layers.every((l) => store.hasLayer(l.diffId))) {
      store.publish(rec, new Map(), refs);
      opts.onProgress?.({ kind: "done", image: name, id, reused: true });
      return rec;
    }
  }

  // One pull per image at a time in this process; later callers share its result.
  const key = `${store.root}\0${id}`;
  const running = inflight.get(key);
  if (running) {
    const rec = await running;
    store.publish(rec, new Map(), refs);
    return rec;
  }
  const work = pullLayers(client, store, name, id, manifest, refs, opts);
  inflight.set(key, work);
  try {
    return await work;
  } finally {
    inflight.delete(key);
  }
}

const inflight = new Map<string, Promise<ImageRecord>>();

async function pullLayers(client: RegistryClient, store: ImageStore, name: string, id: string, manifest: any, refs: ImageRef[], opts: PullOptions): Promise<ImageRecord> {
  const layers = validateManifest(manifest, name, opts.maxLayerBytes ?? DEFAULT_MAX_LAYER_BYTES);
  const configDesc: Descriptor = manifest.config;
  const cres = await client.blob(configDesc.digest, "config");
  const configBytes = await readBounded(cres, MAX_CONFIG_BYTES, () => `${name}: image config larger than ${MAX_CONFIG_BYTES} bytes`);
  if (`sha256:${sha256Hex(configBytes)}` !== configDesc.digest)
    throw new ImageError("DIGEST_MISMATCH", `${name}: image config does not match its digest ${configDesc.digest}`);
  const config = parseConfig(configBytes, name);
  const diffIds: string[] = config.rootfs.diff_ids;
  if (diffIds.length !== layers.length)
    throw new ImageError("MANIFEST_INVALID", `${name}: manifest lists ${layers.length} layers but the config lists ${diffIds.length} diff_ids`);
  if (config.architecture && config.architecture !== "amd64")
    throw new ImageError("NO_MATCHING_PLATFORM", `${name}: image is for ${config.os ?? "?"}/${config.architecture}, msb runs linux/amd64`);

  opts.onProgress?.({ kind: "resolved", image: name, id, layers: layers.length, totalBytes: layers.reduce((s, l) => s + l.size, 0) });
  const staging = await openStagingWaiting(store, id, name);
  if (store.hasRecord(id)) {
    // Another msb finished this very image while we waited for it.
    const rec = store.record(id);
    if (rec.layers.every((l) => store.hasLayer(l.diffId))) {
      store.publish(rec, new Map(), refs);
      rmSync(staging, { recursive: true, force: true });
      opts.onProgress?.({ kind: "done", image: name, id, reused: true });
      return rec;
    }
  }
  const staged = new Map<string, string>();
  const records: LayerRecord[] = new Array(layers.length);

  // The same layer may appear twice in one image; it is converted once, by the first job.
  const firstJob = new Map<string, Promise<void>>();
  const jobs = layers.map((desc, index) => async () => {
    const diffId = diffIds[index]!;
    const earlier = firstJob.get(diffId);
    if (earlier) {
      await earlier;
      const i = diffIds.indexOf(diffId);
      records[index] = { ...records[i]!, digest: desc.digest, mediaType: desc.mediaType, size: desc.size };
      opts.onProgress?.({ kind: "layer", image: name, index, digest: desc.digest, status: "cached", downloaded: desc.size, total: desc.size });
      return;
    }
    let done!: () => void;
    let failed!: (e: unknown) => void;
    const mine = new Promise<void>((res, rej) => { done = res; failed = rej; });
    mine.catch(() => {});
    firstJob.set(diffId, mine);
    try {
      await convertOne(desc, index, diffId);
      done();
    } catch (err) {
      failed(err);
      throw err;
    }
  });
  const convertOne = async (desc: Descriptor, index: number, diffId: string) => {
    const where = `layer ${index + 1}/${layers.length} (${desc.digest})`;
    const out = join(staging, `${diffId.slice(7)}.erofs`);
    const meta = join(staging, `${diffId.slice(7)}.json`);
    const published = store.hasLayer(diffId);
    if (published || (existsSync(out) && existsSync(meta))) {
      const rec = published ? await layerRecordFromStore(store, diffId, desc) : (JSON.parse(readFileSync(meta, "utf8")) as LayerRecord);
      if (rec.format === LAYER_FORMAT) {
        records[index] = rec;
        if (!published) staged.set(diffId, out);
        opts.onProgress?.({ kind: "layer", image: name, index, digest: desc.digest, status: "cached", downloaded: desc.size, total: desc.size });
        return;
      }
    }
    const attempts = Math.max(1, opts.registry?.attempts ?? 4);
    for (let attempt = 1; ; attempt++) {
      try {
        records[index] = await fetchLayer(client, desc, diffId, out, join(staging, `${desc.digest.slice(7)}.blob.partial`), where, { ...opts, onProgress: (e) => opts.onProgress?.(e.kind === "resume" ? { ...e, image: name, index } : e) }, (downloaded) =>
          opts.onProgress?.({ kind: "layer", image: name, index, digest: desc.digest, status: "downloading", downloaded, total: desc.size }));
        break;
      } catch (err) {
        rmSync(out, { force: true });
        const code = (err as ImageError).code;
        const transient = code === "NETWORK" || code === "TIMEOUT" || code === "REGISTRY_ERROR" || code === "RATE_LIMITED" || code === "TRUNCATED";
        if (!transient || attempt >= attempts) throw withContext(err, where);
        opts.onProgress?.({ kind: "retry", image: name, index, digest: desc.digest, attempt, error: (err as Error).message });
        await Bun.sleep((opts.registry?.backoffMs ?? 500) * 2 ** (attempt - 1));
      }
    }
    writeFileSync(meta + ".tmp", JSON.stringify(records[index]));
    renameSync(meta + ".tmp", meta);
    staged.set(diffId, out);
    opts.onProgress?.({ kind: "layer", image: name, index, digest: desc.digest, status: "done", downloaded: desc.size, total: desc.size });
  };
  await runPool(jobs, opts.concurrency ?? 3);

  const record: ImageRecord = {
    id,
    configDigest: configDesc.digest,
    config,
    layers: records,
    source: name,
    createdAt: new Date().toISOString(),
  };
  store.publish(record, staged, refs);
  rmSync(staging, { recursive: true, force: true });
  opts.onProgress?.({ kind: "done", image: name, id, reused: false });
  return record;
}

/** Two msb processes pulling one image: the second waits for the first instead of failing. */
async function openStagingWaiting(store: ImageStore, id: string, name: string, maxWaitMs = 30 * 60_000): Promise<string> {
  const deadline = Date.now() + maxWaitMs;
  for (;;) {
    try {
      return store.openStaging(id.slice(7), name);
    } catch (err) {
      if (!(err instanceof ImageError) || err.code !== "LOCKED" || Date.now() > deadline) throw err;
      await Bun.sleep(250);
    }
  }
}

async function layerRecordFromStore(store: ImageStore, diffId: string, desc: Descriptor): Promise<LayerRecord> {
  // Another image already published this layer; its record there has the EROFS digest.
  for (const s of store.list()) {
    const l = store.record(s.id).layers.find((x) => x.diffId === diffId);
    if (l) return { ...l, digest: desc.digest, mediaType: desc.mediaType, size: desc.size };
  }
  const p = store.layerPath(diffId);
  return { digest: desc.digest, mediaType: desc.mediaType, size: desc.size, diffId, erofsSize: statSync(p).size, erofsChecksum: fileChecksum(p), tarBytes: 0, format: LAYER_FORMAT };
}

function validateManifest(manifest: any, name: string, maxLayerBytes: number): Descriptor[] {
  const bad = (why: string) => new ImageError("MANIFEST_INVALID", `${name}: invalid manifest: ${why}`);
  if (!manifest.config || !isDigest(manifest.config.digest)) throw bad("config descriptor missing or without a sha256 digest");
  if (!Array.isArray(manifest.layers) || manifest.layers.length === 0) throw bad("no layers");
  if (manifest.layers.length > 1000) throw bad(`${manifest.layers.length} layers is absurd`);
  return manifest.layers.map((l: any, i: number) => {
    if (!l || !isDigest(l.digest)) throw bad(`layer ${i + 1} has no sha256 digest`);
    if (!Number.isSafeInteger(l.size) || l.size < 0) throw bad(`layer ${i + 1} has an invalid size`);
    if (l.size > maxLayerBytes) throw new ImageError("TAR_LIMIT", `${name}: layer ${i + 1} (${l.digest}) claims ${l.size} bytes, over the ${maxLayerBytes}-byte limit`);
    if (!LAYER_MEDIA_TYPES.has(l.mediaType)) throw new ImageError("UNSUPPORTED_MEDIA_TYPE", `${name}: layer ${i + 1} (${l.digest}) has media type ${JSON.stringify(l.mediaType)}, which msb cannot unpack`);
    return l as Descriptor;
  });
}

export function parseConfig(bytes: Uint8Array, name: string): any {
  let config: any;
  try {
    config = JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    throw new ImageError("MANIFEST_INVALID", `${name}: image config is not JSON`);
  }
  const ids = config?.rootfs?.diff_ids;
  if (!Array.isArray(ids) || !ids.every(isDigest))
    throw new ImageError("MANIFEST_INVALID", `${name}: image config has no valid rootfs.diff_ids`);
  if (config.os && config.os !== "linux") throw new ImageError("NO_MATCHING_PLATFORM", `${name}: image is for ${config.os}, msb runs Linux images`);
  return config;
}

/**
 * Streams one layer blob into an EROFS file, checking size, digest and diff_id on the way.
 *
 * The compressed bytes are also appended to `spool` as they arrive, so that a download cut off
 * midway resumes (in this pull's next attempt, or the next pull) with an HTTP Range request for
 * the rest: the conversion then reads the spooled part from disk, then the network. Digests are
 * computed over the whole blob either way. A registry that ignores the range (200) or refuses it
 * (416) gets a full download; a spool whose blob turned out bad is deleted.
 */
async function fetchLayer(
  client: RegistryClient, desc: Descriptor, diffId: string, out: string, spool: string, where: string, opts: PullOptions,
  progress: (n: number) => void,
): Promise<LayerRecord> {
  let have = existsSync(spool) ? statSync(spool).size : 0;
  if (have > desc.size) have = 0;
  let res: Response | undefined;
  if (have > 0 && have < desc.size) {
    res = await client.blob(desc.digest, where, have);
    if (res.status === 206 && contentRangeStart(res) === have) {
      opts.onProgress?.({ kind: "resume", image: "", index: -1, digest: desc.digest, from: have, total: desc.size });
    } else if (res.status === 200) {
      have = 0; // the registry ignored the range: this is the whole blob
    } else {
      await res.body?.cancel().catch(() => {});
      have = 0;
      res = undefined; // 416 or a Content-Range that is not what we asked: download it whole
    }
  }
  if (have < desc.size && !res) res = await client.blob(desc.digest, where);
  const fd = openSync(spool, have > 0 ? "a" : "w", 0o600);
  try {
    let body: ReadableStream<Uint8Array>;
    if (res) {
      const network = res.body!.pipeThrough(new TransformStream<Uint8Array, Uint8Array>({
        transform(chunk, ctl) {
          writeAllSync(fd, chunk);
          ctl.enqueue(chunk);
        },
      }));
      body = have > 0 ? concatStreams(Bun.file(spool).slice(0, have).stream(), network) : network;
    } else {
      body = Bun.file(spool).slice(0, have).stream(); // the whole blob is already here
    }
    const rec = await convertBlob(body, desc, diffId, out, opts.limits, progress);
    rmSync(spool, { force: true });
    return rec;
  } catch (err) {
    const code = (err as ImageError).code;
    // Keep what arrived for the next attempt only when the transfer was cut short; a complete
    // blob that failed, or any other error, means the bytes themselves are suspect.
    const cut = (code === "NETWORK" || code === "TIMEOUT" || code === "TRUNCATED") && fstatSync(fd).size < desc.size;
    if (!cut) rmSync(spool, { force: true });
    throw err;
  } finally {
    closeSync(fd);
  }
}

function writeAllSync(fd: number, data: Uint8Array) {
  for (let off = 0; off < data.byteLength; ) off += writeSync(fd, data, off, data.byteLength - off);
}

function concatStreams(first: ReadableStream<Uint8Array>, second: ReadableStream<Uint8Array>): ReadableStream<Uint8Array> {
  let reader = first.getReader();
  let onSecond = false;
  return new ReadableStream<Uint8Array>({
    async pull(ctl) {
      for (;;) {
        const r = await reader.read();
        if (!r.done) return ctl.enqueue(r.value);
        if (onSecond) return ctl.close();
        onSecond = true;
        reader = second.getReader();
      }
    },
    cancel(reason) {
      return Promise.all([reader.cancel(reason), onSecond ? undefined : second.cancel(reason)]).then(() => {});
    },
  });
}

/**
 * Blob stream → EROFS file. Throws (and removes `out`) if the blob is not exactly `desc.size`
 * bytes with digest `desc.digest`, or its uncompressed tar does not hash to `diffId`.
 */
export async function convertBlob(
  body: ReadableStream<Uint8Array>, desc: Pick<Descriptor, "digest" | "size" | "mediaType">, diffId: string | undefined, out: string,
  limits: TarLimits = DEFAULT_TAR_LIMITS, progress?: (n: number) => void,
): Promise<LayerRecord> {
  // Hashing runs on worker threads, overlapping decompression and the EROFS writer.
  const blobHash = sha256Stream();
  let tarHash: Sha256Stream | undefined;
  try {
    return await convertHashed(body, desc, diffId, out, limits, progress, blobHash, (h) => (tarHash = h));
  } finally {
    blobHash.abort();
    (tarHash as Sha256Stream | undefined)?.abort();
  }
}

async function convertHashed(
  body: ReadableStream<Uint8Array>, desc: Pick<Descriptor, "digest" | "size" | "mediaType">, diffId: string | undefined, out: string,
  limits: TarLimits, progress: ((n: number) => void) | undefined, blobHash: Sha256Stream, setTarHash: (h: Sha256Stream) => void,
): Promise<LayerRecord> {
  let received = 0;
  let lastReport = 0;
  let blobDigest = "";
  const counted = networkErrors(body).pipeThrough(new TransformStream<Uint8Array, Uint8Array>({
    async transform(chunk, ctl) {
      received += chunk.byteLength;
      if (desc.size >= 0 && received > desc.size)
        throw new ImageError("SIZE_MISMATCH", `blob is larger than the ${desc.size} bytes its descriptor declares`);
      await blobHash.update(chunk);
      if (progress && received - lastReport > 256 << 10) { lastReport = received; progress(received); }
      ctl.enqueue(chunk);
    },
    async flush() {
      if (desc.size >= 0 && received < desc.size)
        throw new ImageError("TRUNCATED", `blob ended after ${received} of ${desc.size} bytes`);
      const got = `sha256:${await blobHash.digest()}`;
      blobDigest = got;
      if (desc.digest && got !== desc.digest) throw new ImageError("DIGEST_MISMATCH", `blob digest is ${got}, expected ${desc.digest}`);
    },
  }));
  // Pick the decompressor from the first bytes (media types are sometimes wrong).
  const reader = counted.getReader();
  const first = await reader.read();
  const magic = first.done ? new Uint8Array(0) : first.value;
  const isGzip = GZIP.every((b, i) => magic[i] === b);
  const isZstd = ZSTD.every((b, i) => magic[i] === b);
  let pending: Uint8Array | undefined = first.done ? undefined : first.value;
  const rest = new ReadableStream<Uint8Array>({
    async pull(ctl) {
      if (pending) {
        ctl.enqueue(pending);
        pending = undefined;
        return;
      }
      const r = await reader.read();
      if (r.done) ctl.close();
      else ctl.enqueue(r.value);
    },
    cancel(reason) {
      return reader.cancel(reason);
    },
  });
  let tar: ReadableStream<Uint8Array> = rest;
  if (isGzip) tar = rest.pipeThrough(new DecompressionStream("gzip") as unknown as TransformStream<Uint8Array, Uint8Array>);
  else if (isZstd) tar = rest.pipeThrough(new DecompressionStream("zstd" as ConstructorParameters<typeof DecompressionStream>[0]) as unknown as TransformStream<Uint8Array, Uint8Array>);
  // An uncompressed blob is its own tar: its digest is the diff_id, no second hash needed.
  const tarHash = !isGzip && !isZstd ? undefined : sha256Stream();
  if (tarHash) setTarHash(tarHash);
  const hashed = !tarHash ? tar : tar.pipeThrough(new TransformStream<Uint8Array, Uint8Array>({
    async transform(chunk, ctl) { await tarHash.update(chunk); ctl.enqueue(chunk); },
  }));
  let stats;
  try {
    stats = await tarToErofs(hashed, out, { limits });
  } catch (err) {
    rmSync(out, { force: true });
    if (err instanceof ImageError) throw err;
    const msg = (err as Error).message ?? String(err);
    throw new ImageError("TAR_INVALID", `cannot unpack layer (${isGzip ? "gzip" : isZstd ? "zstd" : "uncompressed"}): ${msg}`, { cause: err });
  }
  const gotDiff = !tarHash ? blobDigest : `sha256:${await tarHash.digest()}`;
  if (!gotDiff) throw new Error("layer stream ended without its digest being computed");
  if (diffId && gotDiff !== diffId) {
    rmSync(out, { force: true });
    throw new ImageError("DIGEST_MISMATCH", `uncompressed layer digest is ${gotDiff}, the image config says ${diffId}`);
  }
  const erofsChecksum = fileChecksum(out);
  progress?.(received);
  return {
    digest: desc.digest,
    mediaType: desc.mediaType,
    size: desc.size,
    diffId: gotDiff,
    erofsSize: stats.bytes,
    erofsChecksum,
    tarBytes: stats.tarBytes,
    format: LAYER_FORMAT,
  };
}

/** Turns a failing body read (connection reset mid-download) into a NETWORK error. */
function networkErrors(body: ReadableStream<Uint8Array>): ReadableStream<Uint8Array> {
  const reader = body.getReader();
  return new ReadableStream<Uint8Array>({
    async pull(ctl) {
      let r;
      try {
        r = await reader.read();
      } catch (err) {
        throw err instanceof ImageError ? err : new ImageError("NETWORK", `download interrupted: ${(err as Error).message ?? err}`, { cause: err });
      }
      if (r.done) ctl.close();
      else ctl.enqueue(r.value);
    },
    cancel(reason) {
      return reader.cancel(reason);
    },
  });
}

async function runPool(jobs: (() => Promise<void>)[], concurrency: number): Promise<void> {
  let next = 0;
  let failed: unknown;
  const worker = async () => {
    while (next < jobs.length && failed === undefined) {
      const job = jobs[next++]!;
      try {
        await job();
      } catch (err) {
        failed ??= err;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(concurrency, jobs.length)) }, worker));
  if (failed !== undefined) throw failed;
}
