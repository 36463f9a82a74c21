/**
 * Bearer tokens (ROWFLEET_API_TOKENS). Tokens are compared as SHA-256 digests with
 * timingSafeEqual, against every configured token, so neither the length nor the position of a
 * match leaks through response time.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyReply, FastifyRequest } from 'fastify';

const digest = (token: string) => createHash('sha256').update(token).digest();

/** Whether a request's URL is one of `openPaths`: exact paths, or prefixes ending in `/` (`/dashboard/`). */
export function isOpenPath(openPaths: readonly string[]): (url: string) => boolean {
  return (url) => {
    const path = url.split('?')[0]!;
    return openPaths.some((p) => (p.endsWith('/') && p.length > 1 ? path.startsWith(p) : path === p));
  };
}

/** `openPaths` (see isOpenPath) are served without a token. */
export function bearerAuth(tokens: readonly string[], openPaths: readonly string[]) {
  const accepted = tokens.map(digest);
  const open = isOpenPath(openPaths);
  return async (request: FastifyRequest, reply: FastifyReply) => {
    if (open(request.url)) return;
    if (isAccepted(request.headers.authorization, accepted)) return;
    reply.header('www-authenticate', 'Bearer');
    const problem = request.headers.authorization === undefined ? 'missing' : 'invalid';
    return reply.code(401).send({ error: 'unauthorized', message: `${problem} bearer token; send Authorization: Bearer <token>` });
  };
}

function isAccepted(header: string | undefined, accepted: readonly Buffer[]): boolean {
  return acceptedDigest(header, accepted) !== undefined;
}

/** The digest of the token `header` carries when it is one of `accepted` (compared in constant time). */
function acceptedDigest(header: string | undefined, accepted: readonly Buffer[]): Buffer | undefined {
  const match = header === undefined ? null : /^Bearer\s+(\S+)\s*$/i.exec(header);
  if (match === null) return undefined;
  const given = digest(match[1]!);
  let ok = false;
  for (const token of accepted) ok = timingSafeEqual(given, token) || ok;
  return ok ? given : undefined;
}

/**
 * Who a request counts against for rate limiting: `token:<its digest's first 16 hex>` when it
 * carries a valid token, `address:<ip>` otherwise, so that a burst of wrong tokens from one address
 * never uses up a valid token's allowance.
 */
export function rateLimitKey(tokens: readonly string[]): (request: FastifyRequest) => string {
  const accepted = tokens.map(digest);
  return (request) => {
    const valid = acceptedDigest(request.headers.authorization, accepted);
    return valid === undefined ? `address:${request.ip}` : `token:${valid.toString('hex').slice(0, 16)}`;
  };
}
