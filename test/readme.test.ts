/**
 * The README's links within itself lead somewhere: every `(#anchor)` is the GitHub anchor of one
 * of its headings, so a section renamed or moved does not leave dead links behind.
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT } from './helpers/processes.ts';

/** GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens. */
const anchorOf = (heading: string): string =>
  heading
    .trim()
    .toLowerCase()
    .replace(/[^\p{L}\p{N} _-]/gu, '')
    .replace(/ /g, '-');

describe('the README', () => {
  it('links only to headings it has', () => {
    const readme = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8').replace(/```[\s\S]*?```/g, '');
    const anchors = new Set([...readme.matchAll(/^#{1,6} (.+)$/gm)].map((m) => anchorOf(m[1]!)));
    const links = [...readme.matchAll(/\]\(#([^)]+)\)/g)].map((m) => m[1]!);
    expect(links.length).toBeGreaterThan(10);
    expect([...new Set(links)].filter((link) => !anchors.has(link))).toEqual([]);
  });
});

describe('the README contents line', () => {
  it('lists every section', () => {
    const readme = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8').replace(/```[\s\S]*?```/g, '');
    const contents = readme.split('\n').find((line) => line.startsWith('**Contents.**')) ?? '';
    const linked = new Set([...contents.matchAll(/\]\(#([^)]+)\)/g)].map((m) => m[1]!));
    const sections = [...readme.matchAll(/^## (.+)$/gm)].map((m) => anchorOf(m[1]!));
    expect(sections.filter((anchor) => !linked.has(anchor))).toEqual([]);
  });
});
