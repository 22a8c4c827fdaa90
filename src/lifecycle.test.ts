// End-to-end: the sandbox lifecycle as a user drives it — the compiled dist/msb for the CLI and
// the SDK from other processes — on the qemu backend, with real crashes (kill -9, a guest kernel
// panic, a creator process dying) and concurrent clients.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, readdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fixtureDir } from "../bench/image-fixture-debian";
import { Sandbox } from "./sandbox";
import { eventually, leftoverSandboxes, processesOf, removeHome, repoRoot, useTempHome } from "./testing";

const home = useTempHome();
const binary = join(repoRoot, "dist", "msb");
const debian = join(fixtureDir(), "oci");
const IMAGE = "local/debian-python:lifecycle";

afterAll(async () => {
  for (const name of leftoverSandboxes(home)) await Sandbox.remove(name, { force: true }).catch(() => {});
  removeHome(home);
});

function msb(args: string[], options: { env?: Record<string, string> } = {}) {
  if (!existsSync(binary)) throw new Error(`${binary} is missing: run scripts/setup.sh first`);
  const result = Bun.spawnSync([binary, ...args], {
    cwd: tmpdir(),
    env: { ...process.env, MSB_HOME: home, ...options.env },
    stdin: "ignore",
  });
  return { code: result.exitCode, stdout: result.stdout.toString(), stderr: result.stderr.toString() };
}

async function msbAsync(args: string[]) {
  const child = Bun.spawn([binary, ...args], { cwd: tmpdir(), env: { ...process.env, MSB_HOME: home }, stdout: "pipe", stderr: "pipe", stdin: "ignore" });
  const [stdout, stderr, code] = await Promise.all([new Response(child.stdout).text(), new Response(child.stderr).text(), child.exited]);
  return { code, stdout, stderr };
}

function status(name: string): { status: string; exitReason?: string } {
  const inspect = msb(["inspect", name]);
  expect(inspect.code).toBe(0);
  return JSON.parse(inspect.stdout);
}

/** Processes under this MSB_HOME that belong to `name` (its supervisor and VM). */
function processesOfSandbox(name: string): string[] {
  return processesOf(home).filter((line) => line.includes(name));
}

beforeAll(() => {
  const imported = msb(["image", "import", debian, "--tag", IMAGE]);
  expect(imported.stderr).toBe("");
  expect(imported.code).toBe(0);
});

