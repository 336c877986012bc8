// The Risk pages live (templates/risk/index.html and monitor.html, web/risk.py). The pages render from
// the database; this file keeps them current from the risk engine's events on `run:{id}:risk`
// (AlgoLive, static/js/live.js):
//   snapshot     (engine/risk_snapshot.py) P&L per execution, account and run, peak, trailing stop, marks and ages
//   <rule code>  a breach (max_loss, trailing_stop, stop_loss, …): prepended to the events list
//   supertrend   (engine/supertrend_rule.py) the Supertrend state, line and direction; on the monitor
//                also passed on to the premium chart (premium_chart.js, window.AlgoPremiumCharts), which
//                opens no stream of its own there (data-live="off"): one stream per tab, not two
// Every value has a fixed slot ([data-field]) in fixed-width columns: an update never moves the layout,
// and the page never reloads. Mark ages tick every second here, on the market clock: the page's
// data-server-now, resynchronised by each snapshot's `at`, advancing data-clock-speed times the wall
// clock (the demo's clock can run faster). Ages are shown and judged in wall-clock seconds (a demo at
// x30 ages its market time 30 times faster); older than data-stale-seconds is shown stale.
(function () {
  "use strict";

  var IST_OFFSET_S = 19800; // the charts draw UTC: shift by +05:30 so their axis reads IST
  var SILENT_AFTER_MS = 6000; // the engine sends a snapshot at least every 2 s per open run
  var MAX_EVENTS = 20;
  var grouping = new Intl.NumberFormat("en-IN", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
  var istTime = new Intl.DateTimeFormat("en-GB", {
    timeZone: "Asia/Kolkata", hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false
  });

  // ------------------------------------------------------------------------------------ formatting

  function num(value) {
    if (value === null || value === undefined || value === "") {
      return null;
    }
    var n = Number(value);
    return isFinite(n) ? n : null;
  }

  function signClass(n) {
    return n > 0 ? "positive" : (n < 0 ? "negative" : "zero");
  }

  function unknownSpan(title) {
    var span = document.createElement("span");
    span.className = "unknown";
    span.title = title || "unknown";
    span.textContent = "—";
    return span;
  }

  // An amount in ₹ with Indian grouping (no ₹ sign: the column header carries it); `signed` colours it.
  function moneyNode(value, signed, title) {
    var n = num(value);
    if (n === null) {
      return unknownSpan(title);
    }
    var span = document.createElement("span");
    if (signed) {
      span.className = signClass(n);
    }
    span.textContent = grouping.format(n);
    return span;
  }

  function setNode(el, node) {
    if (el) {
      el.replaceChildren(node);
    }
  }

  function setText(el, text) {
    if (el && el.textContent !== text) {
      el.textContent = text;
    }
  }

  function field(root, name) {
    return root ? root.querySelector('[data-field="' + name + '"]') : null;
  }

  function ageText(seconds) {
    if (seconds === null) {
      return "—";
    }
    if (seconds < 60) {
      return seconds + " s";
    }
    if (seconds < 3600) {
      return Math.floor(seconds / 60) + " min";
    }
    return Math.floor(seconds / 3600) + " h";
  }

  function statusNode(status) {
    var span = document.createElement("span");
    span.className = "ostatus ostatus-" + String(status);
    span.textContent = String(status).replace(/_/g, " ");
    return span;
  }

  // ----------------------------------------------------------------------------------------- clock

  function MarketClock(root) {
    var speed = num(root.dataset.clockSpeed) || 1;
    var market0 = Date.parse(root.dataset.serverNow || "") || Date.now();
    var wall0 = Date.now();
    return {
      speed: speed,
      now: function () {
        return market0 + (Date.now() - wall0) * speed;
      },
      sync: function (iso) {
        var at = Date.parse(iso || "");
        if (!isNaN(at)) {
          market0 = at;
          wall0 = Date.now();
        }
      },
      // Wall-clock seconds since the market instant `iso` (null when unknown).
      ageSeconds: function (iso) {
        var at = Date.parse(iso || "");
        if (isNaN(at)) {
          return null;
        }
        return Math.max(0, Math.floor((this.now() - at) / speed / 1000));
      }
    };
  }

  // The mark's instant: its mark_at, else the snapshot's `at` less age_ms.
  function markAt(execution, snapshotAt) {
    if (execution.mark_at) {
      return execution.mark_at;
    }
    var at = Date.parse(snapshotAt || "");
    if (execution.age_ms === null || execution.age_ms === undefined || isNaN(at)) {
      return "";
    }
    return new Date(at - execution.age_ms).toISOString();
  }

  // Show an age slot from its data-mark-at; returns the age (s) or null.
  function tickAge(el, iso, clock, staleSeconds) {
    if (!el) {
      return null;
    }
    var age = iso ? clock.ageSeconds(iso) : null;
    setText(el, ageText(age));
    el.classList.toggle("stale", age !== null && age > staleSeconds);
    return age;
  }

  // ----------------------------------------------------------------------------------------- chart

  function cssVar(name, fallback) {
    var value = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
    return value || fallback;
  }

  function MtmChart(el, limits) {
    var LW = window.LightweightCharts;
    var empty = document.getElementById("mtm-empty");
    var state = { series: null, last: null, loaded: false, pending: [], count: 0 };
    var FIT_UNTIL = 300; // below this many points the whole day fits; beyond, the chart scrolls with time
    if (!el || !LW || typeof LW.createChart !== "function") {
      return { add: function () {}, reload: function () {} };
    }
    var chart = LW.createChart(el, {
      autoSize: true,
      layout: {
        background: { color: "transparent" },
        textColor: cssVar("--muted", "#5b6574"),
        // The logo's own <style> is refused by the page's CSP: the page names TradingView instead
        // (the licence's attribution, templates/risk/monitor.html).
        attributionLogo: false
      },
      grid: { vertLines: { color: cssVar("--line", "#d9dde3") }, horzLines: { color: cssVar("--line", "#d9dde3") } },
      timeScale: { timeVisible: true, secondsVisible: false },
      localization: { priceFormatter: function (p) { return grouping.format(p); } }
    });
    state.series = chart.addSeries(LW.LineSeries, {
      color: cssVar("--accent", "#1f5fbf"), lineWidth: 2, priceLineVisible: false
    });
    state.series.createPriceLine({ price: 0, color: cssVar("--muted", "#5b6574"), lineWidth: 1, lineStyle: 2, axisLabelVisible: false });
    if (limits.maxLoss !== null) {
      state.series.createPriceLine({ price: -limits.maxLoss, color: cssVar("--danger", "#b3261e"), lineWidth: 1, lineStyle: 2, title: "max loss" });
    }
    if (limits.maxProfit !== null) {
      state.series.createPriceLine({ price: limits.maxProfit, color: cssVar("--ok", "#1b7f3b"), lineWidth: 1, lineStyle: 2, title: "max profit" });
    }

    function showEmpty() {
      if (empty) {
        empty.hidden = state.last !== null;
      }
    }

    function put(time, value) {
      if (state.last !== null && time < state.last) {
        return; // the chart only appends (or replaces the latest point)
      }
      if (time !== state.last) {
        state.count += 1;
      }
      state.series.update({ time: time, value: value });
      state.last = time;
      if (state.count < FIT_UNTIL) {
        chart.timeScale().fitContent();
      }
      showEmpty();
    }

    function reload() {
      fetch(el.dataset.url, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (response) {
          if (!response.ok) {
            throw new Error("MTM history: HTTP " + response.status);
          }
          return response.json();
        })
        .then(function (body) {
          var points = (body.points || []).map(function (p) {
            return { time: p.time + IST_OFFSET_S, value: p.value };
          });
          var live = state.loaded ? [] : state.pending;
          state.series.setData(points);
          state.count = points.length;
          state.last = points.length ? points[points.length - 1].time : null;
          chart.timeScale().fitContent();
          state.loaded = true;
          state.pending = [];
          live.forEach(function (p) { put(p.time, p.value); });
          showEmpty();
        })
        .catch(function (err) {
          state.loaded = true;
          if (empty) {
            empty.hidden = false;
            empty.textContent = "The MTM history could not be loaded (" + err.message + "); live points still appear.";
          }
        });
    }

    reload();
    return {
      add: function (iso, pnl) {
        var at = Date.parse(iso || "");
        var value = num(pnl);
        if (isNaN(at) || value === null) {
          return;
        }
        var time = Math.floor(at / 1000) + IST_OFFSET_S;
        if (!state.loaded) {
          state.pending.push({ time: time, value: value });
          return;
        }
        put(time, value);
      },
      reload: reload
    };
  }

  // ---------------------------------------------------------------------------------------- events

  function eventItem(code, data, clock, where, accountName) {
    var li = document.createElement("li");
    li.className = "risk-event risk-event-" + (data.action || "none") + " is-new";
    li.dataset.eventType = code;
    function part(cls, text) {
      var span = document.createElement("span");
      span.className = cls;
      span.textContent = text;
      li.appendChild(span);
      return span;
    }
    part("ev-time", istTime.format(new Date(clock.now())));
    part("ev-type", code.replace(/_/g, " "));
    part("ev-action", String(data.action || "—").replace(/_/g, " "));
    if (where) {
      li.appendChild(where);
    }
    part("ev-account ellipsis", accountName || (data.account_id ? "account " + data.account_id : "all accounts"));
    var pnl = part("ev-pnl num", "");
    if (num(data.pnl) !== null) {
      pnl.appendChild(moneyNode(data.pnl, true));
    }
    if (data.message || data.detail) {
      part("ev-text", String(data.message || data.detail));
    }
    return li;
  }

  function prependEvent(li) {
    var list = document.getElementById("risk-events");
    if (!list) {
      return;
    }
    var empty = document.getElementById("risk-events-empty");
    if (empty) {
      empty.hidden = true;
    }
    list.insertBefore(li, list.firstChild);
    var items = list.querySelectorAll("li.risk-event");
    for (var i = MAX_EVENTS; i < items.length; i++) {
      items[i].remove();
    }
  }

  // ----------------------------------------------------------------------------------- live status

  function LiveState(el, root) {
    var lastAt = null;
    var connected = false;
    function show(state, text) {
      if (!el) {
        return;
      }
      el.dataset.live = state;
      var slot = field(el, "live") || el;
      setText(slot, text);
    }
    return {
      opened: function () {
        connected = true;
        if (lastAt === null) {
          show("waiting", "connected, waiting for the engine…");
        }
      },
      failed: function () {
        connected = false;
        show("off", "reconnecting…");
      },
      got: function () {
        lastAt = Date.now();
        show("on", "live");
        root.classList.remove("is-silent");
      },
      tick: function () {
        if (!connected || lastAt === null) {
          return;
        }
        var quiet = Date.now() - lastAt;
        if (quiet > SILENT_AFTER_MS) {
          show("silent", "no update for " + Math.floor(quiet / 1000) + " s");
          root.classList.add("is-silent");
        }
      }
    };
  }

  // --------------------------------------------------------------------------------------- monitor

  function monitor(root) {
    var runId = root.dataset.runId;
    var clock = MarketClock(root);
    var staleSeconds = num(root.dataset.staleSeconds) || 5;
    var limits = { maxLoss: num(root.dataset.maxLoss), maxProfit: num(root.dataset.maxProfit) };
    var live = LiveState(document.getElementById("rm-live"), root);
    var chart = MtmChart(document.getElementById("mtm-chart"), limits);
    var opens = 0;

    function accountName(id) {
      var row = document.getElementById("rm-acct-" + id);
      return row ? row.dataset.accountName : null;
    }

    function tick() {
      var oldest = null;
      document.querySelectorAll("#rm-legs tr[data-execution-id]").forEach(function (row) {
        var age = tickAge(field(row, "age"), row.dataset.markAt, clock, staleSeconds);
        var stale = age !== null && age > staleSeconds;
        row.classList.toggle("is-stale", stale);
        var ltp = field(row, "ltp");
        if (ltp) {
          ltp.classList.toggle("stale", stale);
        }
        if (row.dataset.openQty !== "0" && age !== null && (oldest === null || age > oldest)) {
          oldest = age;
        }
      });
      var runAge = document.querySelector("#rm-data [data-field=age]");
      if (runAge) {
        setText(runAge, ageText(oldest));
        runAge.classList.toggle("stale", oldest !== null && oldest > staleSeconds);
      }
      live.tick();
    }

    function distance(name, value) {
      var el = field(root, name);
      if (!el) {
        return;
      }
      setText(el, value === null ? "" : "(" + grouping.format(value) + " left)");
    }

    function snapshot(data) {
      clock.sync(data.at);
      live.got();
      var pnl = num(data.pnl);
      setNode(field(root, "pnl"), moneyNode(data.pnl, true, data.unknown_reason));
      setNode(field(root, "peak"), moneyNode(data.peak, true));
      setNode(field(root, "trailing_stop"), moneyNode(data.trailing_stop, true));
      setNode(field(root, "trailing_initial"), moneyNode(data.trailing_initial, true));
      var trailing = field(root, "trailing_stop");
      if (trailing) {
        trailing.title = data.trailing_armed ? "armed: fires when P&L ≤ this level" : "not armed yet (entry not complete)";
      }
      if (data.max_loss !== undefined) {
        limits.maxLoss = num(data.max_loss);
        setNode(field(root, "max_loss"), moneyNode(data.max_loss, false, "no max loss"));
      }
      if (data.max_profit !== undefined) {
        limits.maxProfit = num(data.max_profit);
        setNode(field(root, "max_profit"), moneyNode(data.max_profit, false, "no max profit"));
      }
      distance("to_max_loss", pnl !== null && limits.maxLoss !== null ? pnl + limits.maxLoss : null);
      distance("to_max_profit", pnl !== null && limits.maxProfit !== null ? limits.maxProfit - pnl : null);
      var unknown = document.getElementById("rm-unknown");
      if (unknown) {
        // Its line stays reserved either way (risk.css): the note coming and going moves nothing.
        var note = pnl !== null ? "" : "P&L unknown" + (data.unknown_reason ? ": " + data.unknown_reason : "") +
          "; no rule fires until every open leg has a fresh price.";
        unknown.dataset.unknown = pnl === null ? "true" : "false";
        unknown.title = note;
        setText(unknown, note);
      }
      (data.accounts || []).forEach(function (a) {
        setNode(field(document.getElementById("rm-acct-" + a.account_id), "pnl"), moneyNode(a.pnl, true));
      });
      var sources = {};
      (data.executions || []).forEach(function (e) {
        var row = document.getElementById("rm-ex-" + e.id);
        if (!row) {
          return; // a leg added after the page loaded: its account and run totals still count it
        }
        row.dataset.markAt = markAt(e, data.at);
        row.dataset.openQty = String(e.open_qty);
        row.dataset.status = e.status;
        setText(field(row, "open_qty"), String(e.open_qty));
        setNode(field(row, "entry"), moneyNode(e.entry_price, false));
        setNode(field(row, "ltp"), moneyNode(e.ltp, false));
        setText(field(row, "source"), e.source || "—");
        setNode(field(row, "pnl"), moneyNode(e.pnl, true));
        setNode(field(row, "stop_loss"), moneyNode(e.stop_loss, false, "no stop-loss"));
        setNode(field(row, "target"), moneyNode(e.target, false, "no target"));
        setNode(field(row, "status"), statusNode(e.status));
        if (e.open_qty && e.source) {
          sources[e.source] = true;
        }
      });
      setText(document.querySelector("#rm-data [data-field=source]"), Object.keys(sources).sort().join("/") || "—");
      chart.add(data.at, data.pnl);
      tick();
    }

    function breach(code) {
      return function (data) {
        var li = eventItem(code, data, clock, null, data.account_id ? accountName(data.account_id) : null);
        prependEvent(li);
        var latch = document.getElementById("latch-" + code);
        if (latch && latch.dataset.fired !== "true") {
          latch.dataset.fired = "true";
          var text = "fired " + istTime.format(new Date(clock.now()));
          var value = num(data.pnl);
          if (value !== null) {
            text += " at " + (value < 0 ? "-" : "") + "₹" + grouping.format(Math.abs(value));
          }
          setText(field(latch, "latch"), text);
        }
      };
    }

    // The premium chart of this run, when premium_chart.js has drawn one (looked up at each event: the
    // scripts load in either order).
    function premiumChart() {
      return window.AlgoPremiumCharts ? window.AlgoPremiumCharts.get(runId) : null;
    }

    function supertrend(data) {
      var premium = premiumChart();
      if (premium) {
        premium.supertrend(data);
      }
      var state = field(root, "st_state");
      setText(state, String(data.state || "unknown"));
      if (state) {
        state.title = data.message || "";
      }
      setNode(field(root, "st_line"), moneyNode(data.line, false));
      var direction = field(root, "st_direction");
      if (direction) {
        // TradingView's convention (domain/supertrend.py): −1 up (premium above the line), +1 down.
        var d = data.direction;
        direction.className = d === -1 ? "positive" : (d === 1 ? "negative" : "unknown");
        setText(direction, d === -1 ? "up ▲" : (d === 1 ? "down ▼" : "—"));
      }
      var close = num(data.close);
      setText(field(root, "st_close"), close === null ? "" : "close " + grouping.format(close) +
        (data.candle_at ? " · " + istTime.format(new Date(data.candle_at)).slice(0, 5) : ""));
    }

    var handlers = {
      snapshot: snapshot,
      supertrend: supertrend,
      open: function () {
        opens += 1;
        live.opened();
        if (opens > 1) {
          // Nothing is replayed on reconnect: fill the charts' gaps from the database.
          chart.reload();
          var premium = premiumChart();
          if (premium) {
            premium.refresh();
          }
        }
      },
      error: function () { live.failed(); }
    };
    (root.dataset.rules || "").split(",").forEach(function (code) {
      if (code) {
        handlers[code] = breach(code);
      }
    });
    tick();
    window.setInterval(tick, 1000);
    if (root.dataset.open === "true" && window.AlgoLive) {
      window.AlgoLive.subscribe(["run:" + runId + ":risk"], handlers);
    }
  }

  // ----------------------------------------------------------------------------------------- index

  function index(root) {
    var clock = MarketClock(root);
    var staleSeconds = num(root.dataset.staleSeconds) || 5;
    var live = LiveState(document.getElementById("risk-live-state"), root);
    var runs = (root.dataset.runs || "").split(",").filter(Boolean);
    // Per run: the mark instants of its open executions (from the latest snapshot).
    var marks = {};

    function tick() {
      Object.keys(marks).forEach(function (runId) {
        var row = document.getElementById("risk-run-" + runId);
        var oldest = null;
        marks[runId].forEach(function (iso) {
          var age = clock.ageSeconds(iso);
          if (age !== null && (oldest === null || age > oldest)) {
            oldest = age;
          }
        });
        var el = field(row, "age");
        if (el) {
          setText(el, ageText(oldest));
          el.classList.toggle("stale", oldest !== null && oldest > staleSeconds);
        }
      });
      live.tick();
    }

    function snapshot(data) {
      clock.sync(data.at);
      live.got();
      var row = document.getElementById("risk-run-" + data.run_id);
      if (!row) {
        return;
      }
      setNode(field(row, "pnl"), moneyNode(data.pnl, true, data.unknown_reason));
      setNode(field(row, "trailing_stop"), moneyNode(data.trailing_stop, true, "no trailing stop"));
      if (data.max_loss !== undefined) {
        setNode(field(row, "max_loss"), moneyNode(data.max_loss, false, "no max loss"));
      }
      if (data.max_profit !== undefined) {
        setNode(field(row, "max_profit"), moneyNode(data.max_profit, false, "no max profit"));
      }
      marks[data.run_id] = (data.executions || []).filter(function (e) {
        return e.open_qty;
      }).map(function (e) {
        return markAt(e, data.at);
      }).filter(Boolean);
      tick();
    }

    function breach(code) {
      return function (data) {
        var row = document.getElementById("risk-run-" + data.run_id);
        var where = document.createElement("span");
        where.className = "ev-where ellipsis";
        var link = row ? row.querySelector("td.name-cell a") : null;
        if (link) {
          var a = document.createElement("a");
          a.href = link.getAttribute("href");
          a.textContent = link.textContent + " #" + data.run_id;
          where.appendChild(a);
        } else {
          where.textContent = "run #" + data.run_id;
        }
        prependEvent(eventItem(code, data, clock, where, null));
      };
    }

    if (!runs.length || !window.AlgoLive) {
      return;
    }
    var handlers = {
      snapshot: snapshot,
      open: function () { live.opened(); },
      error: function () { live.failed(); }
    };
    (root.dataset.rules || "").split(",").forEach(function (code) {
      if (code) {
        handlers[code] = breach(code);
      }
    });
    window.setInterval(tick, 1000);
    window.AlgoLive.subscribe(runs.map(function (id) { return "run:" + id + ":risk"; }), handlers);
  }

  function start() {
    var root = document.getElementById("risk-monitor");
    if (root) {
      monitor(root);
    }
    var list = document.querySelector("[data-risk-index]");
    if (list) {
      index(list);
    }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
