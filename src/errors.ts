// Errors msb reports to users: a stable `code` to branch on and a message that says what went
// wrong and what to do about it.

export class MsbError extends Error {
  constructor(
    readonly code: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = "MsbError";
  }
}
