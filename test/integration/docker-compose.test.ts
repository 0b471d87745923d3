import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { copyFile, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative, resolve } from 'node:path';
import { promisify } from 'node:util';
import type { Command } from 'commander';
import { parse } from 'yaml';
import { beforeAll, describe, expect, it } from 'vitest';
import { CliContext } from '../../cli/cli-context.js';
import { SETTINGS, loadCliConfig } from '../../cli/cli-env.js';
import { buildProgram } from '../../cli/program.js';
import { findFreePort } from '../../common/index.js';

const ROOT = resolve(import.meta.dirname, '../..');

interface Service {
  build?: unknown;
  image?: string;
  command?: string[];
  environment?: Record<string, string>;
  ports?: Array<{ published: number; target: number } | string>;
  healthcheck?: { test: string[]; start_period?: string };
  entrypoint?: string[];
  depends_on?: Record<string, { condition: string }>;
  secrets?: Array<{ source: string; target?: string }>;
  profiles?: string[];
  volumes?: string[];
  user?: string;
  security_opt?: string[];
}

/** A published port in either form docker-compose prints: `{ published, target }` or `HOST_IP:PUBLISHED:TARGET/PROTO`. */
function publishedPort(p: { published: number; target: number } | string): { hostIp: string; published: number; target: number } {
  if (typeof p !== 'string') return { hostIp: '0.0.0.0', published: Number(p.published), target: Number(p.target) };
  const parts = p.replace(/\/\w+$/, '').split(':');
  const [target, published, hostIp] = [parts.pop()!, parts.pop()!, parts.pop() ?? '0.0.0.0'];
  return { hostIp, published: Number(published), target: Number(target) };
}

/** Checks argv against the CLI's command tree: every word a command, every --flag one of its options. */
function checkArgv(program: Command, argv: string[]): string[] {
  const problems: string[] = [];
  let cmd = program;
  let i = 0;
  while (i < argv.length && !argv[i]!.startsWith('-')) {
    const next = cmd.commands.find((c) => c.name() === argv[i]);
    if (next === undefined) break;
    cmd = next;
    i++;
  }
  if (cmd === program) return [`"${argv.join(' ')}" is not a shardpipe command`];
  if (cmd.commands.length > 0) problems.push(`"${argv.slice(0, i).join(' ')}" needs a subcommand`);
  const known = new Set([...cmd.options, ...program.options].flatMap((o) => [o.long, o.short].filter(Boolean) as string[]));
  for (const word of argv.slice(i)) {
    if (word.startsWith('--') && !known.has(word.split('=')[0]!) && !known.has(`--no-${word.slice(2)}`)) {
      problems.push(`${cmd.name()}: unknown option ${word}`);
    }
  }
  return problems;
}

const flag = (argv: string[], name: string): string | undefined => {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : undefined;
};
const portOf = (address: string | undefined): string | undefined => address?.split(':').pop();

