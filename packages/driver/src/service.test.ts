import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { notifyListener } from '../test/notify-listener.ts';
import { logOptions, notifySystemd, serviceLog } from './service.ts';

describe('serviceLog', () => {
  it('one line per event: time, level, message; below the level nothing; JSON on request', () => {
    const lines: string[] = [];
    const log = serviceLog({ level: 'warn', write: (l) => lines.push(l) });
    log('started');
    log('disk almost full', 'warn');
    log('layer "a\nb": failed', 'error');
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z warn {2}disk almost full$/);
    expect(lines[1]).toMatch(/Z error layer "a\\nb": failed$/);
    const json: string[] = [];
    serviceLog({ format: 'json', level: 'debug', write: (l) => json.push(l) })('x\ny', 'debug');
    expect(JSON.parse(json[0]!)).toMatchObject({ level: 'debug', msg: 'x\ny', time: expect.any(String) });
  });

  it('options: the defaults, and a typed error naming the choices', () => {
    expect(logOptions(undefined, undefined)).toEqual({ level: 'info', format: 'text' });
    expect(() => logOptions('loud', undefined)).toThrow(/--log-level "loud": one of error, warn, info, debug/);
    expect(() => logOptions(undefined, 'xml')).toThrow(expect.objectContaining({ code: 'ERR_USAGE' }));
  });
});

describe('notifySystemd', () => {
  it('sends the state to $NOTIFY_SOCKET (a path, or @abstract), and is a no-op without it', () => {
    expect(notifySystemd('READY=1', {})).toBe(false);
    const dir = mkdtempSync(join(tmpdir(), 'lcow-notify-'));
    try {
      for (const name of [join(dir, 'notify'), `@lcow-notify-${process.pid}`]) {
        const listener = notifyListener(name);
        try {
          expect(notifySystemd('READY=1\nSTATUS=serving', { NOTIFY_SOCKET: name })).toBe(true);
          expect(listener.read()).toEqual(['READY=1\nSTATUS=serving']);
        } finally {
          listener.close();
        }
      }
      expect(() => notifySystemd('READY=1', { NOTIFY_SOCKET: join(dir, 'nobody') })).toThrow(
        expect.objectContaining({ code: 'ERR_HOST_COMMAND' }),
      );
      expect(() => notifySystemd('READY=1', { NOTIFY_SOCKET: 'relative' })).toThrow(
        expect.objectContaining({ code: 'ERR_INVALID_ARGUMENT' }),
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
