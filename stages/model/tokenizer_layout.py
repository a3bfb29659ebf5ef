"""The backbone's tokenizer from whichever files the hub ships, encoding exactly as the model was trained with it.

Layouts, by precedence (`TokenizerLayout`):
- `tokenizer.json`: a fast tokenizer as saved. transformers 5 rebuilds some classes' pipelines when it loads
  them (DebertaV2Tokenizer gets NFC in place of the saved normaliser), so the file's own pipeline is restored.
- a SentencePiece model (`spm.model`: DeBERTa-v2/v3, mDeBERTa; `sentencepiece.bpe.model`: XLM-R): the family's
  class gives ids and special tokens; the normaliser, pre-tokeniser (and a BPE model where the class assumed
  Unigram) follow the SentencePiece model's own settings, and the result is checked against SentencePiece
  itself. transformers 5's DebertaV2Tokenizer alone normalises with NFC, not the model's NFKC charsmap, and so
  turns fullwidth punctuation such as U+FF01 into [UNK].
- `vocab.txt` (WordPiece: BERT) or `vocab.json` + `merges.txt` (byte-level BPE: RoBERTa): the family's class.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer
from tokenizers.models import BPE
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from stages.core.errors import UserError

log = logging.getLogger(__name__)

TOKENIZER_JSON = "tokenizer.json"
SENTENCEPIECE_FILES = ("spm.model", "sentencepiece.bpe.model", "sentencepiece.model", "tokenizer.model")
SENTENCEPIECE_PACKAGES = {"sentencepiece": "sentencepiece", "google.protobuf": "protobuf"}  # module -> pip name
UNIGRAM, BPE_TYPE = 1, 2  # SentencePiece's ModelProto.TrainerSpec.model_type
NORMAL_PIECE = 1
# Two segmentations whose scores differ by less are a tie to SentencePiece, which sums scores in float32.
SCORE_TIE, SCORE_TIE_RELATIVE = 1e-4, 1e-6
PROBE_TEXTS = (  # what a normaliser can get wrong: width, spaces, accents, scripts, symbols
    "Hello  world,\tthe quick   brown fox!  ",
    "全角の句読点！？（括弧）と　全角スペース、ＡＢＣ１２３。",
    "你好，世界！今天是2024年5月3日。",
    "Привет,  мир! Ёжик в тумане — 3,5 км.",
    "مرحبا بالعالم، هذه جملة عربية ٣٤٥.",
    "한국어 문장입니다. ｶﾀｶﾅ ﾃｽﾄ",
    "Émile Zola écrivit à Paris; Straße, Größe — ¿Qué tal, Señor? ﬁ ½ ²",
    "emoji 👩\u200d👩\u200d👧 🎉 and\u00a0no-break\u2009thin spaces",
    "line one\nline two\r\nline three",
)


@dataclass(frozen=True)
class TokenizerLayout:
    """Which files define a backbone directory's tokenizer."""

    kind: str  # "tokenizer.json", "sentencepiece" or "vocabulary files"
    file: Path | None  # the file that defines it (tokenizer.json or the SentencePiece model)


def tokenizer_layout(directory: Path) -> TokenizerLayout:
    """The layout of the tokenizer files in `directory`, by precedence."""
    if (directory / TOKENIZER_JSON).is_file():
        return TokenizerLayout(TOKENIZER_JSON, directory / TOKENIZER_JSON)
    named = [directory / name for name in SENTENCEPIECE_FILES if (directory / name).is_file()]
    models = named or sorted(directory.glob("*.model"))
    if models:
        return TokenizerLayout("sentencepiece", models[0])
    return TokenizerLayout("vocabulary files", None)


def require_packages(layout: TokenizerLayout, source: str) -> None:
    """A SentencePiece model needs the sentencepiece and protobuf packages; name the one missing, and the file."""
    if layout.kind != "sentencepiece":
        return
    for module, package in SENTENCEPIECE_PACKAGES.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a parent package is missing, or the module is blocked
            found = False
        if not found:
            raise UserError(
                f"backbone {source!r} (model.backbone) has its tokenizer as {layout.file.name} (a SentencePiece "
                f"model, no {TOKENIZER_JSON}); reading it needs the {package} package: pip install {package}"
            )