describe("a named sandbox from the CLI", () => {
  test("create, start, exec, stop, start again with its writes kept, rm leaves nothing", () => {
    const created = msb(["create", "--name", "keeper", "--backend", "qemu", "--label", "team=core", "--hostname", "box1", "--pull", "never", IMAGE]);
    expect(created.stderr).toBe("");
    expect(created.stdout.trim()).toBe("keeper");
    expect(status("keeper").status).toBe("created");

    const listed = JSON.parse(msb(["ls", "--json", "--label", "team=core"]).stdout);
    expect(listed.map((s: { name: string }) => s.name)).toEqual(["keeper"]);
    expect(JSON.parse(msb(["ls", "--json", "--label", "team=other"]).stdout)).toEqual([]);
    expect(msb(["ps", "-q"]).stdout.trim()).toBe("");

    expect(msb(["start", "keeper"]).code).toBe(0);
    expect(status("keeper").status).toBe("running");
    expect(msb(["ps", "-q"]).stdout.trim()).toBe("keeper");
    const write = msb(["exec", "keeper", "--", "sh", "-c", "hostname; echo kept > /root/note; echo to-stderr >&2; exit 7"]);
    expect(write.code).toBe(7);
    expect(write.stdout).toBe("box1\n");
    expect(write.stderr).toBe("to-stderr\n");

    const stopped = msb(["stop", "keeper"]);
    expect(stopped.code).toBe(0);
    const afterStop = status("keeper");
    expect(afterStop.status).toBe("stopped");
    expect(afterStop.exitReason).toContain("stopped");
    expect(processesOfSandbox("keeper")).toEqual([]);
    expect(existsSync(join(home, "sandboxes", "keeper", "agent.sock"))).toBe(false);

    // Logs outlive the run.
    const logs = msb(["logs", "keeper"]);
    expect(logs.stdout).toContain("box1");
    expect(logs.stderr).toContain("to-stderr");
    expect(msb(["logs", "keeper", "--source", "console"]).stdout).toContain("reboot: Restarting system");

    expect(msb(["start", "keeper"]).code).toBe(0);
    const read = msb(["exec", "keeper", "--", "cat", "/root/note"]);
    expect(read.stdout).toBe("kept\n");

    const removeRunning = msb(["rm", "keeper"]);
    expect(removeRunning.code).toBe(1);
    expect(removeRunning.stderr).toContain("msb stop keeper");
    expect(msb(["rm", "-f", "keeper"]).code).toBe(0);
    expect(leftoverSandboxes(home)).toEqual([]);
    expect(processesOfSandbox("keeper")).toEqual([]);
    const gone = msb(["inspect", "keeper"]);
    expect(gone.code).toBe(125);
    expect(gone.stderr).toContain("no sandbox named keeper");
  });

  test("run -d with a command: its output is in msb logs and the sandbox stops when it exits", async () => {
    const started = msb(["run", "-d", "--name", "job", "--backend", "qemu", "--", "sh", "-c", "for i in 1 2 3; do echo line $i; done; echo oops >&2; sleep 1"]);
    expect(started.stderr).toBe("");
    expect(started.stdout.trim()).toBe("job");
    expect(await eventually(() => status("job").status === "stopped", 60_000)).toBe(true);
    expect(status("job").exitReason).toBe("its main command exited (code 0)");
    const logs = msb(["logs", "job"]);
    expect(logs.stdout).toBe("line 1\nline 2\nline 3\n");
    expect(logs.stderr).toBe("oops\n");
    // --tail counts lines of both streams, in the order they were printed.
    expect(msb(["logs", "job", "--tail", "2"])).toMatchObject({ stdout: "line 3\n", stderr: "oops\n" });
    expect(msb(["logs", "job", "--since", "2000-01-01T00:00:00Z", "--tail", "3"]).stdout).toBe("line 2\nline 3\n");
    expect(msb(["logs", "job", "--since", "1ms"]).stdout).toBe("");
    expect(msb(["logs", "job", "--source", "supervisor"]).stdout).toContain("main command");
    expect(msb(["rm", "job"]).code).toBe(0);
  });

  test("logs -f prints output as it comes and returns when the sandbox stops", async () => {
    expect(msb(["run", "-d", "--name", "ticker", "--backend", "qemu", "--", "sh", "-c", "for i in 1 2 3 4; do echo tick $i; sleep 1; done"]).code).toBe(0);
    const follow = Bun.spawn([binary, "logs", "-f", "ticker"], { env: { ...process.env, MSB_HOME: home }, stdout: "pipe", stderr: "pipe" });
    const reader = follow.stdout.getReader();
    let seen = "";
    const firstAt = Date.now();
    while (!seen.includes("tick 2")) {
      const { value, done } = await reader.read();
      if (done) break;
      seen += new TextDecoder().decode(value);
    }
    // Lines arrived while the command was still running, not all at the end.
    expect(seen).toContain("tick 1");
    expect(status("ticker").status).toBe("running");
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      seen += new TextDecoder().decode(value);
    }
    expect(await follow.exited).toBe(0);
    expect(seen).toBe("tick 1\ntick 2\ntick 3\ntick 4\n");
    expect(Date.now() - firstAt).toBeLessThan(60_000);
    expect(status("ticker").status).toBe("stopped");
    expect(msb(["rm", "ticker"]).code).toBe(0);
  });

  test("--idle-timeout and --max-duration stop a sandbox and say why", async () => {
    expect(msb(["run", "-d", "--name", "idle", "--backend", "qemu", "--idle-timeout", "2s"]).code).toBe(0);
    expect(msb(["run", "-d", "--name", "short", "--backend", "qemu", "--max-duration", "3", "--", "sleep", "600"]).code).toBe(0);
    expect(await eventually(() => status("idle").status === "stopped" && status("short").status === "stopped", 60_000)).toBe(true);
    expect(status("idle").exitReason).toContain("idle for 2 s");
    expect(status("short").exitReason).toContain("maximum duration of 3 s");
    expect(msb(["rm", "idle", "short"]).code).toBe(0);
  });

  test("metrics of a running sandbox, as JSON", () => {
    expect(msb(["run", "-d", "--name", "measured", "--backend", "qemu"]).code).toBe(0);
    const metrics = JSON.parse(msb(["metrics", "measured", "--json"]).stdout);
    expect(metrics.status).toBe("running");
    expect(metrics.memoryBytes.vm).toBeGreaterThan(16 * 1024 * 1024);
    expect(metrics.memoryBytes.supervisor).toBeGreaterThan(1024 * 1024);
    expect(metrics.cpuPercent.vm).toBeGreaterThanOrEqual(0);
    expect(metrics.network.rxFrames).toBeGreaterThanOrEqual(0);
    expect(msb(["rm", "-f", "measured"]).code).toBe(0);
    const stoppedMetrics = msb(["metrics", "nothing-here"]);
    expect(stoppedMetrics.code).toBe(125);
    expect(stoppedMetrics.stderr).toContain("no sandbox named nothing-here");
  });
});

