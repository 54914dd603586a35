"""E2E metrics against independent computations, the METEOR jar's own CLI and real dev data.

The METEOR JVM starts once for the whole file (``score_e2e``'s shared scorer).
"""

from __future__ import annotations

import math
import re
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from mole_lightning.data.e2e import group_references, read_e2e_csv
from mole_lightning.metrics.e2e import (
    METEOR_JAR,
    METRICS,
    JavaUnavailableError,
    mteval_scores,
    ptb_tokenize,
    score_e2e,
)

HYPS = [
    "the vaults is a pub near cafe adriatic with a high customer rating",
    "a cheap family friendly coffee shop in the city centre",
    "the golden curry serves indian food in the riverside area",
]
REFS = [
    [
        "the vaults pub is near cafe adriatic and has a high customer rating",
        "near cafe adriatic there is a pub called the vaults",
    ],
    [
        "there is a cheap family friendly coffee shop in the city centre",
        "the cheap coffee shop in the city centre is family friendly",
    ],
    ["the golden curry is an indian restaurant in the riverside area"],
]


def ngrams(tokens: list[str], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def hand_bleu(hyps: list[str], refs: list[list[str]]) -> float:
    """Corpus BLEU-4 (Papineni et al.): clipped n-gram precisions, closest reference length."""
    matched, total, hyp_len, ref_len = [0] * 4, [0] * 4, 0, 0
    for hyp, rs in zip(hyps, refs, strict=True):
        h, rr = hyp.split(), [r.split() for r in rs]
        hyp_len += len(h)
        ref_len += min((abs(len(r) - len(h)), len(r)) for r in rr)[1]
        for n in range(1, 5):
            max_ref = Counter()
            for r in rr:
                max_ref |= ngrams(r, n)
            matched[n - 1] += sum((ngrams(h, n) & max_ref).values())
            total[n - 1] += max(len(h) - n + 1, 0)
    brevity = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / hyp_len)
    return (
        100
        * brevity
        * math.exp(sum(math.log(m / t) for m, t in zip(matched, total, strict=True)) / 4)
    )


def hand_nist(hyps: list[str], refs: list[str], n: int = 5) -> float:
    """mteval-v13a NIST (Doddington 2002) with one reference per segment."""
    counts, words = Counter(), 0
    for ref in refs:
        tokens = ref.split()
        words += len(tokens)
        for k in range(1, n + 1):
            counts.update(ngrams(tokens, k))

    def info(gram: tuple) -> float:
        context = counts[gram[:-1]] if len(gram) > 1 else words
        return math.log2(context / counts[gram])

    score = 0.0
    for k in range(1, n + 1):
        gain = sum(
            info(g) * c
            for h, r in zip(hyps, refs, strict=True)
            for g, c in (ngrams(h.split(), k) & ngrams(r.split(), k)).items()
        )
        score += gain / sum(max(len(h.split()) - k + 1, 0) for h in hyps)
    ratio = sum(len(h.split()) for h in hyps) / sum(len(r.split()) for r in refs)
    beta = math.log(0.5) / math.log(1.5) ** 2
    return score * (math.exp(beta * math.log(ratio) ** 2) if ratio < 1 else 1.0)


def lcs(a: list[str], b: list[str]) -> int:
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            table[i + 1][j + 1] = (
                table[i][j] + 1 if x == y else max(table[i][j + 1], table[i + 1][j])
            )
    return table[-1][-1]


def hand_rouge_l(hyps: list[str], refs: list[list[str]], beta: float = 1.2) -> float:
    """ROUGE-L of the COCO evaluator: best LCS precision and recall over references."""
    scores = []
    for hyp, rs in zip(hyps, refs, strict=True):
        h = hyp.split()
        p = max(lcs(h, r.split()) / len(h) for r in rs)
        r_ = max(lcs(h, r.split()) / len(r.split()) for r in rs)
        scores.append((1 + beta**2) * p * r_ / (r_ + beta**2 * p) if p and r_ else 0.0)
    return sum(scores) / len(scores)


