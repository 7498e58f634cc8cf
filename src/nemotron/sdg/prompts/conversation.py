"""Prompts for conversations: follow-up turns, simulated users, judging, and list reformatting."""

FOLLOW_UP = """\
Here is a conversation between a user and an AI assistant.

{transcript}

Write the user's next message. It should follow naturally from the assistant's last reply: ask \
for clarification, go deeper into one point, challenge something, or extend the request in a \
new direction. Write it in the user's own voice.

Reply with the user's message only, without a label, quotes or any introduction."""

USER_TURN = """\
You are playing the user in a conversation with an AI assistant. Your persona: {persona}

The conversation so far:

{transcript}

Write your next message as this user. Stay in character, keep to the subject and move the \
conversation forward with a new question or request. Do not thank the assistant or compliment \
the answer; say only what you want next.

Reply with the message only, without a label, quotes or any introduction."""

MULTI_TURN_CONSTRAINT = """\
{prompt}

For this reply and for every later reply in our conversation: {instructions}"""

JUDGE = """\
You are comparing two replies of an AI assistant to the same conversation.

<conversation>
{transcript}
</conversation>

<reply_a>
{reply_a}
</reply_a>

<reply_b>
{reply_b}
</reply_b>

Judge which reply is better for the user: more helpful, correct, complete and clear, following \
every instruction of the user. Do not favour a reply for its length or its position.

Answer with one letter only: A if reply A is better, B if reply B is better."""

REFORMAT_LIST = """\
Below is a text that contains a list of items.

<text>
{response}
</text>

Copy the items of that list, word for word, into a JSON array of strings. Do not add, drop, \
merge or reword items.

Reply with the JSON array only."""

DEFAULT_PERSONAS = (
    "a high-school student preparing for an exam, who wants short, concrete explanations",
    "a retired engineer, precise and sceptical, who asks for evidence and numbers",
    "a busy parent with little time, who wants practical steps",
    "a software developer who likes examples and edge cases",
    "a curious beginner who often asks what unfamiliar words mean",
    "a small-business owner who thinks about costs and risks",
    "a graduate student who wants depth and references to key ideas",
    "a non-native English speaker who writes simply and asks for clear language",
)


def transcript(messages: list[dict[str, str]]) -> str:
    """A conversation as labelled turns, the form the prompts above embed."""
    names = {"user": "User", "assistant": "Assistant", "system": "System"}
    return "\n\n".join(f"{names[m['role']]}: {m['content']}" for m in messages)
