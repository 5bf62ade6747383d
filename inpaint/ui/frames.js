// Gradio's status trackers time a pending event with a requestAnimationFrame loop that stops when the
// status changes. The page's own "Loading..." tracker is removed while still pending, so its loop never
// stops: the page renders 60 frames a second for as long as it is open, which without a GPU costs 10-20%
// of a core, taken from the generation running on the same machine. A tracker's timer is only seen on a
// tracker shown (the studio hides them all: its status line speaks instead), so while none is shown the
// trackers get a frame a second. This runs before gradio's scripts, which keep the function they find.
(() => {
  const requestFrame = window.requestAnimationFrame.bind(window);
  const HIDDEN_TRACKER_FRAME_MS = 1000;
  const SHOWN_TRACKER = '[data-testid="status-tracker"]:not(.hide)';
  window.requestAnimationFrame = (callback) => {
    // The caller is the second or third line of the stack (Chromium names the Error first, Firefox not).
    const caller = (new Error().stack || "").split("\n").slice(0, 3).join("\n");
    if (!/\/statustracker-[\w-]*\.js/.test(caller) || document.querySelector(SHOWN_TRACKER)) {
      return requestFrame(callback);
    }
    // A timer id, not a frame id: the trackers never cancel their frames.
    return window.setTimeout(() => requestFrame(callback), HIDDEN_TRACKER_FRAME_MS);
  };
})();
