// The REST API with the operator's token. The token lives in localStorage and goes out as
// `Authorization: Bearer` on every call; it is also a SameSite=Strict cookie, because an
// <img> (the client's photo) cannot send a header. The API accepts that cookie on GET only.

const KEY = "pbxlink.token";
const TOKEN = /^[A-Za-z0-9\-._~+/]+=*$/;

export class ApiFailure extends Error {
  constructor(status, body) {
    super((body && body.message) || `HTTP ${status}`);
    this.status = status;
    this.code = (body && body.error) || `http_${status}`;
    this.field = (body && body.field) || null;
  }
}

export const token = {
  get() {
    return localStorage.getItem(KEY);
  },
  set(value) {
    if (!TOKEN.test(value)) throw new ApiFailure(400, { message: "that is not a pbxlink token" });
    localStorage.setItem(KEY, value);
    const secure = location.protocol === "https:" ? "; Secure" : "";
    document.cookie = `token=${value}; Path=/; SameSite=Strict${secure}`;
  },
  clear() {
    localStorage.removeItem(KEY);
    document.cookie = "token=; Path=/; SameSite=Strict; Max-Age=0";
  },
};

/** Told when the server refuses the token: the page goes back to the sign-in form. */
export let onUnauthorized = () => {};
export function setUnauthorizedHandler(handler) {
  onUnauthorized = handler;
}

/** fetch() a JSON route; resolves to the parsed body (null for 204), throws ApiFailure. */
export async function api(path, { method = "GET", body, query, bearer = token.get() } = {}) {
  let url = path;
  if (query) {
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) {
      for (const one of Array.isArray(v) ? v : [v]) {
        if (one !== null && one !== undefined && one !== "") params.append(k, one);
      }
    }
    const qs = params.toString();
    if (qs) url += `?${qs}`;
  }
  const headers = { Accept: "application/json" };
  if (bearer) headers.Authorization = `Bearer ${bearer}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(url, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
    cache: "no-store",
  });
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = { message: `HTTP ${response.status}: not JSON` };
    }
  }
  if (!response.ok) {
    if (response.status === 401 && bearer === token.get()) onUnauthorized();
    throw new ApiFailure(response.status, data);
  }
  return data;
}
