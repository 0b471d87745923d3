export { BackupError, BACKUP_ERROR_CODES } from './backup-errors.js';
export type { BackupErrorCode, BackupErrorContext, BackupErrorOptions } from './backup-errors.js';
export { BACKUP_ID_PATTERN, newBackupId, isBackupId, assertBackupId, backupIdTimeMs } from './backup-id.js';
export { MANIFEST_FILE, shardFileName } from './backup-layout.js';
export { parseBackupUrl, formatBackupUrl } from './backup-target.js';
export type { BackupTarget, BackupUrl, TargetFileInfo, TargetCallOptions, TargetReadOptions } from './backup-target.js';
export { LocalTarget } from './local-target.js';
export { AzureTarget } from './azure-target.js';
export type { AzureTargetOptions } from './azure-target.js';
export { openBackupTarget } from './open-backup-target.js';
export type { OpenBackupTargetOptions } from './open-backup-target.js';
export { MANIFEST_FORMAT_VERSION, READABLE_MANIFEST_VERSIONS, parseManifest, serializeManifest, readManifest, writeManifest } from './backup-manifest.js';
export type { BackupManifest, ManifestShard, ManifestPartition } from './backup-manifest.js';
// The shard file format (FORMAT.md): one definition for the writer, the reader, restore and tests.
export {
  MAX_ROW_GROUP_ROWS,
  SHARD_FORMAT_VERSION,
  SHARD_COLUMNS,
  SHARD_SCHEMA,
  SHARD_METADATA_KEYS,
  shardKeyValueMetadata,
  shardRecordBatch,
  packedShardRecordBatch,
  shardFooterProblem,
} from './shard-format.js';
export type { ShardFileMetadata, ExpectedShardFooter, ShardFooterProblem } from './shard-format.js';
export { PLAIN_SHARD_COLUMNS, parquetShardStream, packedParquetShardStream } from './parquet-shard-stream.js';
export { ShardContentHash } from './shard-content-hash.js';
export type { HashableColumns } from './shard-content-hash.js';
export { ShardEncoders } from './shard-encoders.js';
export type { ShardEncodersOptions } from './shard-encoders.js';
export type { ParquetShardStreamOptions, ShardStreamStats } from './parquet-shard-stream.js';
export { writeShard } from './shard-writer.js';
export type { ShardTask, ShardResult, WriteShardOptions } from './shard-writer.js';
export { readShardFile, readShardRows, readShardColumns } from './shard-reader.js';
export type { ReadShardFileOptions, ReadShardRowsOptions, ShardChunk, ShardColumns, ShardColumnsChunk } from './shard-reader.js';
export { LeaseKeeper } from './lease-keeper.js';
export type { LeaseKeeperOptions } from './lease-keeper.js';
export { planBackupShards } from './shard-plan.js';
export type { PlanBackupShardsOptions } from './shard-plan.js';
export { verifyBackup } from './backup-verify.js';
export type { VerifyReport, VerifyProblem, VerifyBackupOptions } from './backup-verify.js';
export { listBackups } from './backup-catalog.js';
export type { BackupSummary } from './backup-catalog.js';
export { applyRetention } from './backup-retention.js';
export type { RetentionOptions, RetentionReport } from './backup-retention.js';
