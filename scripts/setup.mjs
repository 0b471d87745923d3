#!/usr/bin/env node
// One-time set-up that `npm test` and `npm run demo` run first, so a fresh Debian machine with only
// Node.js and npm needs nothing else: npm packages, redis-server and etcd (apt, when root), the TypeScript build.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const say = (msg) => process.stderr.write(`[setup] ${msg}\n`);
const run = (cmd, args, opts = {}) => execFileSync(cmd, args, { cwd: root, stdio: 'inherit', ...opts });

function installPackages() {
  const marker = join(root, 'node_modules', '.package-lock.json');
  const lock = join(root, 'package-lock.json');
  if (existsSync(marker) && statSync(marker).mtimeMs >= statSync(lock).mtimeMs) return;
  say('installing npm packages (npm ci)');
  run('npm', ['ci', '--no-audit', '--no-fund']);
}

function hasCommand(name) {
  return spawnSync('sh', ['-c', `command -v ${name}`], { stdio: 'ignore' }).status === 0;
}

const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
let aptUpdated = false;

/** Installs Debian packages that provide `command` when it is missing, or says how to. */
function ensureCommand(command, packages, why) {
  if (hasCommand(command)) return;
  if (isRoot && hasCommand('apt-get')) {
    say(`${command} is missing (${why}): installing ${packages.join(' ')} with apt-get`);
    const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
    if (!aptUpdated) run('apt-get', ['update', '-qq'], { env });
    aptUpdated = true;
    run('apt-get', ['install', '-y', '-qq', '--no-install-recommends', ...packages], { env });
    return;
  }
  say(`${command} is not installed (${why}) and this is not root with apt-get, so it cannot be installed here.`);
  say(`Install it yourself (Debian/Ubuntu: sudo apt-get install ${packages.join(' ')}).`);
}

function build() {
  say('building TypeScript (tsc)');
  run(process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.json']);
}

// `--for-tests` adds what only the test suite needs: a headless browser, docker-compose's validator, promtool, protoc + Python gRPC + curl (gateway), and openssl (test certificates).
const forTests = process.argv.includes('--for-tests');
installPackages();
ensureCommand('redis-server', ['redis-server'], 'the job queues run on Redis; without it pass --redis URL');
ensureCommand('etcd', ['etcd-server'], 'replicated clusters keep their partition map and node leases in etcd; without it pass --etcd URL');
if (forTests) {
  ensureCommand('chromium', ['chromium', 'fonts-liberation'], 'the dashboard tests drive a headless browser');
  ensureCommand('docker-compose', ['docker-compose'], 'a test validates docker-compose.yml');
  ensureCommand('promtool', ['prometheus'], 'a test checks and unit-tests deploy/prometheus/alerts.yml');
  ensureCommand('grpc_python_plugin', ['protobuf-compiler', 'protobuf-compiler-grpc', 'python3-grpcio', 'python3-protobuf'], 'the gateway test drives it from Python with stubs made by protoc');
  ensureCommand('curl', ['curl'], 'the gateway test calls its JSON API with curl');
  ensureCommand('openssl', ['openssl'], 'the TLS tests make their certificates with openssl');
}
build();
