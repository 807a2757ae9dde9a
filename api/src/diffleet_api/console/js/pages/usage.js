// Usage: the tenant's credits (balance, reserved, tier), its rate-limit buckets as they
// stand now, and the latest ledger entries. One GET /v1/usage per visit.
import { api } from "../api.js";
import { formatCredits, formatTime, h, replace } from "../dom.js";

const LEDGER_ROWS = 50;
const WINDOWS = { 60: "minute", 3600: "hour", 86400: "day" };

function perWindow(seconds) {
  return WINDOWS[seconds] ? `per ${WINDOWS[seconds]}` : `per ${seconds} s`;
}

/** A section: its h2, then a table named by that heading (or a line when it is empty). */
function tableSection(id, title, headers, rows, empty) {
  const heading = h("h2", { id }, title);
  if (!rows.length) return h("section", {}, heading, h("p", { class: "muted" }, empty));
  const table = h(
    "table",
    { "aria-labelledby": id },
    h("thead", {}, h("tr", {}, headers.map((text) => h("th", { scope: "col" }, text)))),
    h("tbody", {}, rows.map((cells) => h("tr", {}, cells.map((cell) => h("td", {}, cell))))),
  );
  return h("section", {}, heading, h("div", { class: "table-scroll" }, table));
}

// A tier unlimited in a bucket has no row for it (GET /v1/usage leaves it out).
function rateLimitRows(limits) {
  return limits.map((rule) => [
    rule.name,
    `${rule.remaining} / ${rule.limit} ${perWindow(rule.windowSeconds)}`,
  ]);
}

function ledgerRows(entries) {
  return entries.map((entry) => [
    formatTime(entry.createdAt),
    entry.kind,
    formatCredits(entry.amount),
    entry.jobUid || "",
    entry.note || "",
  ]);
}

export async function render(main) {
  const controller = new AbortController();
  replace(main, h("h1", {}, "Usage"), h("p", { class: "muted" }, "Loading…"));
  const usage = await api(`/v1/usage?limit=${LEDGER_ROWS}`, { signal: controller.signal });
  const summary = h(
    "dl",
    { class: "usage-summary panel" },
    h("div", {}, h("dt", {}, "Balance"), h("dd", {}, formatCredits(usage.balance))),
    h("div", {}, h("dt", {}, "Reserved"), h("dd", {}, formatCredits(usage.reserved))),
    h("div", {}, h("dt", {}, "Tier"), h("dd", {}, usage.tier)),
  );
  replace(
    main,
    h("h1", {}, "Usage"),
    summary,
    usage.rateLimits
      ? tableSection("usage-limits", "Rate limits", ["Bucket", "Remaining / limit"],
        rateLimitRows(usage.rateLimits), "No limits: this tier is unlimited.")
      : null,
    tableSection("usage-ledger", "Ledger", ["Time", "Kind", "Amount", "Job", "Note"],
      ledgerRows(usage.ledger), "No ledger entries yet."),
  );
  return () => controller.abort();
}
