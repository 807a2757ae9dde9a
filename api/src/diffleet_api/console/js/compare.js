// Before/after: the init image under the output, the output clipped by a range input
// (keyboard: arrows, Page Up/Down, Home/End, as any range).
import { field, h } from "./dom.js";

/** `frame`: where the init image sits in the output, in percent ({left, top, width,
 *  height}: outpaint pads around it); absent, it covers the output. */
export function compare(beforeUrl, afterUrl, frame) {
  const before = h("img", { alt: "Before", class: "compare-before" });
  const after = h("img", { alt: "After", class: "compare-after" });
  const slider = h("input", { type: "range", min: 0, max: 100, step: 1, value: "50" });
  if (frame) {
    before.style.left = `${frame.left}%`;
    before.style.top = `${frame.top}%`;
    before.style.width = `${frame.width}%`;
    before.style.height = `${frame.height}%`;
  }
  // The after image shows left of the handle: 0 is all before, 100 all after.
  const clip = () => {
    after.style.clipPath = `inset(0 ${100 - Number(slider.value)}% 0 0)`;
  };
  slider.addEventListener("input", clip);
  clip();
  before.src = beforeUrl;
  after.src = afterUrl;
  return h(
    "div",
    { class: "compare" },
    h("div", { class: "compare-stack" }, before, after),
    field("Before/after", slider, "0: the init image, 100: the output."),
  );
}
