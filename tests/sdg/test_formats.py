"""What users load the output with: TRL's conversational preference format, a Hugging Face
`datasets` folder with its card, and the plots of the report."""
from __future__ import annotations

import asyncio
import json

import datasets
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from nemotron.sdg.config import parse_config
from nemotron.sdg.export import export
from nemotron.sdg.pipeline import Pipeline
from nemotron.sdg.report import plot
from nemotron.sdg.store import read_jsonl
from tests.sdg.fake_server import ScriptedChat, ScriptedReward

MODELS = {"generator": {"model": "scripted"}, "reward": {"model": "reward", "kind": "reward"}}
NEMOTRON_TEMPLATE = ("<extra_id_0>System\n\n{% for m in messages %}{% if m['role'] == 'user' %}<extra_id_1>User\n"
                     "{{ m['content'] }}\n{% else %}<extra_id_1>Assistant\n{{ m['content'] }}\n{% endif %}{% endfor %}"
                     "{% if add_generation_prompt %}<extra_id_1>Assistant\n{% endif %}")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("formats")
    config = parse_config({"name": "fmt", "models": MODELS, "outputs": {"dpo": ["pairs"], "sft": ["answers"]},
                           "stages": [
                               {"name": "topics", "kind": "macro_topics", "count": 4},
                               {"name": "qs", "kind": "open_questions", "count": 2},
                               {"name": "answers", "kind": "responses", "reward_model": "reward"},
                               {"name": "pairs", "kind": "preference", "input": "qs", "reward_model": "reward",
                                "n": 3}]})
    asyncio.run(Pipeline(config, out, {"generator": ScriptedChat(), "reward": ScriptedReward()}, progress=False).run())
    return out


def tiny_chat_tokenizer() -> PreTrainedTokenizerFast:
    tokenizer = Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]")
    fast.chat_template = NEMOTRON_TEMPLATE
    return fast


def test_pairs_load_as_trl_conversational_preference_data(run_dir):
    trl = pytest.importorskip("trl")
    from trl.data_utils import apply_chat_template, is_conversational

    dataset = datasets.load_dataset("json", data_files=str(run_dir / "dpo.jsonl"), split="train")
    assert len(dataset) == 8
    tokenizer = tiny_chat_tokenizer()
    for example, record in zip(dataset, read_jsonl(run_dir / "dpo.jsonl")):
        assert is_conversational(example)
        text = apply_chat_template({k: example[k] for k in ("prompt", "chosen", "rejected")}, tokenizer)
        question = record["prompt"][-1]["content"]
        assert text["prompt"] == f"<extra_id_0>System\n\n<extra_id_1>User\n{question}\n<extra_id_1>Assistant\n"
        assert text["chosen"] == record["chosen"][0]["content"] + "\n"
        assert text["rejected"] == record["rejected"][0]["content"] + "\n"
        assert example["chosen_reward"] > example["rejected_reward"] and example["judge"] == "reward"
    assert trl.__version__


def test_hf_folder_loads_with_datasets_and_has_a_card(run_dir):
    written = export(run_dir, "hf")
    folder = run_dir / "hf"
    assert folder / "README.md" in written
    dpo = datasets.load_dataset(str(folder), "dpo", split="train")
    default = datasets.load_dataset(str(folder), split="train")  # the first dataset is the default
    assert dpo.to_list() == list(read_jsonl(run_dir / "dpo.jsonl"))
    assert len(default) == len(dpo)
    assert datasets.load_dataset(str(folder), "sft", split="train").to_list() == list(read_jsonl(run_dir / "sft.jsonl"))
    card = (folder / "README.md").read_text()
    run = json.loads((run_dir / "run.json").read_text())
    assert f"`{run['config_sha256']}`" in card and "| generator | `scripted` |" in card
    assert "| dpo | 8 | pairs |" in card and "| chosen | `list<element: struct<role: string, content: string>>` |" in card


def test_plots_grid_and_preference_figure(run_dir):
    image_module = pytest.importorskip("matplotlib.image")
    paths = plot(run_dir)
    assert [p.name for p in paths] == ["rewards.png", "lengths.png", "preference.png"]
    image = image_module.imread(paths[0])
    height, width = image.shape[:2]
    assert width <= 4 * 400 and height >= 250  # a grid of at most four columns, not one long strip
