// `msb mcp`: serve sandbox tools to an agent host over the Model Context Protocol (stdio).

import { defineCommand, type ArgsDef } from "citty";
import { serveStdio } from "../mcp";
import { checkFlags } from "./args";
import { secretArgs, withSecretFlags } from "./secrets";

const mcpArgs = { ...secretArgs } satisfies ArgsDef;

export const mcp = defineCommand({
  meta: {
    name: "mcp",
    description:
      "Serve sandbox tools (create, exec, files, list, stop, remove) over MCP on stdin/stdout, for AI agent hosts; --secret NAME@HOST gives every sandbox a secret the agent never sees",
  },
  args: mcpArgs,
  async run({ rawArgs }) {
    checkFlags(rawArgs, mcpArgs, "mcp");
    // Secrets are checked now, so a missing value fails at start, not at the agent's first create.
    const { secrets, tls } = withSecretFlags({}, rawArgs);
    await serveStdio({ secrets, tls });
  },
});
