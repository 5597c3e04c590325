/* gridgov road layer: the stored road network drawn by class, with no tile server.
 *
 * data (gridgov.maps.road_layer_json): {classes: [{id, zh, en, colour, weight, minZoom, dash}],
 * features: [[class index, name, [[[lon, lat], ...], ...]], ...]}.
 * Lines are SVG paths in a pane of their own (above the area fills, below the markers) whose
 * background lets events through: hovering a road names it, a click beside one reaches the
 * areas under it. With opts.url the lines come per viewport from the server instead (like the
 * micro-grids); nothing loads from outside the page's own host.
 */
(function () {
  "use strict";
  var GG = (window.GG = window.GG || { maps: {}, ready: false });

  function pane(map) {
    var p = map.getPane("ggRoads");
    if (!p) {
      p = map.createPane("ggRoads");
      p.style.zIndex = 450;
      // Only the paths (class leaflet-interactive) take events; the rest of the pane lets
      // them through to the area canvases below.
      p.style.pointerEvents = "none";
    }
    return p;
  }

  function lines(map, data, renderer) {
    var out = [];
    var zoom = map.getZoom();
    for (var i = 0; i < data.features.length; i++) {
      var f = data.features[i];
      var c = data.classes[f[0]];
      var parts = f[2];
      var ll = new Array(parts.length);
      for (var p = 0; p < parts.length; p++) {
        var part = parts[p];
        var q = new Array(part.length);
        for (var k = 0; k < part.length; k++) q[k] = [part[k][1], part[k][0]];
        ll[p] = q;
      }
      // A white halo under each line sets the roads apart from the dark area outlines.
      var halo = L.polyline(ll, {
        renderer: renderer,
        pane: "ggRoads",
        color: "#ffffff",
        weight: c.weight + 2.5,
        opacity: 0.85,
        lineCap: "round",
        lineJoin: "round",
        interactive: false,
        className: "gg-road-halo",
      });
      var line = L.polyline(ll, {
        renderer: renderer,
        pane: "ggRoads",
        color: c.colour,
        weight: c.weight,
        opacity: 0.9,
        dashArray: c.dash || null,
        lineCap: "round",
        lineJoin: "round",
        className: "gg-road gg-road-" + c.id,
      });
      line.ggClass = c;
      line.ggName = f[1];
      line.ggHalo = halo;
      line.bindTooltip(
        (f[1] ? "<b>" + GG.esc(f[1]) + "</b><br>" : "") + GG.esc(c.zh + " " + c.en),
        { sticky: true }
      );
      line.ggHidden = zoom < c.minZoom;
      out.push(line);
    }
    return out;
  }

  function fill(group, items) {
    group.clearLayers();
    group.ggAll = items;
    var shown = 0;
    for (var i = 0; i < items.length; i++) {
      if (!items[i].ggHidden) shown += 1;
    }
    // Every halo first, so that no halo covers another class's line where roads cross.
    for (var h = 0; h < items.length; h++) {
      if (!items[h].ggHidden) group.addLayer(items[h].ggHalo);
    }
    for (var j = 0; j < items.length; j++) {
      if (!items[j].ggHidden) group.addLayer(items[j]);
    }
    group.ggCount = shown;
  }

  function legend(map, group, html) {
    // Bottom left: the right-hand column holds the layer control and the main legend.
    var control = L.control({ position: "bottomleft" });
    control.onAdd = function () {
      var div = L.DomUtil.create("div", "gg-road-legend"); // not .gg-legend: pages find their one legend by it
      div.innerHTML = html;
      return div;
    };
    group.on("add", function () {
      control.addTo(map);
    });
    group.on("remove", function () {
      control.remove();
    });
    if (map.hasLayer(group)) control.addTo(map);
  }

  GG.roads = function (map, data, opts) {
    pane(map);
    var renderer = L.svg({ pane: "ggRoads", padding: 0.3 });
    var group = L.featureGroup();
    var e = GG.entry(map);
    e.layers.roads = group;
    group.ggCount = 0;
    if (opts.legend) legend(map, group, opts.legend);
    if (!opts.url) {
      fill(group, lines(map, data, renderer));
      // Minor classes show only zoomed in (their minZoom).
      map.on("zoomend", function () {
        var z = map.getZoom();
        var items = group.ggAll || [];
        var changed = false;
        for (var i = 0; i < items.length; i++) {
          var hide = z < items[i].ggClass.minZoom;
          if (hide !== items[i].ggHidden) {
            items[i].ggHidden = hide;
            changed = true;
          }
        }
        if (changed) fill(group, items);
      });
      group.ggLoadedAt = performance.now();
      return group;
    }
    var seq = 0;
    function load() {
      if (!map.hasLayer(group)) return;
      var url = GG.viewportUrl(map, opts.url);
      var mine = ++seq;
      fetch(url)
        .then(function (r) {
          if (!r.ok) throw new Error("HTTP " + r.status);
          return r.json();
        })
        .then(function (answer) {
          if (mine !== seq) return;
          fill(group, lines(map, answer, renderer));
          group.ggLoadedAt = performance.now();
          GG.notice(map, "", "roads");
        })
        .catch(function (err) {
          if (mine === seq) GG.notice(map, "道路图层加载失败 road layer failed: " + err.message, "roads");
        });
    }
    map.on("moveend", load);
    group.on("add", function () {
      map.whenReady(load);
    });
    group.ggLoad = load;
    return group;
  };
})();
