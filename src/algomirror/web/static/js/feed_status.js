// The feed status page (/market/feeds, web/market_data.py): the engine's `user:{id}:feed` status events
// (engine/feeds.py FeedStatus: user_id, state, account_id, last_message_age, subscriptions, rest,
// counters) for the signed-in user's feed fill the "Your feed" card. Loaded as a file (CSP).
(function () {
  "use strict";

  var STATE_TEXT = {
    idle: "idle (nothing to watch)",
    connecting: "connecting",
    connected: "connected",
    waiting: "connected, waiting for the first tick",
    silent: "silent (reconnecting)",
    reconnecting: "reconnecting",
    down: "down (no account to use)",
  };
  var COUNTERS = [
    ["received", "received"],
    ["accepted", "accepted"],
    ["zero_price", "zero price"],
    ["stale", "stale"],
    ["out_of_order", "out of order"],
    ["reconnects", "reconnects"],
    ["failovers", "failovers"],
    ["rest_quotes", "REST quotes"],
    ["rest_failures", "REST failures"],
  ];

  function setText(id, text) {
    var node = document.getElementById(id);
    if (node) {
      node.textContent = text;
    }
    return node;
  }

  function age(seconds) {
    if (seconds === null || seconds === undefined) {
      return "none yet";
    }
    if (seconds < 10) {
      return seconds.toFixed(1) + " s ago";
    }
    if (seconds < 120) {
      return Math.round(seconds) + " s ago";
    }
    return Math.round(seconds / 60) + " min ago";
  }

  function start(root) {
    var userId = Number(root.getAttribute("data-user-id"));
    var names = {};
    try {
      names = JSON.parse(root.getAttribute("data-account-names") || "{}");
    } catch (err) {
      names = {};
    }
    var live = document.getElementById("feed-live-state");

    function render(data) {
      if (!data || Number(data.user_id) !== userId) {
        return; // not this user's (the topic is the user's own; kept as a guard)
      }
      live.textContent = "live";
      live.setAttribute("data-live", "on");
      var account = data.account_id === null || data.account_id === undefined ? "—" : (names[String(data.account_id)] || "account " + data.account_id);
      setText("feed-account", account);
      var state = setText("feed-state", STATE_TEXT[data.state] || data.state);
      if (state) {
        state.setAttribute("data-state", data.state);
      }
      setText("feed-age", age(data.last_message_age));
      setText("feed-subscriptions", String(data.subscriptions));
      setText("feed-rest", data.rest ? "on: quoting open positions over REST" : "off");
      var list = document.getElementById("feed-counters");
      if (list && data.counters) {
        while (list.firstChild) {
          list.removeChild(list.firstChild);
        }
        COUNTERS.forEach(function (pair) {
          var item = document.createElement("li");
          item.textContent = pair[1] + ": " + Number(data.counters[pair[0]] || 0).toLocaleString("en-IN");
          list.appendChild(item);
        });
      }
    }

    window.AlgoLive.subscribe(["user:" + userId + ":feed"], {
      status: render,
      open: function () {
        if (live.getAttribute("data-live") !== "on") {
          live.textContent = "waiting for the engine…";
        }
      },
      error: function () {
        live.textContent = "reconnecting…";
        live.setAttribute("data-live", "off");
      },
    });
  }

  function ready(fn) {
    if (document.readyState === "loading") {
      document.addEventListener("DOMContentLoaded", fn);
    } else {
      fn();
    }
  }

  ready(function () {
    var root = document.getElementById("feed-live");
    if (root && window.AlgoLive) {
      start(root);
    }
  });
})();
