"""Conversations as causal-LM rows: a cell holding a list of messages, read and checked.

A conversation is what chat models are tuned on: an optional system message, then user and
assistant turns in alternation, ending with the assistant. Two spellings are read:

* OpenAI style: `{"role": "system" | "user" | "assistant", "content": "..."}`;
* ShareGPT style: `{"from": "system" | "human" | "gpt", "value": "..."}`.

Each valid cell becomes its canonical form, the messages as compact JSON with `role` and
`content` only, so duplicate and leakage checks compare conversations, and prep renders them
(`ftpipe.data.chats`) from that one text.
"""

from __future__ import annotations

import json
from typing import Any

ROLES = {"system": "system", "user": "user", "human": "user", "assistant": "assistant",
         "gpt": "assistant"}  # fmt: skip
"""Each accepted role name (OpenAI's, then ShareGPT's) and the role it means."""

KEYS = (("role", "content"), ("from", "value"))
"""The (role, content) key pairs a message may use."""

Messages = list[dict[str, str]]


def read_conversation(cell: Any) -> Messages | str:
    """A cell's messages in the canonical form, or why the cell is not a conversation.

    Returns:
        The messages, each `{"role": ..., "content": ...}`; or a reason, a phrase that
        follows the row's location in a message.
    """
    if not isinstance(cell, list) or not cell:
        kind = "an empty list" if isinstance(cell, list) else f"a {type(cell).__name__}"
        return f"the conversation is {kind}, not a list of messages with a role and a content"
    messages: Messages = []
    for number, message in enumerate(cell, start=1):
        keys = next((k for k in KEYS if isinstance(message, dict) and set(k) <= set(message)),
                    None)  # fmt: skip
        if keys is None:
            return f"message {number} is not an object with role and content (or from and value)"
        role, content = message[keys[0]], message[keys[1]]
        if role not in ROLES:
            return (
                f"message {number} has the unknown role {role!r}; roles are system, user and "
                "assistant (ShareGPT: system, human and gpt)"
            )
        if not isinstance(content, str):
            return f"message {number} ({role}) has a {type(content).__name__} as its content"
        messages.append({"role": ROLES[role], "content": content})
    return order_problem(messages) or messages


def order_problem(messages: Messages) -> str | None:
    """Why the turns are out of order or an assistant turn is empty, or None."""
    start = 1 if messages[0]["role"] == "system" else 0
    for index in range(start, len(messages)):
        role, content = messages[index]["role"], messages[index]["content"]
        expected = "user" if (index - start) % 2 == 0 else "assistant"
        if role != expected:
            return (
                f"message {index + 1} is from the {role} where the {expected} speaks next: "
                "after an optional system message, user and assistant take turns, starting "
                "with the user"
            )
        if role == "assistant" and not content.strip():
            return f"message {index + 1}, an assistant turn, is empty: there is nothing to learn"
    if messages[-1]["role"] != "assistant":
        return "the conversation does not end with an assistant turn: there is nothing to learn"
    return None


def canonical(messages: Messages) -> str:
    """The conversation as the text prep stores and compares: compact JSON."""
    return json.dumps(messages, ensure_ascii=False, separators=(",", ":"))
