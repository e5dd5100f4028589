// A small tar writer for tests: ustar headers plus pax records with raw-byte values (tar-stream encodes
// pax values as UTF-8 text, which cannot carry binary xattrs such as security.capability).

export interface TarSpec {
  path: string;
  /** `global`: a pax global header carrying `pax` for every later entry (its `path` is its own name). */
  type?: 'file' | 'dir' | 'symlink' | 'link' | 'chr' | 'blk' | 'fifo' | 'global';
  body?: Uint8Array | string;
  mode?: number;
  uid?: number;
  gid?: number;
  /** Seconds; with `mtimeNs` written as a pax mtime. */
  mtime?: number;
  mtimeNs?: number;
  linkname?: string;
  devmajor?: number;
  devminor?: number;
  /** Extra pax records; values are bytes or UTF-8 text. */
  pax?: Record<string, Uint8Array | string>;
  /** Last chance to damage the header (after its checksum is set, unless `rechecksum`). */
  mangle?: (header: Uint8Array) => void;
  rechecksum?: boolean;
}

const TYPE = { file: '0', link: '1', symlink: '2', chr: '3', blk: '4', dir: '5', fifo: '6' } as const;
const enc = new TextEncoder();

function octal(h: Uint8Array, at: number, len: number, v: number): void {
  const s = v.toString(8).padStart(len - 1, '0');
  h.set(enc.encode(s.slice(-(len - 1))), at);
  h[at + len - 1] = 0;
}

function text(h: Uint8Array, at: number, len: number, s: Uint8Array): void {
  h.set(s.subarray(0, len), at);
}

function checksum(h: Uint8Array): void {
  h.fill(0x20, 148, 156);
  let sum = 0;
  for (const b of h) sum += b;
  const s = sum.toString(8).padStart(6, '0');
  h.set(enc.encode(s), 148);
  h[154] = 0;
  h[155] = 0x20;
}

function header(name: Uint8Array, type: string, size: number, o: TarSpec): Uint8Array {
  const h = new Uint8Array(512);
  text(h, 0, 100, name);
  octal(h, 100, 8, o.mode ?? (type === '5' ? 0o755 : 0o644));
  octal(h, 108, 8, Math.min(o.uid ?? 0, 0o7777777));
  octal(h, 116, 8, Math.min(o.gid ?? 0, 0o7777777));
  octal(h, 124, 12, size);
  octal(h, 136, 12, o.mtime ?? 1_700_000_000);
  h[156] = type.charCodeAt(0);
  text(h, 157, 100, enc.encode(o.linkname ?? ''));
  h.set(enc.encode('ustar\x0000'), 257);
  octal(h, 329, 8, o.devmajor ?? 0);
  octal(h, 337, 8, o.devminor ?? 0);
  checksum(h);
  return h;
}

function padded(b: Uint8Array): Uint8Array[] {
  const rem = b.length % 512;
  return rem === 0 ? [b] : [b, new Uint8Array(512 - rem)];
}

function paxRecord(key: string, value: Uint8Array): Uint8Array {
  const body = (len: number): Uint8Array => {
    const head = enc.encode(`${len} ${key}=`);
    const out = new Uint8Array(head.length + value.length + 1);
    out.set(head);
    out.set(value, head.length);
    out[out.length - 1] = 0x0a;
    return out;
  };
  const rest = enc.encode(` ${key}=`).length + value.length + 1;
  let len = rest + 1;
  while (len !== rest + String(len).length) len = rest + String(len).length;
  return body(len);
}

/** Builds a tar archive in memory. Long names, big ids and nanosecond times go into pax records. */
export function makeTar(specs: TarSpec[], opts: { end?: boolean } = {}): Uint8Array {
  const parts: Uint8Array[] = [];
  for (const s of specs) {
    if (s.type === 'global') {
      const records = Buffer.concat(
        Object.entries(s.pax ?? {}).map(([k, v]) => paxRecord(k, typeof v === 'string' ? enc.encode(v) : v)),
      );
      parts.push(header(enc.encode(s.path), 'g', records.length, { path: '' }), ...padded(records));
      continue;
    }
    const type = TYPE[s.type ?? 'file'];
    const body = typeof s.body === 'string' ? enc.encode(s.body) : (s.body ?? new Uint8Array());
    const pax: [string, Uint8Array][] = Object.entries(s.pax ?? {}).map(([k, v]) => [
      k,
      typeof v === 'string' ? enc.encode(v) : v,
    ]);
    const name = enc.encode(s.path);
    if (name.length > 100) pax.push(['path', name]);
    if ((s.linkname?.length ?? 0) > 100) pax.push(['linkpath', enc.encode(s.linkname!)]);
    if ((s.uid ?? 0) > 0o7777777) pax.push(['uid', enc.encode(String(s.uid))]);
    if ((s.gid ?? 0) > 0o7777777) pax.push(['gid', enc.encode(String(s.gid))]);
    if (s.mtimeNs !== undefined)
      pax.push(['mtime', enc.encode(`${s.mtime ?? 1_700_000_000}.${String(s.mtimeNs).padStart(9, '0')}`)]);
    if (pax.length > 0) {
      const records = Buffer.concat(pax.map(([k, v]) => paxRecord(k, v)));
      parts.push(header(enc.encode('PaxHeaders/x'), 'x', records.length, { path: '' }), ...padded(records));
    }
    const h = header(name, type, type === '0' ? body.length : 0, s);
    s.mangle?.(h);
    if (s.rechecksum) checksum(h);
    parts.push(h);
    if (type === '0' && body.length > 0) parts.push(...padded(body));
  }
  if (opts.end !== false) parts.push(new Uint8Array(1024));
  return Buffer.concat(parts);
}
