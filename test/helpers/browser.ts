/**
 * A real headless Chromium for the dashboard's tests, from the system (no browser download):
 * ROWFLEET_CHROMIUM, else /usr/bin/chromium (`apt-get install chromium`; .ci/run installs it).
 * Pages record their console errors and uncaught exceptions, so that a test can insist on none.
 */
import { accessSync, constants } from 'node:fs';
import { chromium, type Browser, type ConsoleMessage, type Page } from 'playwright-core';

export const CHROMIUM_PATH = process.env.ROWFLEET_CHROMIUM ?? '/usr/bin/chromium';

export function chromiumPresent(file = CHROMIUM_PATH): boolean {
  try {
    accessSync(file, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** Headless, and without the sandbox, which needs user namespaces that root in a container lacks. */
export function launchChromium(): Promise<Browser> {
  return chromium.launch({ executablePath: CHROMIUM_PATH, headless: true, args: ['--no-sandbox'] });
}

export interface WatchedPage {
  page: Page;
  /** Console errors and uncaught exceptions so far, as lines. */
  problems: string[];
  close(): Promise<void>;
}

/**
 * A page in a fresh context (its own sessionStorage), collecting console errors and page errors.
 * `expected` lets through console errors a step provokes on purpose (Chromium logs every 4xx of a
 * fetch as "Failed to load resource").
 */
export async function watchedPage(browser: Browser, expected: (message: ConsoleMessage) => boolean = () => false): Promise<WatchedPage> {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  const problems: string[] = [];
  page.on('console', (message) => {
    if (message.type() === 'error' && !expected(message)) problems.push(`console: ${message.text()} (${message.location().url})`);
  });
  page.on('pageerror', (err) => problems.push(`pageerror: ${err.message}`));
  return { page, problems, close: () => context.close() };
}

/** A "Failed to load resource" console error for a response of this status to a URL matching `url`. */
export const failedLoad = (status: number, url: RegExp) => (message: ConsoleMessage) =>
  message.text().includes(`status of ${status}`) && url.test(message.location().url);
