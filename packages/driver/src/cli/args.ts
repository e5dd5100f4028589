import { DriverError } from '../errors.ts';

/** Removes `name` from `args`; true when it was there. */
export function flag(args: string[], name: string): boolean {
  const i = args.indexOf(name);
  if (i < 0) return false;
  args.splice(i, 1);
  return true;
}

/** Removes `name VALUE` or `name=VALUE` from `args` and returns the value. */
export function option(args: string[], name: string): string | undefined {
  const i = args.findIndex((a) => a === name || a.startsWith(`${name}=`));
  if (i < 0) return undefined;
  const a = args[i]!;
  if (a.includes('=')) {
    args.splice(i, 1);
    return a.slice(name.length + 1);
  }
  const v = args[i + 1];
  if (v === undefined) throw new DriverError('ERR_USAGE', `${name} needs a value`);
  args.splice(i, 2);
  return v;
}

/** The remaining arguments: exactly `count` of them, and no unknown options. */
export function positional(args: string[], count: number, usage: string): string[] {
  const unknown = args.find((a) => a.startsWith('-'));
  if (unknown) throw new DriverError('ERR_USAGE', `unknown option ${unknown}; usage: ${usage}`);
  if (args.length !== count) throw new DriverError('ERR_USAGE', `usage: ${usage}`);
  return args;
}
