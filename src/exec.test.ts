// End-to-end exec semantics against a real guest (qemu backend): users, timeouts, signals, a
// pseudo-terminal with resize, start failures, 32 concurrent execs with an unread flood (flow
// control bounds the supervisor's memory), and prompt errors when the VM dies.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { Sandbox } from "./sandbox";
import { MsbError } from "./errors";
import type { ExecProcess } from "./agent/client";
import { e2eBackends, eventually, processesOf, removeHome, useTempHome } from "./testing";

const home = useTempHome();
afterAll(() => removeHome(home));

/** Reads a process's stdout until `pattern` shows up; returns everything read so far. */
async function readUntil(iterator: AsyncIterator<Uint8Array>, pattern: RegExp, timeoutMs = 20_000): Promise<string> {
  let text = "";
  const decoder = new TextDecoder();
  const deadline = Date.now() + timeoutMs;
  while (!pattern.test(text)) {
    const left = deadline - Date.now();
    if (left <= 0) throw new Error(`timed out waiting for ${pattern}; got ${JSON.stringify(text)}`);
    const next = await Promise.race([iterator.next(), Bun.sleep(left).then(() => ({ timeout: true }) as const)]);
    if ("timeout" in next) continue;
    if (next.done) throw new Error(`output ended before ${pattern}; got ${JSON.stringify(text)}`);
    text += decoder.decode(next.value, { stream: true });
  }
  return text;
}

function pidOf(match: RegExp): number {
  const line = processesOf(home).find((l) => match.test(l));
  if (!line) throw new Error(`no process matching ${match} among ${JSON.stringify(processesOf(home))}`);
  return Number(line.split(":")[0]);
}

function rssKiB(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? NaN);
}

