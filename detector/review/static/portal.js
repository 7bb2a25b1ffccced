// Keyboard shortcuts on an item page: C confirm, R reject, S skip (not while typing a note).
document.addEventListener("keydown", function (event) {
  var form = document.getElementById("decision-form");
  if (!form || event.ctrlKey || event.metaKey || event.altKey) return;
  var tag = (event.target && event.target.tagName) || "";
  if (tag === "TEXTAREA" || tag === "INPUT" || tag === "SELECT") return;
  var button = form.querySelector('button[data-key="' + event.key.toLowerCase() + '"]');
  if (!button) return;
  event.preventDefault();
  form.requestSubmit(button);
});
