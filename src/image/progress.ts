// Renders pull/import progress for a terminal: one bar per layer redrawn in place on a TTY,
// plain lines (one per layer state change) otherwise, so logs stay readable in CI.

import type { PullEvent } from "./pull.ts";

export interface ProgressRenderer {
  (e: PullEvent): void;
}

function mib(n: number): string {
  return `${(n / 1048576).toFixed(1)} MiB`;
}

/**
 * A callback for PullOptions.onProgress that draws on `out` (default stderr).
 *
 *   await pullImage("python:3.12", { onProgress: progressBars() });
 */
export function progressBars(out: { write(s: string): unknown; isTTY?: boolean } = process.stderr): ProgressRenderer {
  const tty = !!out.isTTY;
  const rows = new Map<number, { digest: string; status: string; downloaded: number; total: number }>();
  let drawn = 0;
  const draw = () => {
    if (drawn) out.write(`\x1b[${drawn}A`);
    const lines = [...rows.entries()].sort((a, b) => a[0] - b[0]).map(([, r]) => {
      const width = 30;
      const frac = r.total > 0 ? Math.min(1, r.downloaded / r.total) : r.status === "downloading" ? 0 : 1;
      const bar = "#".repeat(Math.round(frac * width)).padEnd(width, ".");
      return `\x1b[2K${r.digest.slice(7, 19)}  [${bar}] ${r.status.padEnd(11)} ${mib(r.downloaded)} / ${mib(r.total)}`;
    });
    out.write(lines.join("\n") + (lines.length ? "\n" : ""));
    drawn = lines.length;
  };
  let last = 0;
  return (e) => {
    if (e.kind === "resolved") {
      out.write(`${e.image}: ${e.layers} layer(s), ${mib(e.totalBytes)}\n`);
      return;
    }
    if (e.kind === "retry") {
      out.write(`${e.image}: layer ${e.index + 1}: retrying (attempt ${e.attempt + 1}): ${e.error}\n`);
      drawn = 0;
      return;
    }
    if (e.kind === "resume") {
      out.write(`${e.image}: layer ${e.index + 1}: resuming the download at ${mib(e.from)} of ${mib(e.total)}\n`);
      drawn = 0;
      return;
    }
    if (e.kind === "done") {
      if (tty && drawn) draw();
      out.write(`${e.image}: ${e.reused ? "up to date" : "pulled"} (${e.id})\n`);
      rows.clear();
      drawn = 0;
      return;
    }
    const prev = rows.get(e.index);
    rows.set(e.index, { digest: e.digest, status: e.status, downloaded: e.downloaded, total: e.total });
    if (tty) {
      const now = Date.now();
      if (e.status !== "downloading" || now - last > 100) {
        last = now;
        draw();
      }
    } else if (prev?.status !== e.status) {
      out.write(`${e.image}: layer ${e.index + 1} ${e.digest.slice(7, 19)} ${e.status}\n`);
    }
  };
}
