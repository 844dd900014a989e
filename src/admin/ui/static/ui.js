// tollgate admin UI: the only script, served from /ui/static/ (the CSP allows no inline code).
// Everything works without it; it adds a confirmation before destructive forms and refreshes
// the overview while the page is visible.
"use strict";
document.addEventListener("submit", function (event) {
  var form = event.target;
  var question = form.getAttribute("data-confirm");
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
});
document.addEventListener("DOMContentLoaded", function () {
  var live = document.querySelector("[data-refresh]");
  if (!live) {
    return;
  }
  var seconds = parseInt(live.getAttribute("data-refresh"), 10);
  if (seconds > 0) {
    window.setInterval(function () {
      if (document.visibilityState === "visible") {
        window.location.reload();
      }
    }, seconds * 1000);
  }
});
