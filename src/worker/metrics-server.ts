/**
 * GET /metrics on a port of its own, for a worker process (--metrics-port) or a fleet: a bare
 * node:http server, nothing else on it. A port already taken is a clear error at start.
 */
import http from 'node:http';
import { UserError } from '../errors.ts';
import type { Logger } from '../log.ts';

export interface MetricsText {
  contentType: string;
  body: string;
}

export interface MetricsServer {
  /** The port listened on (the one chosen when 0 was asked for). */
  port: number;
  close(): Promise<void>;
}

export async function serveMetrics(render: () => Promise<MetricsText>, { host, port, log }: { host: string; port: number; log: Logger }): Promise<MetricsServer> {
  const server = http.createServer((request, response) => {
    const path = (request.url ?? '/').split('?')[0];
    if (request.method !== 'GET' || path !== '/metrics') {
      response.writeHead(404, { 'content-type': 'text/plain' }).end('only GET /metrics is served here\n');
      return;
    }
    render().then(
      ({ contentType, body }) => response.writeHead(200, { 'content-type': contentType }).end(body),
      (err: unknown) => {
        log.warn({ err: { message: (err as Error).message } }, 'metrics: could not render');
        response.writeHead(500, { 'content-type': 'text/plain' }).end('could not render the metrics; see the log\n');
      },
    );
  });
  // Scrapes are short; an idle keep-alive connection must not hold a stopping worker open.
  server.keepAliveTimeout = 5_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => {
      const why = err.code === 'EADDRINUSE' ? 'is in use' : err.code === 'EACCES' ? 'is not allowed for this user' : `failed: ${err.message}`;
      reject(new UserError(`metrics port ${host}:${port} ${why}; choose another --metrics-port (ROWFLEET_METRICS_PORT)`, 1, { cause: err }));
    });
    server.listen(port, host, () => resolve());
  });
  const bound = (server.address() as { port: number }).port;
  log.info({ metrics: `http://${host.includes(':') ? `[${host}]` : host}:${bound}/metrics` }, 'serving metrics');
  return {
    port: bound,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
