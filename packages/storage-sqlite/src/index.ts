export { sqliteRawReader } from './raw-reader.js';
export { SqliteStorage, type SqliteStorageOptions, sqliteStorage } from './sqlite-storage.js';
