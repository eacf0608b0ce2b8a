// Shared by the chat and upload pages: element helpers, error text, and the status line.
"use strict";

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value; else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);  // strings become text, never markup
  }
  return node;
}

async function errorText(response) {
  try {
    const body = await response.json();
    return (body.error && body.error.message) || response.statusText;
  } catch (_) {
    return `${response.status} ${response.statusText}`;
  }
}

async function refreshStatus() {
  const target = document.getElementById("status");
  try {
    const response = await fetch("/status");
    if (!response.ok) throw new Error(await errorText(response));
    const s = await response.json();
    target.textContent = `${s.entities.toLocaleString()} entities · ${s.relations.toLocaleString()} relations · ` +
      `${s.documents.toLocaleString()} documents · ${s.backend}`;
  } catch (error) {
    target.textContent = `status unavailable: ${error.message}`;
  }
}

refreshStatus();