describe('docker-compose.yml', () => {
  let services: Record<string, Service>;
  const program = buildProgram(new CliContext(loadCliConfig({})));

  beforeAll(async () => {
    const { stdout } = await promisify(execFile)('docker-compose', ['-f', 'docker-compose.yml', 'config'], { cwd: ROOT });
    services = (parse(stdout) as { services: Record<string, Service> }).services;
  });

  it('validates with docker-compose config and has every service of the design', () => {
    // docker-compose 1.x lists the services of every profile; the design's run without one.
    const always = Object.entries(services).filter(([, x]) => x.profiles === undefined).map(([name]) => name);
    expect(always.sort()).toEqual(['azurite', 'coordinator', 'etcd', 'gateway', 'init', 'metrics-server', 'redis', 'store-0', 'store-1', 'store-2', 'worker-1', 'worker-2']);
    expect(services.redis!.command!.join(' ')).toContain('--appendonly yes');
  });

  it('every shardpipe service runs a command the CLI has, with options it knows, and health checks it can answer', () => {
    const own = Object.entries(services).filter(([, s]) => s.build !== undefined);
    expect(own.length).toBe(9);
    for (const [name, s] of own) {
      expect(s.command, name).toBeDefined();
      expect(checkArgv(program, s.command!), name).toEqual([]);
      const health = s.healthcheck?.test;
      if (health?.[2] === 'bin/shardpipe.js') expect(checkArgv(program, health.slice(3)), `${name} healthcheck`).toEqual([]);
    }
  });

  it('environment names are settings the code reads, and addresses and ports agree', () => {
    const settings = new Set(Object.keys(SETTINGS));
    const seeds = services['worker-1']!.environment!.SHARDPIPE_SEEDS!.split(',');
    for (const [name, s] of Object.entries(services).filter(([, x]) => x.build !== undefined)) {
      // OTEL_* are the OpenTelemetry SDK's own standard variables (README "Tracing").
      for (const env of Object.keys(s.environment ?? {})) expect(settings.has(env) || env.startsWith('OTEL_'), `${name}: ${env}`).toBe(true);
    }
    for (const name of ['store-0', 'store-1', 'store-2']) {
      const argv = services[name]!.command!;
      const node = flag(argv, '--node')!;
      expect(seeds).toContain(node);
      expect(node.startsWith(`${name}:`)).toBe(true);
      expect(portOf(flag(argv, '--listen'))).toBe(portOf(node));
      expect(services[name]!.healthcheck!.test).toContain(`127.0.0.1:${portOf(node)}`);
    }
    // Replicated: nodes register in etcd (the map names them by --node), init writes chains of 3 from them.
    const etcdUrl = flag(services.coordinator!.command!, '--etcd')!;
    expect(new URL(etcdUrl).hostname).toBe('etcd');
    expect(services.etcd!.command).toContain(etcdUrl.replace('etcd:', '0.0.0.0:'));
    for (const name of ['store-0', 'store-1', 'store-2', 'coordinator', 'init']) {
      const argv = services[name]!.command!;
      expect(flag(argv, '--etcd'), name).toBe(etcdUrl);
      expect(argv, name).not.toContain('--map');
      expect(services[name]!.depends_on?.etcd?.condition, name).toBe('service_healthy');
    }
    const init = services.init!.command!;
    expect(init.slice(0, 2)).toEqual(['cluster', 'init']);
    expect(flag(init, '--replicas')).toBe('3');
    expect(init).toContain('--exists-ok');
    // Nodes wait for the map before they listen: health failures before init must not count.
    expect(services['store-0']!.healthcheck!.start_period).toBeDefined();
    const metrics = services['metrics-server']!;
    const port = Number(flag(metrics.command!, '--port'));
    expect(metrics.ports!.map(publishedPort)).toContainEqual(expect.objectContaining({ target: port }));
    expect(metrics.healthcheck!.test.join(' ')).toContain(`127.0.0.1:${port}/healthz`);
    // Redis is reached through the redis-url secret (it carries the password), never a URL in the environment.
    for (const [name, s] of Object.entries(services)) expect(s.environment?.SHARDPIPE_REDIS_URL, name).toBeUndefined();
    for (const name of ['worker-1', 'worker-2', 'metrics-server']) {
      expect(services[name]!.environment!.SHARDPIPE_REDIS_URL_FILE, name).toBe('/run/secrets/redis-url');
      expect(services[name]!.secrets!.map((x) => x.source), name).toContain('redis-url');
    }
    expect(services.redis!.secrets!.map((x) => x.source)).toContain('redis-url');
    const blob = /BlobEndpoint=http:\/\/([^:]+):(\d+)\//.exec(services['worker-1']!.environment!.AZURE_STORAGE_CONNECTION_STRING!)!;
    expect(blob[1]).toBe('azurite');
    expect(services.azurite!.command).toContain(blob[2]);
  });

  it('Redis requires the password of the redis-url secret: its command and health check, run against a real redis-server, refuse a client without it', async () => {
    const tmp = await mkdtemp(join(tmpdir(), 'shardpipe-compose-redis-'));
    let server: ChildProcess | undefined;
    try {
      const password = 'c0ffee'.repeat(8);
      await writeFile(join(tmp, 'redis-url'), `redis://:${password}@redis:6379\n`, { mode: 0o600 });
      const port = await findFreePort();
      // The service's own shell text, with what only a container has (the secret's path, the image's
      // entrypoint and user) swapped for this machine's, and a free port and data folder.
      const local = (text: string): string =>
        text.replaceAll('$$', '$').replaceAll('/run/secrets/redis-url', join(tmp, 'redis-url')).replaceAll('/tmp/redis-auth.conf', join(tmp, 'auth.conf'));
      const [entry, flagC] = services.redis!.entrypoint as string[];
      expect([entry, flagC]).toEqual(['sh', '-c']);
      const script = local(services.redis!.command!.join(' '))
        .replace(/chown redis:redis \S+ &&/, '')
        .replace('exec docker-entrypoint.sh redis-server', 'exec redis-server')
        .concat(` --port ${port} --bind 127.0.0.1 --dir ${tmp} --save ''`);
      expect(script).not.toContain(password);
      server = spawn('sh', ['-c', script], { stdio: 'ignore' });
      const cli = (env: Record<string, string>, ...args: string[]) => promisify(execFile)('redis-cli', ['-p', String(port), ...args], { env: { ...process.env, ...env } }).then((r) => r.stdout.trim(), () => 'failed');
      await expect.poll(() => cli({ REDISCLI_AUTH: password }, 'ping'), { timeout: 10_000 }).toBe('PONG');
      expect(await cli({}, 'set', 'k', 'v')).toContain('NOAUTH');
      expect(await cli({ REDISCLI_AUTH: 'wrong' }, 'ping')).toMatch(/WRONGPASS|NOAUTH/);
      expect((await stat(join(tmp, 'auth.conf'))).mode & 0o777).toBe(0o600);
      // The health check passes with the secret, and fails against a Redis that wants another password.
      const [kind, health] = services.redis!.healthcheck!.test as [string, string];
      expect(kind).toBe('CMD-SHELL');
      const check = (text: string) => promisify(execFile)('sh', ['-c', text.replace('redis-cli ping', `redis-cli -p ${port} ping`)]).then(() => 0, () => 1);
      expect(await check(local(health))).toBe(0);
      await writeFile(join(tmp, 'redis-url'), 'redis://:other-password@redis:6379\n');
      expect(await check(local(health))).toBe(1);
    } finally {
      if (server && server.exitCode === null) {
        const exited = once(server, 'exit');
        server.kill('SIGTERM');
        await exited;
      }
      await rm(tmp, { recursive: true, force: true });
    }
  });

  it('publishes ports on the host loopback only, and every shardpipe server bound to all interfaces has a token file secret', () => {
    for (const [name, s] of Object.entries(services)) {
      for (const p of s.ports ?? []) expect(publishedPort(p).hostIp, `${name} publishes ${JSON.stringify(p)}`).toBe('127.0.0.1');
    }
    for (const [name, s] of Object.entries(services).filter(([, x]) => x.build !== undefined && x.command?.some((w) => w.includes('0.0.0.0')))) {
      const tokenFile = flag(s.command!, '--auth-token-file');
      expect(tokenFile, `${name} binds 0.0.0.0 without --auth-token-file`).toBe('/run/secrets/shardpipe-tokens');
      expect(s.secrets?.map((x) => x.source), name).toContain('shardpipe-tokens');
      expect(s.command, name).not.toContain('--insecure');
    }
    // etcd answers only clients with a certificate its CA signed; every shardpipe process that talks to it has one.
    const etcd = services.etcd!.command!;
    expect(etcd).toContain('--client-cert-auth');
    expect(flag(etcd, '--listen-client-urls')).toMatch(/^https:/);
    expect(services.etcd!.ports ?? []).toEqual([]);
    for (const [name, s] of Object.entries(services).filter(([, x]) => x.command !== undefined && flag(x.command, '--etcd') !== undefined)) {
      expect(flag(s.command!, '--etcd'), name).toMatch(/^https:/);
      for (const [opt, secret] of [['--etcd-ca', 'etcd-ca'], ['--etcd-cert', 'etcd-client-cert'], ['--etcd-key', 'etcd-client-key']] as const) {
        expect(flag(s.command!, opt), `${name} ${opt}`).toBe(`/run/secrets/${secret}`);
        expect(s.secrets?.map((x) => x.source), name).toContain(secret);
      }
    }
    // Clients get a token of the role they need through SHARDPIPE_TOKEN_FILE; none holds admin.
    for (const name of ['worker-1', 'worker-2', 'metrics-server']) {
      const s = services[name]!;
      expect(s.environment!.SHARDPIPE_TOKEN_FILE, name).toBe('/run/secrets/shardpipe-token');
      const mounted = s.secrets!.find((x) => x.target === 'shardpipe-token');
      expect(mounted?.source, name).toBe(name === 'metrics-server' ? 'shardpipe-read-token' : 'shardpipe-write-token');
    }
  });
});

