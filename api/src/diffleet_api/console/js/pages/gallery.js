// Gallery: the tenant's jobs, a page of PAGE_SIZE at a time in the order GET /v1/jobs
// lists them (Kubernetes': by name), filtered by state and model. Kubernetes pages the
// list before the filters apply, so a filtered page may hold fewer cards; the cursors of
// the pages seen make "Previous page" possible. Succeeded jobs show their first output
// and may have their outputs deleted.
import { api, ApiError } from "../api.js";
import { announce, field, formatTime, h, replace } from "../dom.js";

const PAGE_SIZE = 12;
const PROMPT_CHARS = 80;
const PHASES = ["Pending", "Queued", "Scheduled", "Running", "Succeeded", "Failed", "Cancelled"];

function describe(error) {
  return error instanceof ApiError ? error.describe() : String(error.message || error);
}

function truncated(text) {
  if (!text) return "";
  return text.length > PROMPT_CHARS ? `${text.slice(0, PROMPT_CHARS - 1)}…` : text;
}

function options(values, selected) {
  return [h("option", { value: "" }, "All"), ...values.map((value) => h("option", { value, selected: value === selected }, value))];
}

/** The first output's presigned URL, or null once its outputs are deleted (409). */
async function thumbnailUrl(job, signal) {
  try {
    const outputs = await api(`/v1/jobs/${encodeURIComponent(job.id)}/outputs`, { signal });
    return outputs.items.length ? outputs.items[0].url : null;
  } catch (error) {
    if (error instanceof ApiError && error.status === 409) return null;
    throw error;
  }
}

function card(job, thumbnail, onDelete) {
  const phase = job.status.phase || "Pending";
  const spec = job.spec || {};
  const labelId = `card-${job.id}`;
  const parts = [
    thumbnail
      ? h("img", { class: "thumb", src: thumbnail, alt: `Job ${job.id}`, loading: "lazy" })
      : h("div", { class: "thumb placeholder" }, phase === "Succeeded" ? "Outputs deleted" : "No image"),
    h("p", { class: "card-title", id: labelId }, h("span", { class: `phase phase-${phase.toLowerCase()}` }, phase), " ", spec.model || ""),
    h("p", { class: "prompt" }, truncated(spec.prompt)),
    h("p", { class: "muted" }, formatTime(job.createdAt)),
    h("p", { class: "card-actions" },
      h("a", { href: `#/jobs/${encodeURIComponent(job.id)}` }, `Open ${job.id}`),
      thumbnail
        ? h("button", { type: "button", class: "danger", "aria-describedby": labelId, onclick: onDelete }, "Delete outputs")
        : null),
  ];
  return h("li", { class: "card", "data-job": job.id }, parts);
}

export async function render(main) {
  const controller = new AbortController();
  const { signal } = controller;
  // cursors[i] is the cursor of page i + 1 (null: the first page).
  const state = { cursors: [null], next: null };

  const phase = h("select", {}, options(PHASES, ""));
  const model = h("select", {}, options([], ""));
  const list = h("ul", { class: "cards", "aria-label": "Jobs" });
  const pageText = h("p", { class: "page-number" }, "Page 1");
  const previous = h("button", { type: "button", disabled: true }, "Previous page");
  const next = h("button", { type: "button", disabled: true }, "Next page");

  const deleteOutputs = async (job, element) => {
    if (!confirm(`Delete the outputs of job ${job.id}? The job, its history and its credits stay.`)) return;
    try {
      await api(`/v1/jobs/${encodeURIComponent(job.id)}/outputs`, { method: "DELETE", signal });
      element.replaceWith(card(job, null, null));
      announce(`Deleted the outputs of job ${job.id}.`);
    } catch (error) {
      if (!signal.aborted) announce(describe(error), true);
    }
  };

  const load = async () => {
    const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
    if (phase.value) params.set("phase", phase.value);
    if (model.value) params.set("model", model.value);
    const cursor = state.cursors[state.cursors.length - 1];
    if (cursor) params.set("cursor", cursor);
    previous.disabled = next.disabled = true;
    try {
      const page = await api(`/v1/jobs?${params}`, { signal });
      const thumbnails = await Promise.all(
        page.items.map((job) => (job.status.phase === "Succeeded" ? thumbnailUrl(job, signal) : null)),
      );
      state.next = page.nextCursor;
      const cards = page.items.map((job, index) => {
        const element = card(job, thumbnails[index], () => deleteOutputs(job, element));
        return element;
      });
      replace(list, cards.length ? cards : h("li", { class: "muted" }, "No jobs on this page."));
      pageText.textContent = `Page ${state.cursors.length}`;
      announce(`Page ${state.cursors.length}: ${cards.length} job${cards.length === 1 ? "" : "s"}.`);
    } catch (error) {
      if (!signal.aborted) announce(describe(error), true);
    }
    previous.disabled = state.cursors.length === 1;
    next.disabled = !state.next;
  };

  previous.addEventListener("click", () => {
    state.cursors.pop();
    load();
  });
  next.addEventListener("click", () => {
    state.cursors.push(state.next);
    load();
  });
  const refilter = () => {
    state.cursors = [null];
    load();
  };
  phase.addEventListener("change", refilter);
  model.addEventListener("change", refilter);

  replace(
    main,
    h("h1", {}, "Gallery"),
    h("div", { class: "row filters" }, field("State", phase), field("Model", model)),
    list,
    h("nav", { class: "pager", "aria-label": "Pages" }, previous, pageText, next),
  );
  const [models] = await Promise.all([api("/v1/models", { signal }), load()]);
  // A job's model, as the filter matches it: its checkpoint, or its upscaler in mode upscale.
  const named = models.items.filter((item) => ["checkpoint", "upscaler"].includes(item.spec.type));
  const ids = [...new Set(named.map((item) => item.id))].sort();
  replace(model, options(ids, model.value));
  return () => controller.abort();
}
