// AlgoMirror page glue. Loaded as a file (the Content-Security-Policy forbids inline script).
(function () {
  "use strict";
  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }
  // htmx requests carry the CSRF token in a header, like the forms carry it in a hidden field.
  document.addEventListener("htmx:configRequest", function (event) {
    event.detail.headers["X-CSRFToken"] = csrfToken();
  });

  // ------------------------------------------------------------------------------------ morph
  // Live fragments are merged into the page node by node instead of replacing the container: an
  // element that is still there keeps its identity, so a scrolled table keeps its scroll position,
  // the focused button keeps focus, an open <details> stays open and a selection inside unchanged
  // text survives. Elements are matched by id (rows carry one), otherwise by position and tag.
  function keyOf(node) {
    return node.nodeType === 1 && node.id ? node.id : null;
  }

  function compatible(a, b) {
    return a.nodeType === b.nodeType && (a.nodeType !== 1 || a.tagName === b.tagName);
  }

  // Attributes the browser or the user owns while the page is open: the server's copy must not undo them.
  function userOwned(el, name) {
    if (name === "open" && el.tagName === "DETAILS") return true;
    if (name === "style" && el.hasAttribute("x-show")) return true;
    return false;
  }

  function morphAttributes(from, to) {
    var i, attr;
    for (i = from.attributes.length - 1; i >= 0; i--) {
      attr = from.attributes[i];
      if (!to.hasAttribute(attr.name) && !userOwned(from, attr.name)) from.removeAttribute(attr.name);
    }
    for (i = 0; i < to.attributes.length; i++) {
      attr = to.attributes[i];
      if (from.getAttribute(attr.name) !== attr.value && !userOwned(from, attr.name)) {
        from.setAttribute(attr.name, attr.value);
      }
    }
  }

  function morphNode(from, to) {
    if (from.nodeType !== 1) {
      if (from.nodeValue !== to.nodeValue) from.nodeValue = to.nodeValue;
      return;
    }
    morphAttributes(from, to);
    // A control the user is using keeps what they typed or the list they opened.
    var tag = from.tagName;
    if ((tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT") && from === document.activeElement) return;
    if (from.tagName === "TEXTAREA") return;
    morphChildren(from, to);
  }

  // Moving a node with insertBefore blurs it and resets its scroll; moveBefore (where the browser has
  // it) keeps that state, so a row that changes place under a live sort stays focused and scrolled.
  function move(parent, node, before) {
    if (typeof parent.moveBefore === "function") {
      try {
        parent.moveBefore(node, before);
        return;
      } catch (e) {
        // Not movable this way (e.g. across documents): fall through to a plain insert.
      }
    }
    parent.insertBefore(node, before);
  }

  function morphChildren(from, to) {
    var keyed = {};
    var child;
    for (child = from.firstChild; child; child = child.nextSibling) {
      var k = keyOf(child);
      if (k) keyed[k] = child;
    }
    var cursor = from.firstChild;
    var incoming = to.firstChild;
    while (incoming) {
      var next = incoming.nextSibling;
      var key = keyOf(incoming);
      var match = null;
      if (key) {
        match = keyed[key] || null;
        if (match && !compatible(match, incoming)) match = null;
        if (match) delete keyed[key];
      } else if (cursor && !keyOf(cursor) && compatible(cursor, incoming)) {
        match = cursor;
      }
      if (match) {
        if (match === cursor) cursor = cursor.nextSibling;
        else move(from, match, cursor);
        morphNode(match, incoming);
      } else {
        from.insertBefore(incoming, cursor);
      }
      incoming = next;
    }
    while (cursor) {
      var stale = cursor;
      cursor = cursor.nextSibling;
      from.removeChild(stale);
    }
  }

  function defineMorph() {
    if (!window.htmx) return;
    window.htmx.defineExtension("morph", {
      handleSwap: function (swapStyle, target, fragment) {
        if (swapStyle !== "morph") return false;
        // If the merge ever fails half way, the region is replaced whole from a copy: never a mix.
        var copy = fragment.cloneNode(true);
        try {
          morphChildren(target, fragment);
        } catch (error) {
          target.replaceChildren(copy);
          if (window.console) window.console.error("live refresh: merge failed, region replaced", error);
        }
        window.htmx.process(target);
        target.dispatchEvent(new CustomEvent("algomirror:morphed", { bubbles: true }));
        return true;
      },
    });
  }
  defineMorph();

  // ---------------------------------------------------------------------------------- theme
  // The choice ("dark", "light", or none = follow the system) lives in localStorage; theme.js applied
  // it before the first paint. The toggle goes system → the other look → the system's look pinned →
  // system, so the first click always changes what is seen.
  var THEME_LABELS = { system: "Theme: system", dark: "Theme: dark", light: "Theme: light" };
  function currentTheme() {
    try {
      return localStorage.getItem("algomirror-theme") || "system";
    } catch (e) {
      return "system";
    }
  }
  function applyTheme(theme) {
    var root = document.documentElement;
    if (theme === "system") root.removeAttribute("data-theme");
    else root.setAttribute("data-theme", theme);
    var button = document.getElementById("theme-toggle");
    if (button) {
      button.textContent = THEME_LABELS[theme];
      button.setAttribute("aria-label", THEME_LABELS[theme] + " (change theme)");
    }
  }
  function setupTheme() {
    applyTheme(currentTheme());
    var button = document.getElementById("theme-toggle");
    if (!button) return;
    button.hidden = false;
    button.addEventListener("click", function () {
      var systemDark = window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches;
      var other = systemDark ? "light" : "dark";
      var same = systemDark ? "dark" : "light";
      var theme = currentTheme();
      var next = theme === "system" ? other : theme === other ? same : "system";
      try {
        if (next === "system") localStorage.removeItem("algomirror-theme");
        else localStorage.setItem("algomirror-theme", next);
      } catch (e) {
        // Storage refused (private mode): the choice still holds for this page.
      }
      applyTheme(next);
    });
  }

  // ------------------------------------------------------------------------------ shortcuts
  // "g" then a letter goes to a main page (the nav links carry data-shortcut), "/" focuses the page's filter, "?" lists the shortcuts.
  var pendingG = 0;
  function typing(target) {
    if (!target || !target.tagName) return false;
    var tag = target.tagName;
    return tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT" || target.isContentEditable;
  }
  function navLink(name) {
    return document.querySelector('[data-shortcut="' + name + '"]');
  }
  function openHelp() {
    var dialog = document.getElementById("shortcuts-help");
    if (dialog && !dialog.open && dialog.showModal) dialog.showModal();
  }
  function setupShortcuts() {
    document.addEventListener("keydown", function (event) {
      if (event.defaultPrevented || event.isComposing || event.ctrlKey || event.metaKey || event.altKey) return;
      if (typing(event.target)) return;
      var key = event.key;
      if (pendingG && Date.now() - pendingG < 1500 && /^[a-z]$/.test(key)) {
        pendingG = 0;
        var link = navLink(key);
        if (link) {
          event.preventDefault();
          window.location.assign(link.href);
        }
        return;
      }
      pendingG = 0;
      if (key === "g") {
        pendingG = Date.now();
      } else if (key === "/") {
        var filter = document.querySelector("[data-filter-focus]");
        if (filter) {
          event.preventDefault();
          filter.focus();
          if (filter.select) filter.select();
        }
      } else if (key === "?") {
        event.preventDefault();
        openHelp();
      }
    });
    var opener = document.getElementById("shortcuts-open");
    if (opener) opener.addEventListener("click", openHelp);
    var closer = document.getElementById("shortcuts-close");
    if (closer) {
      closer.addEventListener("click", function () {
        document.getElementById("shortcuts-help").close();
      });
    }
  }

  function ready(fn) {
    if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", fn);
    else fn();
  }
  // A phone's navigation scrolls sideways: show the current page's link rather than the first ones.
  function revealCurrentNav() {
    var current = document.querySelector('.mainnav a[aria-current="page"]');
    var nav = document.querySelector(".mainnav");
    if (!current || !nav || nav.scrollWidth <= nav.clientWidth) return;
    nav.scrollLeft = Math.max(0, current.offsetLeft - nav.clientWidth / 3);
  }

  ready(function () {
    setupTheme();
    setupShortcuts();
    revealCurrentNav();
  });

  // Plain fetch() helper for later pages (JSON calls with the same protection).
  window.algomirror = {
    csrfToken: csrfToken,
    morphChildren: morphChildren,
    postJSON: function (url, body) {
      return fetch(url, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken() },
        body: JSON.stringify(body || {}),
      });
    },
  };
})();
