/**
 * The dashboard: `GET /` and a fixed set of static files under `/dashboard/`, with no build step.
 * The page (dashboard/ at the package root) is plain HTML, CSS and an ES module; the chart is
 * uPlot, served from node_modules. None of these files hold data: they load without a token, and
 * the page asks for one when the API wants it (every data request carries `Authorization`).
 *
 * Only the names below are served (no path from the URL reaches the file system). The files are
 * read once, on their first request, and kept.
 */
import fs from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';

/** dashboard/ at the package root: two levels up from src/http/ or dist/http/. */
export const DASHBOARD_DIR = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'dashboard');

const require = createRequire(import.meta.url);

interface Asset {
  /** Where the file is, resolved when first asked for. */
  file: () => string;
  type: string;
}

const JS = 'text/javascript; charset=utf-8';
const CSS = 'text/css; charset=utf-8';

/** URL path → file. Nothing else is served. */
const ASSETS: Record<string, Asset> = {
  '/': { file: () => path.join(DASHBOARD_DIR, 'index.html'), type: 'text/html; charset=utf-8' },
  '/dashboard/dashboard.js': { file: () => path.join(DASHBOARD_DIR, 'dashboard.js'), type: JS },
  '/dashboard/dashboard.css': { file: () => path.join(DASHBOARD_DIR, 'dashboard.css'), type: CSS },
  // uplot has no "exports" map, so its dist files resolve by name, wherever npm put the package.
  '/dashboard/uplot.js': { file: () => require.resolve('uplot/dist/uPlot.iife.min.js'), type: JS },
  '/dashboard/uplot.css': { file: () => require.resolve('uplot/dist/uPlot.min.css'), type: CSS },
};

/**
 * The page's policy: its own scripts and styles only (no inline script), data from this origin.
 * uPlot sets element styles from script, which `style-src` does not govern.
 */
const CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

/**
 * Registers `GET /` (the page) and `GET /dashboard/{dashboard.js,dashboard.css,uplot.js,uplot.css}`.
 * The auth hook must leave `/` and `/dashboard/*` open (they carry no data).
 */
export function registerDashboard(app: FastifyInstance): void {
  const cache = new Map<string, Promise<Buffer>>();
  const read = (url: string, asset: Asset): Promise<Buffer> => {
    let body = cache.get(url);
    if (body === undefined) {
      body = fs.readFile(asset.file());
      // A file that could not be read is tried again on the next request, not remembered as missing.
      body.catch(() => cache.delete(url));
      cache.set(url, body);
    }
    return body;
  };
  for (const [url, asset] of Object.entries(ASSETS)) {
    app.get(url, async (_request, reply) => {
      const body = await read(url, asset);
      reply.header('cache-control', 'no-cache').header('x-content-type-options', 'nosniff').type(asset.type);
      if (url === '/') reply.header('content-security-policy', CSP).header('referrer-policy', 'no-referrer');
      return reply.send(body);
    });
  }
}
