/**
 * Codes of {@link LayerStoreError}: `ERR_INVALID_LAYER_ID` (an id that could name something outside its
 * folder), `ERR_LAYER_NOT_FOUND`, `ERR_LAYER_EXISTS`, `ERR_LAYER_CHAIN_CORRUPT` (a `layerchain.json` that is
 * not what the original driver wrote, or that names folders outside the data root), `ERR_LAYER_CORRUPT` (a
 * layer folder holding a link or a folder where the contract has a file), `ERR_CHAIN_TOO_DEEP` (more
 * parents than {@link MAX_CHAIN_DEPTH}), `ERR_DATA_ROOT` (a data root that is not a folder, or whose own
 * folders are links or files).
 */
export type LayerStoreErrorCode =
  | 'ERR_INVALID_LAYER_ID'
  | 'ERR_LAYER_NOT_FOUND'
  | 'ERR_LAYER_EXISTS'
  | 'ERR_LAYER_CHAIN_CORRUPT'
  | 'ERR_LAYER_CORRUPT'
  | 'ERR_CHAIN_TOO_DEEP'
  | 'ERR_DATA_ROOT';

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
