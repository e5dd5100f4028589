// 2.5.1 BAT Entry: bits 0–2 state, 3–19 reserved, 20–63 FileOffsetMB. Read as two 32-bit halves so the
// 44-bit offset stays an exact number.

/** Bytes per BAT entry. */
export const BAT_ENTRY_SIZE = 8;

/** A decoded BAT entry. */
export interface BatEntry {
  state: number;
  /** File offset in MiB (0 when unallocated). */
  offsetMB: number;
  /** Reserved bits 3–19; must be zero. */
  reserved: number;
}

export function decodeBatEntry(table: Uint8Array, index: number): BatEntry {
  const view = new DataView(table.buffer, table.byteOffset, table.byteLength);
  const lo = view.getUint32(index * BAT_ENTRY_SIZE, true);
  const hi = view.getUint32(index * BAT_ENTRY_SIZE + 4, true);
  return { state: lo & 0x7, reserved: (lo >>> 3) & 0x1ffff, offsetMB: hi * 4096 + (lo >>> 20) };
}

export function encodeBatEntry(table: Uint8Array, index: number, state: number, offsetMB: number): void {
  const view = new DataView(table.buffer, table.byteOffset, table.byteLength);
  const lo = ((offsetMB % 4096) << 20) | (state & 0x7);
  view.setUint32(index * BAT_ENTRY_SIZE, lo >>> 0, true);
  view.setUint32(index * BAT_ENTRY_SIZE + 4, Math.floor(offsetMB / 4096), true);
}
