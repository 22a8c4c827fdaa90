// Errors raised by the image subsystem: one class with a stable `code`, a message that names the
// image and layer involved and says what to do, and the native `cause` when there is one.

export type ImageErrorCode =
  | "BAD_REFERENCE"
  | "TAR_INVALID"
  | "TAR_UNSAFE_PATH"
  | "TAR_LIMIT"
  | "EROFS_LIMIT"
  | "DIGEST_MISMATCH"
  | "SIZE_MISMATCH"
  | "TRUNCATED"
  | "UNSUPPORTED_MEDIA_TYPE"
  | "NO_MATCHING_PLATFORM"
  | "MANIFEST_INVALID"
  | "UNAUTHORIZED"
  | "NOT_FOUND"
  | "RATE_LIMITED"
  | "REGISTRY_ERROR"
  | "NETWORK"
  | "TIMEOUT"
  | "NOT_IN_STORE"
  | "IN_USE"
  | "LOCKED"
  | "IMPORT_INVALID"
  | "IO";

export class ImageError extends Error {
  readonly code: ImageErrorCode;
  constructor(code: ImageErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "ImageError";
    this.code = code;
  }
}

/** Prefixes an error's message with where it happened (image, layer), keeping its code. */
export function withContext(err: unknown, context: string): Error {
  if (err instanceof ImageError) {
    if (err.message.startsWith(context)) return err;
    const e = new ImageError(err.code, `${context}: ${err.message}`, { cause: err.cause ?? err });
    return e;
  }
  // Anything else is the host's doing (disk full, permissions): say so rather than blame the registry.
  const msg = err instanceof Error ? err.message : String(err);
  return new ImageError("IO", `${context}: ${msg}`, { cause: err });
}
