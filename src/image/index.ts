// The image subsystem's public face, for the CLI (msb pull/images/rmi/image prune/image import,
// msb login) and the SDK: every function takes an optional store and reports typed ImageErrors.

import { findCredentials, removeCredentials, saveCredentials, type Credentials } from "./auth.ts";
import { ImageError } from "./errors.ts";
import { displayReference, parseReference } from "./reference.ts";
import { RegistryClient } from "./registry.ts";
import { ImageStore, type GuestRoot, type ImageSummary, type RemoveOptions, type RuntimeConfig } from "./store.ts";

export { ImageError, type ImageErrorCode } from "./errors.ts";
export { parseReference, formatReference, displayReference, type ImageRef } from "./reference.ts";
export { pullImage, ensureImage, PULL_POLICIES, type PullPolicy, type PullEvent, type PullOptions, type EnsureOptions } from "./pull.ts";
export { flattenImage, type FlattenStats } from "./flatten.ts";
export { parseImageUser, resolveImageUser, readFromLayers, type ImageUser, type ResolvedUser } from "./user.ts";
export { DEFAULT_IMAGE, DEFAULT_RUNTIME, defaultImageReference, ensureDefaultImage } from "./default.ts";
export { importImage, importRootfs, type ImportOptions, type ImportResult } from "./import.ts";
export { ImageStore, runtimeConfig, type GuestRoot, type ImageRecord, type ImageSummary, type RemoveOptions, type RuntimeConfig } from "./store.ts";
export { progressBars } from "./progress.ts";
export { findCredentials, type Credentials } from "./auth.ts";

export interface StoreOption {
  store?: ImageStore;
}

/** `msb images`: newest first; `references` in display form (python:3.12, not docker.io/library/…). */
export function listImages(opts: StoreOption = {}): (ImageSummary & { displayReferences: string[] })[] {
  return (opts.store ?? new ImageStore()).list().map((s) => ({
    ...s,
    displayReferences: s.references.map((r) => displayReference(parseReference(r))),
  }));
}

/** `msb rmi REF|ID`. */
export function removeImage(ref: string, opts: StoreOption & RemoveOptions = {}) {
  return (opts.store ?? new ImageStore()).remove(ref, opts);
}

/** `msb image prune`: unreferenced images, unused layers, abandoned pull/import work. */
export function pruneImages(opts: StoreOption & Pick<RemoveOptions, "inUse"> = {}) {
  return (opts.store ?? new ImageStore()).prune(opts);
}

/** `msb image inspect`: the stored record (config, layers with digests, diff_ids, sizes). */
export function inspectImage(ref: string, opts: StoreOption = {}) {
  return (opts.store ?? new ImageStore()).get(ref);
}

/** Re-checks an image's cached layer files; throws DIGEST_MISMATCH naming the changed file. */
export function verifyImage(ref: string, opts: StoreOption = {}): Promise<void> {
  return (opts.store ?? new ImageStore()).verify(ref);
}

/** What the VM needs to boot an image already in the store (see GuestRoot). */
export function imageRoot(ref: string, opts: StoreOption = {}): GuestRoot {
  return (opts.store ?? new ImageStore()).guestRoot(ref);
}

/** `msb login REGISTRY`: checks the credentials against the registry, then saves them. */
export async function login(registry: string, creds: Credentials, opts: { insecure?: boolean; home?: string } = {}): Promise<void> {
  const reg = parseReference(`${registry}/probe`).registry;
  const client = new RegistryClient(reg, "probe", { insecure: opts.insecure, credentials: creds, attempts: 2 });
  try {
    await client.ping();
  } catch (err) {
    if (err instanceof ImageError && err.code === "UNAUTHORIZED")
      throw new ImageError("UNAUTHORIZED", `login to ${reg} failed: the registry refused these credentials`, { cause: err });
    throw err;
  }
  saveCredentials(reg, creds, opts.home);
}

/** `msb logout REGISTRY`: returns whether credentials were saved. */
export function logout(registry: string, opts: { home?: string } = {}): boolean {
  return removeCredentials(parseReference(`${registry}/probe`).registry, opts.home);
}

/** Whether credentials (msb login or ~/.docker/config.json) exist for a registry. */
export function hasCredentials(registry: string): boolean {
  return findCredentials(registry) !== undefined;
}

/**
 * The argv a sandbox runs, Docker's way: user args replace Cmd (keeping Entrypoint); with no
 * args, Entrypoint + Cmd. Throws when the image defines nothing and no args are given.
 */
export function commandFor(config: RuntimeConfig, args: string[] = [], image = "the image"): string[] {
  const argv = [...(config.entrypoint ?? []), ...(args.length ? args : config.cmd ?? [])];
  if (argv.length === 0)
    throw new ImageError("MANIFEST_INVALID", `${image} has no Entrypoint or Cmd; give a command after --`);
  return argv;
}
