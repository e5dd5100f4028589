// Pinned root hashes: for each layer a confidential-container policy allows, its diff id and the dm-verity
// root hash the policy lists (dmverity-vhd's, so the snapshotter's layout must be hcsshim's). A pinned layer
// that hashes otherwise is refused when it is committed and before any mount; a layer with no pin is not
// judged by the file.
import { constants } from 'node:fs';
import { open } from 'node:fs/promises';
import { SnapshotError } from './errors.ts';

/** Layer diff id (`sha256:…`) → root hash (64 hex digits). */
export type Pins = ReadonlyMap<string, string>;

/** A pin file is a few lines per layer; anything this large is not one. */
const MAX_PIN_FILE = 16 << 20;

/**
 * Reads a pin file: a JSON object `{ "sha256:<diff id>": "<root hash>", … }`. A file that is not a regular
 * file, is larger than 16 MiB, or holds anything else is refused, naming the file and the entry.
 */
export async function loadPins(file: string): Promise<Pins> {
  let text: string;
  try {
    const fh = await open(file, constants.O_RDONLY | constants.O_NONBLOCK);
    try {
      const st = await fh.stat();
      if (!st.isFile()) throw new SnapshotError('ERR_INVALID_ARGUMENT', `pin file ${file}: not a regular file`);
      if (st.size > MAX_PIN_FILE)
        throw new SnapshotError('ERR_INVALID_ARGUMENT', `pin file ${file}: larger than ${MAX_PIN_FILE} bytes`);
      text = await fh.readFile('utf8');
    } finally {
      await fh.close();
    }
  } catch (e) {
    if (e instanceof SnapshotError) throw e;
    throw new SnapshotError('ERR_INVALID_ARGUMENT', `pin file ${file}: ${(e as Error).message}`, { cause: e });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new SnapshotError('ERR_INVALID_ARGUMENT', `pin file ${file}: not JSON`);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json))
    throw new SnapshotError('ERR_INVALID_ARGUMENT', `pin file ${file}: not an object of diff id → root hash`);
  const pins = new Map<string, string>();
  for (const [diffId, hash] of Object.entries(json)) {
    if (!/^sha256:[0-9a-f]{64}$/.test(diffId))
      throw new SnapshotError(
        'ERR_INVALID_ARGUMENT',
        `pin file ${file}: ${JSON.stringify(diffId.slice(0, 80))} is not a diff id`,
      );
    if (typeof hash !== 'string' || !/^[0-9a-fA-F]{64}$/.test(hash))
      throw new SnapshotError(
        'ERR_INVALID_ARGUMENT',
        `pin file ${file}: ${diffId}: the root hash is not 64 hex digits`,
      );
    pins.set(diffId, hash.toLowerCase());
  }
  return pins;
}

/**
 * Refuses a layer whose diff id is pinned to another root hash than `rootHash` (`what` names the call and
 * the snapshot).
 */
export function checkPin(pins: Pins | null, diffId: string | null, rootHash: string | null, what: string): void {
  if (!pins || !diffId) return;
  const want = pins.get(diffId);
  if (want === undefined || want === rootHash) return;
  throw new SnapshotError(
    'ERR_FAILED_PRECONDITION',
    `${what}: layer ${diffId} has root hash ${rootHash ?? '(none)'}, its pin says ${want}; refused`,
  );
}
