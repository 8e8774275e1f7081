// The built browser bundle in headless Chromium (Debian's, driven by playwright-core): a page
// on a localhost origin subscribes, publishes, and receives a message published by the test.

import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium, type BrowserContext } from 'playwright-core';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { Broker } from './broker.js';
import { distinctColors } from './png.js';

const here = dirname(fileURLToPath(import.meta.url));
const BUNDLE = resolve(here, '../dist/fanfare.browser.js');
const CHROMIUM = process.env.CHROMIUM_BIN ?? '/usr/bin/chromium';

const PAGE = `<!doctype html>
<meta charset="utf-8">
<title>fanfare test page</title>
<script type="module">
  import { FanfareClient } from '/fanfare.browser.js';
  const ws = new URLSearchParams(location.search).get('ws');
  window.received = [];
  window.states = [];
  const client = new FanfareClient({ url: ws });
  client.on('state', (s) => window.states.push(s));
  client.connect();
  const sub = client.subscribe('web', 'page');
  sub.on('subscribed', () => { window.subscribed = true; });
  sub.on('message', (m) => window.received.push({ seq: String(m.seq), text: new TextDecoder().decode(m.data) }));
  window.publish = async (text) => String((await client.publish('web', 'page', text)).seq);
</script>`;

let broker: Broker;
let server: http.Server;
let pageUrl: string;
let browser: BrowserContext;
let profile: string | undefined;

beforeAll(async () => {
  if (!existsSync(BUNDLE)) throw new Error(`no bundle at ${BUNDLE}: run \`npm run build\` first (\`npm test\` does)`);
  if (!existsSync(CHROMIUM)) {
    throw new Error(`no Chromium at ${CHROMIUM}: \`apt-get install chromium\` (or set CHROMIUM_BIN)`);
  }
  broker = await Broker.start();
  const bundle = readFileSync(BUNDLE);
  server = http.createServer((req, res) => {
    if (req.url?.startsWith('/fanfare.browser.js')) {
      res.writeHead(200, { 'content-type': 'text/javascript' }).end(bundle);
    } else {
      res.writeHead(200, { 'content-type': 'text/html' }).end(PAGE);
    }
  });
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
  const port = (server.address() as AddressInfo).port;
  pageUrl = `http://127.0.0.1:${port}/?ws=${encodeURIComponent(broker.ws)}`;
  // A fresh profile each run (playwright passes it as --user-data-dir).
  profile = mkdtempSync(join(tmpdir(), 'fanfare-chromium-'));
  browser = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
    ],
  });
});

afterAll(async () => {
  await browser?.close();
  if (profile) rmSync(profile, { recursive: true, force: true });
  await new Promise((ok) => (server ? server.close(ok) : ok(undefined)));
  await broker?.kill9();
});

it('a page subscribes, publishes, and receives what the test publishes', async () => {
  const page = await browser.newPage();
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(pageUrl);
  await page.waitForFunction(() => (window as unknown as { subscribed?: boolean }).subscribed === true, null, { timeout: 10_000 });
  await broker.post('web', 'page', 'from the test');
  const seq = await page.evaluate(() => (window as unknown as { publish: (t: string) => Promise<string> }).publish('from the page'));
  expect(seq).toBe('2');
  await page.waitForFunction(() => (window as unknown as { received: unknown[] }).received.length === 2, null, { timeout: 10_000 });
  const got = await page.evaluate(() => (window as unknown as { received: unknown[] }).received);
  expect(got).toEqual([
    { seq: '1', text: 'from the test' },
    { seq: '2', text: 'from the page' },
  ]);
  const states = await page.evaluate(() => (window as unknown as { states: string[] }).states);
  expect(states).toEqual(['connecting', 'connected']);
  expect(errors).toEqual([]);
});

it('follows the browser going offline and online', async () => {
  const page = await browser.newPage();
  await page.goto(pageUrl);
  await page.waitForFunction(() => (window as unknown as { subscribed?: boolean }).subscribed === true, null, { timeout: 10_000 });
  const states = () => page.evaluate(() => (window as unknown as { states: string[] }).states.slice());
  await browser.setOffline(true);
  await page.waitForFunction(() => (window as unknown as { states: string[] }).states.at(-1) === 'disconnected', null, { timeout: 10_000 });
  await browser.setOffline(false);
  await page.waitForFunction(() => (window as unknown as { states: string[] }).states.at(-1) === 'connected', null, { timeout: 10_000 });
  expect(await states()).toEqual(['connecting', 'connected', 'disconnected', 'connecting', 'connected']);
  // Still subscribed, and resumed where it was.
  await broker.post('web', 'page', 'after coming back online');
  await page.waitForFunction(
    () => (window as unknown as { received: { text: string }[] }).received.some((m) => m.text === 'after coming back online'),
    null,
    { timeout: 10_000 },
  );
  await page.close();
});

it('the console lists a topic, tails it live, publishes, and draws its figures', async () => {
  await broker.post('demo', 'console', 'first');
  const page = await browser.newPage();
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(m.text());
  });
  await page.goto(`${broker.http}/`);
  // The topic list (admin API) shows the topic; clicking it tails it from the last 20.
  const row = page.locator('tr[data-topic="demo/console"]');
  await row.waitFor({ timeout: 10_000 });
  await row.click();
  await page.locator('#tail div[data-seq="1"]').waitFor({ timeout: 10_000 });
  await broker.post('demo', 'console', 'second, published by the test');
  await page.locator('#tail div[data-seq="2"]').waitFor({ timeout: 10_000 });
  expect(await page.locator('#tail').innerText()).toContain('second, published by the test');
  // The publish box.
  await page.fill('#pub-text', 'from the console');
  await page.click('#publish button');
  await page.locator('#tail div[data-seq="3"]').waitFor({ timeout: 10_000 });
  expect(await page.locator('#pub-result').innerText()).toMatch(/published at \d+-3/);
  // Node figures from /metrics, drawn once a second.
  await page.waitForFunction(() => document.getElementById('rate')?.textContent !== '–', null, { timeout: 10_000 });
  expect(Number(await page.locator('#conns').innerText())).toBeGreaterThanOrEqual(1);
  const dir = resolve(here, '../test-results');
  mkdirSync(dir, { recursive: true });
  const shot = await page.screenshot({ path: join(dir, 'console.png'), fullPage: true });
  expect(distinctColors(shot)).toBeGreaterThan(20);
  expect(errors, errors.join('\n')).toEqual([]);
});
