// The live page: list a collection, then watch it from the list's
// resourceVersion over a WebSocket, as an informer does.
//
// On a dropped connection it reconnects with backoff and resumes from the last
// resourceVersion it saw, so nothing is missed or repeated; on an ERROR event
// with code 410 (the hub no longer keeps that history) it lists again.
"use strict";

// Reconnect backoff: the first retry comes quickly (a hub restart takes well
// under a second), then doubles up to a ceiling, with jitter so that many
// pages do not come back in step. A connection that delivered anything resets it.
const BACKOFF_FIRST_MS = 250;
const BACKOFF_MAX_MS = 8000;
const HUBINFO_EVERY_MS = 1000;
const LOG_LIMIT = 500;
const FLASH_MS = 1200;
const FADE_MS = 350;

const $ = (id) => document.getElementById(id);

const state = {
  collection: "",
  selector: "",
  rv: "",            // the last resourceVersion seen on the watch
  objects: new Map(), // name -> object
  rows: new Map(),    // name -> <tr>
  socket: null,
  generation: 0,      // bumped on every (re)list, so stale sockets are ignored
  backoff: BACKOFF_FIRST_MS,
  retryTimer: null,
  selected: "",
  hubInfoTimer: null,
};

// Status

function setStatus(kind, text) {
  $("status").dataset.state = kind;
  $("status-text").textContent = text;
  // While reconnecting, the table is the last state seen: say so, and dim it.
  document.body.dataset.connection = kind;
  $("offline").hidden = kind !== "reconnecting";
  $("offline-rv").textContent = state.rv || "–";
}

function showBanner(text) {
  const banner = $("banner");
  banner.textContent = text;
  banner.hidden = !text;
}

function setRv(rv) {
  state.rv = rv;
  $("watch-rv").textContent = rv || "–";
  // The hub is at least where its watch is; the poll catches up the rest.
  const hub = Number($("hub-rv").textContent);
  if (rv && (Number.isNaN(hub) || Number(rv) > hub)) $("hub-rv").textContent = rv;
}

// Listing and watching

function apiPath(collection) {
  return `/api/v1/${encodeURIComponent(collection)}`;
}

function query(params) {
  const q = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== "" && value !== undefined) q.set(key, value);
  }
  const text = q.toString();
  return text ? `?${text}` : "";
}

async function relist() {
  const generation = ++state.generation;
  closeSocket();
  clearTimeout(state.retryTimer);
  setStatus("connecting", "listing");
  let list;
  try {
    const response = await fetch(
      apiPath(state.collection) + query({ labelSelector: state.selector }),
      { cache: "no-store" },
    );
    list = await response.json();
    if (!response.ok) {
      if (generation !== state.generation) return;
      // A bad selector or collection name: say so and wait for the user.
      setStatus("error", "error");
      showBanner(list.message || `list failed with ${response.status}`);
      return;
    }
  } catch (error) {
    if (generation !== state.generation) return;
    scheduleRetry(generation, relist);
    return;
  }
  if (generation !== state.generation) return;
  showBanner("");
  replaceObjects(list.items || []);
  setRv(list.metadata.resourceVersion);
  logNote(`listed ${list.items.length} at rv ${state.rv}`);
  watch(generation);
}

function watch(generation) {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const url = `${scheme}://${location.host}/api/v1/watch/` +
    encodeURIComponent(state.collection) +
    query({
      resourceVersion: state.rv,
      allowWatchBookmarks: "true",
      labelSelector: state.selector,
    });
  const socket = new WebSocket(url);
  state.socket = socket;
  socket.onopen = () => {
    if (generation !== state.generation) return;
    socket.opened = true;
    setStatus("live", "live");
    refreshHubInfo();
  };
  socket.onmessage = (message) => {
    if (generation !== state.generation) return;
    state.backoff = BACKOFF_FIRST_MS;
    let event;
    try {
      event = JSON.parse(message.data);
    } catch (error) {
      logNote(`unreadable event: ${error}`);
      return;
    }
    apply(event, generation);
  };
  socket.onclose = (close) => {
    if (generation !== state.generation || state.socket !== socket) return;
    state.socket = null;
    // 1000: the watch ended normally (its timeout); come back at once.
    const delay = close.code === 1000 && !socket.failed ? 0 : undefined;
    // Failed attempts while the hub is away show in the status, not the log.
    if (socket.opened) {
      logNote(`connection closed (${close.code}${close.reason ? " " + close.reason : ""})`);
    }
    scheduleRetry(generation, () => watch(generation), delay);
  };
}

