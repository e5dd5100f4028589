/** An HCS JSON document (a result, properties, notification data): parsed, or kept as text when it is not JSON. */
export function parseDocument(text: string | null | undefined): unknown {
  if (!text) return undefined;
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return text;
  }
}
