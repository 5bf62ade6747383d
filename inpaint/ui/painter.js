// The mask painter: a canvas laid over the picture as its <img> shows it, holding the mask at the picture's
// own resolution. It runs as the js_on_load of the painter's gr.HTML (`element` is its toolbar, `props.value`
// its value). At each stroke's end the canvas's PNG (painted pixels opaque, the rest transparent) becomes the
// value, whose change event asks the server for the effective mask: one small message a stroke, nothing
// uploaded. A value the server sets (an example's mask, an imported mask file, a new picture's empty mask)
// arrives through `load`, which the same change event calls.
const STEP = BRUSH_STEP, HOLD_KEY = ORIGINAL_KEY, COLOUR = BRUSH_COLOUR;
const canvas = document.createElement("canvas");
canvas.id = "inpaint-mask-canvas";
const context = canvas.getContext("2d");
const ring = document.createElement("div");  // the brush's outline under the pointer
ring.id = "inpaint-brush-ring";
const size = element.querySelector("input[type=range]");
let picture = null, shownSource = null, base = null, exported = props.value || "";
let tool = "brush", operations = [], undone = [], stroke = null;

const paint = (operation) => {
    if (operation.clear) {
        context.clearRect(0, 0, canvas.width, canvas.height);
        return;
    }
    if (operation.layer) {  // a selection (select.js): its mask, already in the brush's colour
        context.globalCompositeOperation = "source-over";
        context.drawImage(operation.layer, 0, 0, canvas.width, canvas.height);
        return;
    }
    const [first, ...rest] = operation.points;
    context.globalCompositeOperation = operation.erase ? "destination-out" : "source-over";
    context.strokeStyle = COLOUR;
    context.lineWidth = operation.width;
    context.lineCap = context.lineJoin = "round";
    context.beginPath();
    context.moveTo(...first);
    for (const point of rest.length ? rest : [[first[0] + 0.01, first[1]]]) context.lineTo(...point);  // a dot
    context.stroke();
};
const redraw = () => {
    context.globalCompositeOperation = "source-over";
    context.clearRect(0, 0, canvas.width, canvas.height);
    if (base) context.drawImage(base, 0, 0);
    // A selection refined by a further click replaces the one before it (Undo brings that one back).
    const replaced = new Set(operations.map((operation) => operation.replaces));
    operations.filter((operation) => !replaced.has(operation)).forEach(paint);
};
const commit = () => {
    exported = base || operations.length ? canvas.toDataURL("image/png") : "";
    props.value = exported;  // the component's change event follows: the server draws the effective mask
};

// Where the <img> draws the picture inside its box (object-fit: contain), in its offset parent's pixels.
const fit = () => {
    if (!picture || !picture.naturalWidth) return;
    const scale = Math.min(picture.clientWidth / picture.naturalWidth, picture.clientHeight / picture.naturalHeight);
    const width = picture.naturalWidth * scale, height = picture.naturalHeight * scale;
    Object.assign(canvas.style, {left: picture.offsetLeft + (picture.clientWidth - width) / 2 + "px",
                                 top: picture.offsetTop + (picture.clientHeight - height) / 2 + "px",
                                 width: width + "px", height: height + "px"});
};
const resized = new ResizeObserver(fit);
const shown = () => {  // the <img> has (re)loaded: a new picture starts without strokes of its own
    const source = picture.currentSrc || picture.src;
    if (source !== shownSource) {
        shownSource = source;
        operations = [];
        undone = [];
    }
    if (canvas.width !== picture.naturalWidth || canvas.height !== picture.naturalHeight) {
        canvas.width = picture.naturalWidth;
        canvas.height = picture.naturalHeight;
    }
    redraw();
    fit();
};
const attach = () => {
    const img = document.querySelector("#inpaint-picture img");
    if (img !== picture) {
        if (picture) resized.unobserve(picture);
        picture = img;
        if (img) {
            img.addEventListener("load", shown);
            resized.observe(img);
        }
    }
    if (!img) {
        canvas.remove();
        ring.remove();
        return;
    }
    if (canvas.parentElement !== img.parentElement) {
        if (getComputedStyle(img.parentElement).position === "static") img.parentElement.style.position = "relative";
        img.parentElement.append(canvas, ring);
    }
    // Redrawn for a new picture only: this runs at every change of the page (a run's status line, each step).
    if (img.complete && img.naturalWidth && (img.currentSrc || img.src) !== shownSource) shown();
};
// The whole page is watched: the picture's component may mount after this one (each loads its own module).
new MutationObserver(attach).observe(document.body, {subtree: true, childList: true, attributes: true,
                                                     attributeFilter: ["src"]});
attach();

