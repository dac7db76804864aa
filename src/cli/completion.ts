import { ConfigInvalidError } from '../errors.ts'
import { flagHelp, loadConfig, type OptionSpec, type Schema } from '../config.ts'
import { commands, loadCommands, type Command } from './commands.ts'
import { firstWords, groups, nextWords } from './reference.ts'
import type { Runner } from './runner.ts'

// `gatehouse completion bash|zsh|fish`: a completion script generated from the command table and
// the option schemas (commands, flags, enum values, positional words), so it cannot fall behind.
// zsh runs the bash script through bashcompinit (zsh's own bash-compatible completion), as kubectl's
// early zsh completion did; fish gets its native `complete` lines, with descriptions.

/** Flags every command takes besides its schema's (parsed by loadConfig and by the entry point). */
const COMMON: Schema = {
  config: { kind: 'string', help: 'YAML file of option values' },
  help: { kind: 'bool', aliases: ['h'], help: 'this command\'s help' },
  debug: { kind: 'bool', help: 'stack traces on errors' }
}

interface Flag { spellings: string[], spec: OptionSpec }

const flagsOf = (cmd: Command): Flag[] =>
  Object.entries({ ...cmd.schema, ...COMMON }).map(([name, spec]) => ({ spec, spellings: [`--${name}`, ...(spec.aliases ?? []).map(a => a.length === 1 ? `-${a}` : `--${a}`)] }))

/** Words a positional argument can be, when it is one of a few (completion's shells; help's command words). */
function argWords (name: string, cmd: Command): string[] {
  if (name === 'help') return firstWords() // the first word; the bash script walks further
  return cmd.args.flatMap(a => [...(a.values ?? [])])
}

const sq = (s: string): string => `'${s.replace(/'/g, '\'\\\'\'')}'`

export function bashScript (all: Record<string, Command>): string {
  const entries = Object.entries(all)
  const flagCases = entries.map(([name, cmd]) => `    ${sq(name)}) echo ${sq(flagsOf(cmd).flatMap(f => f.spellings).join(' '))} ;;`)
  const valueCases = entries.flatMap(([name, cmd]) => flagsOf(cmd).filter(f => f.spec.kind !== 'bool').map(f => {
    const pattern = f.spellings.map(s => sq(`${name}|${s}`)).join('|')
    return `    ${pattern}) echo ${f.spec.kind === 'enum' ? sq(`values ${(f.spec.values ?? []).join(' ')}`) : 'file'} ;;`
  }))
  const argCases = entries.map(([name, cmd]) => [name, argWords(name, cmd)] as const).filter(([, w]) => w.length > 0).map(([name, w]) => `    ${sq(name)}) echo ${sq(w.join(' '))} ;;`)
  const nextCases = ['', ...groups()].map(g => `    ${sq(g)}) echo ${sq(nextWords(g).join(' '))} ;;`)
  return `# bash completion for gatehouse, generated from its command table by 'gatehouse completion bash'.
# Load it with: source <(gatehouse completion bash)

# The flags of a command.
_gatehouse_flags() {
  case "$1" in
${flagCases.join('\n')}
  esac
}

# What a flag of a command is followed by: "values V..." (an enum's), "file" (any other value).
_gatehouse_flag_value() {
  case "$1|$2" in
${valueCases.join('\n')}
  esac
}

# The words a command's positional argument can be, when it is one of a few.
_gatehouse_arg_words() {
  case "$1" in
${argCases.join('\n')}
  esac
}

# The words that can follow a group (or nothing): subcommands, or every first word.
_gatehouse_next() {
  case "$1" in
${nextCases.join('\n')}
  esac
}

# Walks the words from index $1 to the cursor along the command table. Sets prefix (the words that
# name a group or command), cmd (the longest of them that is a command) and consumed (1 if all did).
_gatehouse_walk() {
  local i w
  prefix='' cmd='' consumed=1
  for (( i = $1; i < COMP_CWORD; i++ )); do
    w=\${COMP_WORDS[i]}
    if [[ " $(_gatehouse_next "$prefix") " != *" $w "* ]]; then consumed=0; break; fi
    prefix="\${prefix:+$prefix }$w"
    [[ -n $(_gatehouse_flags "$prefix") ]] && cmd=$prefix
  done
}

_gatehouse() {
  local cur=\${COMP_WORDS[COMP_CWORD]} prev=\${COMP_WORDS[COMP_CWORD-1]} prefix cmd consumed what words
  COMPREPLY=()
  _gatehouse_walk 1
  # Right after a group (or "gatehouse" alone): what can come next. "inject" is a command too: when
  # no subcommand matches, its file argument is left to file-name completion.
  words=$(_gatehouse_next "$prefix")
  if (( consumed )) && [[ -n $words && $cur != -* ]]; then
    COMPREPLY=($(compgen -W "$words" -- "$cur"))
    return 0
  fi
  if [[ -z $prefix ]]; then COMPREPLY=($(compgen -W '--help --version' -- "$cur")); return 0; fi
  [[ -n $cmd ]] || return 0
  what=$(_gatehouse_flag_value "$cmd" "$prev")
  case "$what" in
    values\\ *) COMPREPLY=($(compgen -W "\${what#values }" -- "$cur")); return 0 ;;
    file) return 0 ;; # complete -o default: file names
  esac
  if [[ $cur == -* ]]; then
    COMPREPLY=($(compgen -W "$(_gatehouse_flags "$cmd")" -- "$cur"))
  elif [[ $cmd == help ]]; then
    _gatehouse_walk 2 # help's arguments are a command's words
    (( consumed )) && COMPREPLY=($(compgen -W "$(_gatehouse_next "$prefix")" -- "$cur"))
  else
    words=$(_gatehouse_arg_words "$cmd")
    [[ -n $words ]] && COMPREPLY=($(compgen -W "$words" -- "$cur"))
  fi
  return 0
}

complete -o default -F _gatehouse gatehouse
`
}

