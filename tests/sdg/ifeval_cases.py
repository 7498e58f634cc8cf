"""Seeded edge-case (constraint, response) pairs for every IFEval constraint type, built to sit on
the boundaries the checkers disagree about: counts one off the threshold, markdown that looks like a
bullet or a divider, keywords inside longer words, fences, quotes, capitals, stray blank lines,
texts in many languages, empty and blank replies.

`cases(seed, per_type)` returns [(type_id, kwargs, response)]; the same seed gives the same list.
"""
from __future__ import annotations

import json
import random
import re

from nemotron.sdg.constraints.text import count_sentences, word_tokens

PROMPT = "Write a short note about rivers in Europe."

SENTENCES = [
    "The river runs past the old mill.", "Dr. Smith arrived at 3.30 p.m. today.", "It costs $3.50, i.e. not much.",
    "Mr. J. R. Tolkien wrote it in 1937.", "What a day!", "Is it? Yes.", 'He said "stop." Then he left.',
    "See e.g. the U.S. report...", "The art of starting is hard.", "NASA and the ESA met in the U.K. last year.",
    "I think I can.", "A cat sat on a mat.", "WELL-KNOWN facts are BORING.", "i'm fine, thanks",
    "Wait... what?", "The 3.5 km walk (approx.) took 1 hr.", "Ellipsis… and more.", "A tree, a street and a treetop.",
    "No. 5 is next, etc. and so on.", "They left at 5 a.m. on Jan. 3rd.", "OK", "Start the engine now",
    "The data were clear: go on.", "It's a well-known fact that don't-care terms exist.", "New York is big.",
    "Prices rose 4.5% in Q3.", "see section 2 for more", "This is the END", "art", "(Parenthetical remark.)",
]

# Short texts in each of IFEval's 30 languages and a few others langdetect knows.
LANG_TEXTS = {
    "en": "The weather was cold, so we stayed at home and read books all day.",
    "es": "Nos quedamos en casa porque hacía mucho frío y no queríamos salir.",
    "pt": "Ficamos em casa porque estava muito frio e não queríamos sair.",
    "ar": "بقينا في المنزل لأن الجو كان باردا جدا في الخارج.",
    "hi": "बाहर बहुत ठंड थी इसलिए हम पूरे दिन घर पर रहे।",
    "fr": "Nous sommes restés à la maison parce qu'il faisait très froid dehors.",
    "ru": "Мы остались дома, потому что на улице было очень холодно.",
    "de": "Wir sind zu Hause geblieben, weil es draußen sehr kalt war.",
    "ja": "外はとても寒かったので、私たちは一日中家で本を読みました。",
    "it": "Siamo rimasti a casa perché faceva molto freddo e non volevamo uscire.",
    "bn": "বাইরে খুব ঠান্ডা ছিল তাই আমরা সারাদিন বাড়িতে ছিলাম।",
    "uk": "Ми залишилися вдома, бо надворі було дуже холодно.",
    "th": "ข้างนอกหนาวมากเราจึงอยู่บ้านทั้งวัน",
    "ur": "باہر بہت سردی تھی اس لیے ہم سارا دن گھر پر رہے۔",
    "ta": "வெளியே மிகவும் குளிராக இருந்ததால் நாங்கள் நாள் முழுவதும் வீட்டில் இருந்தோம்.",
    "te": "బయట చాలా చల్లగా ఉంది కాబట్టి మేము రోజంతా ఇంట్లోనే ఉన్నాము.",
    "bg": "Останахме вкъщи, защото навън беше много студено.",
    "ko": "밖이 너무 추워서 우리는 하루 종일 집에서 책을 읽었습니다.",
    "pl": "Zostaliśmy w domu, ponieważ na zewnątrz było bardzo zimno.",
    "he": "נשארנו בבית כי היה קר מאוד בחוץ.",
    "fa": "ما تمام روز در خانه ماندیم چون بیرون هوا خیلی سرد بود.",
    "vi": "Chúng tôi ở nhà cả ngày vì bên ngoài trời rất lạnh.",
    "ne": "बाहिर धेरै जाडो थियो त्यसैले हामी दिनभरि घरमै बस्यौं।",
    "sw": "Tulikaa nyumbani kwa sababu nje kulikuwa na baridi sana.",
    "kn": "ಹೊರಗೆ ತುಂಬಾ ಚಳಿ ಇದ್ದ ಕಾರಣ ನಾವು ದಿನವಿಡೀ ಮನೆಯಲ್ಲೇ ಇದ್ದೆವು.",
    "mr": "बाहेर खूप थंडी होती म्हणून आम्ही दिवसभर घरीच राहिलो.",
    "gu": "બહાર ખૂબ ઠંડી હતી તેથી અમે આખો દિવસ ઘરે રહ્યા.",
    "pa": "ਬਾਹਰ ਬਹੁਤ ਠੰਡ ਸੀ ਇਸ ਲਈ ਅਸੀਂ ਸਾਰਾ ਦਿਨ ਘਰ ਰਹੇ।",
    "ml": "പുറത്ത് നല്ല തണുപ്പായിരുന്നു അതുകൊണ്ട് ഞങ്ങൾ ദിവസം മുഴുവൻ വീട്ടിലിരുന്നു.",
    "fi": "Pysyimme kotona koko päivän, koska ulkona oli todella kylmä.",
    "nl": "We bleven thuis omdat het buiten erg koud was.",
    "tr": "Dışarısı çok soğuk olduğu için bütün gün evde kaldık.",
    "sv": "Vi stannade hemma eftersom det var mycket kallt ute.",
    "zh": "因为外面很冷，我们整天呆在家里看书。",
    "none": "42 17 ... 3.14",
}

