// Interactive commands on the user's terminal (`msb run`/`msb exec` when stdin and stdout are a
// TTY): the guest command gets a pseudo-terminal of our size, our terminal goes raw so every key
// (Ctrl-C included) reaches the guest, window changes follow, and Ctrl-P Ctrl-Q detaches.

import type { ExecProcess, ExitStatus } from "../agent/client";
import type { Sandbox, SpawnOptions } from "../sandbox";

/** Ctrl-P then Ctrl-Q, as Docker: detach, leaving the command running. */
export const DETACH_KEYS = Uint8Array.of(0x10, 0x11);

/** True when both ends are a terminal: then `msb run`/`exec` are interactive by default. */
export function isInteractiveTerminal(): boolean {
  return Boolean(process.stdin.isTTY && process.stdout.isTTY);
}

/**
 * Splits keyboard input around the detach sequence. Returns what to forward and whether the
 * sequence completed; a lone Ctrl-P is held until the next byte says what it was.
 */
export class DetachScanner {
  private pending = false;

  feed(input: Uint8Array): { forward: Uint8Array; detach: boolean } {
    const out: number[] = [];
    for (const byte of input) {
      if (this.pending) {
        this.pending = false;
        if (byte === DETACH_KEYS[1]) return { forward: Uint8Array.from(out), detach: true };
        out.push(DETACH_KEYS[0]!);
      }
      if (byte === DETACH_KEYS[0]) this.pending = true;
      else out.push(byte);
    }
    return { forward: Uint8Array.from(out), detach: false };
  }
}

export type InteractiveResult = { detached: true } | { detached: false; status: ExitStatus };

/** Runs argv on a guest pseudo-terminal attached to ours until it exits or the user detaches. */
export async function runOnTerminal(
  sandbox: Sandbox,
  argv: string[],
  options: Omit<SpawnOptions, "stdin" | "tty"> = {},
): Promise<InteractiveResult> {
  const size = () => ({ cols: process.stdout.columns || 80, rows: process.stdout.rows || 24 });
  const env = { TERM: process.env.TERM || "xterm-256color", ...options.env };
  const proc: ExecProcess = sandbox.spawn(argv[0]!, argv.slice(1), { ...options, env, stdin: true, tty: size() });
  const stdin = process.stdin;
  const wasRaw = stdin.isRaw;
  stdin.setRawMode(true);
  const scanner = new DetachScanner();
  let detached = false;

  const onResize = () => {
    const { cols, rows } = size();
    proc.resize(cols, rows);
  };
  const onInput = (chunk: Buffer) => {
    const { forward, detach } = scanner.feed(chunk);
    if (forward.length > 0) proc.write(forward).catch(() => {});
    if (detach) {
      detached = true;
      proc.detach();
    }
  };
  process.stdout.on("resize", onResize);
  stdin.on("data", onInput);
  stdin.resume();
  try {
    // With a PTY the guest's stdout and stderr are one stream.
    for await (const chunk of proc.stdout) {
      await new Promise<void>((resolve, reject) => process.stdout.write(chunk, (error) => (error ? reject(error) : resolve())));
    }
    if (detached) return { detached: true };
    return { detached: false, status: await proc.wait() };
  } finally {
    stdin.off("data", onInput);
    process.stdout.off("resize", onResize);
    stdin.setRawMode(wasRaw);
    stdin.pause();
  }
}
