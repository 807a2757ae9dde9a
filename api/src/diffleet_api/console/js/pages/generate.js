// The Generate page: a job spec built from a form (models, style, prompts, mode, size,
// sampling, init image and mask, outpaint padding, ControlNet and LoRA), priced live by
// POST /v1/jobs:quote and submitted by POST /v1/jobs.
import { api, ApiError, upload } from "../api.js";
import { announce, field, formatCredits, h, replace } from "../dom.js";
import { maskPainter } from "../mask.js";
import { navigate } from "../routes.js";

const MODES = ["txt2img", "img2img", "inpaint", "outpaint"];
const SAMPLERS = ["euler", "euler_a", "heun", "dpm2", "dpmpp_2m", "dpmpp_2m_karras", "ddim", "lms", "unipc", "lcm"];
const RATIOS = { "1:1": 1, "4:3": 4 / 3, "3:4": 3 / 4, "16:9": 16 / 9, "9:16": 9 / 16 };
// A family's native side: sizes keep about its pixel count (side x side).
const BASE_SIDE = { sd15: 512, sdxl: 1024 };
const QUOTE_DELAY_MS = 300;
const MAX_SEED = 2 ** 32 - 1;

// The last job this page submitted, kept while the console is open ("Reuse seed").
let lastJobId = null;

export async function render(main, { query }) {
  const [models, styles] = await Promise.all([api("/v1/models"), api("/v1/styles")]);
  const catalog = byType(models.items);
  const form = buildForm(catalog, styles.items, query);
  replace(main, h("h1", {}, "Generate"), form.element);
  return form.stop;
}

function byType(models) {
  const of = (type) => models.filter((model) => model.spec.type === type);
  return {
    checkpoints: of("checkpoint").filter((model) => model.status?.phase === "Ready"),
    controlnets: of("controlnet"),
    loras: of("lora"),
  };
}

function select(options, value) {
  const control = h("select", {});
  for (const [optionValue, text] of options) control.append(h("option", { value: optionValue }, text));
  if (value !== undefined) control.value = value;
  return control;
}

function number(attributes) {
  return h("input", { type: "number", inputmode: "decimal", ...attributes });
}

