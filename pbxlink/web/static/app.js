// The operator page: sign in with a token, then the live cards from the popup hub, the missed
// list, supervisors' too-long alerts, and the call log. See docs/popup-protocol.md.

import { api, setUnauthorizedHandler, token } from "./api.js";
import { $, el, formatDuration, formatTime, localDay } from "./dom.js";
import { Board } from "./card.js";
import { CallLog, showHistory } from "./calllog.js";
import { attachNumber, editClient } from "./editor.js";
import { Hub } from "./hub.js";

const SOUND_KEY = "pbxlink.sound";
const MAX_LIST = 50;
const ring = new Audio("/static/ring.wav");
ring.preload = "auto";

const state = { me: null, hub: null, board: null, log: null, refresh: null };

// -- signing in and out ---------------------------------------------------------------------

async function signIn(value) {
  const me = await api("/api/me", { bearer: value });
  token.set(value);
  return me;
}

function signOut(message = "") {
  if (state.hub) state.hub.stop();
  state.hub = null;
  state.me = null;
  token.clear();
  $("#desk").hidden = true;
  $("#login").hidden = false;
  $("#logout").hidden = true;
  $("#who").textContent = "";
  $("#login-error").textContent = message;
  setConnection("offline");
  $("#token").focus();
}

function start(me) {
  state.me = me;
  $("#login").hidden = true;
  $("#desk").hidden = false;
  $("#logout").hidden = false;
  $("#who").textContent = `${me.name} · ${me.extensions.join(", ") || "no extension"} · ${me.role}`;
  $("#alerts-panel").hidden = me.role === "operator";
  setupNotifications();
  if (!state.board) {
    state.board = new Board($("#cards"), $("#card-template"), $("#no-calls"), onCardAction);
    state.log = new CallLog(openHistory);
  }
  // a supervisor sees everybody's calls: "talking" there means someone is
  state.board.mine = new Set(me.role === "operator" ? me.extensions : []);
  state.log.search();
  loadMissed(me);
  state.hub = new Hub({
    token: token.get(),
    onMessage,
    onState: setConnection,
    onTokenRefused: () => signOut("Your token is no longer valid: sign in again."),
  });
  state.hub.start();
}

// -- the hub's messages ---------------------------------------------------------------------

function onMessage(msg) {
  const board = state.board;
  switch (msg.type) {
    case "welcome": {
      if (msg.company) $("#company").textContent = msg.company;
      const live = new Set();
      for (const call of msg.calls || []) {
        live.add(call.call_id);
        board.apply(call);
      }
      board.settle(live);
      break;
    }
    case "ringing": {
      const fresh = !board.calls.has(msg.call_id) || board.calls.get(msg.call_id).phase !== "ringing";
      const call = board.apply(msg);
      if (call && fresh) alertRinging(call);
      break;
    }
    case "answered":
    case "transferred":
    case "client_updated":
      board.apply(msg);
      break;
    case "missed":
      board.apply(msg);
      addMissed(msg);
      break;
    case "ended":
      board.ended(msg);
      // at most one reload a second however many calls end (a busy wallboard)
      if (!state.refresh) {
        state.refresh = setTimeout(() => {
          state.refresh = null;
          state.log.refreshToday();
        }, 1000);
      }
      break;
    case "too_long":
      addAlert(msg);
      break;
    default:
      break; // a newer hub's message this page does not know: ignore it
  }
}

function prependLimited(list, item) {
  const placeholder = list.querySelector(".empty");
  if (placeholder) placeholder.remove();
  list.prepend(item);
  while (list.children.length > MAX_LIST) list.lastElementChild.remove();
}

function who(card) {
  return card && card.client ? card.client.name : "";
}

function addMissed(msg) {
  const card = msg.card || {};
  addMissedItem(msg.call_id, msg.at || card.started_at, card.number, who(card), msg.extension);
}

function addMissedItem(callId, at, number, name, extension) {
  const list = $("#missed");
  if (list.querySelector(`[data-call-id="${CSS.escape(callId)}"]`)) return;
  const item = el("li", { class: "missed-item", "data-call-id": callId },
    el("time", { text: formatTime(at) }),
    " ",
    el("span", { class: "num-text", dir: "ltr", text: number || "anonymous" }),
    " ",
    el("span", { dir: "auto", text: name || "" }),
    el("span", { class: "muted", text: extension ? ` · ext ${extension}` : "" }),
  );
  prependLimited(list, item);
  $("#missed-count").textContent = String(list.querySelectorAll(".missed-item").length);
}

/** Today's missed calls of my extensions from the log, so a reload does not lose them. */
async function loadMissed(me) {
  if (!me.extensions.length) return;
  try {
    const page = await api("/api/calls", {
      query: { day: localDay(), status: "missed", extension: me.extensions, limit: MAX_LIST },
    });
    for (const call of page.items.slice().reverse()) {
      const mine = (call.extensions_rung || []).filter((e) => me.extensions.includes(e));
      addMissedItem(call.call_id, call.started_at, call.caller_number, call.client_name, mine.join(", "));
    }
  } catch {
    // no call log on this server: the live list still fills as calls are missed
  }
}

