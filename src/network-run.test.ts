// End-to-end: the guest's network through the userspace netstack, with real clients in the
// guest (busybox wget, nc) and real servers on this machine (loopback, and a test host in a
// network namespace this test creates). Nothing leaves the machine.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { Sandbox } from "./sandbox";
import { eventually, processesOf, removeHome, useTempHome } from "./testing";

const home = useTempHome();
const BIG = 1024 * 1024 * 1024;
let server: ReturnType<typeof Bun.serve>;
let requests = 0;
let bigHash: string;

/** Deterministic bytes, so the guest's checksum can be compared with ours. */
function bigChunk(index: number): Uint8Array<ArrayBuffer> {
  const chunk = new Uint8Array(1 << 20);
  let x = (index + 1) * 2654435761;
  for (let i = 0; i < chunk.length; i += 4) {
    x = (x * 1103515245 + 12345) >>> 0;
    chunk[i] = x & 0xff;
    chunk[i + 1] = (x >>> 8) & 0xff;
    chunk[i + 2] = (x >>> 16) & 0xff;
    chunk[i + 3] = x >>> 24;
  }
  return chunk;
}

beforeAll(() => {
  const hasher = new Bun.CryptoHasher("sha256");
  for (let i = 0; i < BIG >> 20; i++) hasher.update(bigChunk(i));
  bigHash = hasher.digest("hex");
  server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    fetch(request) {
      requests++;
      const path = new URL(request.url).pathname;
      if (path === "/big") {
        let index = 0;
        return new Response(
          new ReadableStream({
            type: "bytes",
            pull(controller) {
              if (index === BIG >> 20) return controller.close();
              controller.enqueue(bigChunk(index++));
            },
          }),
          { headers: { "content-length": String(BIG) } },
        );
      }
      return new Response(`hello from the host ${path}\n`);
    },
  });
});

afterAll(() => {
  server?.stop(true);
  removeHome(home);
});

describe("network: all (the host's loopback reachable as host.msb.internal)", () => {
  let sandbox: Sandbox;
  beforeAll(async () => {
    sandbox = await Sandbox.create({ backend: "qemu", network: "all", ports: [] });
  });
  afterAll(async () => {
    await sandbox?.stop();
  });

  test("the guest is configured from the host's stack", async () => {
    const result = await sandbox.shell("ip -4 addr show dev eth0; ip route; cat /etc/resolv.conf");
    expect(result.stdout).toContain("inet 10.0.2.15/24");
    expect(result.stdout).toContain("default via 10.0.2.2");
    expect(result.stdout).toContain("nameserver 10.0.2.3");
  });

  test("HTTP by name and by IP", async () => {
    const port = server.port;
    const byName = await sandbox.shell(`wget -qO- http://host.msb.internal:${port}/name`);
    expect(byName.stdout).toBe("hello from the host /name\n");
    const byIp = await sandbox.shell(`wget -qO- http://10.0.2.2:${port}/ip`);
    expect(byIp.stdout).toBe("hello from the host /ip\n");
  });

  test(`a ${BIG >> 20} MiB download arrives intact`, async () => {
    const result = await sandbox.shell(`wget -qO- http://host.msb.internal:${server.port}/big | sha256sum`);
    expect(result.stderr).toBe("");
    expect(result.stdout.split(" ")[0]).toBe(bigHash);
  }, 600_000);

  test("200 parallel connections all complete", async () => {
    const before = requests;
    const script = `ok=0; for i in $(seq 200); do wget -qO /tmp/r.$i http://host.msb.internal:${server.port}/p$i & done; wait;
      for i in $(seq 200); do grep -q "/p$i$" /tmp/r.$i && ok=$((ok+1)); done; echo $ok`;
    const result = await sandbox.shell(script);
    expect(result.stdout.trim()).toBe("200");
    expect(requests - before).toBe(200);
  }, 300_000);
});

/** A test host in a network namespace of our own, reached over a veth pair: 172.31.N.2:8000. */
class NamespaceHost {
  readonly name = `msbt${process.pid % 100000}`;
  readonly address = `172.31.${process.pid % 250}.2`;
  private server: ReturnType<typeof Bun.spawn> | undefined;

  static unavailable(): string | undefined {
    if (process.getuid?.() !== 0) return "needs root to create a network namespace";
    if (!Bun.which("ip") || !Bun.which("python3")) return "needs ip (iproute2) and python3";
    return undefined;
  }

