import { readFileSync, readdirSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';

/** Every `.ts` file under `dir` that is not a test, as absolute paths, sorted. */
export function sourceFiles(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string): void => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith('.ts') && !e.name.endsWith('.test.ts') && !e.name.endsWith('.d.ts')) out.push(p);
    }
  };
  walk(dir);
  return out.sort();
}

/**
 * The module specifiers a file names: `import … from`, `export … from`, side-effect `import '…'` and
 * `import('…')` with a literal. Comments are dropped first, so an example in a doc comment is not an import.
 */
export function specifiers(text: string): string[] {
  const code = text.replace(/\/\*[\s\S]*?\*\//g, '').replace(/^\s*\/\/.*$/gm, '');
  const out = new Set<string>();
  for (const m of code.matchAll(/\b(?:from|import)\s*\(?\s*'([^'\n]+)'/g)) out.add(m[1]!);
  return [...out];
}

/** The workspace packages (`@lcow/NAME`) a package's sources import, each with the files that do. */
export function packageImports(srcDir: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const f of sourceFiles(srcDir)) {
    for (const s of specifiers(readFileSync(f, 'utf8'))) {
      const m = /^@lcow\/([a-z0-9-]+)/.exec(s);
      if (!m) continue;
      const list = out.get(m[1]!) ?? [];
      list.push(relative(srcDir, f));
      out.set(m[1]!, list);
    }
  }
  return out;
}

/**
 * The node of a file inside `src/`: its top folder (`backends/`), or the file itself for one at the top
 * (`driver.ts`) — a package's folders are its parts; files at the top are each their own part.
 */
function nodeOf(srcDir: string, file: string): string {
  const rel = relative(srcDir, file);
  const top = rel.split(sep)[0]!;
  return rel.includes(sep) ? `${top}/` : top;
}

/** Part-to-part edges inside one package's `src/`, each with one import that makes it. */
export function partEdges(srcDir: string): Map<string, Map<string, string>> {
  const edges = new Map<string, Map<string, string>>();
  for (const f of sourceFiles(srcDir)) {
    const from = nodeOf(srcDir, f);
    for (const s of specifiers(readFileSync(f, 'utf8'))) {
      if (!s.startsWith('.')) continue;
      const target = resolve(dirname(f), s);
      if (!target.startsWith(srcDir + sep)) continue;
      const to = nodeOf(srcDir, target);
      if (to === from) continue;
      const m = edges.get(from) ?? new Map<string, string>();
      if (!m.has(to)) m.set(to, `${relative(srcDir, f)} → ${relative(srcDir, target)}`);
      edges.set(from, m);
    }
  }
  return edges;
}

/** Strongly connected groups of more than one node (Tarjan), each sorted; the groups sorted. */
export function cycles(edges: ReadonlyMap<string, ReadonlyMap<string, unknown>>): string[][] {
  let index = 0;
  const idx = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const on = new Set<string>();
  const out: string[][] = [];
  const nodes = new Set<string>([...edges.keys(), ...[...edges.values()].flatMap((m) => [...m.keys()])]);
  const visit = (v: string): void => {
    idx.set(v, index);
    low.set(v, index++);
    stack.push(v);
    on.add(v);
    for (const w of edges.get(v)?.keys() ?? []) {
      if (!idx.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (on.has(w)) low.set(v, Math.min(low.get(v)!, idx.get(w)!));
    }
    if (low.get(v) === idx.get(v)) {
      const group: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        on.delete(w);
        group.push(w);
      } while (w !== v);
      if (group.length > 1) out.push(group.sort());
    }
  };
  for (const v of [...nodes].sort()) if (!idx.has(v)) visit(v);
  return out.sort((a, b) => a[0]!.localeCompare(b[0]!));
}

/** The marker line the root README puts before its dependency rule's fenced block. */
export const RULE_MARKER = '<!-- dependency rule -->';

/**
 * The dependency rule from a README: the fenced block after {@link RULE_MARKER}, one package a line, then
 * the packages it may import (`—` for none), in the order the block gives them.
 */
export function readRule(readme: string): Map<string, string[]> {
  const at = readme.indexOf(RULE_MARKER);
  const block = at < 0 ? null : /```[a-z]*\n([\s\S]*?)```/.exec(readme.slice(at));
  if (!block) throw new Error(`README: no dependency rule (a fenced block after ${RULE_MARKER})`);
  const rule = new Map<string, string[]>();
  for (const line of block[1]!.split('\n')) {
    const [name, ...deps] = line.trim().split(/\s+/);
    if (!name) continue;
    rule.set(
      name,
      deps.filter((d) => d !== '—'),
    );
  }
  return rule;
}