function addAlert(msg) {
  const card = msg.card || {};
  const operator = [card.answered_by, card.answered_by_name].filter(Boolean).join(" ");
  const item = el("li", { class: "alert-item", "data-call-id": msg.call_id },
    el("strong", { text: formatDuration(msg.talk_s) }),
    el("span", { class: "muted", text: ` (limit ${formatDuration(msg.threshold_s)}) ` }),
    el("span", { dir: "auto", text: who(card) || card.number || "" }),
    el("span", { class: "muted", dir: "auto", text: operator ? ` · ${operator}` : "" }),
  );
  prependLimited($("#alerts"), item);
}

// -- sound and desktop notifications --------------------------------------------------------

const soundOn = () => localStorage.getItem(SOUND_KEY) !== "off";

function alertRinging(call) {
  if (soundOn()) {
    ring.currentTime = 0;
    ring.play().catch(() => {
      $("#sound").textContent = "Sound: click to allow";
    });
  }
  if ("Notification" in window && Notification.permission === "granted" && document.hidden) {
    try {
      const card = call.card;
      const n = new Notification(who(card) || card.number || "Incoming call", {
        body: `${card.number || ""} → ${call.extension || card.extension || ""}`,
        tag: card.call_id,
      });
      n.onclick = () => window.focus();
    } catch {
      // some browsers allow notifications only from a service worker: the card is enough
    }
  }
}

function setupNotifications() {
  const sound = $("#sound");
  sound.hidden = false;
  sound.textContent = soundOn() ? "Sound: on" : "Sound: off";
  sound.onclick = () => {
    localStorage.setItem(SOUND_KEY, soundOn() ? "off" : "on");
    sound.textContent = soundOn() ? "Sound: on" : "Sound: off";
    if (soundOn()) ring.play().catch(() => {}); // the click lets the page play sound later
  };
  const button = $("#notify");
  button.hidden = !("Notification" in window) || Notification.permission !== "default";
  button.onclick = async () => {
    try {
      await Notification.requestPermission();
    } finally {
      button.hidden = Notification.permission !== "default";
    }
  };
}

function setConnection(kind, detail) {
  const conn = $("#conn");
  conn.dataset.state = kind;
  const text = {
    connecting: "connecting…",
    live: "live",
    offline: "offline",
    refused: `refused: ${detail || ""}`,
  };
  if (kind === "retry") {
    const why = detail && detail.why ? ` (${detail.why})` : "";
    conn.textContent = `reconnecting in ${detail ? detail.seconds : "?"} s${why}`;
  } else {
    conn.textContent = text[kind] || kind;
  }
}

// -- card buttons ---------------------------------------------------------------------------

function clientSaved(call) {
  return (client) => {
    state.board.updateClient(call.card.call_id, client);
    for (const other of state.board.showing(client.id)) {
      state.board.updateClient(other.card.call_id, client);
    }
  };
}

function openHistory(id, name) {
  showHistory(id, name, openHistory);
}

function onCardAction(action, call) {
  if (action === "edit") editClient(call, clientSaved(call));
  else if (action === "attach") attachNumber(call, clientSaved(call));
  else if (action === "history" && call.card.client && call.card.client.id) openHistory(call.card.client.id, call.card.client.name);
}

// -- start ----------------------------------------------------------------------------------

function boot() {
  for (const dialog of document.querySelectorAll("dialog")) {
    const cancel = dialog.querySelector('[data-act="cancel"]');
    if (cancel && !cancel.closest("form")) cancel.addEventListener("click", () => dialog.close());
  }
  $("#logout").addEventListener("click", () => signOut());
  setUnauthorizedHandler(() => signOut("Your token is no longer valid: sign in again."));
  $("#login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const input = $("#token");
    $("#login-error").textContent = "";
    try {
      const me = await signIn(input.value.trim());
      input.value = "";
      start(me);
    } catch (error) {
      $("#login-error").textContent = error.status === 401 ? "Unknown token." : error.message;
    }
  });
  // `pbxlink run` without operators (the demo) prints a link with the token in the fragment,
  // which never reaches a server or its logs; take it and clean the address bar
  const fromLink = new URLSearchParams(location.hash.slice(1)).get("token");
  if (fromLink) {
    token.set(fromLink);
    history.replaceState(null, "", location.pathname + location.search);
  }
  const saved = token.get();
  if (!saved) {
    signOut();
    return;
  }
  // the server may be restarting: keep the token and try again rather than sign out
  const resume = (delay) =>
    signIn(saved)
      .then(start)
      .catch((error) => {
        if (error.status === 401) return; // the unauthorized handler signed out
        setConnection("retry", { seconds: Math.ceil(delay / 1000), why: "cannot reach pbxlink" });
        setTimeout(() => resume(Math.min(delay * 2, 30_000)), delay);
      });
  resume(1000);
}

boot();
