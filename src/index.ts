// The msb SDK: create sandboxes, run commands in them, stop them.
export { Sandbox, type ExecOptions, type ExecResult, type SpawnOptions } from "./sandbox";
export { ExecProcess, type ExitStatus } from "./agent/client";
export { MsbError } from "./errors";
export type { SandboxOptions } from "./config";
export { type SandboxInfo } from "./sandbox";
export { SandboxFs, type FileStat, type DirEntry } from "./fs";
export { createVolume, listVolumes, inspectVolume, removeVolume, type VolumeInfo } from "./volumes";
export { pullImage, listImages, removeImage, pruneImages, importImage, type PullEvent } from "./image";
