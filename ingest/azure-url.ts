import { IngestError } from './ingest-errors.js';

/** An Azure Blob drop location, parsed from `az://CONTAINER/PREFIX`. */
export interface AzureUrl {
  container: string;
  /** Blob name or name prefix, as written (no percent-decoding); '' for the whole container. */
  prefix: string;
}

const SCHEME = /^az:\/\//i;
/** Azure's container names: 3–63 lowercase letters, digits and single hyphens, starting and ending with a letter or digit; or the two system containers. */
const CONTAINER_NAME = /^(?:(?=.{3,63}$)[a-z0-9]+(?:-[a-z0-9]+)*|\$root|\$web)$/;
/** Azure's limit for a blob name, in characters. */
const MAX_BLOB_NAME = 1024;

/** True when `source` names an Azure Blob drop (`az://…`) rather than a local path. */
export function isAzureUrl(source: string): boolean {
  return SCHEME.test(source);
}

/**
 * `az://CONTAINER/PREFIX` → `{ container, prefix }`. The prefix is taken literally (blob names may
 * contain `%`, `?`, `#`). Throws IngestError INGEST_INVALID_SOURCE for a malformed URL, including a
 * prefix with empty, `.` or `..` segments (they have no equivalent in the local staging folder).
 */
export function parseAzureUrl(url: string): AzureUrl {
  if (!isAzureUrl(url)) {
    throw new IngestError('INGEST_INVALID_SOURCE', `${url} is not an Azure Blob drop: expected az://CONTAINER/PREFIX`, { context: { source: url } });
  }
  const rest = url.slice('az://'.length);
  const slash = rest.indexOf('/');
  const container = slash < 0 ? rest : rest.slice(0, slash);
  const prefix = slash < 0 ? '' : rest.slice(slash + 1);
  if (!CONTAINER_NAME.test(container)) {
    throw new IngestError(
      'INGEST_INVALID_SOURCE',
      `${url}: "${container}" is not a container name (3–63 lowercase letters, digits and single hyphens); expected az://CONTAINER/PREFIX`,
      { context: { source: url } },
    );
  }
  if (prefix.length > MAX_BLOB_NAME) {
    throw new IngestError('INGEST_INVALID_SOURCE', `${url}: the prefix has ${prefix.length} characters, over Azure's ${MAX_BLOB_NAME} for a blob name`, { context: { source: url } });
  }
  const segments = prefix.split('/');
  // A trailing '/' (an explicit folder) leaves one empty last segment; any other empty one is `//`.
  const bad = segments.find((s, i) => s === '.' || s === '..' || (s === '' && i < segments.length - 1 && prefix !== ''));
  if (bad !== undefined) {
    throw new IngestError('INGEST_INVALID_SOURCE', `${url}: the prefix has an ${bad === '' ? 'empty' : `"${bad}"`} path segment; write it without`, { context: { source: url } });
  }
  return { container, prefix };
}

/** `az://container/name`. */
export function formatAzureUrl(container: string, name: string): string {
  return `az://${container}/${name}`;
}