KEYWORDS = ["art", "tree", "river", "go", "New York", "well-known", "don't", "data", "end", "I"]
MARKDOWN = [
    "* item one", "- item two", "---", "*emphasis* at the start", "**bold** text", "  * nested item", "-5 degrees",
    "*", "• bullet", "1. numbered", "***", "******", "*a* and *b*", "***both***", "** **", "* * *", "-", "- ",
    "*item without space", "  - indented dash", "\t* tabbed",
]
TRANSFORMS = [lambda t: t, str.upper, str.lower, lambda t: "  " + t + "\n", lambda t: "Sure, here it is:\n" + t,
              lambda t: t + "\nHope this helps!", lambda t: "**" + t + "**", lambda t: t.replace("\n", "\n\n")]


def _text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(SENTENCES) for _ in range(n))


def _near(rng: random.Random, count: int, low: int = 1) -> int:
    return max(low, count + rng.choice([-1, 0, 0, 1]))


def _relation(rng: random.Random) -> str:
    return rng.choice(["less than", "at least"])


def _keywords(rng, _):
    keywords = sorted(rng.sample(KEYWORDS, rng.randint(1, 3)))
    parts = [_text(rng, 1)]
    for k in keywords:
        form = rng.choice(["exact", "upper", "inside", "absent", "hyphen", "suffix"])
        parts.append({"exact": f"We saw {k} there.", "upper": f"{k.upper()} again.", "inside": f"x{k}y{k}s",
                      "absent": "", "hyphen": f"{k}-like", "suffix": f"{k}_2"}[form])
    return {"keywords": keywords}, " ".join(rng.sample(parts, len(parts)))


def _frequency(rng, _):
    k = rng.choice(KEYWORDS)
    forms = [k, k.upper(), f"x{k}", f"{k}s", f"{k}{k}", "nothing"]
    text = " ".join(rng.choice(forms) for _ in range(rng.randint(0, 5)))
    count = len(re.findall(re.escape(k), text, flags=re.IGNORECASE))
    return {"keyword": k, "frequency": _near(rng, count), "relation": _relation(rng)}, text


def _forbidden(rng, _):
    words = sorted(rng.sample(KEYWORDS, rng.randint(1, 2)))
    w = words[-1]
    forms = list(words) + [f"x{w}", f"_{w}_", f"{words[0]}'s", f"{words[0].upper()}!", "clean text"]
    return {"forbidden_words": words}, " ".join(rng.sample(forms, rng.randint(1, 3)))


def _letter(rng, _):
    letter = rng.choice("aeistqzx")
    text = rng.choice([_text(rng, rng.randint(1, 2)), "İstanbul İİ", "ÄäÖ", letter.upper() * 3, "Straße", ""])
    count = text.lower().count(letter)
    return {"letter": letter, "let_frequency": _near(rng, count), "let_relation": _relation(rng)}, text


def _language(rng, _):
    language = rng.choice([c for c in LANG_TEXTS if c not in ("zh", "none", "nl", "tr", "sv")])
    source = rng.choice([language, language, rng.choice(list(LANG_TEXTS))])
    text = LANG_TEXTS[source]
    text = rng.choice([text, text + " " + LANG_TEXTS["en"], text[:12], text.upper(), "**" + text + "**", text * 2])
    return {"language": language}, text


def _sentences(rng, _):
    text = rng.choice(["\n", " ", "\n\n"]).join(rng.choice(SENTENCES) for _ in range(rng.randint(1, 6)))
    return {"num_sentences": _near(rng, count_sentences(text)), "relation": _relation(rng)}, text


