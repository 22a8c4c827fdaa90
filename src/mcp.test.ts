// msb mcp driven with real MCP JSON-RPC messages over stdio (dist/msb), on the qemu backend:
// initialize, tools/list, every tool, and bad input that must come back as errors, not crashes.
import { afterAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { eventually, leftoverSandboxes, processesOf, removeHome, repoRoot, useTempHome } from "./testing";

const home = useTempHome();
afterAll(() => removeHome(home));

/** A running `msb mcp` with a request/response helper keyed by id. */
function startServer(flags: string[] = [], env: Record<string, string> = {}) {
  const child = Bun.spawn([join(repoRoot, "dist", "msb"), "mcp", ...flags], {
    env: { ...process.env, MSB_HOME: home, MSB_BACKEND: "qemu", ...env },
    stdin: "pipe",
    stdout: "pipe",
    stderr: "pipe",
  });
  const waiting = new Map<unknown, (message: Record<string, unknown>) => void>();
  const unsolicited: Record<string, unknown>[] = [];
  (async () => {
    let buffer = "";
    for await (const chunk of child.stdout) {
      buffer += new TextDecoder().decode(chunk);
      let newline;
      while ((newline = buffer.indexOf("\n")) >= 0) {
        const message = JSON.parse(buffer.slice(0, newline));
        buffer = buffer.slice(newline + 1);
        const resolve = waiting.get(message.id);
        if (resolve) {
          waiting.delete(message.id);
          resolve(message);
        } else unsolicited.push(message);
      }
    }
  })();
  let nextId = 1;
  const send = (text: string) => {
    child.stdin.write(`${text}\n`);
    child.stdin.flush();
  };
  const request = (method: string, params?: unknown): Promise<Record<string, unknown>> => {
    const id = nextId++;
    const answer = new Promise<Record<string, unknown>>((resolve) => waiting.set(id, resolve));
    send(JSON.stringify({ jsonrpc: "2.0", id, method, ...(params === undefined ? {} : { params }) }));
    return answer;
  };
  const call = async (name: string, args: unknown) => {
    const response = await request("tools/call", { name, arguments: args });
    return response.result as { content: { type: string; text: string }[]; isError?: boolean; structuredContent?: Record<string, unknown> };
  };
  return { child, send, request, call, unsolicited };
}

describe("msb mcp", () => {
  test("a full session: initialize, list tools, create, exec, files, list, stop, remove", async () => {
    const server = startServer();
    const init = await server.request("initialize", { protocolVersion: "2025-06-18", capabilities: {}, clientInfo: { name: "test", version: "1" } });
    expect((init.result as Record<string, unknown>).protocolVersion).toBe("2025-06-18");
    expect((init.result as { serverInfo: { name: string } }).serverInfo.name).toBe("msb");
    server.send(JSON.stringify({ jsonrpc: "2.0", method: "notifications/initialized" }));

    const list = (await server.request("tools/list")).result as { tools: { name: string; inputSchema: { type: string; properties: object } }[] };
    expect(list.tools.map((t) => t.name).sort()).toEqual([
      "sandbox_create", "sandbox_exec", "sandbox_list", "sandbox_read_file", "sandbox_remove", "sandbox_stop", "sandbox_write_file",
    ]);
    const exec = list.tools.find((t) => t.name === "sandbox_exec")!;
    expect(exec.inputSchema.type).toBe("object");
    expect(Object.keys(exec.inputSchema.properties)).toContain("command");

    const created = await server.call("sandbox_create", { name: "agent-box" });
    expect(created.isError).toBeUndefined();
    expect(created.structuredContent).toEqual({ name: "agent-box" });

    const shell = await server.call("sandbox_exec", { name: "agent-box", command: "echo out; echo err >&2; cat", stdin: "from stdin" });
    expect(shell.structuredContent).toMatchObject({ exitCode: 0, stdout: "out\nfrom stdin", stderr: "err\n" });
    const failing = await server.call("sandbox_exec", { name: "agent-box", command: ["sh", "-c", "exit 4"] });
    expect(failing.isError).toBe(true);
    expect(failing.structuredContent).toMatchObject({ exitCode: 4 });
    const slow = await server.call("sandbox_exec", { name: "agent-box", command: ["sleep", "30"], timeoutSeconds: 1 });
    expect(slow.structuredContent).toMatchObject({ timedOut: true });

    // Requests run concurrently: a ping answers while a command is still running.
    const long = server.call("sandbox_exec", { name: "agent-box", command: ["sleep", "2"] });
    expect((await server.request("ping")).result).toEqual({});
    expect((await long).structuredContent).toMatchObject({ exitCode: 0 });

    expect((await server.call("sandbox_write_file", { name: "agent-box", path: "/tmp/note.txt", content: "héllo\n" })).isError).toBeUndefined();
    expect((await server.call("sandbox_read_file", { name: "agent-box", path: "/tmp/note.txt" })).content[0]!.text).toBe("héllo\n");
    const missing = await server.call("sandbox_read_file", { name: "agent-box", path: "/no/such" });
    expect(missing.isError).toBe(true);
    expect(missing.content[0]!.text).toContain("/no/such");

    const listed = await server.call("sandbox_list", {});
    expect(listed.structuredContent).toEqual({ sandboxes: [{ name: "agent-box", status: "running", image: "msb.local/default:latest", exitReason: null }] });

    expect((await server.call("sandbox_stop", { name: "agent-box" })).isError).toBeUndefined();
    expect((await server.call("sandbox_remove", { name: "agent-box" })).isError).toBeUndefined();
    expect(leftoverSandboxes(home)).toEqual([]);
    server.child.stdin.end();
    expect(await server.child.exited).toBe(0);
  });

  test("bad arguments are tool errors; unknown tools, methods and broken JSON are JSON-RPC errors; the server lives on", async () => {
    const server = startServer();
    await server.request("initialize", { protocolVersion: "2025-06-18", capabilities: {}, clientInfo: { name: "test", version: "1" } });
    const noName = await server.call("sandbox_exec", { command: "true" });
    expect(noName.isError).toBe(true);
    expect(noName.content[0]!.text).toContain("name:");
    const wrongType = await server.call("sandbox_create", { cpus: "many" });
    expect(wrongType.isError).toBe(true);
    expect(wrongType.content[0]!.text).toContain("cpus:");
    const extra = await server.call("sandbox_list", { surprise: 1 });
    expect(extra.isError).toBe(true);
    const ghost = await server.call("sandbox_exec", { name: "ghost", command: "true" });
    expect(ghost.isError).toBe(true);
    expect(ghost.content[0]!.text).toContain("no sandbox named ghost");

    const unknownTool = await server.request("tools/call", { name: "rm_rf", arguments: {} });
    expect((unknownTool.error as { code: number }).code).toBe(-32602);
    const unknownMethod = await server.request("resources/list");
    expect((unknownMethod.error as { code: number }).code).toBe(-32601);
    server.send("{not json");
    expect(await eventually(() => server.unsolicited.some((m) => (m.error as { code?: number })?.code === -32700), 5000)).toBe(true);
    expect((await server.request("ping")).result).toEqual({});
    server.child.stdin.end();
    expect(await server.child.exited).toBe(0);
  });

  test("sandboxes it created stop when the server goes away, even killed", async () => {
    const server = startServer();
    await server.request("initialize", { protocolVersion: "2025-06-18", capabilities: {}, clientInfo: { name: "test", version: "1" } });
    const created = await server.call("sandbox_create", {});
    expect(created.isError).toBeUndefined();
    server.child.kill("SIGKILL");
    await server.child.exited;
    expect(await eventually(() => processesOf(home).length === 0 && leftoverSandboxes(home).length === 0, 30_000)).toBe(true);
  });

  test("--secret: the agent's sandboxes get the placeholder, and nothing the agent reads holds the value", async () => {
    const value = `mcp-${crypto.randomUUID()}`;
    const server = startServer(["--secret", "MCP_TEST_KEY@api.example.com"], { MCP_TEST_KEY: value });
    const seen: string[] = [];
    const call = async (tool: string, args: unknown) => {
      const result = await server.call(tool, args);
      seen.push(JSON.stringify(result));
      return result;
    };
    await server.request("initialize", { protocolVersion: "2025-06-18", capabilities: {}, clientInfo: { name: "test", version: "1" } });
    const tools = (await server.request("tools/list")).result as { tools: { name: string; description: string }[] };
    expect(tools.tools.find((t) => t.name === "sandbox_create")!.description).toContain("$MSB_NAME placeholders");
    expect((await call("sandbox_create", { name: "secret-box" })).structuredContent).toEqual({ name: "secret-box" });
    const env = await call("sandbox_exec", { name: "secret-box", command: "echo $MCP_TEST_KEY; env | grep -c MCP_TEST_KEY" });
    expect(env.structuredContent).toMatchObject({ exitCode: 0, stdout: "$MSB_MCP_TEST_KEY\n1\n" });
    const list = await call("sandbox_list", {});
    expect(list.isError).toBeUndefined();
    await call("sandbox_remove", { name: "secret-box", force: true });
    for (const text of seen) expect(text).not.toContain(value);
    server.child.stdin.end();
    expect(await server.child.exited).toBe(0);
  }, 120_000);

  test("--secret naming an unset variable fails at start, saying which", async () => {
    const child = Bun.spawn([join(repoRoot, "dist", "msb"), "mcp", "--secret", "MCP_UNSET_KEY@api.example.com"], {
      env: { ...process.env, MSB_HOME: home },
      stdin: "ignore",
      stdout: "pipe",
      stderr: "pipe",
    });
    expect(await child.exited).not.toBe(0);
    expect(await new Response(child.stderr).text()).toContain("$MCP_UNSET_KEY is not set");
  });
});
