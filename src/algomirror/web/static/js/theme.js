// Applies the saved colour theme before the first paint (loaded without defer in <head>), so a dark
// page never flashes light. No saved choice: the CSS follows the system setting.
(function () {
  "use strict";
  try {
    var theme = localStorage.getItem("algomirror-theme");
    if (theme === "dark" || theme === "light") document.documentElement.setAttribute("data-theme", theme);
  } catch (e) {
    // Storage refused: follow the system setting.
  }
})();
