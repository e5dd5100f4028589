// The guard every package runs before it is packed or published (its `prepack` script): a package goes out
// only built, and only through pnpm, which turns `workspace:` ranges into real versions. npm would ship
// `workspace:^` as it is and every install of the package would fail; a missing or stale `dist` would ship
// a package whose entry points do not exist.
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

const dir = process.cwd();
const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));
const problems = [];

const agent = process.env.npm_config_user_agent ?? '';
const workspaceRanges = ['dependencies', 'peerDependencies', 'optionalDependencies']
  .flatMap((field) => Object.entries(pkg[field] ?? {}))
  .filter(([, range]) => String(range).startsWith('workspace:'));
if (!agent.startsWith('pnpm/') && workspaceRanges.length > 0)
  problems.push(
    `packed by ${agent.split(' ')[0] || 'an unknown tool'}, which ships ${workspaceRanges.map(([n, r]) => `${n}@${r}`).join(', ')} unchanged: use \`pnpm pack\`, or \`pnpm release\` at the root`,
  );

/** Every file the published manifest points at. */
function targets(node, out = []) {
  if (typeof node === 'string') out.push(node);
  else if (node && typeof node === 'object') for (const v of Object.values(node)) targets(v, out);
  return out;
}
const needed = [
  ...targets(pkg.publishConfig?.exports ?? pkg.exports),
  ...targets(typeof pkg.bin === 'string' ? pkg.bin : (pkg.bin ?? {})),
].filter((p) => p.startsWith('./') && !p.endsWith('package.json'));
const missing = needed.filter((p) => !existsSync(join(dir, p)));
if (missing.length) problems.push(`not built: ${missing.join(', ')} missing (run \`pnpm build\`)`);

/** The newest modification time under `path`. */
function newest(path) {
  const s = statSync(path);
  if (!s.isDirectory()) return s.mtimeMs;
  // Tests are not published: editing one does not make dist stale.
  return Math.max(
    0,
    ...readdirSync(path)
      .filter((n) => !n.endsWith('.test.ts'))
      .map((n) => newest(join(path, n))),
  );
}
if (missing.length === 0 && existsSync(join(dir, 'src')) && existsSync(join(dir, 'dist'))) {
  const built = Math.min(...needed.filter((p) => p.startsWith('./dist/')).map((p) => statSync(join(dir, p)).mtimeMs));
  if (newest(join(dir, 'src')) > built + 1000) problems.push('dist is older than src (run `pnpm build`)');
}
for (const f of ['README.md', 'LICENSE']) if (!existsSync(join(dir, f))) problems.push(`${f} missing`);

if (problems.length) {
  process.stderr.write(`${pkg.name}: not packed:\n${problems.map((p) => `  - ${p}\n`).join('')}`);
  process.exit(1);
}
