"""Prompts that make new prompts: topics, questions, writing tasks, closed-QA, math and Python.

Our own wording of the Nemotron-4 340B recipe. Every list prompt asks for a numbered list, the
format `parse_list` reads first-hand most reliably; a reply in another list shape parses too.
"""

MACRO_TOPICS = """\
List {count} broad topics that people ask an AI assistant about, covering the full range of \
human knowledge and daily life (for example science, history, the arts, health, money, \
technology, relationships, travel, food, sports).

Each topic is two to five words. No two topics may overlap. Answer with a numbered list only, \
one topic per line, with no explanations."""

SUBTOPICS = """\
List {count} distinct subtopics of "{topic}". Together they should cover the topic well, from \
the basics to specialised corners of it.

Each subtopic is two to eight words. Answer with a numbered list only, one subtopic per line, \
with no explanations."""

OPEN_QUESTIONS = """\
Write {count} questions about "{topic}" that a curious person might ask an AI assistant.

Make them open-ended: each should invite an explanation, a comparison, advice or an opinion \
rather than a one-word fact. Vary their length, difficulty and style. Each question must make \
sense on its own, without the others.

Answer with a numbered list only, one question per line."""

REVISE_QUESTION = """\
Here is a question someone wants to ask an AI assistant:

{prompt}

Rewrite it so that it is more detailed and specific: add relevant context about the asker's \
situation, constraints or goals, and say what a good answer should cover. Keep the same subject \
and intent, and keep it a single request of at most about 120 words.

Reply with the rewritten question only, without quotes or any introduction."""

WRITING_TASKS = """\
Write {count} different tasks that ask an AI assistant to write a {document_type} about \
"{topic}".

Each task names the {document_type}'s subject precisely and adds at least one concrete \
requirement (audience, tone, length, a point to make, a detail to include). Each task must be \
understandable on its own.

Answer with a numbered list only, one task per line."""

REVISE_WRITING_TASK = """\
Here is a writing task for an AI assistant:

{prompt}

Rewrite the task so that it is more detailed: specify the audience, purpose, tone, structure \
and any facts or details the text should contain. Keep the kind of document and its subject. \
Keep it a single task of at most about 150 words.

Reply with the rewritten task only, without quotes or any introduction."""

CLOSED_QA = """\
Read the following document.

<document>
{document}
</document>

Write {count} different instructions a user could give an AI assistant about this document, \
each answerable from the document alone: questions about its facts, requests to summarise a \
part of it, to extract information, to explain a passage or to draw a conclusion from it. Do \
not repeat the document in the instructions.

Answer with a numbered list only, one instruction per line."""

CLOSED_QA_PROMPT = """\
{document}

{instruction}"""

ENTITY_CLASSIFIER = """\
Is "{entity}" a topic, concept or keyword that belongs to {domain}?

Answer with a single word: yes or no."""

MATH_PROBLEMS = """\
Write {count} different math problems about "{topic}" at the level of {level}.

Each problem must be self-contained, well-posed and solvable, with all numbers and conditions \
it needs. Vary the kind of problem (computation, word problem, proof, estimation). Do not give \
solutions or hints.

Answer with a numbered list only, one problem per line."""

PYTHON_PROBLEMS = """\
Write {count} different Python programming problems related to "{topic}" at the level of \
{level}.

Each problem states exactly what the program or function must do, its inputs and outputs, and \
any constraints; a competent programmer could solve it without asking questions. Do not give \
solutions.

Answer with a numbered list only, one problem per line."""

MATH_MACRO_TOPICS = """\
List {count} broad areas of mathematics that students and practitioners ask about, from \
elementary arithmetic to university mathematics (for example algebra, geometry, probability, \
number theory, calculus, linear algebra, statistics, discrete mathematics).

Each area is one to five words. No two areas may overlap. Answer with a numbered list only, one \
area per line, with no explanations."""

MATH_SUBTOPICS = """\
List {count} distinct topics within the mathematical area "{topic}", each specific enough that \
concrete problems can be written about it (a concept, a technique or a classic kind of problem).

Each topic is two to eight words. Answer with a numbered list only, one topic per line, with no \
explanations."""

PYTHON_MACRO_TOPICS = """\
List {count} broad areas of Python programming that people ask about (for example the core \
language, data structures, algorithms, the standard library, file handling, testing, \
concurrency, data analysis, web development).

Each area is one to five words. No two areas may overlap. Answer with a numbered list only, one \
area per line, with no explanations."""

PYTHON_SUBTOPICS = """\
List {count} distinct topics within the Python programming area "{topic}", each specific enough \
that a programming exercise can be written about it (a language feature, a module, a technique \
or a classic task).

Each topic is two to eight words. Answer with a numbered list only, one topic per line, with no \
explanations."""

SOLVE_MATH = """\
Solve the following problem. Reason step by step, then give the final answer alone inside \
\\boxed{{}} on the last line.

{problem}"""

DOMAIN_NAMES = {"math": "mathematics", "python": "Python programming"}

MATH_LEVELS = ("elementary school", "middle school", "high school", "university")
PYTHON_LEVELS = ("beginner", "intermediate", "advanced")
