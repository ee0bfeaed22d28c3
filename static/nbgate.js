// nbgate's banner inside JupyterLab: warns before an idle or max-age stop (with
// a one-click "Keep my server"), and says why the kernel or server had trouble.
// Served by the gateway and added to JupyterLab's page by the proxy.
(function () {
  "use strict";
  var box = null;
  function banner(text, button, onClick) {
    if (!box) {
      box = document.createElement("div");
      box.setAttribute("role", "alert");
      box.style.cssText = "position:fixed;z-index:100000;left:50%;top:8px;transform:translateX(-50%);" +
        "max-width:90vw;background:#fff8e1;color:#1d2430;border:1px solid #e0b400;border-radius:8px;" +
        "padding:8px 12px;font:14px system-ui,sans-serif;box-shadow:0 2px 8px rgba(0,0,0,.2)";
      document.body.appendChild(box);
    }
    box.textContent = text + " ";
    var b = document.createElement("button");
    b.textContent = button;
    b.style.cssText = "margin-left:8px;padding:4px 10px;border:0;border-radius:5px;background:#2f6fde;color:#fff;cursor:pointer";
    b.onclick = onClick;
    box.appendChild(b);
    box.style.display = "block";
  }
  function hide() { if (box) { box.style.display = "none"; } }
  function minutes(s) { var m = Math.max(1, Math.round(s / 60)); return m + (m === 1 ? " minute" : " minutes"); }
  var dismissed = null;
  function check() {
    fetch("/hub/api/me/server", { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (s) {
        if (!s) { return; }
        if (s.notice && s.notice !== dismissed) {
          banner(s.notice, "OK", function () { dismissed = s.notice; hide(); });
        } else if (s.warning && s.max_age) {
          banner("Your server stops in " + minutes(s.seconds_left) + ": it has reached the longest time a server may run. Save your work; files in ~/work are kept.", "OK", hide);
        } else if (s.warning) {
          banner("Your server stops in " + minutes(s.seconds_left) + " because it looks idle.", "Keep my server", function () {
            fetch("/hub/api/me/keepalive", { method: "POST", credentials: "same-origin" }).then(hide);
          });
        } else if (!s.notice || s.notice === dismissed) {
          hide();
        }
      })
      .catch(function () {});
  }
  check();
  setInterval(check, 20000);
})();
