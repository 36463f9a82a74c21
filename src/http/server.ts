/**
 * The HTTP API. Every client mistake is a 4xx naming the problem, with nothing written (I6);
 * a database that cannot be reached is a 503 with Retry-After; a 500 means a bug.
 *
 * Error bodies: {"error": "<code>", "message": "<one line for a person>", "field"?: "<path>"}.
 */
import { randomUUID } from 'node:crypto';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyError, type FastifyInstance, type FastifyReply } from 'fastify';
import type pg from 'pg';
import type { Config } from '../config.ts';
import type { Logger } from '../log.ts';
import { isDatabaseUnavailable } from '../db/pool.ts';
import { sqlState } from '../db/sql.ts';
import { MessageError } from '../records/message.ts';
import type { Enqueue } from '../records/upsert.ts';
import { bearerAuth } from './auth.ts';
import { registerRateLimits } from './limits.ts';
import { registerUpsertRoute } from './upsert-route.ts';
import { Awaiter } from '../records/await.ts';
import { registerRecordRoutes } from './record-routes.ts';
import { registerHealthRoutes } from './health-routes.ts';
import { registerStatsRoute } from './stats-route.ts';
import { registerRequeueRoute } from './requeue-route.ts';
import { registerDashboard } from './dashboard-route.ts';
import { readStatus } from '../ops/status.ts';
import { createApiMetrics } from './metrics.ts';

export interface ServerOptions {
  config: Config;
  pool: pg.Pool;
  log: Logger;
  /** Sends each applied record's job in the upsert's transaction (ROWFLEET_ENQUEUE_ON_UPSERT). */
  enqueue?: Enqueue | undefined;
  /** Where requests that wait for results LISTEN (default: the pool's connection string). */
  listenUrl?: string | undefined;
}

/** Query parameters that carry a credential; refused wherever they appear. */
const TOKEN_PARAMETERS = new Set(['token', 'access_token', 'api_key', 'apikey', 'auth', 'authorization', 'bearer']);

const pathOf = (url: string) => url.split('?')[0]!;

/** Seconds a client should wait before retrying when the database is unavailable. */
const RETRY_AFTER_SECONDS = 2;

