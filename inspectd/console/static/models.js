// Layer toggles on the side-by-side page: one box switches the layer on both models' photos at once.
(function () {
  const toggle = (box, selector) => {
    if (!box) return;
    const apply = () => {
      document.querySelectorAll(selector).forEach((layer) => layer.classList.toggle("hidden", !box.checked));
    };
    box.addEventListener("change", apply);
    apply();  // a box clicked while this script was still loading is honoured
  };
  toggle(document.getElementById("toggle-heat"), "#compare img.layer.heat");
  toggle(document.getElementById("toggle-outline"), "#compare img.layer.outline");
})();
