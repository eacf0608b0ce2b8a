// The chat page: POST /chat and read its Server-Sent Events (fetch, since EventSource cannot POST).
"use strict";

const conversation = document.getElementById("conversation");
const form = document.getElementById("ask-form");
const questionBox = document.getElementById("question");
const sendButton = document.getElementById("send");
let threadId = sessionStorage.getItem("trellis-thread");

document.getElementById("new-thread").addEventListener("click", () => {
  threadId = null;
  sessionStorage.removeItem("trellis-thread");
  conversation.replaceChildren();
  questionBox.focus();
});

questionBox.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) {
    event.preventDefault();
    form.requestSubmit();
  }
});

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const question = questionBox.value.trim();
  if (!question) return;
  questionBox.value = "";
  sendButton.disabled = true;
  try {
    await ask(question);
  } finally {
    sendButton.disabled = false;
    questionBox.focus();
  }
});

async function* serverEvents(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) name = line.slice(7);
        else if (line.startsWith("data: ")) data.push(line.slice(6));
      }
      yield { name, data: data.length ? JSON.parse(data.join("\n")) : null };
    }
  }
}

async function ask(question) {
  const text = el("div", { class: "answer-text" });
  const answer = el("div", { class: "answer streaming" }, text);
  const turn = el("div", { class: "turn" }, el("div", { class: "question" }, question), answer);
  conversation.append(turn);
  turn.scrollIntoView({ block: "end" });
  try {
    const response = await fetch("/chat", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ message: question, thread_id: threadId }),
    });
    if (!response.ok) throw new Error(await errorText(response));
    for await (const event of serverEvents(response)) {
      if (event.name === "thread") {
        threadId = event.data.thread_id;
        sessionStorage.setItem("trellis-thread", threadId);
      } else if (event.name === "token") {
        text.textContent += event.data.text;
      } else if (event.name === "retract") {
        text.textContent = "";
      } else if (event.name === "done") {
        showResult(answer, text, event.data);
      } else if (event.name === "error") {
        throw new Error(event.data.error.message);
      }
    }
  } catch (error) {
    answer.append(el("div", { class: "error" }, `Error: ${error.message}`));
  } finally {
    answer.classList.remove("streaming");
    turn.scrollIntoView({ block: "end" });
  }
}

// The cited sentence, with the answer marked where the citation says it stands.
function highlighted(citation, answer) {
  const sentence = citation.sentence;
  if (!citation.answer_here || citation.answer_start == null) return [sentence];
  const at = citation.answer_start - citation.sentence_start;
  const end = citation.answer_end - citation.sentence_start;
  if (at < 0 || end > sentence.length || sentence.slice(at, end) !== answer) return [sentence];
  return [sentence.slice(0, at), el("mark", {}, sentence.slice(at, end)), sentence.slice(end)];
}

function showResult(answer, text, result) {
  text.textContent = result.answer || "(no answer)";
  const source = result.source || "none";
  const label = { graph: "knowledge graph", context: "documents", parameters: "model memory" }[source] || source;
  answer.querySelector(".badge")?.remove();
  text.after(el("span", { class: `badge ${source}`, "data-source": source }, label));
  const meta = el("div", { class: "meta" });
  if (result.answers && result.answers.length > 1) {
    meta.append(el("div", {}, `Also: ${result.answers.slice(1, 8).join(", ")}${result.answers.length > 8 ? " …" : ""}`));
  }
  if (result.path_details && result.path_details.length) {
    meta.append(el("h3", {}, "Graph paths"));
    meta.append(el("ul", {}, ...result.path_details.map((p) => el("li", { class: "path" }, p.text))));
  }
  if (result.free_text) {
    meta.append(el("div", { class: "free-text" }, "Written freely from the evidence (an explanation), not a span of it."));
  }
  if (result.citations && result.citations.length) {
    meta.append(el("h3", {}, "Citations"));
    meta.append(el("ul", {}, ...result.citations.map((c) => el("li", { class: c.answer_here ? "citation answer-source" : "citation" },
      `${c.title || c.doc_id}`, el("span", {}, ` (${c.chunk_id}${c.page ? `, p. ${c.page}` : ""})`),
      ...(c.sentence ? [el("div", { class: "sentence" }, ...highlighted(c, result.answer))] : [])))));
  }
  const conflict = result.conflict;
  if (conflict && conflict.conflict) {
    meta.append(el("div", { class: "conflict" },
      `Conflict: the documents say "${conflict.context_answer}", the model alone says "${conflict.parametric_answer}"; ` +
      `chose the ${conflict.chosen} (${conflict.reason}).`));
  }
  answer.append(meta);
}
