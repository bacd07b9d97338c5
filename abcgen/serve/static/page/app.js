// The abcgen page: write, hear, read, edit, vary, download and keep tunes.
// Every piece of tune text reaches the page through textContent or an input's value (never
// as HTML); notation comes from abcjs, or, without it, as images of the server's SVG.
"use strict";

const $ = (id) => document.getElementById(id);
const page = {
  info: null, settings: null, savedId: null, job: null, controller: null,
  visual: null, bars: [], selection: null, audio: null, source: null, timing: null, context: null,
  checkTimer: null, liveTimer: null,
};
window.abcgenTimes = {};  // for bench/serve.py and the browser test

function hasAbcjs() { return typeof window.ABCJS !== "undefined"; }

function say(message, isError) {
  $("status").textContent = message;
  $("status").className = isError ? "error" : "";
}

async function api(path, body, method) {
  const options = { method: method || (body === undefined ? "GET" : "POST"), headers: {} };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(path, options);
  if (!response.ok) {
    let message = response.status + " " + response.statusText;
    try { message = (await response.json()).error || message; } catch (error) { /* not JSON */ }
    throw new Error(message);
  }
  return response;
}

// ---------------------------------------------------------------- start

async function start() {
  try {
    page.info = await (await api("/api/info")).json();
  } catch (error) {
    say("cannot reach the abcgen server: " + error.message, true);
    return;
  }
  $("model").textContent = "model: " + page.info.model;
  fillChoices($("meter"), page.info.meters);
  fillChoices($("keys"), page.info.keys);
  $("pdf-button").hidden = !page.info.pdf;
  if (!hasAbcjs()) {
    const notice = $("notice");
    notice.hidden = false;
    notice.textContent = "abcjs is not installed (run `npm ci` in abcgen/serve/static, or start `abcgen serve` "
      + "where npm is available): notation is engraved by the server, and playback in the page is off; "
      + "download the MIDI to hear a tune.";
  }
  $("temperature").addEventListener("input", () => { $("temperature-shown").textContent = $("temperature").value; });
  $("tempo").addEventListener("input", () => { $("tempo-shown").textContent = $("tempo").value; });
  $("write-form").addEventListener("submit", (event) => { event.preventDefault(); write(); });
  $("stop").addEventListener("click", stopWriting);
  $("abc").addEventListener("input", () => scheduleRefresh(300));
  $("abc").addEventListener("click", selectFromCursor);
  $("abc").addEventListener("keyup", selectFromCursor);
  $("play").addEventListener("click", play);
  $("stop-play").addEventListener("click", stopPlaying);
  $("vary-bar").addEventListener("click", () => vary("bar"));
  $("vary-part").addEventListener("click", () => vary("part"));
  for (const button of $("downloads").querySelectorAll("button[data-format]")) {
    button.addEventListener("click", () => download(button.dataset.format));
  }
  $("wav-button").addEventListener("click", downloadWav);
  $("save-form").addEventListener("submit", (event) => { event.preventDefault(); save(); });
  $("update").addEventListener("click", update);
  let searchTimer = null;
  $("search").addEventListener("input", () => { clearTimeout(searchTimer); searchTimer = setTimeout(loadLibrary, 250); });
  await loadLibrary();
  document.body.dataset.state = "ready";
  say("ready");
}

function fillChoices(select, values) {
  for (const value of values || []) {
    const option = document.createElement("option");
    option.value = value;
    option.textContent = value;
    select.appendChild(option);
  }
}

// ---------------------------------------------------------------- write

async function write() {
  stopPlaying();
  const seed = $("seed").value.trim();
  const request = {
    meter: $("meter").value, key: $("key").value, structure: $("structure").value,
    temperature: Number($("temperature").value), title: $("title").value, prime: $("prime").value,
    seed: seed === "" ? null : Number(seed),
  };
  page.controller = new AbortController();
  const started = performance.now();
  window.abcgenTimes = { clicked: started };
  document.body.dataset.state = "writing";
  $("write").disabled = true;
  $("stop").disabled = false;
  $("live").textContent = "";
  say("writing...");
  let response;
  try {
    response = await fetch("/api/write", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify(request), signal: page.controller.signal,
    });
    if (!response.ok) throw new Error((await response.json()).error || response.statusText);
    await readLines(response, (message) => onWriteMessage(message, started));
  } catch (error) {
    if (error.name !== "AbortError") say(error.message, true);
    else say("stopped");
    document.body.dataset.state = "ready";
  } finally {
    $("write").disabled = false;
    $("stop").disabled = true;
    page.job = null;
  }
}

