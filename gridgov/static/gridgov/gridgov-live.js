/* gridgov live runtime: keeps a command-centre map's units, incidents and routes current.
 *
 * The page listens to the pushed feed (opts.stream, Server-Sent Events over fetch) and polls
 * the feed (GET /api/v1/live?since=<cursor>, If-None-Match: <ETag>) every opts.interval ms
 * only while no stream is open (else every 10 intervals, a check that the token still holds);
 * 304 means nothing changed. Incident markers are replaced one by one (by
 * incident id), units all at once when they changed. The bearer token comes from the URL
 * fragment (#token=gg_...: a fragment is never sent to the server), is kept in sessionStorage
 * and removed from the address bar. The page shows when it last heard from the server, and a
 * banner while it cannot (cleared on recovery). Needs gridgov-map.js (GG.incidentMarkers...).
 */
(function () {
  "use strict";
  var GG = (window.GG = window.GG || { maps: {}, ready: false });

  function pad(n) {
    return (n < 10 ? "0" : "") + n;
  }
  // HH:MM:SS in the command centre's time zone (the one incident times are shown in), else
  // the browser's own.
  function clockIn(timeZone) {
    if (timeZone && window.Intl) {
      try {
        var fmt = new Intl.DateTimeFormat("en-GB", {
          timeZone: timeZone,
          hour: "2-digit",
          minute: "2-digit",
          second: "2-digit",
          hourCycle: "h23",
        });
        return function (d) {
          return fmt.format(d);
        };
      } catch (e) {
        /* unknown zone: the browser's */
      }
    }
    return function (d) {
      return pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
    };
  }

  function readToken(key) {
    var match = /(?:^#|&)token=([^&]+)/.exec(window.location.hash);
    if (match) {
      var token = decodeURIComponent(match[1]);
      try {
        window.sessionStorage.setItem(key, token);
      } catch (e) {
        /* storage disabled: the token lives as long as the page */
      }
      // Off the address bar and out of the history, so it is not shown or bookmarked.
      window.history.replaceState(null, "", window.location.pathname + window.location.search);
      return token;
    }
    try {
      return window.sessionStorage.getItem(key);
    } catch (e) {
      return null;
    }
  }

  function banner() {
    var div = document.createElement("div");
    div.className = "gg-live-banner";
    div.setAttribute("role", "alert");
    div.style.display = "none";
    document.body.appendChild(div);
    return {
      div: div,
      show: function (text, fatal) {
        div.textContent = text;
        div.className = "gg-live-banner" + (fatal ? " gg-live-fatal" : "");
        div.style.display = "block";
      },
      hide: function () {
        div.style.display = "none";
        div.textContent = "";
      },
    };
  }

  function statusControl(map) {
    var control = L.control({ position: "bottomleft" });
    control.onAdd = function () {
      var div = L.DomUtil.create("div", "gg-live-status");
      div.textContent = "实时 live · 连接中 connecting…";
      return div;
    };
    control.addTo(map);
    return control.getContainer();
  }

  GG.live = function (map, opts) {
    var e = GG.entry(map);
    var interval = opts.interval || 1000;
    var state = (GG.liveState = e.live = {
      polls: 0,
      streams: 0,
      pushes: 0,
      updates: 0,
      unchanged: 0,
      failures: 0,
      connected: false,
      lastUpdate: null,
      lastUpdateText: null,
      cursor: null,
      error: null,
      stopped: false,
    });
    var clock = clockIn(opts.timeZone);
    var token = readToken(opts.tokenKey || "gridgov.token");
    var status = statusControl(map);
    var alert = banner();
    var etag = null;
    var byIncident = {}; // incident id -> marker
    var areaOf = {}; // open incident id -> [street, community, grid] codes
    var routesOf = {}; // incident id -> [lines]
    var byUnit = {}; // unit id -> marker
    var timer = null;
    var streaming = false; // a stream is open: polls are only a slow safety net
    var streamRetry = null;

    function group(name) {
      return e.layers[name];
    }

    function fatal(text) {
      state.stopped = true;
      state.error = text;
      alert.show(text, true);
      status.textContent = "实时 live · 已停止 stopped";
    }

    if (!token) {
      fatal(
        "未提供访问令牌 no access token: open this page as /#token=gg_… " +
          "(令牌由 gridgov token issue 签发 issued by `gridgov token issue`)"
      );
      return state;
    }

    function dropIncident(id) {
      var incidents = group("incidents");
      var old = byIncident[id];
      if (old) {
        incidents.removeLayer(old);
        GG.unsearch(map, [old]);
        delete byIncident[id];
      }
    }

    function dropRoutes(id) {
      var routes = group("routes");
      var lines = routesOf[id] || [];
      if (!routes) return;
      for (var i = 0; i < lines.length; i++) routes.removeLayer(lines[i]);
      delete routesOf[id];
    }

    var LEVELS = ["street", "community", "grid"];

    function areaColour(n) {
      var c = opts.areaClasses;
      if (!c || !n) return c ? c.none : "#d0d0d0";
      for (var i = 0; i < c.breaks.length; i++) if (n <= c.breaks[i]) return c.colours[i];
      return c.colours[c.colours.length - 1];
    }

    // Colour the inlined levels by the open incidents this page holds (the caller's scope).
    function recolour() {
      var counts = {};
      for (var id in areaOf) {
        var codes = areaOf[id];
        for (var l = 0; l < LEVELS.length; l++) {
          var key = LEVELS[l] + ":" + codes[l];
          if (codes[l]) counts[key] = (counts[key] || 0) + 1;
        }
      }
      LEVELS.forEach(function (level) {
        var layers = e.areas[level];
        if (!layers) return;
        layers.eachLayer(function (layer) {
          var n = counts[level + ":" + layer.ggCode] || 0;
          if (layer.ggOpen === n) return;
          layer.ggOpen = n;
          layer.setStyle({ fillColor: areaColour(n), fillOpacity: n ? 0.6 : 0.15 });
          layer.setTooltipContent(
            GG.esc(layer.ggName) + "<br>" + GG.esc(layer.ggCode) +
              "<br>未结事件 open incidents: " + n
          );
        });
      });
    }

    function addLegend() {
      if (!opts.legend) return;
      var legend = map.getContainer().querySelector(".gg-legend");
      if (legend) legend.insertAdjacentHTML("afterbegin", opts.legend);
      else GG.legend(map, opts.legend, "bottomright");
    }

    // A street's wall display opens on its street (the page itself shows the district).
    function focusStreet(code) {
      var streets = e.areas.street;
      if (!streets) return;
      streets.eachLayer(function (layer) {
        if (layer.ggCode === code) map.fitBounds(layer.getBounds(), { animate: false });
      });
    }

    function apply(data) {
      if (opts.dataset !== null && opts.dataset !== undefined && data.dataset !== opts.dataset) {
        // A new dataset (areas, units) was loaded: the page itself is out of date.
        var mark = "gridgov.reloaded-for";
        var done = null;
        try {
          done = window.sessionStorage.getItem(mark);
        } catch (err) {
          done = null;
        }
        if (done !== String(data.dataset)) {
          try {
            window.sessionStorage.setItem(mark, String(data.dataset));
          } catch (err) {
            /* reload anyway */
          }
          window.location.reload();
          return;
        }
      }
      var incidents = group("incidents");
      var routes = group("routes");
      var id;
      if (data.reset) {
        for (id in byIncident) dropIncident(id);
        for (id in routesOf) dropRoutes(id);
      }
      var rows = data.incidents.rows;
      var touched = data.closed.slice();
      for (var i = 0; i < rows.length; i++) touched.push(rows[i][3]);
      for (var t = 0; t < touched.length; t++) {
        dropIncident(touched[t]);
        dropRoutes(touched[t]);
        delete areaOf[touched[t]];
      }
      if (data.reset) areaOf = {};
      for (var a = 0; a < rows.length; a++) {
        areaOf[rows[a][3]] = (data.area_codes && data.area_codes[rows[a][3]]) || [];
      }
      var markers = GG.incidentMarkers(map, data.incidents);
      for (var m = 0; m < markers.length; m++) byIncident[markers[m].ggRow[3]] = markers[m];
      if (incidents.addLayers) incidents.addLayers(markers);
      else for (var k = 0; k < markers.length; k++) incidents.addLayer(markers[k]);
      incidents.ggCount = Object.keys(byIncident).length;
      if (routes) {
        var lines = GG.routeLines(map, data.routes);
        for (var r = 0; r < lines.length; r++) {
          var line = lines[r];
          (routesOf[line.ggIncident] = routesOf[line.ggIncident] || []).push(line);
          routes.addLayer(line);
        }
        routes.ggCount = routes.getLayers().length;
      }
      if (data.reset || touched.length) recolour();
      if (data.units) {
        // Every unit in scope on a reset, else only those written since the cursor.
        var units = group("units");
        if (data.units_reset !== false) {
          GG.unsearch(map, units.getLayers());
          units.clearLayers();
          byUnit = {};
        }
        var unitMarkers = GG.unitMarkers(map, data.units);
        for (var u = 0; u < unitMarkers.length; u++) {
          var uid = unitMarkers[u].ggRow[4];
          if (byUnit[uid]) {
            units.removeLayer(byUnit[uid]);
            GG.unsearch(map, [byUnit[uid]]);
          }
          byUnit[uid] = unitMarkers[u];
        }
        if (units.addLayers) units.addLayers(unitMarkers);
        else for (var v = 0; v < unitMarkers.length; v++) units.addLayer(unitMarkers[v]);
        units.ggCount = Object.keys(byUnit).length;
      }
      if (!state.scope && data.scope.street_code) focusStreet(data.scope.street_code);
      state.cursor = data.cursor;
      state.scope = data.scope;
      state.updates += 1;
    }

    function heard() {
      var now = new Date();
      state.connected = true;
      state.error = null;
      state.lastUpdate = now.getTime();
      state.lastUpdateText = clock(now);
      status.className = "gg-live-status gg-live-ok";
      status.textContent =
        "实时 live · 最后更新 last update " + state.lastUpdateText + " · " +
        (state.scope ? GG.label("role", state.scope.role) + " " + (state.scope.street_code || "") : "");
      alert.hide();
    }

    function lost(reason) {
      state.connected = false;
      state.failures += 1;
      state.error = reason;
      status.className = "gg-live-status gg-live-down";
      var since = state.lastUpdateText ? " · 最后更新 last update " + state.lastUpdateText : "";
      status.textContent = "实时 live · 连接中断 disconnected" + since;
      alert.show(
        "连接中断，正在重试 connection lost, retrying (" + reason + ")" + since +
          " · 地图上的数据可能已过时 what the map shows may be out of date"
      );
    }

    // The pushed feed: Server-Sent Events read with fetch (an EventSource cannot send the
    // Authorization header, and the token must stay out of URLs and server logs).
    function parseEvents(buffer, onData) {
      var blocks = buffer.split("\n\n");
      for (var i = 0; i < blocks.length - 1; i++) {
        var lines = blocks[i].split("\n");
        var data = [];
        for (var j = 0; j < lines.length; j++) {
          if (lines[j].indexOf("data:") === 0) data.push(lines[j].slice(5).replace(/^ /, ""));
        }
        if (data.length) onData(data.join("\n"));
      }
      return blocks[blocks.length - 1];
    }

    function stream() {
      streamRetry = null;
      if (state.stopped || streaming || !opts.stream || !window.ReadableStream) return;
      var url = opts.stream + (state.cursor ? "?since=" + encodeURIComponent(state.cursor) : "");
      var headers = { Authorization: "Bearer " + token, Accept: "text/event-stream" };
      streaming = true;
      // A stream says something at least every heartbeat (the server's X-Heartbeat-Interval).
      // One silent for much longer is dead though still open (a proxy or a network dropped it
      // without closing it): abort it and open the next.
      var abort = new AbortController();
      var quiet = null;
      var silence = 0;
      function listening() {
        clearTimeout(quiet);
        if (silence > 0 && !state.stopped) quiet = setTimeout(function () { abort.abort(); }, silence);
      }
      fetch(url, { headers: headers, cache: "no-store", credentials: "omit", signal: abort.signal })
        .then(function (response) {
          if (response.status === 401 || response.status === 403) {
            streaming = false;
            poll();
            return null;
          }
          if (!response.ok || !response.body) throw new Error("HTTP " + response.status);
          state.streams += 1;
          heard();
          // The interval is the server's alone: without it, nothing to watch against.
          var beat = parseFloat(response.headers.get("X-Heartbeat-Interval"));
          silence = beat > 0 ? 2500 * beat + 2000 : 0;
          listening();
          var reader = response.body.getReader();
          var decoder = new TextDecoder();
          var buffer = "";
          function next() {
            return reader.read().then(function (chunk) {
              if (chunk.done) return null;
              listening();
              buffer = parseEvents(buffer + decoder.decode(chunk.value, { stream: true }),
                function (text) {
                  if (state.stopped) return;
                  apply(JSON.parse(text));
                  state.pushes += 1;
                });
              if (!state.stopped) heard();
              return next();
            });
          }
          return next();
        })
        .then(function () {
          clearTimeout(quiet);
          // The server closed it (its max_seconds): open the next from the cursor.
          if (streaming) {
            streaming = false;
            if (!state.stopped) streamRetry = setTimeout(stream, 100);
          }
        })
        .catch(function (err) {
          clearTimeout(quiet);
          streaming = false;
          if (state.stopped) return;
          lost(err && err.name === "AbortError" ? "stream silent" : String((err && err.message) || err));
          // Poll meanwhile; try the stream again later.
          schedule();
          streamRetry = setTimeout(stream, Math.max(5000, 5 * interval));
        });
    }

    function poll() {
      timer = null;
      if (state.stopped) return;
      state.polls += 1;
      var url = opts.feed + (state.cursor ? "?since=" + encodeURIComponent(state.cursor) : "");
      var headers = { Authorization: "Bearer " + token, Accept: "application/json" };
      if (etag && state.cursor) headers["If-None-Match"] = etag;
      var abort = new AbortController();
      var limit = setTimeout(function () {
        abort.abort();
      }, Math.max(5000, 3 * interval));
      fetch(url, { headers: headers, cache: "no-store", credentials: "omit", signal: abort.signal })
        .then(function (response) {
          clearTimeout(limit);
          if (response.status === 304) {
            state.unchanged += 1;
            return null;
          }
          if (response.status === 401) {
            fatal("访问令牌无效、已吊销或已过期 the access token is unknown, revoked or expired");
            return null;
          }
          if (response.status === 403) {
            fatal("此令牌无权查看实时数据 this token may not read the live feed");
            return null;
          }
          if (!response.ok) throw new Error("HTTP " + response.status);
          var tag = response.headers.get("ETag");
          return response.json().then(function (data) {
            apply(data);
            etag = tag;
          });
        })
        .then(function () {
          if (!state.stopped) heard();
        })
        .catch(function (err) {
          clearTimeout(limit);
          lost(err && err.name === "AbortError" ? "timeout" : String((err && err.message) || err));
        })
        .then(schedule);
    }

    function schedule() {
      if (state.stopped || timer !== null) return;
      // The first answer came by poll: listen from its cursor on.
      if (opts.stream && window.ReadableStream && state.cursor && !streaming && !streamRetry) {
        stream();
      }
      // While a stream is open a poll only checks that the token still holds.
      timer = setTimeout(poll, streaming ? Math.max(10 * interval, 10000) : interval);
    }

    addLegend();
    map.whenReady(poll);
    return state;
  };
})();
