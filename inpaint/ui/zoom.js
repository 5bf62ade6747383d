// Zoom and pan on the picture, for painting details (appended to painter.js: the same `element`, `canvas`,
// `ring` and `picture`). The picture and the mask canvas move together under one transform of the picture's
// frame; strokes land right at any zoom (painter.js reads the canvas's box on screen) and the brush keeps its
// size on screen. The wheel zooms at the pointer (the page does not scroll under it); Space+drag, a middle-button
// drag or two fingers pan (two fingers pinch too); "Fit" or a double click shows the whole picture again.
const ZOOM_MIN = 1, ZOOM_MAX = 16, WHEEL_RATE = 0.0015;  // a wheel notch (100) zooms by about 16%
const view = {scale: 1, x: 0, y: 0};
let spaceHeld = false, pan = null;
const touches = new Map();  // pointer id -> [x, y] of the fingers on the picture

const frame = () => picture && picture.parentElement;
const apply = () => {
    if (!picture) return;
    // The picture and the canvas sit at their own offsets in the frame: both turn about the frame's corner.
    for (const layer of [picture, canvas]) {
        Object.assign(layer.style, {transformOrigin: `${-layer.offsetLeft}px ${-layer.offsetTop}px`,
                                    transform: `translate(${view.x}px, ${view.y}px) scale(${view.scale})`});
    }
    frame().style.overflow = view.scale > 1 ? "hidden" : "";
    element.querySelector("[data-action=fit]").disabled = view.scale === 1;
};
const fitView = () => {
    Object.assign(view, {scale: 1, x: 0, y: 0});
    apply();
};
// Zoom by `factor` keeping the frame's point under (clientX, clientY) where it is; never smaller than the frame.
const zoomAt = (clientX, clientY, factor) => {
    const box = frame().getBoundingClientRect();
    const scale = Math.min(ZOOM_MAX, Math.max(ZOOM_MIN, view.scale * factor));
    const px = clientX - box.left, py = clientY - box.top;
    view.x = px - (px - view.x) * scale / view.scale;
    view.y = py - (py - view.y) * scale / view.scale;
    view.scale = scale;
    if (scale === ZOOM_MIN) Object.assign(view, {x: 0, y: 0});
    apply();
};
const panBy = (dx, dy) => {
    view.x += dx;
    view.y += dy;
    apply();
};

const onPicture = (event) => picture && frame() && frame().contains(event.target);
document.addEventListener("wheel", (event) => {
    if (!onPicture(event)) return;
    event.preventDefault();
    zoomAt(event.clientX, event.clientY, Math.exp(-event.deltaY * WHEEL_RATE));
}, {passive: false});
document.addEventListener("dblclick", (event) => { if (onPicture(event)) fitView(); });
// Captured before painter.js's own listeners on the canvas: a pan or a pinch paints nothing.
document.addEventListener("pointerdown", (event) => {
    if (!onPicture(event)) return;
    if (event.pointerType === "touch") {
        touches.set(event.pointerId, [event.clientX, event.clientY]);
        if (touches.size < 2) return;
        canvas.dispatchEvent(new PointerEvent("pointercancel", {pointerId: event.pointerId}));  // the first finger's stroke ends
    } else if (!(event.button === 1 || (event.button === 0 && spaceHeld))) {
        return;
    }
    pan = {x: event.clientX, y: event.clientY};
    event.preventDefault();
    event.stopPropagation();
}, {capture: true});
document.addEventListener("pointermove", (event) => {
    if (touches.has(event.pointerId) && touches.size === 2) {
        const [other] = [...touches].filter(([id]) => id !== event.pointerId).map(([, at]) => at);
        const before = touches.get(event.pointerId);
        const spread = (a, b) => Math.hypot(a[0] - b[0], a[1] - b[1]);
        const now = [event.clientX, event.clientY];
        zoomAt((now[0] + other[0]) / 2, (now[1] + other[1]) / 2, spread(now, other) / Math.max(1, spread(before, other)));
        panBy((now[0] - before[0]) / 2, (now[1] - before[1]) / 2);
        touches.set(event.pointerId, now);
        event.stopPropagation();
        return;
    }
    if (!pan || touches.size) return;
    panBy(event.clientX - pan.x, event.clientY - pan.y);
    pan = {x: event.clientX, y: event.clientY};
    event.stopPropagation();
}, {capture: true});
const lift = (event) => {
    touches.delete(event.pointerId);
    if (!touches.size) pan = null;
};
document.addEventListener("pointerup", lift, {capture: true});
document.addEventListener("pointercancel", lift, {capture: true});
// Space pans while held over the picture (elsewhere it keeps its own work; never while typing: painter.js's typing).
let overPicture = false;
document.addEventListener("pointermove", (event) => { overPicture = onPicture(event); });
document.addEventListener("keydown", (event) => {
    if (event.key !== " " || !overPicture || typing(event.target)) return;
    spaceHeld = true;
    event.preventDefault();
});
document.addEventListener("keyup", (event) => { if (event.key === " ") spaceHeld = false; });
element.querySelector("[data-action=fit]").addEventListener("click", fitView);
// A new picture starts whole (load does not bubble: caught on its way down).
document.addEventListener("load", (event) => {
    if (event.target.closest && event.target.closest("#inpaint-picture")) setTimeout(fitView);
}, {capture: true});
