/* gridgov dispatcher's workspace (/console): queue, detail, call taking, unit board, map.
 *
 * Everything shown comes from the API with the bearer token of the URL fragment
 * (/console#token=gg_...; kept in sessionStorage, removed from the address bar), so the
 * caller's scope decides what reaches the browser. The page polls the live feed
 * (GET /api/v1/live?since=<cursor>, If-None-Match) and reads the queue and the unit board again
 * whenever it changed. Rows turn red at the exact instant their stage falls due: a timer per
 * row fires then (Date and timers are the browser's, so a test can drive them).
 * window.GGC is the page's state, for the keyboard and for tests.
 */
(function () {
  "use strict";
  var root = document.getElementById("gg-console");
  var FEED = root.getAttribute("data-feed");
  var INTERVAL = parseInt(root.getAttribute("data-interval"), 10) || 1000;
  var GROUPS = ["overdue", "dispatch", "acknowledge", "work", "verify"];
  var PRIORITY_COLOURS = { 1: "#c0392b", 2: "#e67e22", 3: "#f1c40f", 4: "#3498db" };
  var STATUS_COLOURS = { available: "#27ae60", busy: "#c0392b", off_duty: "#7f8c8d" };
  var T = {
    title: ["调度工作台", "Dispatcher's workspace"],
    overdue: ["已超时", "Overdue"],
    dispatch: ["待派遣", "Waiting for dispatch"],
    acknowledge: ["待响应", "Waiting for acknowledgement"],
    work: ["处置中", "On the way / on scene"],
    verify: ["待核查", "Resolved, to verify"],
    filter: ["筛选 (/)", "Filter (/)"],
    newCall: ["新来电 (N)", "New call (N)"],
    units: ["单位", "Units"],
    recommendation: ["推荐", "Recommendation"],
    confirm: ["确认派遣 (C)", "Confirm (C)"],
    assignOther: ["改派其他单位", "Assign other"],
    assign: ["派遣所选", "Assign chosen"],
    reason: ["理由 (改派必填)", "Reason (required to override)"],
    history: ["历史", "History"],
    release: ["撤回", "Release"],
    reassign: ["改派", "Reassign"],
    backup: ["增援", "Add backup"],
    cancel: ["撤销", "Cancel"],
    duplicate: ["标记重复", "Mark as duplicate of"],
    matter: ["事项 (关键词)", "Matter (keyword)"],
    place: ["位置: 点击地图或输入坐标", "Place: click the map or type coordinates"],
    description: ["描述", "Description"],
    contact: ["来电人联系方式", "Caller contact"],
    submit: ["登记", "Register call"],
    noToken: ["未提供访问令牌: 请以 /console#token=gg_… 打开", "No access token: open /console#token=gg_…"],
    select: ["请选择左侧事件", "Select an incident in the queue"],
    due: ["剩余", "due in"],
    late: ["超时", "late by"],
    none: ["无", "none"],
    kind: ["类别", "Kind"],
    status: ["状态", "Status"],
    incident: ["事件", "Incident"],
    since: ["持续", "For"],
    stale: ["定位过期", "Stale position"],
    duty: ["在岗", "On duty"],
    mode: ["派遣模式", "Dispatch mode"],
    unit: ["单位", "Unit"],
    lang: ["EN", "中文"],
    out: ["不可用", "out"],
  };

  var GGC = (window.GGC = {
    ready: false,
    lang: "zh",
    queue: [],
    units: [],
    matters: {},
    labels: {},
    streets: {},
    selected: null,
    recommendation: null,
    lastChoice: null,
    message: null,
    polls: 0,
    refreshes: 0,
    cursor: null,
    markers: {},
    unitMarkers: {},
    routes: {},
    map: null,
  });

  function t(key) {
    var pair = T[key] || [key, key];
    return GGC.lang === "zh" ? pair[0] : pair[1];
  }
  function label(group, value) {
    var g = GGC.labels[group] || {};
    var pair = g[String(value)];
    if (!pair) return String(value);
    return GGC.lang === "zh" ? pair[0] : pair[1];
  }
  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    for (var k in attrs || {}) {
      if (k === "text") node.textContent = attrs[k];
      else if (k === "cls") node.className = attrs[k];
      else if (k.slice(0, 2) === "on") node.addEventListener(k.slice(2), attrs[k]);
      else node.setAttribute(k, attrs[k]);
    }
    (children || []).forEach(function (c) {
      if (c) node.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    });
    return node;
  }
  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }
  function duration(seconds) {
    var s = Math.max(0, Math.floor(seconds));
    var h = Math.floor(s / 3600);
    var m = Math.floor((s % 3600) / 60);
    var pad = function (n) {
      return (n < 10 ? "0" : "") + n;
    };
    return (h ? h + ":" + pad(m) : m) + ":" + pad(s % 60);
  }
  function minutes(seconds) {
    return seconds === null || seconds === undefined ? "–" : (seconds / 60).toFixed(1) + " min";
  }

  // ------------------------------------------------------------------ token and API

  function readToken() {
    var match = /(?:^#|&)token=([^&]+)/.exec(window.location.hash);
    if (match) {
      var token = decodeURIComponent(match[1]);
      try {
        window.sessionStorage.setItem("gridgov.token", token);
      } catch (e) {
        /* storage disabled: the token lives as long as the page */
      }
      window.history.replaceState(null, "", window.location.pathname + window.location.search);
      return token;
    }
    try {
      return window.sessionStorage.getItem("gridgov.token");
    } catch (e) {
      return null;
    }
  }
  var token = readToken();

  function api(method, path, body, extra) {
    var headers = { Authorization: "Bearer " + token };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    for (var k in extra || {}) headers[k] = extra[k];
    return fetch(path, {
      method: method,
      headers: headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    }).then(function (r) {
      if (r.status === 304) return { status: 304, body: null, headers: r.headers };
      return r.text().then(function (text) {
        var parsed = null;
        try {
          parsed = text ? JSON.parse(text) : null;
        } catch (e) {
          parsed = { detail: text };
        }
        return { status: r.status, body: parsed, headers: r.headers };
      });
    });
  }
  function detailOf(answer) {
    var b = answer.body || {};
    if (b.fields && b.fields.length) {
      return b.fields.map(function (f) { return f.field + ": " + f.message; }).join("; ");
    }
    if (typeof b.message === "string") return b.message;
    if (typeof b.detail === "string") return b.detail;
    if (b.detail && b.detail.length) return b.detail.map(function (d) { return d.msg; }).join("; ");
    return "HTTP " + answer.status;
  }
  function say(text, bad) {
    GGC.message = text;
    var box = document.getElementById("gg-message");
    box.textContent = text || "";
    box.className = "gg-message" + (bad ? " gg-bad" : "");
  }

  // ------------------------------------------------------------------ layout

  var header = el("header", { cls: "gg-header" });
  var queuePane = el("section", { cls: "gg-queue", id: "gg-queue" });
  var mapPane = el("section", { cls: "gg-map", id: "gg-map" });
  var sidePane = el("section", { cls: "gg-side", id: "gg-side" });
  var boardPane = el("section", { cls: "gg-board", id: "gg-board" });
  [header, queuePane, mapPane, sidePane, boardPane].forEach(function (n) {
    root.appendChild(n);
  });

  function renderHeader() {
    clear(header);
    header.appendChild(el("h1", { text: t("title") }));
    header.appendChild(el("span", { id: "gg-scope", cls: "gg-scope", text: GGC.scopeText || "" }));
    header.appendChild(el("span", { id: "gg-mode", cls: "gg-mode", text: GGC.modeText || "" }));
    header.appendChild(
      el("button", { id: "gg-new-call", type: "button", text: t("newCall"), onclick: showCallForm })
    );
    header.appendChild(
      el("button", { id: "gg-lang", type: "button", text: t("lang"), onclick: toggleLang })
    );
    header.appendChild(el("span", { id: "gg-live", cls: "gg-live", text: GGC.liveText || "" }));
  }

  function toggleLang() {
    GGC.lang = GGC.lang === "zh" ? "en" : "zh";
    document.documentElement.lang = GGC.lang === "zh" ? "zh-CN" : "en";
    renderAll();
  }

  // ------------------------------------------------------------------ queue

  var filterText = "";
  var dueTimers = {};

  function isOverdue(item) {
    return item.deadline !== null && Date.now() > Date.parse(item.deadline);
  }
  function groupOf(item) {
    return isOverdue(item) ? "overdue" : item.group;
  }
  function place(item) {
    var street = GGC.streets[item.street_code] || item.street_code || "";
    return street + " / " + (item.community_code || "–") + " / " + (item.grid_code || "–");
  }
  function matches(item) {
    if (!filterText) return true;
    var hay = [item.incident_id, item.matter_code, label("matter", item.matter_code), place(item),
      item.status, item.description || ""].join(" ").toLowerCase();
    return hay.indexOf(filterText.toLowerCase()) >= 0;
  }
  function countdown(item) {
    if (item.deadline === null) return "";
    var left = (Date.parse(item.deadline) - Date.now()) / 1000;
    return left >= 0 ? t("due") + " " + duration(left) : t("late") + " " + duration(-left);
  }

  function renderQueue() {
    clear(queuePane);
    var input = el("input", {
      id: "gg-filter", type: "search", placeholder: t("filter"), value: filterText,
      oninput: function (e) {
        filterText = e.target.value;
        renderQueueBody();
      },
    });
    queuePane.appendChild(input);
    queuePane.appendChild(el("div", { id: "gg-queue-body" }));
    renderQueueBody();
  }

  function renderQueueBody() {
    var body = document.getElementById("gg-queue-body");
    clear(body);
    GROUPS.forEach(function (group) {
      var items = GGC.queue.filter(function (i) {
        return groupOf(i) === group && matches(i);
      });
      var list = el("div", { cls: "gg-group", "data-group": group }, [
        el("h2", { text: t(group) + " (" + items.length + ")" }),
      ]);
      items.forEach(function (item) {
        var row = el(
          "div",
          {
            cls: "gg-row" + (isOverdue(item) ? " gg-overdue" : "") +
              (GGC.selected === item.incident_id ? " gg-selected" : ""),
            "data-id": item.incident_id,
            tabindex: "0",
            onclick: function () {
              select(item.incident_id, true);
            },
          },
          [
            el("span", { cls: "gg-prio gg-p" + item.priority, text: "P" + item.priority }),
            el("span", { cls: "gg-matter", text: label("matter", item.matter_code) }),
            el("span", { cls: "gg-place", text: place(item) }),
            el("span", { cls: "gg-age", text: duration(item.age_s + (Date.now() - GGC.loadedAt) / 1000) }),
            el("span", { cls: "gg-countdown", text: countdown(item) }),
          ]
        );
        list.appendChild(row);
      });
      body.appendChild(list);
    });
  }

  // A timer per deadline: the row turns red at that instant, not at the next tick.
  function armDeadlines() {
    for (var id in dueTimers) clearTimeout(dueTimers[id]);
    dueTimers = {};
    GGC.queue.forEach(function (item) {
      if (item.deadline === null || isOverdue(item)) return;
      var wait = Date.parse(item.deadline) - Date.now() + 1;
      dueTimers[item.incident_id] = setTimeout(renderQueueBody, wait);
    });
  }

  function refreshQueue() {
    return api("GET", "/api/v1/console/queue").then(function (a) {
      if (a.status !== 200) return;
      GGC.queue = a.body.items;
      GGC.loadedAt = Date.now();
      GGC.refreshes += 1;
      renderQueueBody();
      armDeadlines();
      drawIncidents();
      if (GGC.selected) renderDetailHeader();
    });
  }

  // ------------------------------------------------------------------ unit board

  function renderBoard() {
    clear(boardPane);
    var head = el("tr", {}, [t("unit"), t("kind"), t("status"), t("incident"), t("since"),
      t("stale"), t("duty")].map(function (h) {
      return el("th", { text: h });
    }));
    var rows = GGC.units.map(function (u) {
      var since = u.since ? duration((Date.now() - Date.parse(u.since)) / 1000) : "–";
      return el("tr", { "data-unit": u.unit_id, cls: "gg-unit-" + u.status, onclick: function () {
        if (u.incident_id) select(u.incident_id, true);
        else if (u.lat !== null) GGC.map.panTo([u.lat, u.lon]);
      } }, [
        el("td", { text: u.unit_id + (u.name ? " " + u.name : "") }),
        el("td", { text: label("kind", u.kind) }),
        el("td", { cls: "gg-status", text: label("unit_status", u.status) }),
        el("td", { text: u.incident_id || "–" }),
        el("td", { text: since }),
        el("td", { text: u.stale ? "⚠" : "" }),
        el("td", {}, [el("button", { type: "button", cls: "gg-duty", text: u.on_duty ? "✓" : "✗",
          title: t("duty"), onclick: function (e) {
            e.stopPropagation();
            toggleDuty(u);
          } })]),
      ]);
    });
    boardPane.appendChild(el("table", { id: "gg-units" }, [el("thead", {}, [head]),
      el("tbody", {}, rows)]));
  }

  // Duty on or off by hand (a unit at work is released through its incident, not here).
  function toggleDuty(u) {
    var body = u.on_duty ? { status: "off_duty", on_duty: false } : { status: "available", on_duty: true };
    api("POST", "/api/v1/units/" + encodeURIComponent(u.unit_id) + "/status", body).then(function (a) {
      if (a.status !== 200) say(detailOf(a), true);
      refreshUnits();
    });
  }

  function refreshUnits() {
    return api("GET", "/api/v1/console/units").then(function (a) {
      if (a.status !== 200) return;
      GGC.units = a.body.items;
      renderBoard();
      drawUnits();
    });
  }

  // ------------------------------------------------------------------ map

  function initMap() {
    var map = (GGC.map = L.map(mapPane, { zoomControl: true, attributionControl: false }));
    map.setView([30.69, 104.05], 13);
    GGC.layers = {
      streets: L.layerGroup().addTo(map),
      routes: L.layerGroup().addTo(map),
      units: L.layerGroup().addTo(map),
      incidents: L.layerGroup().addTo(map),
      pick: L.layerGroup().addTo(map),
    };
    map.on("click", function (e) {
      var lon = document.getElementById("gg-lon");
      if (!lon) return;
      lon.value = e.latlng.lng.toFixed(6);
      document.getElementById("gg-lat").value = e.latlng.lat.toFixed(6);
      document.getElementById("gg-crs").value = "wgs84";
      GGC.layers.pick.clearLayers();
      L.circleMarker(e.latlng, { radius: 7, color: "#000", weight: 2 }).addTo(GGC.layers.pick);
    });
    return api("GET", "/api/v1/areas/street?zoom=13").then(function (a) {
      if (a.status !== 200) return;
      var layer = L.geoJSON(a.body, {
        style: { color: "#5d6d7e", weight: 1.5, fill: false },
        interactive: false,
      }).addTo(GGC.layers.streets);
      (a.body.features || []).forEach(function (f) {
        var p = f.properties || {};
        if (p.code) GGC.streets[p.code] = p.name || p.code;
      });
      var own = GGC.scope && GGC.scope.street_code;
      var bounds = layer.getBounds();
      layer.eachLayer(function (l) {
        if (own && l.feature.properties.code === own) bounds = l.getBounds();
      });
      if (bounds.isValid()) map.fitBounds(bounds);
    });
  }

  function drawIncidents() {
    if (!GGC.map) return;
    GGC.layers.incidents.clearLayers();
    GGC.markers = {};
    GGC.queue.forEach(function (item) {
      var m = L.circleMarker([item.lat, item.lon], {
        radius: GGC.selected === item.incident_id ? 11 : 7,
        color: "#222",
        weight: GGC.selected === item.incident_id ? 3 : 1,
        fillColor: PRIORITY_COLOURS[item.priority] || "#999",
        fillOpacity: 0.9,
      });
      m.bindTooltip(item.incident_id + " · " + label("matter", item.matter_code));
      m.on("click", function () {
        select(item.incident_id, false);
      });
      m.addTo(GGC.layers.incidents);
      GGC.markers[item.incident_id] = m;
    });
  }

  function drawUnits() {
    if (!GGC.map) return;
    GGC.layers.units.clearLayers();
    GGC.unitMarkers = {};
    GGC.units.forEach(function (u) {
      if (u.lat === null) return;
      var m = L.circleMarker([u.lat, u.lon], {
        radius: 4,
        color: STATUS_COLOURS[u.status] || "#555",
        weight: 2,
        fillOpacity: 0.4,
      });
      m.bindTooltip(u.unit_id + " · " + label("kind", u.kind) + " · " + label("unit_status", u.status));
      m.addTo(GGC.layers.units);
      GGC.unitMarkers[u.unit_id] = m;
    });
  }

  // The feed's route rows: [priority, incident, unit, straight, [[lon, lat]...]].
  function applyRoutes(answer) {
    if (answer.reset) {
      GGC.layers.routes.clearLayers();
      GGC.routes = {};
    }
    var touched = (answer.incidents.rows || []).map(function (r) {
      return r[3];
    }).concat(answer.closed || []);
    touched.forEach(function (id) {
      (GGC.routes[id] || []).forEach(function (line) {
        GGC.layers.routes.removeLayer(line);
      });
      delete GGC.routes[id];
    });
    (answer.routes.rows || []).forEach(function (r) {
      var latlngs = r[4].map(function (c) {
        return [c[1], c[0]];
      });
      var line = L.polyline(latlngs, {
        color: PRIORITY_COLOURS[r[0]] || "#555",
        weight: 4,
        opacity: 0.8,
        dashArray: r[3] ? "6 6" : null,
      }).addTo(GGC.layers.routes);
      line.ggUnit = r[2];
      (GGC.routes[r[1]] = GGC.routes[r[1]] || []).push(line);
    });
  }

  // ------------------------------------------------------------------ selection and detail

  function select(id, centre) {
    GGC.selected = id;
    GGC.recommendation = null;
    var item = find(id);
    renderQueueBody();
    drawIncidents();
    if (item && centre) GGC.map.setView([item.lat, item.lon], Math.max(GGC.map.getZoom(), 15));
    var row = queuePane.querySelector('[data-id="' + id + '"]');
    if (row && row.scrollIntoView) row.scrollIntoView({ block: "nearest" });
    renderDetail();
  }
  function find(id) {
    for (var i = 0; i < GGC.queue.length; i++) if (GGC.queue[i].incident_id === id) return GGC.queue[i];
    return null;
  }

  function renderDetailHeader() {
    var box = document.getElementById("gg-detail-head");
    var item = find(GGC.selected);
    if (!box || !item) return;
    clear(box);
    box.appendChild(el("h2", { text: item.incident_id }));
    box.appendChild(el("p", { text: "P" + item.priority + " · " + label("matter", item.matter_code) +
      " · " + label("state", item.status) }));
    box.appendChild(el("p", { cls: "gg-place", text: place(item) }));
    if (item.description) box.appendChild(el("p", { text: item.description }));
    if (item.deadline) box.appendChild(el("p", { cls: "gg-countdown", text: label("action", item.stage) + " · " + countdown(item) }));
  }

  function renderDetail() {
    clear(sidePane);
    sidePane.appendChild(el("div", { id: "gg-message", cls: "gg-message" }));
    var item = find(GGC.selected);
    if (!item) {
      sidePane.appendChild(el("p", { cls: "gg-hint", text: t("select") }));
      return;
    }
    sidePane.appendChild(el("div", { id: "gg-detail-head" }));
    renderDetailHeader();
    var body = el("div", { id: "gg-detail" });
    sidePane.appendChild(body);
    if (item.status === "registered") {
      body.appendChild(el("div", { id: "gg-recommendation", cls: "gg-rec", text: "…" }));
      loadRecommendation(item.incident_id);
    } else if (item.units.length) {
      body.appendChild(el("h3", { text: t("units") }));
      item.units.forEach(function (u) {
        body.appendChild(el("div", { cls: "gg-active-unit", "data-unit": u }, [
          el("span", { text: u + " " }),
          el("button", { type: "button", cls: "gg-release", text: t("release"), onclick: function () {
            changeUnit(item.incident_id, u, null);
          } }),
          el("button", { type: "button", cls: "gg-reassign", text: t("reassign"), onclick: function () {
            reassignPicker(item.incident_id, u);
          } }),
        ]));
      });
      body.appendChild(el("button", { id: "gg-backup", type: "button", text: t("backup"), onclick: function () {
        api("POST", "/api/v1/incidents/" + item.incident_id + "/backup", {}).then(done);
      } }));
    }
    body.appendChild(el("textarea", { id: "gg-reason", rows: "2", placeholder: t("reason") }));
    var actions = el("div", { id: "gg-actions", cls: "gg-actions" });
    item.actions.forEach(function (action) {
      actions.appendChild(el("button", { type: "button", "data-action": action, text: label("action", action),
        onclick: function () { act(item.incident_id, action, {}); } }));
    });
    var dup = el("input", { id: "gg-duplicate-of", placeholder: "ID", size: "16" });
    actions.appendChild(el("span", { cls: "gg-dup" }, [
      dup,
      el("button", { id: "gg-mark-duplicate", type: "button", text: t("duplicate"), onclick: function () {
        act(item.incident_id, "cancel", { duplicate_of: dup.value, reason: "duplicate of " + dup.value });
      } }),
    ]));
    body.appendChild(actions);
    var history = el("ol", { id: "gg-history", cls: "gg-history" });
    body.appendChild(el("h3", { text: t("history") }));
    body.appendChild(history);
    api("GET", "/api/v1/incidents/" + item.incident_id).then(function (a) {
      if (a.status !== 200 || GGC.selected !== item.incident_id) return;
      var latest = a.body.dispatch;
      if (latest && latest.assignments && latest.assignments.length) {
        var box = el("div", { id: "gg-latest", cls: "gg-latest" }, [
          el("h3", { text: GGC.lang === "zh" ? "最近派遣" : "Latest dispatch" }),
        ]);
        latest.assignments.forEach(function (x) {
          box.appendChild(el("p", { text: x.unit_id + " · " + label("kind", x.kind) + " · " +
            label("rule", x.rule) + " · " + minutes(x.time_s) + (x.active ? "" : " (" + (x.release_reason || "") + ")") }));
        });
        history.parentNode.insertBefore(box, history.previousSibling);
      }
      a.body.events.forEach(function (ev) {
        history.appendChild(el("li", { text: ev.at.slice(11, 19) + " " + label("action", ev.action) +
          " → " + label("state", ev.to_state) + (ev.reason ? " (" + ev.reason + ")" : "") }));
      });
    });
  }

  function reasonText() {
    var box = document.getElementById("gg-reason");
    return box ? box.value.trim() : "";
  }

  function act(id, action, extra) {
    var body = { reason: extra.reason || reasonText() || null };
    if (extra.duplicate_of) body.duplicate_of = extra.duplicate_of;
    api("POST", "/api/v1/incidents/" + id + "/actions/" + action, body).then(done);
  }

  function changeUnit(id, unit, replacement) {
    var path = "/api/v1/incidents/" + id + "/assignments/" + encodeURIComponent(unit) +
      "?reason=" + encodeURIComponent(reasonText() || "") +
      (replacement ? "&replace_with=" + encodeURIComponent(replacement) : "");
    api("DELETE", path).then(done);
  }

  function reassignPicker(id, unit) {
    api("POST", "/api/v1/incidents/" + id + "/recommendation").then(function (a) {
      if (a.status !== 200) return say(detailOf(a), true);
      var box = document.getElementById("gg-detail");
      var pick = el("select", { id: "gg-reassign-to" });
      a.body.kinds.forEach(function (k) {
        k.candidates.forEach(function (c) {
          pick.appendChild(el("option", { value: c.unit_id, text: c.unit_id + " · " + label("kind", k.kind) + " · " + minutes(c.time_s) }));
        });
      });
      box.insertBefore(el("div", { cls: "gg-picker" }, [pick, el("button", { type: "button", id: "gg-reassign-go",
        text: t("reassign"), onclick: function () { changeUnit(id, unit, pick.value); } })]), box.firstChild);
    });
  }

  function done(a) {
    if (a.status >= 200 && a.status < 300) {
      say("✓ " + (a.body && (a.body.action || a.body.status) || "ok"), false);
    } else {
      say(detailOf(a), true);
    }
    refreshQueue().then(function () {
      if (GGC.selected && !find(GGC.selected)) GGC.selected = null;
      var keep = GGC.message;
      renderDetail();
      say(keep, !(a.status >= 200 && a.status < 300));
    });
    refreshUnits();
  }

  // ------------------------------------------------------------------ recommendation

  function loadRecommendation(id) {
    return api("POST", "/api/v1/incidents/" + id + "/recommendation").then(function (a) {
      if (GGC.selected !== id) return;
      if (a.status !== 200) return say(detailOf(a), true);
      showRecommendation(id, a.body);
    });
  }

  function showRecommendation(id, rec) {
    GGC.recommendation = rec;
    var box = document.getElementById("gg-recommendation");
    if (!box) return;
    clear(box);
    box.appendChild(el("h3", { text: t("recommendation") }));
    var notes = (rec.decision.explanation && rec.decision.explanation.kinds) || [];
    rec.kinds.forEach(function (k) {
      var unit = k.recommended;
      var note = notes.filter(function (n) { return n.kind === k.kind; })[0] || {};
      var cand = k.candidates.filter(function (c) { return c.unit_id === unit; })[0];
      box.appendChild(el("p", { cls: "gg-rec-unit", "data-kind": k.kind, text: label("kind", k.kind) + ": " +
        (unit || t("none")) + (cand ? " · " + minutes(cand.time_s) : "") +
        (note.rule ? " · " + label("rule", note.rule) : "") +
        (note.accepted_tier ? " · " + label("tier", note.accepted_tier) : "") +
        (note.unfilled_reason ? " · " + note.unfilled_reason : "") }));
    });
    box.appendChild(el("button", { id: "gg-confirm", type: "button", cls: "gg-primary", text: t("confirm"),
      onclick: function () { choose(id, null); } }));
    box.appendChild(el("h3", { text: t("assignOther") }));
    var picker = el("div", { id: "gg-picker", cls: "gg-picker" });
    rec.kinds.forEach(function (k) {
      var sel = el("select", { "data-kind": k.kind, cls: "gg-pick" });
      k.candidates.forEach(function (c) {
        var o = el("option", { value: c.unit_id, text: c.unit_id + " · " + minutes(c.time_s) + " · " + c.street_code });
        if (c.unit_id === k.recommended) o.selected = true;
        sel.appendChild(o);
      });
      k.left_out.forEach(function (o) {
        sel.appendChild(el("option", { value: o.unit_id, disabled: "disabled",
          text: o.unit_id + " · " + t("out") + ": " + o.note }));
      });
      picker.appendChild(el("label", {}, [label("kind", k.kind) + " ", sel]));
    });
    picker.appendChild(el("button", { id: "gg-assign", type: "button", text: t("assign"), onclick: function () {
      var units = {};
      picker.querySelectorAll("select.gg-pick").forEach(function (s) {
        if (s.value) units[s.getAttribute("data-kind")] = s.value;
      });
      choose(id, units);
    } }));
    box.appendChild(picker);
  }

  function choose(id, units) {
    var rec = GGC.recommendation;
    var body = { recommended: rec ? rec.recommended : null };
    if (units) {
      body.units = units;
      body.reason = reasonText() || null;
    }
    return api("POST", "/api/v1/incidents/" + id + "/assignments", body).then(function (a) {
      GGC.lastChoice = { status: a.status, body: a.body };
      if (a.status === 409) {
        say(detailOf(a) + " — " + (GGC.lang === "zh" ? "已更新推荐" : "fresh recommendation below"), true);
        showRecommendation(id, a.body.recommendation);
        return;
      }
      // A refusal keeps the form as it is (the reason typed, the unit picked).
      if (a.status >= 400) return say(detailOf(a), true);
      done(a);
    });
  }

  // ------------------------------------------------------------------ call taking

  function showCallForm() {
    GGC.selected = null;
    renderQueueBody();
    clear(sidePane);
    sidePane.appendChild(el("div", { id: "gg-message", cls: "gg-message" }));
    var chosen = el("input", { id: "gg-matter", type: "hidden" });
    var results = el("ul", { id: "gg-matter-results", cls: "gg-results" });
    var search = el("input", { id: "gg-matter-search", type: "search", placeholder: t("matter"),
      oninput: function (e) {
        var q = e.target.value.trim().toLowerCase();
        clear(results);
        if (!q) return;
        Object.keys(GGC.matters).forEach(function (code) {
          var m = GGC.matters[code];
          var hay = [m.code, m.name_zh, m.name_en].concat(m.keywords).join(" ").toLowerCase();
          if (hay.indexOf(q) < 0) return;
          results.appendChild(el("li", { "data-code": m.code, text: m.code + " " + m.name_zh + " " + m.name_en,
            onclick: function () {
              chosen.value = m.code;
              search.value = m.code + " " + (GGC.lang === "zh" ? m.name_zh : m.name_en);
              clear(results);
            } }));
        });
      } });
    var crs = el("select", { id: "gg-crs" }, ["wgs84", "gcj02", "bd09"].map(function (c) {
      return el("option", { value: c, text: c });
    }));
    var form = el("form", { id: "gg-call", cls: "gg-call", onsubmit: function (e) {
      e.preventDefault();
      submitCall();
    } }, [
      el("h2", { text: t("newCall") }),
      el("label", {}, [t("matter"), search]), chosen, results,
      el("label", {}, [t("place")]),
      el("div", { cls: "gg-coords" }, [el("input", { id: "gg-lon", placeholder: "lon", size: "11" }),
        el("input", { id: "gg-lat", placeholder: "lat", size: "10" }), crs]),
      el("label", {}, [t("description"), el("textarea", { id: "gg-desc", rows: "2" })]),
      el("label", {}, [t("contact"), el("input", { id: "gg-contact" })]),
      el("button", { id: "gg-submit", type: "submit", cls: "gg-primary", text: t("submit") }),
    ]);
    sidePane.appendChild(form);
    search.focus();
  }

  function submitCall() {
    var body = {
      matter_code: document.getElementById("gg-matter").value,
      lon: parseFloat(document.getElementById("gg-lon").value),
      lat: parseFloat(document.getElementById("gg-lat").value),
      crs: document.getElementById("gg-crs").value,
      description: document.getElementById("gg-desc").value || null,
      reporter: document.getElementById("gg-contact").value || null,
      // A call is confirmed by the dispatcher who took it: the recommendation shows next.
      dispatch: false,
    };
    api("POST", "/api/v1/incidents", body).then(function (a) {
      if (a.status !== 201) return say(detailOf(a), true);
      GGC.layers.pick.clearLayers();
      var id = a.body.incident_id;
      refreshQueue().then(function () {
        select(id, true);
      });
    });
  }

  // ------------------------------------------------------------------ live feed

  var etag = null;
  function poll() {
    var path = FEED + (GGC.cursor ? "?since=" + encodeURIComponent(GGC.cursor) : "");
    api("GET", path, undefined, etag ? { "If-None-Match": etag } : {})
      .then(function (a) {
        GGC.polls += 1;
        if (a.status === 401) {
          GGC.liveText = "401";
          renderHeader();
          return;
        }
        if (a.status === 200) {
          etag = a.headers.get("ETag");
          GGC.cursor = a.body.cursor;
          applyRoutes(a.body);
          if (a.body.changed || a.body.reset) {
            refreshQueue();
            refreshUnits();
          }
        }
        var live = document.getElementById("gg-live");
        GGC.liveText = "● " + new Date().toISOString().slice(11, 19) + "Z";
        if (live) live.textContent = GGC.liveText;
        setTimeout(poll, INTERVAL);
      })
      .catch(function () {
        GGC.liveText = "✗";
        setTimeout(poll, INTERVAL * 2);
      });
  }

  // ------------------------------------------------------------------ keyboard

  var rowsInOrder = function () {
    return Array.prototype.map.call(queuePane.querySelectorAll(".gg-row"), function (r) {
      return r.getAttribute("data-id");
    });
  };
  document.addEventListener("keydown", function (e) {
    var tag = (e.target && e.target.tagName) || "";
    if (tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT") {
      if (e.key === "Escape") e.target.blur();
      return;
    }
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    var ids = rowsInOrder();
    var at = ids.indexOf(GGC.selected);
    if (e.key === "n" || e.key === "N") showCallForm();
    else if (e.key === "/") {
      e.preventDefault();
      document.getElementById("gg-filter").focus();
    } else if (e.key === "j" || e.key === "ArrowDown") {
      if (ids.length) select(ids[Math.min(ids.length - 1, at + 1)], true);
    } else if (e.key === "k" || e.key === "ArrowUp") {
      if (ids.length) select(ids[Math.max(0, at - 1)], true);
    } else if ((e.key === "c" || e.key === "C") && GGC.selected && GGC.recommendation) {
      choose(GGC.selected, null);
    } else if (e.key === "l" || e.key === "L") toggleLang();
    else return;
    e.preventDefault();
  });

  // ------------------------------------------------------------------ start

  function renderAll() {
    renderHeader();
    renderQueue();
    renderBoard();
    if (GGC.selected) renderDetail();
    else if (!document.getElementById("gg-call")) renderDetail();
    drawIncidents();
    drawUnits();
  }

  setInterval(function () {
    // Ages and countdowns tick; the overdue instant itself is the deadline timers'.
    var spans = queuePane.querySelectorAll(".gg-row");
    Array.prototype.forEach.call(spans, function (row) {
      var item = find(row.getAttribute("data-id"));
      if (!item) return;
      row.querySelector(".gg-countdown").textContent = countdown(item);
      row.querySelector(".gg-age").textContent = duration(item.age_s + (Date.now() - GGC.loadedAt) / 1000);
    });
  }, 1000);

  renderAll();
  if (!token) {
    say(t("noToken"), true);
    return;
  }
  api("GET", FEED).then(function (first) {
    if (first.status !== 200) {
      say(detailOf(first), true);
      return;
    }
    var s = (GGC.scope = first.body.scope);
    GGC.scopeText = s.role + (s.street_code ? " · " + s.street_code : "");
    etag = first.headers.get("ETag");
    GGC.cursor = first.body.cursor;
    var modeCall = s.street_code
      ? api("GET", "/api/v1/streets/" + s.street_code + "/dispatch-mode").then(function (a) {
          if (a.status === 200) GGC.modeText = t("mode") + ": " + a.body.mode + (a.body.priority1_auto ? " (P1 auto)" : "");
        })
      : Promise.resolve();
    var matterCall = api("GET", "/api/v1/console/matters").then(function (a) {
      if (a.status !== 200) return;
      a.body.items.forEach(function (m) {
        GGC.matters[m.code] = m;
      });
      GGC.labels = a.body.labels;
    });
    return Promise.all([modeCall, matterCall]).then(function () {
      return initMap();
    }).then(function () {
      applyRoutes(first.body);
      return Promise.all([refreshQueue(), refreshUnits()]);
    }).then(function () {
      renderAll();
      GGC.ready = true;
      setTimeout(poll, INTERVAL);
    });
  });
})();
