// `msb cp SRC DST`: copy files and directory trees between the host and a running sandbox, keeping
// modes. One side is `NAME:/path` in the sandbox; as with cp, a destination that is an existing
// directory receives the source under its own name.

import { existsSync, statSync } from "node:fs";
import { basename, resolve } from "node:path";
import { defineCommand, type ArgsDef } from "citty";
import { MsbError } from "../errors";
import { Sandbox } from "../sandbox";
import { SANDBOX_NAME } from "../config";
import { positionals } from "./args";

export interface SandboxPath {
  sandbox: string;
  path: string;
}

/**
 * `NAME:/abs/path` names a path in a sandbox; anything else is a host path. A host path with a
 * colon can be written as ./a:b.
 */
export function parseCopyOperand(text: string): SandboxPath | string {
  const colon = text.indexOf(":");
  if (colon <= 0 || text.startsWith("/") || text.startsWith(".")) return text;
  const sandbox = text.slice(0, colon);
  const path = text.slice(colon + 1);
  if (!SANDBOX_NAME.test(sandbox)) return text;
  if (!path.startsWith("/")) {
    throw new MsbError("usage", `${text}: the path in sandbox ${sandbox} must be absolute, e.g. ${sandbox}:/root/${path || "file"}`);
  }
  return { sandbox, path };
}

function guestBasename(path: string): string {
  const trimmed = path.replace(/\/+$/, "");
  return trimmed.slice(trimmed.lastIndexOf("/") + 1);
}

const cpArgs = {
  source: { type: "positional", required: false, description: "Host path or NAME:/path" },
  destination: { type: "positional", required: false, description: "Host path or NAME:/path" },
  quiet: { type: "boolean", alias: "q", description: "Don't print the byte count" },
} satisfies ArgsDef;

export const cp = defineCommand({
  meta: { name: "cp", description: "Copy files or directories between the host and a running sandbox: msb cp ./src box:/app, msb cp box:/out ." },
  args: cpArgs,
  async run({ rawArgs, args }) {
    const operands = positionals(rawArgs, cpArgs, "cp", 2, "a source and a destination, one of them NAME:/path");
    if (operands.length !== 2) throw new MsbError("usage", `msb cp takes a source and a destination, got ${operands.length} paths`);
    const source = parseCopyOperand(operands[0]!);
    const destination = parseCopyOperand(operands[1]!);
    if (typeof source === typeof destination) {
      throw new MsbError("usage", "msb cp copies between the host and a sandbox: exactly one of the two paths must be NAME:/path");
    }
    let bytes: number;
    if (typeof source === "string") {
      const target = destination as SandboxPath;
      const hostPath = resolve(source);
      if (!existsSync(hostPath)) throw new MsbError("not_found", `${source} does not exist on the host`);
      await using sandbox = await Sandbox.get(target.sandbox);
      const into = (await sandbox.fs.exists(target.path)) && (await sandbox.fs.stat(target.path)).type === "directory";
      const guestPath = into ? `${target.path.replace(/\/+$/, "")}/${basename(hostPath)}` : target.path;
      bytes = await sandbox.fs.copyIn(hostPath, guestPath);
    } else {
      const target = resolve(destination as string);
      await using sandbox = await Sandbox.get(source.sandbox);
      const into = existsSync(target) && statSync(target).isDirectory();
      const hostPath = into ? resolve(target, guestBasename(source.path)) : target;
      bytes = await sandbox.fs.copyOut(source.path, hostPath);
    }
    if (!args.quiet) process.stderr.write(`msb: copied ${bytes} bytes\n`);
  },
});
