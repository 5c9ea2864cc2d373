/* The handheld UI's service worker (docs/handheld.md, "The installable app").

   Why: the courier's terminal opens the UI from its home screen, often where there is
   no network and sometimes while the app itself is restarting. Without this, the
   browser shows its own error page; with it, the last page the app served opens (from
   the cache) and says at once that the app is not answering (page.js).

   What: the shell (the page in both languages, the manifest, the icons) is cached at
   install and refreshed whenever it is fetched: network first, the cache when the
   network fails. Everything live (/part, /api/*, /camera.jpg) goes to the network only,
   so a dead app shows as dead instead of as old data. */
var CACHE = 'postedge-handheld-v1';
var SHELL = ['/', '/?lang=zh', '/?lang=en', '/manifest.webmanifest?lang=zh', '/manifest.webmanifest?lang=en',
             '/static/icon-192.png', '/static/icon-512.png'];

self.addEventListener('install', function (e) {
  e.waitUntil(caches.open(CACHE).then(function (c) {
    return Promise.all(SHELL.map(function (u) {
      return fetch(u, {credentials: 'same-origin'}).then(function (r) {
        if (r.ok) { return c.put(u, r); }
      }).catch(function () {});
    }));
  }).then(function () { return self.skipWaiting(); }));
});

self.addEventListener('activate', function (e) {
  e.waitUntil(caches.keys().then(function (keys) {
    return Promise.all(keys.filter(function (k) { return k !== CACHE; }).map(function (k) {
      return caches.delete(k);
    }));
  }).then(function () { return self.clients.claim(); }));
});

function shell(url) {
  return url.pathname === '/' || url.pathname === '/index.html' || url.pathname === '/manifest.webmanifest' ||
    url.pathname.indexOf('/static/') === 0;
}

self.addEventListener('fetch', function (e) {
  var req = e.request, url = new URL(req.url);
  if (req.method !== 'GET' || url.origin !== self.location.origin || !shell(url)) { return; }
  e.respondWith(fetch(req).then(function (r) {
    if (r.ok) {
      var copy = r.clone();
      caches.open(CACHE).then(function (c) { return c.put(req, copy); });
    }
    return r;
  }).catch(function () {
    return caches.match(req).then(function (hit) {
      return hit || caches.match(url.searchParams.get('lang') === 'en' ? '/?lang=en' : '/');
    });
  }));
});
