// The page's own small behaviours, on the document (no component of their own).

// Ctrl+Enter (Cmd+Enter) in the prompt generates, as in A1111: the prompt has several lines, so Enter alone
// writes a new line. A greyed Generate (nothing to repaint yet, or a run going) starts nothing.
document.addEventListener("keydown", (event) => {
  if (event.key !== "Enter" || !(event.ctrlKey || event.metaKey) || !event.target.closest("#inpaint-prompt")) return;
  event.preventDefault();
  const generate = document.querySelector("#inpaint-generate");
  if (generate && !generate.disabled) generate.click();
}, {capture: true});

// Under a loaded picture, gradio's upload icon removes the picture and its mask; a person pressing it wants
// another file: it opens the file dialog, and the picture stays until one is chosen.
document.addEventListener("click", (event) => {
  const icon = event.target.closest('#inpaint-picture [data-testid="source-select"] button[aria-label="Upload file"]');
  const picture = document.querySelector("#inpaint-picture");
  if (!icon || !picture.querySelector("img")) return;
  event.preventDefault();
  event.stopPropagation();
  picture.querySelector("input[type=file]").click();
}, {capture: true});
