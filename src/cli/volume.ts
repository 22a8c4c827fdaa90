// `msb volume create|ls|inspect|rm` (named volumes under MSB_HOME/volumes), and the -v/--tmpfs
// flags that mount volumes, host paths and tmpfs into a new sandbox.

import { defineCommand, type ArgsDef } from "citty";
import type { SandboxOptions } from "../config";
import { createVolume, inspectVolume, listVolumes, parseTmpfsFlag, parseVolumeFlag, removeVolume } from "../volumes";
import { checkFlags, flagValues, positionals } from "./args";

/** Flags for commands that create a sandbox. */
export const volumeArgs = {
  volume: {
    type: "string",
    alias: "v",
    description:
      "Mount HOST_PATH:GUEST_PATH[:ro] (a directory or a single file; a bare name is a volume, write ./dir for a relative path) or VOLUME_NAME:GUEST_PATH[:ro] (repeatable)",
  },
  tmpfs: { type: "string", description: "Mount a private tmpfs, GUEST_PATH[:SIZE] e.g. /scratch:256m (repeatable)" },
} satisfies ArgsDef;

/** Adds the -v/--tmpfs mounts in `own` (the raw flags) to `options`, after any from a config file. */
export function withVolumeFlags(options: SandboxOptions, own: string[]): SandboxOptions {
  const flags = [...flagValues(own, ["v", "volume"]).map(parseVolumeFlag), ...flagValues(own, ["tmpfs"]).map(parseTmpfsFlag)];
  return flags.length === 0 ? options : { ...options, volumes: [...(options.volumes ?? []), ...flags] };
}

const jsonArg = { json: { type: "boolean", description: "Print as JSON" } } satisfies ArgsDef;
const createArgs = { name: { type: "positional", description: "Volume name" }, ...jsonArg } satisfies ArgsDef;
const inspectArgs = { name: { type: "positional", description: "Volume name" } } satisfies ArgsDef;
const rmArgs = {
  name: { type: "positional", description: "Volume name(s)" },
  force: { type: "boolean", alias: "f", description: "Delete even if a sandbox's configuration mounts it" },
} satisfies ArgsDef;

export const volume = defineCommand({
  meta: { name: "volume", description: "Manage named volumes: create, ls, inspect, rm" },
  subCommands: {
    create: defineCommand({
      meta: { name: "create", description: "Create a named volume (an empty directory under MSB_HOME/volumes)" },
      args: createArgs,
      run({ rawArgs, args }) {
        const [name] = positionals(rawArgs, createArgs, "volume create", 1, "a volume name");
        const info = createVolume(name!);
        console.log(args.json ? JSON.stringify(info, null, 2) : info.name);
      },
    }),
    ls: defineCommand({
      meta: { name: "ls", description: "List named volumes" },
      args: jsonArg,
      run({ rawArgs, args }) {
        checkFlags(rawArgs, jsonArg, "volume ls");
        const list = listVolumes();
        if (args.json) return console.log(JSON.stringify(list, null, 2));
        console.log(`${"NAME".padEnd(32)} ${"CREATED".padEnd(24)} USED BY`);
        for (const v of list) console.log(`${v.name.padEnd(32)} ${v.createdAt.padEnd(24)} ${v.usedBy.join(",") || "-"}`);
      },
    }),
    inspect: defineCommand({
      meta: { name: "inspect", description: "Print a volume as JSON (name, host path, created, used by)" },
      args: inspectArgs,
      run({ rawArgs }) {
        const [name] = positionals(rawArgs, inspectArgs, "volume inspect", 1, "a volume name");
        console.log(JSON.stringify(inspectVolume(name!), null, 2));
      },
    }),
    rm: defineCommand({
      meta: { name: "rm", description: "Delete named volumes and their files (refused while a sandbox uses one, unless --force)" },
      args: rmArgs,
      run({ rawArgs, args }) {
        const names = positionals(rawArgs, rmArgs, "volume rm", 1, "at least one volume name");
        for (const name of names) {
          removeVolume(name, { force: Boolean(args.force) });
          console.log(name);
        }
      },
    }),
  },
});
