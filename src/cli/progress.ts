/**
 * A one-line progress bar on stderr, redrawn in place; only on a terminal (JSON and pipes get none).
 */
import type { CliIO } from './context.ts';

export function progressBar(io: CliIO, label: string): { update(done: number, total: number): void; end(): void } | undefined {
  if (io.isTTY !== true) return undefined;
  let drawn = false;
  return {
    update(done, total) {
      const width = 30;
      const filled = total === 0 ? width : Math.round((done / total) * width);
      io.stderr.write(`\r${label} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${done.toLocaleString('en-US')}/${total.toLocaleString('en-US')}`);
      drawn = true;
    },
    end() {
      if (drawn) io.stderr.write('\n');
    },
  };
}
