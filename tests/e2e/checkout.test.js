// The hosted checkout in a real browser: headless Chromium (Debian's /usr/bin/chromium) driven
// by playwright-core, against `wxgate demo` (gateway + SQLite + simulator in one process).
// Screenshots of each page state go to tests/e2e/screenshots/.
'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { chromium } = require('playwright-core');
const { PHONE, startDemo, stopDemo } = require('../demo');

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const SHOTS = path.join(__dirname, 'screenshots');

let demo;
let data;
let base;
let key;
let browser;

before(async () => {
  data = fs.mkdtempSync(path.join(os.tmpdir(), 'wxgate-e2e-'));
  fs.mkdirSync(SHOTS, { recursive: true });
  const started = startDemo(data);
  demo = started.demo;
  base = await started.base;
  key = JSON.parse(fs.readFileSync(path.join(data, 'demo.json'), 'utf8')).api_key;
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
  });
});

after(async () => {
  if (browser) await browser.close();
  await stopDemo(demo);
  if (data) fs.rmSync(data, { recursive: true, force: true });
});

async function api(method, p, body) {
  const res = await fetch(base + p, {
    method,
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, body: await res.json() };
}

let orders = 0;
async function hostedPayment(extra = {}) {
  orders += 1;
  const { status, body } = await api('POST', '/v1/payments', {
    amount: 1999,
    currency: 'CNY',
    merchant_order_id: `e2e-${Date.now()}-${orders}`,
    description: 'Blue mug <b>&</b>',
    integration: 'hosted',
    // Pages of the demo itself stand in for the shop's.
    return_url: `${base}/health?paid=${orders}`,
    cancel_url: `${base}/health?cancelled=${orders}`,
    ...extra,
  });
  assert.equal(status, 201, JSON.stringify(body));
  assert.equal(body.next_action.type, 'redirect_to_url');
  return body;
}

async function simPay(credential) {
  const res = await fetch(`${base}/sim/payer/pay`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(credential),
  });
  assert.equal(res.status, 200, await res.text());
}

test('desktop: the QR code is shown and the page goes to return_url once paid', async () => {
  const payment = await hostedPayment();
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, locale: 'en-US' });
  const page = await context.newPage();
  await page.goto(payment.hosted_url);
  const qr = page.locator('#qr');
  await qr.waitFor({ state: 'visible' });
  assert.ok(await qr.locator('svg').isVisible());
  const codeUrl = await qr.getAttribute('data-code-url');
  assert.match(codeUrl, /^weixin:\/\/wxpay\/bizpayurl\?pr=/);
  const text = await page.textContent('body');
  assert.ok(text.includes('¥19.99'), text);
  assert.ok(text.includes('Blue mug <b>&</b>'), 'merchant text shown as text, not markup');
  assert.equal(await page.locator('b').count(), 0);
  await page.screenshot({ path: path.join(SHOTS, 'desktop-qr.png') });
  await simPay({ code_url: codeUrl });
  await page.waitForURL(payment.return_url, { timeout: 20000 });
  const after = await api('GET', `/v1/payments/${payment.id}`);
  assert.equal(after.body.status, 'succeeded');
  await context.close();
});

test('phone: the button opens the H5 cashier, and paying there comes back to return_url', async () => {
  const payment = await hostedPayment();
  const context = await browser.newContext({ ...PHONE, locale: 'zh-CN' });
  const page = await context.newPage();
  await page.goto(payment.hosted_url);
  const button = page.locator('#pay');
  await button.waitFor({ state: 'visible' });
  assert.ok((await page.textContent('body')).includes('打开微信支付'));
  await page.screenshot({ path: path.join(SHOTS, 'phone-h5.png') });
  await button.click();
  // The simulator's H5 cashier stands in for WeChat's.
  await page.waitForURL(/\/cgi-bin\/mmpayweb-bin\/checkmweb/);
  await page.locator('#pay').click();
  await page.waitForURL(payment.return_url, { timeout: 20000 });
  const after = await api('GET', `/v1/payments/${payment.id}`);
  assert.equal(after.body.status, 'succeeded');
  await context.close();
});

