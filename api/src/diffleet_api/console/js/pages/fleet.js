// Fleet (platform keys only): pools, per-tier queues, workers with what they hold, the
// platform's models and the autoscaler's recent decisions, read from GET /v1/fleet every
// REFRESH_MS while the page is open. Workers name models by digest; the models' digests
// turn them back into names.
import { api, ApiError } from "../api.js";
import { announce, formatTime, h, replace } from "../dom.js";

const REFRESH_MS = 2000;

const SECTIONS = [
  ["fleet-pools", "Pools", ["Name", "GPU type", "Desired", "Ready", "Busy", "Replicas", "Queued jobs", "Last scale"]],
  ["fleet-queues", "Queues", ["Tier", "Queued"]],
  ["fleet-workers", "Workers", ["ID", "Pool", "GPU type", "Load", "Hot models", "Warm models", "Expires"]],
  ["fleet-models", "Models", ["ID", "Type", "Hot", "Warm"]],
  ["fleet-decisions", "Recent autoscaler decisions", ["Pool", "Reason", "Message", "Time"]],
];
const EMPTY = {
  "fleet-pools": "No GPU pools.",
  "fleet-queues": "No job is queued.",
  "fleet-workers": "No worker has announced itself.",
  "fleet-models": "No platform models.",
  "fleet-decisions": "No scaling decision recently.",
};

function poolRows(pools) {
  return pools.map((pool) => {
    const status = pool.status || {};
    return [
      pool.name,
      pool.spec ? pool.spec.gpuType : "",
      status.desiredReplicas ?? 0,
      status.readyReplicas ?? 0,
      status.busyReplicas ?? 0,
      status.replicas ?? 0,
      status.queuedJobs ?? 0,
      formatTime(status.lastScaleTime) || "never",
    ];
  });
}

function queueRows(queued) {
  return Object.entries(queued || {}).map(([tier, count]) => [tier, count]);
}

/** Model names for digests ("sha256:..."), the digest's start where no model has it. */
function modelNames(digests, names) {
  return (digests || []).map((digest) => names.get(digest) || digest.slice(0, 19)).join(", ") || "none";
}

function workerRows(workers, names) {
  const now = Date.now();
  return workers.map((worker) => {
    const inventory = worker.inventory || {};
    const expired = worker.expiresAt && Date.parse(worker.expiresAt) < now;
    return [
      worker.id,
      inventory.pool || "",
      inventory.gpuType || "",
      worker.load === null || worker.load === undefined ? "unknown" : `${Math.round(worker.load * 100)}%`,
      modelNames(inventory.hotModels, names),
      modelNames(inventory.warmModels, names),
      `${formatTime(worker.expiresAt)}${expired ? " (expired)" : ""}`,
    ];
  });
}

function modelRows(models) {
  return models.map((model) => [
    model.id,
    model.type || "",
    model.status.hotReplicas ?? 0,
    model.status.warmReplicas ?? 0,
  ]);
}

function decisionRows(decisions) {
  return (decisions || []).map((decision) => [
    decision.pool,
    decision.reason,
    decision.message,
    formatTime(decision.at),
  ]);
}

function rowsOf(fleet) {
  const names = new Map(fleet.models.filter((m) => m.status.digest).map((m) => [m.status.digest, m.id]));
  return {
    "fleet-pools": poolRows(fleet.pools),
    "fleet-queues": queueRows(fleet.queued),
    "fleet-workers": workerRows(fleet.workers, names),
    "fleet-models": modelRows(fleet.models),
    "fleet-decisions": decisionRows(fleet.decisions),
  };
}

/** One section (h2 + a table named by it); update(rows) redraws its body in place. */
function section([id, title, headers]) {
  const body = h("tbody");
  const table = h(
    "table",
    { "aria-labelledby": id },
    h("thead", {}, h("tr", {}, headers.map((text) => h("th", { scope: "col" }, text)))),
    body,
  );
  const empty = h("p", { class: "muted", hidden: true }, EMPTY[id]);
  const wrapper = h("div", { class: "table-scroll" }, table);
  const element = h("section", { class: "fleet-section" }, h("h2", { id }, title), wrapper, empty);
  const update = (rows) => {
    wrapper.hidden = rows.length === 0;
    empty.hidden = rows.length !== 0;
    replace(body, rows.map((cells) => h("tr", {}, cells.map((cell) => h("td", {}, String(cell))))));
  };
  return { id, element, update };
}

export async function render(main) {
  const controller = new AbortController();
  const sections = SECTIONS.map(section);
  const updated = h("p", { id: "fleet-updated", class: "muted" }, "Loading…");
  let timer = null;
  let stopped = false;

  const refresh = async () => {
    try {
      const fleet = await api("/v1/fleet", { signal: controller.signal });
      if (stopped) return;
      const rows = rowsOf(fleet);
      for (const { id, update } of sections) update(rows[id]);
      updated.textContent = `Updated ${new Date().toLocaleTimeString()}`;
    } catch (error) {
      if (stopped) return;
      announce(error instanceof ApiError ? error.describe() : `The fleet could not be read: ${error.message}`, true);
    }
    if (!stopped) timer = setTimeout(refresh, REFRESH_MS);
  };

  replace(
    main,
    h("h1", {}, "Fleet"),
    h("p", { class: "muted" }, "Every pool, worker and platform model, refreshed every 2 seconds."),
    updated,
    sections.map((entry) => entry.element),
  );
  await refresh();
  return () => {
    stopped = true;
    clearTimeout(timer);
    controller.abort();
  };
}
