// Layer toggles and per-token maps on the inspection page (no framework, no build step).
(function () {
  const heat = document.getElementById("heat");
  const outline = document.getElementById("outline");
  const tokenMap = document.getElementById("token-map");
  // The box's state is applied at once too: a box clicked while this script was still loading is honoured.
  const toggle = (box, layer) => {
    if (!box || !layer) return;
    const apply = () => layer.classList.toggle("hidden", !box.checked);
    box.addEventListener("change", apply);
    apply();
  };
  toggle(document.getElementById("toggle-heat"), heat);
  toggle(document.getElementById("toggle-outline"), outline);
  // Without a users file the form asks who reviews: remembered in this browser (localStorage), prefilled.
  const reviewer = document.getElementById("reviewer");
  const form = document.getElementById("review-form");
  const KEY = "inspectd.reviewer";
  if (reviewer && form) {
    try {
      if (!reviewer.value) reviewer.value = localStorage.getItem(KEY) || "";
      form.addEventListener("submit", () => {
        const name = reviewer.value.trim();
        if (name) localStorage.setItem(KEY, name);
      });
    } catch (e) { /* storage disabled: the field is simply empty */ }
  }
  if (!tokenMap) return;
  const base = location.pathname.replace(/\/$/, "");
  document.querySelectorAll("#reasoning .tok").forEach((word) => {
    word.addEventListener("mouseenter", () => {
      tokenMap.src = base + "/tokens/" + word.dataset.token + ".png";
      tokenMap.classList.remove("hidden");
      if (heat) heat.classList.add("dimmed");
      word.classList.add("active");
    });
    word.addEventListener("mouseleave", () => {
      tokenMap.classList.add("hidden");
      if (heat) heat.classList.remove("dimmed");
      word.classList.remove("active");
    });
  });
})();
