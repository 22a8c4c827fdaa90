// The supervisor: one process per sandbox (msb re-executed in a hidden mode). It starts the VM,
// performs the agent handshake, relays clients on agent.sock to the guest agent, and cleans up
// when the VM ends, whichever way it ends.

import { guestMounts, type GuestMounts } from "./volumes";
import type { Socket, UnixSocketListener } from "bun";
import { appendFileSync, existsSync, readFileSync, renameSync, rmSync, unlinkSync, writeSync } from "node:fs";
import { join } from "node:path";
import { FrameConnection, frameSocketHandlers } from "./agent/connection";
import {
  INITIAL_WINDOW,
  MessageType,
  PROTOCOL_VERSION,
  ProtocolError,
  decodeJson,
  encodeFrame,
  encodeJsonFrame,
  encodeWindow,
  type Frame,
} from "./agent/protocol";
import { guestAssets } from "./assets";
import type { VmBackend, VmExit, VmHandle } from "./vm/backend";
import { selectBackend } from "./vm/select";
import { sandboxDir } from "./paths";
import {
  deleteSandboxRecord,
  getSandboxRecord,
  markEnded,
  markRunning,
  markStopping,
  recordSupervisor,
  retainLog,
  type SandboxRecord,
} from "./state";
import { ExecLog } from "./exec-log";
import { commandFor } from "./image";
import { KILL_SIGNAL, removeSockets } from "./lifecycle";
import { MsbError } from "./errors";
import { serveJsonLines } from "./jsonlines";
import { compilePolicy, NetStack, testResolverFromEnv, type Closable, type CompiledPolicy, type NetStackOptions } from "../netstack";
import { tlsIntercepted } from "./config";
import { loadOrCreateCa } from "./secrets/ca";
import { interceptTls, type InterceptPolicy } from "./secrets/intercept";
import { LeafIssuer } from "./secrets/leaf";
import { placeholder, SecretSet, type Secret } from "./secrets/substitute";

/** How long a guest gets to power off after SHUTDOWN before the VM is killed. */
const SHUTDOWN_GRACE_MS = 10_000;

export const KERNEL_CMDLINE = [
  "console=ttyS0",
  // Triple-fault reset: microvm has no i8042, so reboot=k would spin through its timeouts first.
  "reboot=t",
  "panic=-1",
  "quiet",
  "rdinit=/init",
  // The boot-time check that the IO-APIC delivers timer interrupts panics ("IO-APIC + timer
  // doesn't work!") when an emulated vCPU is starved, as with 20 TCG boots on 2 cores; a VM's
  // timer is known good, so the check only adds a way to fail.
  "no_timer_check",
];

/**
 * Image layers a sandbox can have: QEMU's microvm has 8 virtio-mmio transports, of which the
 * console, rng and network take three and one stays free for a writable disk.
 */
export const MAX_IMAGE_LAYERS = 4;

/** mkfs.ext4, also where Debian keeps it when sbin is not on a user's PATH. */
export function findMkfsExt4(): string | undefined {
  return Bun.which("mkfs.ext4") ?? Bun.which("mkfs.ext4", { PATH: "/usr/sbin:/sbin" }) ?? undefined;
}

/** The serial of a named sandbox's writable-layer disk. */
export const UPPER_SERIAL = "msb-upper";

/** The serial a layer disk carries, so the agent finds it whatever order the disks probe in. */
export function layerSerial(index: number): string {
  return `msb-layer-${index}`;
}

/** What the supervisor tells its creator on stdout, as one JSON line. */
export type ReadyMessage =
  | { ready: true; notice: string; timings: BootTimings }
  | { ready: false; code: string; message: string };

export interface BootTimings {
  /** Supervisor start of the VM to the agent's HELLO. */
  bootMs: number;
  /** HELLO to READY (root set up in the guest). */
  initMs: number;
  /** The guest's own uptime at READY. */
  guestUptimeMs: number;
}

interface ClientState {
  connection: FrameConnection;
  /** Client stream id → agent stream id. */
  streams: Map<number, number>;
}

interface Route {
  client: ClientState | undefined;
  localStream: number;
  /** The sandbox's main command: the sandbox stops when it exits. */
  main?: boolean;
  /** Output (STDOUT/STDERR/DATA) the agent may still send on this stream; unset: INITIAL_WINDOW. */
  credit?: number;
}

