// An error as one line of text, for a terminal, a log or another program. Apart from errors.ts so that the
// command's start does not load @lcow/image (its registry client, zstd): this is needed only on failure.
import { escapeControls } from '@lcow/image';
import { describeError } from './errors.ts';

/** Longest message {@link errorText} gives: a line, not a page of someone else's text. */
const MESSAGE_MAX = 2000;

/**
 * `CODE: message` for an error, fit for a terminal, a log line or a reply another program shows: the code
 * and message of {@link describeError}, the message's control characters escaped (a tar entry's name or a
 * server's text cannot rewrite the screen or start a forged line) and cut to 2000 characters.
 */
export function errorText(e: unknown): string {
  const { code, message } = describeError(e);
  const cut =
    message.length > MESSAGE_MAX
      ? `${message.slice(0, MESSAGE_MAX)}… (${message.length - MESSAGE_MAX} more characters)`
      : message;
  return `${code}: ${escapeControls(cut)}`;
}
