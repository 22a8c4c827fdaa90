// The sandbox configuration accepted by the SDK (and, through it, the CLI), validated with zod so
// a bad option is reported with its key and the problem.

import { volumeSchema } from "./volumes";
import { z } from "zod";
import { MsbError } from "./errors";
import { ruleInputSchema } from "../netstack/policy/rules";
import { SECRET_NAME } from "./secrets/substitute";

export const SANDBOX_NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$/;

export const sandboxOptionsSchema = z
  .object({
    name: z
      .string()
      .regex(SANDBOX_NAME, "must be 1-63 letters, digits, '_', '.' or '-', starting with a letter or digit")
      .optional(),
    /** Image reference; omitted: the embedded default root (busybox). */
    image: z.string().min(1).optional(),
    /** When to contact the registry for the image. */
    pull: z.enum(["always", "if-missing", "never"]).default("if-missing"),
    /** Plain-HTTP registry (loopback registries are plain HTTP unless this says false). */
    insecure: z.boolean().optional(),
    cpus: z.number().int().min(1).max(64).default(1),
    memoryMiB: z.number().int().min(64).max(1024 * 1024).default(512),
    env: z.record(z.string().regex(/^[^=\0]+$/, "environment names cannot contain '=' or NUL"), z.string()).default({}),
    workdir: z.string().startsWith("/", "must be an absolute path inside the sandbox").optional(),
    backend: z.enum(["qemu", "native"]).optional(),
    /**
     * The guest's network: `none` (no NIC at all), `public` (the internet, not the host, LAN,
     * or cloud metadata), `all` (everything the host can reach, the host's loopback included).
     */
    network: z.enum(["none", "public", "all"]).default("public"),
    /**
     * Egress rules on top of `network` (netstack/README.md, "Egress policy"): compact strings like
     * `tcp:api.example.com:443`, `cidr:10.1.0.0/16`, `group:host`, or `{ to, proto?, ports?, direction? }`.
     * Deny rules are checked first, then allow rules, then the preset; `deny: ["any"]` makes the
     * default deny, so only what `allow` names passes.
     */
    allow: z.array(ruleInputSchema).default([]),
    deny: z.array(ruleInputSchema).default([]),
    /** Published ports, `[IP:]HOST:GUEST[/udp]`; bound to 127.0.0.1 unless an IP is given. */
    ports: z.array(z.string()).default([]),
    /** Keep running after the creating process exits. */
    detached: z.boolean().default(false),
    /**
     * A main command the supervisor runs once the sandbox is up (`msb run -d IMAGE -- CMD`): the
     * image's Entrypoint followed by these arguments (by its Cmd when empty). The sandbox stops
     * when it exits; its output is in `msb logs`. Without it a sandbox waits for commands.
     */
    command: z.array(z.string()).optional(),
    /** The guest's host name (default: the sandbox's name). */
    hostname: z
      .string()
      .regex(/^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$/, "must be a valid host name (letters, digits, '-', dot-separated labels)")
      .max(253)
      .optional(),
    /** Free-form labels for finding sandboxes (`msb ls --label K=V`). */
    labels: z.record(z.string().regex(/^[^=\0]+$/, "label names cannot contain '=' or NUL"), z.string()).default({}),
    /** Who commands run as unless an exec says otherwise: a user name from the image, or UID[:GID]. */
    user: z.string().min(1).optional(),
    /** Stop the sandbox this many seconds after it started, whatever it is doing. */
    maxDurationSeconds: z.number().positive().optional(),
    /** Stop the sandbox after this many seconds with no client connected and no command running. */
    idleTimeoutSeconds: z.number().positive().optional(),
    /** Size of a named sandbox's writable layer (a sparse disk; only what is written takes space). */
    diskSizeMiB: z.number().int().min(64).max(16 * 1024 * 1024).default(10240),
    /** Seconds to wait for the guest agent before giving up on a boot. */
    bootTimeoutSeconds: z.number().positive().max(3600).default(60),
    /** Advanced: extra kernel command-line arguments (debugging a guest). */
    kernelArgs: z.array(z.string()).default([]),
    /** Advanced: a guest kernel other than the built-in one. */
    kernel: z.string().optional(),
    /** Host directories/files, named volumes and tmpfs mounts (src/volumes.ts); host paths become absolute here. */
    volumes: z.array(volumeSchema).default([]),
    /**
     * Secrets the guest sees only as placeholders (`NAME=$MSB_NAME` in its environment); the
     * supervisor puts `value` in, inside intercepted TLS, only on requests to the `allow` hosts
     * ("api.example.com" or "*.example.com"). Headers and Basic auth always; the request-target
     * with `query`, bodies with `body`. The value stays in supervisor memory: the stored record
     * keeps names and allow-lists only, so each start must be given the values again (the SDK's
     * `start` option, or the host environment variable NAME).
     */
    secrets: z
      .array(
        z
          .object({
            name: z.string().regex(SECRET_NAME, "must be A-Z, 0-9 and _, not starting with a digit (it becomes an environment variable)"),
            value: z.string().optional(),
            allow: z.array(z.string().min(1)).min(1, "name at least one host the secret may be sent to"),
            query: z.boolean().optional(),
            body: z.boolean().optional(),
          })
          .strict(),
      )
      .default([])
      .refine((list) => new Set(list.map((s) => s.name)).size === list.length, "each secret name may appear once"),
    /**
     * TLS interception (on whenever secrets are set, or with `intercept: true`): guest TLS to
     * `ports` is terminated by the supervisor with a certificate from the msb CA (which the guest
     * trusts) and re-originated upstream, verified against the host's trust store plus `ca`.
     * Server names matching `bypass` ("host" or "*.domain") are relayed untouched. UDP to the
     * ports (QUIC) is refused so clients use TCP.
     */
    tls: z
      .object({
        intercept: z.boolean().optional(),
        ports: z.array(z.number().int().min(1).max(65535)).min(1).default([443]),
        bypass: z.array(z.string().min(1)).default([]),
        /** Extra CA certificates (PEM) trusted for upstream connections. */
        ca: z.array(z.string().includes("-----BEGIN CERTIFICATE-----", { message: "must be a PEM certificate" })).default([]),
        /** A placeholder bound for a host its secret does not allow: block the request (default) or send it as is. */
        onDisallowed: z.enum(["block", "pass"]).default("block"),
      })
      .strict()
      .prefault({}),
  })
  .strict();

export type SandboxOptions = z.input<typeof sandboxOptionsSchema>;
export type SandboxConfig = z.output<typeof sandboxOptionsSchema>;

export function parseSandboxOptions(options: SandboxOptions = {}): SandboxConfig {
  const result = sandboxOptionsSchema.safeParse(options);
  if (result.success) return result.data;
  const problems = result.error.issues.map((issue) => {
    const key = issue.path.join(".") || "(options)";
    return `${key}: ${issue.message}`;
  });
  throw new MsbError("invalid_config", `invalid sandbox options: ${problems.join("; ")}`);
}

/** Whether guest TLS is intercepted: asked for, or implied by secrets. */
export function tlsIntercepted(config: SandboxConfig): boolean {
  return config.tls.intercept ?? config.secrets.length > 0;
}
