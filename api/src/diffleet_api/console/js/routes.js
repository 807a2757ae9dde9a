// Hash routes: "#/<route>[/<id>][?query]". Pages import these, the shell listens.

/** "#/jobs/abc?x=1" -> {route: "jobs", id: "abc", query: URLSearchParams}. */
export function parseHash(hash = location.hash) {
  const [path, search = ""] = hash.replace(/^#\/?/, "").split("?");
  const [route = "", id = null] = path.split("/");
  return { route, id: id ? decodeURIComponent(id) : null, query: new URLSearchParams(search) };
}

/** Goes to `hash` ("#/jobs/abc"); the same hash again renders the page afresh. */
export function navigate(hash) {
  if (location.hash === hash) window.dispatchEvent(new HashChangeEvent("hashchange"));
  else location.hash = hash;
}
