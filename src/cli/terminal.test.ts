// Interactive use through a real pseudo-terminal: dist/msb runs on a pty that a Python driver
// (testdata/pty-driver.py) owns, types into, resizes and reads, on the qemu backend.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { DetachScanner } from "./terminal";
import { eventually, leftoverSandboxes, processesOf, removeHome, repoRoot, useTempHome } from "../testing";

describe("the detach key sequence (Ctrl-P Ctrl-Q)", () => {
  test("is found across chunks; a lone Ctrl-P is passed on with the byte after it", () => {
    const scanner = new DetachScanner();
    expect(scanner.feed(Uint8Array.of(0x61, 0x10))).toEqual({ forward: Uint8Array.of(0x61), detach: false });
    expect(scanner.feed(Uint8Array.of(0x62))).toEqual({ forward: Uint8Array.of(0x10, 0x62), detach: false });
    expect(scanner.feed(Uint8Array.of(0x03, 0x10))).toEqual({ forward: Uint8Array.of(0x03), detach: false });
    expect(scanner.feed(Uint8Array.of(0x11, 0x63))).toEqual({ forward: Uint8Array.of(), detach: true });
    const twice = new DetachScanner();
    expect(twice.feed(Uint8Array.of(0x10, 0x10, 0x11))).toEqual({ forward: Uint8Array.of(0x10), detach: true });
  });
});

const home = useTempHome();
const binary = join(repoRoot, "dist", "msb");
const driver = join(import.meta.dir, "testdata", "pty-driver.py");

type Step = ["until", string] | ["type", string] | ["wait", number] | ["resize", [number, number]];

/** Runs dist/msb on a fresh 100x30 pseudo-terminal, playing `steps`; returns the screen bytes and exit code. */
function onTerminal(steps: Step[], args: string[]): { output: string; code: number } {
  const result = Bun.spawnSync(["python3", driver, JSON.stringify(steps), binary, ...args], {
    env: { ...process.env, MSB_HOME: home, TERM: "xterm" },
    stdout: "pipe",
    stderr: "pipe",
  });
  if (result.exitCode !== 0) throw new Error(`pty driver failed: ${result.stderr.toString()}`);
  return JSON.parse(result.stdout.toString());
}

function msb(args: string[]) {
  const result = Bun.spawnSync([binary, ...args], { env: { ...process.env, MSB_HOME: home }, stdin: "ignore" });
  return { code: result.exitCode, stdout: result.stdout.toString(), stderr: result.stderr.toString() };
}

beforeAll(() => {
  if (!existsSync(binary)) throw new Error(`${binary} is missing: run scripts/setup.sh first`);
  expect(msb(["run", "-d", "--name", "term", "--backend", "qemu"]).code).toBe(0);
});

afterAll(() => {
  for (const name of leftoverSandboxes(home)) msb(["rm", "-f", name]);
  removeHome(home);
});

describe("msb exec on a terminal", () => {
  test("the guest sees our terminal's size and its changes; Ctrl-C reaches the guest command; the exit code comes back", () => {
    const { output, code } = onTerminal(
      [
        ["until", "# "],
        ["type", "stty size; tty\r"],
        ["until", "/dev/pts/"],
        ["resize", [120, 40]],
        ["wait", 1],
        ["type", "stty size\r"],
        ["until", "40 120"],
        ["type", "sleep 100\r"],
        ["wait", 1],
        ["type", "\u0003"],
        ["wait", 0.5],
        ["type", "echo status=$?\r"],
        ["until", "status=130"],
        ["type", "exit 5\r"],
        ["wait", 1],
      ],
      ["exec", "term", "--", "sh"],
    );
    expect(output).toContain("30 100");
    expect(output).toMatch(/\/dev\/pts\/\d+/);
    expect(output).toContain("40 120");
    expect(output).toContain("status=130");
    expect(code).toBe(5);
  });

  test("Ctrl-P Ctrl-Q detaches: the command keeps running and its output reaches msb logs", async () => {
    const { output, code } = onTerminal(
      [
        ["until", "# "],
        ["type", "(sleep 2; echo still-running-after-detach)\r"],
        ["wait", 0.5],
        ["type", "\u0010\u0011"],
        ["wait", 1],
      ],
      ["exec", "term", "--", "sh"],
    );
    expect(output).toContain("msb: detached; the command keeps running in term");
    expect(code).toBe(0);
    expect(await eventually(() => msb(["logs", "term"]).stdout.includes("still-running-after-detach"), 20_000)).toBe(true);
  });

  test("--tty without a terminal is refused; --no-tty on a terminal gives pipes", () => {
    const refused = msb(["exec", "-t", "term", "--", "true"]);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain("--tty needs a terminal");
    const { output } = onTerminal([["wait", 3]], ["exec", "--no-tty", "term", "--", "sh", "-c", "tty; echo piped"]);
    expect(output).toContain("not a tty");
    expect(output).toContain("piped");
  });
});

describe("msb run on a terminal", () => {
  test("an interactive shell in a new sandbox; its exit code is msb's; the sandbox is gone after", async () => {
    const { output, code } = onTerminal(
      [
        ["until", "# "],
        ["type", "echo inside-$((6*7))\r"],
        ["until", "inside-42"],
        ["type", "exit 3\r"],
        ["wait", 2],
      ],
      ["run", "-q", "--backend", "qemu"],
    );
    expect(output).toContain("inside-42");
    expect(code).toBe(3);
    expect(await eventually(() => leftoverSandboxes(home).length === 1, 20_000)).toBe(true);
  });

  test("detaching from msb run leaves the sandbox running, reachable by the name it prints", async () => {
    const { output } = onTerminal(
      [
        ["until", "# "],
        ["type", "echo marker > /tmp/left-running\r"],
        ["wait", 0.5],
        ["type", "\u0010\u0011"],
        ["wait", 1],
      ],
      ["run", "-q", "--backend", "qemu", "--name", "detached-run"],
    );
    expect(output).toContain("msb: detached; sandbox detached-run keeps running");
    await Bun.sleep(1000);
    const read = msb(["exec", "detached-run", "--", "cat", "/tmp/left-running"]);
    expect(read.stdout).toBe("marker\n");
    expect(msb(["rm", "-f", "detached-run"]).code).toBe(0);
    expect(await eventually(() => processesOf(home).every((p) => !p.includes("detached-run")), 20_000)).toBe(true);
  });
});
