// hpinfer's web page: submit a file as a job, follow its page events, show each page with its regions.
// Text from results only ever reaches the DOM through textContent, or through renderMarkdown, which escapes
// everything first and then adds a few tags of its own.
"use strict";

const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
const state = { info: null, jobId: null, total: 0, pages: [], current: 0, hasMarkdown: false, stream: null };

function headers(extra = {}) {
  const key = $("api-key").value.trim();
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: headers(options.headers) });
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try { message = (await response.json()).errorMsg || message; } catch (e) { /* not JSON */ }
    throw Object.assign(new Error(message), { status: response.status });
  }
  return response;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

// ---- start-up: what the server serves ----

async function loadInfo() {
  try {
    const info = (await (await api("/web/info")).json()).result;
    state.info = info;
    const select = $("pipeline");
    select.replaceChildren(new Option(`${info.pipeline} (${info.endpoint})`, info.pipeline));
    $("server").textContent = `serving ${info.pipeline}`;
    $("file").accept = info.acceptsPdf ? "image/*,.pdf,application/pdf" : "image/*";
    const body = $("models").tBodies[0];
    body.replaceChildren(...info.models.map((m) => row([m.name, m.engine, m.precision, m.settings])));
    showError("");
  } catch (err) {
    $("server").textContent = "not connected";
    showError(`Cannot read the server's pipeline: ${err.message}` +
      (/401|API key/.test(err.message) ? "\nEnter the API key above." : ""));
  }
}

function row(cells, numeric = []) {
  const tr = document.createElement("tr");
  cells.forEach((text, i) => {
    const td = document.createElement("td");
    td.textContent = text;
    if (numeric.includes(i)) td.className = "num";
    tr.append(td);
  });
  return tr;
}

// ---- running a job ----

function readBase64(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).split(",", 2)[1] || "");
    reader.onerror = () => reject(new Error(`cannot read ${file.name}`));
    reader.readAsDataURL(file);
  });
}

async function run(event) {
  event.preventDefault();
  showError("");
  if (!state.info) await loadInfo();
  if (!state.info) return;
  const file = $("file").files[0];
  const url = $("url").value.trim();
  if (!file && !url) return showError("Choose a file or enter a URL.");
  if (state.stream) state.stream.abort();
  $("run").disabled = true;
  try {
    const body = { [state.info.fileField]: file ? await readBase64(file) : url, visualize: false, priority: "interactive" };
    const answer = await (await api("/jobs", {
      method: "POST", body: JSON.stringify(body), headers: { "Content-Type": "application/json" },
    })).json();
    startJob(answer.result.jobId, answer.result.pagesTotal);
    await follow(answer.result.jobId);
  } catch (err) {
    if (err.name !== "AbortError") showError(`Could not process the document: ${err.message}`);
  } finally {
    $("run").disabled = false;
  }
}

function startJob(jobId, total) {
  Object.assign(state, { jobId, total, pages: new Array(total).fill(null), current: 0 });
  $("job").hidden = false;
  $("download-json").disabled = true;
  $("download-md").disabled = true;
  $("download-md").hidden = true;
  $("pages").replaceChildren(...state.pages.map((_, n) => {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "pending";
    button.textContent = String(n + 1);
    button.addEventListener("click", () => showPage(n));
    return button;
  }));
  clearPage();
  setProgress(0, "queued");
}

function setProgress(done, status) {
  $("progress").textContent = `${done}/${state.total}`;
  $("progress-bar").max = state.total || 1;
  $("progress-bar").value = done;
  $("job-status").textContent = status;
}

// Server-Sent Events read with fetch, so that the API key goes in a header (EventSource can't send one).
// A stream that ends before the job (the server restarting) is picked up again after the last page seen.
async function follow(jobId) {
  for (let attempt = 0; attempt < 60; attempt++) {
    try {
      if (await followOnce(jobId)) return;
    } catch (err) {
      if (err.name === "AbortError" || (err.status >= 400 && err.status < 500)) throw err;  // not worth retrying
    }
    $("job-status").textContent = "reconnecting…";
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
  throw new Error("lost the connection to the server");
}

async function followOnce(jobId) {
  const controller = new AbortController();
  state.stream = controller;
  const seen = state.pages.map((p, n) => (p ? n : -1)).filter((n) => n >= 0 && state.pages.slice(0, n + 1).every(Boolean));
  const after = seen.length ? `?after=${seen[seen.length - 1]}` : "";
  const response = await api(`/jobs/${jobId}/events${after}`, { signal: controller.signal });
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const fields = {};
      for (const line of block.split("\n")) {
        const colon = line.indexOf(":");
        if (colon > 0) fields[line.slice(0, colon)] = line.slice(colon + 1).trimStart();
      }
      if (fields.event === "page") await onPage(jobId, JSON.parse(fields.data));
      if (fields.event === "end") { onEnd(JSON.parse(fields.data)); return true; }
    }
  }
  return false;
}