async function readLines(response, handle) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let pending = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    pending += decoder.decode(value, { stream: true });
    let end;
    while ((end = pending.indexOf("\n")) >= 0) {
      const text = pending.slice(0, end);
      pending = pending.slice(end + 1);
      if (text.trim()) handle(JSON.parse(text));
    }
  }
}

function onWriteMessage(message, started) {
  if (message.type === "start") {
    page.job = message.job;
  } else if (message.type === "progress") {
    const text = message.texts[0] || "";
    $("live").textContent = text;
    const body = text.split(/\nK:[^\n]*\n/)[1];
    if (body && /[A-Ga-g]/.test(body) && !window.abcgenTimes.firstNotes) {
      window.abcgenTimes.firstNotes = performance.now() - started;
    }
    if (body && hasAbcjs() && !page.liveTimer) {  // the notation follows the writing
      page.liveTimer = setTimeout(() => {
        page.liveTimer = null;
        if (page.job) renderNotation($("live").textContent, true);
      }, 150);
    }
  } else if (message.type === "done") {
    clearTimeout(page.liveTimer);  // no late render of the partial text over the finished tune
    page.liveTimer = null;
    page.settings = message.settings;
    page.savedId = null;
    $("update").hidden = true;
    $("abc").value = message.tunes[0];
    window.abcgenTimes.finished = performance.now() - started;
    showCheck(message.checks[0]);
    refresh().then(() => {
      window.abcgenTimes.playable = performance.now() - started;
      document.body.dataset.state = "ready";
    });
    const notes = (message.messages || []).join("; ");
    say("written (seed " + message.settings.seed + ")" + (notes ? ": " + notes : ""));
  } else if (message.type === "cancelled") {
    say("stopped");
    document.body.dataset.state = "ready";
  } else if (message.type === "error") {
    say(message.error, true);
    document.body.dataset.state = "ready";
  }
}

async function stopWriting() {
  if (page.job) {
    try { await api("/api/jobs/" + encodeURIComponent(page.job) + "/cancel", {}); } catch (error) { /* finished */ }
  }
  if (page.controller) page.controller.abort();
}

// ---------------------------------------------------------------- read and check

function scheduleRefresh(delay) {
  clearTimeout(page.checkTimer);
  page.checkTimer = setTimeout(refresh, delay);
}

async function refresh() {
  const abc = $("abc").value;
  const hasTune = abc.trim() !== "";
  $("save").disabled = !hasTune;
  if (!hasTune) return;
  renderNotation(abc, false);
  try {
    showCheck(await (await api("/api/check", { abc })).json());
  } catch (error) {
    $("check").textContent = error.message;
    $("check").className = "bad";
  }
}

function renderNotation(abc, live) {
  if (!hasAbcjs()) {
    if (!live) engraveOnServer(abc);
    return;
  }
  const rendered = ABCJS.renderAbc("notation", abc, {
    add_classes: true, responsive: "resize", clickListener: live ? undefined : onNoteClick,
  });
  if (!live) {
    page.visual = rendered[0];
    page.audio = null;
    $("play").disabled = !page.visual;
    $("wav-button").disabled = true;
  }
}

async function engraveOnServer(abc) {
  try {
    const { pages } = await (await api("/api/engrave", { abc })).json();
    const holder = $("notation");
    holder.textContent = "";
    for (const svg of pages) {  // as images: the SVG cannot run scripts in the page
      const image = document.createElement("img");
      image.alt = "notation";
      image.src = URL.createObjectURL(new Blob([svg], { type: "image/svg+xml" }));
      holder.appendChild(image);
    }
  } catch (error) {
    $("notation").textContent = "cannot engrave: " + error.message;
  }
}

// Colour the notes of a stretch of the text in the notation (abcjs's own editor does the same).
function markInNotation(start, end) {
  const engraver = page.visual && page.visual.engraver;
  if (engraver && typeof engraver.rangeHighlight === "function") engraver.rangeHighlight(start, end);
}

function showCheck(result) {
  page.bars = result.bars || [];
  const box = $("check");
  box.textContent = "";
  if (result.ok) {
    box.className = "ok";
    box.textContent = "The ABC check passes: " + page.bars.length + " bars.";
  } else {
    box.className = "bad";
    box.appendChild(document.createTextNode(result.reason || "the check fails"));
    if (result.bar && result.bar.start !== null) {
      markInNotation(result.bar.start, result.bar.end);
      const link = document.createElement("button");
      link.type = "button";
      link.textContent = "show bar " + result.bar.number;
      link.addEventListener("click", () => {
        $("abc").focus();
        $("abc").setSelectionRange(result.bar.start, result.bar.end);
      });
      box.appendChild(document.createTextNode(" "));
      box.appendChild(link);
    }
  }
  if (page.selection !== null && page.selection >= page.bars.length) selectBar(null);
}

