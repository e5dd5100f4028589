// `lcow image inspect|roothash|create`: an image from any transport of @lcow/image, its layers as
// confidential-container policies need them — each layer's dm-verity root digest as a Windows host
// computes it (hcsshim's layout, 128 GiB maximum), or one VHD per layer — as hcsshim's dmverity-vhd does,
// by its spellings too (`--tarball FILE`, `--docker`, `-i`, `-o`, `--hash-dev-vhd`/`--hdv`, `-u`, `-p`).
import { availableParallelism } from 'node:os';
import { mkdir, open, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { DurableFile, publishFile } from '@lcow/durable';
import { formatPlatform, openImage, type OpenImageOptions } from '@lcow/image';
import { createFixedFooter } from '@lcow/vhd';
import { convertImageLayer, eachLayer, imageRootHashes } from '../../image-hashes.ts';
import { DriverError } from '../../errors.ts';
import type { Parsed } from '../args.ts';
import { escapeName, formatBytes, parseDuration, parseSize, toJson } from '../format.ts';
import { progressBar } from '../progress.ts';
import type { Command, Io } from '../types.ts';

/** skopeo's and dmverity-vhd's ways of saying where an image is and how to reach it. */
export function sourceOptions(p: Parsed): OpenImageOptions {
  const o: OpenImageOptions = {};
  const creds = p.value('creds');
  const user = p.value('username');
  const pass = p.value('password');
  if (creds !== undefined && (user !== undefined || pass !== undefined))
    throw new DriverError('ERR_USAGE', '--creds or --username/--password, not both');
  if ((user === undefined) !== (pass === undefined))
    throw new DriverError('ERR_USAGE', '--username and --password go together');
  if (creds !== undefined) o.creds = creds;
  else if (user !== undefined) o.creds = `${user}:${pass}`;
  const authfile = p.value('authfile');
  if (authfile !== undefined) o.authfile = authfile;
  const certDir = p.value('cert-dir');
  if (certDir !== undefined) o.certDir = certDir;
  const platform = p.value('platform');
  if (platform !== undefined) o.platform = platform;
  const tlsVerify = p.bool('tls-verify');
  if (tlsVerify !== undefined) o.tlsVerify = tlsVerify;
  const total = p.value('command-timeout');
  if (total !== undefined) o.timeoutMs = parseDuration(total, '--command-timeout');
  const request = p.value('request-timeout');
  if (request !== undefined) {
    const ms = parseDuration(request, '--request-timeout');
    if (ms === 0) throw new DriverError('ERR_USAGE', '--request-timeout 0: a request needs some time');
    o.requestTimeoutMs = ms;
    o.idleTimeoutMs = ms;
  }
  const retries = p.value('retry-times');
  if (retries !== undefined) {
    const n = Number(retries);
    if (!Number.isInteger(n) || n < 0 || n > 100)
      throw new DriverError('ERR_USAGE', `--retry-times ${retries}: 0 to 100`);
    o.attempts = n + 1;
  }
  const speed = p.value('min-speed');
  if (speed !== undefined) o.minBytesPerSecond = parseSize(speed, '--min-speed');
  return o;
}

/**
 * The image reference from the arguments: a REF operand, or dmverity-vhd's `-i REF` with
 * `--tarball FILE` (a docker-save archive) or `--docker` (the daemon); a registry otherwise.
 */
function imageArg(p: Parsed, what: string): string {
  const tarball = p.value('tarball');
  const docker = p.flag('docker');
  const named = p.value('image');
  const pos = p.operands[0];
  if (pos !== undefined && named !== undefined) throw new DriverError('ERR_USAGE', `${what}: an image or -i, not both`);
  const ref = pos ?? named;
  if (tarball !== undefined && docker) throw new DriverError('ERR_USAGE', '--tarball or --docker, not both');
  if (tarball !== undefined) return `docker-archive:${tarball}${ref ? `:${ref}` : ''}`;
  if (ref === undefined) throw new DriverError('ERR_USAGE', `${what}: an image is needed (see ${what} --help)`);
  if (docker) return `docker-daemon:${ref}`;
  // dmverity-vhd's `-i HOST/REPO:TAG` without --tarball or --docker is a registry reference.
  if (named !== undefined && !TRANSPORT.test(ref)) return `docker://${ref}`;
  return ref;
}

const TRANSPORT = /^(docker:\/\/|docker-archive:|oci-archive:|oci:|docker-daemon:)/;

/**
 * `-v`: one `level=debug msg="…"` line per step, with the messages and fields dmverity-vhd -v logs (scripts
 * written for it may read them), on standard error (`io.debug`: dmverity-vhd's own stream, standard output,
 * when run as `dmverity-vhd`). Layers are worked on in parallel; their lines come in layer order with each
 * result, as the tool's own sequential run prints them.
 */
function debugLog(p: Parsed, io: Io): (msg: string, fields?: Record<string, string | number>) => void {
  if (!p.flag('verbose')) return () => {};
  const write = io.debug ?? io.err;
  return (msg, fields = {}) =>
    write(
      [
        `level=debug msg=${JSON.stringify(msg)}`,
        ...Object.entries(fields).map(([k, v]) => `${k}=${JSON.stringify(v)}`),
      ].join(' '),
    );
}

/** `--parallel N` (1 to 64), default the number of cores. */
export function parallelism(p: Parsed): number {
  const v = p.value('parallel');
  if (v === undefined) return availableParallelism();
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1 || n > 64) throw new DriverError('ERR_USAGE', `--parallel ${v}: 1 to 64`);
  return n;
}

