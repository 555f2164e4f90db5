// Custos web console: "select all" check boxes in list headers. Everything
// works without this script; it only saves clicks.
document.addEventListener("change", function (e) {
  var box = e.target;
  if (!box.matches || !box.matches("input[data-select-all]")) return;
  var form = box.closest("form");
  if (!form) return;
  form.querySelectorAll("tbody input[type=checkbox]").forEach(function (b) {
    b.checked = box.checked;
  });
});