test('inside WeChat: webpage authorization, then the JS API through WeixinJSBridge', async () => {
  const payment = await hostedPayment();
  const context = await browser.newContext({
    ...PHONE,
    userAgent: `${PHONE.userAgent} MicroMessenger/8.0.47(0x18002f2c) NetType/WIFI Language/zh_CN`,
    locale: 'zh-CN',
  });
  // The simulator's stand-in for the bridge WeChat's browser gives every page.
  const bridge = await (await fetch(`${base}/sim/jsbridge.js`)).text();
  await context.addInitScript({ content: bridge });
  const page = await context.newPage();
  const seen = [];
  page.on('request', (request) => seen.push(request.url()));
  await page.goto(payment.hosted_url);
  await page.waitForURL(payment.return_url, { timeout: 20000 });
  // The page went through webpage authorization, and the bridge paid at the simulator.
  assert.ok(seen.some((u) => u.includes('/connect/oauth2/authorize?')), seen.join('\n'));
  assert.ok(seen.some((u) => u.includes('/oauth?code=')), seen.join('\n'));
  assert.ok(seen.some((u) => u.endsWith('/sim/payer/pay')), seen.join('\n'));
  const after = await api('GET', `/v1/payments/${payment.id}`);
  assert.equal(after.body.status, 'succeeded');
  assert.equal(after.body.payer.openid.length, 28);
  await context.close();
});

test('cancel and expiry land on cancel_url; a bad token is a clear 404 page', async () => {
  const payment = await hostedPayment();
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, locale: 'en-US' });
  const page = await context.newPage();
  await page.goto(payment.hosted_url);
  await page.locator('#qr').waitFor({ state: 'visible' });
  await page.getByRole('button', { name: 'Cancel payment' }).click();
  await page.waitForURL(payment.cancel_url);
  assert.equal((await api('GET', `/v1/payments/${payment.id}`)).body.status, 'cancelled');

  // Cancelled through the API while the page is open: the page follows within a few polls.
  const other = await hostedPayment();
  await page.goto(other.hosted_url);
  await page.locator('#qr').waitFor({ state: 'visible' });
  const cancelled = await api('POST', `/v1/payments/${other.id}/cancel`);
  assert.equal(cancelled.status, 200);
  await page.waitForURL(other.cancel_url, { timeout: 20000 });

  // Without a cancel_url, a page that says the payment is closed.
  const plain = await hostedPayment({ cancel_url: undefined });
  await page.goto(plain.hosted_url);
  await page.getByRole('button', { name: 'Cancel payment' }).click();
  await page.waitForFunction(() => document.body.textContent.includes('Payment closed'));
  await page.screenshot({ path: path.join(SHOTS, 'closed.png') });

  const response = await page.goto(`${base}/checkout/cs_doesnotexist0000000000000`);
  assert.equal(response.status(), 404);
  assert.ok((await page.textContent('body')).includes('not valid'));
  await page.screenshot({ path: path.join(SHOTS, 'not-found.png') });
  await context.close();
});

test('a payment link paid twice makes two payments; opening it makes none', async () => {
  const { status, body: link } = await api('POST', '/v1/payment_links', {
    amount: 888,
    currency: 'CNY',
    description: 'Coffee',
    return_url: `${base}/health?link=1`,
  });
  assert.equal(status, 201, JSON.stringify(link));
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, locale: 'en-US' });
  const page = await context.newPage();
  const codes = [];
  for (let i = 0; i < 2; i += 1) {
    await page.goto(link.url);
    assert.ok((await page.textContent('body')).includes('¥8.88'));
    await page.getByRole('button', { name: 'Pay' }).click();
    await page.locator('#qr').waitFor({ state: 'visible' });
    assert.ok((await page.textContent('body')).includes('¥8.88'));
    codes.push(await page.locator('#qr').getAttribute('data-code-url'));
  }
  assert.notEqual(codes[0], codes[1]);
  await page.screenshot({ path: path.join(SHOTS, 'link-desktop.png') });
  await simPay({ code_url: codes[1] });
  await page.waitForURL(`${base}/health?link=1`, { timeout: 20000 });
  const made = await api('GET', `/v1/payment_links/${link.id}/payments`);
  assert.deepEqual(made.body.data.map((p) => p.status).sort(), ['pending', 'succeeded']);
  await context.close();
});

