/**
 * `npm run bench:compare`: the newest run in bench/history/ against the previous run of the same
 * mode (quick or full), figure by figure. A figure counts as moved when its median changed by more
 * than the larger of the two runs' spreads (max − min over repetitions) and by at least 5%.
 *
 * Exit codes: 0 when no figure got worse beyond that band; 1 when at least one did (a regression
 * to look at — on a shared machine, rerun before believing it); 2 when there are fewer than two
 * comparable runs.
 *
 * Run: `npm run bench:compare [-- --mode quick|full] [-- --min-change 0.05] [-- --all]` (--mode: the
 * newest run of that mode rather than the newest run; --all also prints the unchanged figures).
 */
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { fixed, table } from './bench-format.js';
import { loadRuns } from './bench-history.js';
import { compareRuns } from './bench-stats.js';
import { parseBenchArgs } from './bench-args.js';

const HISTORY_DIR = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'bench', 'history');

const { values } = parseBenchArgs('node dist/bench/compare.js [--mode quick|full] [--min-change FRACTION (default 0.05)] [--all] — the newest two saved suite runs of a mode compared', { options: { 'min-change': { type: 'string', default: '0.05' }, all: { type: 'boolean', default: false }, mode: { type: 'string' } } });
if (values.mode !== undefined && values.mode !== 'quick' && values.mode !== 'full') throw new RangeError(`--mode must be quick or full, got ${values.mode}`);
const minChange = Number(values['min-change']);
if (!Number.isFinite(minChange) || minChange < 0 || minChange >= 1) throw new RangeError(`--min-change must be in [0, 1), got ${values['min-change']}`);

const runs = (await loadRuns(HISTORY_DIR)).filter((r) => values.mode === undefined || r.run.mode === values.mode);
const newest = runs.at(-1);
const previous = newest && runs.slice(0, -1).reverse().find((r) => r.run.mode === newest.run.mode);
if (!newest || !previous) {
  process.stderr.write(`bench:compare needs two runs of the same mode in ${HISTORY_DIR}; found ${runs.length} run(s). Run \`npm run bench\` (or \`npm run bench -- --quick\`) again.\n`);
  process.exitCode = 2;
} else {
  const changes = compareRuns(previous.run.figures, newest.run.figures, minChange);
  const shown = values.all ? changes : changes.filter((c) => c.verdict !== 'within spread');
  const num = (v: number | undefined): string => (v === undefined || !Number.isFinite(v) ? '-' : v >= 100 ? Math.round(v).toLocaleString('en-US') : fixed(v, 2));
  const pct = (v: number | undefined): string => (v === undefined ? '-' : `${v >= 0 ? '+' : ''}${fixed(v * 100, 1)}%`);
  process.stdout.write(`${newest.file} (commit ${newest.run.commit.slice(0, 12)}) against ${previous.file} (commit ${previous.run.commit.slice(0, 12)})\n`);
  process.stdout.write(`load average: ${fixed(previous.run.machine.loadAverage.start, 2)} then, ${fixed(newest.run.machine.loadAverage.start, 2)} now\n\n`);
  if (shown.length === 0) process.stdout.write(`no figure moved beyond its spread (${changes.length} compared)\n`);
  else process.stdout.write(table(['figure', 'unit', 'previous', 'newest', 'change', 'band', 'verdict'], shown.map((c) => [c.label, c.unit, num(c.previous), num(c.current), pct(c.change), c.tolerance === undefined ? '-' : `±${fixed(c.tolerance * 100, 1)}%`, c.verdict])) + '\n');
  const worse = changes.filter((c) => c.verdict === 'worse').length;
  const better = changes.filter((c) => c.verdict === 'better').length;
  process.stdout.write(`\n${worse} worse, ${better} better, ${changes.length - worse - better} within spread, new or gone\n`);
  process.exitCode = worse > 0 ? 1 : 0;
}
