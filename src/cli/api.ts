// `msb api`: the local API for SDKs in other languages (docs/api.md), on stdin/stdout.

import { defineCommand, type ArgsDef } from "citty";
import { serveApi } from "../api";
import { checkFlags } from "./args";

const apiArgs = {} satisfies ArgsDef;

export const api = defineCommand({
  meta: { name: "api", description: "Speak msb's local API (JSON lines on stdin/stdout) for the Python, Go and Rust SDKs; see docs/api.md" },
  args: apiArgs,
  async run({ rawArgs }) {
    checkFlags(rawArgs, apiArgs, "api");
    await serveApi();
  },
});
