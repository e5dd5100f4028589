import { lstatSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  isOverlayOpaque,
  isOverlayWhiteout,
  OPAQUE_WHITEOUT,
  OVERLAY_OPAQUE_XATTR,
  tarWhiteout,
  whiteoutName,
} from './whiteouts.ts';

describe('whiteouts, both forms', () => {
  it('reads a tar name: ordinary, a whiteout, the opaque marker, AUFS metadata', () => {
    expect(tarWhiteout('file')).toBeNull();
    expect(tarWhiteout('.whfile')).toBeNull();
    expect(tarWhiteout('a.wh.b')).toBeNull();
    expect(tarWhiteout('.wh.file')).toEqual({ kind: 'whiteout', name: 'file' });
    expect(tarWhiteout('.wh.')).toEqual({ kind: 'whiteout', name: '' }); // named nothing: the caller refuses it
    expect(tarWhiteout(OPAQUE_WHITEOUT)).toEqual({ kind: 'opaque' });
    expect(tarWhiteout('.wh..wh.plnk')).toEqual({ kind: 'aufs-meta', name: '.wh.plnk' });
    expect(tarWhiteout('.wh..wh..opq2')).toEqual({ kind: 'aufs-meta', name: '.wh..opq2' });
  });

  it('names a deletion, and reads the name back', () => {
    expect(whiteoutName('gone')).toBe('.wh.gone');
    for (const n of ['gone', '.hidden', 'with space', 'ünï'])
      expect(tarWhiteout(whiteoutName(n))).toEqual({ kind: 'whiteout', name: n });
  });

  it('knows overlayfs’s whiteout from our reader’s stat and from Node’s', () => {
    expect(isOverlayWhiteout({ type: 'chr', rdev: { major: 0, minor: 0 } })).toBe(true);
    expect(isOverlayWhiteout({ type: 'chr', rdev: { major: 1, minor: 3 } })).toBe(false); // /dev/null
    expect(isOverlayWhiteout({ type: 'chr', rdev: null })).toBe(false);
    expect(isOverlayWhiteout({ type: 'blk', rdev: { major: 0, minor: 0 } })).toBe(false);
    expect(isOverlayWhiteout({ type: 'file' })).toBe(false);
    expect(isOverlayWhiteout(lstatSync('/dev/null'))).toBe(false);
    const d = mkdtempSync(join(tmpdir(), 'lcow-wh-'));
    try {
      writeFileSync(join(d, 'f'), '');
      expect(isOverlayWhiteout(lstatSync(join(d, 'f')))).toBe(false);
    } finally {
      rmSync(d, { recursive: true });
    }
  });

  it('an opaque directory is trusted.overlay.opaque = y, nothing else', () => {
    expect(OVERLAY_OPAQUE_XATTR).toBe('trusted.overlay.opaque');
    expect(isOverlayOpaque(Buffer.from('y'))).toBe(true);
    expect(isOverlayOpaque('y')).toBe(true);
    expect(isOverlayOpaque(Buffer.from('n'))).toBe(false);
    expect(isOverlayOpaque(Buffer.from('y\0'))).toBe(false);
    expect(isOverlayOpaque(undefined)).toBe(false);
    expect(isOverlayOpaque(null)).toBe(false);
  });
});
