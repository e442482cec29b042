"""What the sub-commands share: the command line as typed, `--param` values, the data,
encoder and training arguments, and how a recommendation is printed for a person."""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from .. import pipeline

DEFAULT_MODELS = ["popularity", "itemknn", "als", "bpr", "sasrec", "interest-text", "interest-text+id"]


def command_line() -> str:
    """The command as typed (written into result files so a run can be repeated)."""
    return " ".join(["migrec"] + sys.argv[1:])


PYTHON_WORDS = {"True": True, "False": False, "None": None}   # Python spellings read as JSON's


def parse_value(text: str):
    """A `--param` value: JSON when it parses (numbers, true/false, lists) or Python's True/False/None,
    otherwise the plain string (so `use_id=False` is the boolean, not a truthy string)."""
    if text in PYTHON_WORDS:
        return PYTHON_WORDS[text]
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


# -- shared arguments -------------------------------------------------------------------------
def data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="ml-100k", choices=sorted(pipeline.LOADERS),
                   help="loader to use (default ml-100k); 'parquet' reads a folder written by `migrec prepare`")
    p.add_argument("--path", default=None, help="data folder or file (MovieLens: falls back to ../shared/data, "
                                                "then downloads from GroupLens)")
    p.add_argument("--min-history", type=int, default=3, help="users with fewer events are left out")


def encoder_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--encoder", default="st", help='item text encoder: "st" (bundled all-MiniLM-L6-v2), '
                                                  '"st:NAME_OR_PATH", "openai:MODEL", "hashing[:DIM]"')
    p.add_argument("--cache", default=None, help="embedding cache folder (default $MIGREC_CACHE or "
                                                "~/.cache/migrec/embeddings)")
    p.add_argument("--template", default=None, help='item text template, e.g. "{title}. {category}"')


def train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--epochs", type=int, default=None, help="sequential models: maximum epochs")
    p.add_argument("--max-train-seconds", type=float, default=None,
                   help="sequential models: a wall-clock safety cap (early stopping decides; reported if it fires)")
    p.add_argument("--precision", default=None, choices=("auto", "fp32", "bf16"),
                   help="sequential models' training matmuls; auto = bf16 only where the CPU/GPU has it natively")
    p.add_argument("--device", default="auto", help="sequential models: cpu, cuda or auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--param", action="append", default=[], metavar="MODEL.KEY=VALUE",
                   help="a hyper-parameter, e.g. sasrec.hidden=128 (repeatable)")


def load_data(args):
    return pipeline.load_dataset(args.dataset, args.path)


def make_split(args, dataset, need_text: bool):
    encoder = args.encoder if need_text else None
    return pipeline.prepare_split(dataset, encoder=encoder, cache_dir=pipeline.cache_dir_for(args.cache),
                                  template=args.template, min_history=args.min_history)


def attach_states_for(split, params: list[dict], args) -> None:
    """Models that fine-tune the sentence model's top layers (`--param <model>.text_layers=k`) need the
    lower layers' states; every such model in one command must tune the same number of layers."""
    layers = {int(p["text_layers"]) for p in params if p.get("text_layers")}
    if len(layers) > 1:
        raise SystemExit(f"--param ...text_layers: one value for every model of a command, not {sorted(layers)}")
    if layers:
        pipeline.attach_item_states(split, layers.pop(), encoder=args.encoder, template=args.template)


def model_params(name: str, args) -> dict:
    """Hyper-parameters for model `name` from the training flags and its `--param name.key=value`."""
    params: dict = {}
    if name in pipeline.SEQUENTIAL:
        params.update(device=args.device, seed=args.seed)
        if args.epochs is not None:
            params["epochs"] = args.epochs
        if args.max_train_seconds is not None:
            params["max_train_seconds"] = args.max_train_seconds
        if getattr(args, "precision", None) is not None:
            params["precision"] = args.precision
    for item in args.param:
        key, _, value = item.partition("=")
        model, _, field = key.partition(".")
        if model == name:
            params[field] = parse_value(value)
    return params


# -- output -------------------------------------------------------------------------------------
def show_recommendations(model, catalogue, history, who: str = "History", k: int = 10, explain: bool = True,
                         recent: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Print a history's newest events and its top-k with titles, and what drove the first pick.

    history: raw item ids, oldest first (items the model does not know are left out, and
    counted). catalogue: item_id -> title (and other columns), or None. Returns (ids, scores).
    """
    titles = {}
    if catalogue is not None and "title" in catalogue.columns:
        titles = catalogue.set_index("item_id")["title"].to_dict()
    history = np.asarray([str(i) for i in history], dtype=object)
    known = model.item_ids_[model.item_index(history, unknown="drop")]
    print(f"\n{who}: {len(history)} events; most recent {min(recent, len(history))}:")
    for item in history[-recent:][::-1]:
        print(f"   {item:>8}  {titles.get(item, '?')}")
    if len(known) < len(history):
        print(f"   ({len(history) - len(known)} of these items are not in the model's catalogue: left out)")
    ids, scores = model.recommend_history(known, k=k)
    print(f"Top-{k} recommendations ({model.name}):")
    for rank, (item, score) in enumerate(zip(ids, scores), 1):
        print(f"  {rank:2d}. {item:>8}  {titles.get(item, '?'):<60.60} score {score:8.3f}")
    if explain and hasattr(model, "explain") and len(ids):
        if len(known) == 0:
            print("No explanation: the history has no item the model knows.")
            return ids, scores
        frame = model.explain(known, ids[0], catalogue=catalogue if titles else None)
        a = frame.attrs
        print(f"Why #1 ({titles.get(ids[0], ids[0])}): score {a['score']:.3f} = empty-history score "
              f"{a['baseline_score']:.3f} + history contributions {frame['attribution'].sum():.3f}; largest:")
        for row in frame.head(5).itertuples():
            print(f"   {row.attribution:+8.3f}  {getattr(row, 'title', row.item_id)}  (event {row.position})")
    return ids, scores
