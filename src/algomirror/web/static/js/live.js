// AlgoMirror live updates: a small wrapper over EventSource for GET /live/stream (web/live.py).
// Loaded as a file (the Content-Security-Policy forbids inline script); no dependencies.
//
//   var live = AlgoLive.subscribe(["run:5:risk", "run:5:status"], {
//     risk: function (data, meta) { ... },        // one handler per event name
//     status: function (data, meta) { ... },      // meta = {topic, event, id}
//     open: function () { ... },                  // every (re)connect: refresh from the page's data,
//     error: function () { ... }                  //   since nothing is replayed on reconnect
//   });
//   live.close();
//
// The browser reconnects a dropped stream by itself (the server sends "retry: 3000") and the server ends
// every stream after a few minutes on purpose. An answer that is not a stream (401 signed out, 404,
// 429 too many tabs) closes the EventSource for good: then this helper opens a new one after a growing
// delay (3 s doubling to 60 s, with jitter) until close() is called.
(function () {
  "use strict";
  var FIRST_DELAY_MS = 3000;
  var MAX_DELAY_MS = 60000;

  function streamUrl(topics) {
    return "/live/stream?" + topics.map(function (topic) {
      return "topic=" + encodeURIComponent(topic);
    }).join("&");
  }

  function subscribe(topics, handlers) {
    handlers = handlers || {};
    var source = null;
    var timer = null;
    var closed = false;
    var delay = FIRST_DELAY_MS;

    function dispatch(event) {
      var handler = handlers[event.type];
      if (typeof handler !== "function") {
        return;
      }
      var envelope;
      try {
        envelope = JSON.parse(event.data);
      } catch (err) {
        return; // not ours: the server only sends JSON
      }
      handler(envelope.data, { topic: envelope.topic, event: event.type, id: event.lastEventId });
    }

    function connect() {
      timer = null;
      if (closed) {
        return;
      }
      source = new EventSource(streamUrl(topics));
      source.onopen = function () {
        delay = FIRST_DELAY_MS;
        if (typeof handlers.open === "function") {
          handlers.open();
        }
      };
      source.onerror = function () {
        if (typeof handlers.error === "function") {
          handlers.error();
        }
        if (!closed && source && source.readyState === EventSource.CLOSED && timer === null) {
          source = null;
          var wait = delay + Math.floor(Math.random() * 1000);
          delay = Math.min(delay * 2, MAX_DELAY_MS);
          timer = window.setTimeout(connect, wait);
        }
      };
      Object.keys(handlers).forEach(function (name) {
        if (name !== "open" && name !== "error") {
          source.addEventListener(name, dispatch);
        }
      });
    }

    connect();
    return {
      close: function () {
        closed = true;
        if (timer !== null) {
          window.clearTimeout(timer);
          timer = null;
        }
        if (source) {
          source.close();
          source = null;
        }
      }
    };
  }

  window.AlgoLive = { subscribe: subscribe };
})();
