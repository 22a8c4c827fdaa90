// Parses image references the way Docker does: `python` → docker.io/library/python:latest,
// `ghcr.io/o/r:tag`, `localhost:5000/x@sha256:…`, and gives back the canonical form.

import { ImageError } from "./errors.ts";

export const DOCKER_HUB = "docker.io";
/** Where Docker Hub's registry API actually answers. */
export const DOCKER_HUB_API = "registry-1.docker.io";

export interface ImageRef {
  /** Registry host[:port], normalised (index.docker.io → docker.io). */
  registry: string;
  /** Repository path, e.g. library/python. */
  repository: string;
  /** Tag; "latest" when neither tag nor digest was given. */
  tag?: string;
  /** Digest (sha256:<64 hex>) when pinned. */
  digest?: string;
}

const COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;
const DIGEST = /^sha256:[a-f0-9]{64}$/;
const HOST = /^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*(?::[0-9]{1,5})?$|^\[[0-9a-fA-F:.]+\](?::[0-9]{1,5})?$/;

export function isDigest(s: string): boolean {
  return DIGEST.test(s);
}

export function parseReference(input: string): ImageRef {
  const bad = (why: string) =>
    new ImageError("BAD_REFERENCE", `invalid image reference ${JSON.stringify(input)}: ${why} (expected e.g. python:3.12, ghcr.io/org/app@sha256:…, localhost:5000/x)`);
  const s = input.trim();
  if (!s || s.length > 512) throw bad(s ? "too long" : "empty");
  let rest = s;
  let digest: string | undefined;
  const at = rest.indexOf("@");
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!DIGEST.test(digest)) throw bad(`digest ${JSON.stringify(digest)} is not sha256:<64 lowercase hex>`);
  }
  let tag: string | undefined;
  const slash = rest.lastIndexOf("/");
  const colon = rest.lastIndexOf(":");
  if (colon > slash) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG.test(tag)) throw bad(`tag ${JSON.stringify(tag)} is not valid`);
  }
  const parts = rest.split("/");
  let registry = DOCKER_HUB;
  if (parts.length > 1 && (parts[0]!.includes(".") || parts[0]!.includes(":") || parts[0] === "localhost" || parts[0] !== parts[0]!.toLowerCase())) {
    registry = parts.shift()!;
    if (!HOST.test(registry)) throw bad(`registry ${JSON.stringify(registry)} is not a host[:port]`);
  }
  if (registry === "index.docker.io" || registry === "registry-1.docker.io") registry = DOCKER_HUB;
  if (parts.length === 0 || parts.some((p) => !COMPONENT.test(p)))
    throw bad("repository names are lowercase letters, digits and separators (. _ __ -) between slashes");
  if (registry === DOCKER_HUB && parts.length === 1) parts.unshift("library");
  const repository = parts.join("/");
  if (repository.length > 255) throw bad("repository name too long");
  if (!tag && !digest) tag = "latest";
  return { registry, repository, tag, digest };
}

/** Canonical text: registry/repository[:tag][@digest]. */
export function formatReference(r: ImageRef): string {
  return `${r.registry}/${r.repository}${r.tag ? `:${r.tag}` : ""}${r.digest ? `@${r.digest}` : ""}`;
}

/** Short text for display: drops docker.io/library/ like `docker images` does. */
export function displayReference(r: ImageRef): string {
  let name = `${r.registry}/${r.repository}`;
  if (r.registry === DOCKER_HUB) name = r.repository.startsWith("library/") ? r.repository.slice(8) : r.repository;
  return `${name}${r.tag ? `:${r.tag}` : ""}${r.digest ? `@${r.digest}` : ""}`;
}

/** Host the registry API is reached at. */
export function apiHost(registry: string): string {
  return registry === DOCKER_HUB ? DOCKER_HUB_API : registry;
}
