// The Models page while a promotion or rollback waits for the daemon: asks for its status every 2 s
// (/models/changes/N) and shows the page again once the daemon has applied it or failed it.
(function () {
  const waiting = document.querySelector("[data-waiting-change]");
  if (!waiting) return;
  const id = waiting.getAttribute("data-waiting-change");
  const every = 2000;
  const ask = async () => {
    try {
      const response = await fetch("/models/changes/" + encodeURIComponent(id), {cache: "no-store"});
      if (response.ok) {
        const change = await response.json();
        if (change.status !== "requested") {
          // a refused post's page (/models/promote) is not posted again: the Models page is loaded instead
          if (window.location.pathname === "/models") window.location.reload();
          else window.location.assign("/models");
          return;
        }
      }
    } catch (error) {
      // the console restarting: ask again later
    }
    window.setTimeout(ask, every);
  };
  window.setTimeout(ask, every);
})();
