/**
 * `rowfleet api` in a child process, as it runs in production: its CPU is its own, not shared with
 * the load generator's event loop, and it is measured separately.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import { setTimeout as delay } from 'node:timers/promises';

const REPO = fileURLToPath(new URL('../../', import.meta.url));
const STARTUP_TIMEOUT_MS = 30_000;

export interface ApiProcess {
  url: string;
  pid: number;
  stop(): Promise<void>;
}

export async function startApi({ databaseUrl, poolSize }: { databaseUrl: string; poolSize: number }): Promise<ApiProcess> {
  // Chosen here rather than `--port 0`: at log level warn the child does not print its address.
  const port = await freePort();
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'api', '--host', '127.0.0.1', '--port', String(port)], {
    cwd: REPO,
    // Per-request log lines would cost the server more CPU than some of the work measured.
    env: { ...process.env, DATABASE_URL: databaseUrl, ROWFLEET_LOG_LEVEL: 'warn', ROWFLEET_POOL_SIZE: String(poolSize) },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  // If the bench dies (watchdog, crash, Ctrl-C), the server must not outlive it.
  const killOnExit = () => child.kill('SIGKILL');
  process.once('exit', killOnExit);
  void exited.then(() => process.off('exit', killOnExit));
  const url = `http://127.0.0.1:${port}`;
  try {
    await waitUntilHealthy(url, exited);
  } catch (err) {
    await stopChild(child, exited);
    throw err;
  }
  return { url, pid: child.pid!, stop: () => stopChild(child, exited) };
}

async function waitUntilHealthy(url: string, exited: Promise<number | null>): Promise<void> {
  let gone: number | null | undefined;
  void exited.then((code) => (gone = code));
  const deadline = Date.now() + STARTUP_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (gone !== undefined) throw new Error(`rowfleet api exited with code ${gone} before answering /healthz`);
    try {
      if ((await fetch(`${url}/healthz`)).ok) return;
    } catch {
      // Not listening yet.
    }
    await delay(100);
  }
  throw new Error(`rowfleet api did not answer ${url}/healthz within ${STARTUP_TIMEOUT_MS / 1000}s`);
}

/** SIGTERM (a graceful close), then SIGKILL if it has not exited after 5 s. */
async function stopChild(child: ChildProcess, exited: Promise<number | null>): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
  await exited;
  clearTimeout(timer);
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}