/** The whole form, its state and its behaviour; `stop` ends its pending quote. */
function buildForm(catalog, styles, query) {
  const c = controls(catalog, styles);
  const painter = maskPainter();
  const state = { initUri: null, controlUri: null, sizeTouched: false, quoteTimer: null, quoting: null };
  const cost = h("output", { class: "cost", "aria-live": "polite" }, "Cost: …");
  const submit = h("button", { type: "submit", class: "primary" }, "Generate");
  const imageSection = h("section", { class: "panel gen-images" });
  const modeFields = {
    strength: field(
      "Strength",
      c.strength,
      "How much of the init image to change, 0 to 1. Empty: 0.75 (1 for inpaint with an empty prompt).",
    ),
    outpaint: h(
      "div",
      { class: "row" },
      field("Left", c.left),
      field("Right", c.right),
      field("Top", c.top),
      field("Bottom", c.bottom),
      field("Feather", c.outpaintFeather, "Soft edge between the image and the new area (pixels)."),
    ),
  };

  const family = () => catalog.checkpoints.find((model) => model.id === c.model.value)?.spec.baseModel;
  const side = () => BASE_SIDE[family()] || 512;
  const setSize = ([width, height]) => {
    c.width.value = String(width);
    c.height.value = String(height);
  };
  const applyRatio = (ratio) => setSize(sizeFor(ratio, side()));
  // An init image sets the size to its own, shrunk to the family's pixel count if larger.
  const fitImage = (width, height) => {
    if (!state.sizeTouched && width && height) setSize(imageSize(width, height, side()));
  };

  const showMode = () => {
    const mode = c.mode.value;
    painter.setActive(mode === "inpaint");
    if (mode === "txt2img") {
      imageSection.hidden = true;
      imageSection.replaceChildren();
      return;
    }
    imageSection.hidden = false;
    replace(
      imageSection,
      h("h2", {}, "Image"),
      field("Init image", c.init, "PNG, JPEG or WebP; it is resized to Width x Height."),
      h("div", { class: "gen-init" }, painter.view),
      mode === "inpaint" ? painter.tools : null,
      mode === "img2img" || mode === "inpaint" ? modeFields.strength : null,
      mode === "outpaint" ? modeFields.outpaint : null,
    );
  };

  const takeImage = async (input, onDone) => {
    const [file] = input.files;
    if (!file) return;
    announce(`Uploading ${file.name}…`);
    try {
      const uploaded = await upload(file);
      onDone(uploaded, URL.createObjectURL(file));
      announce(`${file.name} uploaded (${uploaded.width} x ${uploaded.height}).`);
    } catch (error) {
      input.value = "";
      announce(`${file.name}: ${error instanceof ApiError ? error.describe() : error.message}`, true);
    }
    requote();
  };

  const requote = () => {
    clearTimeout(state.quoteTimer);
    state.quoteTimer = setTimeout(quote, QUOTE_DELAY_MS);
  };

  const quote = async () => {
    state.quoting?.abort();
    const missing = missingInput(c, state);
    if (missing) {
      cost.textContent = `Cost: not quoted (${missing})`;
      return;
    }
    const controller = new AbortController();
    state.quoting = controller;
    try {
      // The mask is uploaded on submit; its pixels do not change the price, so the init
      // image stands in for it here.
      const body = spec(c, state, state.initUri);
      const answer = await api("/v1/jobs:quote", { method: "POST", body, signal: controller.signal });
      cost.textContent = answer.affordable
        ? `Cost: ${formatCredits(answer.cost)}`
        : `Cost: ${formatCredits(answer.cost)}, more than the balance of ${formatCredits(answer.balance)}`;
      cost.classList.remove("error");
    } catch (error) {
      if (controller.signal.aborted) return;
      cost.textContent = `Cost: refused. ${error instanceof ApiError ? error.describe() : error.message}`;
      cost.classList.add("error");
    }
  };

  const onSubmit = async (event) => {
    event.preventDefault();
    const missing = missingInput(c, state);
    if (missing) {
      announce(missing, true);
      return;
    }
    submit.disabled = true;
    try {
      const mask = c.mode.value === "inpaint" ? await uploadMask(painter, c) : null;
      const job = await api("/v1/jobs", { method: "POST", body: spec(c, state, mask) });
      lastJobId = job.id;
      announce(`Job ${job.id} submitted.`);
      navigate(`#/jobs/${encodeURIComponent(job.id)}`);
    } catch (error) {
      announce(error instanceof ApiError ? error.describe() : String(error.message), true);
    } finally {
      submit.disabled = false;
    }
  };

  c.model.addEventListener("change", () => {
    if (!state.sizeTouched) applyRatio(RATIOS[c.ratio.value]);
  });
  c.ratio.addEventListener("change", () => {
    state.sizeTouched = false;
    applyRatio(RATIOS[c.ratio.value]);
  });
  for (const input of [c.width, c.height]) input.addEventListener("input", () => (state.sizeTouched = true));
  c.mode.addEventListener("change", showMode);
  c.init.addEventListener("change", () => takeImage(c.init, (uploaded, src) => {
    state.initUri = uploaded.uri;
    painter.image.src = src;
    fitImage(uploaded.width, uploaded.height);
  }));
  c.control.addEventListener("change", () => takeImage(c.control, (uploaded) => (state.controlUri = uploaded.uri)));
  c.controlnet?.addEventListener("change", () => showPicked(c.controlnet, c.controlFields));
  c.lora?.addEventListener("change", () => showPicked(c.lora, c.loraFields));
  c.reuseSeed.addEventListener("click", () => reuseSeed(c.seed, query.get("seed")));

  const element = h(
    "form",
    { class: "generate", novalidate: true, oninput: requote, onchange: requote, onsubmit: onSubmit },
    h(
      "section",
      { class: "panel" },
      h("h2", {}, "Prompt"),
      h("div", { class: "row" }, field("Model", c.model), c.style ? c.styleField : null, field("Mode", c.mode)),
      field("Prompt", c.prompt),
      field("Negative prompt", c.negative),
    ),
    imageSection,
    h(
      "section",
      { class: "panel" },
      h("h2", {}, "Settings"),
      h(
        "div",
        { class: "row" },
        field("Aspect ratio", c.ratio, "Sets Width and Height to about the model's native pixel count."),
        field("Width", c.width),
        field("Height", c.height),
      ),
      h("div", { class: "row" }, field("Steps", c.steps), field("Guidance", c.guidance), field("Sampler", c.sampler)),
      h(
        "div",
        { class: "row" },
        h("div", { class: "seed" }, field("Seed", c.seed, "Empty: random."), c.reuseSeed),
        field("Batch", c.batch, "Images per job (1 to 8)."),
      ),
    ),
    adapters(c),
    h("p", { class: "row gen-submit" }, cost, submit),
  );

  applyRatio(RATIOS[c.ratio.value]);
  // Sent here by "Send to img2img": that image (and its model), in img2img.
  const init = query.get("init");
  if (init) {
    c.mode.value = "img2img";
    state.initUri = init;
    if (catalog.checkpoints.some((model) => model.id === query.get("model"))) c.model.value = query.get("model");
    const preview = query.get("preview");
    if (preview) {
      const image = painter.image;
      image.addEventListener("load", () => fitImage(image.naturalWidth, image.naturalHeight), { once: true });
      image.src = preview;
    }
  }
  showMode();
  showPicked(c.controlnet, c.controlFields);
  showPicked(c.lora, c.loraFields);
  quote();
  return {
    element,
    stop: () => {
      clearTimeout(state.quoteTimer);
      state.quoting?.abort();
    },
  };
}

