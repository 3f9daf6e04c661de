// What the browser tests and the docs' screenshots share: a phone to browse as, and a fresh
// `wxgate demo` (gateway + SQLite + simulator) in a temporary folder.
'use strict';

const { spawn } = require('node:child_process');
const path = require('node:path');

const BIN = process.env.WXGATE_BIN || path.join(__dirname, '..', '..', 'target', 'debug', 'wxgate');

const PHONE = {
  viewport: { width: 390, height: 844 },
  userAgent:
    'Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1',
  isMobile: true,
  hasTouch: true,
};

// Starts `wxgate demo` with its data in `data`: the process and a promise of its base URL.
function startDemo(data) {
  const demo = spawn(BIN, ['demo', '--data', data, '--listen', '127.0.0.1:0'], {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, RUST_LOG: 'warn' },
  });
  const base = new Promise((resolve, reject) => {
    let out = '';
    demo.on('exit', (code) => reject(new Error(`wxgate demo exited with ${code}`)));
    demo.stdout.on('data', (chunk) => {
      out += chunk;
      const m = out.match(/wxgate demo on (http:\/\/[0-9.:]+)/);
      if (m) resolve(m[1]);
    });
  });
  return { demo, base };
}

module.exports = { PHONE, startDemo };
