// A real third-party WeChat Pay v3 client, written elsewhere, against the wxgate simulator:
// the npm package wechatpay-axios-plugin, in public-key and in certificate mode.
'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const http = require('node:http');
const path = require('node:path');
const crypto = require('node:crypto');
const zlib = require('node:zlib');
const { Wechatpay, Rsa, Formatter, Aes: { AesGcm } } = require('wechatpay-axios-plugin');

const BIN = process.env.WXGATE_BIN || path.join(__dirname, '..', '..', 'target', 'debug', 'wxgate');

let sim;
let base;

before(async () => {
  sim = spawn(BIN, ['sim', '--listen', '127.0.0.1:0', '--time-scale', '10000', '--refund-settle-secs', '1'], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  base = await new Promise((resolve, reject) => {
    let out = '';
    sim.on('exit', (code) => reject(new Error(`simulator exited with ${code}`)));
    sim.stdout.on('data', (chunk) => {
      out += chunk;
      const m = out.match(/listening on (http:\/\/[0-9.:]+)/);
      if (m) resolve(m[1]);
    });
  });
});

after(() => {
  if (sim) sim.kill('SIGTERM');
});

async function json(method, url, body) {
  const res = await fetch(url, {
    method,
    headers: { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

// A notify_url on loopback that collects callbacks and acknowledges with 204.
function receiver() {
  const queue = [];
  const waiting = [];
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const cb = { headers: req.headers, body: Buffer.concat(chunks).toString('utf8') };
      res.writeHead(204).end();
      const w = waiting.shift();
      if (w) w(cb); else queue.push(cb);
    });
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      resolve({
        url: `http://127.0.0.1:${server.address().port}/notify`,
        next: () => (queue.length ? Promise.resolve(queue.shift()) : new Promise((r) => waiting.push(r))),
        close: () => { server.closeAllConnections(); server.close(); },
      });
    });
  });
}

for (const signing of ['public_key', 'certificate']) {
  test(`wechatpay-axios-plugin against the simulator in ${signing} mode`, async () => {
    const { status, body: bundle } = await json('POST', `${base}/sim/merchants`, { signing });
    assert.equal(status, 201);
    assert.deepEqual(Object.keys(bundle).sort(), [
      'apiv3_key', 'appid', 'mchid', 'merchant_private_key', 'merchant_serial_no', 'platform_certificate',
      'platform_public_key', 'platform_public_key_id', 'platform_serial_no',
    ]);
    const [serial, platformKey] = signing === 'public_key'
      ? [bundle.platform_public_key_id, bundle.platform_public_key]
      : [bundle.platform_serial_no, bundle.platform_certificate];
    const certs = { [serial]: platformKey };
    const wxpay = new Wechatpay({
      baseURL: `${base}/`,
      mchid: bundle.mchid,
      serial: bundle.merchant_serial_no,
      privateKey: bundle.merchant_private_key,
      certs,
    });
    const notify = await receiver();
    try {
      await scenario(bundle, signing, serial, platformKey, certs, wxpay, notify);
    } finally {
      notify.close();
    }
  });
}