function scheduleRetry(generation, retry, delay) {
  const wait = delay ?? state.backoff * (0.75 + Math.random() / 2);
  state.backoff = Math.min(state.backoff * 2, BACKOFF_MAX_MS);
  setStatus("reconnecting", wait < 50 ? "reconnecting" :
    `reconnecting in ${(wait / 1000).toFixed(1)} s`);
  clearTimeout(state.retryTimer);
  state.retryTimer = setTimeout(() => {
    if (generation === state.generation) retry();
  }, wait);
}

function closeSocket() {
  const socket = state.socket;
  state.socket = null;
  if (socket) socket.close(1000);
}

// Events

function apply(event, generation) {
  const object = event.object || {};
  const meta = object.metadata || {};
  switch (event.type) {
    case "ADDED":
    case "MODIFIED":
      state.objects.set(meta.name, object);
      upsertRow(object, event.type);
      break;
    case "DELETED":
      state.objects.delete(meta.name);
      removeRow(meta.name);
      break;
    case "BOOKMARK":
      break;
    case "ERROR":
      logEvent(event);
      if (object.code === 410) {
        logNote("history expired: listing again");
        relist();
      } else {
        // The hub closes the socket after an ERROR; its close handler retries.
        showBanner(object.message || "watch error");
        if (state.socket) state.socket.failed = true;
      }
      return;
    default:
      logNote(`unknown event type ${event.type}`);
      return;
  }
  if (meta.resourceVersion) setRv(meta.resourceVersion);
  if (event.type !== "BOOKMARK") logEvent(event);
  updateCount();
}

// The table

function replaceObjects(items) {
  state.objects.clear();
  for (const row of state.rows.values()) row.remove();
  state.rows.clear();
  for (const item of items) {
    state.objects.set(item.metadata.name, item);
    upsertRow(item, null);
  }
  updateCount();
}

function upsertRow(object, type) {
  const name = object.metadata.name;
  let row = state.rows.get(name);
  if (!row) {
    row = document.createElement("tr");
    row.dataset.name = name;
    row.tabIndex = 0;
    row.addEventListener("click", () => inspect(name));
    row.addEventListener("keydown", (key) => {
      if (key.key === "Enter") inspect(name);
    });
    insertSorted(row, name);
    state.rows.set(name, row);
  }
  fillRow(row, object);
  if (type) flash(row, type);
  if (state.selected === name) inspect(name);
}

function insertSorted(row, name) {
  const body = $("objects").tBodies[0];
  for (const other of body.rows) {
    if (other.dataset.name > name) {
      body.insertBefore(row, other);
      return;
    }
  }
  body.appendChild(row);
}

function fillRow(row, object) {
  const meta = object.metadata;
  row.replaceChildren(
    cell(meta.name, "name"),
    labelsCell(meta.labels || {}),
    cell(meta.resourceVersion, "num mono"),
    cell(meta.generation ?? "", "num wide"),
    ageCell(meta.creationTimestamp),
  );
  row.dataset.rv = meta.resourceVersion;
}

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function labelsCell(labels) {
  const td = document.createElement("td");
  td.className = "labels";
  for (const [key, value] of Object.entries(labels)) {
    const chip = document.createElement("span");
    chip.className = "chip";
    chip.textContent = value === "" ? key : `${key}=${value}`;
    td.appendChild(chip);
  }
  return td;
}

function ageCell(timestamp) {
  const td = cell("", "age wide");
  if (timestamp) {
    td.dataset.since = timestamp;
    td.textContent = age(timestamp);
    td.title = timestamp;
  }
  return td;
}

function age(timestamp) {
  const seconds = Math.max(0, (Date.now() - Date.parse(timestamp)) / 1000);
  if (seconds < 60) return `${Math.floor(seconds)}s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)}h`;
  return `${Math.floor(seconds / 86400)}d`;
}

function removeRow(name) {
  const row = state.rows.get(name);
  if (!row) return;
  state.rows.delete(name);
  row.dataset.deleted = "true";
  flash(row, "DELETED");
  // The row fades out, so that a delete is seen, then leaves the table.
  setTimeout(() => row.remove(), FADE_MS);
  if (state.selected === name) closeInspector();
}

function flash(element, type) {
  const className = `flash-${type.toLowerCase()}`;
  element.classList.remove("flash-added", "flash-modified", "flash-deleted");
  // Restart the animation when the same row changes twice in a row.
  void element.offsetWidth;
  element.classList.add(className);
  clearTimeout(element.flashTimer);
  if (type !== "DELETED") {
    element.flashTimer = setTimeout(() => element.classList.remove(className), FLASH_MS);
  }
}

