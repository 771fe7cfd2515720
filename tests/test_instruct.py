"""The instruction format (MoLA's Alpaca prompts, the paper's answer forms) and generative
accuracy: answers read back from the gold responses, label mapping against the multiple-choice
gold, batched greedy decoding against a one-token-at-a-time oracle, and the scoring of
responses."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import build_tiny_model

from layerif.data import TaskSpec, extract_answer, get_task, load_instruct, load_rows
from layerif.data.instruct import instruct_tasks, load_examples_as
from layerif.errors import DataError
from layerif.evaluation import evaluate_generation, evaluate_model, generate_greedy


@pytest.mark.parametrize("task", instruct_tasks())
def test_gold_responses_state_the_gold_answer(task):
    items = load_instruct(f"{task}:validation[0:40]")
    for it in items:
        assert it.prompt.endswith("### Response:\n") and it.answer in it.choices
        assert extract_answer(it.response, it.lettered) == (
            it.answer if it.lettered else it.answer.lower())
        if it.lettered:
            for letter in it.choices:  # every option is listed once, in order
                assert it.prompt.count(f"\n{letter}. ") == 1


def test_label_answers_follow_the_multiple_choice_gold():
    rows = load_rows(TaskSpec("mrpc"))
    items = load_instruct("mrpc:validation[0:30]")
    for row, it in zip(rows.select(range(30)), items, strict=True):
        assert it.response == ("Answer: equivalent." if row["label"] == 1
                               else "Answer: not_equivalent.")
    rte = load_instruct("rte:validation[0:30]")
    rte_rows = load_rows(TaskSpec("rte")).select(range(30))
    assert [it.answer == "entailment" for it in rte] == [r["label"] == 0 for r in rte_rows]


def test_lettered_gold_matches_the_option_text():
    task = get_task("commonsense_qa")
    rows = load_rows(TaskSpec("commonsense_qa")).select(range(20))
    for row, it in zip(rows, load_instruct("commonsense_qa:validation[0:20]"), strict=True):
        mc = task.multiple_choice(row, "x")
        assert mc.continuations[mc.gold] == f" {it.answer}"  # lm-eval's letters
        gold_text = row["choices"]["text"][mc.gold]
        assert f"\n{it.answer}. {gold_text}\n" in it.prompt
    # SciQ stores the right answer last: the listed order must not give it away.
    sciq = load_instruct("sciq:validation[0:60]")
    assert len({it.answer for it in sciq}) == 4
    for row, it in zip(load_rows(TaskSpec("sciq")).select(range(60)), sciq, strict=True):
        assert f"\n{it.answer}. {row['correct_answer']}\n" in it.prompt


@pytest.mark.parametrize(("text", "lettered", "expected"), [
    ("The answer is B.", True, "B"),
    ("the answer is (c) because", True, "C"),
    ("I think A", True, None),
    ("Answer: equivalent.", False, "equivalent"),
    ("Answer:  Not_Equivalent.\nAnswer: equivalent.", False, "not_equivalent"),
    ("equivalent", False, None),
])
def test_extract_answer(text, lettered, expected):
    assert extract_answer(text, lettered) == expected


def _greedy_oracle(model, tokenizer, prompt: str, steps: int) -> str:
    """One prompt, no cache, no padding: argmax of a full forward, token by token."""
    ids = tokenizer(prompt)["input_ids"]
    new = []
    with torch.no_grad():
        for _ in range(steps):
            logits = model(input_ids=torch.tensor([ids + new])).logits[0, -1]
            token = int(logits.argmax())
            if token == tokenizer.eos_token_id:
                break
            new.append(token)
    return tokenizer.decode(new, skip_special_tokens=True)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_batched_greedy_generation_matches_the_oracle(arch, tokenizer):
    model = build_tiny_model(arch, len(tokenizer))
    prompts = [it.prompt for it in load_instruct("mrpc:validation[0:3]")] + [
        "Short prompt.", "A slightly longer prompt than the short one, with more words."]
    got = generate_greedy(model, tokenizer, prompts, max_new_tokens=6, batch_size=3)
    assert got == [_greedy_oracle(model, tokenizer, p, 6) for p in prompts]
    assert any(got)  # a random model still produces tokens


def test_generative_accuracy_scores_the_stated_answers(monkeypatch, tiny_models, tokenizer):
    import layerif.evaluation.generation as generation

    items = load_instruct("mrpc:validation[0:8]")
    # Responses: the gold one for the first half, the wrong label, then nothing readable.
    wrong = {"equivalent": "Answer: not_equivalent.", "not_equivalent": "Answer: equivalent."}
    responses = [it.response for it in items[:4]] + [wrong[it.answer] for it in items[4:6]] + [
        "I do not know", ""]
    monkeypatch.setattr(generation, "generate_greedy", lambda *a, **k: responses)
    r = evaluate_generation(tiny_models("llama"), tokenizer,
                            [TaskSpec.parse("mrpc:validation[0:8]")], progress=False)
    t = r["tasks"]["mrpc"]
    assert (t["gen_acc"], t["gen_unanswered"], t["n"]) == (0.5, 0.25, 8)
    assert t["gen_acc_stderr"] == pytest.approx((0.25 / 7) ** 0.5)
    assert [g["predicted"] for g in t["generations"]][4:] == [
        wrong[it.answer][8:-1] for it in items[4:6]] + [None, None]


def test_finetuning_slice_is_refused_for_evaluation(tmp_path, tiny_models, tokenizer):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "training.json").write_text(json.dumps({"train": "mrpc:validation[0:100]"}))
    with pytest.raises(DataError, match=r"evaluation set mrpc:validation\[90:110\] shares content "
                       r"with the fine-tuning set mrpc:validation\[0:100\] .*: 10 of its 20 "):
        evaluate_model(tiny_models("llama"), tokenizer, [TaskSpec.parse("mrpc:validation[90:110]")],
                       ppl=None, adapter=str(adapter), generate=True)


def test_examples_in_either_format(tmp_path):
    (ex,) = load_examples_as("mrpc:validation[0:1]")
    assert ex.prompt.startswith("Below is an instruction") and ex.completion.startswith("Answer: ")
    (plain,) = load_examples_as("mrpc:validation[0:1]", "plain")
    assert plain.prompt.endswith("Answer:") and plain.completion in (" yes", " no")
    path = tmp_path / "d.jsonl"
    path.write_text('{"prompt": "p", "completion": " c"}\n')
    assert load_examples_as(str(path))[0].completion == " c"
    with pytest.raises(DataError, match="unknown data format"):
        load_examples_as("mrpc:validation[0:1]", "chat")
