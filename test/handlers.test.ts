import { describe, expect, it } from 'vitest';
import { builtinHandlers, loadHandler, type HandlerContext } from '../src/worker/handler.ts';
import { silentLogger } from '../src/log.ts';
import { UsageError } from '../src/errors.ts';

const options = { sleepMs: 10_000, failRate: 0 };
const ctx = (signal = new AbortController().signal): HandlerContext => ({
  signal,
  log: silentLogger,
  attempt: 1,
  idempotencyKey: 'default:a:1',
  fencingToken: 1,
  extendLease: async () => {},
});
const record = (data: unknown) => ({ kind: 'default', id: 'a', version: 1, data, attempts: 1, priority: 0 });

describe('built-in handlers', () => {
  const builtins = builtinHandlers(options);

  it('flaky fails at its rate: data.failRate over the flag', async () => {
    await expect(builtins.flaky!(record({ failRate: 1 }), ctx())).rejects.toThrow(/flaky handler failed \(rate 1\)/);
    await expect(builtins.flaky!(record({}), ctx())).resolves.toEqual({ ok: true });
  });

  it('sleep takes data.sleepMs, and stops when its signal aborts', async () => {
    await expect(builtins.sleep!(record({ sleepMs: 1 }), ctx())).resolves.toEqual({ sleptMs: 1 });
    const controller = new AbortController();
    const sleeping = builtins.sleep!(record({}), ctx(controller.signal));
    controller.abort(new Error('lease lost'));
    await expect(sleeping).rejects.toThrow();
  });

  it('checksum digests canonical data: key order does not matter', async () => {
    const a = (await builtins.checksum!(record({ b: [1, { y: 2, x: 1 }], a: 'z' }), ctx())) as { sha256: string };
    const b = (await builtins.checksum!(record({ a: 'z', b: [1, { x: 1, y: 2 }] }), ctx())) as { sha256: string };
    expect(a.sha256).toMatch(/^[0-9a-f]{64}$/);
    expect(a).toEqual(b);
  });

  it('loads a built-in by name and refuses what is neither a built-in nor a module', async () => {
    expect(await loadHandler('noop', process.cwd(), options)).toMatchObject({ name: 'noop', any: { transactional: false } });
    await expect(loadHandler('nope', process.cwd(), options)).rejects.toThrow(UsageError);
  });

  it('loads a module handler with its transactional flag', async () => {
    const loaded = await loadHandler('./test/fixtures/recording-handler.js', process.cwd(), options);
    expect(loaded.any?.transactional).toBe(true);
    expect(typeof loaded.any?.run).toBe('function');
  });
});
