// `msb completions bash|zsh|fish`: shell completion scripts made from the command tree itself, so
// they never disagree with the commands; sandbox names are completed by asking `msb ls -q`.

import { defineCommand, type ArgsDef, type CommandDef } from "citty";
import { MsbError } from "../errors";
import { positionals } from "./args";

interface Flag {
  long: string;
  short?: string;
  takesValue: boolean;
  description: string;
}

/** Commands whose positional arguments are sandbox names. */
const TAKES_SANDBOX = new Set(["start", "stop", "restart", "kill", "rm", "inspect", "logs", "metrics", "exec", "cp"]);

function flagsOf(command: CommandDef): Flag[] {
  const args = (command.args ?? {}) as ArgsDef;
  const flags: Flag[] = [];
  for (const [key, def] of Object.entries(args)) {
    if (def.type === "positional") continue;
    const alias = "alias" in def && def.alias ? (Array.isArray(def.alias) ? def.alias : [def.alias]) : [];
    flags.push({
      long: key,
      short: alias.find((a: string) => a.length === 1),
      takesValue: def.type === "string",
      description: (def.description ?? "").replace(/['"`$\\]/g, ""),
    });
  }
  return flags;
}

function bash(commands: Record<string, CommandDef>): string {
  const names = Object.keys(commands).join(" ");
  const cases = Object.entries(commands)
    .map(([name, cmd]) => {
      const words = flagsOf(cmd).flatMap((f) => [`--${f.long}`, ...(f.short ? [`-${f.short}`] : [])]).join(" ");
      const sandboxes = TAKES_SANDBOX.has(name) ? ' $(msb ls -q 2>/dev/null)' : "";
      return `    ${name}) COMPREPLY=($(compgen -W "${words}${sandboxes}" -- "$cur")) ;;`;
    })
    .join("\n");
  return `# msb bash completion: eval "$(msb completions bash)"
_msb() {
  local cur=\${COMP_WORDS[COMP_CWORD]}
  if [ "$COMP_CWORD" -eq 1 ]; then
    COMPREPLY=($(compgen -W "${names} --help --version" -- "$cur"))
    return
  fi
  case "\${COMP_WORDS[1]}" in
${cases}
  esac
}
complete -o default -F _msb msb
`;
}

function zsh(commands: Record<string, CommandDef>): string {
  const described = Object.entries(commands)
    .map(([name, cmd]) => `'${name}:${String((cmd.meta as { description?: string } | undefined)?.description ?? "").replace(/'/g, "")}'`)
    .join(" ");
  const cases = Object.entries(commands)
    .map(([name, cmd]) => {
      const specs = flagsOf(cmd)
        .map((f) => `'--${f.long}[${f.description.replace(/[[\]']/g, "")}]${f.takesValue ? ":value:" : ""}'`)
        .join(" ");
      const sandboxes = TAKES_SANDBOX.has(name) ? " '*:sandbox:($(msb ls -q 2>/dev/null))'" : "";
      return `    ${name}) _arguments ${specs}${sandboxes} ;;`;
    })
    .join("\n");
  return `#compdef msb
# msb zsh completion: msb completions zsh > "\${fpath[1]}/_msb"
_msb() {
  local -a commands
  commands=(${described})
  if (( CURRENT == 2 )); then
    _describe 'command' commands
    return
  fi
  case "$words[2]" in
${cases}
  esac
}
compdef _msb msb
`;
}

function fish(commands: Record<string, CommandDef>): string {
  const lines = ["# msb fish completion: msb completions fish > ~/.config/fish/completions/msb.fish", "complete -c msb -f"];
  for (const [name, cmd] of Object.entries(commands)) {
    const description = String((cmd.meta as { description?: string } | undefined)?.description ?? "").replace(/'/g, "");
    lines.push(`complete -c msb -n '__fish_use_subcommand' -a ${name} -d '${description}'`);
    for (const f of flagsOf(cmd)) {
      lines.push(
        `complete -c msb -n '__fish_seen_subcommand_from ${name}' -l ${f.long}${f.short ? ` -s ${f.short}` : ""}${f.takesValue ? " -r" : ""} -d '${f.description}'`,
      );
    }
    if (TAKES_SANDBOX.has(name)) lines.push(`complete -c msb -n '__fish_seen_subcommand_from ${name}' -a '(msb ls -q 2>/dev/null)'`);
  }
  return `${lines.join("\n")}\n`;
}

const completionArgs = {
  shell: { type: "positional", required: false, description: "bash, zsh or fish" },
} satisfies ArgsDef;

/** Made with the command table passed in, so this module does not import main.ts (a cycle). */
export function completionsCommand(commands: () => Record<string, CommandDef>) {
  return defineCommand({
    meta: { name: "completions", description: "Print a shell completion script: msb completions bash|zsh|fish" },
    args: completionArgs,
    async run({ rawArgs }) {
      const [shell] = positionals(rawArgs, completionArgs, "completions", 1, "a shell name (bash, zsh or fish)");
      const table = commands();
      const script = shell === "bash" ? bash(table) : shell === "zsh" ? zsh(table) : shell === "fish" ? fish(table) : undefined;
      if (script === undefined) throw new MsbError("usage", `msb completions supports bash, zsh and fish, not "${shell}"`);
      process.stdout.write(script);
    },
  });
}
