"""Decoding on Graphs (DoG): a reasoning chain built one triple at a time, each step constrained to the
relations that leave the entity the chain has reached, fetched from the store when needed.

A trie holds only the next step's candidates (plus "stop"), so a 3-hop chain never materialises the
3-hop neighbourhood the way a full KG-Trie would.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from graph.paths import Path, backward_arrow, forward_arrow
from graph.store import GraphStore
from graph.trie import PATH_END, PATH_START, PathTokenizer, TokenTrie
from lm.constraints import ConstraintTrace, constrained_generate
from lm.model import LanguageModel
from lm.remote import RemoteLanguageModel, messages_of, note

STEP_END = " ;"


@dataclass
class ChainResult:
    path: Path
    steps_considered: list[int] = field(default_factory=list)  # candidates offered at each step
    trace: ConstraintTrace = field(default_factory=ConstraintTrace)


def decode_on_graph(
    model: LanguageModel | RemoteLanguageModel,
    store: GraphStore,
    question: str,
    start_id: str,
    max_hops: int = 3,
    min_hops: int = 1,
    max_candidates: int = 2_000,
) -> ChainResult:
    """Grow a chain from `start_id` under the graph constraint; stop when the model chooses to or at `max_hops`."""
    [start] = store.get_entities([start_id])
    pieces = PathTokenizer(model.encode)
    step_end, stop = model.encode(STEP_END), model.encode(PATH_END)
    start_ids = model.encode(PATH_START)
    prompt = model.chat_prompt(
        f"{question}\nAnswer with a path through the knowledge graph, one relation at a time, "
        f"starting from {start.name}."
    )
    result = ChainResult(Path((start.id,), (start.name,)))
    chain_ids = list(pieces.piece(start.name))
    for hop in range(max_hops):
        path = result.path
        options: list[Path | None] = []
        trie = TokenTrie()
        for edge in store.edges([path.end_id])[:max_candidates]:
            if edge.neighbour_id in path.entity_ids:
                continue
            arrow = forward_arrow(edge.type) if edge.forward else backward_arrow(edge.type)
            trie.add([*pieces.piece(arrow), *pieces.piece(edge.neighbour_name), *step_end], len(options))
            options.append(path.extend(edge))
        if hop >= min_hops:
            trie.add(stop, len(options))
            options.append(None)
        result.steps_considered.append(len(options))
        if not options or options == [None]:
            break
        if isinstance(model, RemoteLanguageModel):
            segment = remote_step(model, prompt, model.decode(chain_ids), trie, question)
        else:
            [best] = constrained_generate(
                model, prompt, trie, start_ids, trie.depth, trace=result.trace, prefix_ids=chain_ids
            )
            segment = best.segment
        node = trie.walk(segment)
        choice = options[trie.values[node]] if node is not None and node in trie.values else None
        if choice is None:
            break
        result.path = choice
        chain_ids += segment
    return result


def remote_step(model: RemoteLanguageModel, prompt: str, chain: str, trie: TokenTrie, question: str) -> list[int]:
    """One step on a server: the step's options (the character trie's sequences) as guided choices where the
    server has guidance, else listed in the prompt and the reply checked against the trie; a reply that is
    no option ends the chain (as "stop" does)."""
    options = [model.decode(ids) for ids in trie_sequences(trie)]
    guidance = model.guidance
    [*_, asked] = messages_of(prompt) or [{"content": prompt}]
    ask = f"{asked['content']}\nThe chain so far:{chain}\nWrite its next step."
    if guidance is None:
        ask += " Copy one of these exactly:\n" + "\n".join(o.strip() for o in options)
        note("decoding on graphs: steps decoded freely by the server, checked against the step's trie", question)
    else:
        note(f"decoding on graphs: steps constrained by the server's {guidance.name}", question)
    messages = [{"role": "user", "content": ask}]
    reply = model.chat(messages, 64, choices=[o.strip() for o in options]).text.strip()
    for option in options:
        if option.strip() == reply:
            return model.encode(option)
    # A free reply that is no option: the first option whose entity it names (a small model rarely copies the
    # arrowed relation exactly), recorded as such.
    for option in options:
        name = option.strip().removesuffix(STEP_END.strip()).strip().split(" ", 1)[-1]
        if option.strip() != PATH_END.strip() and name and name.casefold() in reply.casefold():
            note(
                "decoding on graphs: a step's reply was no option; the option whose entity it names was taken", question
            )
            return model.encode(option)
    note("decoding on graphs: a step's reply was no option of the trie; the chain stopped there", question)
    return []


def trie_sequences(trie: TokenTrie) -> list[list[int]]:
    """Every whole sequence of `trie` (root to a node with a value), in insertion order of their values."""
    found: dict[int, list[int]] = {}
    stack: list[tuple[int, list[int]]] = [(trie.root, [])]
    while stack:
        node, ids = stack.pop()
        if node in trie.values:
            found[trie.values[node]] = ids
        stack += [(child, [*ids, token]) for token, child in trie.children(node).items()]
    return [found[value] for value in sorted(found)]
