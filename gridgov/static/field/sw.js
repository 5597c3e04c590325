// The field page's service worker: the page and its assets come from the cache when the
// network is gone (network first, so a new release arrives as soon as it can). API requests
// are never cached here: the page queues what it sends (IndexedDB) and shows what waits.
"use strict";
const CACHE = "gg-field-v1";
const ASSETS = [
  "/field",
  "/field/manifest.webmanifest",
  "/static/field/field.js",
  "/static/field/field.css",
  "/static/field/icon-192.png",
  "/static/field/icon-512.png",
  "/static/vendor/leaflet-1.9.3/leaflet.js",
  "/static/vendor/leaflet-1.9.3/leaflet.css",
];

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(CACHE).then((c) => c.addAll(ASSETS)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches.keys()
      .then((keys) => Promise.all(keys.filter((k) => k !== CACHE).map((k) => caches.delete(k))))
      .then(() => self.clients.claim()),
  );
});

self.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  if (event.request.method !== "GET" || url.origin !== self.location.origin) return;
  if (url.pathname.startsWith("/api/") || url.pathname.startsWith("/open311/")) return;
  event.respondWith(
    fetch(event.request)
      .then((response) => {
        if (response.ok) {
          const copy = response.clone();
          caches.open(CACHE).then((c) => c.put(event.request, copy));
        }
        return response;
      })
      .catch(() => caches.match(event.request, { ignoreSearch: true })
        .then((hit) => hit || Response.error())),
  );
});
