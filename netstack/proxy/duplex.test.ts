// Intercepted flows through the stack: the namespace guest (Linux's own TCP stack on a TAP device)
// talks to an intercepted port, and the stack hands each connection to host code as a Duplex. A
// slow reader and a large transfer show backpressure both ways; UDP to an intercepted port is
// refused; a guest reset reaches the Duplex as an error. Nothing is dialled: the handler answers.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { Duplex } from "node:stream";
import type { TCPSocketListener } from "bun";
import { harnessUnavailable, startGuest, type Guest } from "../test/harness";

const why = harnessUnavailable() ?? (Bun.which("python3") ? null : "needs python3");
const suite = why ? describe.skip : describe;
if (why) test.skip(`intercepted-flow tests skipped: ${why}`, () => {});

/** Never dialled: intercepted flows are answered by the handler, and UDP to it is refused. */
const DEST = "44.44.44.44";

suite("intercepted flows as Duplex streams", () => {
  let g: Guest;
  const flows: Array<{ dest: { ip: string; port: number }; closed: Promise<string> }> = [];
  let denials: string[] = [];
  let plain: TCPSocketListener<undefined>;

  beforeAll(async () => {
    // A plain server on host loopback, reached through the gateway: a port that is not intercepted.
    plain = Bun.listen<undefined>({ hostname: "127.0.0.1", port: 0, socket: { open(s) { s.end("plain\n"); }, data() {} } });
    g = await startGuest({
      policy: (d) => d.ip === DEST || (d.viaHostAlias && d.ip === "127.0.0.1" && d.port === plain.port),
      log: (m) => denials.push(m),
      intercept: {
        ports: [443],
        handle(guest: Duplex, dest) {
          // Echo with a reader that takes a pause every 256 KiB: the guest's window must close and
          // reopen, and what comes back must be exactly what was sent.
          let sinceBreak = 0;
          const closed = new Promise<string>((resolve) => {
            guest.on("error", (e) => resolve(`error: ${e.message}`));
            guest.on("close", () => resolve("closed"));
          });
          guest.on("data", (chunk: Buffer) => {
            const wantMore = guest.write(chunk);
            sinceBreak += chunk.length;
            if (sinceBreak > 256 * 1024 || !wantMore) {
              sinceBreak = 0;
              guest.pause();
              setTimeout(() => guest.resume(), 5);
            }
          });
          guest.on("end", () => guest.end());
          flows.push({ dest, closed });
        },
      },
    });
  }, 60_000);
  afterAll(async () => { await g?.close(); plain?.stop(true); });

  test("16 MiB echoed through an intercepted port arrives intact, with backpressure", async () => {
    const script = `
import socket, hashlib, os, threading
data = os.urandom(16 << 20)
s = socket.create_connection(("${DEST}", 443), 10)
s.settimeout(60)
def send():
    s.sendall(data); s.shutdown(socket.SHUT_WR)
t = threading.Thread(target=send); t.start()
got = hashlib.sha256(); n = 0
while True:
    b = s.recv(1 << 20)
    if not b: break
    got.update(b); n += len(b)
t.join()
print(n, hashlib.sha256(data).hexdigest() == got.hexdigest())
`;
    const r = await g.exec(["python3", "-c", script], { timeoutMs: 120_000 });
    expect(r.stdout.trim()).toBe(`${16 << 20} True`);
    const flow = flows.at(-1)!;
    expect(flow.dest).toEqual({ ip: DEST, port: 443 });
    expect(await flow.closed).toBe("closed");
  }, 180_000);

  test("a guest reset reaches the Duplex as an error", async () => {
    const before = flows.length;
    const script = `
import socket, struct, time
s = socket.create_connection(("${DEST}", 443), 10)
s.sendall(b"hello")
time.sleep(0.3)
s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
s.close()
`;
    await g.exec(["python3", "-c", script]);
    expect(flows.length).toBe(before + 1);
    expect(await flows.at(-1)!.closed).toBe("error: the guest reset the connection");
  }, 60_000);

  test("UDP to an intercepted port (QUIC) is refused and logged; other ports are not intercepted", async () => {
    denials = [];
    const r = await g.exec(["python3", "-c", `
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
s.connect(("${DEST}", 443))
s.send(b"quic initial")
try:
    s.recv(100); print("answered")
except OSError: print("refused")
except socket.timeout: print("timeout")
`]);
    expect(r.stdout.trim()).toBe("refused");
    expect(denials.some((l) => l.includes(`udp ${DEST}:443`) && l.includes("QUIC"))).toBe(true);
    const before = flows.length;
    const other = await g.exec(["python3", "-c", `
import socket
print(socket.create_connection(("10.0.2.2", ${plain.port}), 5).recv(100).decode().strip())
`]);
    expect(other.stdout.trim()).toBe("plain");
    expect(flows.length).toBe(before);
  }, 60_000);
});
