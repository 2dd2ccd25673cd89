/**
 * Large safetensors headers are parsed off the JS thread by the asynchronous
 * loads (SafetensorsFile.load, MoeLayer.fromSafetensors): the event loop
 * stays live during a ~90 MB header, the worker's answer equals the inline
 * parser's, and hostile headers give the same coded errors on both paths.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { MoeError, MoeLayer, SafetensorsFile } from '../lib/index';
import { OFF_THREAD_BYTES } from '../lib/checkpoint/header-thread';
import { layerTensors, tempDirs, writeCheckpoint } from './helpers/checkpoint';
import { smallDeepSeekConfig } from './helpers/moe-config';

const fresh = tempDirs();

/** Writes a safetensors file from its header text and the size of its (zero) data section. */
function writeRaw(file: string, header: string, dataBytes: number): string {
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(Buffer.byteLength(header)));
  fs.writeFileSync(file, Buffer.concat([length, Buffer.from(header), Buffer.alloc(dataBytes)]));
  return file;
}

/** `count` one-byte U8 tensors `filler.${first + i}` at data offset `start + i`, as header entries (no braces). */
function fillerEntries(count: number, start: number, first = 0): string {
  const parts: string[] = new Array(count);
  for (let i = 0; i < count; i++) parts[i] = `"filler.${first + i}":{"dtype":"U8","shape":[1],"data_offsets":[${start + i},${start + i + 1}]}`;
  return parts.join(',');
}

/**
 * Writes a safetensors file whose header is `head` (an object's text without
 * its closing brace) plus `count` filler tensors after `dataBytes` bytes of
 * data, streamed in slices so that generating ~90 MB leaves little garbage
 * on this thread's heap (a full GC of it would show as an event-loop gap).
 */
function writeFilled(file: string, head: string, dataBytes: number, count: number): void {
  const fd = fs.openSync(file, 'w');
  try {
    let length = 0;
    const put = (text: string) => {
      const bytes = Buffer.from(text);
      fs.writeSync(fd, bytes, 0, bytes.length, 8 + length);
      length += bytes.length;
    };
    put(head);
    const SLICE = 100_000;
    for (let first = 0; first < count; first += SLICE) {
      put(',' + fillerEntries(Math.min(SLICE, count - first), dataBytes + first, first));
    }
    put('}');
    const prefix = Buffer.alloc(8);
    prefix.writeBigUInt64LE(BigInt(length));
    fs.writeSync(fd, prefix, 0, 8, 0);
    fs.writeSync(fd, Buffer.alloc(dataBytes + count), 0, dataBytes + count, 8 + length);
  } finally {
    fs.closeSync(fd);
  }
}

/** Adds `count` filler tensors to safetensors file `file` (its header grows by ~75 bytes each). */
function padHeader(file: string, count: number): void {
  const bytes = fs.readFileSync(file);
  const length = Number(bytes.readBigUInt64LE(0));
  const header = bytes.subarray(8, 8 + length).toString('utf8').trimEnd();
  const data = bytes.subarray(8 + length);
  writeFilled(file, header.slice(0, -1), data.byteLength, count);
  const fd = fs.openSync(file, 'r+');
  fs.writeSync(fd, data, 0, data.byteLength, fs.statSync(file).size - data.byteLength - count);
  fs.closeSync(fd);
}

/**
 * The longest gap between ticks of a 5 ms interval on this thread while
 * `work` runs. An event-loop liveness check, not a speed claim: parsing the
 * ~90 MB header inline blocks this thread for 4-18 s on this 2-core machine
 * (measured), while off the thread the loop only pauses for I/O callbacks,
 * worker start-up and GC. MAX_GAP_MS separates the two with margins on both
 * sides: off the thread the gap read 500-600 ms with the two cores shared
 * by a load average of 9-10 (a runnable thread can then wait hundreds of ms
 * for a core), and the inline parse is at least 2.5x longer than it.
 */
async function maxGapDuring<T>(work: () => Promise<T>): Promise<{ result: T; gap: number }> {
  let last = performance.now();
  let gap = 0;
  const timer = setInterval(() => {
    const now = performance.now();
    gap = Math.max(gap, now - last);
    last = now;
  }, 5);
  try {
    const result = await work();
    gap = Math.max(gap, performance.now() - last);
    return { result, gap };
  } finally {
    clearInterval(timer);
  }
}

