// Runs the `lcow` command in process and collects what it printed, for the CLI tests.
import { PassThrough } from 'node:stream';
import { main, type Io } from '../src/cli/index.ts';

export interface LcowRun {
  status: number;
  out: string;
  err: string;
  /** What went to binary stdout (`cat`, a tar to `-`). */
  bytes: Buffer;
}

export function lcow(...argv: string[]): Promise<LcowRun> {
  return lcowWith({}, ...argv);
}

/** {@link lcow} with some of the command's I/O given (its stdin, for `apply -i -`). */
export async function lcowWith(io: Partial<Io>, ...argv: string[]): Promise<LcowRun> {
  let out = '';
  let err = '';
  const parts: Buffer[] = [];
  const stdout = new PassThrough();
  stdout.on('data', (c: Buffer) => parts.push(c));
  const status = await main(argv, {
    out: (t) => (out += `${t}\n`),
    err: (t) => (err += `${t}\n`),
    stdout,
    progress: process.stderr,
    signal: new AbortController().signal,
    ...io,
  });
  return { status, out, err, bytes: Buffer.concat(parts) };
}
