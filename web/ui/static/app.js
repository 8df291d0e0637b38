// Webmail progressive enhancement: live updates (Server-Sent Events),
// keyboard shortcuts, select-all and address completion. Every page works
// without this script.
(function () {
  "use strict";
  var body = document.body;
  var box = body.getAttribute("data-box");

  // Live updates: refetch this page and swap the folder list and, on a
  // list page of the folder that changed, the list itself.
  var timer = null, busy = false;
  function refresh(listToo) {
    if (busy) { timer = setTimeout(function () { refresh(listToo); }, 300); return; }
    busy = true;
    fetch(location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        busy = false;
        if (!html) return;
        var doc = new DOMParser().parseFromString(html, "text/html");
        swap(doc, "folders");
        var checked = document.querySelector("#listform input[name=uid]:checked");
        if (listToo && !checked && document.getElementById("listform")) {
          var sel = selectedUID();
          swap(doc, "main");
          rows();
          if (sel) select(rowIndex(sel));
          body.setAttribute("data-updated", String(Date.now()));
        }
        document.title = doc.title;
      })
      .catch(function () { busy = false; });
  }
  function swap(doc, id) {
    var from = doc.getElementById(id), to = document.getElementById(id);
    if (from && to) to.replaceWith(from);
  }
  if (window.EventSource && document.getElementById("folders")) {
    var es = new EventSource("/events");
    es.onmessage = function (e) {
      var ev;
      try { ev = JSON.parse(e.data); } catch (_) { return; }
      var listToo = box && (String(ev.mailbox) === box || ev.kind === "mailbox");
      clearTimeout(timer);
      timer = setTimeout(function () { refresh(listToo); }, 150);
    };
  }

  // Message list: current row for j/k/o/#.
  var list = [], cur = -1;
  function rows() {
    list = Array.prototype.slice.call(document.querySelectorAll("#msgs tbody tr"));
    cur = -1;
    var all = document.getElementById("selectall");
    if (all) all.addEventListener("change", function () {
      document.querySelectorAll("#listform input[name=uid]").forEach(function (c) { c.checked = all.checked; });
    });
  }
  function select(i) {
    if (!list.length) return;
    i = Math.max(0, Math.min(list.length - 1, i));
    if (cur >= 0 && list[cur]) list[cur].classList.remove("sel");
    cur = i;
    list[cur].classList.add("sel");
    list[cur].scrollIntoView({ block: "nearest" });
    var a = list[cur].querySelector("a");
    if (a) a.focus();
  }
  function selectedUID() { return cur >= 0 && list[cur] ? list[cur].getAttribute("data-uid") : null; }
  function rowIndex(uid) {
    for (var i = 0; i < list.length; i++) if (list[i].getAttribute("data-uid") === uid) return i;
    return 0;
  }
  rows();

  function click(id) { var el = document.getElementById(id); if (el) { el.click(); return true; } return false; }

  document.addEventListener("keydown", function (e) {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    var t = e.target;
    if (t && (t.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(t.tagName))) {
      if (e.key === "Escape") t.blur();
      return;
    }
    switch (e.key) {
      case "j": select(cur + 1); break;
      case "k": select(cur - 1); break;
      case "o": case "Enter":
        if (cur >= 0) { var a = list[cur].querySelector("a"); if (a) location.href = a.href; } else return;
        break;
      case "r": if (!click("reply")) return; break;
      case "c": location.href = "/compose"; break;
      case "/": var q = document.getElementById("q"); if (!q) return; q.focus(); q.select(); break;
      case "#":
        if (list.length && cur >= 0 && !document.querySelector("#listform input[name=uid]:checked")) {
          list[cur].querySelector("input[name=uid]").checked = true;
        }
        if (!click("delete")) return;
        break;
      default: return;
    }
    e.preventDefault();
  });

  // Address completion for the part after the last comma.
  var dl = document.getElementById("contacts");
  document.querySelectorAll("input[data-complete]").forEach(function (input) {
    var seq = 0;
    input.addEventListener("input", function () {
      var v = input.value, i = v.lastIndexOf(",");
      var head = i >= 0 ? v.slice(0, i + 1) + " " : "", word = v.slice(i + 1).trim();
      if (!dl || word.length < 1) return;
      var n = ++seq;
      fetch("/contacts?q=" + encodeURIComponent(word), { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.json() : []; })
        .then(function (list) {
          if (n !== seq) return;
          dl.textContent = "";
          list.forEach(function (a) {
            var o = document.createElement("option");
            o.value = head + a;
            dl.appendChild(o);
          });
        })
        .catch(function () {});
    });
  });
})();
