// The applyDiff child process: `node apply-child.js JOB`, JOB being JSON {out, verity, digest, file} (file:
// a path, a {path, offset, length} range, or null for the tar on stdin); one JSON line on
// stdout — `{"ok":{size,fileBytes,rootDigest?}}` or `{"error":{code,message}}` with exit status 1.
import { convertInline, isFileRange, type FileRange } from './apply.ts';
import { DriverError } from './errors.ts';

const ac = new AbortController();
let watch: NodeJS.Timeout | undefined;
try {
  const job = JSON.parse(process.argv[2] ?? 'null') as {
    out: string;
    verity: boolean;
    digest: boolean;
    file: string | FileRange | null;
    sizeLimit?: number;
    hcsshim?: boolean;
    digestOnly?: boolean;
  } | null;
  if ((!job?.out && !job?.digestOnly) || (job.file !== null && typeof job.file !== 'string' && !isFileRange(job.file)))
    throw new DriverError('ERR_USAGE', 'usage: apply-child JOB (JSON {out, verity, digest, file})');
  // Reading a file, the child keeps its stdin open only as a line to its parent: when the parent dies
  // (even by SIGKILL) the pipe closes, and the conversion stops and removes its temporary file, instead of
  // finishing as an orphan after a new daemon has cleaned up.
  // A tar read from stdin ends normally at its end, so the parent's death is also watched directly: an
  // orphan is re-parented, and its parent pid changes.
  const parent = process.ppid;
  watch = setInterval(() => {
    if (process.ppid !== parent) ac.abort();
  }, 100);
  watch.unref();
  if (job.file !== null) {
    process.stdin.on('end', () => ac.abort());
    process.stdin.on('close', () => ac.abort());
    process.stdin.resume();
  }
  const ok = await convertInline(job.file ?? process.stdin, job.out, {
    verity: job.verity,
    digest: job.digest,
    ...(typeof job.sizeLimit === 'number' ? { sizeLimit: job.sizeLimit } : {}),
    hcsshim: job.hcsshim === true,
    digestOnly: job.digestOnly === true,
    signal: ac.signal,
  });
  process.stdout.write(`${JSON.stringify({ ok })}\n`);
} catch (e) {
  const err = e as { code?: unknown; message?: string };
  process.stdout.write(
    `${JSON.stringify({ error: { code: typeof err.code === 'string' ? err.code : 'ERR_APPLY', message: err.message } })}\n`,
  );
  process.exitCode = 1;
} finally {
  // Success or failure, the line to the parent is let go, or this process would wait on it for ever (and
  // its parent on this process's exit).
  clearInterval(watch);
  process.stdin.destroy();
}
