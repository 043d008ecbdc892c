// celery-cnc UI: progressive enhancement of the server-rendered pages.
// No inline scripts (the CSP forbids them); all text goes through
// textContent or server-escaped partials, never through string-built HTML.
(function () {
  'use strict';
  var meta = function (n) { var m = document.querySelector('meta[name="' + n + '"]'); return m ? m.getAttribute('content') : ''; };
  var BASE = meta('cnc-base');
  var CSRF = meta('csrf-token');
  var POLL_MS = parseInt(meta('cnc-polling-ms'), 10) || 5000;
  var page = document.body.getAttribute('data-page');

  function toast(msg, bad) {
    var t = document.getElementById('toast');
    if (!t) return;
    t.textContent = msg;
    t.className = 'toast' + (bad ? ' bad' : '');
    t.hidden = false;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(function () { t.hidden = true; }, bad ? 9000 : 5000);
  }

  function post(url, body) {
    return fetch(BASE + url, {
      method: 'POST', credentials: 'same-origin',
      headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': CSRF, 'Accept': 'application/json' },
      body: JSON.stringify(body || {})
    }).then(function (r) {
      return r.text().then(function (text) {
        var data; try { data = JSON.parse(text); } catch (e) { data = { error: text }; }
        if (!r.ok) { var err = new Error((data && data.error) || ('HTTP ' + r.status)); err.status = r.status; throw err; }
        return data;
      });
    });
  }

  // ---- JSON viewer: collapsible, coloured, with a copy button ----
  function jsonNode(v, key) {
    var li = document.createElement('li');
    if (key !== undefined) {
      var k = document.createElement('span'); k.className = 'key'; k.textContent = JSON.stringify(key) + ': '; li.appendChild(k);
    }
    if (v !== null && typeof v === 'object') {
      var isArr = Array.isArray(v);
      var keys = isArr ? v.map(function (_, i) { return i; }) : Object.keys(v);
      var btn = document.createElement('button'); btn.type = 'button'; btn.className = 'toggle'; btn.textContent = '▾';
      btn.setAttribute('aria-label', 'collapse');
      btn.addEventListener('click', function () {
        li.classList.toggle('collapsed');
        btn.textContent = li.classList.contains('collapsed') ? '▸' : '▾';
      });
      li.insertBefore(btn, li.firstChild);
      li.appendChild(document.createTextNode(isArr ? '[' : '{'));
      var ell = document.createElement('span'); ell.className = 'ellipsis'; ell.textContent = ' … ' + keys.length + (isArr ? ' items ' : ' keys '); li.appendChild(ell);
      var ul = document.createElement('ul');
      keys.forEach(function (kk) { ul.appendChild(jsonNode(v[kk], isArr ? undefined : kk)); });
      li.appendChild(ul);
      li.appendChild(document.createTextNode(isArr ? ']' : '}'));
    } else {
      var s = document.createElement('span');
      s.className = v === null ? 'null' : typeof v === 'string' ? 'str' : typeof v === 'number' ? 'num' : 'bool';
      s.textContent = JSON.stringify(v);
      li.appendChild(s);
    }
    return li;
  }

  function enhance(root) {
    (root || document).querySelectorAll('pre[data-json-viewer]').forEach(function (pre) {
      var raw = pre.textContent, value;
      try { value = JSON.parse(raw); } catch (e) { return; }
      var box = document.createElement('div'); box.className = 'json-view';
      var ul = document.createElement('ul'); ul.style.paddingLeft = '0';
      ul.appendChild(jsonNode(value)); box.appendChild(ul);
      var copy = document.createElement('button'); copy.type = 'button'; copy.className = 'btn btn-small copy'; copy.textContent = 'Copy';
      copy.addEventListener('click', function () {
        var text = JSON.stringify(value, null, 2);
        var done = function () { copy.textContent = 'Copied'; setTimeout(function () { copy.textContent = 'Copy'; }, 1500); };
        if (navigator.clipboard && navigator.clipboard.writeText) {
          navigator.clipboard.writeText(text).then(done, function () { fallbackCopy(text); done(); });
        } else { fallbackCopy(text); done(); }
      });
      box.appendChild(copy);
      pre.replaceWith(box);
    });
  }
  function fallbackCopy(text) {
    var ta = document.createElement('textarea'); ta.value = text; document.body.appendChild(ta); ta.select();
    try { document.execCommand('copy'); } catch (e) { /* ignore */ }
    ta.remove();
  }

  // ---- partial refresh ----
  function refresh(el, query, after) {
    if (!el) return Promise.resolve();
    var url = el.getAttribute('data-partial') + (query ? '?' + query : '');
    if (el._loading) { el._again = [query, after]; return el._loading; }
    el._loading = fetch(url, { credentials: 'same-origin', headers: { 'Accept': 'text/html' } })
      .then(function (r) { return r.text().then(function (t) { return [r, t]; }); })
      .then(function (rt) {
        if (rt[0].status < 500) { el.innerHTML = rt[1]; enhance(el); if (after) after(); }
      })
      .catch(function () { /* keep the old content */ })
      .then(function () {
        el._loading = null;
        if (el._again) { var a = el._again; el._again = null; refresh(el, a[0], a[1]); }
      });
    return el._loading;
  }
  function debounce(fn, ms) { var t; return function () { clearTimeout(t); t = setTimeout(fn, ms); }; }
  function throttle(fn, ms) {
    var last = 0, t = null;
    return function () {
      var now = Date.now(), wait = last + ms - now;
      if (wait <= 0) { last = now; fn(); }
      else if (!t) { t = setTimeout(function () { t = null; last = Date.now(); fn(); }, wait); }
    };
  }

  // ---- live updates: SSE with a polling fallback ----
  var handlers = { batch: [], resync: [], worker: [] };
  function onLive(kind, fn) { handlers[kind].push(fn); }
  function emit(kind, data) { handlers[kind].forEach(function (fn) { fn(data); }); }
  function startLive() {
    var status = document.getElementById('live-status');
    var setStatus = function (cls, text) { if (status) { status.className = 'live ' + cls; status.textContent = text; } };
    var pollTimer = null;
    var startPolling = function () {
      if (pollTimer) return;
      setStatus('off', 'polling');
      pollTimer = setInterval(function () { emit('resync', { reason: 'poll' }); }, POLL_MS);
    };
    var stopPolling = function () { if (pollTimer) { clearInterval(pollTimer); pollTimer = null; } };
    if (!window.EventSource) { startPolling(); return; }
    var es = new EventSource(BASE + '/api/v1/events');
    // The page was rendered before the stream was subscribed: whatever was
    // written in between would never arrive as a batch, so every (re)connect
    // refreshes the page once.
    es.addEventListener('hello', function () { stopPolling(); setStatus('on', 'live'); emit('resync', { reason: 'connected' }); });
    es.addEventListener('batch', function (e) { try { emit('batch', JSON.parse(e.data)); } catch (x) { /* ignore */ } });
    es.addEventListener('worker', function (e) { try { emit('worker', JSON.parse(e.data)); } catch (x) { /* ignore */ } });
    es.addEventListener('resync', function (e) { var d = {}; try { d = JSON.parse(e.data); } catch (x) { /* ignore */ } emit('resync', d); });
    es.onerror = function () { startPolling(); };
    es.onopen = function () { stopPolling(); setStatus('on', 'live'); };
  }

  // ---- pages ----
  function dashboardPage() {
    var el = document.getElementById('dashboard');
    var feed = document.getElementById('event-feed');
    var reload = throttle(function () { refresh(el); }, 1000);
    onLive('batch', function (b) {
      reload();
      if (!feed || !b.events) return;
      var placeholder = feed.querySelector('.muted'); if (placeholder) placeholder.remove();
      b.events.slice().reverse().forEach(function (ev) {
        if (ev.type === 'worker-heartbeat') return;
        var li = document.createElement('li');
        var when = new Date((ev.timestamp || 0) * 1000).toISOString().slice(11, 23);
        var t = document.createElement('span'); t.className = 'num muted'; t.textContent = when + ' ';
        li.appendChild(t);
        var kind = document.createElement('strong'); kind.textContent = ev.type + ' '; li.appendChild(kind);
        if (ev.uuid) {
          var a = document.createElement('a'); a.href = BASE + '/tasks/' + encodeURIComponent(ev.uuid);
          a.textContent = (ev.name || ev.uuid); li.appendChild(a);
        }
        if (ev.hostname) li.appendChild(document.createTextNode(' @ ' + ev.hostname));
        feed.insertBefore(li, feed.firstChild);
      });
      while (feed.children.length > 100) feed.removeChild(feed.lastChild);
    });
    onLive('resync', function () { refresh(el); });
  }

  function tasksPage() {
    var form = document.getElementById('task-filters');
    var results = document.getElementById('task-results');
    var current = location.search.replace(/^\?/, '');
    var query = function () {
      var parts = [];
      new FormData(form).forEach(function (v, k) { if (String(v).trim() !== '') parts.push(encodeURIComponent(k) + '=' + encodeURIComponent(v)); });
      return parts.join('&');
    };
    var apply = function () {
      current = query();
      history.replaceState(null, '', BASE + '/tasks' + (current ? '?' + current : ''));
      refresh(results, current);
    };
    var applySoon = debounce(apply, 250);
    form.addEventListener('input', function (e) {
      if (e.target.name === 'from' || e.target.name === 'to') { setPreset(''); }
      applySoon();
    });
    form.addEventListener('change', applySoon);
    form.addEventListener('submit', function (e) { e.preventDefault(); apply(); });
    var setPreset = function (p) {
      form.querySelector('input[name="last"]').value = p;
      form.querySelectorAll('[data-preset]').forEach(function (b) { b.classList.toggle('active', b.getAttribute('data-preset') === p); });
    };
    form.querySelectorAll('[data-preset]').forEach(function (b) {
      b.addEventListener('click', function () {
        setPreset(b.getAttribute('data-preset'));
        form.querySelector('input[name="from"]').value = '';
        form.querySelector('input[name="to"]').value = '';
        apply();
      });
    });
    results.addEventListener('click', function (e) {
      var a = e.target.closest('a[data-page-link]');
      if (!a) return;
      e.preventDefault();
      current = a.getAttribute('data-page-link');
      history.replaceState(null, '', BASE + '/tasks' + (current ? '?' + current : ''));
      refresh(results, current);
    });
    var paged = function () { return /(^|&)(cursor|offset)=/.test(current); };
    var live = debounce(function () { if (!paged()) refresh(results, current); }, 120);
    onLive('batch', function (b) { if ((b.tasks && b.tasks.length) || b.tasks_truncated) live(); });
    onLive('resync', function () { if (!paged()) refresh(results, current); });
  }

  function taskPage() {
    var el = document.getElementById('task-detail');
    var id = el.getAttribute('data-task-id');
    var reload = debounce(function () { refresh(el); }, 100);
    onLive('batch', function (b) { if (b.tasks_truncated || (b.tasks || []).indexOf(id) >= 0) reload(); });
    onLive('resync', reload);
    document.addEventListener('click', function (e) {
      var btn = e.target.closest('[data-task-action]');
      if (!btn) return;
      var action = btn.getAttribute('data-task-action');
      if (!window.confirm(btn.getAttribute('data-confirm'))) return;
      btn.disabled = true;
      var url = '/api/v1/tasks/' + encodeURIComponent(id) + '/' + (action === 'retry' ? 'retry' : 'revoke');
      var body = action === 'terminate' ? { terminate: true, signal: document.getElementById('terminate-signal').value } : {};
      post(url, body).then(function (r) {
        if (action === 'retry') { toast('Sent as ' + r.task_id); openTask(r.task_id); }
        else { toast(r.message); reload(); }
      }, function (err) { toast(err.message, true); }).then(function () { btn.disabled = false; });
    });
  }

  function workersPage() {
    var el = document.getElementById('workers');
    var reload = throttle(function () { refresh(el); }, 2000);
    onLive('batch', function (b) { if ((b.workers && b.workers.length) || (b.events || []).some(function (e) { return e.type && e.type.indexOf('worker-') === 0; })) reload(); });
    onLive('resync', reload);
  }

  function workerPage() {
    var el = document.getElementById('worker-detail');
    var name = el.getAttribute('data-worker');
    document.addEventListener('submit', function (e) {
      var form = e.target.closest('form[data-control]');
      if (!form) return;
      e.preventDefault();
      if (!window.confirm(form.getAttribute('data-confirm'))) return;
      var body = { action: form.getAttribute('data-control') };
      new FormData(form).forEach(function (v, k) {
        if (String(v).trim() === '') return;
        body[k] = (k === 'n' || k === 'min' || k === 'max' || k === 'hard' || k === 'soft') ? Number(v) : v;
      });
      var out = document.getElementById('control-result');
      post('/api/v1/workers/' + encodeURIComponent(name) + '/control', body).then(function (r) {
        var msg = r.action + ': ' + r.message;
        toast(msg);
        if (body.action === 'shutdown') { if (out) out.textContent = msg; return; }
        refresh(el, 'refresh=1', function () { var o = document.getElementById('control-result'); if (o) o.textContent = msg; });
      }, function (err) { toast(err.message, true); if (out) out.textContent = 'Failed: ' + err.message; });
    });
  }

  function openTask(id) {
    // The task page needs the task's first event: wait for it (a busy
    // worker can take a while to pick the task up), saying so, with a link
    // to open the page anyway.
    var deadline = Date.now() + 120000;
    var url = BASE + '/tasks/' + encodeURIComponent(id);
    var go = function () { location.href = url; };
    var out = document.getElementById('send-result');
    if (out) {
      out.appendChild(document.createTextNode(' Waiting for its first event… '));
      var a = document.createElement('a'); a.href = url; a.textContent = 'open now';
      out.appendChild(a);
    }
    var check = function () {
      fetch(BASE + '/api/v1/tasks/' + encodeURIComponent(id), { credentials: 'same-origin' }).then(function (r) {
        if (r.ok || Date.now() > deadline) go(); else setTimeout(check, 250);
      }, function () { setTimeout(check, 1000); });
    };
    check();
  }

  function sendPage() {
    var form = document.getElementById('send-form');
    var name = document.getElementById('send-name');
    var queue = document.getElementById('send-queue');
    var args = document.getElementById('send-args');
    var kwargs = document.getElementById('send-kwargs');
    var submit = document.getElementById('send-submit');
    var out = document.getElementById('send-result');
    var queueTouched = false;
    queue.addEventListener('input', function () { queueTouched = queue.value.trim() !== ''; });
    var pickQueue = function () {
      var opts = document.getElementById('registered-tasks').options, q = null;
      for (var i = 0; i < opts.length; i++) if (opts[i].value === name.value.trim()) q = opts[i].getAttribute('data-queue');
      if (!queueTouched) queue.value = q || queue.getAttribute('data-default') || '';
    };
    name.addEventListener('input', pickQueue);
    name.addEventListener('change', pickQueue);
    var check = function (ta, kind, errId) {
      var err = document.getElementById(errId), v;
      try { v = JSON.parse(ta.value.trim() === '' ? (kind === 'array' ? '[]' : '{}') : ta.value); }
      catch (e) { err.textContent = 'Not valid JSON: ' + e.message; ta.classList.add('invalid'); return undefined; }
      var ok = kind === 'array' ? Array.isArray(v) : (v !== null && typeof v === 'object' && !Array.isArray(v));
      if (!ok) { err.textContent = kind === 'array' ? 'args must be a JSON array, like [1, 2]' : 'kwargs must be a JSON object, like {"x": 1}'; ta.classList.add('invalid'); return undefined; }
      err.textContent = ''; ta.classList.remove('invalid'); return v;
    };
    var validate = function () {
      var a = check(args, 'array', 'args-error'), k = check(kwargs, 'object', 'kwargs-error');
      submit.disabled = a === undefined || k === undefined || name.value.trim() === '';
      return [a, k];
    };
    [args, kwargs, name].forEach(function (el) { el.addEventListener('input', validate); });
    validate();
    form.addEventListener('submit', function (e) {
      e.preventDefault();
      var ak = validate();
      if (submit.disabled) return;
      var fd = new FormData(form);
      var body = { name: name.value.trim(), args: ak[0], kwargs: ak[1] };
      if (queue.value.trim()) body.queue = queue.value.trim();
      var num = function (k) { var v = String(fd.get(k) || '').trim(); return v === '' ? undefined : Number(v); };
      if (num('countdown') !== undefined) body.countdown = num('countdown');
      if (num('priority') !== undefined) body.priority = num('priority');
      var eta = String(fd.get('eta') || '').trim(); if (eta) body.eta = (eta.length === 16 ? eta + ':00' : eta) + 'Z';
      var exp = String(fd.get('expires') || '').trim(); if (exp) body.expires = isNaN(Number(exp)) ? exp : Number(exp);
      if (fd.get('app')) body.app = fd.get('app');
      submit.disabled = true;
      post('/api/v1/tasks/send', body).then(function (r) {
        out.textContent = 'Sent ' + r.task_id + ' to queue ' + r.queue + '; opening it…';
        openTask(r.task_id);
      }, function (err) { out.textContent = 'Not sent: ' + err.message; toast(err.message, true); submit.disabled = false; });
    });
  }

  enhance(document);
  var pages = { dashboard: dashboardPage, tasks: tasksPage, workers: workersPage, send: sendPage };
  if (page === 'tasks' && document.getElementById('task-detail')) taskPage();
  else if (page === 'workers' && document.getElementById('worker-detail')) workerPage();
  else if (pages[page]) pages[page]();
  if (page !== 'error') startLive();
})();
