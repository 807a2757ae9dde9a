// Building the DOM without innerHTML: every text goes in as a text node, so nothing a
// job or a user wrote can become markup (and no inline script or style is ever needed).

/** h("button", {type: "button", onclick: f}, "Cancel") -> an element.
 *  Attributes starting with "on" are listeners; `dataset`, `hidden`, `disabled`,
 *  `checked`, `value` and `selected` are set as properties; false/null skip. */
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(element.dataset, value);
    else if (["hidden", "disabled", "checked", "value", "selected"].includes(name)) element[name] = value;
    else element.setAttribute(name, value === true ? "" : String(value));
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replaces an element's children. */
export function replace(element, ...children) {
  element.replaceChildren();
  append(element, children);
}

/** A labelled form control: <label for=id>text</label> then the control (given an id). */
export function field(text, control, hint) {
  control.id ||= `f-${Math.random().toString(36).slice(2, 9)}`;
  const parts = [h("label", { for: control.id }, text), control];
  if (hint) {
    const hintId = `${control.id}-hint`;
    control.setAttribute("aria-describedby", hintId);
    parts.push(h("small", { id: hintId, class: "muted" }, hint));
  }
  return h("div", { class: "field" }, parts);
}

/** Says something to screen readers and sighted users in the status line. */
export function announce(text, isError = false) {
  const status = document.getElementById("status");
  status.textContent = text;
  status.classList.toggle("error", isError);
}

export function formatCredits(value) {
  return `${Number(value).toLocaleString(undefined, { maximumFractionDigits: 2 })} credits`;
}

export function formatTime(iso) {
  return iso ? new Date(iso).toLocaleString() : "";
}
