/**
 * `@spendguard/core/conformance`: the suite every storage backend runs unchanged (it needs vitest, a
 * peer dependency of this entry only), with the raw reader of the in-memory store as an example.
 */
export { memoryRawReader } from './memory-raw-reader.js';
export {
  type ConformanceOptions,
  type RawStorageReader,
  runStorageConformance,
  spendLogFixture,
} from './storage-conformance.js';
