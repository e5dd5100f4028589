// containerd's filter language, as `ctr snapshots ls` and the garbage collector send it to `List`: each
// filter is selectors joined by commas (all must hold); a snapshot is listed when any filter holds, or when
// there is none. A selector is a field path — `name`, `parent`, `kind`, `labels.KEY` (a KEY with dots or
// slashes quoted: `labels."containerd.io/gc.root"`) — alone (present and not empty) or with `==`, `!=` or
// `~=` (a regular expression) and a value, bare or quoted ("…" with escapes, or /…/).
import { SnapshotError } from './errors.ts';
import type { Snapshot } from './metadata.ts';

type Op = '==' | '!=' | '~=' | null;
interface Selector {
  path: string[];
  op: Op;
  value: string;
  re: RegExp | null;
}

/** Longest filter accepted: a selector list, not a document. */
const MAX_FILTER = 16 << 10;

function bad(filter: string, why: string): SnapshotError {
  return new SnapshotError('ERR_INVALID_ARGUMENT', `filter ${JSON.stringify(filter.slice(0, 200))}: ${why}`);
}

/** Parses one filter string into its selectors. */
export function parseFilter(filter: string): Selector[] {
  if (filter.length > MAX_FILTER) throw bad(filter, `longer than ${MAX_FILTER} characters`);
  let i = 0;
  const quoted = (): string => {
    const q = filter[i]!;
    i++;
    let out = '';
    while (i < filter.length && filter[i] !== q) {
      if (filter[i] === '\\' && q === '"' && i + 1 < filter.length) {
        const c = filter[i + 1]!;
        out += ({ n: '\n', t: '\t', r: '\r' } as Record<string, string>)[c] ?? c;
        i += 2;
      } else out += filter[i++];
    }
    if (filter[i] !== q) throw bad(filter, `a ${q} that is never closed`);
    i++;
    return out;
  };
  const selectors: Selector[] = [];
  for (;;) {
    const path: string[] = [];
    for (;;) {
      if (filter[i] === '"') path.push(quoted());
      else {
        const m = /^[A-Za-z_][A-Za-z0-9_-]*/.exec(filter.slice(i));
        if (!m) throw bad(filter, `a field name is expected at ${i}`);
        path.push(m[0]);
        i += m[0].length;
      }
      if (filter[i] !== '.') break;
      i++;
    }
    let op: Op = null;
    let value = '';
    const two = filter.slice(i, i + 2);
    if (two === '==' || two === '!=' || two === '~=') {
      op = two;
      i += 2;
      if (filter[i] === '"' || filter[i] === '/') value = quoted();
      else {
        const end = filter.indexOf(',', i);
        value = filter.slice(i, end === -1 ? undefined : end);
        i += value.length;
      }
    }
    let re: RegExp | null = null;
    if (op === '~=') {
      try {
        re = new RegExp(value);
      } catch {
        throw bad(filter, `${JSON.stringify(value)} is not a regular expression`);
      }
    }
    selectors.push({ path, op, value, re });
    if (i === filter.length) return selectors;
    if (filter[i] !== ',') throw bad(filter, `unexpected ${JSON.stringify(filter[i])} at ${i}`);
    i++;
  }
}

function field(s: Snapshot, path: string[]): string | undefined {
  const [head, ...rest] = path;
  if (rest.length === 0) {
    if (head === 'name') return s.key;
    if (head === 'parent') return s.parent;
    if (head === 'kind') return s.kind;
    return undefined;
  }
  if (head === 'labels') {
    const k = rest.join('.');
    return Object.hasOwn(s.labels, k) ? s.labels[k] : undefined;
  }
  return undefined;
}

function holds(s: Snapshot, sel: Selector): boolean {
  const v = field(s, sel.path);
  switch (sel.op) {
    case null:
      return v !== undefined && v !== '';
    case '==':
      return v === sel.value;
    case '!=':
      return v !== sel.value;
    case '~=':
      return v !== undefined && sel.re!.test(v);
  }
}

/** A predicate for `List`'s filters: any filter whose selectors all hold (no filter: everything). */
export function matcher(filters: readonly string[]): (s: Snapshot) => boolean {
  const parsed = filters.filter((f) => f.trim() !== '').map(parseFilter);
  if (parsed.length === 0) return () => true;
  return (s) => parsed.some((sels) => sels.every((sel) => holds(s, sel)));
}
