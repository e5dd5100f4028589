export { DriverError, type DriverErrorCode } from './errors.ts';
export { main, type Command, type Io } from './cli/main.ts';
export { vhdReport, type VhdReport } from './cli/commands/vhd.ts';
export { formatBytes, parseSize } from './cli/format.ts';
export { UnionView, type UnionLayer } from './backends/union-view.ts';
