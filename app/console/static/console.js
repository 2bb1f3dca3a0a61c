// CivicML console: small enhancements only; every page works without this file.
(function () {
  "use strict";
  function ready(fn) { if (document.readyState !== "loading") { fn(); } else { document.addEventListener("DOMContentLoaded", fn); } }
  ready(function () {
    var info = document.getElementById("district-info");
    var districts = document.querySelectorAll("path.district, path.place");
    districts.forEach(function (path) {
      var say = function () { if (info) { info.textContent = path.getAttribute("aria-label"); } };
      path.addEventListener("focus", say);
      path.addEventListener("mouseenter", say);
      path.addEventListener("keydown", function (e) { if (e.key === "Enter" || e.key === " ") { say(); e.preventDefault(); } });
    });
    var toggle = document.getElementById("toggle-points");
    if (toggle) {
      toggle.addEventListener("change", function () {
        document.querySelectorAll(".map").forEach(function (m) { m.classList.toggle("no-points", !toggle.checked); });
      });
    }
    var form = document.getElementById("try-form");
    if (form) {
      form.addEventListener("submit", function () {
        var button = document.getElementById("ask");
        if (button) { button.textContent = "Working…"; button.setAttribute("aria-busy", "true"); }
      });
    }
    var result = document.getElementById("result");
    if (result) { result.setAttribute("tabindex", "-1"); result.focus(); }
  });
})();