async function inspect(p: Parsed, io: Io): Promise<number> {
  const json = p.flag('json');
  const src = sourceOptions(p);
  const ref = imageArg(p, 'lcow image inspect');
  const image = await openImage(ref, { ...src, signal: io.signal });
  try {
    const layers = image.layers.map((l) => ({
      index: l.index,
      digest: l.digest,
      diffId: l.diffId,
      chainId: `sha256:${image.chainIds[l.index]}`,
      mediaType: l.mediaType,
      size: l.size,
    }));
    const info = {
      name: image.name,
      format: image.format,
      repoTags: image.repoTags,
      manifestDigest: image.manifestDigest,
      mediaType: image.mediaType,
      platform: image.platform ? formatPlatform(image.platform) : null,
      configDigest: image.configDigest,
      created: typeof image.config.created === 'string' ? image.config.created : null,
      layers,
    };
    if (json) io.out(toJson(info));
    else {
      io.out(`${escapeName(info.name)}  (${info.format})`);
      if (info.repoTags.length) io.out(`  tags      ${info.repoTags.map(escapeName).join(', ')}`);
      if (info.manifestDigest) io.out(`  manifest  ${info.manifestDigest}  ${escapeName(info.mediaType ?? '')}`);
      io.out(`  config    ${info.configDigest}`);
      if (info.platform) io.out(`  platform  ${escapeName(info.platform)}`);
      if (info.created) io.out(`  created   ${escapeName(info.created)}`);
      for (const l of layers)
        io.out(
          `  layer ${l.index}  ${l.diffId}  ${l.size >= 0 ? formatBytes(l.size).padStart(9) : '        ?'}  ${escapeName(l.mediaType)}`,
        );
    }
    return 0;
  } finally {
    await image.close();
  }
}

async function roothash(p: Parsed, io: Io): Promise<number> {
  const json = p.flag('json');
  const parallel = parallelism(p);
  const src = sourceOptions(p);
  const ref = imageArg(p, 'lcow image roothash');
  const debug = debugLog(p, io);
  const bar = progressBar(`roothash ${ref}`, io.progress, 'layers');
  // Each layer converted straight into its digest (a large one in a child process of its own, so both
  // cores work): no image is written anywhere.
  const r = await imageRootHashes(ref, {
    ...src,
    signal: io.signal,
    parallel,
    onLayer: (done, total) => bar.update({ done, total }),
  });
  bar.done();
  if (json) {
    io.out(toJson({ image: r.image, manifestDigest: r.manifestDigest, layers: r.layers }));
    return 0;
  }
  debug(`Image id: ${r.configDigest}`);
  debug(`${r.layers.length} layers found`);
  for (const l of r.layers) {
    debug('uncompressed layer', { layerDiff: l.diffId, layerNumber: l.index });
    io.out(`Layer ${l.index} root hash: ${l.rootHash}`);
  }
  return 0;
}

