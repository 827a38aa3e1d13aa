// MarketMux live page: ticker board, alerts, stats. Plain JS, no dependencies.
//
// Speed: a socket message only updates the row's model and marks it dirty;
// the DOM is written once per animation frame, one write per dirty row, and
// only for rows on screen. Sparklines redraw at most every SPARK_MIN_MS; the
// flash is a class set on update and cleared FLASH_MS later (no per-frame
// animation work).
//
// Recovery: each row keeps its stream position {seq, epoch} (the epoch from
// the `subscribed` reply's `streams`); after a reconnect the page resubscribes
// with `since`, the node replays what the row missed, and a tick at or below
// the row's last seq in the same epoch is ignored. Without an epoch from the
// node, rows just take every tick.
//
// Rate: the page asks the node for at most DRAW_PER_SEC ticks per second of
// each symbol (`max_rate`), the rate it paints a row at (once per animation
// frame): a tick replaced before the next frame would never be seen, and the
// node always sends the newest. `?max_rate=N` asks for another cap, 0 for every tick.
"use strict";
(() => {
  const DEFAULT_SYMBOLS = ["AAPL", "MSFT", "GOOGL", "AMZN", "META", "NVDA", "TSLA", "NFLX"];
  const SYMBOL_RE = /^[A-Za-z0-9.:\-_/]{1,32}$/;
  const SPARK_POINTS = 60;
  const SPARK_MIN_MS = 250;
  const FLASH_MS = 350;
  const MAX_SYMBOLS_PER_REQUEST = 200; // server: 256
  const MAX_REQUEST_BYTES = 3500; // server closes the socket past 4 KiB
  const BACKOFF_BASE_MS = 300;
  const BACKOFF_CAP_MS = 8000;
  const PING_EVERY_MS = 15000;
  const DRAW_PER_SEC = 60; // one paint per animation frame on most displays
  const MAX_RATE = maxRate();
  const SILENCE_LIMIT_MS = 25000; // no message at all for this long: the socket is dead
  const LATENCY_SAMPLES = 512;
  const STORE_BOARD = "marketmux.board";
  const STORE_USER = "marketmux.user";

  const $ = (id) => document.getElementById(id);
  const css = getComputedStyle(document.documentElement);
  const UP = css.getPropertyValue("--up").trim() || "#26c281";
  const DOWN = css.getPropertyValue("--down").trim() || "#f0524f";

  // ---------------------------------------------------------------- board model
  /** symbol -> row: DOM nodes plus the model painted from. */
  const rows = new Map();
  /** Rows changed since the last frame. */
  const dirty = new Set();
  /** Rows whose flash class is still set. */
  const flashing = new Set();
  /** Rows whose sparkline is behind their model. */
  const sparkDue = new Set();
  /** Tick messages received per symbol (also for symbols no longer shown). */
  const received = new Map();
  let receivedTotal = 0;
  /** Ticks ignored: at or below their row's last seq in the same epoch. */
  let duplicates = 0;
  let frameQueued = false;
  let sparkW = 0;
  let sparkH = 0;
  const dpr = Math.max(1, Math.min(3, window.devicePixelRatio || 1));
  const tbody = $("board");

  function decimals(p) {
    return p >= 1 ? 2 : p >= 0.01 ? 4 : 6;
  }

  function fmtPrice(p) {
    return p.toFixed(decimals(p));
  }

  function text(td, value) {
    const t = document.createTextNode(value);
    td.appendChild(t);
    return t;
  }

  function makeRow(sym) {
    const tr = document.createElement("tr");
    tr.dataset.symbol = sym;
    const cell = (cls) => {
      const td = document.createElement("td");
      td.className = cls;
      tr.appendChild(td);
      return td;
    };
    text(cell("sym"), sym);
    const pxCell = cell("px");
    const chgCell = cell("chg");
    const pctCell = cell("pct");
    const canvas = document.createElement("canvas");
    cell("spark").appendChild(canvas);
    const rm = document.createElement("button");
    rm.className = "rm";
    rm.type = "button";
    rm.title = rm.ariaLabel = "Remove " + sym;
    rm.textContent = "×";
    cell("x").appendChild(rm);
    return {
      sym, tr, pxCell, chgCell, pctCell, canvas, ctx: canvas.getContext("2d"),
      pxText: text(pxCell, "—"), chgText: text(chgCell, ""), pctText: text(pctCell, ""),
      price: NaN, base: NaN, dir: 0, chgClass: "", flashClass: "", flashUntil: 0,
      sparkAt: -Infinity, visible: true, stale: false,
      spark: new Float64Array(SPARK_POINTS), sparkLen: 0, sparkNext: 0,
      fresh: true, // the next tick may be the snapshot sent on subscribe: no latency sample
      seq: 0, // last seq shown, in `epoch`
      epoch: null, // named by the node in `subscribed`; null: no position to resume from
      replayTo: 0, // ticks up to this seq were sent before the subscribe: no latency sample
    };
  }

  function sizeCanvas(r) {
    r.canvas.width = sparkW;
    r.canvas.height = sparkH;
  }

  function measureSpark() {
    const first = rows.values().next().value;
    if (!first) return;
    const box = first.canvas.parentElement.getBoundingClientRect();
    sparkW = Math.max(20, Math.round((box.width - 16) * dpr));
    sparkH = Math.round(24 * dpr);
  }

  function normalize(raw) {
    const s = String(raw).trim().toUpperCase();
    return SYMBOL_RE.test(s) ? s : null;
  }

  function addSymbols(list, { save = true } = {}) {
    const added = [];
    const frag = document.createDocumentFragment();
    for (const raw of list) {
      const sym = normalize(raw);
      if (!sym) {
        toast("error", "Not a symbol", `“${raw}”: 1–32 of A–Z 0–9 . : - _ /`);
        continue;
      }
      if (rows.has(sym)) continue;
      const r = makeRow(sym);
      rows.set(sym, r);
      frag.appendChild(r.tr);
      added.push(sym);
    }
    if (!added.length) return added;
    tbody.appendChild(frag);
    if (!sparkW) measureSpark();
    for (const sym of added) {
      const r = rows.get(sym);
      sizeCanvas(r);
      onScreen.observe(r.tr);
    }
    subscribe(added);
    boardChanged(save);
    return added;
  }

  function removeSymbol(sym) {
    const r = rows.get(sym);
    if (!r) return false;
    rows.delete(sym);
    dirty.delete(r);
    flashing.delete(r);
    sparkDue.delete(r);
    onScreen.unobserve(r.tr);
    r.tr.remove();
    send({ action: "unsubscribe", symbol: sym });
    boardChanged(true);
    return true;
  }

  function boardChanged(save) {
    $("board-count").textContent = rows.size === 1 ? "1 symbol" : rows.size + " symbols";
    $("board-empty").hidden = rows.size > 0;
    if (save) store(STORE_BOARD, JSON.stringify([...rows.keys()]));
  }

  // ---------------------------------------------------------------- ticks → model
  const latency = new Float64Array(LATENCY_SAMPLES);
  let latencyCount = 0;

  function onTick(m) {
    const sym = m.symbol;
    receivedTotal++;
    received.set(sym, (received.get(sym) || 0) + 1);
    const r = rows.get(sym);
    const price = m.price;
    if (!r || typeof price !== "number") return;
    const seq = m.seq;
    if (r.epoch !== null && typeof seq === "number") {
      if (typeof m.epoch === "string" && m.epoch !== r.epoch) {
        r.epoch = m.epoch; // the stream started again
        r.seq = 0;
      }
      if (seq <= r.seq) {
        duplicates++;
        return;
      }
      r.seq = seq;
    }
    if (r.fresh) {
      r.fresh = false;
    } else if (!(seq <= r.replayTo)) {
      const ts = Date.parse(m.timestamp);
      if (ts === ts) latency[latencyCount++ % LATENCY_SAMPLES] = Date.now() - ts;
    }
    if (r.base !== r.base) r.base = price;
    if (r.price === r.price && price !== r.price) r.dir = price > r.price ? 1 : -1;
    r.price = price;
    r.spark[r.sparkNext] = price;
    r.sparkNext = (r.sparkNext + 1) % SPARK_POINTS;
    if (r.sparkLen < SPARK_POINTS) r.sparkLen++;
    if (r.visible) {
      dirty.add(r);
      queueFrame();
    } else {
      r.stale = true;
    }
  }

  function queueFrame() {
    if (!frameQueued) {
      frameQueued = true;
      requestAnimationFrame(paint);
    }
  }

  /** Rows scrolled off screen keep their model; they are painted when they come back. */
  const onScreen = new IntersectionObserver((entries) => {
    for (const e of entries) {
      const r = rows.get(e.target.dataset.symbol);
      if (!r) continue;
      r.visible = e.isIntersecting;
      if (r.visible && r.stale) {
        r.stale = false;
        dirty.add(r);
        queueFrame();
      }
    }
  });

  // ---------------------------------------------------------------- model → DOM, once per frame
  function paint(now) {
    frameQueued = false;
    for (const r of dirty) paintRow(r, now);
    dirty.clear();
    for (const r of flashing) {
      if (now >= r.flashUntil) {
        r.flashClass = "";
        r.pxCell.className = "px";
        flashing.delete(r);
      }
    }
    for (const r of sparkDue) {
      if (now - r.sparkAt >= SPARK_MIN_MS) {
        r.sparkAt = now;
        drawSpark(r);
        sparkDue.delete(r);
      }
    }
    if (flashing.size || sparkDue.size) queueFrame();
  }

  function paintRow(r, now) {
    const p = r.price;
    r.pxText.data = fmtPrice(p);
    const chg = p - r.base;
    const pct = r.base > 0 ? (chg / r.base) * 100 : 0;
    const sign = chg > 0 ? "+" : chg < 0 ? "−" : "";
    r.chgText.data = sign + Math.abs(chg).toFixed(decimals(r.base));
    const pctAbs = Math.abs(pct).toFixed(2);
    r.pctText.data = (pctAbs === "0.00" ? "" : sign) + pctAbs + "%";
    const cls = chg > 0 ? "up" : chg < 0 ? "down" : "";
    if (cls !== r.chgClass) {
      r.chgClass = cls;
      r.chgCell.className = "chg " + cls;
      r.pctCell.className = "pct " + cls;
    }
    const flash = r.dir < 0 ? "down" : "up";
    if (flash !== r.flashClass) {
      r.flashClass = flash;
      r.pxCell.className = "px " + flash;
    }
    r.flashUntil = now + FLASH_MS;
    flashing.add(r);
    sparkDue.add(r);
  }

  function drawSpark(r) {
    const c = r.ctx;
    const w = r.canvas.width;
    const h = r.canvas.height;
    c.clearRect(0, 0, w, h);
    const n = r.sparkLen;
    if (n < 2 || !w) return;
    const start = n < SPARK_POINTS ? 0 : r.sparkNext;
    let min = Infinity;
    let max = -Infinity;
    for (let i = 0; i < n; i++) {
      const v = r.spark[(start + i) % SPARK_POINTS];
      if (v < min) min = v;
      if (v > max) max = v;
    }
    const span = max - min || 1;
    const pad = 2 * dpr;
    const dx = (w - 2 * pad) / (SPARK_POINTS - 1);
    const x0 = pad + (SPARK_POINTS - n) * dx;
    c.beginPath();
    for (let i = 0; i < n; i++) {
      const v = r.spark[(start + i) % SPARK_POINTS];
      const y = h - pad - ((v - min) / span) * (h - 2 * pad);
      if (i === 0) c.moveTo(x0, y);
      else c.lineTo(x0 + i * dx, y);
    }
    c.lineWidth = 1.25 * dpr;
    c.strokeStyle = r.spark[(start + n - 1) % SPARK_POINTS] >= r.spark[start] ? UP : DOWN;
    c.stroke();
  }

  window.addEventListener("resize", () => {
    sparkW = 0;
    measureSpark();
    for (const r of rows.values()) {
      sizeCanvas(r);
      r.sparkAt = -Infinity;
      if (r.sparkLen) sparkDue.add(r);
    }
    queueFrame();
  });

  // ---------------------------------------------------------------- socket
  let ws = null;
  let attempt = 0;
  let reconnects = 0;
  let everOpen = false;
  let retryTimer = 0;
  let lastMessageAt = 0;
  let connState = "connecting";
  let nextId = 1;
  /** Request id -> symbols, to tie an error reply to its rows. */
  const pending = new Map();
  /** Ids of pending subscribes that carried positions (`since`). */
  const resuming = new Set();

  function setConn(state, label) {
    connState = state;
    $("conn").dataset.state = state;
    $("conn-text").textContent = label;
  }

  function send(msg) {
    if (!ws || ws.readyState !== WebSocket.OPEN) return false;
    ws.send(JSON.stringify(msg));
    return true;
  }

  /** The page's one socket, shared with the candle chart (candles.js). */
  const shared = { send, onOpen: null, onCandle: null };
  window.marketmuxSocket = shared;

  /**
   * Subscribes in requests the server accepts (symbol count and frame size),
   * each row with a position asking to resume from it (`since`).
   */
  function subscribe(symbols) {
    let chunk = [];
    let since = {};
    let positions = 0;
    let bytes = 0;
    const flush = () => {
      if (!chunk.length) return;
      const id = nextId++;
      const msg = { action: "subscribe", symbols: chunk, id };
      if (MAX_RATE > 0) msg.max_rate = MAX_RATE;
      if (positions) msg.since = since;
      if (send(msg)) {
        pending.set(id, chunk);
        if (positions) resuming.add(id);
      }
      chunk = [];
      since = {};
      positions = 0;
      bytes = 0;
    };
    for (const sym of symbols) {
      const r = rows.get(sym);
      if (r) r.fresh = true;
      const pos = r && r.epoch !== null ? { seq: r.seq, epoch: r.epoch } : null;
      const size = sym.length + 3 + (pos ? sym.length + 4 + JSON.stringify(pos).length : 0);
      if (chunk.length >= MAX_SYMBOLS_PER_REQUEST || bytes + size > MAX_REQUEST_BYTES) flush();
      chunk.push(sym);
      if (pos) {
        since[sym] = pos;
        positions++;
      }
      bytes += size;
    }
    flush();
  }

  /**
   * A `subscribed` reply's `streams`: where each row's stream stands. A row
   * in the same epoch keeps its position (its replay follows or, when the
   * node could not serve it, the latest tick); a new row, or one whose
   * stream started again, takes the node's epoch and the next tick.
   */
  function onStreams(streams) {
    for (const sym of Object.keys(streams)) {
      const r = rows.get(sym);
      const s = streams[sym];
      if (!r || !s || typeof s.epoch !== "string" || typeof s.seq !== "number") continue;
      r.fresh = false;
      r.replayTo = s.seq;
      if (s.epoch !== r.epoch) {
        r.epoch = s.epoch;
        r.seq = 0;
      }
    }
  }

  /**
   * The JWT for a node with authentication on: `?token=` once (kept in
   * localStorage and taken out of the address bar), else the stored one.
   */
  const token = (() => {
    const params = new URLSearchParams(location.search);
    const given = params.get("token");
    try {
      if (given) {
        localStorage.setItem("marketmux.token", given);
        params.delete("token");
        const rest = params.toString();
        history.replaceState(null, "", location.pathname + (rest ? "?" + rest : "") + location.hash);
        return given;
      }
      return localStorage.getItem("marketmux.token") || "";
    } catch (e) {
      return given || "";
    }
  })();

  function connect() {
    clearTimeout(retryTimer);
    const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws";
    let sock;
    try {
      // Browsers cannot set headers on a WebSocket: the token rides as a subprotocol.
      sock = token ? new WebSocket(url, ["marketmux.v1", "bearer." + token]) : new WebSocket(url);
    } catch (e) {
      retry(null);
      return;
    }
    ws = sock;
    if (connState !== "reconnecting") setConn("connecting", "connecting…");
    sock.onopen = () => {
      if (ws !== sock) return;
      if (everOpen) reconnects++;
      everOpen = true;
      attempt = 0;
      lastMessageAt = Date.now();
      setConn("live", reconnects ? `live · reconnected ×${reconnects}` : "live");
      pending.clear();
      resuming.clear();
      identify();
      subscribe([...rows.keys()]);
      if (shared.onOpen) shared.onOpen();
    };
    sock.onmessage = (e) => {
      if (ws !== sock) return;
      lastMessageAt = Date.now();
      onMessage(e.data);
    };
    sock.onclose = (e) => {
      if (ws !== sock) return;
      ws = null;
      retry(e);
    };
  }

  /** Jittered exponential backoff: a random delay in [d/2, d), d doubling up to the cap. */
  function retry(closeEvent) {
    const d = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** attempt);
    const delay = d / 2 + Math.random() * (d / 2);
    attempt++;
    const why = closeEvent && closeEvent.code && closeEvent.code !== 1006
      ? ` · closed ${closeEvent.code}${closeEvent.reason ? " " + closeEvent.reason : ""}` : "";
    setConn("reconnecting", `reconnecting in ${(delay / 1000).toFixed(1)} s${why}`);
    retryTimer = setTimeout(connect, delay);
  }

  // Liveness: an application ping keeps proxies open; silence means a dead socket.
  setInterval(() => {
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    if (Date.now() - lastMessageAt > SILENCE_LIMIT_MS) {
      const dead = ws;
      ws = null;
      dead.close();
      retry(null);
      return;
    }
    send({ action: "ping" });
  }, PING_EVERY_MS);

  window.addEventListener("online", () => {
    if (!ws) {
      attempt = 0;
      connect();
    }
  });

  function onMessage(data) {
    let m;
    try {
      m = JSON.parse(data);
    } catch (e) {
      return;
    }
    switch (m.type) {
      case "tick":
        onTick(m);
        break;
      case "subscribed":
        pending.delete(m.id);
        resuming.delete(m.id);
        if (m.streams && typeof m.streams === "object") onStreams(m.streams);
        break;
      case "unsubscribed":
        pending.delete(m.id);
        break;
      case "error":
        onServerError(m);
        break;
      case "alert":
        onAlert(m.alert && typeof m.alert === "object" ? m.alert : m);
        break;
      case "candle":
        if (shared.onCandle) shared.onCandle(m);
        break;
      default:
        break; // pong, identified, and whatever a newer server adds
    }
  }

  function onServerError(m) {
    const syms = pending.get(m.id);
    pending.delete(m.id);
    if (resuming.delete(m.id) && syms && m.code === "invalid_request") {
      // The node refused the positions: those rows start afresh rather than stay unsubscribed.
      for (const s of syms) {
        const r = rows.get(s);
        if (r) r.epoch = null;
      }
      subscribe(syms);
      return;
    }
    if (m.code === "forbidden" && m.message && /identify/i.test(m.message)) {
      setAlertsStatus("This node does not tie sockets to users: fired alerts are not pushed here.");
      return;
    }
    if (syms && (m.code === "invalid_symbol" || m.code === "too_many_subscriptions")) {
      for (const s of syms) {
        const r = rows.get(s);
        if (r) {
          r.tr.classList.add("error");
          r.tr.title = m.message || m.code;
        }
      }
    }
    toast("error", "Server: " + (m.code || "error"), m.message || "");
  }

  // ---------------------------------------------------------------- toasts
  function toast(kind, title, body, { ms = 6000, data = {} } = {}) {
    const el = document.createElement("div");
    el.className = "toast " + kind;
    el.setAttribute("role", kind === "alert" ? "alert" : "status");
    for (const [k, v] of Object.entries(data)) el.dataset[k] = v;
    const strong = document.createElement("strong");
    strong.textContent = title;
    el.appendChild(strong);
    if (body) el.appendChild(document.createTextNode(body));
    el.addEventListener("click", () => el.remove());
    const box = $("toasts");
    box.appendChild(el);
    while (box.children.length > 5) box.firstElementChild.remove();
    setTimeout(() => el.remove(), ms);
    return el;
  }

  // ---------------------------------------------------------------- alerts
  let userId = parseInt(load(STORE_USER), 10) || 1;
  $("alert-user").value = userId;

  function identify() {
    send({ action: "identify", user_id: userId });
  }

  function setAlertsStatus(msg) {
    $("alerts-status").textContent = msg;
  }

  /** Error codes the node answers for a route or method it does not serve. */
  const ROUTE_ABSENT = new Set(["no_such_endpoint", "method_not_allowed"]);

  /** fetch + JSON; `missing` when the route itself is absent (404/405: no such endpoint or method). */
  async function api(method, path, body) {
    try {
      const headers = body ? { "content-type": "application/json" } : {};
      if (token) headers.authorization = "Bearer " + token;
      const res = await fetch(path, {
        method,
        headers,
        body: body ? JSON.stringify(body) : undefined,
      });
      const raw = await res.text();
      let data = null;
      try {
        data = raw ? JSON.parse(raw) : null;
      } catch (e) {
        data = null;
      }
      const hasError = !!(data && data.error);
      return {
        ok: res.ok, status: res.status, data,
        missing: (res.status === 404 || res.status === 405 || res.status === 501) &&
          (!hasError || ROUTE_ABSENT.has(data.error.code)),
        message: hasError ? data.error.message || data.error.code : `HTTP ${res.status}`,
      };
    } catch (e) {
      return { ok: false, status: 0, data: null, missing: false, message: "network error" };
    }
  }

  const MISSING = "The alerts API is not available on this node (/alerts answers 404).";

  // GET /alerts answers pages in ascending id order (next_after_id while more
  // follow): read them all, up to a bound, and show the newest first.
  const ALERT_PAGES_MAX = 10;

  async function loadAlerts() {
    const list = [];
    let after = null;
    for (let page = 0; page < ALERT_PAGES_MAX; page++) {
      const more = after === null ? "" : `&after_id=${after}`;
      const r = await api("GET", `/alerts?user_id=${userId}&limit=1000${more}`);
      if (r.missing) return setAlertsStatus(MISSING);
      if (!r.ok) return setAlertsStatus("Could not load alerts: " + r.message);
      const items = Array.isArray(r.data) ? r.data : (r.data && (r.data.alerts || r.data.items)) || [];
      list.push(...items);
      after = r.data && Number.isInteger(r.data.next_after_id) ? r.data.next_after_id : null;
      if (after === null) break;
    }
    setAlertsStatus("");
    list.sort((a, b) => (Number(b.id) || 0) - (Number(a.id) || 0));
    renderAlerts(list);
  }

  function describe(a) {
    const cond = String(a.condition || "").toUpperCase() === "BELOW" ? "below" : "above";
    const target = typeof a.target_price === "number" ? fmtPrice(a.target_price) : String(a.target_price);
    return `${a.symbol} ${cond} ${target}`;
  }

  function renderAlerts(list) {
    const ul = $("alerts-list");
    ul.textContent = "";
    if (!list.length) {
      const li = document.createElement("li");
      li.className = "muted";
      li.textContent = "no alerts";
      ul.appendChild(li);
      return;
    }
    for (const a of list) {
      const li = document.createElement("li");
      li.dataset.alertId = a.id;
      const fired = a.active === false || a.triggered_at;
      if (fired) li.className = "done";
      const label = document.createElement("span");
      label.textContent = describe(a) + (fired ? " · fired" : "");
      li.appendChild(label);
      const del = document.createElement("button");
      del.className = "rm";
      del.type = "button";
      del.title = del.ariaLabel = "Delete alert " + a.id;
      del.textContent = "×";
      del.addEventListener("click", () => deleteAlert(a.id));
      li.appendChild(del);
      ul.appendChild(li);
    }
  }

  async function createAlert(ev) {
    ev.preventDefault();
    const symbol = normalize($("alert-symbol").value);
    const target = parseFloat($("alert-price").value);
    if (!symbol) return toast("error", "Alert", "Enter a valid symbol.");
    if (!(target > 0)) return toast("error", "Alert", "Enter a target price above 0.");
    const body = { user_id: userId, symbol, target_price: target, condition: $("alert-cond").value };
    const r = await api("POST", "/alerts", body);
    if (r.missing) return setAlertsStatus(MISSING);
    if (!r.ok) return toast("error", "Alert not created", r.message);
    toast("info", "Alert created", describe(body), { ms: 2500 });
    $("alert-price").value = "";
    loadAlerts();
  }

  async function deleteAlert(id) {
    const r = await api("DELETE", `/alerts/${encodeURIComponent(id)}?user_id=${userId}`);
    if (!r.ok && !r.missing) toast("error", "Alert not deleted", r.message);
    loadAlerts();
  }

  function onAlert(a) {
    const price = typeof a.triggered_price === "number" ? fmtPrice(a.triggered_price)
      : typeof a.price === "number" ? fmtPrice(a.price) : "";
    const title = `Alert: ${describe(a)}`;
    const body = price ? `Crossed at ${price}` : "Fired";
    toast("alert", title, body, { ms: 15000, data: { symbol: String(a.symbol || "") } });
    const ul = $("fired-list");
    if (ul.firstElementChild && ul.firstElementChild.classList.contains("muted")) ul.textContent = "";
    const li = document.createElement("li");
    li.textContent = `${new Date().toLocaleTimeString()}  ${describe(a)}${price ? " @ " + price : ""}`;
    ul.prepend(li);
    while (ul.children.length > 20) ul.lastElementChild.remove();
    loadAlerts();
  }

  $("alert-form").addEventListener("submit", createAlert);
  $("alert-user").addEventListener("change", () => {
    const v = parseInt($("alert-user").value, 10);
    if (!(v > 0)) return;
    userId = v;
    store(STORE_USER, String(v));
    identify();
    loadAlerts();
  });

  // ---------------------------------------------------------------- type-ahead
  let suggestTimer = 0;
  let lastQuery = null;
  async function suggest(q) {
    q = q.trim().toUpperCase();
    if (q === lastQuery) return;
    lastQuery = q;
    const r = await api("GET", `/api/v1/symbols?q=${encodeURIComponent(q)}&limit=50`);
    if (!r.ok || !r.data || !Array.isArray(r.data.symbols)) return;
    const dl = $("symbol-list");
    dl.textContent = "";
    for (const s of r.data.symbols) {
      const o = document.createElement("option");
      o.value = s;
      dl.appendChild(o);
    }
  }
  for (const id of ["add-input", "alert-symbol"]) {
    const input = $(id);
    const later = () => {
      clearTimeout(suggestTimer);
      suggestTimer = setTimeout(() => suggest(input.value), 120);
    };
    input.addEventListener("input", later);
    input.addEventListener("focus", later);
  }

  $("add-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const input = $("add-input");
    const names = input.value.split(/[\s,]+/).filter(Boolean);
    if (names.length) addSymbols(names);
    input.value = "";
  });
  tbody.addEventListener("click", (ev) => {
    const btn = ev.target.closest("button.rm");
    const tr = btn && btn.closest("tr");
    if (tr) removeSymbol(tr.dataset.symbol);
  });

  // ---------------------------------------------------------------- stats strip
  let lastReceived = 0;
  let lastStatsAt = performance.now();

  function fmtRate(v) {
    if (typeof v !== "number") return "—";
    return v >= 10000 ? (v / 1000).toFixed(1) + "k" : v >= 100 ? Math.round(v).toString() : v.toFixed(1);
  }

  function fmtMs(v) {
    return v < 10 ? v.toFixed(1) + " ms" : Math.round(v) + " ms";
  }

  async function refreshStats() {
    const now = performance.now();
    const secs = (now - lastStatsAt) / 1000;
    $("page-rate").textContent = fmtRate((receivedTotal - lastReceived) / secs);
    lastReceived = receivedTotal;
    lastStatsAt = now;
    const n = Math.min(latencyCount, LATENCY_SAMPLES);
    if (n) {
      const sorted = Array.from(latency.subarray(0, n)).sort((a, b) => a - b);
      $("lat-p50").textContent = fmtMs(sorted[Math.floor(n * 0.5)]);
      $("lat-p99").textContent = fmtMs(sorted[Math.min(n - 1, Math.floor(n * 0.99))]);
    }
    const r = await api("GET", "/api/v1/stats");
    const s = r.ok && r.data ? r.data : {};
    $("stat-clients").textContent = typeof s.clients === "number" ? s.clients : "—";
    $("stat-ticks").textContent = fmtRate(s.ticks_per_sec);
    $("stat-deliveries").textContent = fmtRate(s.deliveries_per_sec);
  }
  setInterval(refreshStats, 1000);

  // ---------------------------------------------------------------- frame probe (tests, console)
  /** Records requestAnimationFrame intervals between start() and stop(). */
  const probe = {
    intervals: [],
    running: false,
    start() {
      this.intervals = [];
      this.running = true;
      let last = performance.now();
      const step = (t) => {
        if (!this.running) return;
        this.intervals.push(t - last);
        last = t;
        requestAnimationFrame(step);
      };
      requestAnimationFrame(step);
    },
    stop() {
      this.running = false;
      const v = this.intervals.slice(1);
      const sorted = v.slice().sort((a, b) => a - b);
      const total = v.reduce((a, b) => a + b, 0);
      return {
        frames: v.length,
        over20ms: v.filter((x) => x > 20).length,
        over50ms: v.filter((x) => x > 50).length,
        maxMs: sorted.length ? sorted[sorted.length - 1] : 0,
        p99Ms: sorted.length ? sorted[Math.floor((sorted.length - 1) * 0.99)] : 0,
        fps: total ? (v.length * 1000) / total : 0,
      };
    },
  };

  // ---------------------------------------------------------------- storage, start
  function store(k, v) {
    try {
      localStorage.setItem(k, v);
    } catch (e) {
      /* private mode or full: the board just is not remembered */
    }
  }
  function load(k) {
    try {
      return localStorage.getItem(k);
    } catch (e) {
      return null;
    }
  }

  /** The `max_rate` the page asks for: `?max_rate=N` (0: every tick), else DRAW_PER_SEC. */
  function maxRate() {
    const q = new URLSearchParams(location.search).get("max_rate");
    const n = q === null ? DRAW_PER_SEC : Number(q);
    return n === 0 || (n >= 0.1 && n <= 1000) ? n : DRAW_PER_SEC;
  }

  function initialSymbols() {
    const q = new URLSearchParams(location.search).get("symbols");
    if (q) return { list: q.split(",").filter(Boolean), save: false };
    try {
      const saved = JSON.parse(load(STORE_BOARD) || "null");
      if (Array.isArray(saved)) return { list: saved, save: true };
    } catch (e) {
      /* ignore a corrupt entry */
    }
    return { list: DEFAULT_SYMBOLS, save: true };
  }

  /** A small handle for tests and the console. */
  window.marketmux = {
    add: (list) => addSymbols(Array.isArray(list) ? list : [list]),
    remove: removeSymbol,
    symbols: () => [...rows.keys()],
    priced: () => [...rows.values()].filter((r) => r.price === r.price).length,
    received: (sym) => received.get(sym) || 0,
    receivedTotal: () => receivedTotal,
    duplicates: () => duplicates,
    /** A row's stream position, or null before the node named an epoch. */
    position: (sym) => {
      const r = rows.get(sym);
      return r && r.epoch !== null ? { seq: r.seq, epoch: r.epoch } : null;
    },
    /** A row's sparkline prices, oldest first. */
    spark: (sym) => {
      const r = rows.get(sym);
      if (!r) return [];
      const start = r.sparkLen < SPARK_POINTS ? 0 : r.sparkNext;
      return Array.from({ length: r.sparkLen }, (_, i) => r.spark[(start + i) % SPARK_POINTS]);
    },
    state: () => connState,
    reconnects: () => reconnects,
    probe,
  };

  const init = initialSymbols();
  addSymbols(init.list, { save: init.save });
  boardChanged(init.save);
  connect();
  loadAlerts();
  refreshStats();
})();
