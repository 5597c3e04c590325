// The field page (/field): report, my tasks, and the queue of what waits for a network.
//
// Everything sent goes through one queue kept in IndexedDB: a report or an action is stored
// with its own Idempotency-Key first and sent from there, now or when the network returns, so
// a retry (a flaky network, a second tap, the page reopened) replays the first answer and
// never makes a second incident. A report also carries an incident id made here, once. The
// page holds no rule: the server checks and answers; the page shows what it said.
"use strict";
(function () {
  const TOKEN_KEY = "gridgov.field.token";
  const TASKS_KEY = "gridgov.field.tasks";
  const MATTERS_KEY = "gridgov.field.matters";
  const STREETS_KEY = "gridgov.field.streets";
  const CONFIG_KEY = "gridgov.field.config";
  const DB_NAME = "gridgov-field";
  const STORE = "queue";
  const MAX_PHOTOS = 3;
  const RESIZE_PX = 1600; // the longer side of a photo sent (phones take 4000 px and more)
  const AVL_MIN_MS = 10000; // at most one position fix every 10 s
  const AVL_STALE_MS = 30000; // no fix for this long: the position shown is stale
  const STATES = {
    reported: "已上报 reported", registered: "已立案 registered", dispatched: "已派遣 dispatched",
    acknowledged: "已确认 acknowledged", on_scene: "已到场 on scene", resolved: "已办结 resolved",
    verified: "已核查 verified", closed: "已结案 closed", evaluated: "已评价 evaluated",
    rejected: "不予立案 rejected", cancelled: "已撤销 cancelled",
  };
  const KINDS = { report: "上报 report", resolve: "办结 resolve", verify: "核查 verify" };
  const ACTIONS = {
    acknowledge: "确认 Acknowledge", arrive: "到场 Arrive", resolve: "办结 Resolve",
    verify: "核查通过 Verify", reopen: "重新处理 Reopen",
  };

  const F = (window.GGField = {
    ready: false, role: null, unitId: null, position: null, matter: null, files: [],
    matters: [], sent: 0, flushing: null, resized: [],
    avl: { watch: null, lastFix: 0, lastSent: 0, sent: 0, skipped: 0, stale: false },
  });
  const $ = (id) => document.getElementById(id);
  const el = (tag, props, ...children) => {
    const node = Object.assign(document.createElement(tag), props || {});
    for (const child of children) node.append(child);
    return node;
  };

  // ------------------------------------------------------------------------------------------
  // the token: from the URL fragment once (it never reaches a server or a log), then kept
  // ------------------------------------------------------------------------------------------
  const hash = location.hash.match(/token=([^&]+)/);
  if (hash) {
    localStorage.setItem(TOKEN_KEY, decodeURIComponent(hash[1]));
    history.replaceState(null, "", location.pathname);
  }
  const token = localStorage.getItem(TOKEN_KEY);
  const auth = () => ({ Authorization: "Bearer " + token });

  // ------------------------------------------------------------------------------------------
  // the queue (IndexedDB)
  // ------------------------------------------------------------------------------------------
  let dbPromise = null;
  function db() {
    dbPromise = dbPromise || new Promise((resolve, reject) => {
      const open = indexedDB.open(DB_NAME, 1);
      open.onupgradeneeded = () => open.result.createObjectStore(STORE, { keyPath: "key" });
      open.onsuccess = () => resolve(open.result);
      open.onerror = () => reject(open.error);
    });
    return dbPromise;
  }
  async function tx(mode, work) {
    const database = await db();
    return new Promise((resolve, reject) => {
      const t = database.transaction(STORE, mode);
      const request = work(t.objectStore(STORE));
      t.oncomplete = () => resolve(request.result);
      t.onerror = () => reject(t.error);
    });
  }
  const putItem = (item) => tx("readwrite", (s) => s.put(item));
  const deleteItem = (key) => tx("readwrite", (s) => s.delete(key));
  const allItems = async () =>
    (await tx("readonly", (s) => s.getAll())).sort((a, b) => a.created.localeCompare(b.created));
  F.queued = allItems;

  function newKey() {
    if (crypto.randomUUID) return crypto.randomUUID();
    const b = crypto.getRandomValues(new Uint8Array(16));
    return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  }

  async function enqueue(item) {
    await putItem({ key: newKey(), created: new Date().toISOString(), failed: false,
      error: null, json: null, fields: {}, photos: [], ...item });
    await renderQueue();
    if (navigator.onLine) await flush();
  }

  function send(item) {
    const headers = { ...auth(), "Idempotency-Key": item.key };
    let body;
    if (item.json !== null) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(item.json);
    } else {
      body = new FormData();
      for (const [name, value] of Object.entries(item.fields)) {
        if (value !== null && value !== "") body.append(name, value);
      }
      item.photos.forEach((blob, i) => body.append("photo", blob, `photo-${i + 1}.jpg`));
    }
    return fetch(item.url, { method: "POST", headers, body });
  }

  // One pass over the queue at a time: a second call waits for the running one, so the same
  // item is never in flight twice from this page.
  async function flush() {
    if (F.flushing) return F.flushing;
    F.flushing = (async () => {
      try {
        for (const item of await allItems()) {
          if (item.failed) continue;
          if (!navigator.onLine) break;
          let response;
          try {
            response = await send(item);
          } catch (err) {
            item.error = "网络错误，稍后重试 network error, will retry";
            await putItem(item);
            break;
          }
          const answer = await response.json().catch(() => ({}));
          if (response.ok) {
            await deleteItem(item.key);
            F.sent += 1;
            sentNotice(item, answer);
          } else if (response.status >= 500 || response.status === 429 ||
                     response.headers.get("Retry-After")) {
            item.error = `服务器忙，稍后重试 server busy (${response.status})`;
            await putItem(item);
            break;
          } else {
            // Refused for good (the server says why): kept for the user to read and discard.
            item.failed = true;
            item.error = `${response.status}: ${answer.message || answer.detail || ""}`;
            await putItem(item);
          }
        }
      } finally {
        F.flushing = null;
        await renderQueue();
      }
    })();
    return F.flushing;
  }
  F.flush = flush;

  function sentNotice(item, answer) {
    if (item.kind === "report") {
      $("report-status").textContent =
        `已发送 sent: ${answer.incident_id} · ${STATES[answer.status] || answer.status}`;
    }
    loadTasks();
  }

  async function renderQueue() {
    const items = await allItems();
    $("queue-count").textContent = String(items.length);
    const list = $("queue");
    list.replaceChildren(...items.map((item) => {
      const li = el("li", { className: item.failed ? "failed" : "waiting" },
        el("div", { className: "title", textContent: item.label }),
        el("div", { className: "meta",
          textContent: `${new Date(item.created).toLocaleString("zh-CN")} · ` +
            `${item.photos.length} 张照片 photos` + (item.error ? ` · ${item.error}` : "") }));
      li.dataset.key = item.key;
      if (item.failed) {
        li.append(el("button", { type: "button", textContent: "删除 Discard",
          onclick: async () => { await deleteItem(item.key); await renderQueue(); } }));
      }
      return li;
    }));
  }

  // ------------------------------------------------------------------------------------------
  // network state
  // ------------------------------------------------------------------------------------------
  function showNetwork() {
    const net = $("net");
    net.classList.toggle("off", !navigator.onLine);
    net.innerHTML = navigator.onLine ? "在线 <small>online</small>" : "离线 <small>offline</small>";
  }
  window.addEventListener("online", () => { showNetwork(); flush(); loadTasks(); });
  window.addEventListener("offline", showNetwork);

  // ------------------------------------------------------------------------------------------
  // report: position, matter, description, photos
  // ------------------------------------------------------------------------------------------
  const map = L.map("map", { attributionControl: false }).setView([30.69, 104.05], 12);
  let marker = null;
  function setPosition(lon, lat, how) {
    F.position = { lon, lat, how };
    if (marker) marker.setLatLng([lat, lon]);
    else marker = L.circleMarker([lat, lon], { radius: 9, color: "#b3261e", weight: 3 }).addTo(map);
    $("position").textContent =
      `${how === "gps" ? "定位 GPS" : "地图 map"}: ${lat.toFixed(5)}, ${lon.toFixed(5)}`;
  }
  map.on("click", (e) => setPosition(e.latlng.lng, e.latlng.lat, "map"));

  // The roads of the view, from this server's road route (no tiles): what a thumb aims by.
  const roads = L.geoJSON(null, { interactive: false, style: (f) => ({
    color: f.properties.colour, weight: f.properties.weight, opacity: 0.9 }) }).addTo(map);
  let roadsAsked = 0;
  async function loadRoads() {
    if (!navigator.onLine) return;
    const asked = ++roadsAsked;
    const b = map.getBounds();
    const box = [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()].map((v) => v.toFixed(5));
    try {
      const response = await fetch(`/api/v1/roads?bbox=${box.join(",")}&zoom=${map.getZoom()}`);
      if (!response.ok || asked !== roadsAsked) return;
      const data = await response.json();
      roads.clearLayers();
      roads.addData(data);
    } catch (e) { /* offline meanwhile: the roads drawn stay */ }
  }
  function drawBase(config) {
    for (const t of config.tiles) {
      L.tileLayer(t.url, { attribution: t.attribution, subdomains: t.subdomains || "abc",
        maxZoom: 19 }).addTo(map);
    }
    if (config.roads) {
      map.on("moveend", loadRoads);
      loadRoads();
    }
  }

  function drawStreets(geojson) {
    const layer = L.geoJSON(geojson, {
      interactive: false, style: { color: "#156534", weight: 1, fillOpacity: 0.04 } }).addTo(map);
    if (layer.getBounds().isValid()) map.fitBounds(layer.getBounds());
  }
  async function cachedJson(url, key) {
    if (navigator.onLine) {
      try {
        const response = await fetch(url);
        if (response.ok) {
          const data = await response.json();
          try { localStorage.setItem(key, JSON.stringify(data)); } catch (e) { /* full */ }
          return data;
        }
      } catch (e) { /* fall back to the copy kept */ }
    }
    const kept = localStorage.getItem(key);
    return kept ? JSON.parse(kept) : null;
  }

  $("locate").addEventListener("click", () => {
    $("position").textContent = "定位中… locating…";
    navigator.geolocation.getCurrentPosition(
      (p) => {
        setPosition(p.coords.longitude, p.coords.latitude, "gps");
        map.setView([p.coords.latitude, p.coords.longitude], 16);
      },
      (err) => { $("position").textContent = `无法定位 cannot locate: ${err.message}`; },
      { enableHighAccuracy: true, timeout: 15000, maximumAge: 30000 });
  });

  function searchMatters() {
    const q = $("matter-search").value.trim().toLowerCase();
    const hits = !q ? [] : F.matters.filter((m) =>
      [m.code, m.zh, m.en, ...m.keywords].some((t) => t.toLowerCase().includes(q))).slice(0, 8);
    $("matter-list").replaceChildren(...hits.map((m) => el("li", null,
      el("button", { type: "button", textContent: `${m.zh} · ${m.en} (${m.code})`,
        onclick: () => chooseMatter(m) }))));
  }
  function chooseMatter(m) {
    F.matter = m;
    $("matter-chosen").textContent = `✔ ${m.zh} · ${m.en} (${m.code})`;
    $("matter-list").replaceChildren();
    $("matter-search").value = "";
  }
  $("matter-search").addEventListener("input", searchMatters);

  // Resized on the phone: a 12-megapixel photo becomes a few hundred kB to send.
  async function resize(file) {
    const bitmap = await createImageBitmap(file, { imageOrientation: "from-image" });
    const scale = Math.min(1, RESIZE_PX / Math.max(bitmap.width, bitmap.height));
    const canvas = el("canvas", {
      width: Math.round(bitmap.width * scale), height: Math.round(bitmap.height * scale) });
    canvas.getContext("2d").drawImage(bitmap, 0, 0, canvas.width, canvas.height);
    F.resized.push([bitmap.width, bitmap.height, canvas.width, canvas.height]);
    return new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", 0.85));
  }
  async function photosOf(input) {
    return Promise.all(Array.from(input.files).slice(0, MAX_PHOTOS).map(resize));
  }
  $("photos").addEventListener("change", () => {
    const files = Array.from($("photos").files);
    $("photo-previews").replaceChildren(...files.slice(0, MAX_PHOTOS).map((f) =>
      el("img", { src: URL.createObjectURL(f), alt: f.name })));
    if (files.length > MAX_PHOTOS) {
      $("report-status").textContent = `只发送前 ${MAX_PHOTOS} 张 only the first ${MAX_PHOTOS} are sent`;
    }
  });

  function incidentId() {
    const t = new Date().toISOString().replace(/[-:]/g, "").slice(0, 15);
    return `FLD-${t}-${newKey().replace(/-/g, "").slice(0, 8)}`;
  }

  $("send").addEventListener("click", async () => {
    const status = $("report-status");
    if (!F.position) { status.textContent = "请先定位或点地图 locate or tap the map first"; return; }
    if (!F.matter) { status.textContent = "请选择事项 choose the matter"; return; }
    const id = incidentId();
    const photos = await photosOf($("photos"));
    await enqueue({
      kind: "report",
      label: `上报 report · ${F.matter.zh} · ${id}`,
      url: "/api/v1/field/reports",
      fields: {
        matter_code: F.matter.code, lon: String(F.position.lon), lat: String(F.position.lat),
        crs: "wgs84", description: $("description").value.trim(), incident_id: id,
        reported_at: new Date().toISOString(),
      },
      photos,
    });
    if (!navigator.onLine) status.textContent = `已存入待发送 queued: ${id}（联网后发送 sent when online）`;
    $("description").value = "";
    $("photos").value = "";
    $("photo-previews").replaceChildren();
  });

  // ------------------------------------------------------------------------------------------
  // my tasks
  // ------------------------------------------------------------------------------------------
  async function loadTasks() {
    let tasks = null;
    if (navigator.onLine && token) {
      try {
        const response = await fetch("/api/v1/field/tasks", { headers: auth() });
        if (response.ok) {
          tasks = await response.json();
          localStorage.setItem(TASKS_KEY, JSON.stringify(tasks));
        } else {
          $("tasks-status").textContent = `无法读取任务 cannot read tasks (${response.status})`;
        }
      } catch (e) { /* offline meanwhile: the kept list */ }
    }
    tasks = tasks || JSON.parse(localStorage.getItem(TASKS_KEY) || "null");
    if (tasks) renderTasks(tasks);
    return tasks;
  }
  F.loadTasks = loadTasks;

  function actionItem(incident, action, fields, photos) {
    const url = photos === null
      ? `/api/v1/incidents/${incident.incident_id}/actions/${action}`
      : `/api/v1/field/incidents/${incident.incident_id}/actions/${action}`;
    return enqueue({
      kind: "action", label: `${ACTIONS[action]} · ${incident.incident_id}`, url,
      json: photos === null ? fields : null, fields: photos === null ? {} : fields,
      photos: photos || [],
    });
  }

  function unitButtons(incident) {
    const step = { dispatched: "acknowledge", acknowledged: "arrive" }[incident.status];
    if (step) {
      return [el("button", { type: "button", className: `do-${step}`, textContent: ACTIONS[step],
        onclick: () => actionItem(incident, step, {}, null) })];
    }
    if (incident.status !== "on_scene") return [];
    const file = el("input", { type: "file", accept: "image/*", capture: "environment",
      className: "action-photo", multiple: true });
    return [file, el("button", { type: "button", className: "do-resolve", textContent: ACTIONS.resolve,
      onclick: async () => actionItem(incident, "resolve", {}, await photosOf(file)) })];
  }

  function verifyButtons(incident) {
    const file = el("input", { type: "file", accept: "image/*", capture: "environment",
      className: "action-photo", multiple: true });
    const reason = el("input", { type: "text", className: "reopen-reason",
      placeholder: "重新处理的原因 why reopen" });
    return [
      file,
      el("button", { type: "button", className: "do-verify", textContent: ACTIONS.verify,
        onclick: async () => actionItem(incident, "verify", {}, await photosOf(file)) }),
      reason,
      el("button", { type: "button", className: "do-reopen", textContent: ACTIONS.reopen,
        onclick: async () => {
          if (!reason.value.trim()) { reason.focus(); return; }
          await actionItem(incident, "reopen", { reason: reason.value.trim() }, await photosOf(file));
        } }),
    ];
  }

  function card(incident, buttons) {
    const matter = F.matters.find((m) => m.code === incident.matter_code);
    const li = el("li", null,
      el("div", { className: "title",
        textContent: `${matter ? matter.zh : incident.matter_code} · ` +
          `${STATES[incident.status] || incident.status}` }),
      el("div", { className: "meta", textContent: `${incident.incident_id} · ` +
        new Date(incident.reported_at).toLocaleString("zh-CN") }));
    li.dataset.id = incident.incident_id;
    li.dataset.status = incident.status;
    if (incident.description) li.append(el("div", { textContent: incident.description }));
    const history = el("div", { className: "history" });
    const actions = el("div", { className: "actions" }, ...buttons,
      el("button", { type: "button", className: "do-history", textContent: "记录 History",
        onclick: () => showHistory(incident.incident_id, history) }));
    li.append(actions, history);
    return li;
  }

  function renderTasks(tasks) {
    F.role = tasks.role;
    F.unitId = tasks.unit_id;
    $("assigned-box").hidden = tasks.role !== "unit";
    $("verify-box").hidden = tasks.role !== "grid_worker";
    $("avl").hidden = !tasks.unit_id;
    $("assigned").replaceChildren(...tasks.assigned.map((i) => card(i, unitButtons(i))));
    $("to-verify").replaceChildren(...tasks.to_verify.map((i) => card(i, verifyButtons(i))));
    $("reported").replaceChildren(...tasks.reported.map((i) => card(i, [])));
  }

  // The photos of an incident in the order of its events (thumbnails fetched with the token).
  async function showHistory(incidentId, box) {
    if (!navigator.onLine) { box.textContent = "离线 offline"; return; }
    const response = await fetch(`/api/v1/incidents/${incidentId}/media`, { headers: auth() });
    if (!response.ok) { box.textContent = `${response.status}`; return; }
    const { items } = await response.json();
    const figures = [];
    for (const item of items) {
      const caption = el("figcaption", { textContent: KINDS[item.kind] });
      const figure = el("figure", null);
      figure.dataset.kind = item.kind;
      figure.dataset.seq = String(item.event_seq);
      if (item.thumbnail_url) {
        const thumb = await fetch(item.thumbnail_url, { headers: auth() });
        if (thumb.ok) {
          figure.append(el("img", { src: URL.createObjectURL(await thumb.blob()), alt: item.kind }));
        }
      } else {
        caption.textContent += ` · 已删除 removed: ${item.removed_reason}`;
      }
      figure.append(caption);
      figures.push(figure);
    }
    if (!figures.length) figures.push(el("span", { textContent: "无照片 no photos" }));
    box.replaceChildren(...figures);
  }

  // ------------------------------------------------------------------------------------------
  // AVL: a unit's position while the page is open and the user allows it
  // ------------------------------------------------------------------------------------------
  function onFix(p) {
    F.avl.lastFix = Date.now();
    checkStale();
    if (Date.now() - F.avl.lastSent < AVL_MIN_MS || !navigator.onLine) {
      F.avl.skipped += 1;
      return;
    }
    F.avl.lastSent = Date.now();
    fetch(`/api/v1/units/${encodeURIComponent(F.unitId)}/position`, {
      method: "POST",
      headers: { ...auth(), "Content-Type": "application/json" },
      body: JSON.stringify({ lon: p.coords.longitude, lat: p.coords.latitude,
        at: new Date(p.timestamp).toISOString() }),
    }).then((r) => { if (r.ok) F.avl.sent += 1; }, () => { F.avl.lastSent = 0; });
  }
  function checkStale() {
    F.avl.stale = F.avl.watch !== null && Date.now() - F.avl.lastFix > AVL_STALE_MS;
    const state = $("avl-state");
    state.className = F.avl.stale ? "stale" : "";
    state.textContent = F.avl.watch === null ? ""
      : F.avl.stale ? "位置已过时 position stale" : "位置已共享 position shared";
  }
  F.checkStale = checkStale;
  $("avl-on").addEventListener("change", (e) => {
    if (e.target.checked && F.unitId) {
      F.avl.lastFix = Date.now();
      F.avl.watch = navigator.geolocation.watchPosition(onFix, checkStale,
        { enableHighAccuracy: true, maximumAge: 5000 });
    } else if (F.avl.watch !== null) {
      navigator.geolocation.clearWatch(F.avl.watch);
      F.avl.watch = null;
    }
    checkStale();
  });
  setInterval(checkStale, 5000);

  // ------------------------------------------------------------------------------------------
  // tabs and start
  // ------------------------------------------------------------------------------------------
  for (const tab of document.querySelectorAll("nav .tab")) {
    tab.addEventListener("click", () => {
      for (const other of document.querySelectorAll("nav .tab")) {
        other.classList.toggle("on", other === tab);
        $(`tab-${other.dataset.tab}`).hidden = other !== tab;
      }
      if (tab.dataset.tab === "report") map.invalidateSize();
      if (tab.dataset.tab === "tasks") loadTasks();
    });
  }
  setInterval(() => { if (navigator.onLine) flush(); }, 15000);

  async function start() {
    showNetwork();
    $("no-token").hidden = Boolean(token);
    if ("serviceWorker" in navigator) {
      F.worker = await navigator.serviceWorker.register("/field/sw.js", { scope: "/field" });
    }
    const [config, matters, streets] = await Promise.all([
      cachedJson("/field/config.json", CONFIG_KEY),
      cachedJson("/field/matters.json", MATTERS_KEY),
      cachedJson("/api/v1/areas/street?format=geojson&zoom=12", STREETS_KEY),
    ]);
    F.matters = matters || [];
    drawBase(config || { tiles: [], roads: true });
    if (streets) drawStreets(streets);
    await renderQueue();
    if (token) await loadTasks();
    if (navigator.onLine) await flush();
    F.ready = true;
  }
  start();
})();
