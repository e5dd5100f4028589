// The two forms a deletion takes in a layer, stated once; every conversion between them in lcow calls this.
//
// In a tar (OCI image-spec, layer.md "Whiteouts"): a deleted NAME is an entry `.wh.NAME` beside it, and a
// directory whose lower content is hidden holds `.wh..wh..opq`; any other name starting `.wh..wh.` is AUFS
// bookkeeping, never content. In overlayfs (kernel Documentation/filesystems/overlayfs.rst, "whiteouts and
// opaque directories"), the form our ext4 layers and sandboxes hold: a deleted name is a character device
// 0/0, an opaque directory carries the xattr `trusted.overlay.opaque` = `y`.
import type { Stats } from 'node:fs';

/** The prefix of a tar whiteout's name. */
export const WHITEOUT_PREFIX = '.wh.';
/** The tar entry that makes the directory holding it opaque. */
export const OPAQUE_WHITEOUT = '.wh..wh..opq';
/** The prefix of AUFS metadata names (the opaque marker aside). */
const AUFS_META_PREFIX = '.wh..wh.';
/** The overlayfs xattr that marks a directory opaque, and its value. */
export const OVERLAY_OPAQUE_XATTR = 'trusted.overlay.opaque';
export const OVERLAY_OPAQUE_VALUE = 'y';

/** What the last component of a tar entry's path says of deletions. */
export type TarWhiteout =
  /** `.wh..wh..opq`: the directory holding it hides its lower content. */
  | { kind: 'opaque' }
  /** `.wh.NAME`: NAME, beside it, is deleted. */
  | { kind: 'whiteout'; name: string }
  /** `.wh..wh.X` other than the opaque marker: AUFS metadata; `name` is what follows the first `.wh.`. */
  | { kind: 'aufs-meta'; name: string };

/** The whiteout that a tar entry's last path component is, or null for ordinary content. */
export function tarWhiteout(base: string): TarWhiteout | null {
  if (!base.startsWith(WHITEOUT_PREFIX)) return null;
  if (base === OPAQUE_WHITEOUT) return { kind: 'opaque' };
  const name = base.slice(WHITEOUT_PREFIX.length);
  return base.startsWith(AUFS_META_PREFIX) ? { kind: 'aufs-meta', name } : { kind: 'whiteout', name };
}

/** The tar name (a last component) that deletes `name`. */
export function whiteoutName(name: string): string {
  return WHITEOUT_PREFIX + name;
}

/**
 * Whether a file is overlayfs's whiteout, a character device 0/0 — from our reader's stat (`type`, `rdev`)
 * or from Node's.
 */
export function isOverlayWhiteout(
  st: { type: string; rdev?: { major: number; minor: number } | null } | Stats,
): boolean {
  if ('isCharacterDevice' in st) return st.isCharacterDevice() && st.rdev === 0;
  return st.type === 'chr' && st.rdev != null && st.rdev.major === 0 && st.rdev.minor === 0;
}

/** Whether the value of a directory's `trusted.overlay.opaque` (absent: undefined) makes it opaque. */
export function isOverlayOpaque(value: Uint8Array | string | undefined | null): boolean {
  if (value == null) return false;
  return (typeof value === 'string' ? value : Buffer.from(value).toString('latin1')) === OVERLAY_OPAQUE_VALUE;
}
