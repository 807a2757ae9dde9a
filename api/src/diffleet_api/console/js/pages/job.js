// The live job page: its phase, queue position and progress (with previews) from the
// job's event stream; then its outputs, to download, compare or send to img2img.
import { api, ApiError, stream } from "../api.js";
import { announce, formatCredits, formatTime, h, replace } from "../dom.js";
import { compare } from "../compare.js";
import { navigate } from "../routes.js";

const FINISHED = ["Succeeded", "Failed", "Cancelled"];
const TERMINAL_EVENTS = ["succeeded", "failed", "cancelled"];
const POLL_MS = 2000;

export async function render(main, { id }) {
  const path = `/v1/jobs/${encodeURIComponent(id)}`;
  const job = await api(path);
  const view = jobView(id, path);
  replace(main, h("h1", {}, `Job ${id}`), view.element);
  view.show(job);
  const controller = new AbortController();
  follow(path, view, job, controller.signal);
  return () => controller.abort();
}

const finished = (job) => FINISHED.includes(job.status?.phase);

/** Streams the job's events until it finishes. A stream that ends early (RabbitMQ or
 *  the API's watch lost) is opened again; one refused (too many streams open) gives way
 *  to polling. */
async function follow(path, view, job, signal) {
  let live = true;
  while (!finished(job) && !signal.aborted) {
    if (live) {
      try {
        await stream(`${path}/events`, (name, data) => view.event(name, data), signal);
      } catch (error) {
        if (signal.aborted) return;
        live = false;
        announce(`Live updates unavailable (${describe(error)}); checking every 2 s.`, true);
      }
    }
    if (!live) await pause(POLL_MS, signal);
    if (signal.aborted) return;
    try {
      job = await api(path, { signal });
      view.show(job);
    } catch (error) {
      if (signal.aborted) return;
      announce(describe(error), true);
      await pause(POLL_MS, signal);
    }
  }
}

function pause(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    }, { once: true });
  });
}

function describe(error) {
  return error instanceof ApiError ? error.describe() : String(error.message);
}

/** The page's elements and how events and job snapshots update them. */
function jobView(id, path) {
  const phase = h("p", { id: "phase", class: "job-phase" }, "Phase: …");
  const queue = h("p", { class: "job-queue", hidden: true });
  const progress = h("progress", { id: "job-progress", "aria-label": "Progress", max: 1, value: 0 });
  const steps = h("span", { class: "muted" });
  const preview = h("img", { alt: "Preview", class: "preview", hidden: true });
  const message = h("p", { class: "error", role: "alert", hidden: true });
  const cancel = h("button", { type: "button", class: "danger", onclick: () => cancelJob(path, cancel) }, "Cancel");
  const results = h("section", { class: "results", "aria-labelledby": "job-results", hidden: true });
  const parameters = h("dl", { class: "parameters", "aria-labelledby": "job-parameters" });
  let shownOutputs = false;

  const setPhase = (value) => {
    phase.textContent = `Phase: ${value}`;
    phase.dataset.phase = value;
    if (value !== "Queued") queue.hidden = true;
    cancel.hidden = FINISHED.includes(value);
  };

  const setProgress = (step, total) => {
    progress.max = total;
    progress.value = step;
    steps.textContent = `Step ${step} of ${total}`;
  };

  const show = (job) => {
    const value = job.status?.phase || "Pending";
    setPhase(value);
    if (value === "Queued" && job.queuePosition) {
      queue.textContent = `Queue position: ${job.queuePosition}`;
      queue.hidden = false;
    }
    // status.progress is written only for jobs that ask for it: the stream's steps stay.
    const reported = job.status?.progress;
    const total = reported?.totalSteps || job.spec?.steps || 1;
    if (value === "Succeeded") setProgress(total, total);
    else if (reported) setProgress(reported.step, total);
    else if (!progress.value) setProgress(0, total);
    if (["Failed", "Cancelled"].includes(value)) {
      message.textContent = failureText(job.status, value);
      message.hidden = false;
    }
    replace(parameters, describeSpec(job));
    if (value === "Succeeded" && !shownOutputs) {
      shownOutputs = true;
      showOutputs(path, job, results);
    }
  };

  const event = (name, data) => {
    if (TERMINAL_EVENTS.includes(name)) {
      show(data);
      announce(`Job ${id} ${name}.`, name === "failed");
    } else if (name === "progress") {
      if (!FINISHED.includes(phase.dataset.phase)) setPhase("Running");
      setProgress(data.step, data.totalSteps);
      if (data.etaSeconds) steps.textContent += `, about ${Math.ceil(data.etaSeconds)} s left`;
      if (data.preview) {
        preview.src = data.preview;
        preview.hidden = false;
      }
    } else if (data.phase) {
      setPhase(data.phase);
      if (name === "queued" && data.position) {
        queue.textContent = `Queue position: ${data.position}`;
        queue.hidden = false;
      }
    }
  };

  const element = h(
    "div",
    { class: "job" },
    h(
      "section",
      { class: "panel job-live", "aria-label": "Live status" },
      phase,
      queue,
      h("div", { class: "job-progress" }, h("label", { for: progress.id }, "Progress"), progress, steps),
      message,
      h("p", {}, cancel),
      preview,
    ),
    results,
    h(
      "section",
      { class: "panel" },
      h("h2", { id: "job-parameters" }, "Parameters"),
      parameters,
    ),
  );
  return { element, show, event };
}

