export { DurableError, type DurableErrorCode } from './errors.ts';
export { DurableFile, fsyncDir, publishFile, tempPathFor, writeFileDurable, type DurableOptions } from './durable.ts';