const load = (value) => {
    value = value || "";
    if (value === exported) return;  // the painter's own value, back from the page
    exported = value;
    base = null;
    operations = [];
    undone = [];
    redraw();
    if (!value) return;
    const layer = new Image();
    layer.onload = () => {
        if (exported !== value) return;
        base = layer;
        redraw();
    };
    layer.src = value;
};
// What the Select tool (select.js) works with: the canvas, a pointer's place in the picture's pixels, the last
// operation (a selection it refines), and adding one (a selection landing, undone like a stroke).
const add = (operation) => {
    operations.push(operation);
    undone = [];
    redraw();
    commit();
};
window.inpaintPainter = {load, canvas, at: (event) => at(event), last: () => operations[operations.length - 1], add};

// Strokes, in the picture's pixels: the brush's size is what the ring shows on screen.
const at = (event) => {
    const box = canvas.getBoundingClientRect();
    return [(event.clientX - box.left) * canvas.width / box.width, (event.clientY - box.top) * canvas.height / box.height];
};
const showRing = (event) => {
    const box = canvas.getBoundingClientRect(), parent = canvas.offsetParent.getBoundingClientRect();
    const diameter = +size.value;
    const over = tool !== "select" && event.clientX >= box.left && event.clientX <= box.right;
    Object.assign(ring.style, {display: over ? "block" : "none",
                               width: diameter + "px", height: diameter + "px",
                               left: event.clientX - parent.left - diameter / 2 + "px",
                               top: event.clientY - parent.top - diameter / 2 + "px"});
};
canvas.addEventListener("pointerdown", (event) => {
    if (event.button !== 0 || tool === "select") return;  // the Select tool's gestures are select.js's
    canvas.setPointerCapture(event.pointerId);
    const box = canvas.getBoundingClientRect();
    stroke = {points: [at(event)], width: +size.value * canvas.width / box.width, erase: tool === "eraser"};
    paint(stroke);
    event.preventDefault();
});
canvas.addEventListener("pointermove", (event) => {
    showRing(event);
    if (!stroke) return;
    const point = at(event);
    paint({...stroke, points: [stroke.points[stroke.points.length - 1], point]});
    stroke.points.push(point);
});
const end = () => {
    if (!stroke) return;
    operations.push(stroke);
    undone = [];
    stroke = null;
    commit();
};
canvas.addEventListener("pointerup", end);
canvas.addEventListener("pointercancel", end);
canvas.addEventListener("pointerleave", () => { ring.style.display = "none"; });

// The toolbar, and the editing keys of IOPaint and A1111 (never while the user types in a text box).
const undo = () => {
    if (!operations.length) return;
    undone.push(operations.pop());
    redraw();
    commit();
};
const redo = () => {
    if (!undone.length) return;
    operations.push(undone.pop());
    redraw();
    commit();
};
const clear = () => {
    if (!base && !operations.length) return;
    operations.push({clear: true});
    undone = [];
    redraw();
    commit();
};
const choose = (name) => {
    tool = name;
    canvas.style.cursor = name === "select" ? "crosshair" : "";
    for (const button of element.querySelectorAll("[data-tool]")) {
        button.setAttribute("aria-pressed", String(button.dataset.tool === name));
    }
    document.dispatchEvent(new CustomEvent("inpaint-tool", {detail: name}));
};
const resize = (step) => {
    size.value = Math.min(+size.max, Math.max(+size.min, +size.value + step));
    size.dispatchEvent(new Event("input", {bubbles: true}));
};
const original = (held) => { canvas.style.visibility = held ? "hidden" : ""; };
const actions = {brush: () => choose("brush"), eraser: () => choose("eraser"), select: () => choose("select"),
                 undo, redo, clear};
element.addEventListener("click", (event) => {
    const button = event.target.closest("button");
    if (button) actions[button.dataset.tool || button.dataset.action]?.();
});
const hold = element.querySelector("[data-action=original]");
for (const [type, held] of [["pointerdown", true], ["pointerup", false], ["pointerleave", false], ["pointercancel", false]]) {
    hold.addEventListener(type, () => original(held));
}
size.addEventListener("input", () => { element.querySelector("output").value = size.value; });
const typing = (target) => target.closest && target.closest(
    "textarea, select, [contenteditable=true], input:not([type=range]):not([type=checkbox]):not([type=radio])");
document.addEventListener("keydown", (event) => {
    if (typing(event.target) || event.altKey) return;
    const key = event.key.toLowerCase(), command = event.ctrlKey || event.metaKey;
    if (command && key === "z") (event.shiftKey ? redo : undo)();
    else if (command && key === "y") redo();
    else if (!command && (event.key === "[" || event.key === "]")) resize(event.key === "]" ? STEP : -STEP);
    else if (!command && key === HOLD_KEY) original(true);
    else return;
    event.preventDefault();
});
document.addEventListener("keyup", (event) => {
    if (event.key.toLowerCase() === HOLD_KEY) original(false);
});