export class Supervisor {
  private readonly dir: string;
  private readonly consoleLog: string;
  /** virtio-fs shares and INIT mounts for the sandbox's volumes (src/volumes.ts). */
  private guestMounts: GuestMounts | undefined;
  private readonly logFile: string;
  private vm: VmHandle | undefined;
  private agent: FrameConnection | undefined;
  private vmListener: UnixSocketListener<FrameConnection | undefined> | undefined;
  private clientListener: UnixSocketListener<FrameConnection | undefined> | undefined;
  private readonly clients = new Set<ClientState>();
  private readonly routes = new Map<number, Route>();
  private nextAgentStream = 1;
  private ready = false;
  private stopping = false;
  private network: NetStack | undefined;
  private networkLink: Closable | undefined;
  private handshake!: { resolve: (t: BootTimings) => void; reject: (e: Error) => void };
  private startedAt = 0;
  private helloAt = 0;
  /** Why the sandbox is stopping, once something asked it to. */
  private stopReason: string | undefined;
  private controlListener: UnixSocketListener<undefined> | undefined;
  private readonly execLog: ExecLog;
  /** When the sandbox last had no client and no command; undefined while it is in use. */
  private idleSince: number | undefined = Date.now();
  /** Set when an attached sandbox's creator let it go (detached): its exit no longer stops us. */
  released = false;
  /** Secret values for this run, from the creator's pipe; held in this process's memory only. */
  private secrets: Secret[] = [];
  /** The msb CA certificate the guest is told to trust, when TLS is intercepted. */
  private caPem: string | undefined;

  constructor(private readonly record: SandboxRecord) {
    this.dir = sandboxDir(record.name);
    this.consoleLog = join(this.dir, "console.log");
    this.logFile = join(this.dir, "supervisor.log");
    this.execLog = new ExecLog(join(this.dir, "exec.log"));
  }

  /**
   * The writable layer's disk of a named sandbox on an image: a sparse ext4 file in its directory,
   * made on first start, so what the sandbox writes survives stop/start. Ephemeral sandboxes
   * write to tmpfs instead.
   */
  private upperDisk(): string | undefined {
    if (this.record.ephemeral || !this.record.image) return undefined;
    const path = join(this.dir, "upper.ext4");
    if (existsSync(path)) return path;
    const temp = `${path}.tmp`;
    const mkfs = Bun.spawnSync(
      [
        findMkfsExt4() ?? "mkfs.ext4", "-q", "-F",
        // A small journal: crash consistency for kill -9 without 64 MiB of it per sandbox.
        "-J", "size=16",
        "-E", "root_owner=0:0,lazy_itable_init=1,lazy_journal_init=1",
        "-L", "msb-upper", temp, `${this.record.config.diskSizeMiB}M`,
      ],
      { stdout: "pipe", stderr: "pipe" },
    );
    if (!mkfs.success) {
      rmIfExists(temp);
      const why = mkfs.exitCode === null ? "mkfs.ext4 could not run" : mkfs.stderr.toString().trim();
      throw new MsbError(
        "writable_layer",
        `sandbox ${this.record.name}: cannot make its writable layer ${path}: ${why || "mkfs.ext4 failed"} (mkfs.ext4 comes with e2fsprogs; \`msb doctor\` checks for it)`,
      );
    }
    renameSync(temp, path);
    return path;
  }

  /** Takes the values the creator sent for the recorded secrets; throws naming any it lacks. */
  useSecretValues(values: Record<string, unknown>): void {
    const missing = this.record.config.secrets.filter((s) => typeof values[s.name] !== "string").map((s) => s.name);
    if (missing.length > 0) {
      throw new MsbError("secret_missing", `sandbox ${this.record.name}: no value was given for secret ${missing.join(", ")}`);
    }
    this.secrets = this.record.config.secrets.map((s) => ({ ...s, value: values[s.name] as string }));
  }

  log(message: string): void {
    try {
      appendFileSync(this.logFile, `${new Date().toISOString()} ${message}\n`);
    } catch {
      // The log is best effort; the sandbox directory may already be gone during cleanup.
    }
  }