  async start(): Promise<void> {
    const hostSide = `${this.name}h`;
    const gateway = this.address.replace(/\.2$/, ".1");
    for (const cmd of [
      ["ip", "netns", "add", this.name],
      ["ip", "link", "add", hostSide, "type", "veth", "peer", "name", "eth0", "netns", this.name],
      ["ip", "addr", "add", `${gateway}/30`, "dev", hostSide],
      ["ip", "link", "set", hostSide, "up"],
      ["ip", "-n", this.name, "addr", "add", `${this.address}/30`, "dev", "eth0"],
      ["ip", "-n", this.name, "link", "set", "eth0", "up"],
      ["ip", "-n", this.name, "link", "set", "lo", "up"],
    ]) {
      const result = Bun.spawnSync(cmd, { stderr: "pipe" });
      if (result.exitCode !== 0) throw new Error(`${cmd.join(" ")}: ${result.stderr.toString()}`);
    }
    this.server = Bun.spawn(
      ["ip", "netns", "exec", this.name, "python3", "-c",
        "import http.server as h\nclass H(h.BaseHTTPRequestHandler):\n def do_GET(s):\n  b=b'hello from the namespace host\\n'; s.send_response(200); s.send_header('content-length', str(len(b))); s.end_headers(); s.wfile.write(b)\n def log_message(s,*a): pass\n" +
          `h.ThreadingHTTPServer(('${this.address}', 8000), H).serve_forever()`],
      { stdout: "ignore", stderr: "inherit" },
    );
    const ready = await eventually(
      () => Bun.spawnSync(["ip", "netns", "exec", this.name, "python3", "-c", `import socket; socket.create_connection(('${this.address}', 8000), 1)`]).exitCode === 0,
      10_000,
    );
    if (!ready) throw new Error("the namespace host's server did not start");
  }

  stop(): void {
    this.server?.kill();
    Bun.spawnSync(["ip", "netns", "del", this.name]);
    Bun.spawnSync(["ip", "link", "del", `${this.name}h`], { stderr: "ignore" });
  }
}

const namespaceUnavailable = NamespaceHost.unavailable();
describe.skipIf(namespaceUnavailable !== undefined)(
  `a test host in a network namespace${namespaceUnavailable ? ` (skipped: ${namespaceUnavailable})` : ""}`,
  () => {
    const host = new NamespaceHost();
    beforeAll(() => host.start());
    afterAll(() => host.stop());

    test("reached by IP with network: all", async () => {
      await using sandbox = await Sandbox.create({ backend: "qemu", network: "all" });
      const result = await sandbox.shell(`wget -qO- http://${host.address}:8000/`);
      expect(result.stdout).toBe("hello from the namespace host\n");
    });

    test("refused under the default policy: it is a private address", async () => {
      await using sandbox = await Sandbox.create({ backend: "qemu" });
      const result = await sandbox.shell(`wget -T 5 -qO- http://${host.address}:8000/ 2>&1; echo "exit=$?"`);
      expect(result.stdout).not.toContain("hello from the namespace host");
      expect(result.stdout).toMatch(/exit=[1-9]/);
    });
  },
);

describe("published ports", () => {
  test("a host connection to a published port reaches the guest's server", async () => {
    const hostPort = 20000 + Math.floor(Math.random() * 20000);
    await using sandbox = await Sandbox.create({ backend: "qemu", ports: [`${hostPort}:8080`] });
    await sandbox.shell("mkdir -p /www && echo 'served from the guest' > /www/index.html");
    const httpd = sandbox.spawn("httpd", ["-f", "-p", "8080", "-h", "/www"]);
    let body = "";
    const reached = await eventually(() => {
      void fetch(`http://127.0.0.1:${hostPort}/index.html`)
        .then((r) => r.text())
        .then((t) => (body = t))
        .catch(() => {});
      return body === "served from the guest\n";
    }, 30_000);
    expect(reached).toBe(true);
    httpd.kill(15);
    await httpd.wait();
  });
});

describe("network: public (the default)", () => {
  test("the host's loopback is out of reach, the gateway's DNS is not", async () => {
    await using sandbox = await Sandbox.create({ backend: "qemu" });
    const denied = await sandbox.shell(`wget -T 5 -qO- http://host.msb.internal:${server.port}/ 2>&1; echo "exit=$?"`);
    expect(denied.stdout).not.toContain("hello from the host");
    expect(denied.stdout).toMatch(/exit=[1-9]/);
    const dns = await sandbox.shell("nslookup host.msb.internal 10.0.2.3");
    expect(dns.stdout).toContain("10.0.2.2");
  });
});

describe("network: none", () => {
  test("the guest has no network interface at all, only lo", async () => {
    await using sandbox = await Sandbox.create({ backend: "qemu", network: "none" });
    const result = await sandbox.shell("ls /sys/class/net");
    expect(result.stdout.trim()).toBe("lo");
  });
});

test("nothing is left running", async () => {
  expect(await eventually(() => processesOf(home).length === 0)).toBe(true);
});