/** The form's controls, before layout. Pickers with no model to pick are null. */
function controls(catalog, styles) {
  const c = {
    model: select(catalog.checkpoints.map((model) => [model.id, model.id])),
    style: styles.length ? select([["", "None"], ...styles.map((style) => [style.id, style.id])]) : null,
    prompt: h("textarea", { rows: 3, maxlength: 2000 }),
    negative: h("textarea", { rows: 2, maxlength: 2000 }),
    mode: select(MODES.map((mode) => [mode, mode])),
    ratio: select(Object.keys(RATIOS).map((ratio) => [ratio, ratio])),
    width: number({ min: 64, max: 2048, step: 8, value: "512" }),
    height: number({ min: 64, max: 2048, step: 8, value: "512" }),
    steps: number({ min: 1, max: 150, step: 1, value: "20" }),
    guidance: number({ min: 0, max: 30, step: 0.5, value: "7" }),
    sampler: select(SAMPLERS.map((sampler) => [sampler, sampler]), "euler_a"),
    seed: number({ min: 0, max: MAX_SEED, step: 1, inputmode: "numeric" }),
    reuseSeed: h("button", { type: "button" }, "Reuse seed"),
    batch: number({ min: 1, max: 8, step: 1, value: "1" }),
    init: h("input", { type: "file", accept: "image/png,image/jpeg,image/webp" }),
    strength: number({ min: 0, max: 1, step: 0.05 }),
    left: number({ min: 0, max: 1024, step: 8, value: "0" }),
    right: number({ min: 0, max: 1024, step: 8, value: "0" }),
    top: number({ min: 0, max: 1024, step: 8, value: "0" }),
    bottom: number({ min: 0, max: 1024, step: 8, value: "0" }),
    outpaintFeather: number({ min: 0, max: 256, step: 1, value: "16" }),
    controlnet: catalog.controlnets.length
      ? select([["", "None"], ...catalog.controlnets.map((model) => [model.id, model.id])])
      : null,
    control: h("input", { type: "file", accept: "image/png,image/jpeg,image/webp" }),
    controlScale: number({ min: 0, max: 2, step: 0.05, value: "1" }),
    lora: catalog.loras.length ? select([["", "None"], ...catalog.loras.map((model) => [model.id, model.id])]) : null,
    loraWeight: number({ min: -2, max: 2, step: 0.05, value: "1" }),
  };
  if (c.style) {
    const describe = () => styles.find((style) => style.id === c.style.value)?.spec.description || "";
    const hint = h("small", { class: "muted" });
    const update = () => (hint.textContent = describe());
    c.style.addEventListener("change", update);
    c.styleField = h("div", { class: "style-field" }, field("Style", c.style), hint);
  }
  c.controlFields = h(
    "div",
    { class: "row" },
    field("Control image", c.control, "What the ControlNet follows (edges, depth, ...)."),
    field("Control scale", c.controlScale),
  );
  c.loraFields = field("LoRA weight", c.loraWeight);
  return c;
}