describe('docker-compose.yml, profile observability', () => {
  let services: Record<string, Service>;

  beforeAll(async () => {
    const { stdout } = await promisify(execFile)('docker-compose', ['-f', 'docker-compose.yml', '--profile', 'observability', 'config'], { cwd: ROOT });
    services = (parse(stdout) as { services: Record<string, Service> }).services;
  });

  /** The host folder mounted at `target` in `service`, relative to the repository. */
  const mountOf = (service: Service, target: string): string | undefined => {
    const volume = service.volumes?.find((v) => v.split(':')[1] === target);
    return volume === undefined ? undefined : relative(ROOT, volume.split(':')[0]!);
  };

  it('adds Prometheus and Grafana, pinned, only in that profile, on the host loopback; run as root (file secrets keep the host mode) they cannot gain privileges', () => {
    for (const name of ['prometheus', 'grafana']) {
      const s = services[name]!;
      if (s.user === '0') expect(s.security_opt, name).toContain('no-new-privileges:true');
      expect(s.profiles, name).toEqual(['observability']);
      expect(s.image, name).toMatch(/^[a-z/]+:v?\d+\.\d+\.\d+$/);
      expect((s.ports ?? []).map(publishedPort).every((p) => p.hostIp === '127.0.0.1'), name).toBe(true);
    }
  });

  it("Prometheus loads deploy/prometheus (rules included), scrapes every node's, worker's and the metrics server's /metrics with the read token, and promtool accepts its config", async () => {
    const prometheus = services.prometheus!;
    expect(mountOf(prometheus, '/etc/prometheus')).toBe('deploy/prometheus');
    expect(prometheus.command).toContain('--config.file=/etc/prometheus/prometheus.yml');
    expect(prometheus.secrets?.map((x) => x.source)).toContain('shardpipe-read-token');
    const config = parse(await readFile(join(ROOT, 'deploy/prometheus/prometheus.yml'), 'utf8')) as {
      rule_files: string[];
      scrape_configs: Array<{ authorization: { credentials_file: string }; static_configs: Array<{ targets: string[] }> }>;
    };
    expect(config.rule_files).toEqual(['alerts.yml']);
    for (const job of config.scrape_configs) expect(job.authorization.credentials_file).toBe('/run/secrets/shardpipe-read-token');
    const targets = config.scrape_configs.flatMap((j) => j.static_configs.flatMap((c) => c.targets)).sort();
    const expected: string[] = [];
    for (const [name, s] of Object.entries(services)) {
      if (s.build === undefined || s.command === undefined) continue;
      const port = flag(s.command, '--metrics-port') ?? (s.command[0] === 'metrics-server' ? flag(s.command, '--port') : undefined);
      if (port !== undefined) expected.push(`${name}:${port}`);
    }
    expect(expected.length).toBe(6);
    expect(targets).toEqual(expected.sort());

    // promtool checks the config and the rule files it names; the token file stands in for the secret.
    const tmp = await mkdtemp(join(tmpdir(), 'shardpipe-prometheus-config-'));
    try {
      await writeFile(join(tmp, 'read-token'), 'r'.repeat(32));
      const text = await readFile(join(ROOT, 'deploy/prometheus/prometheus.yml'), 'utf8');
      await writeFile(join(tmp, 'prometheus.yml'), text.replaceAll('/run/secrets/shardpipe-read-token', join(tmp, 'read-token')));
      await copyFile(join(ROOT, 'deploy/prometheus/alerts.yml'), join(tmp, 'alerts.yml'));
      const check = await promisify(execFile)('/usr/bin/promtool', ['check', 'config', join(tmp, 'prometheus.yml')]);
      expect(check.stdout).toContain('SUCCESS: 1 rule files found');
    } finally {
      await rm(tmp, { recursive: true, force: true });
    }
  });

  it('adds Jaeger for traces (OTLP inside the network, UI on loopback); the services export to OTEL_EXPORTER_OTLP_ENDPOINT only when it is set', async () => {
    const jaeger = services.jaeger!;
    expect(jaeger.profiles).toEqual(['observability']);
    expect(jaeger.image).toMatch(/^jaegertracing\/all-in-one:\d+\.\d+\.\d+$/);
    expect((jaeger.ports ?? []).map(publishedPort)).toEqual([{ hostIp: '127.0.0.1', published: 16686, target: 16686 }]);
    const shardpipe = Object.entries(services).filter(([, s]) => s.build !== undefined);
    expect(shardpipe.length).toBeGreaterThan(0);
    for (const [name, s] of shardpipe) expect((s.environment ?? {}).OTEL_EXPORTER_OTLP_ENDPOINT ?? '', name).toBe('');
    const { stdout } = await promisify(execFile)('docker-compose', ['-f', 'docker-compose.yml', '--profile', 'observability', 'config'], { cwd: ROOT, env: { ...process.env, OTEL_EXPORTER_OTLP_ENDPOINT: 'http://jaeger:4318' } });
    const traced = (parse(stdout) as { services: Record<string, Service> }).services;
    for (const [name] of shardpipe) expect(traced[name]!.environment?.OTEL_EXPORTER_OTLP_ENDPOINT, name).toBe('http://jaeger:4318');
  });

  it('Grafana is provisioned with that Prometheus and every dashboard of deploy/grafana', async () => {
    const grafana = services.grafana!;
    expect(mountOf(grafana, '/etc/grafana/provisioning')).toBe('deploy/grafana/provisioning');
    expect(mountOf(grafana, '/var/lib/grafana/dashboards')).toBe('deploy/grafana');
    expect(grafana.secrets?.map((x) => x.source)).toContain('grafana-admin-password');
    const sources = parse(await readFile(join(ROOT, 'deploy/grafana/provisioning/datasources/prometheus.yml'), 'utf8')) as { datasources: Array<{ type: string; url: string; isDefault: boolean }> };
    const listen = services.prometheus!.command!.find((w) => w.startsWith('--web.listen-address='))!.split(':').pop();
    expect(sources.datasources).toEqual([expect.objectContaining({ type: 'prometheus', url: `http://prometheus:${listen}`, isDefault: true })]);
    const providers = parse(await readFile(join(ROOT, 'deploy/grafana/provisioning/dashboards/shardpipe.yml'), 'utf8')) as { providers: Array<{ type: string; options: { path: string } }> };
    expect(providers.providers).toEqual([expect.objectContaining({ type: 'file', options: { path: '/var/lib/grafana/dashboards' } })]);
  });
});
