"""The five metrics of the E2E NLG challenge, computed as its official script does.

The official ``e2e-metrics`` (``measure_scores.py``) scores multi-reference outputs with

* BLEU and NIST from ``mteval-v13a``: its default case-insensitive mode and 13a
  tokenisation. BLEU here is sacrebleu's corpus BLEU with ``tokenize="13a"`` and
  ``lowercase=True`` (the same tokeniser, 0-100 scale); NIST is nltk's ``corpus_nist``
  (n = 5, mteval's information weights and length penalty) on the same tokens. nltk
  takes, per segment and n-gram order, the reference with the best precision, while
  mteval clips counts against all references at once, so multi-reference NIST can
  differ slightly from mteval's.
* METEOR, ROUGE-L and CIDEr(-D) from the MS-COCO caption evaluator (pycocoevalcap), on
  text lower-cased and tokenised by the Stanford PTB tokenizer that ships with it, with
  its punctuation tokens removed, exactly as ``COCOEvalCap`` does. METEOR 1.5 runs its
  jar (``-l en -norm``) with the paraphrase table shipped in pycocoevalcap.

The PTB tokenizer and METEOR need Java (8 or later) on ``PATH``.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import sacrebleu
from nltk.translate.nist_score import corpus_nist
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor import meteor as meteor_module
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PUNCTUATIONS
from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

from mole_lightning.errors import MoleError

COCO_DIR = Path(meteor_module.__file__).parents[1]
PTB_JAR = COCO_DIR / "tokenizer" / "stanford-corenlp-3.4.1.jar"
METEOR_JAR = COCO_DIR / "meteor" / "meteor-1.5.jar"
METEOR_PARAPHRASES = COCO_DIR / "meteor" / "data" / "paraphrase-en.gz"
NIST_ORDER = 5
METRICS = ("bleu", "nist", "meteor", "rouge_l", "cider")
"""Keys of ``score_e2e``'s result: BLEU on 0-100, NIST raw, METEOR / ROUGE-L on 0-1,
CIDEr raw (0-10)."""


class JavaUnavailableError(MoleError, RuntimeError):
    """Java, or a jar or data file the COCO metrics need, is missing."""


def _require_java() -> str:
    java = shutil.which("java")
    if java is None:
        raise JavaUnavailableError(
            "the E2E metrics METEOR, ROUGE-L and CIDEr need Java (8 or later) on PATH for the "
            "PTB tokenizer and the METEOR jar; install a JRE (e.g. apt-get install "
            "default-jre-headless) or score BLEU/NIST only with mteval_scores()"
        )
    for path in (PTB_JAR, METEOR_JAR, METEOR_PARAPHRASES):
        if not path.is_file():
            raise JavaUnavailableError(
                f"{path} is missing from pycocoevalcap; reinstall pycocoevalcap"
            )
    return java


def _check_inputs(hypotheses: list[str], references: list[list[str]]) -> None:
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} reference lists")
    empty = [i for i, refs in enumerate(references) if not refs]
    if empty:
        raise ValueError(f"items {empty[:10]} have no reference")


def mteval_scores(hypotheses: list[str], references: list[list[str]]) -> dict[str, float]:
    """``{"bleu", "nist"}``: mteval-v13a-style corpus BLEU (0-100) and NIST (n = 5),
    case-insensitive, 13a tokenisation; ``references[i]`` holds item ``i``'s references."""
    _check_inputs(hypotheses, references)
    streams = [
        [refs[k] if k < len(refs) else None for refs in references]
        for k in range(max(len(refs) for refs in references))
    ]
    bleu = sacrebleu.corpus_bleu(hypotheses, streams, lowercase=True, tokenize="13a").score
    tokenize = Tokenizer13a()
    hyp_tokens = [tokenize(h.lower()).split() for h in hypotheses]
    ref_tokens = [[tokenize(r.lower()).split() for r in refs] for refs in references]
    # orders no hypothesis reaches add 0 (as in mteval); nltk would divide by zero
    order = min(NIST_ORDER, max(len(h) for h in hyp_tokens))
    nist = corpus_nist(ref_tokens, hyp_tokens, n=order) if order > 0 else 0.0
    return {"bleu": bleu, "nist": nist}


