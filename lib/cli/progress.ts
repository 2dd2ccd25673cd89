/** A progress bar on stderr (cli-progress), only when a person is watching a terminal. */
import { Presets, SingleBar } from 'cli-progress';

export interface Progress {
  update(done: number, total: number, label: string): void;
  stop(): void;
}

export function progressBar(enabled: boolean): Progress {
  if (!enabled || !process.stderr.isTTY) return { update() {}, stop() {} };
  const bar = new SingleBar({ stream: process.stderr, format: ' {bar} {value}/{total} {label}', clearOnComplete: true }, Presets.shades_classic);
  let started = false;
  return {
    update(done, total, label) {
      if (!started) bar.start(total, 0, { label });
      started = true;
      bar.update(done, { label });
    },
    stop() {
      if (started) bar.stop();
    },
  };
}
