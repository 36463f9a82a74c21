/**
 * A dedicated connection that LISTENs on one channel and calls `onNotify`, reconnecting with
 * backoff when the connection drops (Postgres restart, network). A pool cannot serve LISTEN: the
 * subscription belongs to one session. Errors are logged, never thrown: the caller keeps polling.
 */
import pg from 'pg';
import type { Logger } from '../log.ts';

export interface Listener {
  close(): Promise<void>;
}

/**
 * `onNotify` receives each notification's payload. After every (re)connect `onConnect` runs
 * (by default `onNotify()`), since work may have arrived while nobody was listening.
 */
export function listen(
  connectionString: string,
  channel: string,
  onNotify: (payload?: string) => void,
  log: Logger,
  onConnect: () => void = () => onNotify(),
): Listener {
  let client: pg.Client | undefined;
  let closed = false;
  let failures = 0;
  let retryTimer: NodeJS.Timeout | undefined;

  const connect = async () => {
    if (closed) return;
    const c = new pg.Client({ connectionString, application_name: 'rowfleet listen', keepAlive: true });
    c.on('error', (err) => {
      log.warn({ err: { message: err.message } }, 'listen connection lost; reconnecting');
      scheduleReconnect(c);
    });
    c.on('end', () => scheduleReconnect(c));
    c.on('notification', (message) => onNotify(message.payload));
    try {
      await c.connect();
      await c.query(`LISTEN ${pg.escapeIdentifier(channel)}`);
      if (closed) return void (await c.end());
      client = c;
      failures = 0;
      onConnect();
    } catch (err) {
      log.warn({ err: { message: (err as Error).message } }, 'cannot listen for notifications; polling until reconnected');
      scheduleReconnect(c);
    }
  };

  const scheduleReconnect = (c: pg.Client) => {
    if (closed || retryTimer !== undefined || (client !== undefined && client !== c)) return;
    client = undefined;
    c.removeAllListeners('end');
    void c.end().catch(() => {});
    failures += 1;
    const delay = Math.min(10_000, 200 * 2 ** Math.min(failures, 6));
    retryTimer = setTimeout(() => {
      retryTimer = undefined;
      void connect();
    }, delay);
  };

  void connect();
  return {
    async close() {
      closed = true;
      clearTimeout(retryTimer);
      const c = client;
      client = undefined;
      if (c !== undefined) {
        c.removeAllListeners('end');
        await c.end().catch(() => {});
      }
    },
  };
}