def load_tokenizer(directory: Path, source: str, **settings: object) -> PreTrainedTokenizerBase:
    """The backbone's fast tokenizer, encoding as its defining file says (see the module docstring)."""
    layout = tokenizer_layout(directory)
    require_packages(layout, source)
    tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True, **settings)
    if not tokenizer.is_fast:
        raise UserError(f"backbone {source!r} has no fast tokenizer (tokenizer.json); character offsets need one")
    if layout.kind == TOKENIZER_JSON:
        restore_saved_pipeline(tokenizer.backend_tokenizer, Tokenizer.from_file(str(layout.file)))
    elif layout.kind == "sentencepiece":
        follow_sentencepiece(tokenizer, layout.file, source)
    log.info("tokenizer of %s: %s (%s)", source, layout.kind, layout.file.name if layout.file else "by its class")
    return tokenizer


def restore_saved_pipeline(backend: Tokenizer, saved: Tokenizer) -> None:
    """Give `backend` the normaliser, pre-tokeniser, post-processor and decoder `saved` has."""
    for part in ("normalizer", "pre_tokenizer", "post_processor", "decoder"):
        if getattr(saved, part) is not None and str(getattr(saved, part)) != str(getattr(backend, part)):
            log.info("restoring the saved %s: transformers rebuilt it as %s", part, getattr(backend, part))
            setattr(backend, part, getattr(saved, part))


def read_sentencepiece(model_file: Path):
    """The SentencePiece ModelProto in `model_file`."""
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(model_file.read_bytes())
    return proto


def follow_sentencepiece(tokenizer: PreTrainedTokenizerBase, model_file: Path, source: str) -> None:
    """Make the tokenizer's pipeline the SentencePiece model's own, then check it against SentencePiece."""
    from transformers.convert_slow_tokenizer import SpmConverter

    proto = read_sentencepiece(model_file)
    pieces = [(piece.piece, piece.score) for piece in proto.pieces]
    reference = SpmConverter.build_tokenizer_from_spm_proto(proto, pieces)
    backend = tokenizer.backend_tokenizer
    backend.normalizer = reference.normalizer
    backend.pre_tokenizer = reference.pre_tokenizer
    if proto.trainer_spec.model_type == BPE_TYPE and not isinstance(backend.model, BPE):
        backend.model = sentencepiece_bpe(proto, tokenizer.get_vocab())
    check_against_sentencepiece(tokenizer, model_file, proto, source)


def sentencepiece_bpe(proto, vocab: dict[str, int]) -> BPE:
    """A BPE model over the tokenizer's ids whose merges rank as the SentencePiece model's piece scores."""
    normal = {
        piece.piece: (piece.score, index) for index, piece in enumerate(proto.pieces) if piece.type == NORMAL_PIECE
    }
    ranked = sorted(
        (-score, index, token[:split], token[split:])
        for token, (score, index) in normal.items()
        for split in range(1, len(token))
        if token[:split] in normal and token[split:] in normal
    )
    return BPE(
        vocab=vocab,
        merges=[(left, right) for _, _, left, right in ranked],
        unk_token=proto.trainer_spec.unk_piece,
        fuse_unk=True,
        byte_fallback=proto.trainer_spec.byte_fallback,
    )


def check_against_sentencepiece(tokenizer: PreTrainedTokenizerBase, model_file: Path, proto, source: str) -> None:
    """The tokenizer must give SentencePiece's tokens on the probe texts (Unigram ties of equal score aside)."""
    import sentencepiece

    processor = sentencepiece.SentencePieceProcessor(model_proto=model_file.read_bytes())
    scores = {piece.piece: piece.score for piece in proto.pieces}
    for text in PROBE_TEXTS:
        ours = tokenizer.convert_ids_to_tokens(tokenizer(text, add_special_tokens=False)["input_ids"])
        theirs = [processor.id_to_piece(index) for index in processor.encode(text)]
        if [piece if piece in scores else proto.trainer_spec.unk_piece for piece in ours] == theirs:
            continue
        tie = (
            proto.trainer_spec.model_type == UNIGRAM
            and abs(sum(scores.get(piece, 0.0) for piece in ours) - sum(scores[piece] for piece in theirs)) < SCORE_TIE
        )
        if not tie:
            raise UserError(
                f"the tokenizer built from {model_file.name} of {source!r} does not encode {text!r} as SentencePiece "
                f"does ({ours[:12]} vs {theirs[:12]}); save the tokenizer with tokenizer.json where it was trained"
            )
