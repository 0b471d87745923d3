/** An Azure Blob location, parsed from `az://CONTAINER/PREFIX`. */
export interface AzureUrl {
  container: string;
  /** Blob name or name prefix, as written (no percent-decoding); '' for the whole container. */
  prefix: string;
}

/** Options of `parseAzureUrl`. */
export interface ParseAzureUrlOptions {
  /** Treat the prefix as a folder: normalised to '' or ending in '/'. Default false (taken as written). */
  asFolder?: boolean;
  /** Longest prefix (after normalising), in characters. Default 1024, Azure's limit for a blob name. */
  maxPrefixChars?: number;
  /**
   * Builds the caller's error from what is wrong ("… is not a container name …"); the URL is not
   * repeated in it. Default: a RangeError naming the URL.
   */
  invalid?: (reason: string) => Error;
}

const SCHEME = /^az:\/\//i;
/** Azure's container names: 3–63 lowercase letters, digits and single hyphens, starting and ending with a letter or digit; or the two system containers. */
const CONTAINER_NAME = /^(?:(?=.{3,63}$)[a-z0-9]+(?:-[a-z0-9]+)*|\$root|\$web)$/;
const MAX_BLOB_NAME = 1024;

/** True when `source` names an Azure Blob location (`az://…`) rather than a local path. */
export function isAzureUrl(source: string): boolean {
  return SCHEME.test(source);
}

/**
 * `az://CONTAINER/PREFIX` → `{ container, prefix }`. The prefix is taken literally (blob names may
 * contain `%`, `?`, `#`). Refuses (through `options.invalid`) another scheme, a bad container name,
 * a prefix that is too long, and one with empty, `.` or `..` segments — they have no equivalent in a
 * local folder. A trailing `/` (an explicit folder) is allowed.
 */
export function parseAzureUrl(url: string, options: ParseAzureUrlOptions = {}): AzureUrl {
  const invalid = options.invalid ?? ((reason: string) => new RangeError(`${url}: ${reason}`));
  const maxPrefixChars = options.maxPrefixChars ?? MAX_BLOB_NAME;
  if (!isAzureUrl(url)) throw invalid('is not an Azure Blob URL');
  const rest = url.slice('az://'.length);
  const slash = rest.indexOf('/');
  const container = slash < 0 ? rest : rest.slice(0, slash);
  let prefix = slash < 0 ? '' : rest.slice(slash + 1);
  if (!CONTAINER_NAME.test(container)) throw invalid(`"${container}" is not a container name (3–63 lowercase letters, digits and single hyphens)`);
  const segments = prefix.split('/');
  // A trailing '/' leaves one empty last segment; any other empty one is `//`.
  const bad = segments.find((s, i) => s === '.' || s === '..' || (s === '' && i < segments.length - 1 && prefix !== ''));
  if (bad !== undefined) throw invalid(`the prefix has an ${bad === '' ? 'empty' : `"${bad}"`} path segment (leave it out)`);
  if (options.asFolder && prefix !== '' && !prefix.endsWith('/')) prefix += '/';
  if (prefix.length > maxPrefixChars) throw invalid(`the prefix has ${prefix.length} characters, over the ${maxPrefixChars} allowed`);
  return { container, prefix };
}

/** `az://container/name`. */
export function formatAzureUrl(container: string, name: string): string {
  return `az://${container}/${name}`;
}
