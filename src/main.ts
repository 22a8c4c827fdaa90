#!/usr/bin/env bun
// Entry point of the msb binary: the CLI, or the hidden supervisor mode it re-executes itself in.

import { runCli } from "./cli/main";
import { runSupervisor } from "./supervisor";

const args = process.argv.slice(2);
if (args[0] === "__supervise" && args[1]) {
  await runSupervisor(args[1]);
} else {
  await runCli(args);
}
