// Pictures of the hosted checkout for docs/: desktop and phone, in English and Chinese, taken
// in headless Chromium against a fresh `wxgate demo`. Run after `cargo build -p wxgate`:
//   node tests/e2e/doc-screenshots.js
// It writes docs/checkout-{desktop,phone}-{en,zh}.png. Not a test: tests/e2e/checkout.test.js
// checks the pages; this only renders them with a shop's real-looking order.
'use strict';

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { chromium } = require('playwright-core');
const { PHONE, startDemo, stopDemo } = require('../demo');

const ROOT = path.join(__dirname, '..', '..');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const DOCS = path.join(ROOT, 'docs');
const DESKTOP = { viewport: { width: 1280, height: 800 } };
const ORDERS = {
  en: { description: 'Tieguanyin oolong tea, 250 g', amount: 12850 },
  zh: { description: '安溪铁观音 250 克', amount: 12850 },
};

async function hostedPayment(base, key, lang) {
  const res = await fetch(`${base}/v1/payments`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({
      ...ORDERS[lang],
      currency: 'CNY',
      merchant_order_id: `tea-${lang}-${Date.now()}`,
      integration: 'hosted',
      return_url: 'https://shop.example/thanks',
    }),
  });
  const body = await res.json();
  if (res.status !== 201) throw new Error(`create answered ${res.status}: ${JSON.stringify(body)}`);
  return body.hosted_url;
}

async function shoot(browser, url, device, lang, file) {
  const locale = lang === 'zh' ? 'zh-CN' : 'en-US';
  const context = await browser.newContext({ ...device, locale });
  const page = await context.newPage();
  await page.goto(url);
  await page.locator(device === PHONE ? '#pay' : '#qr svg').waitFor({ state: 'visible' });
  await page.screenshot({ path: path.join(DOCS, file) });
  await context.close();
  console.log(`wrote docs/${file}`);
}

async function main() {
  const data = fs.mkdtempSync(path.join(os.tmpdir(), 'wxgate-shots-'));
  const { demo, base } = startDemo(data);
  let browser;
  try {
    const url = await base;
    const key = JSON.parse(fs.readFileSync(path.join(data, 'demo.json'), 'utf8')).api_key;
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run'],
    });
    for (const lang of ['en', 'zh']) {
      // A fresh payment per page: a phone's visit starts an H5 attempt of its own.
      await shoot(browser, await hostedPayment(url, key, lang), DESKTOP, lang, `checkout-desktop-${lang}.png`);
      await shoot(browser, await hostedPayment(url, key, lang), PHONE, lang, `checkout-phone-${lang}.png`);
    }
  } finally {
    if (browser) await browser.close();
    await stopDemo(demo);
    fs.rmSync(data, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
