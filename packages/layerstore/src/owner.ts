// Which process made a temporary file or folder of the data root, so that opening the root or cleaning
// it up removes only what a dead process left — never the work in flight of another live one.
import { readFileSync } from 'node:fs';

/** `<pid>.<start>`: the pid, and its start time where the system tells it (pids are reused). */
export type OwnerToken = string;

function startTime(pid: number): string | null {
  if (process.platform !== 'linux') return '0';
  try {
    // Field 22 of /proc/PID/stat, counted after the command name's closing parenthesis (it may hold spaces).
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? null;
  } catch {
    return null;
  }
}

let mine: OwnerToken | null = null;

/** This process's token. */
export function ownerToken(): OwnerToken {
  return (mine ??= `${process.pid}.${startTime(process.pid) ?? '0'}`);
}

/** The token inside a name made with {@link ownerToken} (`…-o<pid>.<start>-…`), or null for none. */
export function ownerOf(name: string): OwnerToken | null {
  const m = /-o([0-9]+\.[0-9]+)-/.exec(name);
  return m ? m[1]! : null;
}

/** Whether the process a token names is still running (the same process, not a later one with its pid). */
export function ownerAlive(token: OwnerToken): boolean {
  const [pidText, start] = token.split('.');
  const pid = Number(pidText);
  if (!Number.isSafeInteger(pid) || pid <= 0) return false;
  if (pid === process.pid) return token === ownerToken();
  try {
    process.kill(pid, 0);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  const now = startTime(pid);
  return now === null ? false : start === '0' || now === start;
}