def ptb_tokenize(sentences: list[str]) -> list[str]:
    """Lower-cases and PTB-tokenises with the Stanford tokenizer of pycocoevalcap and
    drops its punctuation tokens, one output line per sentence (``COCOEvalCap``'s
    preprocessing)."""
    java = _require_java()
    text = "\n".join(" ".join(s.split()) for s in sentences)  # no line breaks inside a sentence
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", suffix=".txt", delete=False) as f:
        f.write(text)
    try:
        result = subprocess.run(
            [
                java,
                "-Dfile.encoding=UTF-8",
                "-cp",
                str(PTB_JAR),
                "edu.stanford.nlp.process.PTBTokenizer",
                "-preserveLines",
                "-lowerCase",
                "-encoding",
                "utf-8",
                f.name,
            ],
            capture_output=True,
            check=False,
        )
    finally:
        os.remove(f.name)
    lines = result.stdout.decode("utf-8").split("\n")[: len(sentences)]
    if result.returncode != 0 or len(lines) != len(sentences):
        raise JavaUnavailableError(
            f"the PTB tokenizer ({PTB_JAR}) failed (exit {result.returncode}, {len(lines)} of "
            f"{len(sentences)} lines): {result.stderr.decode(errors='replace')[-500:]}"
        )
    return [
        " ".join(w for w in line.rstrip().split(" ") if w not in PUNCTUATIONS) for line in lines
    ]


class E2EScorer:
    """Scores E2E outputs with all five metrics; keeps one METEOR JVM between calls
    (starting it loads the paraphrase table, several seconds). Close it when done, or
    use it as a context manager."""

    def __init__(self) -> None:
        _require_java()
        self._meteor: Meteor | None = None

    def __enter__(self) -> E2EScorer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stops the METEOR JVM."""
        if self._meteor is not None:
            process = self._meteor.meteor_p
            process.stdin.close()
            process.kill()
            process.wait()
            self._meteor = None

    def coco_scores(self, hypotheses: list[str], references: list[list[str]]) -> dict[str, float]:
        """``{"meteor", "rouge_l", "cider"}`` of PTB-tokenised text (MS-COCO evaluator)."""
        _check_inputs(hypotheses, references)
        tokens = ptb_tokenize([*hypotheses, *(r for refs in references for r in refs)])
        res = {i: [tokens[i]] for i in range(len(hypotheses))}
        gts, start = {}, len(hypotheses)
        for i, refs in enumerate(references):
            gts[i] = tokens[start : start + len(refs)]
            start += len(refs)
        if self._meteor is None:
            self._meteor = Meteor()
        return {
            "meteor": float(self._meteor.compute_score(gts, res)[0]),
            "rouge_l": float(Rouge().compute_score(gts, res)[0]),
            "cider": float(Cider().compute_score(gts, res)[0]),
        }

    def score(self, hypotheses: list[str], references: list[list[str]]) -> dict[str, float]:
        """All of ``METRICS`` for ``hypotheses[i]`` against ``references[i]`` (raw text)."""
        return {**mteval_scores(hypotheses, references), **self.coco_scores(hypotheses, references)}


_shared_scorer: E2EScorer | None = None


def score_e2e(hypotheses: list[str], references: list[list[str]]) -> dict[str, float]:
    """BLEU, NIST, METEOR, ROUGE-L and CIDEr (keys ``METRICS``) of one system output.

    Uses one ``E2EScorer`` per process (its METEOR JVM starts on the first call and
    stops at exit), so scoring every validation epoch pays the JVM start once.

    Args:
        hypotheses: one generated text per item (MR).
        references: the human references of each item (any number, at least one).
    """
    global _shared_scorer
    if _shared_scorer is None:
        _shared_scorer = E2EScorer()
        atexit.register(_shared_scorer.close)
    return _shared_scorer.score(hypotheses, references)