  /** Boots the VM and completes the handshake; rejects with a user-facing error. */
  async boot(backend: VmBackend): Promise<BootTimings> {
    const config = this.record.config;
    const assets = await guestAssets();
    const kernel = config.kernel ?? assets.kernel;
    const vmSocket = join(this.dir, "vm-agent.sock");
    const handshake = new Promise<BootTimings>((resolve, reject) => (this.handshake = { resolve, reject }));

    this.vmListener = Bun.listen<FrameConnection | undefined>({
      unix: vmSocket,
      socket: frameSocketHandlers((socket) => this.acceptAgent(socket)),
    });
    this.clientListener = Bun.listen<FrameConnection | undefined>({
      unix: join(this.dir, "agent.sock"),
      socket: frameSocketHandlers((socket) => this.acceptClient(socket)),
    });

    this.guestMounts = guestMounts(config.volumes ?? [], this.record.name);
    const upperDisk = this.upperDisk();
    const netSocket = await this.startNetwork();
    this.log(`starting VM: ${backend.describe()}`);
    this.startedAt = performance.now();
    this.vm = await backend.start({
      kernel,
      initrd: assets.initrd,
      // The agent powers off if no INIT arrives in time, so a supervisor that dies mid-boot
      // does not leave its VM waiting forever.
      cmdline: [...KERNEL_CMDLINE, `msb_init_timeout=${Math.ceil(config.bootTimeoutSeconds)}`, ...config.kernelArgs].join(" "),
      cpus: config.cpus,
      memoryMiB: config.memoryMiB,
      disks: [
        ...(this.record.image?.layers ?? []).map((path, index) => ({ path, readOnly: true, serial: layerSerial(index) })),
        ...(upperDisk ? [{ path: upperDisk, readOnly: false, serial: UPPER_SERIAL }] : []),
      ],
      agentSocket: vmSocket,
      netSocket,
      consoleLog: this.consoleLog,
      shares: this.guestMounts.shares,
    });
    this.log(`VM started (pid ${this.vm.pid ?? "in-process"})`);
    this.vm.exited.then((exit) => this.onVmExit(exit));

    const timeout = setTimeout(() => {
      this.handshake.reject(
        new MsbError(
          "boot_timeout",
          `sandbox ${this.record.name}: the guest agent did not start within ${config.bootTimeoutSeconds} s`,
        ),
      );
    }, config.bootTimeoutSeconds * 1000);
    try {
      return await handshake;
    } finally {
      clearTimeout(timeout);
    }
  }

  /** Starts the userspace network stack the guest NIC is attached to; none for `network: "none"`. */
  private async startNetwork(): Promise<string | undefined> {
    const config = this.record.config;
    if (config.network === "none") return undefined;
    let policy: CompiledPolicy;
    try {
      // The host's own addresses (group host) are read now, at the sandbox's start.
      policy = compilePolicy({ preset: config.network, allow: config.allow, deny: config.deny });
    } catch (cause) {
      throw new MsbError("invalid_config", `sandbox ${this.record.name}: ${(cause as Error).message}`, { cause });
    }
    const intercept = tlsIntercepted(config) ? await this.tlsInterception() : undefined;
    this.network = new NetStack({
      intercept,
      // Large frames: bulk transfers move 64 KiB per frame over qemu's plain-frame stream.
      mtu: 65520,
      policy,
      name: this.record.name,
      publishedPorts: config.ports,
      // Tests only (unset otherwise): the hostile-guest suite's own DNS server.
      resolver: testResolverFromEnv(),
      // Denial lines (rate-limited by the stack) go to supervisor.log, which is also our stderr.
      log: (message) => this.log(`net: ${message}`),
    });
    try {
      await this.network.start();
    } catch (cause) {
      throw new MsbError("network", `sandbox ${this.record.name}: ${(cause as Error).message}`, { cause });
    }
    const path = join(this.dir, "net.sock");
    this.networkLink = this.network.listenUnix(path);
    return path;
  }

  /**
   * The TLS relay for this sandbox: guest TLS to the configured ports is terminated here with a
   * leaf from the msb CA and re-originated upstream, and secret values go in on the way.
   */
  private async tlsInterception(): Promise<NetStackOptions["intercept"]> {
    const { tls } = this.record.config;
    let secrets: SecretSet;
    try {
      secrets = new SecretSet(this.secrets);
    } catch (cause) {
      throw new MsbError("invalid_config", `sandbox ${this.record.name}: ${(cause as Error).message}`, { cause });
    }
    const ca = await loadOrCreateCa();
    this.caPem = ca.certPem;
    const policy: InterceptPolicy = {
      secrets,
      issuer: new LeafIssuer(ca),
      bypass: tls.bypass,
      extraCa: tls.ca,
      resolvedFor: (name, ip) => this.network?.resolvedFor(name, ip) ?? false,
      onDisallowed: tls.onDisallowed,
      log: (line) => this.log(`tls: ${line}`),
    };
    const names = this.secrets.map((s) => `${s.name} → ${s.allow.join(",")}`).join("; ");
    this.log(`tls: intercepting ports ${tls.ports.join(",")}${names ? `; secrets ${names}` : ""}${tls.bypass.length ? `; bypass ${tls.bypass.join(",")}` : ""}`);
    return {
      ports: tls.ports,
      handle: (guest, dest) => {
        interceptTls(guest, dest, policy).catch((error) => this.log(`tls: ${dest.ip}:${dest.port}: relay failed: ${(error as Error).message}`));
      },
    };
  }

