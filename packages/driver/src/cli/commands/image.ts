// `lcow image inspect|roothash|create`: an image from any transport of @lcow/image, its layers as
// confidential-container policies need them — each layer's dm-verity root digest as a Windows host
// computes it (hcsshim's layout, 128 GiB maximum), or one VHD per layer — as hcsshim's dmverity-vhd does,
// by its spellings too (`--tarball FILE`, `--docker`, `-i`, `-o`, `--hash-dev-vhd`/`--hdv`, `-u`, `-p`).
import { availableParallelism } from 'node:os';
import { open, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { DurableFile, publishFile } from '@lcow/durable';
import { formatPlatform, openImage, type Image, type ImageLayer, type OpenImageOptions } from '@lcow/image';
import { createFixedFooter } from '@lcow/vhd';
import { convertLayer, type ApplyResult, type LayerSource } from '../../apply.ts';
import { DriverError } from '../../errors.ts';
import { flag, option, positional } from '../args.ts';
import { escapeName, formatBytes, toJson } from '../format.ts';
import { progressBar } from '../progress.ts';
import { SPECS } from '../registry.ts';
import type { Command, Io } from '../types.ts';

/** skopeo's and dmverity-vhd's ways of saying where an image is and how to reach it, removed from `args`. */
export function sourceOptions(args: string[]): OpenImageOptions {
  const o: OpenImageOptions = {};
  const creds = option(args, '--creds');
  const user = option(args, '--username') ?? option(args, '-u');
  const pass = option(args, '--password') ?? option(args, '-p');
  if (creds !== undefined && (user !== undefined || pass !== undefined))
    throw new DriverError('ERR_USAGE', '--creds or --username/--password, not both');
  if ((user === undefined) !== (pass === undefined))
    throw new DriverError('ERR_USAGE', '--username and --password go together');
  if (creds !== undefined) o.creds = creds;
  else if (user !== undefined) o.creds = `${user}:${pass}`;
  const authfile = option(args, '--authfile');
  if (authfile !== undefined) o.authfile = authfile;
  const certDir = option(args, '--cert-dir');
  if (certDir !== undefined) o.certDir = certDir;
  const platform = option(args, '--platform');
  if (platform !== undefined) o.platform = platform;
  const i = args.findIndex((a) => a === '--tls-verify' || a.startsWith('--tls-verify='));
  if (i >= 0) {
    const v = args[i]!.includes('=') ? args[i]!.split('=')[1] : 'true';
    if (v !== 'true' && v !== 'false') throw new DriverError('ERR_USAGE', `--tls-verify=${v}: true or false`);
    o.tlsVerify = v === 'true';
    args.splice(i, 1);
  }
  return o;
}

/**
 * The image reference from the arguments: a positional REF, or dmverity-vhd's `-i REF` with
 * `--tarball FILE` (a docker-save archive) or `--docker` (the daemon); a registry otherwise.
 */
function imageArg(args: string[], usage: string): string {
  const tarball = option(args, '--tarball') ?? option(args, '-t');
  const docker = flag(args, '--docker') || flag(args, '-d');
  const named = option(args, '--image') ?? option(args, '-i');
  const [pos] =
    args.filter((a) => !a.startsWith('-')).length > 0 ? positional(args, 1, usage) : positional(args, 0, usage);
  if (pos !== undefined && named !== undefined)
    throw new DriverError('ERR_USAGE', `an image or -i, not both; usage: ${usage}`);
  const ref = pos ?? named;
  if (tarball !== undefined && docker) throw new DriverError('ERR_USAGE', '--tarball or --docker, not both');
  if (tarball !== undefined) return `docker-archive:${tarball}${ref ? `:${ref}` : ''}`;
  if (ref === undefined) throw new DriverError('ERR_USAGE', `usage: ${usage}`);
  if (docker) return `docker-daemon:${ref}`;
  // dmverity-vhd's `-i HOST/REPO:TAG` without --tarball or --docker is a registry reference.
  if (named !== undefined && !TRANSPORT.test(ref)) return `docker://${ref}`;
  return ref;
}

const TRANSPORT = /^(docker:\/\/|docker-archive:|oci-archive:|oci:|docker-daemon:)/;

function what(image: Image, layer: ImageLayer): string {
  return `${image.name}: layer ${layer.index}`;
}

/** Where the converter child reads a layer: the file range itself, or the checked blob stream. */
function layerSource(layer: ImageLayer, signal: AbortSignal): LayerSource {
  return layer.file ?? layer.open({ signal });
}

/**
 * One layer through the converter child as dmverity-vhd converts it (hcsshim's layout), its tar checked
 * against the layer's diff id there; the blob's digest is checked as it streams.
 */
async function convertChecked(
  image: Image,
  layer: ImageLayer,
  out: string,
  opts: { verity: boolean; digestOnly?: boolean },
  signal: AbortSignal,
): Promise<ApplyResult> {
  const r = await convertLayer(layerSource(layer, signal), out, {
    ...opts,
    digest: true,
    hcsshim: true,
    signal,
    what: what(image, layer),
  });
  if (r.diffId !== layer.diffId)
    throw new DriverError(
      'ERR_VERIFICATION',
      `${what(image, layer)}: its tar hashes to ${r.diffId}, not ${layer.diffId}`,
    );
  return r;
}

/** Runs `job` for every layer, `parallel` at a time, in index order of start; results in layer order. */
async function eachLayer<T>(image: Image, parallel: number, job: (layer: ImageLayer) => Promise<T>): Promise<T[]> {
  const out = new Array<T>(image.layers.length);
  let next = 0;
  let failed: unknown = null;
  const worker = async (): Promise<void> => {
    while (failed === null && next < image.layers.length) {
      const layer = image.layers[next++]!;
      try {
        out[layer.index] = await job(layer);
      } catch (e) {
        failed ??= e;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(parallel, image.layers.length)) }, worker));
  if (failed !== null) throw failed;
  return out;
}

