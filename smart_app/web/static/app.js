// After a preview or a refused form, move focus (and the view) to what the action produced; show the "Other"
// reason and R4 justification fields only while a reason that needs them is ticked (the server checks too).
"use strict";

function showWhenNeeded() {
  var pairs = [["other-reason-field", "input.other-reason:checked", "other_reason"],
               ["override-field", "input[data-against]:checked", "override_reason"]];
  pairs.forEach(function (pair) {
    var field = document.getElementById(pair[0]);
    var text = document.getElementById(pair[2]);
    if (field && text) {
      field.hidden = !document.querySelector(pair[1]) && !text.value.trim();
    }
  });
}

document.addEventListener("DOMContentLoaded", function () {
  var target = document.getElementById("errors") || document.getElementById("preview");
  if (target) {
    target.focus({ preventScroll: true });
    target.scrollIntoView({ block: "start" });
  }
  document.querySelectorAll("input[name=reason]").forEach(function (box) {
    box.addEventListener("change", showWhenNeeded);
  });
  showWhenNeeded();
});
