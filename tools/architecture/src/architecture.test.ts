// The dependency rule the root README states, held against the code: every package's imports, its
// package.json, and the folders inside it.
import { readFileSync, readdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { cycles, packageImports, partEdges, readRule } from './graph.ts';

const repo = resolve(import.meta.dirname, '../../..');
const packagesDir = join(repo, 'packages');
const packages = readdirSync(packagesDir, { withFileTypes: true })
  .filter((e) => e.isDirectory())
  .map((e) => e.name)
  .sort();
const rule = readRule(readFileSync(join(repo, 'README.md'), 'utf8'));

interface Manifest {
  name: string;
  dependencies?: Record<string, string>;
  peerDependencies?: Record<string, string>;
}
const manifest = (p: string): Manifest =>
  JSON.parse(readFileSync(join(packagesDir, p, 'package.json'), 'utf8')) as Manifest;

describe('the dependency rule (root README)', () => {
  it('names every package once, each allowed import a package listed above it: one way, no cycle', () => {
    expect([...rule.keys()].sort()).toEqual(packages);
    const seen: string[] = [];
    for (const [name, deps] of rule) {
      for (const d of deps) expect(seen, `${name} may import ${d}, which the list names below it`).toContain(d);
      seen.push(name);
    }
  });

  for (const p of packages) {
    it(`${p}: its sources import only what the rule allows, and package.json declares exactly that`, () => {
      const allowed = rule.get(p) ?? [];
      const imports = packageImports(join(packagesDir, p, 'src'));
      imports.delete(p);
      for (const [dep, files] of imports)
        expect(
          allowed,
          `${p} imports @lcow/${dep} (${files.join(', ')}); the README's rule does not allow it`,
        ).toContain(dep);
      const m = manifest(p);
      expect(m.name).toBe(`@lcow/${p}`);
      const declared = Object.keys({ ...m.dependencies, ...m.peerDependencies })
        .filter((d) => d.startsWith('@lcow/'))
        .map((d) => d.slice('@lcow/'.length))
        .sort();
      // Declared but not imported would install a package for nothing; imported but not declared breaks an
      // install from the registry (it works here only because the workspace links everything).
      expect(declared, `${p}: package.json dependencies against its imports`).toEqual([...imports.keys()].sort());
      expect(imports.has('testkit'), `${p}: sources import the test kit`).toBe(false);
    });

    it(`${p}: no two folders of src/ import each other`, () => {
      expect(cycles(partEdges(join(packagesDir, p, 'src')))).toEqual([]);
    });
  }
});

describe('the checker', () => {
  it('finds imports of every form and ignores those in comments', async () => {
    const { specifiers } = await import('./graph.ts');
    const text = [
      "import { a } from '@lcow/vhd';",
      "import type { B } from '@lcow/binary';",
      "export { c } from './c.ts';",
      "import './side-effect.ts';",
      "const m = await import('@lcow/hcs');",
      "// import { x } from '@lcow/driver';",
      "/** e.g. `import { y } from '@lcow/image'` */",
    ].join('\n');
    expect(specifiers(text).sort()).toEqual(['./c.ts', './side-effect.ts', '@lcow/binary', '@lcow/hcs', '@lcow/vhd']);
  });

  it('reports a loop between folders, through a file at the top too', () => {
    const e = new Map([
      ['fs/', new Map([['backends/', 'x']])],
      ['backends/', new Map([['errors.ts', 'y']])],
      ['errors.ts', new Map([['fs/', 'z']])],
      ['cli/', new Map([['errors.ts', 'w']])],
    ]);
    expect(cycles(e)).toEqual([['backends/', 'errors.ts', 'fs/']]);
    e.get('errors.ts')!.delete('fs/');
    expect(cycles(e)).toEqual([]);
  });

  it('reads the rule: one package a line, its allowed imports after it, — for none', () => {
    const r = readRule(
      ['text', '<!-- dependency rule -->', '```text', 'binary    —', 'vhd       binary', '```'].join('\n'),
    );
    expect([...r]).toEqual([
      ['binary', []],
      ['vhd', ['binary']],
    ]);
    expect(() => readRule('no rule here')).toThrow(/dependency rule/);
  });
});