function parallelism(args: string[]): number {
  const p = option(args, '--parallel');
  if (p === undefined) return availableParallelism();
  const n = Number(p);
  if (!Number.isInteger(n) || n < 1 || n > 64) throw new DriverError('ERR_USAGE', `--parallel ${p}: 1 to 64`);
  return n;
}

const INSPECT = SPECS.image.usage[0];
const ROOTHASH = SPECS.image.usage[1];
const CREATE = SPECS.image.usage[2];

async function inspect(args: string[], io: Io): Promise<number> {
  const json = flag(args, '--json');
  const src = sourceOptions(args);
  const ref = imageArg(args, INSPECT);
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
      if (info.manifestDigest) io.out(`  manifest  ${info.manifestDigest}  ${info.mediaType ?? ''}`);
      io.out(`  config    ${info.configDigest}`);
      if (info.platform) io.out(`  platform  ${info.platform}`);
      if (info.created) io.out(`  created   ${info.created}`);
      for (const l of layers)
        io.out(
          `  layer ${l.index}  ${l.diffId}  ${l.size >= 0 ? formatBytes(l.size).padStart(9) : '        ?'}  ${l.mediaType}`,
        );
    }
    return 0;
  } finally {
    await image.close();
  }
}

async function roothash(args: string[], io: Io): Promise<number> {
  const json = flag(args, '--json');
  const parallel = parallelism(args);
  const src = sourceOptions(args);
  const ref = imageArg(args, ROOTHASH);
  const image = await openImage(ref, { ...src, signal: io.signal });
  try {
    const bar = progressBar(`roothash ${image.name}`, io.progress);
    let finished = 0;
    // Each layer converted in a child of its own (both cores), straight into the digest: no image is
    // written anywhere. The child checks the diff id; the blob's digest is checked as it streams.
    const results = await eachLayer(image, parallel, async (layer) => {
      const r = await convertChecked(image, layer, '', { digestOnly: true, verity: false }, io.signal);
      bar.update({ done: ++finished, total: image.layers.length });
      return r;
    });
    bar.done();
    if (json)
      io.out(
        toJson({
          image: image.name,
          manifestDigest: image.manifestDigest,
          layers: results.map((r, i) => ({
            index: i,
            diffId: image.layers[i]!.diffId,
            rootHash: r.rootDigest,
            dataBytes: r.size,
          })),
        }),
      );
    else for (const [i, r] of results.entries()) io.out(`Layer ${i} root hash: ${r.rootDigest}`);
    return 0;
  } finally {
    await image.close();
  }
}

async function exists(p: string): Promise<boolean> {
  return stat(p).then(
    () => true,
    () => false,
  );
}

async function create(args: string[], io: Io): Promise<number> {
  const json = flag(args, '--json');
  const force = flag(args, '--force');
  const hashDev = flag(args, '--hash-dev-vhd') || flag(args, '--hdv');
  const out = option(args, '--out-dir') ?? option(args, '-o');
  const parallel = parallelism(args);
  const src = sourceOptions(args);
  const ref = imageArg(args, CREATE);
  if (out === undefined) throw new DriverError('ERR_USAGE', `-o DIR is required; usage: ${CREATE}`);
  if (
    !(await stat(out).then(
      (s) => s.isDirectory(),
      () => false,
    ))
  )
    throw new DriverError('ERR_NOT_FOUND', `${out}: not a folder`);
  const image = await openImage(ref, { ...src, signal: io.signal });
  try {
    const names = image.layers.map((l) => l.diffId.slice('sha256:'.length));
    if (!force)
      for (const n of names)
        for (const f of [`${n}.vhd`, ...(hashDev ? [`${n}.hash-dev.vhd`] : [])])
          if (await exists(join(out, f)))
            throw new DriverError('ERR_EXISTS', `${join(out, f)} exists (--force to overwrite)`);
    const bar = progressBar(`create ${image.name}`, io.progress);
    let finished = 0;
    const made = await eachLayer(image, parallel, async (layer) => {
      const name = names[layer.index]!;
      const partial = join(out, `.${name}.vhd.${randomBytes(4).toString('hex')}.partial`);
      try {
        const r = await convertChecked(image, layer, partial, { verity: true }, io.signal);
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
  summary: SPECS.image.summary,
  usage: [INSPECT, ROOTHASH, CREATE],
  run: async (argv, io) => {
    // dmverity-vhd puts --tarball and --docker before the command: accepted on either side.
    const args = [...argv];
    const at = args.findIndex((a) => a === 'inspect' || a === 'roothash' || a === 'create');
    const sub = at < 0 ? undefined : args.splice(at, 1)[0];
    if (sub === 'inspect') return inspect(args, io);
    if (sub === 'roothash') return roothash(args, io);
    if (sub === 'create') return create(args, io);
    throw new DriverError('ERR_USAGE', `usage: ${INSPECT}\n       ${ROOTHASH}\n       ${CREATE}`);
  },
};
