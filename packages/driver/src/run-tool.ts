// Host programs run with an argument vector (no shell), a PATH that reaches sbin, the C locale, and errors
// that name the command: util-linux mount and umount for the host backend, mknod and mkfifo for host files.
import { execFile } from 'node:child_process';
import { DriverError } from './errors.ts';

const PATH = `${process.env.PATH ?? ''}:/usr/sbin:/sbin:/usr/bin:/bin`;

/** Runs `cmd args…` (in `cwd`, if given); rejects with `ERR_HOST_COMMAND` carrying its stderr. */
export function runTool(
  cmd: string,
  args: readonly string[],
  signal?: AbortSignal,
  opts: { cwd?: string } = {},
): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      cmd,
      args,
      {
        env: { ...process.env, PATH, LC_ALL: 'C' },
        maxBuffer: 16 << 20,
        signal,
        ...(opts.cwd ? { cwd: opts.cwd } : {}),
      },
      (err, stdout, stderr) => {
        if (!err) return resolve(stdout);
        const why = String(stderr).trim() || err.message;
        reject(new DriverError('ERR_HOST_COMMAND', `${cmd} ${args.join(' ')}: ${why}`, { cause: err }));
      },
    );
  });
}
