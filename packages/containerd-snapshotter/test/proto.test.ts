// Our .proto files against containerd's own (Debian's golang-github-containerd-containerd-dev, installed by
// scripts/setup.sh): every message, field (name, number, type, repeated, map) and enum value, and
// every method of the service with its request, answer and streaming, must be the protocol's.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import protobuf from 'protobufjs';
import { describe, expect, it } from 'vitest';
import { inCI } from '@lcow/testkit';

const SRC = 'github.com/containerd/containerd/api';
const ROOTS = ['/usr/share/gocode/src'];
const theirsDir = ROOTS.map((r) => join(r, SRC)).find((d) =>
  existsSync(join(d, 'services/snapshots/v1/snapshots.proto')),
);
if (!theirsDir && inCI)
  throw new Error("CI=true: containerd's .proto files are missing (scripts/setup.sh installs them)");
const ours = join(import.meta.dirname, '..', 'proto');

type Shape = Record<string, unknown>;

/** Messages, enums and services of one parsed file, by full name, in a form that compares. */
function shapes(text: string): Shape {
  const root = protobuf.parse(text, { keepCase: true }).root;
  const out: Shape = {};
  const visit = (ns: protobuf.NamespaceBase): void => {
    for (const o of ns.nestedArray) {
      if (o instanceof protobuf.Type)
        out[o.fullName] = Object.fromEntries(
          o.fieldsArray.map((f) => [
            f.name,
            {
              id: f.id,
              type: f.type.replace(/^\./, ''),
              repeated: f.repeated,
              map: f instanceof protobuf.MapField ? f.keyType : null,
            },
          ]),
        );
      else if (o instanceof protobuf.Enum) out[o.fullName] = { ...o.values };
      else if (o instanceof protobuf.Service)
        out[o.fullName] = Object.fromEntries(
          o.methodsArray.map((m) => [
            m.name,
            { req: m.requestType, res: m.responseType, stream: [!!m.requestStream, !!m.responseStream] },
          ]),
        );
      if (o instanceof protobuf.Namespace) visit(o);
    }
  };
  visit(root);
  return out;
}

describe.runIf(theirsDir)("our .proto files are containerd's protocol", () => {
  it('snapshots.proto: every message, field, enum value and method', () => {
    const mine = shapes(readFileSync(join(ours, 'snapshots.proto'), 'utf8'));
    const theirs = shapes(readFileSync(join(theirsDir!, 'services/snapshots/v1/snapshots.proto'), 'utf8'));
    expect(Object.keys(mine).sort()).toEqual(Object.keys(theirs).sort());
    expect(mine).toEqual(theirs);
    expect(Object.keys(mine)).toContain('.containerd.services.snapshots.v1.Snapshots');
  });

  it("content.proto: the messages and methods of containerd's content service we use", () => {
    const mine = shapes(readFileSync(join(ours, 'content.proto'), 'utf8'));
    const theirs = shapes(readFileSync(join(theirsDir!, 'services/content/v1/content.proto'), 'utf8'));
    const service = '.containerd.services.content.v1.Content';
    const { [service]: myMethods, ...myMessages } = mine;
    expect(Object.keys(myMethods as object).sort()).toEqual(['Info', 'ListStatuses', 'Read']);
    for (const [m, shape] of Object.entries(myMethods as object))
      expect(shape).toEqual((theirs[service] as Record<string, unknown>)[m]);
    expect(Object.keys(myMessages).length).toBeGreaterThanOrEqual(8);
    for (const [name, shape] of Object.entries(myMessages)) expect([name, shape]).toEqual([name, theirs[name]]);
  });

  it('mount.proto: containerd.types.Mount', () => {
    const mine = shapes(readFileSync(join(ours, 'mount.proto'), 'utf8'));
    const theirs = shapes(readFileSync(join(theirsDir!, 'types/mount.proto'), 'utf8'));
    expect(mine['.containerd.types.Mount']).toEqual(theirs['.containerd.types.Mount']);
    expect(mine['.containerd.types.Mount']).toBeDefined();
  });
});
