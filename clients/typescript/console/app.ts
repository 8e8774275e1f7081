// The live console `fanfare serve` serves at `/`: topics (admin API), a live tail of one topic
// through the TypeScript client, a publish box, and node figures from /metrics as small charts.
// Built into net/assets/console/app.js by `npm run build:console` (committed: the Rust build
// needs no Node).

import { FanfareClient, type Subscription } from '../src/index.js';

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const TOKEN_KEY = 'fanfare-console-token';
const TAIL_LINES_MAX = 500;
const CHART_POINTS = 60;

let token = sessionStorage.getItem(TOKEN_KEY) ?? '';
const wsUrl = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/v1/ws`;
const client = new FanfareClient({ url: wsUrl, getToken: async () => token || null });
client.on('state', (s) => {
  const el = $('conn');
  el.textContent = s;
  el.className = s;
});
client.on('error', (e) => {
  if (e.code === 'Unauthorized' || e.code === 'TokenExpired') needToken();
  note(`error: ${e.code}: ${e.message}`, 'disc');
});
client.connect();

function needToken(): void {
  $('auth').classList.add('shown');
}

$('auth').addEventListener('submit', (ev) => {
  ev.preventDefault();
  token = $<HTMLInputElement>('token').value.trim();
  sessionStorage.setItem(TOKEN_KEY, token);
  $('auth').classList.remove('shown');
  void refreshTopics();
});

async function get(path: string): Promise<Response> {
  const headers: Record<string, string> = {};
  if (token) headers.authorization = `Bearer ${token}`;
  return fetch(path, { headers });
}

function splitTopic(s: string): [string, string] | null {
  const i = s.indexOf('/');
  return i > 0 && i < s.length - 1 ? [s.slice(0, i), s.slice(i + 1)] : null;
}

// ------------------------------------------------------------------ topics

interface TopicRow {
  namespace: string;
  topic: string;
  epoch: number;
  last_seq: number;
  subscribers: number;
}

async function refreshTopics(): Promise<void> {
  const err = $('topics-error');
  try {
    const r = await get('/v1/admin/topics?limit=200');
    if (r.status === 401 || r.status === 403) {
      needToken();
      err.textContent = r.status === 401 ? 'a token is needed' : 'the token lacks the admin right';
      return;
    }
    if (!r.ok) {
      err.textContent = `topics: HTTP ${r.status}`;
      return;
    }
    err.textContent = '';
    const { topics } = (await r.json()) as { topics: TopicRow[] };
    const body = $('topics');
    body.replaceChildren(
      ...topics.map((t) => {
        const tr = document.createElement('tr');
        const name = `${t.namespace}/${t.topic}`;
        for (const v of [name, String(t.epoch), String(t.last_seq), String(t.subscribers)]) {
          const td = document.createElement('td');
          td.textContent = v;
          tr.append(td);
        }
        tr.dataset.topic = name;
        tr.addEventListener('click', () => {
          $<HTMLInputElement>('watch-topic').value = name;
          $<HTMLInputElement>('pub-topic').value = name;
          tail(name);
        });
        return tr;
      }),
    );
  } catch (e) {
    err.textContent = `topics: ${String(e)}`;
  }
}

// ------------------------------------------------------------------ live tail

let watching: Subscription | null = null;

function note(text: string, cls = 'note'): void {
  const box = $('tail');
  const line = document.createElement('div');
  line.className = cls;
  line.textContent = text;
  box.append(line);
  while (box.childElementCount > TAIL_LINES_MAX) box.firstElementChild?.remove();
  box.scrollTop = box.scrollHeight;
}

function tail(name: string): void {
  const parts = splitTopic(name);
  if (!parts) return note(`not namespace/topic: ${name}`, 'disc');
  watching?.unsubscribe();
  $('tail').replaceChildren();
  const sub = client.subscribe(parts[0], parts[1], { from: { kind: 'lastN', count: 20 } });
  watching = sub;
  sub.on('subscribed', (p) => note(`${p.resumed ? 'resumed' : 'tailing'} ${name} at ${p.epoch}-${p.nextSeq}`));
  sub.on('message', (m) => {
    const line = document.createElement('div');
    const pos = document.createElement('span');
    pos.className = 'pos';
    pos.textContent = `${m.epoch}-${m.seq}`;
    line.append(pos, new TextDecoder().decode(m.data));
    line.dataset.seq = String(m.seq);
    const box = $('tail');
    box.append(line);
    while (box.childElementCount > TAIL_LINES_MAX) box.firstElementChild?.remove();
    box.scrollTop = box.scrollHeight;
  });
  sub.on('discontinuity', (d) =>
    note(`discontinuity: missed after ${d.lastEpoch}-${d.lastSeq}, continuing at ${d.newEpoch}-${d.newSeq}`, 'disc'),
  );
  sub.on('error', (e) => note(`subscription ended: ${e.code}: ${e.message}`, 'disc'));
}

$('watch').addEventListener('submit', (ev) => {
  ev.preventDefault();
  tail($<HTMLInputElement>('watch-topic').value.trim());
});

$('publish').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const out = $('pub-result');
  const parts = splitTopic($<HTMLInputElement>('pub-topic').value.trim());
  if (!parts) {
    out.textContent = 'topic must be namespace/topic';
    return;
  }
  const text = $<HTMLInputElement>('pub-text').value;
  client.publish(parts[0], parts[1], text).then(
    (p) => {
      out.className = '';
      out.textContent = `published at ${p.epoch}-${p.seq}`;
      void refreshTopics();
    },
    (e: unknown) => {
      out.className = 'error';
      out.textContent = `refused: ${String(e)}`;
    },
  );
});

// ------------------------------------------------------------------ node figures

/** Sums a counter over shards in Prometheus text. */
function metric(text: string, name: string): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (line.startsWith(`${name}{`)) sum += Number(line.slice(line.lastIndexOf(' ') + 1)) || 0;
  }
  return sum;
}

class Chart {
  points: number[] = [];
  constructor(private canvas: HTMLCanvasElement) {}
  push(v: number): void {
    this.points.push(v);
    if (this.points.length > CHART_POINTS) this.points.shift();
    const ctx = this.canvas.getContext('2d');
    if (!ctx) return;
    const { width: w, height: h } = this.canvas;
    ctx.clearRect(0, 0, w, h);
    const max = Math.max(1, ...this.points);
    ctx.strokeStyle = '#4fc3f7';
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    this.points.forEach((p, i) => {
      const x = (i / (CHART_POINTS - 1)) * (w - 2) + 1;
      const y = h - 2 - (p / max) * (h - 4);
      if (i === 0) ctx.moveTo(x, y);
      else ctx.lineTo(x, y);
    });
    ctx.stroke();
  }
}

const rateChart = new Chart($<HTMLCanvasElement>('rate-chart'));
const connsChart = new Chart($<HTMLCanvasElement>('conns-chart'));
let last: { at: number; deliveries: number } | null = null;

async function refreshFigures(): Promise<void> {
  try {
    const text = await (await fetch('/metrics')).text();
    const now = performance.now();
    const deliveries = metric(text, 'fanfare_net_deliveries_total');
    const conns = metric(text, 'fanfare_net_connections_open');
    if (last) {
      const rate = Math.max(0, ((deliveries - last.deliveries) * 1000) / (now - last.at));
      $('rate').textContent = Math.round(rate).toLocaleString();
      rateChart.push(rate);
    }
    last = { at: now, deliveries };
    $('conns').textContent = conns.toLocaleString();
    connsChart.push(conns);
  } catch {
    /* the node is restarting: the next tick tries again */
  }
}

void refreshTopics();
void refreshFigures();
setInterval(() => void refreshFigures(), 1000);
setInterval(() => void refreshTopics(), 2000);
