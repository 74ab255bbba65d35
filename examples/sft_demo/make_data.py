"""Write the instruction-tuning demo: IT help-desk conversations in train.jsonl and test.jsonl.

Every answer is a few lowercase words that follow from the prompt by a fixed rule, so a small
model can learn the rules and exact match on the held-out rows measures whether it did:

* route: a ticket goes to its product's team (network, hardware or software), unless it is
  about access (accounts) or a threat (security);
* product: the product the ticket names;
* priority: high when people are blocked, low when the sender says it can wait, else normal;
* how-to: a question on one of ten topics gets that topic's one answer.

A ticket is an opener, a symptom sentence naming a product, an optional urgency remark and a
sign-off, each drawn from the lists below; the task is asked in the user message or set by a
system message. About a third of the conversations have two or three turns: follow-up
questions about the same ticket, or a second how-to question. Answers hold no punctuation, so
they read back unchanged from the word-level tokenizer of build_model.py. No ticket text and
no how-to question appears twice, so the held-out rows are new prompts.

Usage: python examples/sft_demo/make_data.py   (rewrites the two files beside this script)
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from pathlib import Path

SEED = 17
TRAIN_ROWS, TEST_ROWS = 360, 60
HERE = Path(__file__).resolve().parent

PRODUCTS = {
    "network": ["vpn client", "wifi", "network drive", "office network"],
    "hardware": ["laptop", "monitor", "docking station", "printer", "headset", "keyboard"],
    "software": ["email client", "chat app", "spreadsheet app", "browser", "calendar"],
}
"""Products by the team that fixes them when they break."""

PAIRS = [(team, product) for team, names in PRODUCTS.items() for product in names]
"""Every (team, product), so each product is drawn as often as any other."""

SYMPTOMS = {
    None: [  # broken: the product's own team
        "my {p} stopped working", "the {p} is really slow today",
        "i keep getting an error from the {p}", "the {p} crashes every few minutes",
        "the {p} will not start", "since the update the {p} freezes",
        "the {p} keeps dropping out", "nothing happens when i use the {p}",
    ],
    "accounts": [
        "i am locked out of the {p}", "the {p} says my account has no access",
        "my password for the {p} expired", "the {p} rejects my login",
        "i need access to the {p} for my new role",
    ],
    "security": [
        "a pop up on the {p} says it is infected",
        "i clicked a strange link and now the {p} acts odd",
        "someone changed settings on my {p} without asking", "the {p} shows a virus warning",
        "i think someone else is using my {p}",
    ],
}  # fmt: skip
"""Symptom sentences by the team they send a ticket to (None: the product's team)."""

URGENCY = {
    "high": ["the whole team is blocked", "nobody on our floor can work",
             "i have a client demo in an hour", "all our sales calls are stuck"],
    "low": ["no rush", "whenever you have time", "it can wait until next week",
            "not urgent at all"],
    "normal": ["", "", "it started this morning", "it happened twice today",
               "i already restarted"],
}  # fmt: skip
"""Remarks that set a ticket's priority; an empty one says nothing about it."""

OPENERS = ["", "", "hi,", "hello team,", "good morning,", "hey,"]
SIGNOFFS = ["", "", "thanks", "thank you", "please help", "cheers"]

ASKS = {
    "route": {
        "user": ["route this ticket to a team: {t}", "which team should handle this ticket? {t}",
                 "ticket: {t}\nwhich team owns it?", "who should take this one? {t}"],
        "system": "you route it support tickets. reply with the team name only.",
        "follow": ["and which team gets it?", "who should handle it?"],
    },
    "product": {
        "user": ["which product is this ticket about? {t}", "name the product in this ticket: {t}",
                 "ticket: {t}\nwhat product is affected?", "what is broken here? {t}"],
        "system": "you read it tickets and reply with the affected product only.",
        "follow": ["which product was that about?", "and what product is it?"],
    },
    "priority": {
        "user": ["what priority should this ticket get? {t}", "set a priority for this ticket: {t}",
                 "ticket: {t}\nhow urgent is it?", "how urgent is this? {t}"],
        "system": "you triage it tickets. reply with high, normal or low.",
        "follow": ["how urgent is it?", "and what priority?"],
    },
}  # fmt: skip
"""For each ticket task: how the user asks, the system message that asks instead, follow-ups."""

HOWTO = {
    "open the self service portal and choose reset password": [
        "how do i reset my password", "i forgot my password what do i do",
        "where can i change my password", "how do i set a new password"],
    "install the vpn client from the software center and sign in": [
        "how do i set up the vpn", "how can i work from home over vpn",
        "where do i get the vpn client", "how do i connect to the vpn from home"],
    "open printer settings and add the printer by its room number": [
        "how do i add a printer", "how can i print to the printer on my floor",
        "where do i find the office printers", "how do i set up a new printer"],
    "file a software request in the portal for your manager to approve": [
        "how do i get new software installed", "can i install a program myself",
        "how do i request a new app", "who installs software for me"],
    "install the mfa app and scan the code on the portal security page": [
        "how do i set up the mfa app", "i got a new phone how do i move my mfa",
        "how do i turn on two factor login", "how do i set up mfa"],
    "press report phishing in the email client and then delete it": [
        "how do i report a phishing email", "what should i do with a suspicious email",
        "i got a scam email what now", "how do i flag a fake email"],
    "book a loaner in the portal under hardware loans": [
        "how do i borrow a laptop", "can i get a loaner laptop for a trip",
        "where do i book a spare laptop", "how do i get a laptop for a new starter"],
    "guests join the guest network and accept the terms on the welcome page": [
        "how do visitors get on the wifi", "what wifi should a guest use",
        "how can a guest connect to the internet", "how do i get my visitor online"],
    "open calendar settings and turn on automatic replies": [
        "how do i turn on my out of office reply", "how do i set an away message",
        "how do i set automatic replies for my holiday", "where do i switch on out of office"],
    "ask the folder owner to approve your request in the portal": [
        "how do i get access to a shared folder", "who can give me rights on a team drive",
        "how do i open the finance share", "how can i see the files of another team"],
}  # fmt: skip
"""How-to answers, each with the questions it answers."""

QUESTION_FORMS = ["{q}?", "hi, {q}?", "quick question, {q}?", "{q}? thanks",
                  "sorry to bother you, {q}?", "hello, {q}?", "{q}? thank you"]  # fmt: skip
FOLLOW_FORMS = ["thanks. one more thing, {q}?", "great. also, {q}?", "ok. and {q}?"]
HELPDESK = "you are the it help desk assistant."
HOWTO_SYSTEM = "you are the it help desk. answer how-to questions in one line."

Message = dict[str, str]


class Writer:
    """Draws conversations from a seeded generator, never repeating a ticket or a question."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.used: set[str] = set()

    def ticket(self) -> tuple[str, dict[str, str]]:
        """A new ticket text and its answers: route, product and priority."""
        while True:
            team, product = self.rng.choice(PAIRS)
            kind = self.rng.choice([None, None, None, "accounts", "security"])
            priority = self.rng.choice(["high", "low", "normal", "normal"])
            parts = [
                self.rng.choice(OPENERS),
                self.rng.choice(SYMPTOMS[kind]).format(p=product) + ".",
                _sentence(self.rng.choice(URGENCY[priority])),
                self.rng.choice(SIGNOFFS),
            ]
            text = " ".join(part for part in parts if part)
            if text not in self.used:
                self.used.add(text)
                return text, {"route": kind or team, "product": product, "priority": priority}

    def question(self, forms: list[str]) -> tuple[str, str]:
        """A new how-to question in one of `forms`, and its answer."""
        while True:
            answer = self.rng.choice(list(HOWTO))
            text = self.rng.choice(forms).format(q=self.rng.choice(HOWTO[answer]))
            if text not in self.used:
                self.used.add(text)
                return text, answer

    def ticket_chat(self, turns: int) -> list[Message]:
        """A ticket asked about in `turns` different ways; the task set by user or system."""
        text, answers = self.ticket()
        tasks = self.rng.sample(list(ASKS), turns)
        system = self.rng.random() < 0.4
        if system and turns == 1:
            messages = [_say("system", ASKS[tasks[0]]["system"]), _say("user", text)]
        else:
            messages = [_say("system", HELPDESK)] if system else []
            messages.append(_say("user", self.rng.choice(ASKS[tasks[0]]["user"]).format(t=text)))
        messages.append(_say("assistant", answers[tasks[0]]))
        for task in tasks[1:]:
            messages += [_say("user", self.rng.choice(ASKS[task]["follow"])),
                         _say("assistant", answers[task])]  # fmt: skip
        return messages

    def howto_chat(self, turns: int) -> list[Message]:
        """One how-to question, or two in a row; some with a system message."""
        system = self.rng.choice([None, HELPDESK, HOWTO_SYSTEM])
        messages = [_say("system", system)] if system else []
        for turn in range(turns):
            text, answer = self.question(QUESTION_FORMS if turn == 0 else FOLLOW_FORMS)
            messages += [_say("user", text), _say("assistant", answer)]
        return messages


def _say(role: str, content: str) -> Message:
    return {"role": role, "content": content}


def _sentence(remark: str) -> str:
    return remark + "." if remark else ""


MIX: list[tuple[int, Callable[[Writer], list[Message]]]] = [
    (190, lambda w: w.ticket_chat(1)),
    (70, lambda w: w.ticket_chat(2)),
    (30, lambda w: w.ticket_chat(3)),
    (100, lambda w: w.howto_chat(1)),
    (30, lambda w: w.howto_chat(2)),
]
"""How many conversations of each shape: 420 in all, 130 of them multi-turn. Tickets
outnumber how-to questions: their rules take longer to learn than ten fixed answers."""


def conversations(seed: int = SEED) -> list[list[Message]]:
    """All the demo's conversations, shuffled; the same list for the same seed."""
    writer = Writer(seed)
    chats = [make(writer) for count, make in MIX for _ in range(count)]
    writer.rng.shuffle(chats)
    return chats


def write(path: Path, chats: list[list[Message]]) -> None:
    """One JSON object per line, `{"messages": [...]}`, in UTF-8 with Unix line endings."""
    lines = (json.dumps({"messages": chat}, ensure_ascii=False) + "\n" for chat in chats)
    path.write_text("".join(lines), encoding="utf-8", newline="\n")


def main() -> None:
    """Rewrite train.jsonl (360 rows) and test.jsonl (60 held-out rows) beside this script."""
    chats = conversations()
    assert len(chats) == TRAIN_ROWS + TEST_ROWS, len(chats)
    # Answers must read back unchanged from the word-level tokenizer, which spaces punctuation.
    answers = {m["content"] for chat in chats for m in chat if m["role"] == "assistant"}
    assert all(re.fullmatch(r"[a-z]+( [a-z]+)*", a) for a in answers), answers
    write(HERE / "test.jsonl", chats[:TEST_ROWS])
    write(HERE / "train.jsonl", chats[TEST_ROWS:])
    print(f"wrote {TRAIN_ROWS} train and {TEST_ROWS} test conversations to {HERE}")


if __name__ == "__main__":
    main()
