export { PluginServer, defaultStateFile, type PluginServerOptions } from './server.ts';
export { PluginError } from './errors.ts';
export { main, DEFAULT_SOCKET } from './main.ts';
export {
  ChangeKind,
  MAX_JSON_BODY,
  PLUGIN_MEDIA_TYPE,
  type DriverRequest,
  type DriverResponse,
  type IdMap,
  type InitRequest,
} from './protocol.ts';
