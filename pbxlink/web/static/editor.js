// Changing the caller's client during the call: name, category and notes (PATCH, or POST for
// a caller nobody knows yet), and "this number belongs to an existing client" (search, then
// POST …/phones, which also merges away the untouched client made for the unknown number).

import { api } from "./api.js";
import { $, el } from "./dom.js";
import { cardClient } from "./card.js";

let categories = null;

async function loadCategories(select, current) {
  if (!categories) {
    try {
      categories = (await api("/api/clients/categories")).categories;
    } catch {
      categories = [];
    }
  }
  const names = categories.map((c) => c.name);
  const options = categories.map((c) => el("option", { value: c.name, text: c.label || c.name }));
  if (current && !names.includes(current)) options.unshift(el("option", { value: current, text: current }));
  select.replaceChildren(...options);
  if (current) select.value = current;
}

function failure(error) {
  return error.field ? `${error.field}: ${error.message}` : error.message;
}

/** Open the edit form for `call`; `done(client)` gets the client in the card's shape. */
export async function editClient(call, done) {
  const dialog = $("#edit-dialog");
  const form = $("#edit-form");
  const errorBox = $("#edit-error");
  const client = call.card.client && call.card.client.id ? call.card.client : null;
  $("#edit-title").textContent = client ? "Edit client" : `New client for ${call.card.number}`;
  const known = call.card.client; // what a CRM source said may still fill the form
  form.elements.name.value = known ? known.name || call.card.caller_name : call.card.caller_name || "";
  form.elements.notes.value = known ? known.notes || "" : "";
  errorBox.textContent = "";
  await loadCategories(form.elements.category, client ? client.category : "regular");
  dialog.showModal();

  const cancel = form.querySelector('[data-act="cancel"]');
  const close = () => {
    form.onsubmit = null;
    cancel.onclick = null;
    dialog.close();
  };
  cancel.onclick = close;
  form.onsubmit = async (event) => {
    event.preventDefault();
    const body = {
      name: form.elements.name.value.trim(),
      category: form.elements.category.value,
      notes: form.elements.notes.value,
    };
    const save = form.querySelector('button[type="submit"]');
    save.disabled = true;
    errorBox.textContent = "";
    try {
      const saved = client
        ? await api(`/api/clients/${client.id}`, { method: "PATCH", body })
        : await api("/api/clients", { method: "POST", body: { ...body, phones: [call.card.number] } });
      close();
      done(cardClient(saved));
    } catch (error) {
      errorBox.textContent = failure(error);
    } finally {
      save.disabled = false;
    }
  };
}

/** Search for an existing client and give it the call's number; `done(client)` as above. */
export function attachNumber(call, done) {
  const dialog = $("#attach-dialog");
  const form = $("#attach-form");
  const results = $("#attach-results");
  const errorBox = $("#attach-error");
  $("#attach-number").textContent = call.card.number;
  form.elements.q.value = "";
  results.replaceChildren();
  errorBox.textContent = "";
  dialog.showModal();
  const cancel = form.querySelector('[data-act="cancel"]');
  const close = () => {
    form.onsubmit = null;
    cancel.onclick = null;
    dialog.close();
  };
  cancel.onclick = close;

  const attach = async (target) => {
    errorBox.textContent = "";
    try {
      const added = await api(`/api/clients/${target.id}/phones`, {
        method: "POST",
        body: { number: call.card.number },
      });
      close();
      done(cardClient(added.client));
    } catch (error) {
      errorBox.textContent = failure(error);
    }
  };

  form.onsubmit = async (event) => {
    event.preventDefault();
    errorBox.textContent = "";
    try {
      const found = await api("/api/clients", { query: { q: form.elements.q.value.trim(), limit: 10 } });
      const current = call.card.client ? call.card.client.id : null;
      const others = found.clients.filter((c) => c.id !== current);
      results.replaceChildren(
        ...others.map((c) => {
          const button = el("button", { type: "button", text: "Add the number here" });
          button.addEventListener("click", () => attach(c));
          const where = [c.company, c.city].filter(Boolean).join(", ");
          return el("li", {},
            el("span", { class: "result-name", dir: "auto", text: c.name }),
            where ? el("span", { class: "muted", dir: "auto", text: ` ${where}` }) : null,
            button);
        }),
      );
      if (!others.length) errorBox.textContent = "No client found.";
    } catch (error) {
      errorBox.textContent = failure(error);
    }
  };
}