test('a link without a fixed amount asks for it, on a phone, and says when all is done', async () => {
  const { body: link } = await api('POST', '/v1/payment_links', {
    amount_min: 100,
    amount_max: 5000,
    currency: 'CNY',
    description: 'Tip jar',
  });
  const context = await browser.newContext({ ...PHONE, locale: 'en-US' });
  const page = await context.newPage();
  await page.goto(link.url);
  await page.screenshot({ path: path.join(SHOTS, 'phone-amount.png') });
  await page.fill('#amount', '12.50');
  await page.getByRole('button', { name: 'Continue' }).click();
  const button = page.locator('#pay');
  await button.waitFor({ state: 'visible' });
  assert.ok((await page.textContent('body')).includes('¥12.50'));
  await button.click();
  await page.waitForURL(/\/cgi-bin\/mmpayweb-bin\/checkmweb/);
  await page.locator('#pay').click();
  // No return_url: the checkout itself says the payment is complete.
  await page.waitForFunction(() => document.body.textContent.includes('Payment complete'), null, { timeout: 20000 });
  await page.screenshot({ path: path.join(SHOTS, 'phone-complete.png') });
  await context.close();
});

test('a payout: the payee confirms inside WeChat on the hosted confirmation page', async () => {
  const demoFile = JSON.parse(fs.readFileSync(path.join(data, 'demo.json'), 'utf8'));
  const { status, body: payout } = await api('POST', '/v1/payouts', {
    amount: 888,
    currency: 'CNY',
    openid: demoFile.sandbox_openid,
    remark: '活动奖励 <b>&</b>',
  });
  assert.equal(status, 201, JSON.stringify(payout));
  assert.equal(payout.status, 'awaiting_confirmation');
  const url = payout.confirmation.hosted_confirmation_url;

  // Outside WeChat the page says where to open it.
  const desktop = await browser.newContext({ viewport: { width: 1280, height: 800 }, locale: 'en-US' });
  const plain = await desktop.newPage();
  await plain.goto(url);
  const text = await plain.textContent('body');
  assert.ok(text.includes('Open this link in WeChat') && text.includes('¥8.88'), text);
  assert.ok(text.includes('活动奖励 <b>&</b>'), text);
  await plain.screenshot({ path: path.join(SHOTS, 'payout-desktop.png') });
  await desktop.close();

  // Inside WeChat: webpage authorization recognises the payee, then WeChat's confirmation.
  const context = await browser.newContext({
    ...PHONE,
    userAgent: `${PHONE.userAgent} MicroMessenger/8.0.47(0x18002f2c) NetType/WIFI Language/zh_CN`,
    locale: 'zh-CN',
  });
  const bridge = await (await fetch(`${base}/sim/jsbridge.js`)).text();
  await context.addInitScript({ content: bridge });
  const page = await context.newPage();
  const seen = [];
  page.on('request', (request) => seen.push(request.url()));
  await page.goto(url);
  await page.waitForFunction(() => document.body.textContent.includes('已收款'), null, { timeout: 20000 });
  await page.screenshot({ path: path.join(SHOTS, 'payout-received.png') });
  assert.ok(seen.some((u) => u.includes('/connect/oauth2/authorize?')), seen.join('\n'));
  assert.ok(seen.some((u) => u.endsWith('/sim/payee/confirm')), seen.join('\n'));
  const after = await api('GET', `/v1/payouts/${payout.id}`);
  assert.equal(after.body.status, 'succeeded');
  await context.close();

  // Someone else's WeChat is told the transfer is not theirs.
  const { body: other } = await api('POST', '/v1/payouts', {
    amount: 100, currency: 'CNY', openid: 'o-someone-else-0000000000000', remark: 'Not yours',
  });
  const stranger = await browser.newContext({
    ...PHONE,
    userAgent: `${PHONE.userAgent} MicroMessenger/8.0.47(0x18002f2c) NetType/WIFI Language/en`,
    locale: 'en-US',
  });
  await stranger.addInitScript({ content: bridge });
  const strangerPage = await stranger.newPage();
  const refused = await strangerPage.goto(other.confirmation.hosted_confirmation_url);
  assert.equal(refused.status(), 403);
  assert.ok((await strangerPage.textContent('body')).includes('another WeChat account'));
  await stranger.close();
});

// The 2Checkout door: an order placed over JSON-RPC with WE_CHAT_PAY redirects, through Href and
// avng8apitoken, to the hosted page; paid, the shopper lands on ReturnURL; cancelled, on CancelURL.
async function twoCheckout(method, params) {
  const door = JSON.parse(fs.readFileSync(path.join(data, 'demo.json'), 'utf8')).compat.two_checkout;
  const res = await fetch(door.base_url, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ jsonrpc: '2.0', method, params, id: 1 }),
  });
  return { door, answer: await res.json() };
}

