/**
 * Where each tensor of a Hugging Face checkpoint lives: the index's
 * weight_map, or every tensor of a single model.safetensors; shards are
 * opened (their headers validated) on first use, keeping only one layer's
 * entries.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { MoeError, describe } from '../errors';
import { SafetensorsDType, SafetensorsFile, TensorInfo } from './safetensors';
import { readJsonObject } from './files';

function fail(message: string): never {
  throw new MoeError('ERR_MOE_CHECKPOINT', message);
}

export class CheckpointFiles {
  private readonly dir: string;
  private readonly weightMap: Map<string, string>;
  /** The layer's names start with this: only those entries of a shard's header are kept. */
  private readonly prefix: string;
  private readonly open = new Map<string, SafetensorsFile>();

  private constructor(dir: string, weightMap: Map<string, string>, prefix: string) {
    this.dir = dir;
    this.weightMap = weightMap;
    this.prefix = prefix;
  }

  static async open(dir: string, prefix: string): Promise<CheckpointFiles> {
    const indexPath = path.join(dir, 'model.safetensors.index.json');
    const weightMap = new Map<string, string>();
    const files = new CheckpointFiles(dir, weightMap, prefix);
    if (fs.existsSync(indexPath)) {
      const map = (await readJsonObject(indexPath)).weight_map;
      if (typeof map !== 'object' || map === null || Array.isArray(map)) fail(`${indexPath}: missing 'weight_map'`);
      for (const [name, file] of Object.entries(map as Record<string, unknown>)) {
        // A shard is a file name in the checkpoint's directory: no path, no '.' or '..'.
        if (typeof file !== 'string' || file === '' || file === '.' || file === '..' || file.includes('/') || file.includes('\\') || file.includes('\0')) {
          fail(`${indexPath}: bad shard name ${describe(file)} for '${name}'`);
        }
        weightMap.set(name, file);
      }
    } else if (fs.existsSync(path.join(dir, 'model.safetensors'))) {
      for (const name of (await files.file('model.safetensors')).tensors.keys()) weightMap.set(name, 'model.safetensors');
    } else {
      fail(`${dir}: neither model.safetensors.index.json nor model.safetensors is there`);
    }
    return files;
  }

  private async file(name: string): Promise<SafetensorsFile> {
    let file = this.open.get(name);
    if (!file) {
      // Every entry is validated (off the JS thread for a large header); only the layer's are handed back.
      file = await SafetensorsFile.load(path.join(this.dir, name), { prefixes: [this.prefix] });
      this.open.set(name, file);
    }
    return file;
  }

  has(name: string): boolean {
    return this.weightMap.has(name);
  }

  /** The tensor's header entry, checked against the allowed dtypes and the expected shape. */
  async locate(name: string, dtypes: readonly SafetensorsDType[], shape: readonly number[]): Promise<{ file: SafetensorsFile; info: TensorInfo }> {
    const shard = this.weightMap.get(name);
    if (!shard) fail(`${name}: not in the checkpoint's weight map (${this.dir})`);
    const file = await this.file(shard);
    if (!file.tensors.has(name)) fail(`${name}: the weight map points to ${shard}, which does not hold it`);
    const info = file.info(name);
    if (!dtypes.includes(info.dtype) || info.shape.length !== shape.length || info.shape.some((d, i) => d !== shape[i])) {
      fail(`${name} in ${shard}: expected ${dtypes.join(' or ')} [${shape.join(', ')}], got ${info.dtype} [${info.shape.join(', ')}]`);
    }
    return { file, info };
  }
}
