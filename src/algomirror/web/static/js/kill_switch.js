// The kill switch page live (templates/risk/kill.html, web/kill_switch.py). The page renders from the
// database; this file fills each account's "Today's P&L" from the engine's kill switch component
// (AlgoLive, static/js/live.js):
//   user:{uid}:kill_switch  pnl          {account_id, pnl|null, limit, unknown_reason, at}
//   user:{uid}:alerts       kill_switch  {account_id|null, reason, at}: a trip or reset happened
// A trip or reset changes the state column: the page says so and offers a reload (a reload by itself
// would throw away a limit being typed). While a request of this page is queued for the engine
// (data-pending), the page reloads itself every 2 s for at most 30 s to show its outcome: the engine may
// well have done it before this page's stream was connected.
(function () {
  "use strict";

  var grouping = new Intl.NumberFormat("en-IN", { minimumFractionDigits: 2, maximumFractionDigits: 2 });

  function setPnl(cell, data) {
    cell.textContent = "";
    var span = document.createElement("span");
    if (data.pnl === null || data.pnl === undefined) {
      span.className = "unknown";
      span.textContent = "unknown";
      span.title = data.unknown_reason || "unknown";
      cell.appendChild(span);
      if (data.unknown_reason) {
        var why = document.createElement("small");
        why.className = "muted ks-why";
        why.textContent = " (" + data.unknown_reason + ")";
        cell.appendChild(why);
      }
      return;
    }
    var n = Number(data.pnl);
    span.className = n > 0 ? "positive" : (n < 0 ? "negative" : "zero");
    span.textContent = (n < 0 ? "−" : "") + grouping.format(Math.abs(n));
    cell.appendChild(span);
  }

  function changed(state) {
    if (document.getElementById("kill-changed")) {
      return;
    }
    var note = document.createElement("p");
    note.id = "kill-changed";
    note.className = "flash flash-warning";
    note.setAttribute("role", "status");
    note.textContent = "The kill switch changed. ";
    var link = document.createElement("a");
    link.href = window.location.pathname;
    link.textContent = "Reload to see it";
    note.appendChild(link);
    state.parentNode.insertBefore(note, state.nextSibling);
  }

  var PENDING_RELOAD_MS = 2000;
  var PENDING_FOR_MS = 30000;

  function followPending(root) {
    if (root.getAttribute("data-pending") !== "1") {
      return;
    }
    var key = "kill-switch-pending-since";
    var since = Number(window.sessionStorage.getItem(key) || "0");
    var now = Date.now();
    if (!since || now - since > PENDING_FOR_MS * 2) {
      since = now;
      window.sessionStorage.setItem(key, String(since));
    }
    if (now - since < PENDING_FOR_MS) {
      window.setTimeout(function () { window.location.reload(); }, PENDING_RELOAD_MS);
    }
  }

  function start() {
    var root = document.querySelector("[data-kill-switch]");
    if (!root) {
      return;
    }
    if (root.getAttribute("data-pending") !== "1") {
      window.sessionStorage.removeItem("kill-switch-pending-since");
    }
    followPending(root);
    if (!window.AlgoLive) {
      return;
    }
    var uid = root.getAttribute("data-user-id");
    var state = document.getElementById("kill-live-state");
    window.AlgoLive.subscribe(["user:" + uid + ":kill_switch", "user:" + uid + ":alerts"], {
      open: function () {
        if (state) {
          state.textContent = "live";
        }
      },
      error: function () {
        if (state) {
          state.textContent = "reconnecting…";
        }
      },
      pnl: function (data) {
        var cell = root.querySelector('[data-ks-pnl="' + data.account_id + '"]');
        if (cell) {
          setPnl(cell, data);
        }
      },
      kill_switch: function () {
        changed(root.querySelector("h2") || root);
      }
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
