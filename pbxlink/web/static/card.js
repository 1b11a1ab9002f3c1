// The live client cards, one per call in progress, keyed by call_id. Every hub message that
// carries a `card` replaces the card's data; the phase (ringing, talking, ended...) comes from
// the message type. Ended cards stay, greyed, so the operator can finish notes; the oldest
// ended ones go when too many pile up.

import {
  el, field, formatDateTime, formatDuration, inkFor, safeColor, show,
} from "./dom.js";

const MAX_CARDS = 6;
const DIRECTION = { inbound: "↙ Inbound", outbound: "↗ Outbound", internal: "⇄ Internal" };
const STATUS = {
  answered: "answered",
  no_answer: "no answer",
  busy: "busy",
  abandoned: "abandoned",
  voicemail: "voicemail",
  failed: "failed",
};
export const NO_PHOTO = "/static/nophoto.svg";
const OPENS = new Set(["ringing", "answered", "transferred"]);

/** A client as the REST API returns it, in the card's shape (the card flattens category). */
export function cardClient(client) {
  const category = client.category || {};
  return {
    id: client.id,
    name: client.name,
    company: client.company,
    category: category.name,
    category_label: category.label,
    category_color: category.color,
    notes: client.notes,
    city: client.city,
    country: client.country,
    photo_url: client.photo_url,
    orders: (client.open_orders || []).map((o) => ({
      number: o.number, stage: o.stage, responsible: o.responsible, debt: o.debt,
    })),
  };
}

export class Board {
  /** `actions(name, call)` is told when a card's button is clicked. */
  constructor(container, template, empty, actions) {
    this.mine = new Set(); // this operator's extensions: "talking" vs "answered by a colleague"
    this.container = container;
    this.template = template;
    this.empty = empty;
    this.actions = actions;
    this.calls = new Map(); // call_id -> {card, phase, extension, kind, at, end, node}
    container.addEventListener("click", (event) => {
      const button = event.target.closest("button[data-act]");
      const node = event.target.closest(".card");
      if (!button || !node) return;
      const call = this.calls.get(node.dataset.callId);
      if (!call) return;
      if (button.dataset.act === "close") this.remove(call.card.call_id);
      else this.actions(button.dataset.act, call);
    });
    this.ticker = setInterval(() => this.tick(), 1000);
  }

  /** A ringing/answered/transferred/missed/client_updated message; returns the call, or
   * null for a call this page does not show (only the first three open a card). */
  apply(msg) {
    const id = msg.call_id;
    let call = this.calls.get(id);
    if (!call) {
      if (!msg.card || !OPENS.has(msg.type)) return null;
      call = { card: msg.card, phase: "ringing", extension: null, at: msg.at, end: null };
      call.node = this.template.content.firstElementChild.cloneNode(true);
      call.node.dataset.callId = id;
      this.container.prepend(call.node);
      this.calls.set(id, call);
      this.trim();
    }
    if (msg.card) call.card = msg.card;
    if (call.phase !== "ended") {
      if (msg.type === "ringing" || msg.type === "answered" || msg.type === "transferred") {
        call.phase = msg.type;
        call.at = msg.at || call.at;
      } else if (msg.type === "missed") {
        call.phase = "missed";
      }
      if (msg.extension !== undefined && msg.type !== "client_updated") {
        call.extension = msg.extension;
      }
      if (msg.type === "transferred") call.kind = msg.kind;
    }
    this.render(call);
    return call;
  }

  ended(msg) {
    const call = this.calls.get(msg.call_id);
    if (!call) return null;
    call.phase = "ended";
    call.end = { status: msg.status, wait_s: msg.wait_s, talk_s: msg.talk_s };
    this.render(call);
    return call;
  }

  /** After a (re)connect: `live` are the call ids the hub still has; the rest ended unseen. */
  settle(live) {
    for (const [id, call] of this.calls) {
      if (!live.has(id) && call.phase !== "ended") {
        call.phase = "ended";
        call.end = { status: null };
        this.render(call);
      }
    }
  }

  /** The client changed through this page: show it at once, before the hub says so. */
  updateClient(callId, client, otherClients) {
    const call = this.calls.get(callId);
    if (!call) return;
    call.card = { ...call.card, client, new_client: false };
    if (otherClients) call.card.other_clients = otherClients;
    this.render(call);
  }

  /** Every card showing client `id` (a client may be on two calls at once). */
  showing(id) {
    return [...this.calls.values()].filter((c) => c.card.client && c.card.client.id === id);
  }

  remove(id) {
    const call = this.calls.get(id);
    if (!call) return;
    call.node.remove();
    this.calls.delete(id);
    this.empty.hidden = this.calls.size > 0;
  }

  trim() {
    this.empty.hidden = this.calls.size > 0;
    const ended = [...this.calls.values()].filter((c) => c.phase === "ended");
    while (this.calls.size > MAX_CARDS && ended.length) this.remove(ended.shift().card.call_id);
  }

  tick() {
    for (const call of this.calls.values()) {
      if (call.phase !== "ended") field(call.node, "clock").textContent = this.elapsed(call);
    }
  }

  elapsed(call) {
    const since = Date.parse(call.at || call.card.started_at);
    return Number.isNaN(since) ? "" : formatDuration((Date.now() - since) / 1000);
  }