  private acceptAgent(socket: Socket<FrameConnection | undefined>): void {
    if (this.agent && !this.agent.isClosed) {
      socket.end();
      return;
    }
    this.agent = new FrameConnection(socket, {
      onFrame: (frame) => this.fromAgent(frame),
      onClose: (error) => {
        this.log(`agent channel closed${error ? `: ${error.message}` : ""}`);
        if (error) this.handshake.reject(new MsbError("agent_protocol", `sandbox ${this.record.name}: ${error.message}`));
      },
    });
  }

  private acceptClient(socket: Socket<FrameConnection | undefined>): void {
    const client: ClientState = {
      streams: new Map(),
      connection: undefined as unknown as FrameConnection,
    };
    client.connection = new FrameConnection(socket, {
      onFrame: (frame) => this.fromClient(client, frame),
      onClose: () => this.dropClient(client),
    });
    if (this.stopping) {
      client.connection.close();
      return;
    }
    this.clients.add(client);
    this.noteActivity();
  }

  /** Starts the sandbox's main command (no client: its output goes to the exec log only). */
  runMainCommand(argv: string[]): void {
    if (!this.agent || this.agent.isClosed) return;
    const stream = this.allocateAgentStream();
    this.routes.set(stream, { client: undefined, localStream: 0, main: true });
    const config = this.record.config;
    const request = {
      argv,
      cwd: config.workdir ?? (this.record.image?.config.workingDir || undefined),
      ...(config.user ? { user: config.user } : {}),
      stdin: false,
    };
    this.execLog.start(stream, argv);
    this.noteActivity();
    this.log(`main command: ${JSON.stringify(argv)}`);
    this.agent.send(encodeJsonFrame(stream, MessageType.EXEC, request));
  }

  /** Tracks whether the sandbox is in use, for the idle timeout. */
  private noteActivity(): void {
    this.idleSince = this.clients.size === 0 && this.routes.size === 0 ? Date.now() : undefined;
  }

  /** Stops the sandbox once it has been idle (no client, no command) for `seconds`. */
  watchIdle(seconds: number): void {
    const timer = setInterval(() => {
      if (this.idleSince !== undefined && Date.now() - this.idleSince >= seconds * 1000) {
        clearInterval(timer);
        void this.shutdown(`idle for ${seconds} s (--idle-timeout)`);
      }
    }, Math.min(1000, seconds * 250));
    timer.unref();
  }

  /**
   * The control socket (control.sock): one JSON request per line from msb itself — today
   * `{"op":"metrics"}` — answered with one JSON line. Not reachable from the guest.
   */
  listenControl(): void {
    this.controlListener = Bun.listen<undefined>({
      unix: join(this.dir, "control.sock"),
      socket: {
        data: (socket, data) => {
          const request = data.toString().trim();
          let reply: unknown;
          try {
            const op = (JSON.parse(request) as { op?: unknown }).op;
            if (op === "metrics") reply = this.metrics();
            else if (op === "release") {
              // The creator detached: the sandbox now outlives it.
              this.released = true;
              this.log("released by its creator: it keeps running after the creator exits");
              reply = { ok: true };
            } else reply = { error: `unknown op ${JSON.stringify(op)}` };
          } catch {
            reply = { error: "requests are one JSON object per line" };
          }
          socket.end(`${JSON.stringify(reply)}\n`);
        },
      },
    });
  }

  /** Counters only the supervisor sees; CPU and memory are read from /proc by the caller. */
  metrics(): Record<string, unknown> {
    return {
      clients: this.clients.size,
      execsRunning: this.routes.size,
      network: this.network ? { ...this.network.stats } : null,
    };
  }

