// The course page's live part: each `stats` event of GET /courses/{id}/events sets the
// figures at once, then the chart and the reviews list are fetched again (this same page,
// whose #chart and #reviews are swapped in), one fetch at a time however many events come,
// and once more a moment later.
(function () {
  "use strict";
  var page = document.getElementById("course");
  var id = page.getAttribute("data-course");
  function shown(v, d) {
    if (v === null || v === undefined) return "–";
    var n = Number(v);
    return typeof v === "number" || (v !== "" && !isNaN(n)) ? n.toFixed(d) : String(v);
  }
  function set(s) {
    [["rating_avg", 2], ["review_count", 0], ["recent_rating_avg", 2], ["recent_review_count", 0],
     ["last_review_at", 0], ["updated_at", 0]].forEach(function (f) {
      document.getElementById(f[0]).textContent = shown(s[f[0]], f[1]);
    });
    var most = 0;
    for (var i = 0; i <= 5; i++) most = Math.max(most, Number(s["stars_" + i]) || 0);
    for (var j = 0; j <= 5; j++) {
      var n = Number(s["stars_" + j]) || 0;
      document.getElementById("stars_" + j).textContent = n;
      document.getElementById("bar_" + j).style.width = (most ? 12 * n / most : 0) + "em";
    }
    if (s.title) document.getElementById("title").textContent = s.title;
  }
  var fetching = false, again = false, later = null;
  function refresh() {
    if (fetching) { again = true; return; }
    fetching = true;
    fetch(location.pathname + location.search, { cache: "no-cache" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (text) {
        if (text === null) return;
        var fresh = new DOMParser().parseFromString(text, "text/html");
        ["chart", "reviews"].forEach(function (part) {
          var from = fresh.getElementById(part);
          if (from) document.getElementById(part).innerHTML = from.innerHTML;
        });
      })
      .catch(function () {})
      .then(function () {
        fetching = false;
        if (again) { again = false; refresh(); }
      });
  }
  var initial = JSON.parse(document.getElementById("initial").textContent);
  set(initial);
  // The row the chart and the list were drawn with: an event of another one redraws them.
  var drawn = initial.updated_at;
  var live = document.getElementById("live");
  var events = new EventSource("/courses/" + id + "/events");
  events.addEventListener("stats", function (e) {
    var s = JSON.parse(e.data);
    set(s);
    if (s.updated_at !== drawn) {
      drawn = s.updated_at;
      refresh();
      // The list shows judged reviews, and the verdicts reach their table through a sink of
      // their own, which may commit a moment after the figures': look once more.
      clearTimeout(later);
      later = setTimeout(refresh, 2000);
    }
    live.textContent = "live";
  });
  events.addEventListener("missing", function () { live.textContent = "no statistics any more"; });
  events.onerror = function () { live.textContent = "reconnecting…"; };
})();