/** "Reason: message", or whichever of them says something. */
function failureText(status, phase) {
  const { reason, message } = status || {};
  if (reason && message && reason.toLowerCase() !== message.toLowerCase()) return `${reason}: ${message}`;
  return message || reason || phase;
}

async function cancelJob(path, button) {
  button.disabled = true;
  try {
    await api(path, { method: "DELETE" });
    announce("Cancel requested.");
  } catch (error) {
    button.disabled = false;
    announce(describe(error), true);
  }
}

/** The outputs of a Succeeded job: images, download links, img2img and before/after. */
async function showOutputs(path, job, section) {
  const heading = h("h2", { id: "job-results" }, "Outputs");
  section.hidden = false;
  if (job.outputsDeletedAt) {
    replace(section, heading, h("p", { class: "muted" }, `Outputs deleted ${formatTime(job.outputsDeletedAt)}.`));
    return;
  }
  let outputs;
  try {
    outputs = await api(`${path}/outputs`);
  } catch (error) {
    replace(section, heading, h("p", { class: "error" }, describe(error)));
    return;
  }
  const figures = outputs.items.map((item) => outputFigure(item));
  const first = outputs.items[0];
  const send = first && job.status?.outputs?.[0]
    ? h("button", { type: "button", onclick: () => sendToImg2img(job, first) }, "Send to img2img")
    : null;
  replace(
    section,
    heading,
    h("div", { class: "outputs" }, figures),
    send ? h("p", {}, send) : null,
    outputs.sourceUrl && first
      ? [h("h2", {}, "Before and after"), compare(outputs.sourceUrl, first.url, initFrame(job.spec))]
      : null,
  );
}

function outputFigure(item) {
  const number = item.index + 1;
  const isVideo = item.format === "mp4";
  return h(
    "figure",
    { class: "output" },
    isVideo ? null : h("img", { src: item.url, alt: `Output ${number}`, width: item.width, height: item.height }),
    h(
      "figcaption",
      {},
      // A new tab: S3 ignores `download` (another origin), and leaving this page logs out.
      h(
        "a",
        { href: item.url, download: `output-${number}.${item.format}`, target: "_blank", rel: "noopener" },
        `Download output ${number}`,
      ),
      ` ${item.width} x ${item.height}, ${item.format}`,
    ),
  );
}

function sendToImg2img(job, first) {
  const query = new URLSearchParams({ init: job.status.outputs[0].uri, preview: first.url });
  if (job.status.seed !== null && job.status.seed !== undefined) query.set("seed", String(job.status.seed));
  if (job.spec?.model) query.set("model", job.spec.model);
  navigate(`#/generate?${query}`);
}

/** Where the init image sits in an outpaint's output (percent); null: it covers it. */
function initFrame(spec) {
  const pad = spec?.outpaint;
  if (!pad) return null;
  const width = spec.width + pad.left + pad.right;
  const height = spec.height + pad.top + pad.bottom;
  return {
    left: (100 * pad.left) / width,
    top: (100 * pad.top) / height,
    width: (100 * spec.width) / width,
    height: (100 * spec.height) / height,
  };
}

/** The spec's fields worth reading, as <dt>/<dd> pairs. */
function describeSpec(job) {
  const spec = job.spec;
  if (!spec) return h("dd", {}, "This job's spec cannot be read.");
  const rows = [
    ["Prompt", spec.prompt],
    ["Negative prompt", spec.negativePrompt],
    ["Model", spec.model],
    ["Mode", spec.mode],
    ["Style", spec.style],
    ["Size", `${spec.width} x ${spec.height}`],
    ["Steps", spec.steps],
    ["Guidance", spec.guidanceScale],
    ["Sampler", spec.sampler],
    ["Seed", job.status?.seed ?? spec.seed ?? "random"],
    ["Batch", spec.batchSize],
    ["Strength", spec.strength],
    ["Init image", spec.initImage],
    ["Mask", spec.maskImage],
    ["Outpaint", spec.outpaint && ["left", "right", "top", "bottom"].map((side) => `${side} ${spec.outpaint[side]}`).join(", ")],
    ["ControlNet", (spec.controlNets || (spec.controlNet ? [spec.controlNet] : [])).map((net) => `${net.model} (${net.conditioningScale})`).join(", ")],
    ["LoRA", (spec.loras || []).map((lora) => `${lora.model} (${lora.weight})`).join(", ")],
    ["Cost", job.cost === null || job.cost === undefined ? "" : formatCredits(job.cost)],
    ["Created", formatTime(job.createdAt)],
  ];
  return rows
    .filter(([, value]) => value !== null && value !== undefined && value !== "")
    .map(([name, value]) => [h("dt", {}, name), h("dd", {}, String(value))]);
}