  private fromAgent(frame: Frame): void {
    try {
      if (frame.stream === 0) return this.agentControl(frame);
      const route = this.routes.get(frame.stream);
      if (!route) return;
      if (frame.type === MessageType.STDOUT || frame.type === MessageType.STDERR || frame.type === MessageType.DATA) {
        // The guest is untrusted: output beyond the credit granted would pile up here unbounded.
        const credit = route.credit ?? INITIAL_WINDOW;
        if (frame.payload.length > credit) {
          throw new ProtocolError(`the agent sent ${frame.payload.length} bytes on stream ${frame.stream} with ${credit} bytes of credit`);
        }
        route.credit = credit - frame.payload.length;
      }
      if (frame.type === MessageType.STDOUT) this.execLog.output(frame.stream, "stdout", frame.payload);
      else if (frame.type === MessageType.STDERR) this.execLog.output(frame.stream, "stderr", frame.payload);
      else if (frame.type === MessageType.EXIT) {
        this.routes.delete(frame.stream);
        route.client?.streams.delete(route.localStream);
        const status = exitPayload(frame.payload);
        this.execLog.exit(frame.stream, status);
        this.noteActivity();
        if (route.main) {
          const how = typeof status.code === "number" ? `code ${status.code}` : `signal ${String(status.signal)}`;
          void this.shutdown(`its main command exited (${how})`);
        }
      } else if (frame.type === MessageType.FILE_RESULT || frame.type === MessageType.ERROR) {
        // Both end a stream (docs/protocol.md): its ids are free again.
        this.routes.delete(frame.stream);
        route.client?.streams.delete(route.localStream);
      }
      if (route.client && !route.client.connection.isClosed) {
        route.client.connection.send(encodeFrame(route.localStream, frame.type, frame.payload));
      } else if (frame.type === MessageType.STDOUT || frame.type === MessageType.STDERR || frame.type === MessageType.DATA) {
        // Nobody reads this stream any more: return the credit so the agent can drain the pipes
        // of the process we already killed.
        route.credit = (route.credit ?? INITIAL_WINDOW) + frame.payload.length;
        this.agent?.send(encodeWindow(frame.stream, frame.payload.length));
      }
    } catch (error) {
      this.log(`bad frame from agent: ${(error as Error).message}`);
      this.agent?.close(error as Error);
      this.vm?.kill();
    }
  }

  private agentControl(frame: Frame): void {
    switch (frame.type) {
      case MessageType.HELLO: {
        const hello = decodeJson(frame.payload);
        this.helloAt = performance.now();
        this.log(`agent hello: ${JSON.stringify(hello)}`);
        if (hello.protocol !== PROTOCOL_VERSION) {
          this.agent?.send(
            encodeJsonFrame(0, MessageType.ERROR, { code: "version", message: `host speaks protocol ${PROTOCOL_VERSION}` }),
          );
          this.handshake.reject(
            new MsbError("agent_version", `sandbox ${this.record.name}: agent speaks protocol ${String(hello.protocol)}, host ${PROTOCOL_VERSION}`),
          );
          return;
        }
        const config = this.record.config;
        this.agent?.send(
          encodeJsonFrame(0, MessageType.INIT, {
            protocol: PROTOCOL_VERSION,
            hostname: config.hostname ?? this.record.name.slice(0, 63),
            root: this.guestRoot(),
            env: {
              PATH: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
              HOME: "/root",
              HOSTNAME: this.record.name,
              ...imageEnv(this.record.image?.config.env),
              ...config.env,
              // The guest only ever sees placeholders; the relay swaps the values in on the wire.
              ...Object.fromEntries(config.secrets.map((s) => [s.name, placeholder(s.name)])),
            },
            ...(this.caPem ? { ca: this.caPem } : {}),
            clockMs: Date.now(),
            net: this.network?.guestConfig() ?? null,
            mounts: this.guestMounts?.mounts ?? [],
          }),
        );
        return;
      }
      case MessageType.READY: {
        const body = decodeJson(frame.payload);
        const readyAt = performance.now();
        this.ready = true;
        this.handshake.resolve({
          bootMs: Math.round(this.helloAt - this.startedAt),
          initMs: Math.round(readyAt - this.helloAt),
          guestUptimeMs: typeof body.bootMs === "number" ? body.bootMs : -1,
        });
        return;
      }
      case MessageType.ERROR: {
        const body = decodeJson(frame.payload);
        this.log(`agent error: ${JSON.stringify(body)}`);
        if (!this.ready) {
          this.handshake.reject(
            new MsbError("agent_init", `sandbox ${this.record.name}: the guest agent failed to start: ${String(body.message)}`),
          );
        }
        return;
      }
      case MessageType.PONG:
        return;
    }
  }

  /** The INIT root: the built-in busybox tree, or the image's layers under a private tmpfs upper. */
  private guestRoot(): Record<string, unknown> {
    const image = this.record.image;
    if (!image) return { kind: "initramfs", path: "/rootfs" };
    const upper = this.record.ephemeral ? { kind: "tmpfs" } : { kind: "disk", serial: UPPER_SERIAL };
    return { kind: "overlay", layers: image.layers.map((_, index) => layerSerial(index)), upper };
  }

