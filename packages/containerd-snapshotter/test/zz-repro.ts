import { execFileSync } from 'node:child_process';
import { Snapshotter } from '../src/index.ts';
process.on('unhandledRejection', (e) => {
  console.log('UNHANDLED', e);
});
const s = await Snapshotter.open('/var/tmp/repro/root', { log: (l) => console.log(l) });
try {
  const m = await s.prepare('a', '');
  execFileSync('cp', ['-a', '/usr/share/.', m[0]!.source]);
  console.log('copied');
  let stop = false;
  const loop = (async () => {
    while (!stop) {
      await s.usage('a').then(
        (u) => console.log('usage', u),
        (e) => console.log('usage err', e.message),
      );
      await new Promise((r) => setTimeout(r, 50));
    }
  })();
  const t = performance.now();
  await s.commit('done', 'a');
  console.log('committed', performance.now() - t);
  stop = true;
  await loop;
  await s.remove('done');
} catch (e) {
  console.log('ERR', e);
}
await s.close();
