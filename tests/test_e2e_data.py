"""E2E NLG reading (real official files), prompts and LM examples with the real GPT-2 BPE."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import GPT2TokenizerFast

from mole_lightning.core.e2e_text import format_prompt, parse_mr, prompt_ids
from mole_lightning.data.e2e import (
    E2EExample,
    E2EPair,
    group_references,
    lm_example,
    load_e2e_split,
    read_e2e_csv,
)
from mole_lightning.errors import ConfigError, DataFileError, HubUnavailableError

GPT2_TOKENIZER = Path(__file__).parent / "assets" / "gpt2_tokenizer"
VAULTS = "name[The Vaults], eatType[pub], priceRange[more than £30], customer rating[5 out of 5], near[Café Adriatic]"


@pytest.fixture(scope="module")
def tokenizer() -> GPT2TokenizerFast:
    # transformers 5 ignores vocab_file=/merges_file= keywords; from_pretrained reads the folder
    return GPT2TokenizerFast.from_pretrained(GPT2_TOKENIZER)


@pytest.fixture(scope="module")
def dev_pairs(shared_data) -> list[E2EPair]:
    return read_e2e_csv(shared_data / "e2e" / "devset.csv")


def test_real_devset_rows_and_mrs(dev_pairs):
    assert len(dev_pairs) == 4672
    examples = group_references(dev_pairs)
    assert len(examples) == 547
    assert sum(len(e.refs) for e in examples) == 4672
    assert dev_pairs[0] == E2EPair(
        "name[Alimentum], area[city centre], familyFriendly[no]",
        "There is a place in the city centre, Alimentum, that is not family-friendly.",
    )
    first = examples[0]
    assert first.mr == dev_pairs[0].mr and first.refs[0] == dev_pairs[0].ref
    assert first.refs == tuple(p.ref for p in dev_pairs if p.mr == first.mr)


def test_real_trainset_through_the_split_loader(shared_data):
    pairs = load_e2e_split("train", shared_data / "e2e")
    assert len(pairs) == 42061
    assert len(group_references(pairs)) == 4862


def test_group_references_keeps_first_appearance_order():
    pairs = [E2EPair("a[1]", "x"), E2EPair("b[2]", "y"), E2EPair("a[1]", "z")]
    assert group_references(pairs) == [E2EExample("a[1]", ("x", "z")), E2EExample("b[2]", ("y",))]


def test_format_prompt_is_the_lora_linearisation():
    assert parse_mr(VAULTS)[1] == ("eatType", "pub")
    assert format_prompt(VAULTS) == (
        "name : The Vaults | Type : pub | price : more than £30 | customer rating : 5 out of 5 "
        "| near : Café Adriatic ||"
    )
    assert (
        format_prompt("name[Alimentum], familyFriendly[no]")
        == "name : Alimentum | family friendly : no ||"
    )


def test_lm_example_masks_prompt_and_padding(tokenizer, dev_pairs):
    mr, ref = dev_pairs[0]
    enc = lm_example(*prompt_ids(tokenizer, mr, ref), 64, tokenizer.eos_token_id)
    assert {len(v) for v in enc.values()} == {64}
    prompt_len = len(tokenizer(format_prompt(mr))["input_ids"])
    n = sum(enc["attention_mask"])
    assert enc["attention_mask"] == [1] * n + [0] * (64 - n)
    assert enc["labels"][:prompt_len] == [-100] * prompt_len
    assert enc["labels"][n:] == [-100] * (64 - n)
    assert enc["labels"][prompt_len:n] == enc["input_ids"][prompt_len:n]
    assert tokenizer.decode(enc["input_ids"][:prompt_len]) == format_prompt(mr)
    assert tokenizer.decode(enc["labels"][prompt_len:n]) == " " + ref + "<|endoftext|>"
    assert enc["input_ids"][n - 1] == tokenizer.eos_token_id == 50256


def test_lm_example_truncates_the_reference_not_the_prompt(tokenizer):
    ref = "The Vaults pub near Café Adriatic has a 5 star rating."
    enc = lm_example(*prompt_ids(tokenizer, VAULTS, ref), 40, tokenizer.eos_token_id)
    prompt_len = len(tokenizer(format_prompt(VAULTS))["input_ids"])
    assert sum(enc["attention_mask"]) == 40
    assert enc["labels"][:prompt_len] == [-100] * prompt_len
    assert -100 not in enc["labels"][prompt_len:] and tokenizer.eos_token_id not in enc["labels"]
    with pytest.raises(ValueError, match="max_length is 10"):
        lm_example(*prompt_ids(tokenizer, VAULTS, "x"), 10, tokenizer.eos_token_id)


@pytest.mark.parametrize(
    "body, line, message",
    [
        ('"a[1]",ok\n"a[1]",ok,extra\n', 3, "expected 2 fields"),
        ('"a[1]",ok\n"a[1], b",ok\n', 3, "bad meaning representation"),
        ('"a[1]",ok\n"a[1]",\n', 3, "empty reference"),
        ('"a[1]",ok\n"a[1]","unterminated\n"b[2]",fine\n', 3, "malformed CSV"),
        ('"a[1]","two\nlines"\n"a[1]",ok,extra\n', 4, "expected 2 fields"),
        ('"a[1]",ok\n"a[1]"x,ok\n', 3, "malformed CSV"),
    ],
)
def test_malformed_csv_names_file_and_line(tmp_path, body, line, message):
    path = tmp_path / "devset.csv"
    path.write_text("mr,ref\n" + body, encoding="utf-8")
    with pytest.raises(DataFileError, match=rf"devset\.csv:{line}: {message}"):
        read_e2e_csv(path)


def test_bad_header_and_missing_file(tmp_path):
    path = tmp_path / "trainset.csv"
    path.write_text("meaning,text\na[1],b\n", encoding="utf-8")
    with pytest.raises(DataFileError, match=r"trainset\.csv:1: header must be 'mr,ref'"):
        read_e2e_csv(path)
    path.write_text("", encoding="utf-8")
    with pytest.raises(DataFileError, match="empty file"):
        read_e2e_csv(path)
    with pytest.raises(DataFileError, match=r"testset_w_refs\.csv: file not found"):
        load_e2e_split("test", tmp_path)
    with pytest.raises(ConfigError, match="unknown E2E split 'dev'"):
        load_e2e_split("dev", tmp_path)


def test_hub_offline_error_tells_to_pass_data_dir():
    # conftest sets HF_HUB_OFFLINE=1: the hub is never contacted
    with pytest.raises(HubUnavailableError, match="data.dir="):
        load_e2e_split("validation", None)
