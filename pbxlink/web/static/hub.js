// The popup websocket (docs/popup-protocol.md). A browser cannot put a header on a
// websocket, so the token goes in the first message, `hello`. The connection comes back by
// itself after any drop, with a growing, jittered delay so a restarted daemon is not hit by
// every operator's page in the same millisecond.

import { api } from "./api.js";

const PROTOCOL = 1;
const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 30_000;
const WELCOME_MS = 10_000; // no welcome this long after hello: the hub is stuck, try again
// close codes after which retrying with the same token cannot help
const TOKEN_REFUSED = new Set([4001, 4002]);

export class Hub {
  /**
   * onMessage(msg) for every server message; onState(state, detail) with state one of
   * "connecting", "live", "retry" (detail: seconds), "refused" (detail: why), "offline".
   */
  constructor({ token, onMessage, onState, onTokenRefused }) {
    this.token = token;
    this.onMessage = onMessage;
    this.onState = onState;
    this.onTokenRefused = onTokenRefused;
    this.socket = null;
    this.failures = 0;
    this.timer = null;
    this.stopped = false;
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.socket) this.socket.close(1000, "bye");
    this.socket = null;
    this.onState("offline");
  }

  async connect() {
    clearTimeout(this.timer);
    if (this.stopped) return;
    this.onState("connecting");
    let where;
    try {
      where = await api("/api/hub", { bearer: this.token });
    } catch (error) {
      if (error.status === 401) return; // api() already sent the page back to sign-in
      this.retry(error.status === 404 ? "popups are not set up on this server" : error.message);
      return;
    }
    if (this.stopped) return;
    let socket;
    try {
      socket = new WebSocket(where.url);
    } catch (error) {
      this.retry(`bad hub URL ${where.url}: ${error.message}`);
      return;
    }
    this.socket = socket;
    let welcomed = false;
    socket.addEventListener("open", () => {
      socket.send(JSON.stringify({ type: "hello", v: PROTOCOL, token: this.token }));
      this.timer = setTimeout(() => welcomed || socket.close(4000, "no welcome"), WELCOME_MS);
    });
    socket.addEventListener("message", (event) => {
      let msg;
      try {
        msg = JSON.parse(event.data);
      } catch {
        return; // the hub never sends non-JSON; ignore rather than die
      }
      if (msg.type === "welcome") {
        welcomed = true;
        this.failures = 0;
        clearTimeout(this.timer);
        this.onState("live");
      }
      this.onMessage(msg);
    });
    socket.addEventListener("close", (event) => {
      if (this.socket !== socket) return; // replaced or stopped
      this.socket = null;
      clearTimeout(this.timer);
      if (this.stopped) return;
      if (TOKEN_REFUSED.has(event.code)) {
        this.onState("refused", "your token is no longer valid");
        this.onTokenRefused();
        return;
      }
      if (event.code === 4003) {
        this.onState("refused", "this page's address is not allowed by the hub ([hub] origins)");
        return;
      }
      if (event.code === 4400 || event.code === 1009) {
        console.error(`pbxlink hub closed the connection: ${event.code} ${event.reason}`);
      }
      this.retry(event.code === 4008 ? "this tab fell behind" : "");
    });
  }

  retry(why = "") {
    if (this.stopped) return;
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** this.failures);
    const delay = Math.round(base * (0.8 + Math.random() * 0.4));
    this.failures += 1;
    this.onState("retry", { seconds: Math.ceil(delay / 1000), why });
    this.timer = setTimeout(() => this.connect(), delay);
  }
}