const MAX_GAP_MS = 1600;
const BIG = 1_200_000; // filler tensors: a ~90 MB header

describe('a ~90 MB header does not block the event loop', () => {
  // One shard, padded, serves both loads: generating ~90 MB takes seconds here.
  it('SafetensorsFile.load with prefixes, and MoeLayer.fromSafetensors', async () => {
    const config = { ...smallDeepSeekConfig(128, 128), numExperts: 8, numGroups: 4, topKGroups: 2, topK: 4 };
    const source = MoeLayer.random(config, { seed: 5 });
    const dir = writeCheckpoint(fresh(), config, layerTensors(config, source.weights, 1), 1);
    const shard = path.join(dir, fs.readdirSync(dir).find((f) => f.endsWith('.safetensors'))!);
    const before = SafetensorsFile.open(shard);
    padHeader(shard, BIG);
    const fd = fs.openSync(shard, 'r');
    const length = Buffer.alloc(8);
    fs.readSync(fd, length, 0, 8, 0);
    fs.closeSync(fd);
    expect(Number(length.readBigUInt64LE(0))).toBeGreaterThan(85_000_000);

    const some = await maxGapDuring(() => SafetensorsFile.load(shard, { prefixes: ['filler.12345', 'model.layers.1.mlp.gate.'] }));
    expect([...some.result.tensors.keys()].sort()).toEqual([
      ...Array.from({ length: 11 }, (_, d) => `filler.12345${d === 10 ? '' : d}`).sort(),
      ...[...before.tensors.keys()].filter((name) => name.startsWith('model.layers.1.mlp.gate.')),
    ].sort());
    const bytes = Math.max(...[...before.tensors.values()].map((t) => t.end)); // the original data section
    expect(some.result.info('filler.123456')).toEqual({ name: 'filler.123456', dtype: 'U8', shape: [1], begin: bytes + 123456, end: bytes + 123457 });
    expect(some.gap, `max event-loop gap ${some.gap.toFixed(0)} ms`).toBeLessThan(MAX_GAP_MS);

    const { result: layer, gap } = await maxGapDuring(() => MoeLayer.fromSafetensors(dir, { layer: 1 }));
    expect(layer.weights.gate.to()).toEqual(source.weights.gate.to());
    expect(layer.weights.w13.data[0].to()).toEqual(source.weights.w13.data[0].to());
    expect(gap, `max event-loop gap ${gap.toFixed(0)} ms`).toBeLessThan(MAX_GAP_MS);
    layer.dispose();
  }, 120_000); // generating and parsing ~90 MB twice: ~15 s when quiet, past 60 s at a load average of 10
});