  private fromClient(client: ClientState, frame: Frame): void {
    if (frame.stream === 0) {
      if (frame.type === MessageType.PING) client.connection.send(encodeFrame(0, MessageType.PONG, frame.payload));
      else if (frame.type === MessageType.SHUTDOWN) void this.shutdown("requested by a client");
      else client.connection.send(encodeJsonFrame(0, MessageType.ERROR, { code: "request", message: `message type ${frame.type} is not accepted on stream 0` }));
      return;
    }
    if (!this.agent || this.agent.isClosed || this.stopping) {
      if (frame.type === MessageType.EXEC || frame.type === MessageType.FILE) {
        client.connection.send(encodeJsonFrame(frame.stream, MessageType.ERROR, { code: "stopping", message: `sandbox ${this.record.name} is stopping` }));
      }
      return;
    }
    if (frame.type === MessageType.EXEC || frame.type === MessageType.FILE) {
      if (client.streams.has(frame.stream)) {
        client.connection.send(encodeJsonFrame(frame.stream, MessageType.ERROR, { code: "stream", message: `stream ${frame.stream} is already in use` }));
        return;
      }
      const agentStream = this.allocateAgentStream();
      client.streams.set(frame.stream, agentStream);
      this.routes.set(agentStream, { client, localStream: frame.stream });
      if (frame.type === MessageType.EXEC) this.execLog.start(agentStream, execArgv(frame.payload));
      this.noteActivity();
      this.agent.send(encodeFrame(agentStream, frame.type, frame.payload));
      return;
    }
    const agentStream = client.streams.get(frame.stream);
    // Frames for a stream that has just exited race with its EXIT; dropping them is correct.
    if (agentStream === undefined) return;
    if (frame.type === MessageType.DETACH) {
      // The command outlives this client: no one reads it now but the exec log.
      client.streams.delete(frame.stream);
      const route = this.routes.get(agentStream);
      if (route) route.client = undefined;
      this.log(`exec ${agentStream} detached from its client`);
      return;
    }
    if (frame.type === MessageType.STDIN || frame.type === MessageType.SIGNAL || frame.type === MessageType.WINDOW || frame.type === MessageType.RESIZE || frame.type === MessageType.DATA) {
      const route = this.routes.get(agentStream);
      if (frame.type === MessageType.WINDOW && route && frame.payload.length === 4) {
        route.credit = (route.credit ?? INITIAL_WINDOW) + new DataView(frame.payload.buffer, frame.payload.byteOffset, 4).getUint32(0);
      }
      this.agent.send(encodeFrame(agentStream, frame.type, frame.payload));
    }
  }

  private allocateAgentStream(): number {
    while (this.routes.has(this.nextAgentStream)) this.nextAgentStream = (this.nextAgentStream % 0xffff_fffe) + 1;
    const stream = this.nextAgentStream;
    this.nextAgentStream = (this.nextAgentStream % 0xffff_fffe) + 1;
    return stream;
  }

  private dropClient(client: ClientState): void {
    this.clients.delete(client);
    // A client that goes away takes its commands with it.
    this.noteActivity();
    for (const agentStream of client.streams.values()) {
      const route = this.routes.get(agentStream);
      if (route) route.client = undefined;
      this.agent?.send(encodeJsonFrame(agentStream, MessageType.SIGNAL, { signal: 9 }));
    }
    client.streams.clear();
  }

  /** Kills the VM at once; the run counts as stopped for `why`. */
  kill(why: string): void {
    this.stopping = true;
    this.stopReason ??= why;
    this.log(`killing the VM: ${why}`);
    markStopping(this.record.name);
    this.vm?.kill();
  }

