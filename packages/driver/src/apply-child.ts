// The applyDiff child process: `node apply-child.js OUT plain|verity [IN.tar]` (default: the tar on
// stdin), one JSON line on
// stdout — `{"ok":{size,fileBytes,rootDigest?}}` or `{"error":{code,message}}` with exit status 1.
import { convertInline } from './apply.ts';
import { DriverError } from './errors.ts';

const [out, mode, input] = process.argv.slice(2);
try {
  if (!out) throw new DriverError('ERR_USAGE', 'usage: apply-child OUT plain|verity');
  const ok = await convertInline(input ?? process.stdin, out, { verity: mode === 'verity' });
  process.stdout.write(`${JSON.stringify({ ok })}\n`);
} catch (e) {
  const err = e as { code?: unknown; message?: string };
  process.stdout.write(
    `${JSON.stringify({ error: { code: typeof err.code === 'string' ? err.code : 'ERR_APPLY', message: err.message } })}\n`,
  );
  process.exitCode = 1;
}
