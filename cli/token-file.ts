import { randomBytes } from 'node:crypto';
import { chmod, readFile, writeFile } from 'node:fs/promises';
import { AuthTokens, ROLES, type Role } from '../common/index.js';

/** A token per role, as written to a token file. */
export type RoleTokens = Record<Role, string>;

/** Fresh random tokens, one per role (32 random bytes each, hex). */
export function generateRoleTokens(): RoleTokens {
  return Object.fromEntries(ROLES.map((role) => [role, randomBytes(32).toString('hex')])) as RoleTokens;
}

/** Writes `tokens` as an `--auth-token-file` (`ROLE TOKEN` lines), readable by the owner only. */
export async function writeTokenFile(path: string, tokens: RoleTokens): Promise<void> {
  const text = [
    '# shardpipe tokens: ROLE TOKEN per line; roles nest (admin > write > read); replica is for nodes only. Keep this file secret.',
    ...ROLES.map((role) => `${role} ${tokens[role]}`),
    '',
  ].join('\n');
  await writeFile(path, text, { mode: 0o600 });
  // The mode of an existing file is not changed by writeFile.
  await chmod(path, 0o600);
}

/**
 * The tokens of the file at `path` when it holds one valid token per role (so exported tokens
 * keep working across runs of `up`), otherwise a new file with fresh tokens.
 */
export async function ensureTokenFile(path: string): Promise<RoleTokens> {
  const existing = await readFile(path, 'utf8').catch(() => undefined);
  if (existing !== undefined) {
    const found: Partial<RoleTokens> = {};
    for (const line of existing.split('\n')) {
      const [role, token, extra] = line.trim().split(/\s+/);
      if (extra === undefined && token !== undefined && (ROLES as readonly string[]).includes(role!)) found[role as Role] = token;
    }
    const valid = ROLES.every((r) => r === 'replica' || found[r] !== undefined) && isValidTokenFile(existing);
    if (valid && found.replica === undefined) {
      // A file from before chain forwards: keep its client tokens (they may be exported), add the replica one.
      const tokens = { ...(found as Omit<RoleTokens, 'replica'>), replica: randomBytes(32).toString('hex') };
      await writeTokenFile(path, tokens);
      return tokens;
    }
    if (valid) {
      await chmod(path, 0o600);
      return found as RoleTokens;
    }
  }
  const tokens = generateRoleTokens();
  await writeTokenFile(path, tokens);
  return tokens;
}

function isValidTokenFile(text: string): boolean {
  try {
    AuthTokens.parse(text);
    return true;
  } catch {
    return false;
  }
}
