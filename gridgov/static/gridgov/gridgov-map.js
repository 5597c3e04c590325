/* gridgov map runtime: builds the heavy layers of a gridgov map from compact JSON.
 *
 * gridgov.maps (Python) emits data, not one folium element per feature: a page with 1,000 grid
 * polygons, 2,000 units and 1,000 incidents stays small and builds in one pass. Popups are built
 * on first open. Every map registers itself in GG.maps[<map variable>] so tests and the benchmark
 * can count what Leaflet really holds; GG.ready is set once the page's layers are all added.
 * No network access: everything is in the page (or served by the gridgov server).
 */
(function () {
  "use strict";
  var GG = (window.GG = window.GG || { maps: {}, ready: false });

  function esc(value) {
    if (value === null || value === undefined) return "–";
    return String(value)
      .replace(/&/g, "&amp;")
      .replace(/</g, "&lt;")
      .replace(/>/g, "&gt;")
      .replace(/"/g, "&quot;");
  }
  GG.esc = esc;

  /* The zh/en dictionary of the page (gridgov.labels, embedded as JSON by the page):
   * GG.label("state", "on_scene") is "已到场 on scene"; a value it does not know stays as it is,
   * a missing one reads "–". Every text a person reads goes through it, never an identifier. */
  GG.labels = GG.labels || {};
  GG.useLabels = function (table) {
    GG.labels = table || {};
  };
  GG.label = function (group, value) {
    if (value === null || value === undefined || value === "") return "–";
    var names = GG.labels[group] && GG.labels[group][String(value)];
    return names ? names[0] + " " + names[1] : String(value);
  };
  // A label as HTML that keeps its identifier in an attribute (copyable, testable).
  function labelled(group, value) {
    if (value === null || value === undefined || value === "") return "–";
    return "<span data-id='" + esc(value) + "'>" + esc(GG.label(group, value)) + "</span>";
  }

  function entry(map) {
    var id = map._container.id;
    if (!GG.maps[id]) GG.maps[id] = { map: map, areas: {}, layers: {}, search: [] };
    return GG.maps[id];
  }
  GG.entry = entry;

  function minutes(s) {
    return s === null || s === undefined ? "–" : (s / 60).toFixed(1) + " min";
  }

  // rows: [header HTML, value]; a value given as {html: ...} is already HTML.
  function table(rows) {
    var out = "<table class='gg-table'>";
    for (var i = 0; i < rows.length; i++) {
      var v = rows[i][1];
      var cell = v !== null && typeof v === "object" && "html" in v ? v.html : esc(v);
      out += "<tr><th>" + rows[i][0] + "</th><td>" + cell + "</td></tr>";
    }
    return out + "</table>";
  }

  /* ---------------------------------------------------------------- areas */

  // data: {level, zh, features: [[code, name, value, colour, label, coords], ...]}
  // coords: MultiPolygon coordinates [[[ [lon, lat], ... ]]] rounded in Python.
  GG.areas = function (map, data, opts, transient) {
    var renderer = L.canvas({ padding: 0.2 });
    var group = L.featureGroup();
    var feats = data.features;
    for (var i = 0; i < feats.length; i++) {
      var f = feats[i];
      var rings = [];
      var parts = f[5];
      for (var p = 0; p < parts.length; p++) {
        var poly = [];
        for (var r = 0; r < parts[p].length; r++) {
          var ring = parts[p][r];
          var ll = new Array(ring.length);
          for (var k = 0; k < ring.length; k++) ll[k] = [ring[k][1], ring[k][0]];
          poly.push(ll);
        }
        rings.push(poly);
      }
      var layer = L.polygon(rings, {
        renderer: renderer,
        color: opts.stroke || "#444",
        weight: opts.weight || 1,
        fillColor: f[3],
        fillOpacity: opts.fillOpacity === undefined ? 0.55 : opts.fillOpacity,
      });
      layer.ggCode = f[0];
      layer.ggName = f[1];
      layer.ggGroup = group;
      layer.bindTooltip(esc(f[1]) + "<br>" + esc(f[0]) + "<br>" + esc(f[4]), { sticky: true });
      group.addLayer(layer);
      // Layers fetched per viewport come and go: only inlined ones are searchable.
      if (!transient) {
        entry(map).search.push({
          title: f[1] + " " + f[0],
          layer: layer,
          bounds: layer.getBounds(),
          html: areaPopup(data, f),
        });
      }
    }
    group.ggCount = feats.length;
    group.ggLevel = data.level;
    entry(map).areas[data.level] = group;
    return group;
  };

  // What the search shows of an area: its name, code and level (and the layer's label).
  function areaPopup(data, f) {
    var rows = [["编码 code", f[0]], ["层级 level", (data.zh || "") + " " + data.level]];
    if (f[4] !== null && f[4] !== undefined && f[4] !== "") rows.push(["", f[4]]);
    return "<div class='gg-popup gg-area-popup'><b>" + esc(f[1]) + "</b>" + table(rows) +
      "</div>";
  }

  /* Areas the page does not inline (micro-grids come per viewport): name, code and bounds
   * only, so the search finds them. data: {level, zh, rows: [[code, name, w, s, e, n], ...]} */
  GG.searchIndex = function (map, data) {
    var e = entry(map);
    for (var i = 0; i < data.rows.length; i++) {
      var r = data.rows[i];
      e.search.push({
        title: r[1] + " " + r[0],
        bounds: L.latLngBounds([r[3], r[2]], [r[5], r[4]]),
        html: areaPopup(data, [r[0], r[1], null, null, null]),
      });
    }
  };

  // A URL template filled from the map's view: {west} {south} {east} {north} {zoom}.
  GG.viewportUrl = function (map, template) {
    var b = map.getBounds();
    return template
      .replace("{west}", b.getWest().toFixed(6))
      .replace("{south}", b.getSouth().toFixed(6))
      .replace("{east}", b.getEast().toFixed(6))
      .replace("{north}", b.getNorth().toFixed(6))
      .replace("{zoom}", String(map.getZoom()));
  };

  /* The viewport hook: fetch an area layer for the visible box from a URL template, e.g.
   * "/api/areas?level={level}&bbox={west},{south},{east},{north}&simplify={tolerance}".
   * The answer is the same compact JSON GG.areas takes. Below minZoom nothing is fetched (the
   * inlined coarser levels show instead); a new request supersedes one still in flight. */
  GG.viewportAreas = function (map, group, opts) {
    var seq = 0;
    function load() {
      if (!map.hasLayer(group)) return;
      if (map.getZoom() < opts.minZoom) {
        group.clearLayers();
        return;
      }
      var url = GG.viewportUrl(map, opts.url.replace("{level}", encodeURIComponent(opts.level)));
      var mine = ++seq;
      fetch(url)
        .then(function (r) {
          if (!r.ok) throw new Error("HTTP " + r.status);
          return r.json();
        })
        .then(function (data) {
          if (mine !== seq) return;
          group.clearLayers();
          GG.areas(map, data, opts.style || {}, true).eachLayer(function (l) {
            group.addLayer(l);
          });
          group.ggCount = data.features.length;
          entry(map).areas[opts.level] = group;
          GG.notice(map, "", "areas");
        })
        .catch(function (e) {
          if (mine === seq) {
            GG.notice(map, "区域图层加载失败 area layer failed: " + e.message, "areas");
          }
        });
    }
    map.on("moveend", load);
    map.on("baselayerchange overlayadd", load);
    group.ggLoad = load;
    load();
  };

  /* ---------------------------------------------------------------- units */

  // rows: [lat, lon, kind index, status index, unit_id, name, department index, street index,
  //        on duty (1/0)]; data.departments and data.streets hold the indexed texts.
  GG.units = function (map, group, data) {
    var markers = GG.unitMarkers(map, data);
    if (group.addLayers) group.addLayers(markers);
    else for (var j = 0; j < markers.length; j++) group.addLayer(markers[j]);
    group.ggCount = markers.length;
    entry(map).layers.units = group;
    return group;
  };

  // The markers of GG.units (searchable), not yet on any layer: the live feed adds and
  // replaces them one by one.
  GG.unitMarkers = function (map, data) {
    var icons = {};
    function icon(k, s) {
      var key = k + ":" + s;
      if (!icons[key]) {
        var kind = data.kinds[k];
        var st = data.statuses[s];
        icons[key] = L.divIcon({
          className: "gg-unit gg-unit-" + kind.id + " gg-status-" + st.id,
          html:
            "<span style='background:" + st.colour + ";border-color:" + kind.colour + "'>" +
            esc(kind.glyph) + "</span>",
          iconSize: [22, 22],
          iconAnchor: [11, 11],
          popupAnchor: [0, -10],
        });
      }
      return icons[key];
    }
    var markers = new Array(data.rows.length);
    for (var i = 0; i < data.rows.length; i++) {
      var r = data.rows[i];
      var m = L.marker([r[0], r[1]], { icon: icon(r[2], r[3]), title: r[5] });
      m.ggRow = r;
      m.bindPopup(unitPopup);
      markers[i] = m;
      entry(map).search.push({ title: r[5] + " " + r[4], layer: m });
    }
    function unitPopup(layer) {
      var r = layer.ggRow;
      var kind = data.kinds[r[2]];
      var st = data.statuses[r[3]];
      return (
        "<div class='gg-popup'><b>" + esc(r[5]) + "</b>" +
        table([
          ["编号 id", r[4]],
          ["类别 kind", { html: labelled("kind", kind.id) }],
          ["状态 status", { html: labelled("unit_status", st.id) }],
          ["部门 department", data.departments[r[6]]],
          ["街道 street", data.streets[r[7]]],
          ["在岗 on duty", r[8] ? "是 yes" : "否 no"],
        ]) + "</div>"
      );
    }
    return markers;
  };

  /* ------------------------------------------------------------- incidents */

  // rows: [lat, lon, priority, incident_id, matter, status, reported, street, [history],
  //        [assignments], explanation]
  GG.incidents = function (map, group, data) {
    var markers = GG.incidentMarkers(map, data);
    if (group.addLayers) group.addLayers(markers);
    else for (var j = 0; j < markers.length; j++) group.addLayer(markers[j]);
    group.ggCount = markers.length;
    entry(map).layers.incidents = group;
    return group;
  };

  /* Incidents are drawn above units: their own panes over the marker pane (600, units), below
   * popups (700). Priority 1 has the top pane and is never clustered. */
  GG.PANES = { ggIncidents: 640, ggUrgent: 660 };
  GG.panes = function (map) {
    for (var name in GG.PANES) {
      if (!map.getPane(name)) map.createPane(name).style.zIndex = String(GG.PANES[name]);
    }
  };

  // Most urgent first: 1, 2, 3, 4, then unknown (0).
  function urgency(p) {
    return p > 0 ? p : 99;
  }

  // The bubble of a cluster of incidents: the colour of its most urgent member and one small
  // coloured segment per priority with its count.
  function incidentClusterIcon(priorities) {
    return function (cluster) {
      var counts = {};
      var members = cluster.getAllChildMarkers();
      for (var i = 0; i < members.length; i++) {
        var p = members[i].ggRow[2];
        counts[p] = (counts[p] || 0) + 1;
      }
      var keys = Object.keys(counts)
        .map(Number)
        .sort(function (a, b) {
          return urgency(a) - urgency(b);
        });
      var top = keys[0];
      var colour = priorities[top] || priorities["0"];
      var parts = "";
      var title = [];
      for (var k = 0; k < keys.length; k++) {
        var c = priorities[keys[k]] || priorities["0"];
        var label = keys[k] > 0 ? "P" + keys[k] : "P?";
        parts += "<i style='background:" + c + "'>" + counts[keys[k]] + "</i>";
        title.push(label + " " + counts[keys[k]]);
      }
      return L.divIcon({
        className: "gg-incident-cluster gg-priority-" + top,
        html:
          "<div style='background:" + colour + "' data-priority='" + top + "' title='" +
          title.join(" · ") + "'><b>" + members.length + "</b>" + parts + "</div>",
        iconSize: [18 + 20 * keys.length, 38],
      });
    };
  }

  /* The open-incident layer: priority 1 in a plain group on the top pane, the others in a
   * MarkerCluster (cluster = true) or a plain group on the incident pane. It answers like one
   * group (addLayer(s), removeLayer, hasLayer, getLayers, clearLayers, zoomToShowLayer), so the
   * live feed, the search and the layer control treat it as one layer. */
  // Made on first use: this file may load before Leaflet.
  function incidentLayerClass() {
    return (GG.IncidentLayer =
      GG.IncidentLayer ||
      L.Layer.extend({
        initialize: function (opts) {
          this.urgent = L.featureGroup();
          this.rest = opts.cluster
            ? L.markerClusterGroup({
                chunkedLoading: true,
                disableClusteringAtZoom: opts.disableClusteringAtZoom || 17,
                clusterPane: "ggIncidents",
                iconCreateFunction: incidentClusterIcon(opts.priorities),
              })
            : L.featureGroup();
        },
        onAdd: function (map) {
          GG.panes(map);
          map.addLayer(this.rest);
          map.addLayer(this.urgent);
        },
        onRemove: function (map) {
          map.removeLayer(this.rest);
          map.removeLayer(this.urgent);
        },
        _part: function (m) {
          return m.ggRow && m.ggRow[2] === 1 ? this.urgent : this.rest;
        },
        addLayer: function (m) {
          this._part(m).addLayer(m);
          return this;
        },
        addLayers: function (ms) {
          var rest = [];
          for (var i = 0; i < ms.length; i++) {
            if (this._part(ms[i]) === this.urgent) this.urgent.addLayer(ms[i]);
            else rest.push(ms[i]);
          }
          if (this.rest.addLayers) this.rest.addLayers(rest);
          else for (var j = 0; j < rest.length; j++) this.rest.addLayer(rest[j]);
          return this;
        },
        removeLayer: function (m) {
          this.urgent.removeLayer(m);
          this.rest.removeLayer(m);
          return this;
        },
        hasLayer: function (m) {
          return this.urgent.hasLayer(m) || this.rest.hasLayer(m);
        },
        getLayers: function () {
          return this.urgent.getLayers().concat(this.rest.getLayers());
        },
        eachLayer: function (fn, ctx) {
          this.urgent.eachLayer(fn, ctx);
          this.rest.eachLayer(fn, ctx);
          return this;
        },
        clearLayers: function () {
          this.urgent.clearLayers();
          this.rest.clearLayers();
          return this;
        },
        zoomToShowLayer: function (m, done) {
          if (this.rest.zoomToShowLayer && this.rest.hasLayer(m)) {
            this.rest.zoomToShowLayer(m, done);
            return;
          }
          var map = this._map;
          if (map) map.setView(m.getLatLng(), Math.max(map.getZoom(), 17), { animate: false });
          if (done) done();
        },
      })
    );
  }

  GG.incidentLayer = function (map, opts) {
    GG.panes(map);
    var Layer = incidentLayerClass();
    var layer = new Layer(opts);
    entry(map).layers.incidents = layer;
    return layer;
  };

  // The markers of GG.incidents (searchable), not yet on any layer.
  GG.incidentMarkers = function (map, data) {
    GG.panes(map);
    var icons = {};
    function icon(p) {
      if (!icons[p]) {
        var colour = data.priorities[p] || data.priorities["0"];
        icons[p] = L.divIcon({
          className: "gg-incident gg-priority-" + p,
          html: "<span style='background:" + colour + "'>" + (p > 0 ? p : "?") + "</span>",
          iconSize: [20, 20],
          iconAnchor: [10, 10],
          popupAnchor: [0, -10],
        });
      }
      return icons[p];
    }
    var markers = new Array(data.rows.length);
    for (var i = 0; i < data.rows.length; i++) {
      var r = data.rows[i];
      var m = L.marker([r[0], r[1]], {
        icon: icon(r[2]),
        title: r[3],
        pane: r[2] === 1 ? "ggUrgent" : "ggIncidents",
      });
      m.ggRow = r;
      m.bindPopup(incidentPopup, { maxWidth: 420 });
      markers[i] = m;
      entry(map).search.push({ title: r[3] + " " + r[4], layer: m });
    }
    function incidentPopup(layer) {
      var r = layer.ggRow;
      var out =
        "<div class='gg-popup'><b>" + esc(r[3]) + "</b> " + labelled("matter", r[4]) +
        table([
          ["优先级 priority", r[2] > 0 ? r[2] + " " + GG.label("priority", r[2]) : "–"],
          ["状态 status", { html: labelled("state", r[5]) }],
          ["上报时间 reported at", r[6]],
          ["街道 street", r[7]],
        ]);
      var hist = r[8] || [];
      out += "<div class='gg-h'>处置过程 history</div>";
      if (!hist.length) out += "<div class='gg-none'>无记录 no events</div>";
      else {
        out += "<table class='gg-table'>";
        for (var h = 0; h < hist.length; h++) {
          var e = hist[h];
          out += "<tr><td>" + esc(e[0]) + "</td><td>" + labelled("action", e[1]) + " → " +
            labelled("state", e[2]) + "</td><td>" + labelled("role", e[3]) +
            (e[4] ? "<br><i>" + esc(e[4]) + "</i>" : "") + "</td></tr>";
        }
        out += "</table>";
      }
      var asg = r[9] || [];
      out += "<div class='gg-h'>派遣说明 assignment</div>";
      if (!asg.length) out += "<div class='gg-none'>未派遣 not assigned</div>";
      else {
        out += "<table class='gg-table'><tr><th>力量 unit</th><th>角色 role</th>" +
          "<th>规则 rule</th><th>范围 reach</th><th>用时 time</th></tr>";
        for (var a = 0; a < asg.length; a++) {
          var s = asg[a];
          out += "<tr><td>" + esc(s[0]) + "</td><td>" + labelled("role", s[1]) + "</td><td>" +
            labelled("rule", s[2]) + (s[5] ? " ⚠ 超时 over max" : "") + "</td><td>" +
            labelled("escalation", s[3]) + "</td><td>" + minutes(s[4]) + "</td></tr>";
        }
        out += "</table>";
      }
      var ex = r[10] || [];
      for (var x = 0; x < ex.length; x++) {
        var k = ex[x];
        out += "<div class='gg-ex'>" + labelled("kind", k.kind) + " (" + labelled("role", k.role) +
          "): " + labelled("rule", k.rule) + ", 范围 tier " + labelled("tier", k.tier) + ", " +
          esc(k.candidates) + " 个候选 candidate(s)" +
          (k.runner_up ? ", 次选 next " + esc(k.runner_up) + " " + minutes(k.runner_up_s) : "") +
          "</div>";
      }
      return out + "</div>";
    }
    return markers;
  };

  // Forget layers the search offered (markers the live feed replaced or removed).
  GG.unsearch = function (map, layers) {
    if (!layers.length) return;
    var gone = new Set(layers);
    var e = entry(map);
    e.search = e.search.filter(function (item) {
      return !gone.has(item.layer);
    });
  };

  // rows: [priority, incident_id, unit_id, straight (no stored route), [[lon, lat], ...]]
  GG.routes = function (map, data) {
    var group = L.featureGroup();
    var lines = GG.routeLines(map, data);
    for (var i = 0; i < lines.length; i++) group.addLayer(lines[i]);
    group.ggCount = data.rows.length;
    entry(map).layers.routes = group;
    return group;
  };

  // The lines of GG.routes, each knowing its incident (ggIncident).
  GG.routeLines = function (map, data) {
    var e = entry(map);
    var renderer = e.routeRenderer || (e.routeRenderer = L.canvas({ padding: 0.2 }));
    var lines = [];
    for (var i = 0; i < data.rows.length; i++) {
      var r = data.rows[i];
      var ll = new Array(r[4].length);
      for (var k = 0; k < r[4].length; k++) ll[k] = [r[4][k][1], r[4][k][0]];
      var line = L.polyline(ll, {
        renderer: renderer,
        color: data.priorities[r[0]] || data.priorities["0"],
        weight: 3,
        opacity: 0.8,
        dashArray: r[3] ? "6 6" : null,
      });
      line.bindTooltip(esc(r[2]) + " → " + esc(r[1]));
      line.ggIncident = r[1];
      lines.push(line);
    }
    return lines;
  };

  /* ------------------------------------------------------- controls, misc */

  GG.legend = function (map, html, position) {
    var control = L.control({ position: position || "bottomright" });
    control.onAdd = function () {
      var div = L.DomUtil.create("div", "gg-legend");
      div.innerHTML = html;
      L.DomEvent.disableClickPropagation(div);
      L.DomEvent.disableScrollPropagation(div);
      return div;
    };
    control.addTo(map);
    // A legend per level: show the one of the level the layer control switched to.
    map.on("baselayerchange", function (ev) {
      var level = ev.layer && ev.layer.ggLevel;
      if (!level) return;
      var parts = control.getContainer().querySelectorAll(".gg-level-legend");
      for (var i = 0; i < parts.length; i++) {
        parts[i].style.display = parts[i].getAttribute("data-level") === level ? "" : "none";
      }
    });
    return control;
  };

  // One notice line per topic (tiles, areas...): clearing one topic keeps the others.
  GG.notice = function (map, text, topic) {
    var e = entry(map);
    if (!e.notice) {
      var control = L.control({ position: "bottomleft" });
      control.onAdd = function () {
        return L.DomUtil.create("div", "gg-notice");
      };
      control.addTo(map);
      e.notice = control;
      e.notices = {};
    }
    if (text) e.notices[topic || "page"] = text;
    else delete e.notices[topic || "page"];
    var lines = Object.keys(e.notices).map(function (k) {
      return e.notices[k];
    });
    var div = e.notice.getContainer();
    div.textContent = lines.join(" · ");
    div.style.display = lines.length ? "block" : "none";
  };

  /* Tiles degrade cleanly: after a few failed tiles the base layer is removed and a notice says
   * so; the vector layers live in their own panes and never depend on it. */
  GG.tileFallback = function (map, tiles, limit) {
    var failed = 0;
    tiles.on("tileerror", function () {
      failed += 1;
      if (failed === limit) {
        map.removeLayer(tiles);
        GG.notice(map, "底图不可用，仅显示矢量图层 basemap unavailable: vector layers only", "tiles");
      }
    });
  };

  /* Search over every level: areas (inlined, or indexed by GG.searchIndex), units and
   * incidents. Picking one fits the view to it, shows its level if another one is on screen,
   * and opens its popup. */
  GG.search = function (map, placeholder) {
    var e = entry(map);
    // An area's level is a base layer: switch to it (the layer control follows).
    function showLevel(group) {
      if (!group || map.hasLayer(group)) return;
      for (var level in e.areas) {
        var other = e.areas[level];
        if (other !== group && !other.ggLoad && map.hasLayer(other)) map.removeLayer(other);
      }
      map.addLayer(group);
    }
    var control = new L.Control.Search({
      sourceData: function (text, callResponse) {
        var needle = text.toLowerCase();
        var found = {};
        var n = 0;
        for (var i = 0; i < e.search.length && n < 20; i++) {
          var item = e.search[i];
          if (item.title.toLowerCase().indexOf(needle) >= 0) {
            // Bounds, not getCenter(): an area's layer may not be on the map.
            var at = item.bounds ? item.bounds.getCenter() : item.layer.getLatLng();
            at.item = item;
            found[item.title] = at;
            n += 1;
          }
        }
        callResponse(found);
        return { abort: function () {} };
      },
      // sourceData answers {title: latlng} already: no reformatting, no second filter.
      formatData: function (records) {
        return records;
      },
      filterData: function (text, records) {
        return records;
      },
      textPlaceholder: placeholder,
      initial: false,
      marker: false,
      collapsed: false,
      moveToLocation: function (latlng, title, m) {
        var item = latlng.item;
        if (item && item.bounds) {
          if (item.layer) showLevel(item.layer.ggGroup);
          m.fitBounds(item.bounds, { maxZoom: 18, animate: false });
        } else m.setView(latlng, Math.max(m.getZoom(), 17), { animate: false });
      },
    });
    control.on("search:locationfound", function (ev) {
      var item = ev.latlng && ev.latlng.item;
      if (!item) return;
      if (item.bounds) {
        L.popup({ maxWidth: 320 })
          .setLatLng(item.bounds.getCenter())
          .setContent(item.html)
          .openOn(map);
        return;
      }
      var layer = item.layer;
      var cluster = [e.layers.units, e.layers.incidents].filter(function (g) {
        return g && g.zoomToShowLayer && g.hasLayer(layer);
      })[0];
      if (cluster) cluster.zoomToShowLayer(layer, function () { layer.openPopup(); });
      else if (layer.openPopup) layer.openPopup();
    });
    map.addControl(control);
    e.searchControl = control;
    return control;
  };

  GG.markReady = function () {
    // Layers are added synchronously by the page script; wait for the frame that paints them.
    requestAnimationFrame(function () {
      setTimeout(function () {
        GG.ready = true;
        GG.readyAt = performance.now();
        document.documentElement.setAttribute("data-gridgov-ready", "1");
      }, 0);
    });
  };
})();