for (const { backend, skip } of await e2eBackends()) describe.skipIf(skip !== undefined)(`exec on ${backend}${skip ? ` (skipped: ${skip})` : ""}`, () => {
  let sandbox: Sandbox;
  beforeAll(async () => {
    sandbox = await Sandbox.create({ backend });
    // Users the image would ship: alice (with a supplementary group), and a group by name.
    await sandbox.shell(
      "echo 'alice:x:1000:1000:Alice:/home/alice:/bin/sh' >> /etc/passwd && " +
        "printf 'alice:x:1000:\\nstaff:x:50:alice\\nops:x:60:\\n' >> /etc/group && mkdir -p /home/alice && chown 1000:1000 /home/alice",
    );
  });
  afterAll(async () => {
    await sandbox?.stop();
  });

  test("a user by name gets its uid, groups and HOME from the sandbox's passwd", async () => {
    const r = await sandbox.shell('id; echo "HOME=$HOME USER=$USER"; touch ~/made && stat -c %u ~/made', { user: "alice" });
    expect(r.stderr).toBe("");
    expect(r.stdout).toContain("uid=1000(alice) gid=1000(alice)");
    expect(r.stdout).toMatch(/groups=.*50\(staff\)/);
    expect(r.stdout).toContain("HOME=/home/alice USER=alice");
    expect(r.stdout.trim().split("\n").at(-1)).toBe("1000");
  });

  test("uid:gid and name:group work; an exec's own HOME wins", async () => {
    const r = await sandbox.shell('echo "$(id -u) $(id -g) $HOME"', { user: "4321:77" });
    expect(r.stdout).toBe("4321 77 /\n");
    const g = await sandbox.shell('echo "$(id -u) $(id -g) $HOME"', { user: "alice:ops", env: { HOME: "/tmp" } });
    expect(g.stdout).toBe("1000 60 /tmp\n");
  });

  test("an unknown user is refused with a message naming it", async () => {
    const r = await sandbox.exec("id", [], { user: "mallory" });
    expect(r.exitCode).toBe(125);
    expect(r.error).toContain('unknown user "mallory"');
    expect(r.stderr).toContain("mallory");
  });

  test("a timeout kills the whole process group and says so", async () => {
    const started = Date.now();
    const r = await sandbox.shell("sleep 300 & echo started; sleep 300", { timeoutMs: 700 });
    expect(Date.now() - started).toBeLessThan(15_000);
    expect(r.timedOut).toBe(true);
    expect(r.signal).toBe(9);
    expect(r.stdout).toBe("started\n");
    // The background sleep was in the group too.
    expect((await sandbox.shell("ps -o args | grep -c '^sleep 300' || true")).stdout.trim()).toBe("0");
    const quick = await sandbox.exec("true", [], { timeoutMs: 60_000 });
    expect(quick.timedOut).toBe(false);
    expect(quick.exitCode).toBe(0);
  });

  test("kill(signal) reaches the process group; a trap sees SIGTERM", async () => {
    const proc = sandbox.spawn("sh", ["-c", 'trap "echo got TERM; exit 3" TERM; echo ready; while true; do sleep 0.1; done']);
    const out = proc.stdout[Symbol.asyncIterator]();
    await readUntil(out, /ready/);
    proc.kill(15);
    const rest = await readUntil(out, /got TERM/);
    expect(rest).toContain("got TERM");
    expect((await proc.wait()).code).toBe(3);
  });

  test("a pty reports its size to stty and follows resize()", async () => {
    const proc = sandbox.spawn("sh", ["-c", 'test -t 0 && echo tty; stty size; read line; stty size; echo "got $line"'], {
      stdin: true,
      tty: { cols: 100, rows: 30 },
    });
    const out = proc.stdout[Symbol.asyncIterator]();
    const first = await readUntil(out, /30 100/);
    expect(first).toContain("tty");
    proc.resize(132, 50);
    await proc.write("hello\n");
    const second = await readUntil(out, /got hello/);
    expect(second).toContain("50 132");
    expect((await proc.wait()).code).toBe(0);
    expect(() => sandbox.spawn("true").resize(80, 24)).toThrow(MsbError);
  });

  test("stdin streams with end of file", async () => {
    const input = new Uint8Array(3 * 1024 * 1024).map((_, i) => (i * 7) & 0xff);
    const r = await sandbox.exec("sh", ["-c", "wc -c; echo done"], { stdin: input });
    expect(r.stdout.trim().split(/\s+/)).toEqual([String(input.length), "done"]);
  });

  test("start failures: 127 names the program, 126 not executable, a missing cwd is named", async () => {
    const missing = await sandbox.exec("no-such-binary-42");
    expect(missing.exitCode).toBe(127);
    expect(missing.stderr).toContain("no-such-binary-42");
    await sandbox.fs.write("/tmp/not-exec.sh", "#!/bin/sh\necho hi\n", { mode: 0o644 });
    const noexec = await sandbox.exec("/tmp/not-exec.sh");
    expect(noexec.exitCode).toBe(126);
    expect(noexec.error).toContain("/tmp/not-exec.sh");
    const cwd = await sandbox.exec("true", [], { cwd: "/no/such/dir" });
    expect(cwd.exitCode).toBe(125);
    expect(cwd.error).toContain("working directory does not exist: /no/such/dir");
  });

  test("32 concurrent execs complete while an unread flood is held back; the supervisor stays small", async () => {
    const supervisor = pidOf(/__supervise/);
    const before = rssKiB(supervisor);
    // Writes as fast as it can; nobody reads its stdout for a while.
    const flood = sandbox.spawn("sh", ["-c", "yes 'flooding the channel with output nobody reads yet'"]);
    const others: Promise<string>[] = [];
    for (let i = 0; i < 31; i++) {
      others.push(sandbox.shell(`sleep 0.$((${i} % 5)); echo job-${i}`).then((r) => r.stdout));
    }
    const started = Date.now();
    const outputs = await Promise.all(others);
    const elapsed = Date.now() - started;
    expect(outputs).toEqual(Array.from({ length: 31 }, (_, i) => `job-${i}\n`));
    // Give the flood time to fill every buffer it can.
    await Bun.sleep(3000);
    const during = rssKiB(supervisor);
    // The flood is still alive and paused: reading resumes it.
    const out = flood.stdout[Symbol.asyncIterator]();
    let read = 0;
    while (read < 8 * 1024 * 1024) {
      const { value, done } = await out.next();
      if (done) throw new Error("the flood ended early");
      read += value.length;
    }
    flood.kill(9);
    await out.return?.();
    const status = await flood.wait();
    expect(status.signal).toBe(9);
    console.log(`31 execs beside an unread flood: ${elapsed} ms; supervisor RSS ${before} KiB before, ${during} KiB with the flood paused; then read 8 MiB of it`);
    // Credit bounds what can be in flight for the flood to one window (256 KiB) per hop.
    expect(during - before).toBeLessThan(48 * 1024);
  });

  test("more commands at once than the connection allows is refused clearly", async () => {
    const procs: ExecProcess[] = [];
    let error: unknown;
    try {
      for (let i = 0; i < 1025; i++) procs.push(sandbox.spawn("sleep", ["30"]));
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(MsbError);
    expect((error as MsbError).code).toBe("too_many_streams");
    expect(procs.length).toBe(1024);
    for (const p of procs) p.kill(9);
    await Promise.all(procs.map((p) => p.wait().catch(() => undefined)));
  }, 120_000);
});

for (const { backend, skip } of await e2eBackends()) describe.skipIf(skip !== undefined)(`when the VM dies on ${backend}${skip ? ` (skipped: ${skip})` : ""}`, () => {
  test("every waiting call rejects promptly with an error naming the sandbox", async () => {
    const sandbox = await Sandbox.create({ backend });
    try {
      const proc = sandbox.spawn("sleep", ["1000"]);
      const output = (async () => {
        for await (const _ of proc.stdout) {
          // Nothing comes.
        }
      })();
      await sandbox.fs.write("/tmp/big", new Uint8Array(4 * 1024 * 1024));
      const reader = sandbox.fs.read("/tmp/big").getReader();
      await reader.read();
      const vm = pidOf(/qemu-system/);
      const killedAt = Date.now();
      process.kill(vm, "SIGKILL");
      const results = await Promise.allSettled([proc.wait(), output, (async () => {
        for (;;) if ((await reader.read()).done) break;
      })()]);
      const elapsed = Date.now() - killedAt;
      for (const r of results) {
        expect(r.status).toBe("rejected");
        expect(String((r as PromiseRejectedResult).reason.message)).toContain(`sandbox ${sandbox.name}`);
      }
      expect(elapsed).toBeLessThan(5000);
      const late = await sandbox.fs.stat("/").then(() => undefined, (e) => e as MsbError);
      expect(late?.message).toContain(`sandbox ${sandbox.name}`);
      expect(() => sandbox.spawn("true")).toThrow(`sandbox ${sandbox.name}`);
      console.log(`VM killed: waiting calls rejected after ${elapsed} ms`);
    } finally {
      await sandbox.stop().catch(() => undefined);
    }
    expect(await eventually(() => processesOf(home).length === 0, 20_000)).toBe(true);
  }, 120_000);
});
