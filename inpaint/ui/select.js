// The painter's Select tool (its button is the painter's, data-tool="select"): a click adds the object under it,
// an Alt-click or a right-click takes the object under it away, a drag draws a box around one. Every gesture
// refines the selection being made (all its clicks and its box go to the model together); the selection lands in
// the painter as one operation, which the brush and the eraser refine and Undo takes back, and the painter's
// value (so the effective mask) follows. It runs as the js_on_load of the selector's gr.HTML (`element` is its
// status line): a gesture's request goes to the server in `props.value`; the answer comes back through `land`.
// The painter (painter.js) lends its canvas and its operations through window.inpaintPainter.
const DRAG_PX = 6;  // on screen: a pointer that moved less than this between down and up made a click
const status = element.querySelector(".inpaint-select-status");
const hint = status.textContent;
const outline = document.createElement("div");  // the box being drawn
outline.id = "inpaint-select-box";
let asked = 0, pending = null, gesture = null, selecting = false;

const say = (text, busy = false) => {
    status.textContent = text;
    status.dataset.busy = String(busy);
};
// The tool's model picker, text box and status line are shown while it is chosen (hidden by the page's CSS).
document.addEventListener("inpaint-tool", (event) => {
    selecting = event.detail === "select";
    for (const [id, display] of [["inpaint-select-row", "flex"], ["inpaint-selector", "block"]]) {
        const shown = document.getElementById(id);
        if (shown) shown.style.display = selecting ? display : "";
    }
});

// The selection a gesture refines: the painter's last operation when it is one (after a stroke, a new one starts).
const refined = () => {
    const last = window.inpaintPainter.last();
    return last && last.layer && last.prompt.text === undefined ? last : null;
};
const ask = (change) => {
    const before = refined();
    const prompt = {points: before ? [...before.prompt.points] : [], box: before ? before.prompt.box : null};
    change(prompt);
    pending = {id: `click-${++asked}`, ...prompt};
    pending.replaces = before;
    say(`Selecting… (${prompt.points.length + (prompt.box ? 1 : 0)} gestures; the first on a picture takes longest)`,
        true);
    props.value = {id: pending.id, points: prompt.points, box: prompt.box};
};

// A gesture's answer (the selection's value, set by the server): its mask lands in the painter as one operation.
const land = (value) => {
    const {request, answer} = value || {};
    if (!request || !answer) return;
    const clicked = pending && request.id === pending.id;
    if (!clicked && request.text === undefined) return;  // an earlier gesture's, overtaken by a later one
    const replaces = clicked ? pending.replaces : null;
    pending = null;
    if (answer.error) {
        say(answer.error);
        return;
    }
    const layer = new Image();
    layer.onload = () => {
        window.inpaintPainter.add({layer, prompt: request, replaces});
        say(answer.said);
    };
    layer.src = answer.layer;
};
window.inpaintSelect = {land};

// Gestures, on the painter's canvas while the tool is chosen: positions in the picture's pixels.
const attach = () => {
    const painter = window.inpaintPainter;
    if (!painter) return setTimeout(attach, 100);  // the painter's component loads its own script
    const canvas = painter.canvas;
    canvas.addEventListener("contextmenu", (event) => { if (selecting) event.preventDefault(); });
    canvas.addEventListener("pointerdown", (event) => {
        if (!selecting || (event.button !== 0 && event.button !== 2)) return;
        canvas.setPointerCapture(event.pointerId);
        gesture = {from: painter.at(event), x: event.clientX, y: event.clientY,
                   label: event.altKey || event.button === 2 ? 0 : 1};
        event.preventDefault();
    });
    canvas.addEventListener("pointermove", (event) => {
        if (!gesture) return;
        const screen = canvas.getBoundingClientRect(), parent = canvas.offsetParent.getBoundingClientRect();
        const left = Math.max(screen.left, Math.min(event.clientX, gesture.x));
        const top = Math.max(screen.top, Math.min(event.clientY, gesture.y));
        const right = Math.min(screen.right, Math.max(event.clientX, gesture.x));
        const bottom = Math.min(screen.bottom, Math.max(event.clientY, gesture.y));
        if (!outline.parentElement) canvas.parentElement.append(outline);
        Object.assign(outline.style, {display: "block", left: left - parent.left + "px", top: top - parent.top + "px",
                                      width: right - left + "px", height: bottom - top + "px"});
    });
    const end = (event) => {
        if (!gesture) return;
        const start = gesture;
        gesture = null;
        outline.style.display = "none";
        if (event.type === "pointercancel") return;
        const to = painter.at(event);
        const clamp = (value, high) => Math.round(Math.min(Math.max(value, 0), high));
        if (Math.hypot(event.clientX - start.x, event.clientY - start.y) < DRAG_PX) {
            const [x, y] = start.from;
            ask((prompt) => prompt.points.push({x: clamp(x, canvas.width - 1), y: clamp(y, canvas.height - 1),
                                                label: start.label}));
        } else {
            const box = [clamp(Math.min(start.from[0], to[0]), canvas.width), clamp(Math.min(start.from[1], to[1]), canvas.height),
                         clamp(Math.max(start.from[0], to[0]), canvas.width), clamp(Math.max(start.from[1], to[1]), canvas.height)];
            ask((prompt) => { prompt.box = box; });
        }
    };
    canvas.addEventListener("pointerup", end);
    canvas.addEventListener("pointercancel", end);
};
attach();
say(hint);
