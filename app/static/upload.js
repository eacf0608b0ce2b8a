// The documents page: upload with progress (XHR reports upload bytes), follow the ingestion job, list and delete.
"use strict";

const keyBox = document.getElementById("api-key");
keyBox.value = localStorage.getItem("trellis-api-key") || "";
keyBox.addEventListener("change", () => localStorage.setItem("trellis-api-key", keyBox.value));

function authHeaders() {
  return keyBox.value ? { "X-API-Key": keyBox.value } : {};
}

const phase = document.getElementById("upload-phase");
const bar = document.getElementById("upload-bar");
const stages = document.getElementById("stages");

document.getElementById("upload-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const data = new FormData();
  for (const file of document.getElementById("files").files) data.append("files", file, file.name);
  data.append("kind", document.getElementById("kind").value);
  const request = new XMLHttpRequest();
  request.open("POST", "/ingest");
  for (const [key, value] of Object.entries(authHeaders())) request.setRequestHeader(key, value);
  document.getElementById("upload-progress").hidden = false;
  document.getElementById("upload").disabled = true;
  phase.textContent = "Uploading…";
  stages.textContent = "";
  request.upload.onprogress = (e) => { if (e.lengthComputable) bar.value = e.loaded / e.total; };
  request.onload = () => {
    let body = {};
    try { body = JSON.parse(request.responseText); } catch (_) { /* reported below */ }
    if (request.status !== 202 && request.status !== 200) {
      finish(`Upload refused: ${(body.error && body.error.message) || request.status}`);
      return;
    }
    follow(body.status_url);
  };
  request.onerror = () => finish("Upload failed: the server could not be reached.");
  request.send(data);
});

function finish(message) {
  phase.textContent = message;
  document.getElementById("upload").disabled = false;
  loadDocuments();
  refreshStatus();
}

async function follow(url) {
  phase.textContent = "Ingesting…";
  for (;;) {
    const response = await fetch(url);
    if (!response.ok) return finish(`Job lost: ${await errorText(response)}`);
    const job = await response.json();
    const parts = Object.entries(job.progress).map(([stage, p]) => `${stage} ${p.done}${p.total ? `/${p.total}` : ""}`);
    stages.textContent = parts.join(" · ");
    const current = Object.values(job.progress).pop();
    bar.value = current && current.total ? current.done / current.total : 0;
    if (job.state === "done") {
      const r = job.report;
      const summary = job.kind === "triples"
        ? `${r.rows} rows, ${r.relations_created} new relations`
        : `${r.ingested.length} ingested, ${r.unchanged.length} unchanged, ${r.chunks} chunks`;
      const skipped = r.skipped && r.skipped.length ? `; skipped: ${r.skipped.join("; ")}` : "";
      return finish(`Done: ${summary}${skipped}`);
    }
    if (job.state === "failed") return finish(`Failed: ${job.error}`);
    await new Promise((resolve) => setTimeout(resolve, 400));
  }
}

async function loadDocuments() {
  const body = document.getElementById("documents");
  const response = await fetch("/documents");
  if (!response.ok) {
    body.replaceChildren(el("tr", {}, el("td", { colspan: "5", class: "error" }, await errorText(response))));
    return;
  }
  const rows = await response.json();
  body.replaceChildren(...rows.map((d) => {
    const remove = el("button", { class: "plain", type: "button" }, "Delete");
    remove.addEventListener("click", () => deleteDocument(d.doc_id));
    return el("tr", {}, el("td", {}, d.title), el("td", {}, d.doc_id), el("td", {}, String(d.chunks)),
      el("td", {}, d.state), el("td", {}, remove));
  }));
}

async function deleteDocument(docId) {
  if (!confirm(`Delete ${docId} with its chunks and the facts only it supports?`)) return;
  const response = await fetch(`/documents/${encodeURIComponent(docId)}`, { method: "DELETE", headers: authHeaders() });
  if (!response.ok) alert(await errorText(response));
  loadDocuments();
  refreshStatus();
}

document.getElementById("refresh").addEventListener("click", loadDocuments);
loadDocuments();