async function twoCheckoutOrder(n) {
  const { door } = await twoCheckout('none', []);
  const date = new Date().toISOString().slice(0, 19).replace('T', ' ');
  const source = `${Buffer.byteLength(door.merchant_code)}${door.merchant_code}${Buffer.byteLength(date)}${date}`;
  const hash = require('node:crypto').createHmac('md5', door.secret_key).update(source).digest('hex');
  const { answer: login } = await twoCheckout('login', [door.merchant_code, date, hash]);
  assert.ok(login.result, JSON.stringify(login));
  const { answer: placed } = await twoCheckout('placeOrder', [login.result, {
    Currency: 'CNY', Country: 'cn', Language: 'en',
    Items: [{ Name: 'Green tea', Quantity: 1, IsDynamic: true, Tangible: false, Price: { Amount: 12.5, Type: 'CUSTOM' } }],
    BillingDetails: { FirstName: 'Li', LastName: 'Lei', Email: 'li@example.com', CountryCode: 'CN' },
    PaymentDetails: { Type: 'WE_CHAT_PAY', Currency: 'CNY', PaymentMethod: {
      ReturnURL: `${base}/health?twoco_paid=${n}`, CancelURL: `${base}/health?twoco_cancelled=${n}` } },
  }]);
  const order = placed.result;
  assert.equal(order.Status, 'PENDING', JSON.stringify(placed));
  const method = order.PaymentDetails.PaymentMethod;
  return { session: login.result, order, redirect: `${method.Href}?avng8apitoken=${method.avng8apitoken}` };
}

test('2Checkout door: WE_CHAT_PAY order redirected to the hosted page, paid or cancelled', async () => {
  const paid = await twoCheckoutOrder(1);
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, locale: 'en-US' });
  const page = await context.newPage();
  await page.goto(paid.redirect);
  const qr = page.locator('#qr');
  await qr.waitFor({ state: 'visible' });
  assert.ok((await page.textContent('body')).includes('¥12.50'));
  await simPay({ code_url: await qr.getAttribute('data-code-url') });
  await page.waitForURL(paid.order.PaymentDetails.PaymentMethod.ReturnURL, { timeout: 20000 });
  const { answer } = await twoCheckout('getOrder', [paid.session, paid.order.RefNo]);
  assert.equal(answer.result.Status, 'COMPLETE', JSON.stringify(answer));

  const cancelled = await twoCheckoutOrder(2);
  await page.goto(cancelled.redirect);
  await page.locator('#qr').waitFor({ state: 'visible' });
  await page.getByRole('button', { name: 'Cancel payment' }).click();
  await page.waitForURL(cancelled.order.PaymentDetails.PaymentMethod.CancelURL, { timeout: 20000 });
  const { answer: after } = await twoCheckout('getOrder', [cancelled.session, cancelled.order.RefNo]);
  assert.equal(after.result.Status, 'CANCELED', JSON.stringify(after));
  await context.close();
});

// The Connect door's hosted checkout: created with a v1HMAC-signed request, opened at
// partialRedirectUrl, paid; the shopper returns to returnUrl with RETURNMAC.
test('Connect door: a hosted checkout picks the integration by device and returns with RETURNMAC', async () => {
  const door = JSON.parse(fs.readFileSync(path.join(data, 'demo.json'), 'utf8')).compat.connect;
  const resource = `/v1/${door.merchant_id}/hostedcheckouts`;
  const date = new Date().toUTCString();
  const signed = `POST\napplication/json\n${date}\n${resource}\n`;
  const signature = require('node:crypto').createHmac('sha256', door.secret_api_key).update(signed).digest('base64');
  const res = await fetch(door.api_endpoint + resource, {
    method: 'POST',
    headers: { 'content-type': 'application/json', date, authorization: `GCS v1HMAC:${door.api_key_id}:${signature}` },
    body: JSON.stringify({ order: { amountOfMoney: { amount: 3300, currencyCode: 'CNY' } },
      hostedCheckoutSpecificInput: { returnUrl: `${base}/health?connect=1` } }),
  });
  const created = await res.json();
  assert.equal(res.status, 201, JSON.stringify(created));
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, locale: 'en-US' });
  const page = await context.newPage();
  await page.goto(`http://${created.partialRedirectUrl}`);
  const qr = page.locator('#qr');
  await qr.waitFor({ state: 'visible' });
  assert.ok((await page.textContent('body')).includes('¥33.00'));
  await simPay({ code_url: await qr.getAttribute('data-code-url') });
  await page.waitForURL(new RegExp(`connect=1&RETURNMAC=${created.RETURNMAC}`), { timeout: 20000 });
  await context.close();
});
