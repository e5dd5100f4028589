// The README's install and uninstall commands, as a new host runs them (into a fresh prefix and unit folder):
// the commands work from the prefix alone (`lcow docker-plugin` without the packages' .bin on PATH), the
// units pass `systemd-analyze verify`, the plugin as the unit starts it tells systemd READY=1 once its
// socket answers and STOPPING=1 on SIGTERM, its log has a time and a level per line; then the uninstall
// leaves nothing behind. (--no-build: the suite runs after `pnpm build`; a build here would rewrite dist
// under the other tests.)
import { execFile, spawn } from 'node:child_process';
import { readFile, readdir } from 'node:fs/promises';
import { request } from 'node:http';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { oracle, tempDir } from '@lcow/testkit';
import { notifyListener } from './notify-listener.ts';

const exec = promisify(execFile);
const ROOT = join(import.meta.dirname, '..', '..', '..');
/** A PATH without the workspace's node_modules/.bin folders, as a root shell on the host has. */
const HOST_PATH = `${join(process.execPath, '..')}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`;

let dir: { path: string; cleanup: () => Promise<void> };
let prefix: string;
let units: string;
const bin = (name: string): string => join(prefix, 'bin', name);
const version = (JSON.parse(await readFile(join(ROOT, 'packages/driver/package.json'), 'utf8')) as { version: string })
  .version;

beforeAll(async () => {
  dir = await tempDir('lcow-install-');
  prefix = join(dir.path, 'usr');
  units = join(dir.path, 'units');
  await exec('bash', [join(ROOT, 'scripts/install.sh'), '--prefix', prefix, '--unit-dir', units, '--no-build'], {
    maxBuffer: 1 << 24,
  });
}, 600_000);
afterAll(() => dir?.cleanup());