export function buildServer({ config, pool, log, enqueue, listenUrl }: ServerOptions): FastifyInstance {
  const app = Fastify({
    loggerInstance: log as FastifyBaseLogger,
    bodyLimit: config.maxBodyBytes,
    // One line per request from the onResponse hook below, not two from Fastify.
    logController: new LogController({ disableRequestLogging: true }),
    requestIdHeader: false,
    genReqId: (req) => {
      const given = req.headers['x-request-id'];
      return typeof given === 'string' && /^[\w.:-]{1,64}$/.test(given) ? given : randomUUID();
    },
    // A body that tries to set __proto__ / constructor.prototype is refused (400), not stripped.
    onProtoPoisoning: 'error',
    onConstructorPoisoning: 'error',
    return503OnClosing: true,
    // Slow clients (headers or a body trickled in) are answered 408 and closed once the request
    // has not arrived within its time, so that they cannot hold connections open; Node checks
    // every connectionsCheckingInterval. A ?wait= is the answer's time, not the request's.
    requestTimeout: config.requestTimeoutMs,
    http: { headersTimeout: config.requestTimeoutMs, connectionsCheckingInterval: Math.min(1_000, Math.ceil(config.requestTimeoutMs / 4)) },
  });

  // Only JSON bodies: a text/plain body is a 415 naming the right content type, not a 400.
  app.removeContentTypeParser('text/plain');
  app.addHook('onRequest', async (request, reply) => {
    reply.header('x-request-id', request.id);
  });
  const metrics = createApiMetrics();
  app.addHook('onResponse', async (request, reply) => {
    const route = request.routeOptions.url ?? 'unmatched';
    metrics.requests.observe({ method: request.method, route, status: String(reply.statusCode) }, reply.elapsedTime / 1000);
    // The route's pattern, or for an unmatched one its path: never a query string, where a secret may ride.
    request.log.info(
      { method: request.method, url: request.routeOptions.url ?? pathOf(request.url), statusCode: reply.statusCode, ms: Math.round(reply.elapsedTime * 10) / 10 },
      'request',
    );
  });
  // A token belongs in the Authorization header: in a URL it ends up in proxies' and browsers' histories.
  app.addHook('onRequest', async (request, reply) => {
    const names = new URLSearchParams(request.url.slice(pathOf(request.url).length + 1)).keys();
    for (const name of names) {
      if (TOKEN_PARAMETERS.has(name.toLowerCase())) {
        return sendError(reply, 400, 'invalid_request', `a token in the URL (?${name}=) is refused: send it as Authorization: Bearer <token>, and replace the token, which is now in logs and histories`, name);
      }
    }
  });
  // The dashboard's page and files hold no data: they load, and the page asks for a token.
  const open = ['/healthz', '/readyz', '/', '/dashboard/'];
  if (config.apiTokens.length > 0) {
    // Rate limits first, so that the requests refused for their token count too (src/http/limits.ts).
    registerRateLimits(app, config, open);
    app.after(() => app.addHook('onRequest', bearerAuth(config.apiTokens, open)));
  }

  app.setNotFoundHandler((request, reply) => sendError(reply, 404, 'not_found', `no route ${request.method} ${pathOf(request.url)}`));

  app.setErrorHandler((err: FastifyError, request, reply) => {
    if (err instanceof MessageError) return sendError(reply, 400, 'invalid_request', err.message, err.field);
    if (isDatabaseUnavailable(err)) {
      request.log.warn({ err: { message: err.message, code: err.code } }, 'database unavailable');
      reply.header('retry-after', String(RETRY_AFTER_SECONDS));
      return sendError(reply, 503, 'database_unavailable', `the database is unavailable; retry in ${RETRY_AFTER_SECONDS}s`);
    }
    // Postgres data exceptions (class 22) are input it refused that validation let through:
    // still the client's input, so a 400, and the statement wrote nothing.
    if (sqlState(err)?.startsWith('22')) {
      request.log.warn({ err: { message: err.message, code: err.code } }, 'input refused by Postgres');
      return sendError(reply, 400, 'invalid_request', `the database refused the input: ${err.message}`);
    }
    if (err.statusCode !== undefined && err.statusCode >= 400 && err.statusCode < 500) {
      return sendError(reply, err.statusCode, clientErrorCode(err), clientErrorMessage(err, config));
    }
    request.log.error({ err }, 'request failed');
    return sendError(reply, 500, 'internal_error', 'internal error; see the server log for this request id');
  });

  const awaiter = new Awaiter(pool, { listenUrl: listenUrl ?? pool.options.connectionString ?? '', log });
  // Before the server waits for requests in flight: waiting ones are answered with their state now.
  app.addHook('preClose', () => awaiter.close());
  registerUpsertRoute(app, { pool, config, metrics, enqueue, awaiter });
  app.get('/metrics', async (request, reply) => {
    // The database's gauges, read for this scrape; when it is down the process's metrics still answer.
    const status = await readStatus(pool).catch((err: unknown) => {
      request.log.warn({ err: { message: (err as Error).message, code: (err as { code?: string }).code } }, 'metrics: could not read the status');
      return undefined;
    });
    metrics.observe(status);
    return reply.type(metrics.registry.contentType).send(await metrics.registry.metrics());
  });
  registerRecordRoutes(app, { pool });
  registerStatsRoute(app, { pool });
  registerRequeueRoute(app, { pool });
  registerDashboard(app);
  registerHealthRoutes(app, { pool });
  return app;
}

export function sendError(reply: FastifyReply, status: number, error: string, message: string, field?: string): FastifyReply {
  return reply.code(status).send(field === undefined ? { error, message } : { error, message, field });
}

function clientErrorCode(err: FastifyError): string {
  switch (err.statusCode) {
    case 413:
      return 'payload_too_large';
    case 415:
      return 'unsupported_media_type';
    case 429:
      return 'rate_limited';
    default:
      return 'invalid_request';
  }
}

function clientErrorMessage(err: FastifyError, config: Config): string {
  switch (err.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return `request body is larger than ${config.maxBodyBytes} bytes (ROWFLEET_MAX_BODY)`;
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return 'send the body as JSON with Content-Type: application/json';
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return 'body is empty; send a JSON object';
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
      return `body is not valid JSON: ${err.message}`;
    default:
      return err.message;
  }
}
