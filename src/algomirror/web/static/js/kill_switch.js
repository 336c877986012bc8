// The kill switch page live (templates/risk/kill.html, web/kill_switch.py), without page reloads.
// Through AlgoLive (static/js/live.js):
//   user:{uid}:kill_switch  pnl          {account_id, pnl|null, limit, unknown_reason, at}: fills each
//                                        account's "Today's P&L" cell
//   user:{uid}:alerts       kill_switch  {account_id|null, reason, at}: a trip or a reset happened
// The state (each account's state and Trip / Reset cells, the global switch's queued note and links, the
// "as of" time) comes from the server-rendered fragment GET /risk/kill/state (templates/risk/
// _kill_state.html): every part with an id replaces the page's part with that id where it differs. It is
// fetched when a kill_switch event arrives, when the stream (re)opens (nothing is replayed on a
// reconnect: a trip may have happened meanwhile) and, while a kill switch command is still queued for the
// engine (data-pending="1"), every 2 s for at most 30 s. The P&L cells and the limit forms are not in
// the fragment: a live figure and a limit being typed stay as they are.
(function () {
  "use strict";

  var grouping = new Intl.NumberFormat("en-IN", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
  var PENDING_EVERY_MS = 2000;
  var PENDING_FOR_MS = 30000;
  var NOT_REFRESHED = "state not refreshed";

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

  // Replace the page's element of the same id by the fragment's copy, only when it differs: an unchanged
  // part keeps its node (and the focus on its button).
  function swap(incoming) {
    var current = document.getElementById(incoming.id);
    if (!current || current.outerHTML === incoming.outerHTML) {
      return;
    }
    current.replaceWith(document.importNode(incoming, true));
  }

  function Follower(root, url, liveState) {
    this.root = root;
    this.url = url;
    this.liveState = liveState;
    this.busy = false;
    this.again = false;
    this.timer = null;
    this.pending = root.getAttribute("data-pending") === "1";
    this.until = this.pending ? Date.now() + PENDING_FOR_MS : 0;
  }

  Follower.prototype.apply = function (text) {
    var doc = new DOMParser().parseFromString(text, "text/html");
    var state = doc.getElementById("kill-state");
    if (!state) {
      throw new Error("the kill switch state answer has no #kill-state");
    }
    var global = doc.getElementById("kill-global-live");
    if (global) {
      swap(global);
    }
    var asOf = doc.getElementById("as-of");
    if (asOf) {
      swap(asOf);
    }
    Array.prototype.forEach.call(state.querySelectorAll("tr[data-account-id]"), function (row) {
      var page = document.getElementById(row.id);
      if (!page) {
        return; // an account added since the page was rendered: only a new page lists it
      }
      page.setAttribute("data-state", row.getAttribute("data-state"));
      Array.prototype.forEach.call(row.children, function (cell) {
        if (cell.id) {
          swap(cell);
        }
      });
    });
    var pending = state.getAttribute("data-pending") === "1";
    if (pending && !this.pending) {
      this.until = Date.now() + PENDING_FOR_MS; // queued meanwhile (another tab): follow it too
    }
    this.pending = pending;
    this.root.setAttribute("data-pending", pending ? "1" : "0");
    if (this.liveState && this.liveState.textContent === NOT_REFRESHED) {
      this.liveState.textContent = "live";
    }
  };

  // One request at a time; a refresh asked for meanwhile runs once after it (the newest state wins).
  Follower.prototype.refresh = function () {
    var self = this;
    if (self.busy) {
      self.again = true;
      return;
    }
    self.busy = true;
    window.fetch(self.url, {
      credentials: "same-origin",
      cache: "no-store",
      // Not the user doing something (the idle session is not extended); signed out: 401 + HX-Redirect.
      headers: { "X-AlgoMirror-Poll": "1", "HX-Request": "true" }
    }).then(function (response) {
      if (response.status === 401 && response.headers.get("HX-Redirect")) {
        window.location.assign(response.headers.get("HX-Redirect"));
        return null;
      }
      if (!response.ok) {
        throw new Error("the kill switch state answered " + response.status);
      }
      return response.text();
    }).then(function (text) {
      if (text !== null) {
        self.apply(text);
      }
    }).catch(function (err) {
      if (self.liveState) {
        self.liveState.textContent = NOT_REFRESHED;
      }
      if (window.console) {
        window.console.warn("kill switch: state refresh failed", err);
      }
    }).then(function () {
      self.busy = false;
      if (self.again) {
        self.again = false;
        self.refresh();
        return;
      }
      self.follow();
    });
  };

  // While a command is queued: look again every 2 s (a timer at a time), for at most 30 s.
  Follower.prototype.follow = function () {
    var self = this;
    if (!self.pending || self.timer !== null || Date.now() >= self.until) {
      return;
    }
    self.timer = window.setTimeout(function () {
      self.timer = null;
      self.refresh();
    }, PENDING_EVERY_MS);
  };

  function start() {
    var root = document.querySelector("[data-kill-switch]");
    if (!root) {
      return;
    }
    var liveState = document.getElementById("kill-live-state");
    var follower = new Follower(root, root.getAttribute("data-state-url"), liveState);
    follower.follow();
    if (!window.AlgoLive) {
      return;
    }
    var uid = root.getAttribute("data-user-id");
    window.AlgoLive.subscribe(["user:" + uid + ":kill_switch", "user:" + uid + ":alerts"], {
      open: function () {
        if (liveState) {
          liveState.textContent = "live";
        }
        follower.refresh();
      },
      error: function () {
        if (liveState) {
          liveState.textContent = "reconnecting…";
        }
      },
      pnl: function (data) {
        var cell = root.querySelector('[data-ks-pnl="' + data.account_id + '"]');
        if (cell) {
          setPnl(cell, data);
        }
      },
      kill_switch: function () {
        follower.refresh();
      }
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
