// What the Node tests (tests/compat, tests/e2e) and the docs' screenshots share: a fresh
// `wxgate demo` (gateway + SQLite + simulator) started and stopped, and a phone to browse as.
// Node built-ins only, so each package can require it.
'use strict';

const { spawn } = require('node:child_process');
const path = require('node:path');

const BIN = process.env.WXGATE_BIN || path.join(__dirname, '..', 'target', 'debug', 'wxgate');

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

// Stops a demo started by startDemo and waits until it has exited: it saves the simulator's
// state as it stops, so its folder may be removed only then.
async function stopDemo(demo) {
  if (!demo || demo.exitCode !== null) return;
  const exited = new Promise((resolve) => demo.once('exit', resolve));
  demo.kill('SIGTERM');
  await exited;
}

module.exports = { PHONE, startDemo, stopDemo };
