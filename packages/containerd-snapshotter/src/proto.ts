// Our .proto files (proto/), loaded by @grpc/proto-loader the one way every service here needs them: field
// names as the protocol spells them, 64-bit numbers as numbers, enums by name, every field present.
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

const PROTO_DIR = fileURLToPath(new URL('../proto/', import.meta.url));

/**
 * The services and messages of `file` (a name in proto/, or an absolute path), by package path:
 * `loadProto('snapshots.proto').containerd.services.snapshots.v1.Snapshots`.
 */
export function loadProto(file: string): grpc.GrpcObject {
  const def = protoLoader.loadSync(file, {
    includeDirs: [PROTO_DIR],
    keepCase: true,
    longs: Number,
    enums: String,
    defaults: true,
    arrays: true,
    objects: true,
  });
  return grpc.loadPackageDefinition(def);
}