describe("crashes leave the truth behind", () => {
  test("kill -9 of a supervisor: ls says crashed with the reason, the VM goes away, rm cleans up", async () => {
    expect(msb(["run", "-d", "--name", "victim", "--backend", "qemu"]).code).toBe(0);
    const { supervisorPid, vmPid } = JSON.parse(msb(["inspect", "victim"]).stdout);
    expect(supervisorPid).toBeGreaterThan(0);
    expect(vmPid).toBeGreaterThan(0);
    process.kill(supervisorPid, "SIGKILL");
    expect(await eventually(() => status("victim").status === "crashed", 10_000)).toBe(true);
    expect(status("victim").exitReason).toContain(`supervisor (pid ${supervisorPid})`);
    expect(msb(["ls"]).stdout).toMatch(/victim .*crashed/);
    // The guest notices its host is gone and powers off.
    expect(await eventually(() => processesOfSandbox("victim").length === 0, 30_000)).toBe(true);
    expect(msb(["rm", "victim"]).code).toBe(0);
    expect(leftoverSandboxes(home)).toEqual([]);
  });

  test("a guest kernel panic is recorded as a crash with the panic line", async () => {
    expect(msb(["run", "-d", "--name", "panicky", "--backend", "qemu", "--memory", "128"]).code).toBe(0);
    // Out of memory with panic_on_oom: a real kernel panic from inside the guest.
    // Two 90 MiB buffers in a 128 MiB guest without swap.
    const exec = await msbAsync(["exec", "panicky", "--", "sh", "-c", "echo 1 > /proc/sys/vm/panic_on_oom; dd if=/dev/zero of=/dev/null bs=90M count=50 & dd if=/dev/zero of=/dev/null bs=90M count=50; wait"]);
    // The command's client learns promptly that the sandbox is gone.
    expect(exec.code).toBe(125);
    expect(exec.stderr).toContain("sandbox panicky");
    expect(await eventually(() => status("panicky").status === "crashed", 60_000)).toBe(true);
    expect(status("panicky").exitReason).toMatch(/guest kernel panic: .*Out of memory/);
    expect(processesOfSandbox("panicky")).toEqual([]);
    expect(msb(["rm", "panicky"]).code).toBe(0);
  });
});

