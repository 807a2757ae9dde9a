// The console's only door to diffleet: the /v1 routes, with the credential the user typed.
// The credential lives in this module's memory alone (never localStorage, sessionStorage
// or a cookie): reloading the page logs out.

const session = { token: null, kind: null };

export class ApiError extends Error {
  /** An RFC 9457 problem: status, title, detail and, for a 422, the refused fields. */
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }

  /** "field: message" lines of a validation problem, else the detail. */
  describe() {
    const fields = this.problem.errors || this.problem.invalidFields || [];
    if (fields.length) return fields.map((e) => `${e.field}: ${e.message}`).join("\n");
    return this.message;
  }
}

/** Who is logged in: "tenant" (its keys and JWTs), "platform" (a platform key) or null. */
export function sessionKind() {
  return session.kind;
}

export function logout() {
  session.token = null;
  session.kind = null;
}

/** Tries the credential: a tenant's answers /v1/usage, a platform key /v1/fleet.
 *  Returns the kind; throws ApiError (401) when neither accepts it. */
export async function login(token) {
  session.token = token.trim();
  try {
    await api("/v1/usage?limit=1");
    session.kind = "tenant";
  } catch (error) {
    if (!(error instanceof ApiError) || ![401, 403].includes(error.status)) throw error;
    try {
      await api("/v1/fleet");
      session.kind = "platform";
    } catch (second) {
      logout();
      throw second instanceof ApiError && second.status === 403 ? error : second;
    }
  }
  return session.kind;
}

function headers(extra = {}) {
  return { Authorization: `Bearer ${session.token}`, ...extra };
}

async function failure(response) {
  let problem = {};
  try {
    problem = await response.json();
  } catch {
    problem = { title: response.statusText };
  }
  return new ApiError(response.status, problem);
}

/** A JSON call: api("/v1/jobs", {method: "POST", body: spec}). Returns the parsed body
 *  (null for 204); throws ApiError for any 4xx/5xx. */
export async function api(path, { method = "GET", body, signal } = {}) {
  const init = { method, signal, headers: headers(), credentials: "omit" };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  const response = await fetch(path, init);
  if (!response.ok) throw await failure(response);
  return response.status === 204 ? null : response.json();
}

/** POST /v1/uploads of a Blob or File (its bytes as the body); returns {uri, width,
 *  height, ...}. */
export async function upload(blob) {
  const response = await fetch("/v1/uploads", {
    method: "POST",
    body: blob,
    headers: headers({ "Content-Type": "application/octet-stream" }),
    credentials: "omit",
  });
  if (!response.ok) throw await failure(response);
  return response.json();
}

/** Server-Sent Events over fetch (EventSource cannot send an Authorization header).
 *  Calls onEvent(name, data) per event until the server ends the stream or `signal`
 *  aborts; reconnects with Last-Event-ID, up to 5 times with a growing pause. */
export async function stream(path, onEvent, signal) {
  let lastId = null;
  for (let attempt = 0; attempt < 6 && !signal?.aborted; attempt++) {
    try {
      const extra = lastId ? { "Last-Event-ID": lastId, Accept: "text/event-stream" } : { Accept: "text/event-stream" };
      const response = await fetch(path, { headers: headers(extra), signal, credentials: "omit" });
      if (!response.ok) throw await failure(response);
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const frame = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const event = { name: "message", data: "" };
          for (const line of frame.split("\n")) {
            if (line.startsWith("id: ")) lastId = line.slice(4);
            else if (line.startsWith("event: ")) event.name = line.slice(7);
            else if (line.startsWith("data: ")) event.data += line.slice(6);
          }
          if (event.data) onEvent(event.name, JSON.parse(event.data));
        }
      }
    } catch (error) {
      if (signal?.aborted || (error instanceof ApiError && error.status < 500 && error.status !== 429)) throw error;
      await new Promise((resolve) => setTimeout(resolve, 500 * 2 ** attempt));
    }
  }
}
