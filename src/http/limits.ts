/**
 * Rate limits (@fastify/rate-limit), on when API tokens are set: requests without a valid token
 * count per client address (ROWFLEET_RATE_LIMIT a minute, 100 by default), requests with one per
 * token (ROWFLEET_RATE_LIMIT_TOKEN a minute, off by default: producers' throughput is theirs to
 * set). Over the limit: 429 with Retry-After. The health checks and the dashboard's files, which
 * hold no data, are not counted.
 */
import rateLimit from '@fastify/rate-limit';
import type { FastifyInstance } from 'fastify';
import type { Config } from '../config.ts';
import { isOpenPath, rateLimitKey } from './auth.ts';

const WINDOW_MS = 60_000;

export function registerRateLimits(app: FastifyInstance, config: Config, openPaths: readonly string[]): void {
  const { rateLimitPerAddress: perAddress, rateLimitPerToken: perToken } = config;
  if (perAddress === 0 && perToken === 0) return;
  const key = rateLimitKey(config.apiTokens);
  const isOpen = isOpenPath(openPaths);
  app.register(rateLimit, { global: false });
  app.after(() => {
    app.addHook(
      'onRequest',
      app.rateLimit({
        timeWindow: WINDOW_MS,
        keyGenerator: key,
        // 0: that side is not limited.
        allowList: (request, k) => isOpen(request.url) || (k.startsWith('token:') ? perToken === 0 : perAddress === 0),
        max: (_request, k) => (k.startsWith('token:') ? perToken : perAddress),
        errorResponseBuilder: (request, context) => {
          const who = key(request).startsWith('token:') ? 'with this token' : 'from this address without a valid token';
          const err = new Error(`too many requests ${who}: at most ${context.max} a minute; retry in ${context.after}`) as Error & { statusCode: number };
          err.statusCode = 429;
          return err;
        },
      }),
    );
  });
}