function updateCount() {
  const count = state.objects.size;
  $("object-count").textContent = String(count);
  $("empty").hidden = count > 0;
  $("empty").textContent = state.selector
    ? `No objects in ${state.collection} match ${state.selector}.`
    : `No objects in ${state.collection} yet.`;
  $("objects-hint").textContent = state.selector
    ? `${state.collection} · ${state.selector}`
    : state.collection;
}

// The inspector: the selected object's JSON, kept up to date.

function inspect(name) {
  const object = state.objects.get(name);
  if (!object) return;
  state.selected = name;
  for (const row of state.rows.values()) {
    row.classList.toggle("selected", row.dataset.name === name);
  }
  $("inspector").hidden = false;
  $("inspector-title").textContent = `${state.collection}/${name}`;
  $("inspector-body").textContent = JSON.stringify(object, null, 2);
}

function closeInspector() {
  state.selected = "";
  $("inspector").hidden = true;
  for (const row of state.rows.values()) row.classList.remove("selected");
}

// The event log

function logEvent(event) {
  const meta = (event.object || {}).metadata || {};
  const item = document.createElement("li");
  item.dataset.type = event.type;
  const badge = document.createElement("span");
  badge.className = `badge ${event.type.toLowerCase()}`;
  badge.textContent = event.type;
  const name = document.createElement("span");
  name.className = "what";
  name.textContent = event.type === "ERROR"
    ? `${event.object.code} ${event.object.reason}: ${event.object.message}`
    : meta.name;
  const rv = document.createElement("span");
  rv.className = "rv";
  rv.textContent = meta.resourceVersion ? `rv ${meta.resourceVersion}` : "";
  item.append(timeStamp(), badge, name, rv);
  prependLog(item);
}

function logNote(text) {
  const item = document.createElement("li");
  item.className = "note";
  const what = document.createElement("span");
  what.className = "what";
  what.textContent = text;
  item.append(timeStamp(), what);
  prependLog(item);
}

function timeStamp() {
  const time = document.createElement("time");
  const now = new Date();
  time.dateTime = now.toISOString();
  time.textContent = now.toLocaleTimeString([], { hour12: false });
  return time;
}

function prependLog(item) {
  const log = $("log");
  log.prepend(item);
  while (log.childElementCount > LOG_LIMIT) log.lastElementChild.remove();
}

// The hub's summary, polled

async function refreshHubInfo() {
  // One poll at a time: a refresh out of turn replaces the scheduled one.
  clearTimeout(state.hubInfoTimer);
  try {
    const response = await fetch("/hubinfo", { cache: "no-store" });
    if (!response.ok) throw new Error(String(response.status));
    const info = await response.json();
    const seen = Number(state.rv) || 0;
    $("hub-rv").textContent = String(Math.max(Number(info.resourceVersion), seen));
    $("watchers").textContent = String(info.watchers);
    const list = $("collections");
    list.replaceChildren(...info.collections.map((name) => {
      const option = document.createElement("option");
      option.value = name;
      return option;
    }));
    return info;
  } catch (error) {
    $("hub-rv").textContent = "–";
    $("watchers").textContent = "–";
    return null;
  } finally {
    clearTimeout(state.hubInfoTimer);
    state.hubInfoTimer = setTimeout(refreshHubInfo, HUBINFO_EVERY_MS);
  }
}

// Wiring

function readLocation() {
  const params = new URLSearchParams(location.search);
  return {
    collection: params.get("collection") || "",
    selector: params.get("labelSelector") || "",
  };
}

function choose(collection, selector) {
  state.collection = collection;
  state.selector = selector;
  $("collection").value = collection;
  $("selector").value = selector;
  closeInspector();
  const url = new URL(location.href);
  url.search = query({ collection, labelSelector: selector });
  history.replaceState(null, "", url);
  document.title = `${collection} · watchhub`;
  relist();
}

function tickAges() {
  for (const td of document.querySelectorAll("td[data-since]")) {
    td.textContent = age(td.dataset.since);
  }
}

async function main() {
  $("controls").addEventListener("submit", (submit) => {
    submit.preventDefault();
    const collection = $("collection").value.trim();
    if (!collection) return;
    choose(collection, $("selector").value.trim());
  });
  $("clear-log").addEventListener("click", () => $("log").replaceChildren());
  $("close-inspector").addEventListener("click", closeInspector);
  setInterval(tickAges, 1000);

  const wanted = readLocation();
  const info = await refreshHubInfo();
  const first = info && info.collections.length ? info.collections[0] : "pods";
  choose(wanted.collection || first, wanted.selector);
}

main();