describe('the worker path gives what the inline path gives', () => {
  it('a medium header: the same entries and metadata', async () => {
    const dtypes = [['F32', 4], ['BF16', 2], ['F8_E4M3', 1], ['I64', 8], ['BOOL', 1]] as const;
    const entries: string[] = [];
    let offset = 0;
    for (let i = 0; i < 30_000; i++) {
      const [dtype, size] = dtypes[i % dtypes.length];
      const shape = [1 + (i % 3), (i * 7) % 5, 2].slice(0, i % 4);
      const bytes = shape.reduce((n, d) => n * d, 1) * size;
      // Names with non-ASCII and escaped characters: the compact form counts UTF-16 units.
      entries.push(`"model.layers.${i % 4}.t${i}${i % 11 === 0 ? '.\\u00e9\\"\\u0000' : ''}":{"dtype":"${dtype}","shape":${JSON.stringify(shape)},"data_offsets":[${offset},${offset + bytes}]}`);
      offset += bytes;
    }
    const header = `{${entries.join(',')},"__metadata__":{"format":"pt","__proto__":"x","\\u00fc":"\\ud83d\\ude00"}}`;
    expect(Buffer.byteLength(header)).toBeGreaterThan(OFF_THREAD_BYTES);
    const file = writeRaw(path.join(fresh(), 'medium.safetensors'), header, offset);
    const inline = SafetensorsFile.open(file);
    const worker = await SafetensorsFile.load(file);
    expect(worker.tensors.size).toBe(30_000);
    expect([...worker.tensors.entries()]).toEqual([...inline.tensors.entries()]);
    expect(Object.entries(worker.metadata)).toEqual(Object.entries(inline.metadata));
    expect(Object.getPrototypeOf(worker.metadata)).toBe(Object.prototype);
    const layer2 = await SafetensorsFile.load(file, { prefixes: ['model.layers.2.'] });
    expect([...layer2.tensors.entries()]).toEqual([...inline.tensors.entries()].filter(([name]) => name.startsWith('model.layers.2.')));
  });

  // Each hostile header is padded past OFF_THREAD_BYTES with valid entries, so load() takes the worker.
  const PAD = 20_000;
  const padding = fillerEntries(PAD, 0);
  const hostile: [string, string, number, RegExp][] = [
    ['an unknown dtype', `{${padding},"bad":{"dtype":"F7","shape":[1],"data_offsets":[${PAD},${PAD + 1}]}}`, PAD + 1, /tensor 'bad': unknown dtype 'F7'/],
    ['an inherited dtype name', `{${padding},"bad":{"dtype":"toString","shape":[1],"data_offsets":[${PAD},${PAD + 1}]}}`, PAD + 1, /tensor 'bad': unknown dtype/],
    ['a fractional shape', `{${padding},"bad":{"dtype":"U8","shape":[1.5],"data_offsets":[${PAD},${PAD + 1}]}}`, PAD + 1, /tensor 'bad': shape must be/],
    ['offsets of the wrong size', `{${padding},"bad":{"dtype":"F32","shape":[1],"data_offsets":[${PAD},${PAD + 1}]}}`, PAD + 1, /tensor 'bad': data_offsets .* needs 4/],
    ['negative offsets', `{${padding},"bad":{"dtype":"U8","shape":[1],"data_offsets":[-1,0]}}`, PAD + 1, /tensor 'bad': data_offsets must be/],
    ['a gap', `{${padding},"bad":{"dtype":"U8","shape":[1],"data_offsets":[${PAD + 1},${PAD + 2}]}}`, PAD + 2, /tensor 'bad' starts at byte \d+, expected \d+ \(a gap or an overlap\)/],
    ['an overlap', `{${padding},"bad":{"dtype":"U8","shape":[1],"data_offsets":[3,4]}}`, PAD + 1, /starts at byte \d+, expected \d+ \(a gap or an overlap\)/],
    ['a padded data section', `{${padding}}`, PAD + 9, /tensors cover \d+ data bytes, the file holds \d+/],
    ['an entry that is not an object', `{${padding},"bad":7}`, PAD, /tensor 'bad': header entry is not an object/],
    ['metadata that is not strings', `{${padding},"__metadata__":{"a":1}}`, PAD, /__metadata__ 'a' must be a string/],
    ['invalid JSON', `{${padding},}`, PAD, /header is not valid JSON/],
    ['an array', `[${padding.replace(/"filler\.\d+":/g, '')}]`, PAD, /header is not a JSON object/],
    ['deep nesting', `{"a":${'['.repeat(1_500_000)}${']'.repeat(1_500_000)}}`, 0, /header is (not valid JSON|not a JSON object)|tensor 'a'/],
  ];
  it.each(hostile)('%s: the same coded error', async (_, header, dataBytes, message) => {
    expect(Buffer.byteLength(header), 'padded past the inline limit').toBeGreaterThan(OFF_THREAD_BYTES);
    const file = writeRaw(path.join(fresh(), 'hostile.safetensors'), header, dataBytes);
    const inline = (() => {
      try {
        SafetensorsFile.open(file);
      } catch (e) {
        return e;
      }
    })();
    const worker = await SafetensorsFile.load(file).then(() => undefined, (e: unknown) => e);
    for (const error of [inline, worker]) {
      expect(error, 'expected a MoeError').toBeInstanceOf(MoeError);
      expect((error as MoeError).code).toBe('ERR_MOE_CHECKPOINT');
      expect((error as Error).message).toContain(file);
      expect((error as Error).message).toMatch(message);
    }
    expect((worker as Error).message).toBe((inline as Error).message);
  });
});