def hand_cider_d(hyps: list[str], refs: list[list[str]], sigma: float = 6.0) -> float:
    """CIDEr-D (Vedantam et al.) as the COCO evaluator computes it: raw-count tf-idf with
    document frequencies over the items' references, clipped cosine per n = 1..4, a
    Gaussian length penalty (its length is the bigram count, a quirk of that code),
    averaged over references and n, times 10."""
    frequency = Counter(
        g for rs in refs for g in {g for r in rs for n in range(1, 5) for g in ngrams(r.split(), n)}
    )
    log_items = math.log(len(refs))

    def vectors(text: str):
        tokens = text.split()
        vec = [
            {
                g: c * (log_items - math.log(max(1.0, frequency[g])))
                for g, c in ngrams(tokens, n).items()
            }
            for n in range(1, 5)
        ]
        return (
            vec,
            [math.sqrt(sum(v * v for v in d.values())) for d in vec],
            max(len(tokens) - 1, 0),
        )

    total = 0.0
    for hyp, rs in zip(hyps, refs, strict=True):
        vh, nh, lh = vectors(hyp)
        per_n = [0.0] * 4
        for ref in rs:
            vr, nr, lr = vectors(ref)
            for n in range(4):
                value = sum(min(w, vr[n].get(g, 0.0)) * vr[n].get(g, 0.0) for g, w in vh[n].items())
                value = value / (nh[n] * nr[n]) if nh[n] and nr[n] else value
                per_n[n] += value * math.exp(-((lh - lr) ** 2) / (2 * sigma**2))
        total += 10 * sum(per_n) / 4 / len(rs)
    return total / len(hyps)


def test_bleu_matches_hand_computation_and_sacrebleu_documented_example():
    assert mteval_scores(HYPS, REFS)["bleu"] == pytest.approx(hand_bleu(HYPS, REFS), abs=1e-9)
    # sacrebleu's README example: BLEU = 48.53
    refs = [
        ["The dog bit the man.", "The dog had bit the man."],
        ["It was not unexpected.", "No one was surprised."],
        ["The man bit him first.", "The man had bitten the dog."],
    ]
    hyps = ["The dog bit the man.", "It wasn't surprising.", "The man had just bitten him."]
    assert mteval_scores(hyps, refs)["bleu"] == pytest.approx(48.53, abs=0.005)
    # mteval's default is case-insensitive
    assert mteval_scores(["THE Vaults Is A Pub."], [["the vaults is a pub ."]])[
        "bleu"
    ] == pytest.approx(100.0)


def test_nist_matches_mteval_formula_for_single_references():
    hyps = [HYPS[0], HYPS[2]]
    refs = [REFS[0][0], REFS[2][0]]
    nist = mteval_scores(hyps, [[r] for r in refs])["nist"]
    assert nist == pytest.approx(hand_nist(hyps, refs), rel=1e-9)
    assert nist > 3


def test_nist_survives_hypotheses_shorter_than_five_tokens():
    short = mteval_scores(["a pub", ""], [["a pub near"], ["x y"]])
    assert short["nist"] == pytest.approx(
        hand_nist(["a pub", ""], ["a pub near", "x y"], n=2), rel=1e-9
    )


def test_ptb_tokenisation_lowercases_and_drops_punctuation():
    tokens = ptb_tokenize(["The Vaults, a pub... It's (quite) near!", "", "Second line."])
    assert tokens == ["the vaults a pub it 's -lrb- quite -rrb- near", "", "second line"]