describe("the SDK across processes", () => {
  test("a detached sandbox outlives its creator and is reachable by name; an attached one does not", async () => {
    const script = (detached: boolean, name: string) => `
      import { Sandbox } from ${JSON.stringify(join(repoRoot, "src/sandbox.ts"))};
      const sandbox = await Sandbox.create({ backend: "qemu", name: ${JSON.stringify(name)}, detached: ${detached} });
      console.log(sandbox.name);
      ${detached ? "process.exit(0);" : "await Bun.sleep(600_000);"}
    `;
    const detached = Bun.spawn([process.execPath, "-e", script(true, "lives-on")], { stdout: "pipe", stderr: "inherit", env: process.env });
    expect((await new Response(detached.stdout).text()).trim()).toBe("lives-on");
    expect(await detached.exited).toBe(0);

    const attached = Bun.spawn([process.execPath, "-e", script(false, "tied")], { stdout: "pipe", stderr: "inherit", env: process.env });
    const reader = attached.stdout.getReader();
    expect(new TextDecoder().decode((await reader.read()).value).trim()).toBe("tied");
    attached.kill("SIGKILL");

    {
      await using sandbox = await Sandbox.get("lives-on");
      const result = await sandbox.exec("echo", ["still here"]);
      expect(result.stdout).toBe("still here\n");
    }
    // Disposing of a sandbox found with get() only disconnects.
    expect(status("lives-on").status).toBe("running");
    expect(await eventually(() => status("tied").status === "stopped", 30_000)).toBe(true);
    expect(status("tied").exitReason).toBe("its creator exited");

    const list = await Sandbox.list();
    expect(list.map((s) => s.name).sort()).toEqual(["lives-on", "tied"]);
    const sandbox = await Sandbox.get("lives-on");
    const waited = sandbox.waitUntilStopped();
    await sandbox.stop();
    await waited;
    expect(status("lives-on").status).toBe("stopped");
    await expect(Sandbox.get("lives-on")).rejects.toThrow(/lives-on is stopped/);
    await Sandbox.remove("lives-on");
    await Sandbox.remove("tied");
    await expect(Sandbox.remove("tied")).rejects.toThrow(/no sandbox named tied/);
    expect(leftoverSandboxes(home)).toEqual([]);
  });
});

describe("concurrency", () => {
  test("two clients creating the same name: one wins, the other gets a clear error", async () => {
    const results = await Promise.all([msbAsync(["create", "--name", "contested"]), msbAsync(["create", "--name", "contested"])]);
    const codes = results.map((r) => r.code).sort();
    expect(codes).toEqual([0, 125]);
    const loser = results.find((r) => r.code !== 0)!;
    expect(loser.stderr).toContain("a sandbox named contested already exists");
    expect(msb(["create", "--name", "contested", "--replace"]).code).toBe(0);
    expect(msb(["rm", "contested"]).code).toBe(0);
  });

  test("20 msb run at once all succeed", async () => {
    // Twenty emulated boots share two cores here: give each more than the default boot time.
    const config = join(home, "patient.yaml");
    writeFileSync(config, "backend: qemu\nbootTimeoutSeconds: 600\nmemoryMiB: 256\n");
    const runs = await Promise.all(Array.from({ length: 20 }, (_, i) => msbAsync(["run", "-q", "--config", config, "--", "echo", `run ${i}`])));
    for (const [i, run] of runs.entries()) {
      expect({ i, code: run.code, stdout: run.stdout, stderr: run.stderr }).toEqual({ i, code: 0, stdout: `run ${i}\n`, stderr: "" });
    }
    expect(leftoverSandboxes(home)).toEqual([]);
    expect(await eventually(() => processesOf(home).length === 0, 30_000)).toBe(true);
  }, 900_000);
});

describe("bad input", () => {
  test("a config file error names the file, the key and the problem", () => {
    const bad = join(home, "bad.yaml");
    writeFileSync(bad, "cpus: lots\nmemoryMiB: 1\n");
    const result = msb(["create", "--config", bad]);
    expect(result.code).toBe(125);
    expect(result.stderr).toContain(bad);
    expect(result.stderr).toContain("cpus:");
    expect(result.stderr).toContain("memoryMiB:");
    const unknown = join(home, "unknown.json");
    writeFileSync(unknown, JSON.stringify({ cpu: 2 }));
    expect(msb(["create", "--config", unknown]).stderr).toMatch(/unknown\.json: .*cpu/);
    expect(readdirSync(home).includes("sandboxes") ? readdirSync(join(home, "sandboxes")) : []).toEqual([]);
  });

  test("usage errors exit 2 with a hint; lifecycle commands on unknown names exit 1 and name them", () => {
    const usage = msb(["stop"]);
    expect(usage.code).toBe(2);
    expect(usage.stderr).toContain("msb stop needs a sandbox name");
    const missing = msb(["stop", "ghost"]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain("no sandbox named ghost");
    const duration = msb(["run", "--timeout", "soon", "--", "true"]);
    expect(duration.code).toBe(2);
    expect(duration.stderr).toContain("--timeout expects a duration");
    expect(msb(["completions", "bash"]).stdout).toContain("complete -o default -F _msb msb");
    expect(msb(["completions", "tcsh"]).code).toBe(2);
  });
});