def _paragraphs(rng, _):
    n = rng.randint(1, 4)
    seps = ["\n***\n", " *** ", "***", "\n\n***\n\n", "\n****\n", "\n* * *\n", "\n***\n***\n"]
    paras = [_text(rng, rng.randint(1, 2)) for _ in range(n)]
    text = paras[0]
    for p in paras[1:]:
        text += rng.choice(seps) + p
    text = rng.choice(["", "***\n", "***bold*** "]) + text + rng.choice(["", "\n***", "\n***\n "])
    return {"num_paragraphs": _near(rng, n)}, text


def _words(rng, _):
    text = _text(rng, rng.randint(0, 4)) + rng.choice(["", " snake_case x2", " ...", " 3.14"])
    count = len(re.findall(r"\w+", text))
    return {"num_words": _near(rng, count), "relation": _relation(rng)}, text


def _nth_paragraph(rng, _):
    n = rng.randint(1, 4)
    firsts = ["River", '"River', "'river,", "**River**", "River's", "river:", "Rivers", "The"]
    paras = [f"{rng.choice(firsts)} {_text(rng, 1)}" for _ in range(n)]
    text = paras[0]
    for p in paras[1:]:
        text += rng.choice(["\n\n", "\n\n", "\n\n\n\n", "\n \n", "\n\n\n"]) + p
    text = rng.choice(["", "", "\n\n"]) + text + rng.choice(["", "\n\n"])
    num = _near(rng, n)
    return {"num_paragraphs": num, "nth_paragraph": rng.randint(1, num), "first_word": rng.choice(["river", "the"])}, text


def _placeholders(rng, _):
    pieces = ["[name]", "[]", "[ ]", "[a [b] c]", "[[x]]", "[line\nbreak]", "[date] and [place]", "text", "[", "]"]
    text = " ".join(rng.choice(pieces) for _ in range(rng.randint(1, 5)))
    count = len(re.findall(r"\[.*?\]", text))
    return {"num_placeholders": _near(rng, count)}, text


def _postscript(rng, _):
    marker = rng.choice(["P.S.", "P.P.S"])
    ps = ["P.S. see you", "p.s. lower", "P. S. spaced", "The P.S. is mid-line", "P.P.S more", "**P.S.** bold",
          "PS: no dots", "> P.S. quoted", "P.P.S. late", "  P.S.", "laptop.s. odd"]
    return {"postscript_marker": marker}, _text(rng, 1) + rng.choice(["\n\n", "\n", " "]) + rng.choice(ps)


def _bullets(rng, _):
    lines = [rng.choice(MARKDOWN + SENTENCES[:10]) for _ in range(rng.randint(1, 6))]
    text = "\n".join(lines)
    ifeval = (len(re.findall(r"^\s*\*[^\*].*$", text, flags=re.M)) + len(re.findall(r"^\s*-.*$", text, flags=re.M)))
    return {"num_bullets": _near(rng, ifeval)}, text


def _constrained(rng, _):
    options = ["My answer is yes.", "My answer is no.", "My answer is maybe.", "my answer is yes.", "My answer is yes",
               "My answer is no. Because...", "Yes.", "MY ANSWER IS MAYBE."]
    return {}, rng.choice(["", "I think so. "]) + rng.choice(options)


def _highlights(rng, _):
    pieces = ["*a*", "**bold**", "***both***", "* *", "** **", "*a**b*", "*multi\nline*", "plain", "*x* *y*", "**"]
    text = " ".join(rng.choice(pieces) for _ in range(rng.randint(1, 5)))
    return {"num_highlights": rng.randint(1, 4)}, text


def _sections(rng, _):
    spliter = rng.choice(["Section", "SECTION"])
    heads = [f"{spliter} 1", f"## {spliter} 2", f"**{spliter} 3**", f"see {spliter} 4 above", f"{spliter}  5",
             f"{spliter}\n6", f"{spliter.lower()} 7", f"{spliter}s 8", f"{spliter} X", f"{spliter}9"]
    text = "\n".join(f"{rng.choice(heads)}\n{_text(rng, 1)}" for _ in range(rng.randint(1, 4)))
    return {"section_spliter": spliter, "num_sections": rng.randint(1, 4)}, text


def _json(rng, _):
    body = rng.choice(['{"a": [1, 2]}', "[1, 2, 3]", "42", '"text"', "NaN", "{'a': 1}", '{"a": Infinity}', "{}",
                      '{"a": 1} trailing'])
    wrap = rng.choice(["{}", "```json\n{}\n```", "```JSON\n{}\n```", "```Json {}```", "```\n{}\n```",
                       "```python\n{}\n```", "Here:\n{}", "  {}  ", "```json\n{}", "{}\n```"])
    return {}, wrap.replace("{}", body, 1) if wrap != "{}" else body