async function onPage(jobId, event) {
  if (jobId !== state.jobId) return;
  const page = (await (await api(`/jobs/${jobId}/pages/${event.page}`)).json()).result;
  state.pages[event.page] = page;
  if (page.result && page.result.markdown) state.hasMarkdown = true;
  const button = $("pages").children[event.page];
  button.classList.remove("pending");
  if (page.error) button.classList.add("failed");
  setProgress(event.pagesDone, "running");
  if (event.page === state.current) await showPage(event.page);
}

function onEnd(event) {
  setProgress(event.pagesDone, event.status);
  $("download-json").disabled = false;
  $("download-md").hidden = !state.hasMarkdown;
  $("download-md").disabled = !state.hasMarkdown;
  if (event.status === "failed") showError(`The job failed: ${event.error}`);
}

// ---- one page ----

function clearPage() {
  $("page-image").removeAttribute("src");
  $("boxes").replaceChildren();
  $("texts").replaceChildren();
  $("markdown").replaceChildren();
  $("timings").replaceChildren();
  $("page-error").hidden = true;
}

async function showPage(n) {
  state.current = n;
  [...$("pages").children].forEach((b, i) => b.classList.toggle("current", i === n));
  const page = state.pages[n];
  clearPage();
  if (!page) return;
  if (page.error) {
    $("page-error").textContent = `Page ${n + 1} could not be processed: ${page.error}`;
    $("page-error").hidden = false;
  }
  if (page.width) {
    const blob = await (await api(`/jobs/${state.jobId}/pages/${n}/image`)).blob();
    const old = $("page-image").src;
    $("page-image").src = URL.createObjectURL(blob);
    if (old.startsWith("blob:")) URL.revokeObjectURL(old);
  }
  const regions = regionsOf(page.result.prunedResult || {});
  drawRegions(regions, page.width || 1, page.height || 1);
  $("texts").replaceChildren(...regions.filter((r) => r.text).map((r) => {
    const li = document.createElement("li");
    li.textContent = r.text;
    li.addEventListener("mouseenter", () => r.shape && r.shape.classList.add("hover"));
    li.addEventListener("mouseleave", () => r.shape && r.shape.classList.remove("hover"));
    r.item = li;
    return li;
  }));
  const markdown = page.result.markdown;
  if (markdown) $("markdown").replaceChildren(renderMarkdown(markdown.text, markdown.images || {}));
  else $("markdown").textContent = "(this pipeline makes no Markdown)";
  const t = page.timings || {};
  const ms = (seconds) => `${(seconds * 1000).toFixed(1)} ms`;
  $("timings").replaceChildren(
    ...["wait", "read", "infer", "encode", "total"].filter((k) => k in t).map((k) => row([k, ms(t[k])], [1])),
    ...Object.entries(t.stages || {}).map(([stage, seconds]) => row([`· ${stage}`, ms(seconds)], [1])));
}

// Regions in page pixels: layout blocks (box + label + text) or OCR lines (polygon + text).
function regionsOf(pruned) {
  if (Array.isArray(pruned.blocks)) {
    return pruned.blocks.map((b) => {
      const [x1, y1, x2, y2] = b.box;
      return { points: [[x1, y1], [x2, y1], [x2, y2], [x1, y2]], label: b.label, text: b.text || "", kind: "region" };
    });
  }
  const polys = pruned.rec_polys || [];
  return polys.map((points, i) => ({ points, label: "", text: (pruned.rec_texts || [])[i] || "", kind: "text" }));
}

function drawRegions(regions, width, height) {
  const svg = $("boxes");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("preserveAspectRatio", "none");
  for (const region of regions) {
    const shape = document.createElementNS(SVG, "polygon");
    shape.setAttribute("points", region.points.map((p) => p.join(",")).join(" "));
    shape.setAttribute("class", region.kind);
    shape.addEventListener("mouseenter", (e) => showTip(region, e));
    shape.addEventListener("mousemove", (e) => showTip(region, e));
    shape.addEventListener("mouseleave", () => { $("tip").hidden = true; if (region.item) region.item.classList.remove("hover"); });
    region.shape = shape;
    svg.append(shape);
  }
}

