import { describe, expect, it } from 'vitest';
import { formatReference, parseReference } from '../src/index.ts';

describe('references in transport syntax', () => {
  const ok: [string, string][] = [
    ['docker://alpine', 'docker://docker.io/library/alpine:latest'],
    ['docker://alpine:3.20', 'docker://docker.io/library/alpine:3.20'],
    ['docker://team/app', 'docker://docker.io/team/app:latest'],
    ['docker://localhost:5000/a/b:1', 'docker://localhost:5000/a/b:1'],
    ['docker://127.0.0.1:5000/a', 'docker://127.0.0.1:5000/a:latest'],
    [`docker://r.io/x@sha256:${'a'.repeat(64)}`, `docker://r.io/x@sha256:${'a'.repeat(64)}`],
    [`docker://r.io/x:t@sha256:${'b'.repeat(64)}`, `docker://r.io/x:t@sha256:${'b'.repeat(64)}`],
    ['docker-archive:/tmp/x.tar', 'docker-archive:/tmp/x.tar'],
    ['docker-archive:/tmp/x.tar:busybox:latest', 'docker-archive:/tmp/x.tar:busybox:latest'],
    ['docker-archive:x.tar:@1', 'docker-archive:x.tar:@1'],
    ['oci-archive:/a/b.tar:v1', 'oci-archive:/a/b.tar:v1'],
    ['oci:/layout', 'oci:/layout'],
    ['docker-daemon:alpine', 'docker-daemon:alpine:latest'],
    ['docker-daemon:r.io/x:2', 'docker-daemon:r.io/x:2'],
    [`docker-daemon:sha256:${'c'.repeat(64)}`, `docker-daemon:sha256:${'c'.repeat(64)}`],
    ['./image.tar', './image.tar'],
  ];
  for (const [text, norm] of ok)
    it(`${text} → ${norm}`, () => expect(formatReference(parseReference(text))).toBe(norm));

  const bad: [string, RegExp][] = [
    ['', /empty/],
    ['docker://UPPER/case', /repository component/],
    ['docker://r.io/x@sha256:abc', /digest/],
    ['docker://r.io/x:bad tag', /tag/],
    ['docker-archive:', /no path/],
    ['docker-archive:x.tar:', /empty image name/],
    [`docker-daemon:x@sha256:${'a'.repeat(64)}`, /not by digest/],
    ['ftp://x/y', /unknown transport/],
    ['a\0b', /NUL/],
  ];
  for (const [text, why] of bad)
    it(`refuses ${JSON.stringify(text)}`, () => {
      expect(() => parseReference(text)).toThrow(why);
      try {
        parseReference(text);
      } catch (e) {
        expect((e as { code?: string }).code).toBe('ERR_INVALID_REFERENCE');
      }
    });
});