export function zshScript (all: Record<string, Command>): string {
  return `#compdef gatehouse
# zsh completion for gatehouse, generated by 'gatehouse completion zsh': the bash completion, run by
# zsh's bashcompinit. Load it with: source <(gatehouse completion zsh)
autoload -U +X compinit && (( \${+functions[compdef]} )) || compinit
autoload -U +X bashcompinit && bashcompinit

${bashScript(all)}`
}

export function fishScript (all: Record<string, Command>): string {
  const lines = [
    '# fish completion for gatehouse, generated by \'gatehouse completion fish\'.',
    '# Load it with: gatehouse completion fish | source',
    '',
    '# The words typed after "gatehouse", before the cursor.',
    'function __gatehouse_words',
    '    set -l w (commandline -opc)',
    '    set -e w[1]',
    '    for word in $w', // a loop: printf with no words would still print one empty line
    '        echo $word',
    '    end',
    'end',
    '',
    '# True when exactly these words were typed: offer what comes next.',
    'function __gatehouse_at',
    '    set -l w (__gatehouse_words)',
    '    test "$w" = "$argv"',
    'end',
    '',
    '# True when the command typed starts with these words.',
    'function __gatehouse_in',
    '    set -l w (__gatehouse_words)',
    '    set -l n (count $argv)',
    '    test (count $w) -ge $n; or return 1',
    '    test "$w[1..$n]" = "$argv"',
    'end',
    '',
    'complete -c gatehouse -f',
    ...firstWords().map(w => `complete -c gatehouse -n 'test (count (__gatehouse_words)) -eq 0' -a ${sq(w)} -d ${sq(commands[w]?.summary ?? `${w} commands`)}`),
    'complete -c gatehouse -n \'test (count (__gatehouse_words)) -eq 0\' -l version -d \'print the version\'',
    ...groups().flatMap(g => nextWords(g).map(s => `complete -c gatehouse -n ${sq(`__gatehouse_at ${g}`)} -a ${sq(s)} -d ${sq(commands[`${g} ${s}`]?.summary ?? `${g} ${s} commands`)}`))
  ]
  for (const [name, cmd] of Object.entries(all)) {
    // "inject" must not also offer its flags to "inject serve": a longer command is excluded.
    const longer = Object.keys(all).filter(n => n.startsWith(`${name} `)).map(n => `; and not __gatehouse_in ${n}`).join('')
    const when = sq(`__gatehouse_in ${name}${longer}`)
    for (const f of flagsOf(cmd)) {
      const names = f.spellings.map(s => s.startsWith('--') ? `-l ${s.slice(2)}` : `-s ${s.slice(1)}`).join(' ')
      const value = f.spec.kind === 'bool' ? '' : f.spec.kind === 'enum' ? ` -x -a ${sq((f.spec.values ?? []).join(' '))}` : ' -r -F'
      lines.push(`complete -c gatehouse -n ${when} ${names}${value} -d ${sq(flagHelp(f.spec))}`)
    }
    const words = argWords(name, cmd)
    if (words.length > 0) lines.push(`complete -c gatehouse -n ${when} -a ${sq(words.join(' '))}`)
    else if (cmd.args.length > 0) lines.push(`complete -c gatehouse -n ${when} -F`)
  }
  return `${lines.join('\n')}\n`
}

const SCRIPTS: Record<string, (all: Record<string, Command>) => string> = { bash: bashScript, zsh: zshScript, fish: fishScript }

export const completion: Runner = async (argv, io) => {
  const shell = loadConfig('completion', {}, { argv, maxPositionals: 1 }).positionals[0]
  const script = shell === undefined ? undefined : SCRIPTS[shell]
  if (script === undefined) throw new ConfigInvalidError([`gatehouse completion needs the shell: bash, zsh or fish, e.g. 'source <(gatehouse completion bash)'${shell === undefined ? '' : `; got ${JSON.stringify(shell)}`}`])
  io.out(script(await loadCommands()))
  return 0
}
