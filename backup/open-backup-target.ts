import { AzureTarget, type AzureTargetOptions } from './azure-target.js';
import { parseBackupUrl, type BackupTarget } from './backup-target.js';
import { LocalTarget } from './local-target.js';

/** Options of `openBackupTarget`. */
export interface OpenBackupTargetOptions {
  /** For `az://` targets: connection string and upload/retry tuning. Ignored for `file://`. */
  azure?: AzureTargetOptions;
}

/**
 * The target a URL names: `file:///DIR` → LocalTarget, `az://CONTAINER/PREFIX` → AzureTarget.
 * Opens no connection; credentials are checked on first use. Throws BackupError BACKUP_INVALID_TARGET.
 */
export function openBackupTarget(url: string, options: OpenBackupTargetOptions = {}): BackupTarget {
  const parsed = parseBackupUrl(url);
  if (parsed.kind === 'file') return new LocalTarget(parsed.dir);
  return new AzureTarget(parsed.container, parsed.prefix, options.azure ?? { connectionString: undefined });
}