  render(call) {
    const { card, node } = call;
    const client = card.client;
    node.dataset.phase = call.phase;
    node.dataset.direction = card.direction;
    const dir = field(node, "direction");
    dir.textContent = DIRECTION[card.direction] || card.direction || "";
    field(node, "phase").textContent = this.phaseText(call);
    field(node, "clock").textContent = call.phase === "ended" ? "" : this.elapsed(call);
    const time = field(node, "time");
    time.textContent = formatDateTime(card.started_at);
    time.setAttribute("datetime", card.started_at || "");
    field(node, "company").textContent = card.company || "";

    // a client registered for an unknown number has no name yet: the caller ID is a start;
    // nobody to look up (no_lookup): the colleague calling, or a withheld number, at once
    const colleague = card.colleague;
    const withheld = card.no_lookup === "withheld";
    const name = (client && client.name)
      || (colleague && (colleague.name || `Extension ${colleague.extension}`))
      || card.caller_name
      || (card.pending ? "Looking up…" : withheld ? "Anonymous caller" : "Unknown caller");
    field(node, "name").textContent = name;
    const cid = card.caller_name && card.caller_name !== name ? card.caller_name : "";
    const cat = field(node, "category");
    const color = client && safeColor(client.category_color);
    show(cat, client ? client.category_label || client.category : "");
    cat.style.setProperty("--cat", color || "#64748b");
    cat.style.setProperty("--cat-ink", color ? inkFor(color) : "#ffffff");
    field(node, "new").hidden = !card.new_client;
    field(node, "number").textContent = withheld ? "Number withheld" : card.number || "anonymous";
    show(field(node, "cid"), cid ? `Caller ID: ${cid}` : "");
    show(field(node, "client-company"), client && client.company);
    show(field(node, "place"), client ? [client.city, client.country].filter(Boolean).join(", ") : "");
    const photo = field(node, "photo");
    const src = client && client.photo_url ? client.photo_url : NO_PHOTO;
    if (photo.getAttribute("src") !== src) {
      photo.onerror = () => { photo.onerror = null; photo.src = NO_PHOTO; };
      photo.src = src;
    }
    photo.alt = client ? `photo of ${client.name}` : "no photo";

    this.renderFacts(call);
    show(field(node, "notes"), client && client.notes);
    this.renderOrders(node, client ? client.orders || [] : []);
    const others = card.other_clients || [];
    show(
      field(node, "others"),
      others.length ? `This number also belongs to: ${others.map((c) => c.name).join(", ")}` : "",
    );
    const known = Boolean(client && client.id);
    const edit = node.querySelector('[data-act="edit"]');
    edit.textContent = known ? "Edit client" : "Create client";
    const nobody = Boolean(card.no_lookup) || !card.number; // no number a client could hold
    edit.hidden = !known && nobody;
    node.querySelector('[data-act="history"]').hidden = !known;
    node.querySelector('[data-act="attach"]').hidden = nobody;
    node.querySelector('[data-act="close"]').hidden = call.phase !== "ended";
  }

  phaseText(call) {
    switch (call.phase) {
      case "ringing": return "Ringing";
      case "answered": {
        // the card's extension holds the call now (after a transfer, not who answered first)
        const card = call.card;
        const by = card.extension || card.answered_by;
        if (!by || this.mine.has(by) || this.mine.size === 0) return "Talking";
        const name = by === card.extension ? card.operator_name : card.answered_by_name;
        return `Answered by ${name || by}`;
      }
      case "transferred": return `Transferred (${call.kind || "blind"})`;
      case "missed": return "Missed";
      default: {
        const end = call.end || {};
        const status = STATUS[end.status] || "";
        const talk = end.talk_s ? ` · ${formatDuration(end.talk_s)}` : "";
        return status ? `Ended · ${status}${talk}` : "Ended";
      }
    }
  }

  renderFacts(call) {
    const { card, node } = call;
    const ext = call.extension || card.extension;
    const label = { answered: "Answered at", transferred: "Transferred to", missed: "Rang at" };
    field(node, "ext-label").textContent = label[call.phase] || (card.direction === "inbound" ? "Rings at" : "Extension");
    field(node, "ext").textContent = [ext, card.operator_name].filter(Boolean).join(" · ") || "—";
    // "answered by" only when it says more than the extension line above it
    const answered = card.answered_by && card.answered_by !== ext
      ? [card.answered_by, card.answered_by_name].filter(Boolean).join(" · ")
      : "";
    show(field(node, "answered"), answered, field(node, "answered-row"));
    show(field(node, "ivr"), card.ivr_digits, field(node, "ivr-row"));
    show(field(node, "queue"), card.queue, field(node, "queue-row"));
    show(field(node, "did"), card.did, field(node, "did-row"));
  }

  renderOrders(node, orders) {
    const body = field(node, "orders");
    body.replaceChildren(
      ...orders.map((o) =>
        el("tr", {},
          el("td", { dir: "auto", text: o.number }),
          el("td", { dir: "auto", text: o.stage }),
          el("td", { dir: "auto", text: o.responsible }),
          el("td", { class: o.debt > 0 ? "num debt" : "num", text: formatDebt(o.debt) }),
        ),
      ),
    );
    field(node, "orders-box").hidden = orders.length === 0;
  }
}

function formatDebt(value) {
  if (value === null || value === undefined) return "";
  const n = Number(value) || 0;
  return n.toLocaleString([], { minimumFractionDigits: 2, maximumFractionDigits: 2 });
}