// ---------------------------------------------------------------- select and vary

function barAt(offset) {
  let found = null;
  for (const bar of page.bars) {
    if (bar.start <= offset) found = bar;
  }
  return found;
}

function onNoteClick(element) {
  if (!element || typeof element.startChar !== "number") return;
  const bar = barAt(element.startChar);
  selectBar(bar);
  if (bar) {  // the whole bar, marked in the editor and the notation
    $("abc").setSelectionRange(bar.start, bar.end);
    markInNotation(bar.start, bar.end);
  }
}

function selectFromCursor() {
  const bar = barAt($("abc").selectionStart);
  if (bar && $("abc").selectionStart <= bar.end + 2) selectBar(bar);
}

function selectBar(bar) {
  page.selection = bar ? bar.index : null;
  $("selection").textContent = bar ? "bar " + (bar.index + 1) + " (part " + (bar.part + 1) + ") selected" : "no bar selected";
  $("vary-bar").disabled = $("vary-part").disabled = !bar;
}

async function vary(kind) {
  if (page.selection === null) return;
  const bar = page.bars[page.selection];
  let first = bar.index, last = bar.index;
  if (kind === "part") {
    const part = page.bars.filter((each) => each.part === bar.part);
    first = part[0].index;
    last = part[part.length - 1].index;
  }
  $("candidates").textContent = "";
  document.body.dataset.state = "varying";
  say("writing alternatives for bars " + (first + 1) + "-" + (last + 1) + "...");
  try {
    const result = await (await api("/api/vary", {
      abc: $("abc").value, first, last, temperature: Number($("temperature").value),
    })).json();
    showCandidates(result);
    say(result.candidates.length ? result.candidates.length + " alternatives, most fitting first" : "no alternative passed the check; try again");
  } catch (error) {
    say(error.message, true);
  }
  document.body.dataset.state = "ready";
}

function showCandidates(result) {
  const list = $("candidates");
  result.candidates.forEach((candidate, number) => {
    const item = document.createElement("li");
    const text = document.createElement("pre");
    text.textContent = candidate.stretch;
    const score = document.createElement("span");
    score.className = "muted";
    score.textContent = "fit " + candidate.score.toFixed(3) + " (original " + result.original_score.toFixed(3) + ")";
    const notation = document.createElement("div");
    notation.id = "candidate-" + number;
    const use = document.createElement("button");
    use.type = "button";
    use.textContent = "Use this";
    use.className = "use-candidate";
    use.addEventListener("click", () => {
      $("abc").value = candidate.abc;
      $("candidates").textContent = "";
      refresh();
    });
    item.append(text, score, notation, use);
    list.appendChild(item);
    if (hasAbcjs()) ABCJS.renderAbc(notation.id, candidate.abc, { scale: 0.6, staffwidth: 500 });
  });
}

// ---------------------------------------------------------------- hear

async function renderAudio() {
  const bpm = Number($("tempo").value);
  const key = [bpm, $("chords").checked, $("instrument").value, $("abc").value].join("|");
  if (page.audio && page.audio.key === key) return page.audio;
  const started = performance.now();
  const music = AbcgenSynth.notesFrom(page.visual, bpm, $("chords").checked);
  const buffer = await AbcgenSynth.render(music, $("instrument").value);
  page.audio = { key, buffer, bpm, stats: AbcgenSynth.stats(buffer) };
  page.audio.stats.renderMs = performance.now() - started;
  window.abcgenAudio = page.audio.stats;
  const stats = page.audio.stats;
  $("audio-info").textContent = stats.seconds.toFixed(1) + " s of sound";
  $("wav-button").disabled = false;
  return page.audio;
}

