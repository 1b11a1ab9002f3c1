// The call log: a search form over GET /api/calls, rows coloured by how the call went, "load
// more" through the API's cursor, and one client's history (GET /api/clients/{id}/calls).

import { api } from "./api.js";
import { $, el, formatDuration, formatTime, localDay } from "./dom.js";

// statuses where a caller did not reach anyone: the rows an operator must call back
export const MISSED = new Set(["no_answer", "busy", "abandoned", "voicemail"]);
const STATUS = {
  answered: "Answered",
  no_answer: "No answer",
  busy: "Busy",
  abandoned: "Abandoned",
  voicemail: "Voicemail",
  failed: "Failed",
};
const DIR = { inbound: "In", outbound: "Out", internal: "Int" };
const PAGE = 50;

export function statusClass(status) {
  if (MISSED.has(status)) return "missed";
  return status === "answered" ? "answered" : "other";
}

/** One <tr> for a call from the log; `onClient(id, name)` opens that client's history. */
export function callRow(call, onClient) {
  const started = new Date(call.started_at);
  const sameDay = localDay(started) === localDay();
  const when = sameDay ? formatTime(call.started_at) : `${localDay(started)} ${formatTime(call.started_at)}`;
  const caller = el("td", {},
    el("span", { class: "num-text", dir: "ltr", text: call.caller_number || "anonymous" }));
  if (call.caller_name) caller.append(" ", el("span", { class: "muted", dir: "auto", text: call.caller_name }));
  const clientCell = el("td", { dir: "auto" });
  if (call.client_id) {
    // a client made for an unknown number has no name until someone gives it one
    const name = call.client_name || (call.client_category === "potential" ? "(new client)" : "(no name)");
    clientCell.append(
      el("button", { type: "button", class: "link", dir: "auto", "data-client": call.client_id, text: name }),
    );
    clientCell.firstChild.addEventListener("click", () => onClient(call.client_id, name));
  }
  const row = el("tr", { class: `status-${statusClass(call.status)}`, "data-status": call.status, "data-call-id": call.call_id },
    el("td", { text: when, title: started.toLocaleString() }),
    el("td", { class: `dir-${call.direction}`, text: DIR[call.direction] || call.direction }),
    caller,
    el("td", { class: "wide", dir: "ltr", text: call.called_number || "" }),
    el("td", { class: "wide", text: (call.extensions_rung || []).join(", ") }),
    el("td", { text: call.answered_by || "" }),
    statusCell(call),
    el("td", { class: "wide num", text: formatDuration(call.wait_s) }),
    el("td", { class: "num", text: call.talk_s ? formatDuration(call.talk_s) : "" }),
    clientCell,
  );
  return row;
}

/** The status, plus "too long" and a link to the recording where there is one (the token
 * cookie lets the browser fetch it: a plain link cannot send a header). */
function statusCell(call) {
  const cell = el("td", { class: "status", text: STATUS[call.status] || call.status });
  if (call.too_long) cell.append(" ", el("span", { class: "flag", text: "too long" }));
  if (call.recording && call.call_id) {
    const href = `/api/calls/${encodeURIComponent(call.call_id)}/recording`;
    cell.append(" ", el("a", { href, target: "_blank", rel: "noopener", class: "rec", text: "▶ rec" }));
  }
  return cell;
}

export class CallLog {
  constructor(onClient) {
    this.form = $("#log-form");
    this.rows = $("#log-table tbody");
    this.more = $("#more");
    this.error = $("#log-error");
    this.empty = $("#log-empty");
    this.onClient = onClient;
    this.cursor = null;
    this.query = null;
    this.loading = false;
    this.form.elements.from.value = localDay();
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.search();
    });
    this.more.addEventListener("click", () => this.load(false));
  }

  /** The API query for the form: one day, or a range of whole days (the API reads dates
   * in the PBX's time zone, so "today" is the PBX's today wherever the browser is). */
  formQuery() {
    const f = this.form.elements;
    const from = f.from.value || localDay();
    const until = f.until.value;
    const query = {
      direction: f.direction.value,
      status: f.status.value,
      number: f.number.value.trim(),
      extension: f.extension.value.trim(),
      limit: PAGE,
    };
    if (!until || until === from) {
      query.day = from;
    } else {
      const end = new Date(`${until}T12:00:00`); // noon: a DST day is still the next day
      end.setDate(end.getDate() + 1);
      query.from = from;
      query.until = localDay(end); // exclusive: the first day not wanted
    }
    return query;
  }

  search() {
    this.query = this.formQuery();
    return this.load(true);
  }

  /** A call just ended: re-read the first page if it shows today, unless the operator
   * has loaded more pages (they would be lost under their eyes). */
  refreshToday() {
    if (this.rows.children.length > PAGE) return;
    if (!this.query) this.search();
    else if (this.query.day === localDay()) this.load(true);
  }

  async load(fresh) {
    if (this.loading) return;
    this.loading = true;
    this.error.textContent = "";
    try {
      const query = fresh ? this.query : { ...this.query, cursor: this.cursor };
      const page = await api("/api/calls", { query });
      const rows = page.items.map((call) => callRow(call, this.onClient));
      if (fresh) this.rows.replaceChildren(...rows);
      else this.rows.append(...rows);
      this.cursor = page.next_cursor;
      this.more.hidden = !this.cursor;
      this.empty.hidden = this.rows.children.length > 0;
    } catch (error) {
      this.error.textContent = error.status === 404
        ? "The call log is not available on this server yet."
        : `Could not load the call log: ${error.message}`;
    } finally {
      this.loading = false;
    }
  }
}

/** The history dialog of one client. */
export async function showHistory(id, name, onClient) {
  const dialog = $("#history-dialog");
  $("#history-title").textContent = `Calls of ${name}`;
  const rows = $("#history-rows");
  const error = $("#history-error");
  rows.replaceChildren();
  error.textContent = "";
  if (!dialog.open) dialog.showModal();
  try {
    const body = await api(`/api/clients/${encodeURIComponent(id)}/calls`, { query: { limit: 100 } });
    rows.replaceChildren(...body.calls.map((call) => callRow(call, onClient)));
    if (!body.calls.length) error.textContent = "No calls yet.";
  } catch (error_) {
    error.textContent = `Could not load the history: ${error_.message}`;
  }
}