function adapters(c) {
  if (!c.controlnet && !c.lora) return null;
  return h(
    "section",
    { class: "panel" },
    h("h2", {}, "Adapters"),
    c.controlnet ? h("div", { class: "picker" }, field("ControlNet", c.controlnet), c.controlFields) : null,
    c.lora ? h("div", { class: "picker" }, field("LoRA", c.lora), c.loraFields) : null,
  );
}

/** A picker's own fields show once something is picked. */
function showPicked(picker, fields) {
  if (picker) fields.hidden = picker.value === "";
}

/** width x height of `ratio` with about side x side pixels, each a multiple of 8. */
function sizeFor(ratio, side) {
  const round8 = (value) => Math.min(2048, Math.max(64, Math.round(value / 8) * 8));
  return [round8(side * Math.sqrt(ratio)), round8(side / Math.sqrt(ratio))];
}

/** width x height of an image of that size: its own, rounded to multiples of 8, scaled
 *  down to about side x side pixels when it has more. */
function imageSize(width, height, side) {
  const shrink = Math.min(1, side / Math.sqrt(width * height));
  const round8 = (value) => Math.min(2048, Math.max(64, Math.round((value * shrink) / 8) * 8));
  return [round8(width), round8(height)];
}

/** What the form still needs before it is a job, in words; null when nothing. */
function missingInput(c, state) {
  if (!c.model.value) return "no checkpoint is ready to run";
  if (!c.width.value || !c.height.value) return "Width and Height: give both";
  if (!c.prompt.value.trim() && c.mode.value !== "inpaint") return "Prompt: say what to draw";
  if (c.mode.value !== "txt2img" && !state.initUri) return "Init image: choose one";
  if (c.controlnet?.value && !state.controlUri) return "Control image: choose one for the ControlNet";
  return null;
}

function integer(input) {
  return input.value === "" ? undefined : Math.round(Number(input.value));
}

function decimal(input) {
  return input.value === "" ? undefined : Number(input.value);
}

/** The job spec the form says (camelCase, as POST /v1/jobs takes it). */
function spec(c, state, maskUri) {
  const mode = c.mode.value;
  const body = {
    model: c.model.value,
    mode,
    prompt: c.prompt.value,
    negativePrompt: c.negative.value,
    width: integer(c.width),
    height: integer(c.height),
    steps: integer(c.steps),
    guidanceScale: decimal(c.guidance),
    sampler: c.sampler.value,
    seed: integer(c.seed),
    batchSize: integer(c.batch),
  };
  if (c.style?.value) body.style = c.style.value;
  if (mode !== "txt2img") body.initImage = state.initUri;
  if (mode === "inpaint") body.maskImage = maskUri;
  if (mode === "img2img" || mode === "inpaint") body.strength = decimal(c.strength);
  if (mode === "outpaint") {
    body.outpaint = {
      left: integer(c.left),
      right: integer(c.right),
      top: integer(c.top),
      bottom: integer(c.bottom),
      featherPixels: integer(c.outpaintFeather),
    };
  }
  if (c.controlnet?.value) {
    body.controlNets = [
      { model: c.controlnet.value, image: state.controlUri, conditioningScale: decimal(c.controlScale) },
    ];
  }
  if (c.lora?.value) body.loras = [{ model: c.lora.value, weight: decimal(c.loraWeight) }];
  return body;
}

async function uploadMask(painter, c) {
  if (painter.isEmpty()) throw new Error("Mask: paint the area to repaint (Invert on an empty mask repaints all)");
  const blob = await painter.exportPng(integer(c.width), integer(c.height));
  return (await upload(blob)).uri;
}

/** The seed of ?seed= (from "Send to img2img"), else of the last job submitted here. */
async function reuseSeed(input, fromQuery) {
  let seed = fromQuery;
  if (!seed && lastJobId) {
    try {
      const job = await api(`/v1/jobs/${encodeURIComponent(lastJobId)}`);
      seed = job.status?.seed ?? job.spec?.seed;
    } catch (error) {
      announce(error instanceof ApiError ? error.describe() : String(error.message), true);
      return;
    }
  }
  if (seed === null || seed === undefined || seed === "") {
    announce("No seed to reuse yet: submit a job first (its seed is picked when it is queued).", true);
    return;
  }
  input.value = String(seed);
  input.dispatchEvent(new Event("input", { bubbles: true }));
  announce(`Seed ${seed} reused.`);
}
