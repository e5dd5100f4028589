// The `lcow` command as a library: run it in-process with your own streams (tests, embedding). Its own entry,
// `@lcow/driver/cli`, so that importing the driver does not bring in the command line.
export { dmverityVhdMain, main } from './main.ts';
export type { Command, Io } from './types.ts';