async function until<T>(what: string, f: () => T | undefined, ms = 30_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = f();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('scripts/install.sh and uninstall.sh, on a clean prefix', { timeout: 600_000 }, () => {
  it('the commands run from the prefix alone: lcow lists and runs its services, dmverity-vhd answers', async () => {
    const env = { PATH: HOST_PATH };
    const help = (await exec(bin('lcow'), ['--help'], { env })).stdout;
    expect(help).toMatch(/service commands[^\n]*\n {2}docker-plugin .*\n {2}containerd-snapshotter /);
    expect((await exec(bin('lcow'), ['docker-plugin', '--version'], { env })).stdout).toBe(
      `lcow-docker-plugin ${version}\n`,
    );
    expect((await exec(bin('lcow'), ['containerd-snapshotter', '--version'], { env })).stdout).toBe(
      `lcow-containerd-snapshotter ${version}\n`,
    );
    expect((await exec(bin('lcow-docker-plugin'), ['--version'], { env })).stdout).toMatch(/^lcow-docker-plugin /);
    expect((await exec(bin('dmverity-vhd'), ['-h'], { env })).stdout).toMatch(/^NAME:\n {3}dmverity-vhd /);
    expect((await exec(bin('lcow'), ['--version'], { env })).stdout).toBe(`lcow ${version}\n`);
  });

  it('manual pages that man renders, and bash completion that completes', async () => {
    const pages = await readdir(join(prefix, 'share/man/man1'));
    expect(pages).toEqual(expect.arrayContaining(['lcow.1', 'lcow-image.1', 'lcow-tar2ext4.1', 'lcow-man.1']));
    const page = (
      await exec('man', ['-l', join(prefix, 'share/man/man1/lcow-image.1')], {
        env: { ...process.env, MANWIDTH: '100' },
      })
    ).stdout;
    expect(page).toMatch(/lcow\s+image\s+roothash/);
    const completion = join(prefix, 'share/bash-completion/completions/lcow');
    const got = await exec('bash', [
      '-c',
      `source "$1"; COMP_WORDS=(lcow ima); COMP_CWORD=1; _lcow; echo "\${COMPREPLY[@]}"`,
      'bash',
      completion,
    ]);
    expect(got.stdout.trim()).toBe('image');
    expect(await readFile(join(prefix, 'share/zsh/site-functions/_lcow'), 'utf8')).toMatch(/^#compdef lcow\n/);
  });

  it('the units: ExecStart in the prefix, ordered before their daemon, readiness by notify; systemd-analyze verify', async () => {
    const names = (await readdir(units)).sort();
    expect(names).toEqual(['lcow-containerd-snapshotter.service', 'lcow-docker-plugin.service']);
    for (const [name, daemon] of [
      ['lcow-docker-plugin.service', 'docker.service'],
      ['lcow-containerd-snapshotter.service', 'containerd.service'],
    ] as const) {
      const text = await readFile(join(units, name), 'utf8');
      expect(text).toMatch(new RegExp(`^ExecStart=${bin(name.replace('.service', ''))} `, 'm'));
      expect(text).toMatch(new RegExp(`^Before=${daemon}$`, 'm'));
      expect(text).toMatch(/^Type=notify$/m);
      expect(text).toMatch(/^Restart=on-failure$/m);
    }
    if (!oracle('systemd-analyze')) return;
    const r = await exec('systemd-analyze', ['verify', ...names.map((n) => join(units, n))]).catch(
      (e: { code: number; stderr: string }) => e,
    );
    expect(r, JSON.stringify(r)).toMatchObject({ stderr: '' });
  });

  it('the plugin as its unit starts it: READY=1 once the socket answers, metrics on request, STOPPING=1 and status 0 on SIGTERM', async () => {
    const unit = await readFile(join(units, 'lcow-docker-plugin.service'), 'utf8');
    const args = unit.match(/^ExecStart=(\S+) (.*)$/m)!;
    const socket = join(dir.path, 'plugins', 'lcow.sock');
    const notify = notifyListener(join(dir.path, 'notify'));
    const child = spawn(
      args[1]!,
      [
        ...args[2]!.split(' '),
        '--socket',
        socket,
        '--state',
        join(dir.path, 'init'),
        '--metrics-address',
        '127.0.0.1:0',
      ],
      {
        env: { PATH: HOST_PATH, NOTIFY_SOCKET: join(dir.path, 'notify') },
        stdio: ['ignore', 'ignore', 'pipe'],
      },
    );
    let log = '';
    child.stderr.on('data', (c: Buffer) => (log += c.toString()));
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    try {
      const said: string[] = [];
      await until('READY=1', () => {
        said.push(...notify.read());
        return said.some((m) => m.split('\n').includes('READY=1')) ? true : undefined;
      });
      // Ready means answering: dockerd's first call.
      const activate = await new Promise<string>((resolve, reject) => {
        const req = request({ socketPath: socket, path: '/Plugin.Activate', method: 'POST' }, (res) => {
          let body = '';
          res.on('data', (c: Buffer) => (body += c.toString()));
          res.on('end', () => resolve(body));
        });
        req.on('error', reject);
        req.end('{}');
      });
      expect(JSON.parse(activate)).toEqual({ Implements: ['GraphDriver'] });
      // The opt-in metrics address: the call just made, counted.
      const url = /metrics at (http:\/\/\S+)/.exec(log)?.[1];
      expect(url, log).toBeDefined();
      expect(await (await fetch(url!)).text()).toMatch(/^lcow_plugin_calls_total\{method="Plugin.Activate"\} 1$/m);
      child.kill('SIGTERM');
      expect(await exited).toBe(0);
      said.push(...notify.read());
      expect(said.join('\n').split('\n')).toContain('STOPPING=1');
      const lines = log.trim().split('\n');
      expect(lines.length).toBeGreaterThan(1);
      for (const l of lines)
        expect(l).toMatch(/^\d{4}-\d\d-\d\dT[\d:.]+Z (error|warn |info |debug) lcow docker plugin: /);
    } finally {
      child.kill('SIGKILL');
      notify.close();
    }
  });

  it('uninstall removes everything it installed, and the folders it made', async () => {
    await exec('bash', [join(ROOT, 'scripts/uninstall.sh'), '--prefix', prefix]);
    expect(await readdir(prefix)).toEqual([]);
    expect(await readdir(dir.path)).not.toContain('units');
  });
});
