// Streamed time-to-first-token added by a gateway in front of a paced upstream.
// Sequential requests on one keep-alive connection per target; direct and gateway interleaved
// in rounds so both see the same machine state. For every response it records the time to the
// first body byte, the time to the first SSE event with non-empty delta content (TTFT), the
// number of SSE events and the number of socket reads that carried them: a gateway that forwards
// chunks one by one shows about as many reads as the direct upstream, one that buffers far fewer.
//
// usage: node ttft.mjs --direct URL --gateway URL --direct-body FILE --gateway-body FILE
//          [--rounds 5] [--per-round 20] [--warmup 5] [--gateway-header 'Name: value']...
import http from 'node:http';
import fs from 'node:fs';

const args = process.argv.slice(2);
const opt = { rounds: 5, perRound: 20, warmup: 5, gwHeaders: {} };
for (let i = 0; i < args.length; i++) {
  const a = args[i];
  if (a === '--direct') opt.direct = args[++i];
  else if (a === '--gateway') opt.gateway = args[++i];
  else if (a === '--direct-body') opt.directBody = fs.readFileSync(args[++i]);
  else if (a === '--gateway-body') opt.gatewayBody = fs.readFileSync(args[++i]);
  else if (a === '--rounds') opt.rounds = +args[++i];
  else if (a === '--per-round') opt.perRound = +args[++i];
  else if (a === '--warmup') opt.warmup = +args[++i];
  else if (a === '--gateway-header') {
    const h = args[++i]; const k = h.indexOf(':');
    opt.gwHeaders[h.slice(0, k).trim().toLowerCase()] = h.slice(k + 1).trim();
  } else { console.error('unknown argument ' + a); process.exit(2); }
}
if (!opt.direct || !opt.gateway || !opt.directBody || !opt.gatewayBody) {
  console.error('--direct, --gateway, --direct-body and --gateway-body are required'); process.exit(2);
}

function hasContent(event) {
  for (const line of event.split('\n')) {
    if (!line.startsWith('data:')) continue;
    const data = line.slice(5).trim();
    if (data === '[DONE]') return false;
    try {
      const c = JSON.parse(data).choices;
      if (c && c.length && c[0].delta && c[0].delta.content) return true;
    } catch { /* a partial or non-JSON event carries no token */ }
  }
  return false;
}

function target(url, body, extra) {
  const u = new URL(url);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const headers = { 'content-type': 'application/json', 'content-length': body.length, ...extra };
  return () => new Promise((resolve) => {
    const t0 = process.hrtime.bigint();
    const ms = () => Number(process.hrtime.bigint() - t0) / 1e6;
    let ttfb = null, ttft = null, reads = 0, events = 0, buf = '';
    const req = http.request({ host: u.hostname, port: u.port, path: u.pathname, method: 'POST', agent, headers }, (res) => {
      res.setEncoding('utf8');
      res.on('data', (s) => {
        const now = ms();
        if (ttfb === null) ttfb = now;
        reads++;
        buf += s;
        let k;
        while ((k = buf.indexOf('\n\n')) >= 0) {
          const ev = buf.slice(0, k); buf = buf.slice(k + 2);
          if (!ev.trim()) continue;
          events++;
          if (ttft === null && hasContent(ev)) ttft = now;
        }
      });
      res.on('end', () => resolve({ ok: res.statusCode === 200 && ttft !== null, ttfb, ttft, reads, events, total: ms() }));
    });
    req.on('error', () => resolve({ ok: false }));
    req.end(body);
  });
}

const median = (a) => { const s = [...a].sort((x, y) => x - y); return s[Math.floor(s.length / 2)]; };
const p99 = (a) => { const s = [...a].sort((x, y) => x - y); return s[Math.min(s.length - 1, Math.floor(0.99 * s.length))]; };
const mean = (a) => a.reduce((x, y) => x + y, 0) / a.length;
const d = target(opt.direct, opt.directBody, {}), g = target(opt.gateway, opt.gatewayBody, opt.gwHeaders);
for (let i = 0; i < opt.warmup; i++) { await d(); await g(); }
const all = { direct: [], gateway: [] }, roundMed = { direct: [], gateway: [] };
let errors = 0;
for (let r = 0; r < opt.rounds; r++) {
  for (const [name, fn] of (r % 2 ? [['gateway', g], ['direct', d]] : [['direct', d], ['gateway', g]])) {
    const xs = [];
    for (let i = 0; i < opt.perRound; i++) { const x = await fn(); if (x.ok) xs.push(x); else errors++; }
    all[name].push(...xs); if (xs.length) roundMed[name].push(median(xs.map((x) => x.ttft)));
  }
}
const r3 = (x) => (x === undefined || x === null || Number.isNaN(x) ? null : +x.toFixed(3));
const out = { requests: all.direct.length + all.gateway.length, errors };
for (const name of ['direct', 'gateway']) {
  const xs = all[name];
  if (!xs.length) continue; // every request failed: the figures stay out
  out[`${name}_ttft_p50_ms`] = r3(median(roundMed[name]));
  out[`${name}_ttft_p99_ms`] = r3(p99(xs.map((x) => x.ttft)));
  out[`${name}_ttfb_p50_ms`] = r3(median(xs.map((x) => x.ttfb)));
  out[`${name}_events_mean`] = r3(mean(xs.map((x) => x.events)));
  out[`${name}_reads_mean`] = r3(mean(xs.map((x) => x.reads)));
  out[`${name}_total_p50_ms`] = r3(median(xs.map((x) => x.total)));
}
const diff = (a, b) => (a == null || b == null ? null : r3(a - b));
out.added_ttft_p50_ms = diff(out.gateway_ttft_p50_ms, out.direct_ttft_p50_ms);
out.added_ttft_p99_ms = diff(out.gateway_ttft_p99_ms, out.direct_ttft_p99_ms);
console.log(JSON.stringify(out));