def _title(rng, _):
    return {}, rng.choice(["<<A Title>>\nText", "<< >>", "<<>>", "<<<>>>", "<<a>> and <<b>>", "<<broken\n>>",
                           "no title", "<< x >>", "<<>> <<x>>", "<<<Title>>>"])


def _two_responses(rng, _):
    a, b = _text(rng, 1), rng.choice([_text(rng, 1), "Same."])
    return {}, rng.choice([f"{a}\n******\n{b}", f"{a}******{a}", f"******\n{a}\n******\n{b}", f"{a}\n******\n\n******\n{b}",
                           f"{a}\n*******\n{b}", f"{a}\n******", f"{a}\n******\n{b}\n******\n{a}", f" {a} ******{a} "])


def _repeat_prompt(rng, _):
    answer = _text(rng, 1)
    return {"prompt_to_repeat": PROMPT}, rng.choice([
        PROMPT + "\n" + answer, PROMPT.upper() + " " + answer, "  " + PROMPT, "Sure! " + PROMPT, PROMPT[:-1], answer,
        PROMPT.replace("short", "brief")])


def _end(rng, _):
    phrase = rng.choice(["Any other questions?", "Is there anything else I can help with?"])
    return {"end_phrase": phrase}, _text(rng, 1) + " " + rng.choice([
        phrase, phrase.lower(), f'"{phrase}"', phrase + " ", phrase + ".", f"**{phrase}**", phrase + "\nBye", phrase[:-1]])


def _capital(rng, _):
    pieces = ["I", "A", "NASA", "U.S.", "WELL-KNOWN", "I'M", "OK", "3D", "ÉCOLE", "word", "Title", "X", "DON'T",
              "CEO", "the", "Paris", "NATO", "e.g.", "ÜBER", "mIxEd", "UN-", "4K"]
    text = " ".join(rng.choice(pieces) for _ in range(rng.randint(1, 8))) + rng.choice([".", "", " end."])
    count = sum(t.isupper() for t in word_tokens(text))
    return {"capital_frequency": _near(rng, count), "capital_relation": _relation(rng)}, text


def _case(transform):
    def make(rng, _):
        text = rng.choice([LANG_TEXTS["en"], _text(rng, 2), _text(rng, 3), LANG_TEXTS["fr"], LANG_TEXTS["de"],
                           "42 17", "I", "OK."])
        return {}, rng.choice([transform(text)] * 3 + [text, transform(text) + " Mixed"])
    return make


def _no_comma(rng, _):
    return {}, rng.choice([_text(rng, 2), "No commas here", "Full width，comma", "a,b", "١،٢", "semi; colon"])


def _quotation(rng, _):
    text = _text(rng, 1)
    return {}, rng.choice([f'"{text}"', f"“{text}”", f'  "{text}"\n', f'"{text}', f'{text}"', '"', '""', f"'{text}'",
                           f'Sure:\n"{text}"'])


GENERATORS = {
    "keywords:existence": _keywords,
    "keywords:frequency": _frequency,
    "keywords:forbidden_words": _forbidden,
    "keywords:letter_frequency": _letter,
    "language:response_language": _language,
    "length_constraints:number_sentences": _sentences,
    "length_constraints:number_paragraphs": _paragraphs,
    "length_constraints:number_words": _words,
    "length_constraints:nth_paragraph_first_word": _nth_paragraph,
    "detectable_content:number_placeholders": _placeholders,
    "detectable_content:postscript": _postscript,
    "detectable_format:number_bullet_lists": _bullets,
    "detectable_format:constrained_response": _constrained,
    "detectable_format:number_highlighted_sections": _highlights,
    "detectable_format:multiple_sections": _sections,
    "detectable_format:json_format": _json,
    "detectable_format:title": _title,
    "combination:two_responses": _two_responses,
    "combination:repeat_prompt": _repeat_prompt,
    "startend:end_checker": _end,
    "change_case:capital_word_frequency": _capital,
    "change_case:english_capital": _case(str.upper),
    "change_case:english_lowercase": _case(str.lower),
    "punctuation:no_comma": _no_comma,
    "startend:quotation": _quotation,
}


def cases(seed: int, per_type: int) -> list[tuple[str, dict, str]]:
    rng = random.Random(seed)
    out = []
    for type_id, generate in GENERATORS.items():
        for i in range(per_type):
            kwargs, response = generate(rng, i)
            # One in eight gets a wrapper a model might add, or is blank.
            if rng.random() < 0.125:
                response = rng.choice(TRANSFORMS + [lambda t: "", lambda t: " \n "])(response)
            out.append((type_id, json.loads(json.dumps(kwargs)), response))
    return out
