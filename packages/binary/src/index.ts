export { BinaryError, type BinaryErrorCode } from './errors.ts';
export { crc32c, crc32cUpdate } from './crc32c.ts';
export {
  ascii,
  bytes,
  guid,
  pad,
  struct,
  u16,
  u32,
  u64,
  u64n,
  u8,
  utf16le,
  uuid,
  type Endian,
  type FieldType,
  type Infer,
  type Struct,
} from './struct.ts';
