/**
 * Writes the configuration reference, generated from the settings' schema (src/settings.ts), into
 * the README between its markers: `npm run docs:config`. test/config-reference.test.ts fails when
 * the README's copy differs.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { configReference, REFERENCE_END, REFERENCE_START } from '../src/settings.ts';

const README = fileURLToPath(new URL('../README.md', import.meta.url));
const text = readFileSync(README, 'utf8');
const start = text.indexOf(REFERENCE_START);
const end = text.indexOf(REFERENCE_END);
if (start < 0 || end < start) {
  console.error(`README.md has no ${REFERENCE_START} … ${REFERENCE_END} block; add the two markers where the reference belongs`);
  process.exit(1);
}
const next = `${text.slice(0, start + REFERENCE_START.length)}\n${configReference()}\n${text.slice(end)}`;
if (next === text) console.log('README.md: the configuration reference is up to date');
else {
  writeFileSync(README, next);
  console.log('README.md: the configuration reference was rewritten from src/settings.ts');
}
