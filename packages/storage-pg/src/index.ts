export { type MigrateOptions, migratePg } from './migrations.js';
export { PgStorage, type PgStorageOptions, pgStorage } from './pg-storage.js';
export { pgRawReader } from './raw-reader.js';
