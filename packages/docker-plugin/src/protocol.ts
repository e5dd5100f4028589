// Docker's graph-driver plugin protocol, as dockerd's graphdriver proxy speaks it: every call is a POST to
// `/<Method>` on the plugin's unix socket with a JSON body, answered with JSON; `Diff` answers with the
// tar itself and `ApplyDiff` sends the tar as the body (`?id=&parent=` in the query). A failure is any
// non-200 status with `{"Err": "…"}`, which dockerd shows to the user as `<Method>: <Err>`.

/** What dockerd sends with most calls (fields absent when empty). */
export interface DriverRequest {
  ID?: string;
  Parent?: string;
  /** SELinux label for the mount; lcow's mounts carry none (accepted and ignored). */
  MountLabel?: string;
  StorageOpt?: Record<string, string> | null;
}

/** One entry of a user-namespace map (`--userns-remap`). */
export interface IdMap {
  ContainerID: number;
  HostID: number;
  Size: number;
}

/** `GraphDriver.Init`. */
export interface InitRequest {
  Home: string;
  Opts: string[] | null;
  UIDMaps?: IdMap[] | null;
  GIDMaps?: IdMap[] | null;
}

/** moby's archive.ChangeType: modify 0, add 1, delete 2. */
export const ChangeKind = { modify: 0, add: 1, delete: 2 } as const;

/** The answer of a call; only the fields that call fills are present. */
export interface DriverResponse {
  Err?: string;
  Dir?: string;
  Exists?: boolean;
  Status?: [string, string][];
  Changes?: { Path: string; Kind: number }[];
  Size?: number;
  Metadata?: Record<string, string>;
  Capabilities?: { ReproducesExactDiffs: boolean };
  Implements?: string[];
}

/** The media type plugins answer with. */
export const PLUGIN_MEDIA_TYPE = 'application/vnd.docker.plugins.v1.2+json';

/** Largest JSON request body accepted (dockerd's are a few hundred bytes). */
export const MAX_JSON_BODY = 1 << 20;
