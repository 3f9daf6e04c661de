// Worldline Connect's official Node.js SDK (npm connect-sdk-nodejs), unchanged, against the
// Connect front door of `wxgate demo`: it signs every request with v1HMAC; WeChat Pay (product
// 863) payments of each integration type, the third-party status, the payment, and a hosted
// checkout, paid through the simulator.
'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const connectSdk = require('connect-sdk-nodejs');
const { startDemo, stopDemo } = require('../demo');

let demo;
let data;
let base;
let info;

before(async () => {
  data = fs.mkdtempSync(path.join(os.tmpdir(), 'wxgate-connect-'));
  const started = startDemo(data);
  demo = started.demo;
  base = await started.base;
  info = JSON.parse(fs.readFileSync(path.join(data, 'demo.json'), 'utf8'));
});

after(async () => {
  await stopDemo(demo);
  if (data) fs.rmSync(data, { recursive: true, force: true });
});

function client() {
  const door = info.compat.connect;
  const endpoint = new URL(door.api_endpoint);
  return {
    merchant: door.merchant_id,
    sdk: connectSdk.init({
      host: endpoint.hostname,
      port: Number(endpoint.port),
      scheme: 'http',
      apiKeyId: door.api_key_id,
      secretApiKey: door.secret_api_key,
      integrator: 'wxgate compat test',
      enableLogging: false,
    }),
  };
}

function paymentRequest(integrationType, openId) {
  return {
    order: {
      amountOfMoney: { amount: 2980, currencyCode: 'CNY' },
      customer: { billingAddress: { countryCode: 'CN' }, locale: 'zh_CN' },
      references: { merchantReference: `sdk${Date.now()}${integrationType.length}` },
    },
    fraudFields: { customerIpAddress: '203.0.113.9' },
    redirectPaymentMethodSpecificInput: {
      paymentProductId: 863,
      paymentProduct863SpecificInput: openId ? { integrationType, openId } : { integrationType },
      returnUrl: `${base}/health`,
    },
  };
}

async function wxgate(p) {
  const res = await fetch(base + p, { headers: { authorization: `Bearer ${info.api_key}` } });
  return res.json();
}

test('the official Connect SDK creates, polls and reads a WeChat Pay payment', async () => {
  const { sdk, merchant } = client();
  const created = await sdk.v1.payments.create(merchant, paymentRequest('desktopQRCode'), null);
  assert.equal(created.status, 201, JSON.stringify(created.body));
  const action = created.body.merchantAction;
  assert.equal(action.actionType, 'SHOW_FORM');
  assert.deepEqual(action.showData.map((d) => d.key), ['QRCODE', 'WECHAT_PAYMENTID']);
  assert.ok(Buffer.from(action.showData[0].value, 'base64').subarray(1, 4).toString() === 'PNG');
  const id = created.body.payment.id;
  assert.equal(created.body.payment.status, 'REDIRECTED');

  const waiting = await sdk.v1.payments.thirdPartyStatus(merchant, id, null);
  assert.equal(waiting.body.thirdPartyStatus, 'WAITING');
  // The shopper scans and pays (the QR's data, through wxgate's own API).
  const payment = await wxgate(`/v1/payments/${id}`);
  const paid = await fetch(`${base}/sim/payer/pay`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ code_url: payment.next_action.display_qr_code.data }),
  });
  assert.equal(paid.status, 200);
  let status;
  for (let i = 0; i < 200; i += 1) {
    status = await sdk.v1.payments.thirdPartyStatus(merchant, id, null);
    if (status.body.thirdPartyStatus === 'COMPLETED') break;
  }
  assert.equal(status.body.thirdPartyStatus, 'COMPLETED');
  const got = await sdk.v1.payments.get(merchant, id, null);
  assert.equal(got.status, 200);
  assert.equal(got.body.status, 'CAPTURED');
  assert.equal(got.body.statusOutput.statusCategory, 'COMPLETED');
});

test('each integration type answers its documented show data through the SDK', async () => {
  const { sdk, merchant } = client();
  const cases = [
    ['urlIntent', null, ['URLINTENT', 'WECHAT_PAYMENTID']],
    ['nativeInApp', null, ['WECHAT_SIGNATURE', 'SIGNATURE_NONCE', 'WECHAT_PAYMENTID']],
    ['javaScriptAPI', info.sandbox_openid, ['appId', 'nonceStr', 'packageSign', 'paySign', 'prepayId', 'timeStamp']],
  ];
  for (const [type, openId, keys] of cases) {
    const created = await sdk.v1.payments.create(merchant, paymentRequest(type, openId), null);
    assert.equal(created.status, 201, `${type}: ${JSON.stringify(created.body)}`);
    assert.deepEqual(created.body.merchantAction.showData.map((d) => d.key), keys, type);
  }
  // A refusal comes back in the SDK's error shape.
  const bad = paymentRequest('desktopQRCode');
  delete bad.fraudFields;
  bad.fraudFields = {};
  const refused = await sdk.v1.payments.create(merchant, bad, null);
  assert.equal(refused.status, 400);
  assert.equal(refused.body.errors[0].propertyName, 'fraudFields.customerIpAddress');
});

test('a hosted checkout through the SDK', async () => {
  const { sdk, merchant } = client();
  const created = await sdk.v1.hostedcheckouts.create(merchant, {
    order: { amountOfMoney: { amount: 1200, currencyCode: 'CNY' } },
    hostedCheckoutSpecificInput: { returnUrl: `${base}/health`, locale: 'en_GB' },
  }, null);
  assert.equal(created.status, 201, JSON.stringify(created.body));
  assert.ok(created.body.partialRedirectUrl.includes('/checkout/'));
  const got = await sdk.v1.hostedcheckouts.get(merchant, created.body.hostedCheckoutId, null);
  assert.equal(got.body.status, 'IN_PROGRESS');
});
