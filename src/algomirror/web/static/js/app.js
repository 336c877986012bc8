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
  // Plain fetch() helper for later pages (JSON calls with the same protection).
  window.algomirror = {
    csrfToken: csrfToken,
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
