// The combined-premium / Supertrend chart (web/premium_chart.py). Draws into every
//   <div class="premium-chart" data-url="/risk/runs/<id>/premium.json" data-run-id="<id>"></div>
// the run's closed combined-premium candles and the Supertrend line, coloured by direction (−1: premium
// above the line, "up", green; +1: below, "down", red), with TradingView Lightweight Charts v5
// (static/vendor, global LightweightCharts: chart.addSeries(CandlestickSeries | LineSeries)).
// Live: the engine's `supertrend` event on run:{id}:risk (AlgoLive, static/js/live.js) names the candle
// it evaluated; a candle newer than the last one drawn makes the chart read premium.json again (the event
// carries the close only, the OHLC comes from the server's series), and the state line below the chart
// follows the event. A reconnect reads premium.json again too (nothing is replayed).
// Optional data attributes: data-timeframe, data-days (query of premium.json); data-live="off": no stream
// of its own — a page that already streams the run's topic feeds the chart itself (a user has 6 streams):
//   window.AlgoPremiumCharts.get(runId)  → {supertrend(data), refresh()} or null (every chart of the run)
//   .supertrend(data)  pass on a `supertrend` event;  .refresh()  read premium.json again (on a reconnect)
// (risk_monitor.js does so on the risk monitor page).
// Loaded as a file (the page's CSP forbids inline script).
(function () {
  "use strict";

  var IST_OFFSET_S = 19800; // the chart draws UTC: shift by +05:30 so its axis reads IST
  var grouping = new Intl.NumberFormat("en-IN", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
  var STATE_TEXT = {
    ok: "Supertrend: holding",
    warming: "Supertrend: warming up",
    unknown: "Supertrend: unknown",
    off: "Supertrend exit: off",
    exit: "Supertrend: exit state"
  };

  // Whether the line's direction is the strategy's exit state (breakout: −1, breakdown: +1).
  function exitState(kind, direction) {
    return (kind === "breakout" && direction === -1) || (kind === "breakdown" && direction === 1);
  }

  function cssVar(name, fallback) {
    var value = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
    return value || fallback;
  }

  function statusNode(el) {
    var id = "premium-state-" + (el.dataset.runId || "x");
    var node = document.getElementById(id);
    if (!node) {
      node = document.createElement("p");
      node.id = id;
      node.className = "muted small premium-state";
      node.setAttribute("role", "status");
      node.setAttribute("aria-live", "polite");
      el.insertAdjacentElement("afterend", node);
    }
    return node;
  }

  function url(el) {
    var query = [];
    if (el.dataset.timeframe) {
      query.push("timeframe=" + encodeURIComponent(el.dataset.timeframe));
    }
    if (el.dataset.days) {
      query.push("days=" + encodeURIComponent(el.dataset.days));
    }
    return el.dataset.url + (query.length ? (el.dataset.url.indexOf("?") < 0 ? "?" : "&") + query.join("&") : "");
  }

  function PremiumChart(el) {
    var LW = window.LightweightCharts;
    var status = statusNode(el);
    var up = cssVar("--ok", "#1b7f3b");
    var down = cssVar("--danger", "#b3261e");
    var last = null; // epoch s (UTC) of the newest candle drawn
    var loading = false;
    var again = false;
    var drawn = false;
    var heard = null; // the engine's last event: {at (epoch s or null), state, message, extra, asked}
    var asked = 0; // reads of premium.json started so far
    if (!LW || typeof LW.createChart !== "function" || !LW.CandlestickSeries || !LW.LineSeries) {
      status.textContent = "The chart library is not loaded.";
      return { refresh: function () {}, supertrend: function () {} };
    }
    el.setAttribute("role", "img");
    if (!el.getAttribute("aria-label")) {
      el.setAttribute("aria-label", "Combined premium candles with the Supertrend line, IST");
    }
    var chart = LW.createChart(el, {
      autoSize: true,
      layout: {
        background: { color: "transparent" },
        textColor: cssVar("--muted", "#5b6574"),
        // The logo's own <style> is refused by the page's CSP: the page names TradingView instead.
        attributionLogo: false
      },
      grid: { vertLines: { color: cssVar("--line", "#d9dde3") }, horzLines: { color: cssVar("--line", "#d9dde3") } },
      timeScale: { timeVisible: true, secondsVisible: false },
      localization: { priceFormatter: function (p) { return grouping.format(p); } }
    });
    var candles = chart.addSeries(LW.CandlestickSeries, {
      upColor: up, downColor: down, borderUpColor: up, borderDownColor: down, wickUpColor: up, wickDownColor: down,
      priceLineVisible: false
    });
    var line = chart.addSeries(LW.LineSeries, {
      lineWidth: 2, priceLineVisible: false, lastValueVisible: true, crosshairMarkerVisible: false
    });

    function describe(state, message, extra) {
      var text = STATE_TEXT[state] || STATE_TEXT.unknown;
      if (extra) {
        text += " · " + extra;
      }
      if (message) {
        text += " — " + message;
      }
      status.textContent = text;
      status.dataset.state = state || "unknown";
    }

    function draw(body, read) {
      var bars = (body.candles || []).map(function (c) {
        return { time: c.time + IST_OFFSET_S, open: c.open, high: c.high, low: c.low, close: c.close };
      });
      var points = (body.supertrend || []).map(function (p) {
        return { time: p.time + IST_OFFSET_S, value: p.value, color: p.direction === -1 ? up : down };
      });
      candles.setData(bars);
      line.setData(points);
      if (bars.length && !drawn) {
        chart.timeScale().fitContent(); // first draw: every candle in view (later draws keep the user's zoom)
        drawn = true;
      }
      last = bars.length ? bars[bars.length - 1].time - IST_OFFSET_S : null;
      el.dataset.candles = String(bars.length);
      var extra = "";
      var tail = body.supertrend && body.supertrend.length ? body.supertrend[body.supertrend.length - 1] : null;
      if (tail) {
        extra = (tail.direction === -1 ? "up ▲" : "down ▼") + " · ST " + grouping.format(tail.value);
      }
      var state = body.state === "ok" && tail && exitState(body.exit_type, tail.direction) ? "exit" : body.state;
      if (heard && (read <= heard.asked || (heard.at !== null && (last === null || heard.at >= last)))) {
        // The engine's event came after this read was asked (the reply is older news), or it is about a
        // candle the server's series does not have yet: it stays shown.
        describe(heard.state, heard.message, heard.extra);
        return;
      }
      heard = null;
      describe(state, body.message, extra);
      if (!bars.length && !body.message) {
        status.textContent = "No closed candles yet.";
      }
    }

    function reload() {
      if (loading) {
        again = true; // one read at a time; the newest request wins after it
        return;
      }
      loading = true;
      asked += 1;
      var read = asked;
      fetch(url(el), { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (response) {
          if (!response.ok) {
            throw new Error("HTTP " + response.status);
          }
          return response.json();
        })
        .then(function (body) { draw(body, read); })
        .catch(function (err) {
          status.textContent = "The premium chart could not be loaded (" + err.message + ").";
          status.dataset.state = "error";
        })
        .then(function () {
          loading = false;
          if (again) {
            again = false;
            reload();
          }
        });
    }

    // The engine's `supertrend` event (engine/supertrend_rule.py) for this run.
    function supertrend(data) {
      if (!data || String(data.run_id) !== String(el.dataset.runId)) {
        return;
      }
      if (el.dataset.timeframe && data.timeframe && data.timeframe !== el.dataset.timeframe) {
        return; // the engine's timeframe is not the one shown
      }
      var at = data.candle_at ? Math.floor(Date.parse(data.candle_at) / 1000) : null;
      var extra = "";
      if (data.direction === 1 || data.direction === -1) {
        extra = (data.direction === -1 ? "up ▲" : "down ▼") + (data.line ? " · ST " + grouping.format(Number(data.line)) : "");
      }
      var state = data.state === "ok" && exitState(data.exit_type, data.direction) ? "exit" : data.state;
      var message = state === "exit" && data.message === "exit state" ? null : data.message;
      // Shown at once, even while the chart is still loading or re-reads for the candle the event names.
      heard = { at: at, state: state, message: message, extra: extra, asked: asked };
      describe(state, message, extra);
      if (at !== null && (last === null || at > last)) {
        reload();
      }
    }

    reload();
    return { refresh: reload, supertrend: supertrend };
  }

  // Charts by run id; a page may draw one run twice (each chart keeps its own timeframe filter).
  var byRun = {};
  window.AlgoPremiumCharts = {
    get: function (runId) {
      var charts = byRun[String(runId)];
      if (!charts || !charts.length) {
        return null;
      }
      return {
        supertrend: function (data) { charts.forEach(function (c) { c.supertrend(data); }); },
        refresh: function () { charts.forEach(function (c) { c.refresh(); }); }
      };
    }
  };

  function start() {
    document.querySelectorAll(".premium-chart[data-url]").forEach(function (el) {
      if (el.dataset.chartReady === "true") {
        return;
      }
      el.dataset.chartReady = "true";
      var chart = PremiumChart(el);
      var runId = el.dataset.runId;
      if (runId) {
        (byRun[runId] = byRun[runId] || []).push(chart);
      }
      if (runId && el.dataset.live !== "off" && window.AlgoLive) {
        var opens = 0;
        window.AlgoLive.subscribe(["run:" + runId + ":risk"], {
          supertrend: chart.supertrend,
          open: function () {
            opens += 1;
            if (opens > 1) {
              chart.refresh(); // nothing is replayed on reconnect
            }
          }
        });
      }
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