async function exists(p: string): Promise<boolean> {
  return stat(p).then(
    () => true,
    () => false,
  );
}

async function create(p: Parsed, io: Io): Promise<number> {
  const json = p.flag('json');
  const force = p.flag('force');
  const hashDev = p.flag('hash-dev-vhd');
  const out = p.value('out-dir')!;
  if (out === '-') throw new DriverError('ERR_USAGE', '-o -: the VHDs go to a folder, not to standard output');
  const parallel = parallelism(p);
  const src = sourceOptions(p);
  const ref = imageArg(p, 'lcow image create');
  const debug = debugLog(p, io);
  // Made when missing, as dmverity-vhd does; anything else already there under that name is refused.
  await mkdir(out, { recursive: true });
  if (!(await stat(out)).isDirectory()) throw new DriverError('ERR_EXISTS', `${out}: not a folder`);
  const image = await openImage(ref, { ...src, signal: io.signal });
  try {
    const names = image.layers.map((l) => l.diffId.slice('sha256:'.length));
    if (!force)
      for (const n of names)
        for (const f of [`${n}.vhd`, ...(hashDev ? [`${n}.hash-dev.vhd`] : [])])
          if (await exists(join(out, f)))
            throw new DriverError('ERR_EXISTS', `${join(out, f)}: already exists (--force to replace it)`);
    debug(`Image id: ${image.configDigest}`);
    debug('creating layer VHDs with dm-verity');
    const bar = progressBar(`create ${image.name}`, io.progress, 'layers');
    let finished = 0;
    const made = await eachLayer(image, parallel, async (layer) => {
      const name = names[layer.index]!;
      const partial = join(out, `.${name}.vhd.${randomBytes(4).toString('hex')}.partial`);
      try {
        const r = await convertImageLayer(image, layer, partial, { verity: true, signal: io.signal });
        const files = [join(out, `${name}.vhd`)];
        if (hashDev) {
          files.push(join(out, `${name}.hash-dev.vhd`));
          await splitHashDevice(partial, r.dataBytes!, r.size, files[1]!);
        }
        await publishFile(partial, files[0]!);
        bar.update({ done: ++finished, total: image.layers.length });
        return { index: layer.index, diffId: layer.diffId, rootHash: r.rootDigest!, files };
      } catch (e) {
        await rm(partial, { force: true });
        throw e;
      }
    });
    bar.done();
    if (json) io.out(toJson({ image: image.name, layers: made }));
    else
      for (const m of made) {
        debug('converting tar to layer VHD', { layerDiff: m.diffId, layerNumber: m.index });
        if (hashDev) io.out(`hash device created at ${m.files[1]}`);
        io.out(`Layer VHD created at ${m.files[0]}`);
      }
    return 0;
  } finally {
    await image.close();
  }
}

/**
 * dmverity-vhd's `--hash-dev-vhd`: the verity superblock and tree (after the filesystem in `path`) move
 * to a VHD of their own; `path` keeps the filesystem and gets a footer for its new size. Both synced.
 */
async function splitHashDevice(path: string, dataBytes: number, size: number, hashPath: string): Promise<void> {
  const footerLen = 512;
  const treeLen = size - footerLen - dataBytes;
  const fh = await open(path, 'r+');
  const hash = await DurableFile.create(hashPath);
  try {
    const tree = Buffer.alloc(treeLen);
    await fh.read(tree, 0, treeLen, dataBytes);
    await hash.handle.write(tree, 0, treeLen, 0);
    const hf = createFixedFooter(treeLen, { timestamp: new Date(Date.UTC(2000, 0, 1)) });
    await hash.handle.write(hf, 0, hf.length, treeLen);
    await fh.truncate(dataBytes);
    const f = createFixedFooter(dataBytes, { timestamp: new Date(Date.UTC(2000, 0, 1)) });
    await fh.write(f, 0, f.length, dataBytes);
    await fh.sync();
    await hash.commit();
  } catch (e) {
    await hash.discard();
    throw e;
  } finally {
    await fh.close();
  }
}

export const imageCommand: Command = {
  name: 'image',
  run: async (form, p, io) => {
    if (form === 'inspect') return inspect(p, io);
    if (form === 'roothash') return roothash(p, io);
    return create(p, io);
  },
};