def test_coco_metrics_on_known_inputs():
    scores = score_e2e(HYPS, REFS)
    assert set(scores) == set(METRICS)
    assert scores["rouge_l"] == pytest.approx(hand_rouge_l(HYPS, REFS), rel=1e-12)
    assert scores["cider"] == pytest.approx(hand_cider_d(HYPS, REFS), rel=1e-9)
    assert 0.3 < scores["meteor"] < 1.0

    perfect = score_e2e(HYPS, [[h] for h in HYPS])
    assert perfect["bleu"] == pytest.approx(100.0)
    assert perfect["rouge_l"] == pytest.approx(1.0)
    assert perfect["meteor"] == pytest.approx(1.0)
    unrelated = score_e2e(["xylophone zebra"] * 3, REFS)
    assert unrelated["meteor"] == 0.0 and unrelated["rouge_l"] == 0.0 and unrelated["cider"] == 0.0


def meteor_cli(hyps: list[str], refs: list[list[str]], tmp_path: Path) -> float:
    """The METEOR jar's own command line (plaintext files, ``-r`` references per segment)."""
    (tmp_path / "hyp.txt").write_text("\n".join(hyps) + "\n", encoding="utf-8")
    (tmp_path / "ref.txt").write_text(
        "\n".join(r for rs in refs for r in rs) + "\n", encoding="utf-8"
    )
    out = subprocess.run(
        [
            "java",
            "-Xmx2G",
            "-jar",
            str(METEOR_JAR),
            str(tmp_path / "hyp.txt"),
            str(tmp_path / "ref.txt"),
            "-l",
            "en",
            "-norm",
            "-r",
            str(len(refs[0])),
        ],
        cwd=METEOR_JAR.parent,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return float(re.search(r"Final score:\s+([0-9.]+)", out).group(1))


@pytest.fixture(scope="module")
def dev_items(shared_data) -> tuple[list[str], list[list[str]]]:
    """20 real dev MRs: the first reference of each is the hypothesis, four others the references."""
    items = [
        e
        for e in group_references(read_e2e_csv(shared_data / "e2e" / "devset.csv"))
        if len(e.refs) >= 5
    ][:20]
    assert len(items) == 20
    return [e.refs[0] for e in items], [list(e.refs[1:5]) for e in items]


def test_all_five_on_real_dev_mrs_one_reference_against_the_rest(dev_items):
    hyps, refs = dev_items
    scores = score_e2e(hyps, refs)
    # human references score well below a perfect match, in the range the E2E
    # challenge reports for human texts
    assert 30 < scores["bleu"] < 90
    assert 3 < scores["nist"] < 10
    assert 0.3 < scores["meteor"] < 0.6
    assert 0.5 < scores["rouge_l"] < 0.85
    assert 0.5 < scores["cider"] < 4
    tokens = ptb_tokenize([*hyps, *(r for rs in refs for r in rs)])
    token_refs = [tokens[20 + 4 * i : 24 + 4 * i] for i in range(20)]
    assert scores["rouge_l"] == pytest.approx(hand_rouge_l(tokens[:20], token_refs), rel=1e-12)
    assert scores["cider"] == pytest.approx(hand_cider_d(tokens[:20], token_refs), rel=1e-9)


@pytest.mark.slow  # a second METEOR JVM: about 10 s of CPU loading the paraphrase table
def test_meteor_equals_the_jar_command_line_on_real_dev_mrs(dev_items, tmp_path):
    hyps, refs = dev_items
    tokens = ptb_tokenize([*hyps, *(r for rs in refs for r in rs)])
    token_refs = [tokens[20 + 4 * i : 24 + 4 * i] for i in range(20)]
    expected = meteor_cli(tokens[:20], token_refs, tmp_path)
    assert score_e2e(hyps, refs)["meteor"] == pytest.approx(expected, abs=1e-4)


def test_missing_java_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("PATH", "")
    with pytest.raises(JavaUnavailableError, match="Java"):
        ptb_tokenize(["a sentence"])


def test_mismatched_inputs_are_rejected():
    with pytest.raises(ValueError, match="2 hypotheses but 1"):
        mteval_scores(["a", "b"], [["a"]])
    with pytest.raises(ValueError, match="no reference"):
        mteval_scores(["a"], [[]])
