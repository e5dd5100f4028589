/**
 * Codes of {@link LayerStoreError}: `ERR_INVALID_LAYER_ID` (an id that could name something outside its
 * folder), `ERR_LAYER_NOT_FOUND`, `ERR_LAYER_EXISTS`, `ERR_LAYER_CHAIN_CORRUPT` (a `layerchain.json` that is
 * not what the original driver wrote).
 */
export type LayerStoreErrorCode =
  'ERR_INVALID_LAYER_ID' | 'ERR_LAYER_NOT_FOUND' | 'ERR_LAYER_EXISTS' | 'ERR_LAYER_CHAIN_CORRUPT';

/** The one error class of `@lcow/layerstore`. */
export class LayerStoreError extends Error {
  readonly code: LayerStoreErrorCode;
  constructor(code: LayerStoreErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.code = code;
  }
  override get name(): string {
    return 'LayerStoreError';
  }
}
