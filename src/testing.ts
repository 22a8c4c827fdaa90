// Helpers shared by the end-to-end tests: an isolated MSB_HOME, and checks that nothing a sandbox
// owned is left behind on the host.

import { Database } from "bun:sqlite";
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

export const repoRoot = resolve(import.meta.dir, "..");
export const bunPath = process.execPath;

/** Points MSB_HOME at a fresh temporary directory for this test file. */
export function useTempHome(): string {
  const home = mkdtempSync(join(tmpdir(), "msb-test-"));
  process.env.MSB_HOME = home;
  return home;
}

export function removeHome(home: string): void {
  rmSync(home, { recursive: true, force: true });
}

/** Sandboxes whose directory or state row still exists under MSB_HOME. */
export function leftoverSandboxes(home: string): string[] {
  const dir = join(home, "sandboxes");
  const names = new Set(existsSync(dir) ? readdirSync(dir) : []);
  const dbPath = join(home, "state.db");
  if (existsSync(dbPath)) {
    const db = new Database(dbPath, { readonly: true });
    try {
      for (const row of db.query("SELECT name FROM sandboxes").all() as { name: string }[]) names.add(row.name);
    } finally {
      db.close();
    }
  }
  return [...names].sort();
}

/** Processes (supervisors, VMs) still running for sandboxes under this MSB_HOME, other than us. */
export function processesOf(home: string): string[] {
  const found: string[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const environ = readFileSync(`/proc/${entry}/environ`, "utf8").split("\0");
      if (!environ.includes(`MSB_HOME=${home}`)) continue;
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, "utf8").split("\0").join(" ").trim();
      const state = readFileSync(`/proc/${entry}/stat`, "utf8").split(") ")[1]?.[0];
      if (state !== "Z") found.push(`${entry}: ${cmdline}`);
    } catch {
      // The process ended while we looked.
    }
  }
  return found;
}

/** Polls until `check` is true or the time is up; returns the last result. */
export async function eventually(check: () => boolean, timeoutMs = 15_000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (check()) return true;
    await Bun.sleep(100);
  }
  return check();
}

/**
 * The VM backends the end-to-end suites run on, each with the reason it is skipped here, if it
 * is: qemu always runs; native boots Linux only on hardware KVM (see nativeLinuxSkipReason).
 */
export async function e2eBackends(): Promise<{ backend: "qemu" | "native"; skip?: string }[]> {
  const { nativeLinuxSkipReason } = await import("./vm/native");
  return [{ backend: "qemu" }, { backend: "native", skip: await nativeLinuxSkipReason() }];
}