  /** Asks the guest to power off; kills the VM if it does not within the grace period. */
  async shutdown(why: string): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    this.stopReason = why;
    this.log(`shutting down: ${why}`);
    markStopping(this.record.name);
    if (this.agent && !this.agent.isClosed) this.agent.send(encodeFrame(0, MessageType.SHUTDOWN));
    else this.vm?.kill();
    const timer = setTimeout(() => {
      this.log("guest did not power off in time; killing the VM");
      this.stopReason = `${this.stopReason}; the guest did not power off within ${SHUTDOWN_GRACE_MS / 1000} s and was killed`;
      this.vm?.kill();
    }, SHUTDOWN_GRACE_MS);
    await this.vm?.exited;
    clearTimeout(timer);
  }

  private onVmExit(exit: VmExit): void {
    this.log(`VM ended: ${exit.reason}${exit.detail ? ` (${exit.detail})` : ""}`);
    if (!this.ready) {
      const detail = exit.detail ? `: ${exit.detail}` : "";
      this.handshake.reject(
        new MsbError("boot_failed", `sandbox ${this.record.name}: the VM stopped before the guest agent started${detail}`),
      );
    }
    this.stopping = true;
    for (const client of this.clients) client.connection.close();
    this.agent?.close();
  }

  /** Releases everything the sandbox held on the host. Returns the retained console log, if any. */
  cleanup(keepConsoleLog: boolean): string | undefined {
    this.vm?.kill();
    this.vmListener?.stop(true);
    this.clientListener?.stop(true);
    this.controlListener?.stop(true);
    void this.execLog.close();
    this.networkLink?.close();
    this.network?.close();
    const retained = keepConsoleLog ? retainLog(this.consoleLog, `${this.record.name}-${Date.now()}.console.log`) : undefined;
    if (this.record.ephemeral) rmSync(this.dir, { recursive: true, force: true });
    else removeSockets(this.record.name);
    return retained;
  }

  /**
   * What an error message should quote from a console log: the line that says why the kernel died
   * (a panic, an oops) when there is one, since the stack trace after it pushes it out of the tail,
   * then the last lines.
   */
  consoleSummary(path = this.consoleLog, lines = 12): string {
    let text: string;
    try {
      text = readFileSync(path, "utf8");
    } catch {
      return "";
    }
    const all = text.trimEnd().split("\n");
    const tail = all.slice(-lines);
    const cause = all.find((line) => /Kernel panic|BUG:|Oops:|general protection fault/.test(line));
    return [cause && !tail.includes(cause) ? `${cause}\n...` : undefined, ...tail].filter(Boolean).join("\n");
  }

  /**
   * How the run ended, in the state's terms: stopped when it was asked to stop or the guest powered
   * off by itself; crashed when the kernel panicked or the VM died.
   */
  outcome(exit: VmExit): { status: "stopped" | "crashed"; reason: string } {
    const panic = this.consolePanic();
    if (panic) return { status: "crashed", reason: `guest kernel panic: ${panic}` };
    const clean = exit.reason === "reset" || exit.reason === "poweroff";
    if (clean) return { status: "stopped", reason: this.stopReason ?? "the guest powered off" };
    const detail = exit.detail ? ` (${exit.detail})` : "";
    if (this.stopReason && exit.reason === "killed") return { status: "stopped", reason: this.stopReason };
    return { status: "crashed", reason: `the VM ended unexpectedly: ${exit.reason}${detail}` };
  }

  /** The kernel's panic line, if the console log has one. */
  private consolePanic(): string | undefined {
    try {
      const text = readFileSync(this.consoleLog, "utf8");
      const line = text.split("\n").find((l) => l.includes("Kernel panic"));
      return line?.replace(/^\[\s*[\d.]+\]\s*/, "").trim();
    } catch {
      return undefined;
    }
  }

  get vmPid(): number | undefined {
    return this.vm?.pid;
  }

  get isReady(): boolean {
    return this.ready;
  }

  killVm(): void {
    this.vm?.kill();
  }

  get vmExited(): Promise<VmExit> | undefined {
    return this.vm?.exited;
  }
}

/** The argv of an EXEC request, for the exec log; whatever the payload is, never throws. */
function execArgv(payload: Uint8Array): unknown {
  try {
    return decodeJson(payload).argv;
  } catch {
    return [];
  }
}

function exitPayload(payload: Uint8Array): { code?: unknown; signal?: unknown; timedOut?: unknown } {
  try {
    return decodeJson(payload);
  } catch {
    return {};
  }
}

/** An image's `Env` ("K=V" strings) as an object; entries without '=' are ignored as Docker does. */
function imageEnv(env: string[] | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const entry of env ?? []) {
    const eq = entry.indexOf("=");
    if (eq > 0) out[entry.slice(0, eq)] = entry.slice(eq + 1);
  }
  return out;
}

function rmIfExists(path: string): void {
  try {
    unlinkSync(path);
  } catch {
    // Already gone.
  }
}

function writeReady(message: ReadyMessage): void {
  try {
    writeSync(1, `${JSON.stringify(message)}\n`);
  } catch {
    // The creator may have gone; nothing to tell.
  }
}

