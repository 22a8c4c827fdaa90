// `msb mcp`: serve sandbox tools to an agent host over the Model Context Protocol (stdio).

import { defineCommand, type ArgsDef } from "citty";
import { serveStdio } from "../mcp";
import { checkFlags } from "./args";

const mcpArgs = {} satisfies ArgsDef;

export const mcp = defineCommand({
  meta: {
    name: "mcp",
    description: "Serve sandbox tools (create, exec, files, list, stop, remove) over MCP on stdin/stdout, for AI agent hosts",
  },
  args: mcpArgs,
  async run({ rawArgs }) {
    checkFlags(rawArgs, mcpArgs, "mcp");
    await serveStdio();
  },
});
