// MarketMux live page: the candle chart of one symbol. Plain JS, no dependencies.
//
// On a pick (a board row, an interval button, or `?chart=SYMBOL&interval=1m`
// in the link) the chart subscribes to that symbol's candles on the board's
// socket (app.js shares it), then reads the history with GET /candles; live updates and history
// meet by candle start (the copy with more ticks wins, so neither can undo
// the other). Drawing happens at most once per animation frame.
//
// `window.marketmuxCandles` holds what is drawn (symbol, interval, candles),
// for the console and for tests.
"use strict";
(() => {
  const INTERVALS = ["1s", "1m", "5m", "1h", "1d"];
  const MAX_BARS = 120;
  // Updates per second the chart asks for (`max_rate`): the open bar moves
  // smoothly at this rate, and the node still sends every closed candle once.
  const CANDLE_MAX_RATE = 10;
  const STORE_PICK = "marketmux.chart";
  const SYMBOL_RE = /^[A-Za-z0-9.:\-_/]{1,32}$/;

  const $ = (id) => document.getElementById(id);
  const canvas = $("candle-chart");
  if (!canvas || !window.marketmuxSocket) return;
  const ctx = canvas.getContext("2d");
  const css = getComputedStyle(document.documentElement);
  const UP = css.getPropertyValue("--up").trim() || "#26c281";
  const DOWN = css.getPropertyValue("--down").trim() || "#f0524f";
  const GRID = "#1e2a36";
  const LABEL = "#7d8b99";
  const dpr = Math.max(1, Math.min(3, window.devicePixelRatio || 1));

  /** What the chart shows. `candles`: oldest first, each with `t` (ms). */
  const chart = { symbol: null, interval: "1m", candles: [], loaded: false, draws: 0 };
  window.marketmuxCandles = chart;

  const socket = window.marketmuxSocket;
  /** The series this socket is subscribed to, as {symbol, interval}. */
  let following = null;
  /** Bumped on every pick: a late history answer for an old pick is dropped. */
  let pick = 0;
  let frameQueued = false;

  // ------------------------------------------------------------- the series
  function upsert(c) {
    const candle = {
      t: Date.parse(c.start), start: c.start, open: c.open, high: c.high, low: c.low,
      close: c.close, volume: c.volume, ticks: c.ticks, closed: c.closed,
    };
    const list = chart.candles;
    let i = list.length - 1;
    while (i >= 0 && list[i].t > candle.t) i--;
    if (i >= 0 && list[i].t === candle.t) {
      const old = list[i];
      // More ticks is newer; equal ticks: the closed copy is the final one.
      if (candle.ticks > old.ticks || (candle.ticks === old.ticks && candle.closed)) list[i] = candle;
    } else {
      list.splice(i + 1, 0, candle);
      if (list.length > MAX_BARS) list.splice(0, list.length - MAX_BARS);
    }
    schedule();
  }

  // ------------------------------------------------------------- the socket
  // The board's socket (app.js): it calls onOpen after each (re)connect and
  // hands over every candle message.
  function follow() {
    if (following) {
      socket.send({ action: "unsubscribe", candles: [following.interval], symbols: [following.symbol] });
      following = null;
    }
    if (!chart.symbol) return;
    if (socket.send({
      action: "subscribe", candles: [chart.interval], symbols: [chart.symbol], max_rate: CANDLE_MAX_RATE,
    })) {
      following = { symbol: chart.symbol, interval: chart.interval };
    }
  }

  socket.onOpen = () => {
    following = null;
    follow();
    // Updates missed while away: the history fills them in.
    if (chart.symbol) loadHistory(pick);
  };
  socket.onCandle = (m) => {
    if (m.symbol === chart.symbol && m.interval === chart.interval) upsert(m);
  };

  // ------------------------------------------------------------- picking
  function status(text) {
    $("chart-status").textContent = text || "";
  }

  async function loadHistory(my) {
    const { symbol, interval } = chart;
    try {
      const r = await fetch(`/candles/${encodeURIComponent(symbol)}?interval=${interval}&limit=${MAX_BARS}`);
      if (my !== pick) return;
      if (r.status === 404) {
        status("no ticks yet");
      } else if (!r.ok) {
        const body = await r.json().catch(() => ({}));
        status((body.error && body.error.message) || `history: HTTP ${r.status}`);
      } else {
        const body = await r.json();
        for (const c of body.candles) upsert(c);
        status("");
      }
    } catch (e) {
      if (my === pick) status("history unavailable");
    }
    if (my === pick) {
      chart.loaded = true;
      schedule();
    }
  }

  function select(symbol, interval) {
    const sym = String(symbol || "").trim().toUpperCase();
    if (!SYMBOL_RE.test(sym) || !INTERVALS.includes(interval)) return;
    if (sym === chart.symbol && interval === chart.interval) return;
    chart.symbol = sym;
    chart.interval = interval;
    chart.candles = [];
    chart.loaded = false;
    const my = ++pick;
    try { localStorage.setItem(STORE_PICK, JSON.stringify({ symbol: sym, interval })); } catch {}
    $("chart-symbol").textContent = sym;
    for (const b of document.querySelectorAll("#chart-intervals button")) {
      b.setAttribute("aria-checked", String(b.dataset.interval === interval));
    }
    for (const tr of document.querySelectorAll("#board tr[data-symbol]")) {
      tr.classList.toggle("charted", tr.dataset.symbol === sym);
    }
    status("loading…");
    // Live first, then history: an update between the two is kept either way.
    follow();
    loadHistory(my);
    schedule();
  }

  // ------------------------------------------------------------- drawing
  function schedule() {
    if (frameQueued) return;
    frameQueued = true;
    requestAnimationFrame(draw);
  }

  function fmt(p) {
    return p.toFixed(p >= 1 ? 2 : p >= 0.01 ? 4 : 6);
  }

  function timeLabel(t) {
    const d = new Date(t);
    const two = (n) => String(n).padStart(2, "0");
    if (chart.interval === "1d") return `${d.getUTCFullYear()}-${two(d.getUTCMonth() + 1)}-${two(d.getUTCDate())}`;
    if (chart.interval === "1s") return `${two(d.getUTCHours())}:${two(d.getUTCMinutes())}:${two(d.getUTCSeconds())}`;
    return `${two(d.getUTCHours())}:${two(d.getUTCMinutes())}`;
  }

  function draw() {
    frameQueued = false;
    const w = Math.max(100, Math.round(canvas.clientWidth * dpr));
    const h = Math.max(80, Math.round(canvas.clientHeight * dpr));
    if (canvas.width !== w || canvas.height !== h) {
      canvas.width = w;
      canvas.height = h;
    }
    ctx.clearRect(0, 0, w, h);
    const list = chart.candles;
    const last = list[list.length - 1];
    $("chart-last").textContent = last
      ? `O ${fmt(last.open)} H ${fmt(last.high)} L ${fmt(last.low)} C ${fmt(last.close)} · ${last.ticks} ticks`
      : "";
    if (!list.length) return;
    const padR = 70 * dpr, padB = 20 * dpr, padT = 8 * dpr;
    const plotW = w - padR, plotH = h - padB - padT;
    let lo = Infinity, hi = -Infinity;
    for (const c of list) { lo = Math.min(lo, c.low); hi = Math.max(hi, c.high); }
    if (hi === lo) { hi += hi * 0.001 || 1; lo -= lo * 0.001 || 1; }
    const span = hi - lo;
    hi += span * 0.05; lo -= span * 0.05;
    const y = (p) => padT + (hi - p) / (hi - lo) * plotH;
    // Grid and price labels.
    ctx.font = `${11 * dpr}px ui-monospace, Menlo, monospace`;
    ctx.textBaseline = "middle";
    ctx.lineWidth = 1;
    for (let i = 0; i <= 4; i++) {
      const p = lo + (hi - lo) * i / 4;
      const yy = Math.round(y(p)) + 0.5;
      ctx.strokeStyle = GRID;
      ctx.beginPath(); ctx.moveTo(0, yy); ctx.lineTo(plotW, yy); ctx.stroke();
      ctx.fillStyle = LABEL;
      ctx.fillText(fmt(p), plotW + 6 * dpr, yy);
    }
    // Bars: the newest at the right, MAX_BARS slots.
    const slot = plotW / Math.max(list.length, 40);
    const body = Math.max(1, Math.floor(slot * 0.7));
    const x0 = plotW - list.length * slot;
    ctx.textBaseline = "top";
    list.forEach((c, i) => {
      const up = c.close >= c.open;
      const color = up ? UP : DOWN;
      const cx = Math.round(x0 + i * slot + slot / 2);
      ctx.strokeStyle = color;
      ctx.fillStyle = color;
      ctx.beginPath(); ctx.moveTo(cx + 0.5, y(c.high)); ctx.lineTo(cx + 0.5, y(c.low)); ctx.stroke();
      const top = y(Math.max(c.open, c.close));
      const bh = Math.max(1, y(Math.min(c.open, c.close)) - top);
      ctx.globalAlpha = c.closed ? 1 : 0.75;
      ctx.fillRect(cx - Math.floor(body / 2), top, body, bh);
      ctx.globalAlpha = 1;
      if (i % Math.max(1, Math.ceil(list.length / 6)) === 0) {
        ctx.fillStyle = LABEL;
        ctx.fillText(timeLabel(c.t), Math.max(0, cx - 24 * dpr), h - padB + 4 * dpr);
      }
    });
    chart.draws++;
  }

  // ------------------------------------------------------------- wiring
  $("chart-intervals").addEventListener("click", (e) => {
    const b = e.target.closest("button[data-interval]");
    if (b && chart.symbol) select(chart.symbol, b.dataset.interval);
  });
  $("board").addEventListener("click", (e) => {
    if (e.target.closest("button")) return; // the remove button
    const tr = e.target.closest("tr[data-symbol]");
    if (tr) select(tr.dataset.symbol, chart.interval);
  });
  new ResizeObserver(schedule).observe(canvas);

  const params = new URLSearchParams(location.search);
  let saved = {};
  try { saved = JSON.parse(localStorage.getItem(STORE_PICK) || "{}") || {}; } catch {}
  const first = params.get("chart") || saved.symbol;
  const interval = INTERVALS.includes(params.get("interval")) ? params.get("interval")
    : INTERVALS.includes(saved.interval) ? saved.interval : "1m";
  if (first) {
    select(first, interval);
  } else {
    // No pick yet: chart the board's first symbol once it shows.
    const pickFirst = () => {
      const tr = document.querySelector("#board tr[data-symbol]");
      if (tr && !chart.symbol) select(tr.dataset.symbol, interval);
      return !!chart.symbol;
    };
    if (!pickFirst()) {
      const mo = new MutationObserver(() => { if (pickFirst()) mo.disconnect(); });
      mo.observe($("board"), { childList: true });
    }
  }
})();