/** Entry point of the hidden `__supervise NAME` mode. */
export async function runSupervisor(name: string): Promise<never> {
  const record = getSandboxRecord(name);
  recordSupervisor(name, process.pid);
  const supervisor = new Supervisor(record);
  // A stop asked for during boot is honoured once the VM is up (shutdown needs it).
  let stopDuringBoot: string | undefined;
  for (const signal of ["SIGTERM", "SIGINT", "SIGHUP"] as const) {
    process.on(signal, () => {
      if (supervisor.isReady) void supervisor.shutdown(`stopped (${signal})`);
      else stopDuringBoot ??= `stopped during boot (${signal})`;
    });
  }
  process.on(KILL_SIGNAL, () => supervisor.kill("killed (msb kill)"));
  const creator = readCreatorPipe();
  let timings: BootTimings;
  try {
    if (record.config.secrets.length > 0) supervisor.useSecretValues(await creator.secretValues);
    const backend = selectBackend(record.config.backend);
    timings = await supervisor.boot(backend);
    supervisor.listenControl();
    markRunning(name, supervisor.vmPid);
    supervisor.log(`ready: ${JSON.stringify(timings)}`);
    writeReady({ ready: true, notice: backend.describe(), timings });
  } catch (error) {
    const err = error as MsbError;
    supervisor.log(`boot failed: ${err.message}`);
    supervisor.killVm();
    await supervisor.vmExited;
    const retained = supervisor.cleanup(true);
    const tail = retained ? supervisor.consoleSummary(retained) : "";
    const pointer = retained ? `\nkernel log: ${retained}${tail ? `\n--- last lines ---\n${tail}` : " (empty)"}` : "";
    const message = `${err.message}${pointer}`;
    if (record.ephemeral) deleteSandboxRecord(name);
    else markEnded(name, "crashed", `boot failed: ${err.message}`);
    writeReady({ ready: false, code: err.code ?? "boot_failed", message });
    process.exit(1);
  }

  if (stopDuringBoot) void supervisor.shutdown(stopDuringBoot);
  else if (record.config.command) {
    const image = record.image;
    // An image with neither Entrypoint nor Cmd and no command given: nothing to run, it idles.
    const argv = image && (record.config.command.length > 0 || image.config.entrypoint?.length || image.config.cmd?.length)
      ? commandFor(image.config, record.config.command, image.reference)
      : record.config.command;
    if (argv.length > 0) supervisor.runMainCommand(argv);
  }
  if (!record.config.detached) {
    creator.closed.then(() => {
      if (!supervisor.released) void supervisor.shutdown("its creator exited");
    });
  }
  const { maxDurationSeconds, idleTimeoutSeconds } = record.config;
  if (maxDurationSeconds) {
    setTimeout(() => void supervisor.shutdown(`reached its maximum duration of ${maxDurationSeconds} s`), maxDurationSeconds * 1000).unref();
  }
  if (idleTimeoutSeconds) supervisor.watchIdle(idleTimeoutSeconds);

  const exit = await supervisor.vmExited!;
  const outcome = supervisor.outcome(exit);
  supervisor.log(`${outcome.status}: ${outcome.reason}`);
  supervisor.cleanup(outcome.status === "crashed" && record.ephemeral);
  if (record.ephemeral) deleteSandboxRecord(name);
  else markEnded(name, outcome.status, outcome.reason);
  process.exit(outcome.status === "stopped" ? 0 : 1);
}

/**
 * Our stdin, the creator's pipe, read as JSON lines: the first line carries the secret values
 * (when the sandbox has secrets), and an attached sandbox's creator holds the pipe open, so its end
 * means the creator exited.
 */
function readCreatorPipe(): { secretValues: Promise<Record<string, unknown>>; closed: Promise<void> } {
  let deliver!: (values: Record<string, unknown>) => void;
  let fail!: (error: MsbError) => void;
  const secretValues = new Promise<Record<string, unknown>>((resolve, reject) => {
    deliver = resolve;
    fail = reject;
  });
  // Without secrets nobody waits for them: the end of the pipe must not be an unhandled rejection.
  secretValues.catch(() => {});
  let first = true;
  const closed = serveJsonLines(Bun.stdin.stream(), {
    maxLineBytes: 1 << 20,
    onTooLong: () => fail(new MsbError("secret_missing", "the creator's secret values exceed 1 MiB")),
    onLine: async (line) => {
      if (!first) return; // the creator writes nothing after the secret values
      first = false;
      let secrets: unknown;
      try {
        secrets = (JSON.parse(line) as { secrets?: unknown }).secrets;
      } catch {
        secrets = undefined;
      }
      if (typeof secrets === "object" && secrets !== null) deliver(secrets as Record<string, unknown>);
      else fail(new MsbError("secret_missing", "the creator sent no readable secret values"));
    },
  })
    // A read error means the same as the end of the pipe here.
    .catch(() => {})
    .then(() => fail(new MsbError("secret_missing", "the creator closed its pipe before sending the secret values")));
  return { secretValues, closed };
}
