import { readFile } from 'node:fs/promises';

// What a bench child's resident memory is made of at its peak, from /proc (Linux only; elsewhere
// every figure is undefined). VmHWM, the peak the benches report as "peak RSS", counts two kinds of
// pages the kernel treats differently:
//   - anonymous (RssAnon): V8 heaps, malloc arenas (ArrayBuffers, LevelDB memtables and block
//     caches, gRPC/HTTP2 buffers), wasm memory — memory the process owns;
//   - file-backed (RssFile): mapped files — the node binary's text and, in a store node, LevelDB
//     table files, which LevelDB 1.20 (classic-level) reads through mmap (up to 1000 files per
//     process), so every table page a read or a compaction touched stays in RSS as page cache the
//     kernel may drop under pressure.
// The split says which knob can move a figure: a store node's file-backed part follows the data it
// reads, not a buffer size.

const POLL_MS = 100;
/** smaps is long; it is read again only when RSS grew this much since the last read. */
const SMAPS_STEP_BYTES = 4 * 1024 * 1024;

/** A process's memory at its largest sampled VmRSS, MiB. */
export interface MemoryAtPeak {
  /** VmRSS at the sampled peak (≤ VmHWM: sampled every 100 ms). */
  rssMb: number;
  /** RssAnon at that moment: heaps, malloc, wasm, memtables. */
  anonMb: number;
  /** RssFile at that moment: mapped files (the node binary, LevelDB tables). */
  fileMb: number;
  /** Of fileMb, mapped LevelDB table files (`*.ldb`), from /proc/PID/smaps near the peak; undefined when unreadable. */
  leveldbTablesMb: number | undefined;
}

/** Samples a live process's /proc/PID/status until stopped, keeping the split of its largest RSS. */
export class MemorySampler {
  readonly #pid: number;
  readonly #timer: NodeJS.Timeout;
  #peak: MemoryAtPeak | undefined;
  #smapsAtBytes = 0;
  #busy = false;

  private constructor(pid: number) {
    this.#pid = pid;
    this.#timer = setInterval(() => void this.#sample(), POLL_MS);
    this.#timer.unref();
    void this.#sample();
  }

  static start(pid: number): MemorySampler {
    return new MemorySampler(pid);
  }

  /** The split at the largest RSS seen so far (undefined before the first sample or without /proc). */
  get peak(): MemoryAtPeak | undefined {
    return this.#peak;
  }

  /** Takes one last sample, stops, and returns the split at the peak. */
  async stop(): Promise<MemoryAtPeak | undefined> {
    clearInterval(this.#timer);
    if (!this.#busy) await this.#sample();
    return this.#peak;
  }

  async #sample(): Promise<void> {
    if (this.#busy) return;
    this.#busy = true;
    try {
      const status = await readStatus(this.#pid);
      if (status === undefined || (this.#peak !== undefined && status.rssBytes <= this.#peak.rssMb * MIB)) return;
      let leveldbTablesMb = this.#peak?.leveldbTablesMb;
      if (this.#peak === undefined || status.rssBytes >= this.#smapsAtBytes + SMAPS_STEP_BYTES) {
        this.#smapsAtBytes = status.rssBytes;
        leveldbTablesMb = await readLeveldbTablesMb(this.#pid);
      }
      this.#peak = { rssMb: status.rssBytes / MIB, anonMb: status.anonBytes / MIB, fileMb: status.fileBytes / MIB, leveldbTablesMb };
    } finally {
      this.#busy = false;
    }
  }
}

const MIB = 1024 * 1024;

async function readStatus(pid: number): Promise<{ rssBytes: number; anonBytes: number; fileBytes: number } | undefined> {
  let text: string;
  try {
    text = await readFile(`/proc/${pid}/status`, 'utf8');
  } catch {
    return undefined;
  }
  const kb = (field: string): number | undefined => {
    const match = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(text);
    return match ? Number(match[1]) * 1024 : undefined;
  };
  const rssBytes = kb('VmRSS');
  const anonBytes = kb('RssAnon');
  const fileBytes = kb('RssFile');
  if (rssBytes === undefined || anonBytes === undefined || fileBytes === undefined) return undefined;
  return { rssBytes, anonBytes, fileBytes };
}

/** Resident MiB of the process's mappings of LevelDB table files. */
async function readLeveldbTablesMb(pid: number): Promise<number | undefined> {
  let text: string;
  try {
    text = await readFile(`/proc/${pid}/smaps`, 'utf8');
  } catch {
    return undefined;
  }
  let kb = 0;
  let inTable = false;
  for (const line of text.split('\n')) {
    // A mapping's header: "start-end perms offset dev inode [path]"; its fields follow, one a line.
    if (/^[0-9a-f]+-[0-9a-f]+ /.test(line)) {
      inTable = line.endsWith('.ldb') || line.endsWith('.sst');
    } else if (inTable && line.startsWith('Rss:')) {
      kb += Number(/(\d+)/.exec(line)?.[1] ?? 0);
    }
  }
  return kb / 1024;
}

/** "359 = anon 192 + file 167 (LevelDB tables 120)" in MiB, or "n/a". */
export function describeMemoryAtPeak(m: MemoryAtPeak | undefined): string {
  if (m === undefined) return 'n/a';
  const tables = m.leveldbTablesMb === undefined || m.leveldbTablesMb < 0.5 ? '' : ` (LevelDB tables mapped ${m.leveldbTablesMb.toFixed(0)})`;
  return `${m.rssMb.toFixed(0)} = anon ${m.anonMb.toFixed(0)} + file-backed ${m.fileMb.toFixed(0)}${tables}`;
}