function showTip(region, event) {
  const tip = $("tip");
  tip.textContent = region.label ? `${region.label}: ${region.text || "(no text)"}` : region.text;
  const frame = $("viewer").getBoundingClientRect();
  tip.style.left = `${event.clientX - frame.left + 12}px`;
  tip.style.top = `${event.clientY - frame.top + 12}px`;
  tip.hidden = false;
  if (region.item) region.item.classList.add("hover");
}

// ---- Markdown: escape first, then a few block and inline forms (what hpinfer's Markdown uses) ----

function escapeHtml(text) {
  return text.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

function inline(text) {
  return escapeHtml(text)
    .replace(/\*\*(.+?)\*\*/g, "<strong>$1</strong>")
    .replace(/\\([\\`*_{}[\]()#+=\-.!|])/g, "$1")
    .replace(/\n/g, "<br>");
}

// A recognised table's HTML, rebuilt from its text alone: only table, thead, tbody, tr and td with numeric
// rowspan/colspan survive; the parser's document is inert (nothing in it loads or runs).
function safeTable(html) {
  const source = new DOMParser().parseFromString(html, "text/html").querySelector("table");
  const rebuild = (node) => [...node.children].map((child) => {
    const tag = child.tagName.toLowerCase();
    if (tag === "td") {
      const spans = ["rowspan", "colspan"].filter((a) => /^\d{1,3}$/.test(child.getAttribute(a) || ""))
        .map((a) => ` ${a}="${child.getAttribute(a)}"`).join("");
      return `<td${spans}>${escapeHtml(child.textContent)}</td>`;
    }
    return ["thead", "tbody", "tr"].includes(tag) ? `<${tag}>${rebuild(child)}</${tag}>` : "";
  }).join("");
  return source ? `<table class="md-table">${rebuild(source)}</table>` : `<p>${escapeHtml(html)}</p>`;
}

function renderMarkdown(text, images) {
  const out = [];
  for (const raw of text.split(/\n{2,}/)) {
    const block = raw.trim();
    if (!block) continue;
    const comment = /^<!--([\s\S]*)-->$/.exec(block);
    const heading = /^(#{1,6})\s+([\s\S]*)$/.exec(block);
    const image = /^!\[([^\]]*)\]\(([^)\s]+)\)$/.exec(block);
    if (/^<table>[\s\S]*<\/table>$/.test(block)) {
      out.push(safeTable(block));
    } else if (comment) {
      out.push(`<p class="md-note">${escapeHtml(comment[1].trim())}</p>`);
    } else if (heading) {
      out.push(`<h${heading[1].length + 1}>${inline(heading[2])}</h${heading[1].length + 1}>`);
    } else if (image) {
      const data = images[image[2]];
      out.push(typeof data === "string" && /^[A-Za-z0-9+/=]+$/.test(data)
        ? `<p><img alt="${escapeHtml(image[1])}" src="data:image/jpeg;base64,${data}"></p>`
        : `<p class="md-note">[${escapeHtml(image[1])}: ${escapeHtml(image[2])}]</p>`);
    } else {
      out.push(`<p>${inline(block)}</p>`);
    }
  }
  const template = document.createElement("template");
  template.innerHTML = out.join("\n");
  return template.content;
}

// ---- downloads ----

async function download(format) {
  try {
    const response = await api(`/jobs/${state.jobId}/result${format === "markdown" ? "?format=markdown" : ""}`);
    const link = document.createElement("a");
    link.href = URL.createObjectURL(await response.blob());
    link.download = `${state.jobId}.${format === "markdown" ? "md" : "json"}`;
    link.click();
    setTimeout(() => URL.revokeObjectURL(link.href), 1000);
  } catch (err) {
    showError(`Download failed: ${err.message}`);
  }
}

window.addEventListener("DOMContentLoaded", () => {
  $("api-key").value = sessionStorage.getItem("hpinfer-api-key") || "";
  $("api-key").addEventListener("change", () => { sessionStorage.setItem("hpinfer-api-key", $("api-key").value.trim()); loadInfo(); });
  $("run-form").addEventListener("submit", run);
  $("download-json").addEventListener("click", () => download("json"));
  $("download-md").addEventListener("click", () => download("markdown"));
  loadInfo();
});
