// systemd's end of sd_notify, played with libc for the tests: a bound unix datagram socket, read without
// blocking (Node has no unix datagram sockets).
import { createRequire } from 'node:module';

type Fn = (...a: unknown[]) => number;

/** Listens at `name` (a path, or `@name` in the abstract namespace); `read()` returns what arrived. */
export function notifyListener(name: string): { read(): string[]; close(): void } {
  const koffi = createRequire(import.meta.url)('koffi') as { load(p: string): { func(p: string): Fn } };
  const libc = koffi.load('libc.so.6');
  const socket = libc.func('int socket(int, int, int)');
  const bind = libc.func('int bind(int, const void *, uint32_t)');
  const recv = libc.func('long recv(int, _Out_ uint8_t *buf, size_t, int)');
  const close = libc.func('int close(int)');
  const raw = Buffer.from(name.startsWith('@') ? `\0${name.slice(1)}` : `${name}\0`);
  const addr = Buffer.alloc(2 + raw.length);
  addr.writeUInt16LE(1, 0); // AF_UNIX
  raw.copy(addr, 2);
  const fd = socket(1, 2, 0); // SOCK_DGRAM
  if (bind(fd, addr, addr.length) !== 0) throw new Error(`bind ${name} failed`);
  return {
    read() {
      const got: string[] = [];
      const buf = Buffer.alloc(4096);
      for (let n; (n = recv(fd, buf, buf.length, 0x40 /* MSG_DONTWAIT */)) > 0;)
        got.push(buf.subarray(0, n).toString());
      return got;
    },
    close: () => void close(fd),
  };
}
