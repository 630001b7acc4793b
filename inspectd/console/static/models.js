// Layer toggles on the side-by-side page: one box switches the layer on both models' photos at once.
(function () {
  const toggle = (box, selector) => {
    if (!box) return;
    box.addEventListener("change", () => {
      document.querySelectorAll(selector).forEach((layer) => layer.classList.toggle("hidden", !box.checked));
    });
  };
  toggle(document.getElementById("toggle-heat"), "#compare img.layer.heat");
  toggle(document.getElementById("toggle-outline"), "#compare img.layer.outline");
})();
