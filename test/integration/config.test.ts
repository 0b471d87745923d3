import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../helpers/store-cluster.js';
import { makeTempDir, type TempDir } from '../helpers/temp-dir.js';

interface Printed {
  file: string | null;
  settings: Array<{ env: string; file: string; value: string | null; source: string }>;
}

describe('settings: flags, environment, config file, defaults', () => {
  let tmp: TempDir;
  let configFile: string;
  const clean = { SHARDPIPE_REDIS_URL: '', SHARDPIPE_DATA_DIR: '', SHARDPIPE_CONFIG: '', SHARDPIPE_LOG_LEVEL: '', AZURE_STORAGE_CONNECTION_STRING: '' };

  beforeAll(async () => {
    tmp = await makeTempDir('shardpipe-config-');
    configFile = join(tmp.path, 'shardpipe.json');
    await writeFile(configFile, JSON.stringify({ redisUrl: 'redis://from-file:6379', dataDir: '/from/file', azureConnectionString: 'AccountKey=secret' }));
  });

  afterAll(async () => {
    await tmp.remove();
  });

  const print = async (args: string[], env: Record<string, string>): Promise<Printed> => {
    const r = await runCli([...args, 'config', 'print', '--json'], { ...clean, ...env });
    expect(r.code, r.stderr).toBe(0);
    return JSON.parse(r.stdout) as Printed;
  };
  const setting = (p: Printed, env: string) => p.settings.find((s) => s.env === env)!;

  it('the environment overrides the config file, which overrides the defaults; secrets are masked', async () => {
    const p = await print(['--config', configFile], { SHARDPIPE_DATA_DIR: '/from/env' });
    expect(p.file).toBe(configFile);
    expect(setting(p, 'SHARDPIPE_REDIS_URL')).toMatchObject({ value: 'redis://from-file:6379', source: 'file' });
    expect(setting(p, 'SHARDPIPE_DATA_DIR')).toMatchObject({ value: '/from/env', source: 'env' });
    expect(setting(p, 'SHARDPIPE_LOG_LEVEL')).toMatchObject({ value: 'info', source: 'default' });
    expect(setting(p, 'AZURE_STORAGE_CONNECTION_STRING')).toMatchObject({ value: '***', source: 'file' });
    const viaEnv = await print([], { SHARDPIPE_CONFIG: configFile });
    expect(setting(viaEnv, 'SHARDPIPE_REDIS_URL').source).toBe('file');
  });

  it('a bad value names the setting, where it came from and the allowed values (exit 64)', async () => {
    const bad = join(tmp.path, 'bad.json');
    await writeFile(bad, JSON.stringify({ logLevel: 'loud' }));
    const r = await runCli(['--config', bad, 'config', 'print'], clean);
    expect(r.code).toBe(64);
    expect(r.stderr).toContain(`config file ${bad}: setting "logLevel"`);
    expect(r.stderr).toContain('"debug"');
    const env = await runCli(['config', 'print'], { ...clean, SHARDPIPE_REDIS_URL: 'localhost:6379' });
    expect(env.code).toBe(64);
    expect(env.stderr).toContain('environment variable SHARDPIPE_REDIS_URL: must start with redis://');
  });

  it('SHARDPIPE_REDIS_URL_FILE: the URL is read from the file (shown without its password); a missing or bad file is refused without showing its content', async () => {
    const file = join(tmp.path, 'redis-url');
    await writeFile(file, 'redis://:s3cret-redis-pass@redis-host:6380/2\n', { mode: 0o600 });
    const p = await print([], { SHARDPIPE_REDIS_URL_FILE: file });
    const url = setting(p, 'SHARDPIPE_REDIS_URL');
    expect(url.source).toBe('env');
    expect(url.value).toContain('redis-host:6380/2');
    expect(url.value).not.toContain('s3cret-redis-pass');
    // SHARDPIPE_REDIS_URL wins.
    expect(setting(await print([], { SHARDPIPE_REDIS_URL_FILE: file, SHARDPIPE_REDIS_URL: 'redis://other:6379' }), 'SHARDPIPE_REDIS_URL').value).toBe('redis://other:6379');
    const missing = await runCli(['config', 'print'], { ...clean, SHARDPIPE_REDIS_URL_FILE: join(tmp.path, 'nope') });
    expect(missing.code).toBe(64);
    expect(missing.stderr).toContain(`SHARDPIPE_REDIS_URL_FILE ${join(tmp.path, 'nope')}`);
    const bad = join(tmp.path, 'bad-redis-url');
    await writeFile(bad, 'hunter2-not-a-url\n');
    const refused = await runCli(['config', 'print'], { ...clean, SHARDPIPE_REDIS_URL_FILE: bad });
    expect(refused.code).toBe(64);
    expect(refused.stderr).toContain('must hold one redis:// or rediss:// URL');
    expect(refused.stderr).not.toContain('hunter2');
  });

  it('an unknown setting in the file is refused with the list of known ones', async () => {
    const bad = join(tmp.path, 'unknown.json');
    await writeFile(bad, JSON.stringify({ redis: 'redis://x' }));
    const r = await runCli(['--config', bad, 'config', 'print'], clean);
    expect(r.code).toBe(64);
    expect(r.stderr).toMatch(/unknown setting "redis" \(allowed: seeds, redisUrl/);
  });
});
