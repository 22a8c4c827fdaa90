// Errors raised when bytes from the guest do not form a valid packet; callers drop the frame.

/** Why a packet was rejected. `code` is stable for tests and counters; `message` says what was wrong. */
export class WireError extends Error {
  constructor(
    readonly code: "truncated" | "malformed" | "checksum" | "unsupported",
    message: string,
  ) {
    super(message);
    this.name = "WireError";
  }
}

export const truncated = (what: string, need: number, have: number) =>
  new WireError("truncated", `${what}: need ${need} bytes, have ${have}`);
export const malformed = (what: string, why: string) => new WireError("malformed", `${what}: ${why}`);
export const badChecksum = (what: string) => new WireError("checksum", `${what}: checksum mismatch`);
export const unsupported = (what: string, why: string) => new WireError("unsupported", `${what}: ${why}`);
