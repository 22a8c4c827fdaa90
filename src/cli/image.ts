// Image commands: msb pull, images, rmi, image prune|import|inspect, login, logout — thin layers
// over src/image, with progress on stderr and --json where they list or describe.

import { defineCommand, type ArgsDef } from "citty";
import { MsbError } from "../errors";
import {
  importImage,
  inspectImage,
  listImages,
  login,
  logout,
  progressBars,
  pruneImages,
  pullImage,
  removeImage,
} from "../image";
import { imagesInUse } from "../state";
import { checkFlags, positionals } from "./args";
import { MAX_IMAGE_LAYERS } from "../supervisor";

function mib(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

const pullArgs = {
  reference: { type: "positional", description: "Image reference, e.g. python:3.12-slim or localhost:5000/team/tool" },
  insecure: { type: "boolean", description: "Allow a plain-HTTP registry" },
  quiet: { type: "boolean", alias: "q", description: "No progress bars" },
} satisfies ArgsDef;

export const pull = defineCommand({
  meta: { name: "pull", description: "Pull an image into the local store" },
  args: pullArgs,
  async run({ rawArgs, args }) {
    const [reference] = positionals(rawArgs, pullArgs, "pull", 1, "an image reference");
    const record = await pullImage(reference!, {
      // An image with more layers than a VM has disks is flattened now, not at its first run.
      maxLayers: MAX_IMAGE_LAYERS,
      policy: "always",
      insecure: args.insecure ? true : undefined,
      onProgress: args.quiet ? undefined : progressBars(),
    });
    console.log(record.id);
  },
});

const imagesArgs = { json: { type: "boolean", description: "Print as JSON" } } satisfies ArgsDef;

export const images = defineCommand({
  meta: { name: "images", description: "List the images in the local store" },
  args: imagesArgs,
  run({ rawArgs, args }) {
    checkFlags(rawArgs, imagesArgs, "images");
    const list = listImages();
    if (args.json) return console.log(JSON.stringify(list, null, 2));
    console.log(`${"REFERENCE".padEnd(48)} ${"ID".padEnd(19)} ${"LAYERS".padEnd(6)} SIZE`);
    for (const image of list) {
      const names = image.displayReferences.length ? image.displayReferences : ["<none>"];
      for (const name of names) console.log(`${name.padEnd(48)} ${image.id.slice(7, 19).padEnd(19)} ${String(image.layers).padEnd(6)} ${mib(image.size)}`);
    }
  },
});

const rmiArgs = {
  force: { type: "boolean", alias: "f", description: "Untag even if a sandbox uses it (the image stays until unused)" },
} satisfies ArgsDef;

export const rmi = defineCommand({
  meta: { name: "rmi", description: "Remove images from the local store (never one a sandbox uses)" },
  args: rmiArgs,
  run({ rawArgs, args }) {
    const refs = positionals(rawArgs, rmiArgs, "rmi", 1, "at least one image reference or id");
    const inUse = imagesInUse();
    for (const ref of refs) {
      const result = removeImage(ref, { inUse: (id) => inUse.has(id), force: Boolean(args.force) });
      for (const untagged of result.untagged) console.log(`untagged ${untagged}`);
      for (const deleted of result.deleted) console.log(`deleted ${deleted}`);
    }
  },
});

const pruneArgs = {} satisfies ArgsDef;
const importArgs = {
  path: { type: "positional", description: "OCI layout directory, OCI archive or docker save archive" },
  tag: { type: "string", description: "Reference to tag the image with" },
} satisfies ArgsDef;
const inspectArgs = { reference: { type: "positional", description: "Image reference or id" } } satisfies ArgsDef;

export const image = defineCommand({
  meta: { name: "image", description: "Manage images: prune, import, inspect" },
  subCommands: {
    prune: defineCommand({
      meta: { name: "prune", description: "Delete images no tag points at, unused layers and abandoned pulls" },
      args: pruneArgs,
      run({ rawArgs }) {
        checkFlags(rawArgs, pruneArgs, "image prune");
        const inUse = imagesInUse();
        const result = pruneImages({ inUse: (id) => inUse.has(id) });
        console.log(`removed ${result.images.length} images, ${result.layers.length} layers, ${result.tmp.length} leftovers`);
      },
    }),
    import: defineCommand({
      meta: { name: "import", description: "Import an OCI layout or archive, or a docker save archive" },
      args: importArgs,
      async run({ rawArgs, args }) {
        const [path] = positionals(rawArgs, importArgs, "image import", 1, "a path");
        const result = await importImage(path!, { tag: args.tag as string | undefined });
        console.log(`${result.record.id} ${result.references.join(" ")}`.trim());
      },
    }),
    inspect: defineCommand({
      meta: { name: "inspect", description: "Print an image's stored record as JSON" },
      args: inspectArgs,
      run({ rawArgs }) {
        const [ref] = positionals(rawArgs, inspectArgs, "image inspect", 1, "an image reference or id");
        console.log(JSON.stringify(inspectImage(ref!), null, 2));
      },
    }),
  },
});

const loginArgs = {
  registry: { type: "positional", description: "Registry host, e.g. ghcr.io or localhost:5000" },
  username: { type: "string", alias: "u", description: "User name" },
  "password-stdin": { type: "boolean", description: "Read the password from stdin" },
  insecure: { type: "boolean", description: "Allow a plain-HTTP registry" },
} satisfies ArgsDef;

export const loginCommand = defineCommand({
  meta: { name: "login", description: "Check credentials with a registry and save them (mode 0600)" },
  args: loginArgs,
  async run({ rawArgs, args }) {
    const [registry] = positionals(rawArgs, loginArgs, "login", 1, "a registry");
    if (!args.username) throw new MsbError("usage", "msb login needs -u USER (and the password on stdin with --password-stdin)");
    if (!args["password-stdin"]) throw new MsbError("usage", "msb login reads the password only from stdin: add --password-stdin");
    const password = (await Bun.stdin.text()).replace(/\r?\n$/, "");
    if (!password) throw new MsbError("usage", "no password on stdin");
    await login(registry!, { username: String(args.username), password }, { insecure: args.insecure ? true : undefined });
    console.log(`logged in to ${registry}`);
  },
});

const logoutArgs = { registry: { type: "positional", description: "Registry host" } } satisfies ArgsDef;

export const logoutCommand = defineCommand({
  meta: { name: "logout", description: "Forget the saved credentials of a registry" },
  args: logoutArgs,
  run({ rawArgs }) {
    const [registry] = positionals(rawArgs, logoutArgs, "logout", 1, "a registry");
    console.log(logout(registry!) ? `logged out of ${registry}` : `no saved credentials for ${registry}`);
  },
});