async function play() {
  if (!page.visual) return;
  stopPlaying();
  say("preparing the sound...");
  const audio = await renderAudio();
  page.context = page.context || new AudioContext();
  await page.context.resume();
  const source = page.context.createBufferSource();
  source.buffer = audio.buffer;
  source.loop = $("loop").checked;
  source.connect(page.context.destination);
  page.timing = new ABCJS.TimingCallbacks(page.visual, {
    qpm: audio.bpm,
    eventCallback: (event) => {
      for (const old of document.querySelectorAll("#notation .abcjs-note_playing")) old.classList.remove("abcjs-note_playing");
      if (!event) {  // the end of the tune
        if (source.loop && page.timing) page.timing.start(0);
        return;
      }
      for (const item of event.elements || []) {  // elements, or lists of them (one per voice)
        for (const element of (Array.isArray(item) ? item : [item])) element.classList.add("abcjs-note_playing");
      }
    },
  });
  source.onended = () => { if (page.source === source) stopPlaying(); };
  source.start();
  page.timing.start();
  page.source = source;
  $("stop-play").disabled = false;
  document.body.dataset.playing = "yes";
  say("playing");
}

function stopPlaying() {
  if (page.source) {
    const source = page.source;
    page.source = null;
    try { source.stop(); } catch (error) { /* already stopped */ }
  }
  if (page.timing) { page.timing.stop(); page.timing = null; }
  for (const old of document.querySelectorAll(".abcjs-note_playing")) old.classList.remove("abcjs-note_playing");
  $("stop-play").disabled = true;
  if (document.body.dataset.playing) say("stopped");
  delete document.body.dataset.playing;
}

async function downloadWav() {
  if (!page.visual) return;
  const audio = await renderAudio();
  saveBlob(AbcgenSynth.wav(audio.buffer), fileStem() + ".wav");
}

// ---------------------------------------------------------------- download

function fileStem() {
  const title = ($("abc").value.match(/^T:(.*)$/m) || [null, "tune"])[1];
  return title.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "") || "tune";
}

function saveBlob(blob, name) {
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = name;
  document.body.appendChild(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10000);
}

async function download(format) {
  say("preparing " + format + "...");
  try {
    const response = await api("/api/export/" + format, { abc: $("abc").value, chords: $("chords").checked });
    const disposition = response.headers.get("Content-Disposition") || "";
    const name = (disposition.match(/filename="([^"]+)"/) || [null, fileStem() + "." + format])[1];
    saveBlob(await response.blob(), name);
    say("downloaded " + name);
  } catch (error) {
    say(error.message, true);
  }
}

// ---------------------------------------------------------------- keep

async function save() {
  try {
    const tune = await (await api("/api/tunes", {
      abc: $("abc").value, settings: page.settings || {}, rating: Number($("rating").value), notes: $("notes").value,
    })).json();
    page.savedId = tune.id;
    $("update").hidden = false;
    say("saved as tune " + tune.id);
    await loadLibrary();
  } catch (error) {
    say(error.message, true);
  }
}

async function update() {
  if (page.savedId === null) return;
  try {
    await api("/api/tunes/" + page.savedId, {
      abc: $("abc").value, rating: Number($("rating").value), notes: $("notes").value,
    }, "PATCH");
    say("saved the changes to tune " + page.savedId);
    await loadLibrary();
  } catch (error) {
    say(error.message, true);
  }
}

async function loadLibrary() {
  const query = $("search").value;
  const { tunes } = await (await api("/api/tunes?q=" + encodeURIComponent(query))).json();
  const list = $("library");
  list.textContent = "";
  for (const tune of tunes) {
    const item = document.createElement("li");
    const title = document.createElement("span");
    title.className = "title";
    title.textContent = tune.title;
    const facts = document.createElement("span");
    facts.className = "muted";
    facts.textContent = "★".repeat(tune.rating) + " " + tune.created.slice(0, 16).replace("T", " ");
    const open = document.createElement("button");
    open.type = "button";
    open.textContent = "Open";
    open.addEventListener("click", () => openTune(tune.id));
    const remove = document.createElement("button");
    remove.type = "button";
    remove.textContent = "Delete";
    remove.addEventListener("click", async () => {
      if (!confirm("Delete this tune from the library?")) return;
      await api("/api/tunes/" + tune.id, undefined, "DELETE");
      await loadLibrary();
    });
    item.append(title, facts, open, remove);
    list.appendChild(item);
  }
  if (!tunes.length) {
    const item = document.createElement("li");
    item.className = "muted";
    item.textContent = query ? "no title matches" : "no tunes kept yet";
    list.appendChild(item);
  }
}

async function openTune(id) {
  const tune = await (await api("/api/tunes/" + id)).json();
  stopPlaying();
  page.savedId = tune.id;
  page.settings = tune.settings;
  $("abc").value = tune.abc;
  $("rating").value = String(tune.rating);
  $("notes").value = tune.notes;
  $("update").hidden = false;
  await refresh();
  say("opened tune " + tune.id);
}

document.addEventListener("DOMContentLoaded", start);
