// ferry's console: the little it needs a script for. Every page works without it;
// with it, a run's page follows the run live (server-sent events) instead of being
// reloaded. Served from the binary, as is everything the console loads.
"use strict";

(function () {
  var live = document.querySelector("[data-live]");
  if (!live || !window.EventSource) {
    return;
  }
  var status = document.getElementById("live-status");
  var say = function (text) {
    if (status) {
      status.textContent = text;
    }
  };
  // Replaces the live part, keeping the keyboard focus on the control it was on.
  var swap = function (html) {
    var focused = document.activeElement && document.activeElement.id;
    live.innerHTML = html;
    if (focused) {
      var again = document.getElementById(focused);
      if (again) {
        again.focus();
      }
    }
  };
  var events = new EventSource(live.getAttribute("data-live"));
  events.addEventListener("progress", function (e) {
    swap(e.data);
    say("⟳ Updating as it goes on.");
  });
  events.addEventListener("end", function (e) {
    swap(e.data);
    events.close();
    live.removeAttribute("data-live");
    live.setAttribute("data-ended", "");
    say("It has ended.");
  });
  events.addEventListener("error", function () {
    if (events.readyState !== EventSource.CLOSED) {
      say("The connection to the server was lost; trying again…");
    }
  });
})();