async function scenario(bundle, signing, serial, platformKey, certs, wxpay, notify) {
    const mchid = bundle.mchid;
    const outTradeNo = `ax_${signing === "certificate" ? "c" : "p"}_${Date.now()}`;

    // Native prepay: a verified answer with the code.
    const prepay = await wxpay.v3.pay.transactions.native.post({
      appid: bundle.appid, mchid, description: 'compat', out_trade_no: outTradeNo,
      notify_url: notify.url, amount: { total: 100, currency: 'CNY' },
    });
    assert.equal(prepay.status, 200);
    assert.match(prepay.data.code_url, /^weixin:\/\/wxpay\/bizpayurl\?pr=/);
    assert.equal(prepay.headers['wechatpay-serial'], serial);

    // Query by out_trade_no.
    const q1 = await wxpay.v3.pay.transactions.outTradeNo._out_trade_no_.get({ params: { mchid }, out_trade_no: outTradeNo });
    assert.equal(q1.data.trade_state, 'NOTPAY');

    // The simulated payer pays; the callback is verified and decrypted with the package's helpers.
    const paid = await json('POST', `${base}/sim/payer/pay`, { code_url: prepay.data.code_url });
    assert.equal(paid.status, 200);
    const cb = await notify.next();
    const h = cb.headers;
    assert.equal(h['wechatpay-serial'], serial);
    assert.equal(h['wechatpay-signature-type'], 'WECHATPAY2-SHA256-RSA2048');
    assert.ok(Rsa.verify(Formatter.response(h['wechatpay-timestamp'], h['wechatpay-nonce'], cb.body), h['wechatpay-signature'], Rsa.from(platformKey, Rsa.KEY_TYPE_PUBLIC)));
    const envelope = JSON.parse(cb.body);
    assert.equal(envelope.event_type, 'TRANSACTION.SUCCESS');
    const r = envelope.resource;
    const tx = JSON.parse(AesGcm.decrypt(r.ciphertext, bundle.apiv3_key, r.nonce, r.associated_data));
    assert.equal(tx.out_trade_no, outTradeNo);
    assert.equal(tx.trade_state, 'SUCCESS');
    assert.equal(tx.amount.total, 100);
    assert.match(tx.transaction_id, /^\d{28}$/);

    // Query by transaction_id.
    const q2 = await wxpay.v3.pay.transactions.id._transaction_id_.get({ params: { mchid }, transaction_id: tx.transaction_id });
    assert.equal(q2.data.trade_state, 'SUCCESS');

    // Close another order: 204, verified.
    const other = `${outTradeNo}_c`;
    await wxpay.v3.pay.transactions.native.post({
      appid: bundle.appid, mchid, description: 'compat close', out_trade_no: other,
      notify_url: notify.url, amount: { total: 1, currency: 'CNY' },
    });
    const closed = await wxpay.v3.pay.transactions.outTradeNo._out_trade_no_.close.post({ mchid }, { out_trade_no: other });
    assert.equal(closed.status, 204);
    assert.equal(closed.data, '');

    // Refund and refund query; the refund callback arrives too.
    const outRefundNo = `${outTradeNo}_r`;
    const refund = await wxpay.v3.refund.domestic.refunds.post({
      out_trade_no: outTradeNo, out_refund_no: outRefundNo, amount: { refund: 40, total: 100, currency: 'CNY' },
    });
    assert.equal(refund.data.status, 'PROCESSING');
    const rcb = await notify.next();
    const rres = JSON.parse(rcb.body).resource;
    assert.equal(JSON.parse(AesGcm.decrypt(rres.ciphertext, bundle.apiv3_key, rres.nonce, rres.associated_data)).refund_status, 'SUCCESS');
    const rq = await wxpay.v3.refund.domestic.refunds._out_refund_no_.get({ out_refund_no: outRefundNo });
    assert.equal(rq.data.status, 'SUCCESS');
    assert.equal(rq.data.amount.refund, 40);

    // Trade bill: today's exists from 09:00 tomorrow (the simulator's clock, moved there);
    // apply, download (unsigned), check the hash over the uncompressed file.
    const today = (await json('GET', `${base}/sim/clock`)).body.now.slice(0, 10);
    await assert.rejects(
      wxpay.v3.bill.tradebill.get({ params: { bill_date: today, bill_type: 'ALL' } }),
      (e) => e.response.status === 400 && e.response.data.code === 'STATEMENT_CREATING',
    );
    assert.equal((await json('POST', `${base}/sim/clock`, { advance_secs: 33 * 3600 })).status, 200);
    const bill = await wxpay.v3.bill.tradebill.get({ params: { bill_date: today, bill_type: 'ALL', tar_type: 'GZIP' } });
    assert.equal(bill.data.hash_type, 'SHA1');
    const token = new URL(bill.data.download_url).searchParams.get('token');
    const file = await wxpay.v3.billdownload.file.get({ params: { token }, responseType: 'arraybuffer' });
    assert.equal(file.headers['content-type'], 'application/x-gzip');
    const plain = zlib.gunzipSync(Buffer.from(file.data));
    assert.equal(crypto.createHash('sha1').update(plain).digest('hex'), bill.data.hash_value);
    const rows = Formatter.castCsvBill(plain);
    assert.ok(rows.rows.some((row) => Object.values(row).includes(outTradeNo)), 'the bill lists the order');

    // A tampered request: signed over one body, sent with another.
    const nonce = Formatter.nonce();
    const ts = Formatter.timestamp();
    const signedBody = JSON.stringify({ mchid });
    const signature = Rsa.sign(Formatter.request('POST', `/v3/pay/transactions/out-trade-no/${outTradeNo}/close`, ts, nonce, signedBody), Rsa.from(bundle.merchant_private_key));
    const tampered = await fetch(`${base}/v3/pay/transactions/out-trade-no/${outTradeNo}/close`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        authorization: Formatter.authorization(mchid, nonce, signature, ts, bundle.merchant_serial_no),
      },
      body: JSON.stringify({ mchid: `${mchid}0` }),
    });
    assert.equal(tampered.status, 401);
    assert.equal((await tampered.json()).code, 'SIGN_ERROR');

    // The plugin itself refuses an answer signed by a key it does not trust.
    const stranger = new Wechatpay({
      baseURL: `${base}/`, mchid, serial: bundle.merchant_serial_no, privateKey: bundle.merchant_private_key,
      certs: { [serial]: crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey },
    });
    await assert.rejects(
      stranger.v3.pay.transactions.outTradeNo._out_trade_no_.get({ params: { mchid }, out_trade_no: outTradeNo }),
      (err) => /EV3_RES_HEADER_SIGNATURE_DIGEST|signature/i.test(String(err.code || err.message)),
    );
}
