"""The tokenisation and loss contract, checked by hand against the tokenizer."""

from __future__ import annotations

import pytest
import torch

from layerif.data import (
    IGNORE_INDEX,
    Example,
    encode_example,
    encode_examples,
    make_batches,
    per_example_loss,
)
from layerif.errors import DataError


def test_text_counts_every_predicted_token(tokenizer):
    text = "Influence functions measure training data sensitivity."
    ids = tokenizer(text)["input_ids"]  # default special tokens
    enc = encode_example(Example("t", text=text), tokenizer, 512)
    assert list(enc.input_ids) == ids
    assert enc.labels[0] == IGNORE_INDEX and list(enc.labels[1:]) == ids[1:]
    assert enc.n_counted == len(ids) - 1 and not enc.truncated


def test_text_is_truncated_on_the_right(tokenizer):
    text = "one two three four five six seven eight nine ten eleven twelve"
    ids = tokenizer(text)["input_ids"]
    enc = encode_example(Example("t", text=text), tokenizer, 5)
    assert list(enc.input_ids) == ids[:5] and enc.truncated and enc.n_counted == 4


def test_pair_counts_only_completion_tokens(tokenizer):
    prompt, completion = "Question: is the sky blue?\nAnswer:", " yes, it is"
    p = tokenizer(prompt)["input_ids"]
    c = tokenizer(completion, add_special_tokens=False)["input_ids"]
    enc = encode_example(Example("p", prompt=prompt, completion=completion), tokenizer, 512)
    assert list(enc.input_ids) == p + c
    assert list(enc.labels) == [IGNORE_INDEX] * len(p) + c
    assert enc.n_counted == len(c)


def test_pair_prompt_loses_tokens_on_the_left_first(tokenizer):
    prompt, completion = "a b c d e f g h i j k l m n o p", " the end"
    p = tokenizer(prompt)["input_ids"]
    c = tokenizer(completion, add_special_tokens=False)["input_ids"]
    limit = len(c) + 3
    enc = encode_example(Example("p", prompt=prompt, completion=completion), tokenizer, limit)
    assert list(enc.input_ids) == p[-3:] + c and enc.truncated
    assert enc.n_counted == len(c)
    # With no room for any prompt token, the completion's first token cannot be predicted and
    # the completion loses tokens on the right.
    enc = encode_example(Example("p", prompt=prompt, completion=completion), tokenizer, 2)
    assert list(enc.input_ids) == c[:2] and enc.n_counted == 1


def test_example_without_counted_tokens_is_an_error_naming_it(tokenizer):
    with pytest.raises(DataError, match=r"data\.jsonl:7.*no token"):
        encode_example(Example("data.jsonl:7", text="Hi"), tokenizer, 64)
    with pytest.raises(DataError, match="max_length"):
        encode_example(Example("x", text="hello there"), tokenizer, 1)


def test_pads_never_count(tiny_models, tokenizer):
    """A padded batch gives each example exactly its unpadded loss."""
    model = tiny_models("llama")
    examples = [Example("a", text="short text"),
                Example("b", prompt="a much longer prompt with many words in it", completion=" ok"),
                Example("c", text="a medium length text with several tokens")]
    enc = encode_examples(examples, tokenizer, 64)
    (batch,) = make_batches(enc, 8, tokenizer.pad_token_id)
    assert (batch.attention_mask == 0).any()
    with torch.no_grad():
        batched = per_example_loss(
            model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits,
            batch.labels)
        for i, e in enumerate(enc):
            ids = torch.tensor([e.input_ids])
            single = per_example_loss(model(input_ids=ids).logits, torch.tensor([e.labels]))
            torch.testing.assert_close(batched[i], single[0], rtol=1e-5, atol=1e-6)


def test_loss_from_kept_positions_equals_full_loss(tiny_models, tokenizer):
    """The engine asks for logits only where counted tokens are predicted; same losses."""
    from layerif.data import predicting_positions

    model = tiny_models("gemma3")
    examples = [Example("a", prompt="a long prompt with several words", completion=" yes"),
                Example("b", prompt="short", completion=" a longer completion here"),
                Example("c", text="plain text counts every token")]
    (batch,) = make_batches(encode_examples(examples, tokenizer, 64), 8, 0)
    positions = predicting_positions(batch.labels)
    with torch.no_grad():
        kw = dict(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
        full = per_example_loss(model(**kw).logits, batch.labels)
        kept = per_example_loss(model(**kw, logits_to_keep=positions).logits, batch.labels,
                                positions)
    torch.testing.assert_close(kept, full)
    pairs_only = make_batches(encode_examples(examples[:2], tokenizer, 64), 8, 0)[0]
    assert len(predicting_positions(pairs_only.labels)) < pairs_only.labels.shape[1] - 1
