// The live option chain (/market/chain, web/market_data.py): opens a viewing session, renews it every
// 30 s, ends it on pagehide, and draws the engine's `chain` events (engine/chain.py, chain_payload) into
// #chain-rows. Loaded as a file (the Content-Security-Policy forbids inline script).
(function () {
  "use strict";

  // Per side, the cells in table order (calls are mirrored so the strike sits in the middle).
  var CE_FIELDS = ["tag", "oi", "volume", "bid_qty", "bid", "ask", "ask_qty", "spread", "ltp"];
  var PE_FIELDS = ["ltp", "spread", "bid_qty", "bid", "ask", "ask_qty", "volume", "oi", "tag"];
  var PRICE_FIELDS = { ltp: true, bid: true, ask: true, spread: true };
  var PRIO = { oi: "2", volume: "2", bid_qty: "3", ask_qty: "3", spread: "3" };

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  function price(text) {
    if (text === null || text === undefined || text === "") {
      return "—";
    }
    var value = Number(text);
    if (!isFinite(value)) {
      return "—";
    }
    return value.toLocaleString("en-IN", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
  }

  function count(value) {
    if (value === null || value === undefined) {
      return "—";
    }
    return Number(value).toLocaleString("en-IN");
  }

  function istTime(iso) {
    if (!iso) {
      return "—";
    }
    var when = new Date(iso);
    if (isNaN(when.getTime())) {
      return "—";
    }
    return when.toLocaleTimeString("en-GB", { timeZone: "Asia/Kolkata", hour12: false }) + " IST";
  }

  function cellText(side, field) {
    if (field === "tag") {
      return side.tag || "";
    }
    return PRICE_FIELDS[field] ? price(side[field]) : count(side[field]);
  }

  function tagClass(tag) {
    if (tag === "ATM") {
      return "atm";
    }
    return tag && tag.indexOf("ITM") === 0 ? "itm" : "otm";
  }

  function ChainPage(root) {
    this.root = root;
    this.body = document.getElementById("chain-rows");
    this.signature = "";
    this.session = null;
    this.timer = null;
    this.centred = false;
    this.ended = false;
  }

  ChainPage.prototype.setState = function (text, live) {
    var state = document.getElementById("chain-live-state");
    if (state) {
      state.textContent = text;
      state.setAttribute("data-live", live);
    }
  };

  ChainPage.prototype.openSession = function () {
    var self = this;
    var root = this.root;
    return fetch(root.getAttribute("data-sessions-url"), {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken() },
      body: JSON.stringify({
        instrument: root.getAttribute("data-instrument"),
        expiry: root.getAttribute("data-expiry"),
        strikes: Number(root.getAttribute("data-strikes")),
      }),
    }).then(function (response) {
      return response.json().then(function (data) {
        if (!response.ok) {
          self.setState(data.message || "cannot open the viewing session", "error");
          return;
        }
        self.session = data;
        root.setAttribute("data-session-id", data.session_id);
        self.schedule((data.heartbeat_seconds || 30) * 1000);
      });
    }).catch(function () {
      self.setState("cannot open the viewing session; retrying", "error");
      self.schedule(5000, true);
    });
  };

  ChainPage.prototype.schedule = function (delay, reopen) {
    var self = this;
    if (this.timer !== null) {
      window.clearTimeout(this.timer);
    }
    this.timer = window.setTimeout(function () {
      self.timer = null;
      if (reopen || !self.session) {
        self.openSession();
      } else {
        self.heartbeat();
      }
    }, delay);
  };

  ChainPage.prototype.heartbeat = function () {
    var self = this;
    var session = this.session;
    fetch(session.heartbeat_url, {
      method: "POST",
      credentials: "same-origin",
      // A heartbeat is not the user's activity: the idle timeout still applies (X-AlgoMirror-Poll).
      headers: { "X-CSRFToken": csrfToken(), "X-AlgoMirror-Poll": "1" },
    }).then(function (response) {
      if (response.status === 404 || response.status === 410) {
        self.session = null;
        self.openSession();
        return;
      }
      self.schedule((session.heartbeat_seconds || 30) * 1000);
    }).catch(function () {
      self.schedule(5000);
    });
  };

  ChainPage.prototype.end = function () {
    if (this.ended || !this.session) {
      return;
    }
    this.ended = true;
    var form = new FormData();
    form.append("csrf_token", csrfToken());
    if (navigator.sendBeacon) {
      navigator.sendBeacon(this.session.end_url, form);
    }
  };

  ChainPage.prototype.buildRows = function (rows) {
    var body = this.body;
    while (body.firstChild) {
      body.removeChild(body.firstChild);
    }
    rows.forEach(function (row) {
      var tr = document.createElement("tr");
      tr.setAttribute("data-strike", row.strike);
      function addCells(sideName, fields) {
        fields.forEach(function (field) {
          var td = document.createElement("td");
          td.setAttribute("data-cell", sideName + "-" + field);
          td.setAttribute("data-label", sideName.toUpperCase() + " " + field.replace("_", " "));
          td.className = field === "tag" ? "tag" : "num";
          if (PRIO[field]) {
            td.setAttribute("data-prio", PRIO[field]);
          }
          tr.appendChild(td);
        });
      }
      addCells("ce", CE_FIELDS);
      var strike = document.createElement("th");
      strike.setAttribute("scope", "row");
      strike.className = "strike num";
      strike.textContent = price(row.strike).replace(/\.00$/, "");
      tr.appendChild(strike);
      addCells("pe", PE_FIELDS);
      body.appendChild(tr);
    });
  };

  ChainPage.prototype.fillRow = function (tr, row) {
    tr.classList.toggle("atm", !!row.atm);
    [["ce", CE_FIELDS], ["pe", PE_FIELDS]].forEach(function (pair) {
      var sideName = pair[0];
      var side = row[sideName] || {};
      var kind = tagClass(side.tag);
      pair[1].forEach(function (field) {
        var td = tr.querySelector('[data-cell="' + sideName + "-" + field + '"]');
        if (!td) {
          return;
        }
        var text = cellText(side, field);
        if (td.textContent !== text) {
          td.textContent = text;
        }
        td.classList.toggle("itm", kind === "itm");
        td.classList.toggle("rest", side.source === "rest");
        if (field === "ltp") {
          td.title = side.symbol + (side.source ? " · " + side.source : "");
        }
      });
    });
  };

  ChainPage.prototype.centre = function () {
    var wrap = document.getElementById("chain-scroll");
    var atm = this.body.querySelector("tr.atm");
    if (!wrap || !atm) {
      return;
    }
    if (wrap.scrollHeight > wrap.clientHeight) {
      wrap.scrollTop = Math.max(0, atm.offsetTop - wrap.clientHeight / 2);
    }
    // On a narrow screen the strike column starts in the middle, calls to its left, puts to its right.
    var strike = atm.querySelector(".strike");
    if (strike && wrap.scrollWidth > wrap.clientWidth) {
      wrap.scrollLeft = Math.max(0, strike.offsetLeft - (wrap.clientWidth - strike.offsetWidth) / 2);
    }
  };

  ChainPage.prototype.render = function (data) {
    var rows = data.rows || [];
    document.getElementById("chain-spot").textContent = price(data.spot);
    document.getElementById("chain-atm").textContent = data.atm ? price(data.atm).replace(/\.00$/, "") : "—";
    document.getElementById("chain-pcr-oi").textContent = data.pcr_oi || "—";
    document.getElementById("chain-pcr-volume").textContent = data.pcr_volume || "—";
    var updated = document.getElementById("chain-updated");
    updated.textContent = istTime(data.at);
    updated.setAttribute("data-at", data.at || "");
    var sources = {};
    rows.forEach(function (row) {
      ["ce", "pe"].forEach(function (side) {
        if (row[side] && row[side].source) {
          sources[row[side].source] = true;
        }
      });
    });
    var names = Object.keys(sources).sort();
    document.getElementById("chain-source").textContent = names.length ? names.join(" + ") : (data.spot_source || "—");
    if (!rows.length) {
      return;
    }
    var signature = rows.map(function (row) { return row.strike; }).join(",");
    var rebuilt = signature !== this.signature;
    if (rebuilt) {
      this.buildRows(rows);
      this.signature = signature;
    }
    var trs = this.body.children;
    for (var i = 0; i < rows.length; i += 1) {
      this.fillRow(trs[i], rows[i]);
    }
    if (rebuilt || !this.centred) {
      this.centre();
      this.centred = true;
    }
  };

  ChainPage.prototype.start = function () {
    var self = this;
    this.openSession();
    window.AlgoLive.subscribe([this.root.getAttribute("data-topic")], {
      chain: function (data) {
        self.setState("live", "on");
        self.render(data);
      },
      open: function () {
        self.setState("live", "on");
      },
      error: function () {
        self.setState("reconnecting…", "off");
      },
    });
    window.addEventListener("pagehide", function () {
      self.end();
    });
    // Back from the page cache: the session may have ended meanwhile.
    window.addEventListener("pageshow", function (event) {
      if (event.persisted) {
        self.ended = false;
        self.session = null;
        self.openSession();
      }
    });
  };

  function ready(fn) {
    if (document.readyState === "loading") {
      document.addEventListener("DOMContentLoaded", fn);
    } else {
      fn();
    }
  }

  // The expiry list belongs to the underlying shown: after choosing another underlying the form asks
  // for that one's first listed expiry instead of sending an expiry it does not list.
  function setupForm() {
    var instrument = document.getElementById("c-instrument");
    var expiry = document.getElementById("c-expiry");
    if (!instrument || !expiry) {
      return;
    }
    var shown = instrument.value;
    instrument.addEventListener("change", function () {
      expiry.disabled = instrument.value !== shown || expiry.options.length === 0;
    });
  }

  ready(function () {
    setupForm();
    var root = document.getElementById("chain");
    if (root && window.AlgoLive) {
      new ChainPage(root).start();
    }
  });
})();
