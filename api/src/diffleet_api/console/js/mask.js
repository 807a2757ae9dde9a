// The inpainting mask painter: a canvas laid over the init image, painted with pointer
// events (mouse, touch, pen). The canvas keeps the init image's own pixel size and the
// brush is a share of its width, so a stroke covers the same part of the image however
// large it is shown; the export stretches the mask to the job's width x height, as the
// worker stretches the image.
import { field, h } from "./dom.js";

// Azure: seen over most photos (skin, foliage, red), at the canvas's opacity.
const PAINT = "rgb(0, 160, 255)";
const DEFAULT_SIZE = 512;

/** The painter: `view` (the init image, with the mask canvas over it while active) and
 *  `tools` (brush, erase, feather, invert, clear: the page shows them for inpaint). */
export function maskPainter() {
  const image = h("img", { alt: "Init image", class: "mask-image" });
  const canvas = h("canvas", {
    role: "img",
    "aria-label": "Mask",
    "aria-describedby": "mask-hint",
    class: "mask-canvas",
    width: DEFAULT_SIZE,
    height: DEFAULT_SIZE,
  });
  const view = h("div", { class: "mask-stack" }, image);
  const brush = h("input", { type: "range", min: 1, max: 50, step: 1, value: "20" });
  const erase = h("input", { type: "checkbox", id: "mask-erase" });
  const feather = h("input", { type: "range", id: "mask-feather", min: 0, max: 64, step: 1, value: "8" });
  const featherText = h("output", { for: feather.id, class: "muted" }, "8 px");
  feather.addEventListener("input", () => {
    featherText.textContent = `${feather.value} px`;
  });
  const context = canvas.getContext("2d");
  paintWithPointers(canvas, context, () => ({ share: Number(brush.value) / 100, erase: erase.checked }));
  // A new image needs a new mask: resizing the canvas clears it.
  image.addEventListener("load", () => fitCanvas(canvas, image.naturalWidth, image.naturalHeight));

  const tools = h(
    "div",
    { class: "mask-tools" },
    h(
      "div",
      { class: "row" },
      field("Brush size", brush, "Percent of the image's width."),
      h("div", { class: "check" }, erase, h("label", { for: erase.id }, "Erase")),
      h("div", { class: "feather" }, field("Feather", feather, "Width of the mask's soft edge, in pixels of the job."), featherText),
    ),
    h(
      "p",
      { class: "mask-actions" },
      h("button", { type: "button", onclick: () => invert(canvas, context) }, "Invert"),
      h("button", { type: "button", onclick: () => context.clearRect(0, 0, canvas.width, canvas.height) }, "Clear"),
    ),
    h(
      "small",
      { id: "mask-hint", class: "muted" },
      "Paint the area to repaint. Painting needs a pointer (mouse, touch or pen); from the"
        + " keyboard, Invert on an empty mask repaints the whole image.",
    ),
  );
  return {
    image,
    view,
    tools,
    /** Lays the mask over the image (inpaint) or takes it away (other modes). */
    setActive(active) {
      if (active) view.append(canvas);
      else canvas.remove();
    },
    isEmpty: () => isEmpty(canvas, context),
    /** The mask as a PNG Blob of width x height: black, white = repaint, edge blurred. */
    exportPng: (width, height) => exportMask(canvas, width, height, Number(feather.value)),
  };
}

function fitCanvas(canvas, width, height) {
  canvas.width = width || DEFAULT_SIZE;
  canvas.height = height || DEFAULT_SIZE;
}

/** Strokes follow the pointer while it is down. */
function paintWithPointers(canvas, context, brush) {
  let last = null;
  const point = (event) => {
    const box = canvas.getBoundingClientRect();
    const scale = canvas.width / box.width;
    return { x: (event.clientX - box.left) * scale, y: (event.clientY - box.top) * scale };
  };
  const stroke = (from, to) => {
    const { share, erase } = brush();
    context.globalCompositeOperation = erase ? "destination-out" : "source-over";
    context.strokeStyle = PAINT;
    context.lineCap = "round";
    context.lineJoin = "round";
    context.lineWidth = Math.max(1, share * canvas.width);
    context.beginPath();
    context.moveTo(from.x, from.y);
    context.lineTo(to.x + 0.01, to.y);
    context.stroke();
    context.globalCompositeOperation = "source-over";
  };
  canvas.addEventListener("pointerdown", (event) => {
    event.preventDefault();
    canvas.setPointerCapture(event.pointerId);
    last = point(event);
    stroke(last, last);
  });
  canvas.addEventListener("pointermove", (event) => {
    if (last === null) return;
    const next = point(event);
    stroke(last, next);
    last = next;
  });
  const stop = () => {
    last = null;
  };
  canvas.addEventListener("pointerup", stop);
  canvas.addEventListener("pointercancel", stop);
}

/** Painted becomes unpainted and the other way round. */
function invert(canvas, context) {
  const previous = copy(canvas);
  context.clearRect(0, 0, canvas.width, canvas.height);
  context.fillStyle = PAINT;
  context.fillRect(0, 0, canvas.width, canvas.height);
  context.globalCompositeOperation = "destination-out";
  context.drawImage(previous, 0, 0);
  context.globalCompositeOperation = "source-over";
}

function copy(canvas) {
  const duplicate = h("canvas", { width: canvas.width, height: canvas.height });
  duplicate.getContext("2d").drawImage(canvas, 0, 0);
  return duplicate;
}

function isEmpty(canvas, context) {
  const pixels = context.getImageData(0, 0, canvas.width, canvas.height).data;
  for (let alpha = 3; alpha < pixels.length; alpha += 4) if (pixels[alpha] !== 0) return false;
  return true;
}

function exportMask(canvas, width, height, featherPixels) {
  // White where painted (any colour, its alpha kept), stretched to the job's size.
  const white = copy(canvas);
  const whiteContext = white.getContext("2d");
  whiteContext.globalCompositeOperation = "source-in";
  whiteContext.fillStyle = "#ffffff";
  whiteContext.fillRect(0, 0, white.width, white.height);
  // The blur reads past the border: the edge pixels are repeated there, so that a mask
  // painted up to the border (Invert on an empty one) stays white up to it.
  // The edge goes from black to white over about 4 standard deviations of the blur.
  const sigma = featherPixels / 4;
  const pad = Math.ceil(sigma * 3) + 1;
  const padded = h("canvas", { width: width + 2 * pad, height: height + 2 * pad });
  const paddedContext = padded.getContext("2d");
  paddedContext.drawImage(white, pad, pad, width, height);
  paddedContext.drawImage(padded, pad, pad, 1, height, 0, pad, pad, height);
  paddedContext.drawImage(padded, pad + width - 1, pad, 1, height, pad + width, pad, pad, height);
  paddedContext.drawImage(padded, 0, pad, padded.width, 1, 0, 0, padded.width, pad);
  paddedContext.drawImage(padded, 0, pad + height - 1, padded.width, 1, 0, pad + height, padded.width, pad);

  const out = h("canvas", { width, height });
  const context = out.getContext("2d");
  context.fillStyle = "#000000";
  context.fillRect(0, 0, width, height);
  if (sigma > 0) context.filter = `blur(${sigma}px)`;
  context.drawImage(padded, -pad, -pad);
  return new Promise((resolve, reject) => {
    out.toBlob((blob) => (blob ? resolve(blob) : reject(new Error("the mask could not be encoded"))), "image/png");
  });
}
